/*
 * bench-login-flood: what a password-guessing flood on one account costs
 * the other users (make bench-login).
 *
 *   SHOP_CONFIG=config/test.yaml build-release/bin/bench-login-flood
 *       [--seconds S] [--flooders F] [--readers R]
 *
 * Needs user-command and user-query running (the endpoints of the config)
 * and the first admin's password ($SHOP_SECRETS_DIR/admin.password; the
 * environment of `scripts/infra.sh env`).
 *
 *   1. Registers a victim account and R reader accounts, logs the readers
 *      in.
 *   2. Unloaded: R threads call GetMe (user-query) for S seconds; the
 *      latency of every call is kept.
 *   3. Flood: F threads call Login on the victim with wrong passwords, as
 *      fast as they are answered, while the R readers run GetMe again
 *      for S seconds.
 * Prints the readers' p50/p99 unloaded and under flood, the p99 ratio
 * (aim: at most 2), and the flood's answers by status: with the login
 * throttle most are RESOURCE_EXHAUSTED (locked; the password is not even
 * hashed). A figure, not a test: the exit status is 0 unless something
 * fails to run.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"
#include "log/log.h"
#include "rpc/rpc.h"
#include "shop/user/v1/commands.pb-c.h"
#include "shop/user/v1/queries.pb-c.h"

#define UCMD (&shop__user__v1__user_command_service__descriptor)
#define UQRY (&shop__user__v1__user_query_service__descriptor)
#define PASSWORD "bench login flood passphrase"
#define MAX_THREADS 64

static const shop_cfg *cfg;
static atomic_bool flooding, reading;
static atomic_long seq;

static int64_t now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void die(const char *what, const char *why) {
  fprintf(stderr, "bench-login-flood: %s: %s\n", what, why);
  exit(1);
}

static rpc_client *client(const char *url) {
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, cfg, url, "bench-login-flood");
  o.retry_max = 0;
  rpc_client *c = NULL;
  char err[256];
  if (rpc_client_create(&c, &o, err, sizeof err) != STATUS_OK) die(url, err);
  if (!rpc_client_wait_connected(c, 10000)) die(url, "no server answers");
  return c;
}

static void key(char *out, size_t len) {
  snprintf(out, len, "bench-%d-%ld", (int)getpid(), atomic_fetch_add(&seq, 1));
}

static void register_user(rpc_client *c, const char *email) {
  Shop__User__V1__RegisterUserRequest r = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  r.email = (char *)email;
  r.password = PASSWORD;
  r.name = "Bench";
  char k[64];
  key(k, sizeof k);
  rpc_call_opts o = {.timeout_ms = 10000, .idempotency_key = k};
  rpc_status st;
  if (rpc_client_call_sync(c, UCMD, "RegisterUser", &r.base, NULL, &o, &st) != STATUS_OK)
    die("RegisterUser", st.message);
}

/* Logs in; the access token goes to out. Waits until user-query has the
 * user (GetMe with the registration's version is simpler, but Login's
 * consistency token names the user as well). */
static void login(rpc_client *c, rpc_client *q, const char *email, char *out, size_t len) {
  Shop__User__V1__LoginRequest r = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  r.email = (char *)email;
  r.password = PASSWORD;
  char k[64];
  key(k, sizeof k);
  rpc_call_opts o = {.timeout_ms = 10000, .idempotency_key = k};
  rpc_status st;
  Shop__User__V1__LoginResponse *lr = NULL;
  if (rpc_client_call_sync(c, UCMD, "Login", &r.base, (ProtobufCMessage **)&lr, &o, &st) !=
      STATUS_OK)
    die("Login", st.message);
  snprintf(out, len, "%s", lr->tokens->access_token);
  Shop__User__V1__GetMeRequest me = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = lr->consistency;
  rc.wait_ms = 10000;
  me.consistency = lr->consistency != NULL ? &rc : NULL;
  rpc_call_opts qo = {.timeout_ms = 15000, .token = out};
  if (rpc_client_call_sync(q, UQRY, "GetMe", &me.base, NULL, &qo, &st) != STATUS_OK)
    die("GetMe", st.message);
  protobuf_c_message_free_unpacked(&lr->base, NULL);
}

