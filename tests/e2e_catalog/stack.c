/* The Shop programs the end-to-end tests run against. See stack.h. */
#include "e2e_catalog/stack.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "config/config.h"

#define STACK_MAX 8
#define STACK_READY_MS 60000
#define STACK_STOP_MS 20000
#define STACK_CALL_TIMEOUT_MS 10000

#ifndef SHOP_SOURCE_DIR
#define SHOP_SOURCE_DIR "."
#endif

/* Runner side: the programs started by stack_up. */
static struct {
  size_t n;
  const char *name[STACK_MAX];
  proc *p[STACK_MAX];
} running;

/* Test side: extra instances started by the test. */
static proc *extras[STACK_MAX];

/* Test side: clients opened by stack_client. */
static struct {
  size_t n;
  char name[STACK_MAX][32];
  rpc_client *c[STACK_MAX];
} clients;

static shop_cfg *cfg_cache;

const char *stack_config(void) {
  static char path[1024];
  const char *env = getenv("SHOP_CONFIG");
  if (env != NULL && env[0] != '\0') return env;
  snprintf(path, sizeof path, "%s/config/test.yaml", SHOP_SOURCE_DIR);
  return path;
}

void stack_bin(char *out, size_t len, const char *program) {
  char self[1024];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    snprintf(out, len, "%s", program);
    return;
  }
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash != NULL) *slash = '\0';
  /* Test binaries live in <build>/tests, programs in <build>/bin. */
  int w = snprintf(out, len, "%s/../bin/%s", self, program);
  if (w < 0 || (size_t)w >= len) snprintf(out, len, "%s", program);
}

static const shop_cfg *stack_cfg(char *err, size_t errlen) {
  if (cfg_cache == NULL && config_load(&cfg_cache, stack_config(), err, errlen) != 0) return NULL;
  return cfg_cache;
}

const char *stack_url(const char *program) {
  char err[512] = "";
  const shop_cfg *cfg = stack_cfg(err, sizeof err);
  if (cfg == NULL) return NULL;
  if (strcmp(program, "user-command") == 0) return cfg->endpoints.user_command;
  if (strcmp(program, "user-query") == 0) return cfg->endpoints.user_query;
  if (strcmp(program, "product-command") == 0) return cfg->endpoints.product_command;
  if (strcmp(program, "product-query") == 0) return cfg->endpoints.product_query;
  if (strcmp(program, "order-command") == 0) return cfg->endpoints.order_command;
  if (strcmp(program, "order-query") == 0) return cfg->endpoints.order_query;
  if (strcmp(program, "audit-worker") == 0) return cfg->endpoints.audit_query;
  return NULL;
}

static void log_path(char *out, size_t len, const char *program) {
  const char *dir = getenv("SHOP_LOG_DIR");
  snprintf(out, len, "%s/e2e-%s.log", dir != NULL && dir[0] != '\0' ? dir : "/tmp", program);
}

static status_code start_one(proc **out, const char *program, const char *url, char *err,
                             size_t errlen) {
  char bin[1024], logp[1024];
  stack_bin(bin, sizeof bin, program);
  log_path(logp, sizeof logp, program);
  const char *argv_listen[] = {"--config", stack_config(), "--listen", url, NULL};
  proc_opts o = {.path = bin,
                 .argv = argv_listen,
                 .probe_url = url,
                 .ready_timeout_ms = STACK_READY_MS,
                 .log_path = logp};
  return proc_start(out, &o, err, errlen);
}

void stack_up(const char *const *programs) {
  char err[1024] = "";
  const char *missing = NULL;
  const char *need[] = {"SHOP_RUN_DIR", "SHOP_MYSQL_PORT", "SHOP_KAFKA_BROKERS",
                        "SHOP_SECRETS_DIR"};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++)
    if (getenv(need[i]) == NULL) missing = need[i];
  if (missing != NULL) {
    snprintf(err, sizeof err, "%s is not set: run the tests through `make test` (scripts/test.sh)",
             missing);
    setenv("SHOP_STACK_ERROR", err, 1);
    return;
  }
  if (stack_cfg(err, sizeof err) == NULL) {
    setenv("SHOP_STACK_ERROR", err, 1);
    return;
  }
  for (size_t i = 0; programs[i] != NULL && running.n < STACK_MAX; i++) {
    const char *url = stack_url(programs[i]);
    proc *p = NULL;
    char why[900] = "";
    if (url == NULL || start_one(&p, programs[i], url, why, sizeof why) != STATUS_OK) {
      snprintf(err, sizeof err, "%s did not start: %s", programs[i], why);
      fprintf(stderr, "stack: %s\n", err);
      setenv("SHOP_STACK_ERROR", err, 1);
      return;
    }
    running.name[running.n] = programs[i];
    running.p[running.n++] = p;
  }
}

