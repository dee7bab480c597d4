#include "support/proc.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"

extern char **environ;

/* A spawned child is reaped at once by a waiter thread of the process that
 * spawned it. Criterion's runner watches its children with
 * waitid(WNOWAIT) and spins on a zombie that is not one of its test
 * workers (seen as a test binary stuck at 100% CPU after its last test):
 * a service started from a report hook must never stay a zombie. */
struct proc {
  pid_t pid;
  pid_t owner; /* the process that spawned it; only it can wait */
  bool reaped;
  int code;
  bool has_waiter;
  pthread_t waiter;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool exited; /* set by the waiter, under mu */
  int exit_code;
};

static void seterr(char *errbuf, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void seterr(char *errbuf, size_t errlen, const char *fmt, ...) {
  if (errbuf == NULL || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(errbuf, errlen, fmt, ap);
  va_end(ap);
}

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static int code_of(int wstatus) {
  if (WIFEXITED(wstatus)) return WEXITSTATUS(wstatus);
  if (WIFSIGNALED(wstatus)) return 128 + WTERMSIG(wstatus);
  return -1;
}

static void *waiter_main(void *arg) {
  proc *p = arg;
  int ws = 0;
  pid_t r;
  do {
    r = waitpid(p->pid, &ws, 0);
  } while (r < 0 && errno == EINTR);
  pthread_mutex_lock(&p->mu);
  p->exit_code = r == p->pid ? code_of(ws) : -1;
  p->exited = true;
  pthread_cond_broadcast(&p->cv);
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

/* True once the child has exited. In the spawning process the waiter
 * thread knows; in another process (a Criterion worker forked after the
 * spawn) the child is not ours to wait for, and counts as gone. */
static bool reap(proc *p) {
  if (p->reaped) return true;
  if (p->has_waiter && p->owner == getpid()) {
    pthread_mutex_lock(&p->mu);
    bool done = p->exited;
    if (done) p->code = p->exit_code;
    pthread_mutex_unlock(&p->mu);
    if (done) {
      pthread_join(p->waiter, NULL);
      p->has_waiter = false;
      p->reaped = true;
    }
    return done;
  }
  int ws;
  pid_t r = waitpid(p->pid, &ws, WNOHANG);
  if (r == p->pid) {
    p->reaped = true;
    p->code = code_of(ws);
  } else if (r < 0 && errno == ECHILD) {
    p->reaped = true;
    p->code = -1;
  }
  return p->reaped;
}

/* Waits up to timeout_ms (< 0: for ever) for the child to exit. */
static bool reap_wait(proc *p, int timeout_ms) {
  if (p->has_waiter && p->owner == getpid()) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    int64_t ns = until.tv_nsec + (int64_t)(timeout_ms > 0 ? timeout_ms : 0) * 1000000;
    until.tv_sec += ns / 1000000000;
    until.tv_nsec = ns % 1000000000;
    pthread_mutex_lock(&p->mu);
    while (!p->exited) {
      if (timeout_ms < 0) {
        pthread_cond_wait(&p->cv, &p->mu);
      } else if (pthread_cond_timedwait(&p->cv, &p->mu, &until) != 0) {
        break;
      }
    }
    pthread_mutex_unlock(&p->mu);
    return reap(p);
  }
  int64_t until = now_ms() + timeout_ms;
  while (!reap(p) && (timeout_ms < 0 || now_ms() < until)) sleep_ms(5);
  return p->reaped;
}

bool proc_alive(proc *p) { return !reap(p); }
pid_t proc_pid(const proc *p) { return p->pid; }

/* environ with the additions: an addition replaces a variable of the same
 * name. The strings are borrowed; the array is malloc'd. */
static char **build_env(const char *const *add) {
  size_t n_env = 0, n_add = 0;
  while (environ[n_env] != NULL) n_env++;
  while (add != NULL && add[n_add] != NULL) n_add++;
  char **out = calloc(n_env + n_add + 1, sizeof *out);
  if (out == NULL) return NULL;
  size_t k = 0;
  for (size_t i = 0; i < n_env; i++) {
    const char *eq = strchr(environ[i], '=');
    size_t nl = eq ? (size_t)(eq - environ[i]) : strlen(environ[i]);
    bool overridden = false;
    for (size_t j = 0; j < n_add && !overridden; j++)
      overridden = strncmp(add[j], environ[i], nl) == 0 && add[j][nl] == '=';
    if (!overridden) out[k++] = environ[i];
  }
  for (size_t j = 0; j < n_add; j++) out[k++] = (char *)add[j];
  out[k] = NULL;
  return out;
}

status_code proc_start(proc **out, const proc_opts *o, char *errbuf, size_t errlen) {
  *out = NULL;
  size_t n_args = 0;
  while (o->argv != NULL && o->argv[n_args] != NULL) n_args++;
  char **argv = calloc(n_args + 2, sizeof *argv);
  char **envp = build_env(o->env);
  proc *p = calloc(1, sizeof *p);
  status_code rc = STATUS_INTERNAL;
  posix_spawn_file_actions_t fa;
  bool fa_init = false;
  if (argv == NULL || envp == NULL || p == NULL) {
    seterr(errbuf, errlen, "proc: out of memory");
    goto out;
  }
  argv[0] = (char *)o->path;
  for (size_t i = 0; i < n_args; i++) argv[i + 1] = (char *)o->argv[i];
  if (posix_spawn_file_actions_init(&fa) != 0) goto out;
  fa_init = true;
  if (o->log_path != NULL) {
    posix_spawn_file_actions_addopen(&fa, 1, o->log_path, O_WRONLY | O_CREAT | O_APPEND, 0644);
    posix_spawn_file_actions_adddup2(&fa, 1, 2);
  }
  /* The child starts with default signal dispositions and an empty mask,
   * whatever the test process blocked. */
  posix_spawnattr_t sa;
  posix_spawnattr_init(&sa);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&sa, &none);
  posix_spawnattr_setsigdefault(&sa, &all);
  posix_spawnattr_setflags(&sa, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  int err = posix_spawn(&p->pid, o->path, &fa, &sa, argv, envp);
  posix_spawnattr_destroy(&sa);
  if (err != 0) {
    seterr(errbuf, errlen, "proc: spawn %s: %s", o->path, strerror(err));
    p->reaped = true;
    goto out;
  }
  p->owner = getpid();
  pthread_mutex_init(&p->mu, NULL);
  pthread_cond_init(&p->cv, NULL);
  if (pthread_create(&p->waiter, NULL, waiter_main, p) == 0) p->has_waiter = true;
  if (o->probe_url != NULL) {
    int timeout = o->ready_timeout_ms > 0 ? o->ready_timeout_ms : 20000;
    int64_t until = now_ms() + timeout;
    bool ok = false;
    char why[256] = "";
    while (!ok && now_ms() < until) {
      if (reap(p)) {
        seterr(errbuf, errlen, "proc: %s exited with %d before serving", o->path, p->code);
        goto out;
      }
      int left = (int)(until - now_ms());
      ok = proc_wait_serving(o->probe_url, left < 500 ? (left > 0 ? left : 1) : 500, why,
                             sizeof why);
    }
    if (!ok) {
      seterr(errbuf, errlen, "proc: %s not SERVING at %s within %d ms: %s", o->path, o->probe_url,
             timeout, why);
      goto out;
    }
  }
  *out = p;
  p = NULL;
  rc = STATUS_OK;
out:
  if (fa_init) posix_spawn_file_actions_destroy(&fa);
  if (p != NULL) proc_destroy(p);
  free(argv);
  free(envp);
  return rc;
}

status_code proc_stop(proc *p, int timeout_ms, int *exit_code) {
  status_code rc = STATUS_OK;
  if (!reap(p)) {
    kill(p->pid, SIGTERM);
    if (!reap_wait(p, timeout_ms)) {
      kill(p->pid, SIGKILL);
      if (!reap_wait(p, -1)) {
        /* Not our child (a worker's copy): it is gone once kill fails. */
        while (kill(p->pid, 0) == 0) sleep_ms(5);
        p->reaped = true;
      }
      rc = STATUS_DEADLINE_EXCEEDED;
    }
  }
  if (exit_code != NULL) *exit_code = p->code;
  return rc;
}

void proc_destroy(proc *p) {
  if (p == NULL) return;
  if (p->pid > 0 && !reap(p)) {
    kill(p->pid, SIGKILL);
    reap_wait(p, -1);
  }
  if (p->owner == getpid() && p->owner != 0) {
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
  }
  free(p);
}

bool proc_wait_serving(const char *url, int timeout_ms, char *errbuf, size_t errlen) {
  rpc_client_opts co = {.url = url,
                        .caller = "proc",
                        .max_message_bytes = 1 << 20,
                        .default_timeout_ms = 1000,
                        .max_timeout_ms = 60000,
                        .retry_max = 0,
                        .retry_backoff_ms = 10};
  rpc_client *c = NULL;
  if (rpc_client_create(&c, &co, errbuf, errlen) != STATUS_OK) return false;
  int64_t until = now_ms() + timeout_ms;
  bool serving = false;
  while (!serving) {
    int64_t left = until - now_ms();
    if (left <= 0) break;
    if (!rpc_client_wait_connected(c, (int)(left < 200 ? left : 200))) {
      seterr(errbuf, errlen, "not connected");
      continue;
    }
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    ProtobufCMessage *out = NULL;
    rpc_status st;
    rpc_call_opts opts = {.timeout_ms = left < 1000 ? left : 1000, .no_retry = true};
    if (rpc_client_call_sync(c, &grpc__health__v1__health__descriptor, "Check", &req.base, &out,
                             &opts, &st) == STATUS_OK) {
      Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)out;
      serving = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
      if (!serving) seterr(errbuf, errlen, "health status %d", (int)r->status);
      protobuf_c_message_free_unpacked(out, NULL);
    } else {
      seterr(errbuf, errlen, "%s: %s", status_name(st.code), st.message);
    }
    if (!serving) sleep_ms(10);
  }
  rpc_client_destroy(c);
  return serving;
}

int proc_free_tcp_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return 0;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  int port = 0;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
      getsockname(fd, (struct sockaddr *)&a, &len) == 0)
    port = ntohs(a.sin_port);
  close(fd);
  return port;
}