/* ---- Readers ---------------------------------------------------------------------------- */

typedef struct reader {
  pthread_t t;
  rpc_client *q;
  char token[AUTH_TOKEN_MAX];
  int64_t *lat_us;
  size_t n, cap;
  long errors;
} reader;

static void *reader_run(void *arg) {
  reader *r = arg;
  Shop__User__V1__GetMeRequest me = SHOP__USER__V1__GET_ME_REQUEST__INIT;
  rpc_call_opts o = {.timeout_ms = 5000, .token = r->token};
  while (atomic_load(&reading)) {
    int64_t t0 = now_us();
    rpc_status st;
    if (rpc_client_call_sync(r->q, UQRY, "GetMe", &me.base, NULL, &o, &st) != STATUS_OK) {
      r->errors++;
      continue;
    }
    if (r->n == r->cap) {
      r->cap = r->cap ? r->cap * 2 : 4096;
      r->lat_us = realloc(r->lat_us, r->cap * sizeof *r->lat_us);
      if (r->lat_us == NULL) die("memory", "out of memory");
    }
    r->lat_us[r->n++] = now_us() - t0;
  }
  return NULL;
}

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return (x > y) - (x < y);
}

typedef struct figures {
  size_t calls;
  long errors;
  double p50_ms, p99_ms, rate;
} figures;

/* Runs the readers for seconds and gathers their latencies. */
static figures read_phase(reader *rs, int n, int seconds) {
  for (int i = 0; i < n; i++) rs[i].n = 0, rs[i].errors = 0;
  atomic_store(&reading, true);
  for (int i = 0; i < n; i++) pthread_create(&rs[i].t, NULL, reader_run, &rs[i]);
  sleep((unsigned)seconds);
  atomic_store(&reading, false);
  for (int i = 0; i < n; i++) pthread_join(rs[i].t, NULL);
  figures f = {0};
  for (int i = 0; i < n; i++) f.calls += rs[i].n, f.errors += rs[i].errors;
  int64_t *all = malloc((f.calls ? f.calls : 1) * sizeof *all);
  size_t k = 0;
  for (int i = 0; i < n; i++)
    for (size_t j = 0; j < rs[i].n; j++) all[k++] = rs[i].lat_us[j];
  qsort(all, f.calls, sizeof *all, cmp_i64);
  if (f.calls > 0) {
    f.p50_ms = all[f.calls / 2] / 1000.0;
    f.p99_ms = all[(f.calls * 99) / 100] / 1000.0;
  }
  f.rate = (double)f.calls / seconds;
  free(all);
  return f;
}

/* ---- Flooders ----------------------------------------------------------------------------- */

typedef struct flooder {
  pthread_t t;
  rpc_client *c;
  const char *email;
  long by_code[17];
} flooder;

static void *flooder_run(void *arg) {
  flooder *f = arg;
  Shop__User__V1__LoginRequest r = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  r.email = (char *)f->email;
  char pw[64], k[64];
  while (atomic_load(&flooding)) {
    long n = atomic_fetch_add(&seq, 1);
    snprintf(pw, sizeof pw, "wrong guess number %ld", n);
    r.password = pw;
    key(k, sizeof k);
    rpc_call_opts o = {.timeout_ms = 5000, .idempotency_key = k, .no_retry = true};
    rpc_status st;
    status_code c = rpc_client_call_sync(f->c, UCMD, "Login", &r.base, NULL, &o, &st);
    f->by_code[c >= 0 && c < 17 ? c : STATUS_UNKNOWN]++;
  }
  return NULL;
}

