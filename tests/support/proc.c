#include "support/proc.h"

#include <arpa/inet.h>
#include <curl/curl.h>
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
#include <strings.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "rpc/rpc.h"
#include "support/wait.h"

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

static rpc_client *health_client(const char *url, char *errbuf, size_t errlen);
static bool serving_once(rpc_client *c, int timeout_ms, char *why, size_t whylen);

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
    struct timespec until = wait_abstime(timeout_ms);
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
  bool gone = false;
  WAIT_FOR(gone, reap(p), timeout_ms < 0 ? INT64_MAX / 2 : timeout_ms);
  return gone;
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

status_code proc_spawn(proc **out, const proc_opts *o, char *errbuf, size_t errlen) {
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

status_code proc_start(proc **out, const proc_opts *o, char *errbuf, size_t errlen) {
  status_code st = proc_spawn(out, o, errbuf, errlen);
  if (st != STATUS_OK) return st;
  st = proc_wait_ready(*out, o, errbuf, errlen);
  if (st != STATUS_OK) {
    proc_destroy(*out);
    *out = NULL;
  }
  return st;
}

/* One look at whatever o says the child's readiness is; why gets what was
 * seen when it is not ready. */
static bool ready_now(const proc *p, const proc_opts *o, rpc_client *health, char *why,
                      size_t whylen) {
  if (o->ready_file != NULL && access(o->ready_file, F_OK) != 0) {
    seterr(why, whylen, "no %s yet", o->ready_file);
    return false;
  }
  if (o->ready_url != NULL) {
    char *body = NULL;
    long pid = 0;
    long code = proc_http_pid("GET", o->ready_url, 1000, &body, &pid);
    /* Only the child's own 200 counts: another process may hold the port. */
    bool ours = code == 200 && pid == (long)p->pid;
    if (!ours)
      seterr(why, whylen, "%s answered %ld (X-Shop-Pid %ld, not %d) %.100s", o->ready_url, code,
             pid, (int)p->pid, body ? body : "");
    free(body);
    if (!ours) return false;
  }
  return health == NULL || serving_once(health, 1000, why, whylen);
}

status_code proc_wait_ready(proc *p, const proc_opts *o, char *errbuf, size_t errlen) {
  if (o->ready_url == NULL && o->probe_url == NULL && o->ready_file == NULL) return STATUS_OK;
  int timeout = o->ready_timeout_ms > 0 ? o->ready_timeout_ms : 20000;
  rpc_client *health = NULL;
  if (o->probe_url != NULL && (health = health_client(o->probe_url, errbuf, errlen)) == NULL)
    return STATUS_INTERNAL;
  char why[300] = "not looked at";
  bool exited = false, ready = false;
  WAIT_FOR(ready, !(exited = reap(p)) && ready_now(p, o, health, why, sizeof why), timeout);
  rpc_client_destroy(health);
  if (exited) {
    seterr(errbuf, errlen, "proc: %s exited with %d before it was ready", o->path, p->code);
    return STATUS_UNAVAILABLE;
  }
  if (!ready) {
    seterr(errbuf, errlen, "proc: %s not ready within %d ms: %s", o->path, timeout, why);
    return STATUS_DEADLINE_EXCEEDED;
  }
  return STATUS_OK;
}

status_code proc_stop(proc *p, int timeout_ms, int *exit_code) {
  status_code rc = STATUS_OK;
  if (!reap(p)) {
    kill(p->pid, SIGTERM);
    if (!reap_wait(p, timeout_ms)) {
      kill(p->pid, SIGKILL);
      if (!reap_wait(p, -1)) {
        /* Not our child (a worker's copy): it is gone once kill fails. */
        bool gone;
        WAIT_FOR(gone, kill(p->pid, 0) != 0, INT64_MAX / 2);
        p->reaped = gone;
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

static rpc_client *health_client(const char *url, char *errbuf, size_t errlen) {
  rpc_client_opts co = {.url = url,
                        .caller = "proc",
                        .max_message_bytes = 1 << 20,
                        .default_timeout_ms = 1000,
                        .max_timeout_ms = 60000,
                        .retry_max = 0,
                        .retry_backoff_ms = 10};
  rpc_client *c = NULL;
  return rpc_client_create(&c, &co, errbuf, errlen) == STATUS_OK ? c : NULL;
}

/* One Health/Check; why gets what answered when it is not SERVING. */
static bool serving_once(rpc_client *c, int timeout_ms, char *why, size_t whylen) {
  if (!rpc_client_wait_connected(c, timeout_ms < 200 ? timeout_ms : 200)) {
    seterr(why, whylen, "not connected");
    return false;
  }
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  rpc_call_opts opts = {.timeout_ms = timeout_ms, .no_retry = true};
  if (rpc_client_call_sync(c, &grpc__health__v1__health__descriptor, "Check", &req.base, &out,
                           &opts, &st) != STATUS_OK) {
    seterr(why, whylen, "%s: %s", status_name(st.code), st.message);
    return false;
  }
  Grpc__Health__V1__HealthCheckResponse *r = (Grpc__Health__V1__HealthCheckResponse *)out;
  bool serving = r->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  if (!serving) seterr(why, whylen, "health status %d", (int)r->status);
  protobuf_c_message_free_unpacked(out, NULL);
  return serving;
}

bool proc_wait_serving(const char *url, int timeout_ms, char *errbuf, size_t errlen) {
  rpc_client *c = health_client(url, errbuf, errlen);
  if (c == NULL) return false;
  bool serving = false;
  WAIT_FOR(serving, serving_once(c, 1000, errbuf, errlen), timeout_ms);
  rpc_client_destroy(c);
  return serving;
}

typedef struct http_body {
  char *p;
  size_t n;
  bool oom;
} http_body;

static size_t http_body_cb(char *data, size_t size, size_t nmemb, void *arg) {
  http_body *b = arg;
  size_t len = size * nmemb;
  char *np = realloc(b->p, b->n + len + 1);
  if (np == NULL) {
    b->oom = true;
    return 0;
  }
  b->p = np;
  memcpy(b->p + b->n, data, len);
  b->n += len;
  b->p[b->n] = '\0';
  return len;
}

/* The X-Shop-Pid header of a reply (a Shop program's admin HTTP). */
static size_t http_header_cb(char *data, size_t size, size_t nmemb, void *arg) {
  long *pid = arg;
  size_t len = size * nmemb;
  static const char name[] = "X-Shop-Pid:";
  if (len > sizeof name - 1 && strncasecmp(data, name, sizeof name - 1) == 0)
    *pid = strtol(data + sizeof name - 1, NULL, 10);
  return len;
}

long proc_http(const char *method, const char *url, int timeout_ms, char **body) {
  return proc_http_pid(method, url, timeout_ms, body, NULL);
}

long proc_http_pid(const char *method, const char *url, int timeout_ms, char **body, long *pid) {
  http_body b = {.p = calloc(1, 1)};
  long answered_by = 0;
  CURL *h = curl_easy_init();
  long code = 0;
  if (h != NULL && b.p != NULL) {
    curl_easy_setopt(h, CURLOPT_URL, url);
    curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
    if (strcmp(method, "HEAD") == 0) curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
    if (strcmp(method, "POST") == 0) curl_easy_setopt(h, CURLOPT_POSTFIELDS, "x=1");
    curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, http_body_cb);
    curl_easy_setopt(h, CURLOPT_WRITEDATA, &b);
    curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, http_header_cb);
    curl_easy_setopt(h, CURLOPT_HEADERDATA, &answered_by);
    curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
    curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
    if (curl_easy_perform(h) == CURLE_OK) curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &code);
  }
  if (h != NULL) curl_easy_cleanup(h);
  if (b.oom) code = 0;
  if (pid != NULL) *pid = answered_by;
  if (body != NULL)
    *body = b.p;
  else
    free(b.p);
  return code;
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
  bool done;
  WAIT_FOR(done, !proc_alive(p), timeout_ms);
  (void)done; /* a program still running is stopped below */
  *exit_code = -1;
  proc_stop(p, 5000, exit_code);
  proc_destroy(p);
  FILE *f = fopen(o->log_path, "r");
  size_t len = f ? fread(out, 1, outlen - 1, f) : 0;
  out[len] = '\0';
  if (f) fclose(f);
  return STATUS_OK;
}