long proc_peak_rss_kib(pid_t pid) {
  char path[64], line[128];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long kib = -1;
  while (fgets(line, sizeof line, f) != NULL)
    if (sscanf(line, "VmHWM: %ld kB", &kib) == 1) break;
  fclose(f);
  return kib;
}

long proc_rss_kib(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long size = 0, rss = 0;
  int n = fscanf(f, "%ld %ld", &size, &rss);
  fclose(f);
  if (n != 2) return -1;
  return rss * (sysconf(_SC_PAGESIZE) / 1024);
}

status_code proc_run(const proc_opts *o, int timeout_ms, int *exit_code, char *out, size_t outlen,
                     char *errbuf, size_t errlen) {
  proc *p = NULL;
  status_code st = proc_start(&p, o, errbuf, errlen);
  if (st != STATUS_OK) return st;
  for (int waited = 0; waited < timeout_ms && proc_alive(p); waited += 10) {
    struct timespec ts = {0, 10 * 1000000L};
    nanosleep(&ts, NULL);
  }
  *exit_code = -1;
  proc_stop(p, 5000, exit_code);
  proc_destroy(p);
  FILE *f = fopen(o->log_path, "r");
  size_t len = f ? fread(out, 1, outlen - 1, f) : 0;
  out[len] = '\0';
  if (f) fclose(f);
  return STATUS_OK;
}