void stack_down(void) {
  bool clean = true;
  /* Stop in reverse order: consumers before the producers they read. */
  while (running.n > 0) {
    running.n--;
    int code = -1;
    proc_stop(running.p[running.n], STACK_STOP_MS, &code);
    if (code != 0) {
      fprintf(stderr, "stack: %s exited with %d after SIGTERM (see its log)\n",
              running.name[running.n], code);
      clean = false;
    }
    proc_destroy(running.p[running.n]);
  }
  config_free(cfg_cache);
  cfg_cache = NULL;
  if (!clean) exit(3);
}

void stack_require(void) {
  const char *e = getenv("SHOP_STACK_ERROR");
  cr_assert(e == NULL, "the Shop programs are not running: %s", e);
}

void stack_release(void) {
  for (size_t i = 0; i < STACK_MAX; i++) {
    proc_destroy(extras[i]);
    extras[i] = NULL;
  }
  while (clients.n > 0) {
    clients.n--;
    rpc_client_destroy(clients.c[clients.n]);
  }
  config_free(cfg_cache);
  cfg_cache = NULL;
}

rpc_client *stack_client(const char *program) {
  for (size_t i = 0; i < clients.n; i++)
    if (strcmp(clients.name[i], program) == 0) return clients.c[i];
  cr_assert_lt(clients.n, STACK_MAX);
  char err[512] = "";
  const shop_cfg *cfg = stack_cfg(err, sizeof err);
  cr_assert_not_null(cfg, "config: %s", err);
  const char *url = stack_url(program);
  cr_assert_not_null(url, "no endpoint for %s", program);
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, cfg, url, "e2e-test");
  o.default_timeout_ms = STACK_CALL_TIMEOUT_MS;
  rpc_client *c = NULL;
  cr_assert_eq(rpc_client_create(&c, &o, err, sizeof err), STATUS_OK, "client: %s", err);
  cr_assert(rpc_client_wait_connected(c, 10000), "%s at %s does not answer", program, url);
  snprintf(clients.name[clients.n], sizeof clients.name[0], "%s", program);
  clients.c[clients.n++] = c;
  return c;
}

proc *stack_start_extra(const char *program, const char *url) {
  char err[1024] = "";
  proc *p = NULL;
  cr_assert_eq(start_one(&p, program, url, err, sizeof err), STATUS_OK, "%s: %s", program, err);
  size_t i = 0;
  while (i < STACK_MAX && extras[i] != NULL) i++;
  cr_assert_lt(i, STACK_MAX, "too many extra instances");
  extras[i] = p;
  return p;
}

int stack_stop_extra(proc *p) {
  int code = -1;
  proc_stop(p, STACK_STOP_MS, &code);
  for (size_t i = 0; i < STACK_MAX; i++)
    if (extras[i] == p) extras[i] = NULL;
  proc_destroy(p);
  return code;
}

void stack_unique(char *out, size_t len, const char *prefix) {
  static unsigned n;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  snprintf(out, len, "%s-%d-%u-%lld", prefix, (int)getpid(), ++n,
           (long long)tv.tv_sec * 1000000 + tv.tv_usec);
}

status_code stack_call(const char *program, const ProtobufCServiceDescriptor *desc,
                       const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                       const char *token, const char *key, rpc_status *st) {
  rpc_status local;
  rpc_call_opts o = {.token = token, .idempotency_key = key};
  ProtobufCMessage *reply = NULL;
  status_code code = rpc_client_call_sync(stack_client(program), desc, method, in, &reply, &o,
                                          st != NULL ? st : &local);
  if (out != NULL)
    *out = reply;
  else if (reply != NULL)
    protobuf_c_message_free_unpacked(reply, NULL);
  return code;
}

bool stack_has_violation(const rpc_status *st, const char *field) {
  for (size_t i = 0; i < st->n_violations; i++)
    if (strcmp(st->violations[i].field, field) == 0) return true;
  return false;
}

void stack_admin_password(char *out, size_t len) {
  const char *dir = getenv("SHOP_SECRETS_DIR");
  cr_assert_not_null(dir, "SHOP_SECRETS_DIR is not set");
  char path[1024];
  snprintf(path, sizeof path, "%s/admin.password", dir);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "cannot read %s", path);
  size_t n = fread(out, 1, len - 1, f);
  fclose(f);
  out[n] = '\0';
  while (n > 0 && (out[n - 1] == '\n' || out[n - 1] == '\r')) out[--n] = '\0';
}