int main(int argc, char **argv) {
  int seconds = 5, flooders = 8, readers = 4;
  for (int i = 1; i + 1 < argc; i += 2) {
    if (strcmp(argv[i], "--seconds") == 0)
      seconds = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--flooders") == 0)
      flooders = atoi(argv[i + 1]);
    else if (strcmp(argv[i], "--readers") == 0)
      readers = atoi(argv[i + 1]);
    else
      die(argv[i], "unknown option (--seconds, --flooders, --readers)");
  }
  if (seconds < 1 || flooders < 1 || flooders > MAX_THREADS || readers < 1 || readers > MAX_THREADS)
    die("options", "out of range");
  log_setup("bench-login-flood", LOG_LEVEL_WARN, stderr);
  const char *path = getenv("SHOP_CONFIG") != NULL ? getenv("SHOP_CONFIG") : "config/test.yaml";
  shop_cfg *c = NULL;
  char err[512];
  if (config_load(&c, path, err, sizeof err) != 0) die(path, err);
  cfg = c;

  rpc_client *cmd = client(cfg->endpoints.user_command);
  rpc_client *qry = client(cfg->endpoints.user_query);
  char victim[128];
  snprintf(victim, sizeof victim, "victim-%d-%ld@bench.test", (int)getpid(), (long)time(NULL));
  register_user(cmd, victim);
  reader rs[MAX_THREADS] = {0};
  for (int i = 0; i < readers; i++) {
    char email[128];
    snprintf(email, sizeof email, "reader%d-%d-%ld@bench.test", i, (int)getpid(), (long)time(NULL));
    register_user(cmd, email);
    login(cmd, qry, email, rs[i].token, sizeof rs[i].token);
    rs[i].q = client(cfg->endpoints.user_query);
  }
  printf(
      "bench-login-flood: %d readers (GetMe), %d flooders (Login, wrong passwords, one "
      "account), %d s per phase\n",
      readers, flooders, seconds);

  figures base = read_phase(rs, readers, seconds);

  flooder fs[MAX_THREADS] = {0};
  atomic_store(&flooding, true);
  for (int i = 0; i < flooders; i++) {
    fs[i].c = client(cfg->endpoints.user_command);
    fs[i].email = victim;
    pthread_create(&fs[i].t, NULL, flooder_run, &fs[i]);
  }
  usleep(500 * 1000); /* the flood reaches its pace and the lock */
  figures load = read_phase(rs, readers, seconds);
  atomic_store(&flooding, false);
  long by_code[17] = {0}, total = 0;
  for (int i = 0; i < flooders; i++) {
    pthread_join(fs[i].t, NULL);
    rpc_client_destroy(fs[i].c);
    for (int k = 0; k < 17; k++) by_code[k] += fs[i].by_code[k], total += fs[i].by_code[k];
  }

  printf("%-22s %10s %10s %10s %8s\n", "GetMe (other users)", "calls/s", "p50 ms", "p99 ms",
         "errors");
  printf("%-22s %10.0f %10.2f %10.2f %8ld\n", "unloaded", base.rate, base.p50_ms, base.p99_ms,
         base.errors);
  printf("%-22s %10.0f %10.2f %10.2f %8ld\n", "under login flood", load.rate, load.p50_ms,
         load.p99_ms, load.errors);
  printf("p99 ratio (flood / unloaded): %.2f (aim: <= 2)\n",
         base.p99_ms > 0 ? load.p99_ms / base.p99_ms : 0.0);
  printf("flood: %ld Login calls in %.1f s (%.0f/s)\n", total, seconds + 0.5,
         total / (seconds + 0.5));
  for (int k = 0; k < 17; k++)
    if (by_code[k] > 0)
      printf("  %-20s %8ld  %5.1f%%\n", status_name(k), by_code[k], 100.0 * by_code[k] / total);
  printf("throttled share (RESOURCE_EXHAUSTED): %.1f%%\n",
         total > 0 ? 100.0 * by_code[STATUS_RESOURCE_EXHAUSTED] / total : 0.0);

  for (int i = 0; i < readers; i++) {
    rpc_client_destroy(rs[i].q);
    free(rs[i].lat_us);
  }
  rpc_client_destroy(qry);
  rpc_client_destroy(cmd);
  config_free(c);
  return 0;
}
