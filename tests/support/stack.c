/* The Shop programs the end-to-end tests run against. See stack.h. */
#include "support/stack.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <dirent.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include "events/outbox.h"
#include "reconcile/reconcile.h"
#include "shop/product/v1/queries.pb-c.h"
#include "stack_internal.h"
#include "support/account.h"
#include "support/wait.h"
#include "topology/topology.h"

#define STACK_RUNNING_MAX 12
#define STACK_EXTRA_MAX 8
#define STACK_CLIENTS_MAX 8
#define STACK_READY_MS 60000
#define STACK_STOP_MS 30000
#define STACK_CALL_TIMEOUT_MS 20000
#define STACK_START_TRIES 3

#ifndef SHOP_SOURCE_DIR
#define SHOP_SOURCE_DIR "."
#endif

/* The Shop programs and their endpoints come from the project's one list
 * (internal/config/programs.list, config_programs). */

/* One started instance of a program (or a sink) and what it was started
 * with. */
typedef struct instance {
  char name[64];
  char url[256];
  char bin[1024], log[1024];
  char port_arg[16], ready_url[64];
  char ready_file[1100]; /* a sink's */
  const char *argv[12];
  proc_opts o;
  bool picked_port; /* the harness chose admin_port: another may be chosen */
  int admin_port;
  long log_offset; /* the log's size when it was started */
  proc *p;
} instance;

static instance running[STACK_RUNNING_MAX]; /* runner */
static size_t n_running;
static instance *extras[STACK_EXTRA_MAX]; /* test */
static struct {
  size_t n;
  char url[STACK_CLIENTS_MAX][256];
  rpc_client *c[STACK_CLIENTS_MAX];
} clients;
static shop_cfg *cfg_cache;
static auth_keys *keys;

/* ---- Config and paths ------------------------------------------------------------------------ */

const char *stack_config(void) {
  static char path[1024];
  const char *env = getenv("SHOP_CONFIG");
  if (env != NULL && env[0] != '\0') return env;
  snprintf(path, sizeof path, "%s/config/test.yaml", SHOP_SOURCE_DIR);
  return path;
}

const shop_cfg *stack_cfg_load(char *err, size_t errlen) {
  if (cfg_cache == NULL && config_load(&cfg_cache, stack_config(), err, errlen) != 0) return NULL;
  return cfg_cache;
}

const shop_cfg *stack_cfg(void) {
  char err[512] = "";
  const shop_cfg *c = stack_cfg_load(err, sizeof err);
  cr_assert_not_null(c, "config %s: %s", stack_config(), err);
  return c;
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
  snprintf(out, len, "%.900s/../bin/%.64s", self, program);
}

static const char *url_of(const shop_cfg *cfg, const char *program) {
  const config_program *p = config_program_find(program);
  return p != NULL ? config_program_endpoint(cfg, p) : NULL;
}

const char *stack_url(const char *program) { return url_of(stack_cfg(), program); }

/* ---- Starting and stopping one instance ------------------------------------------------------ */

static long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

static bool log_has_since(const char *path, long offset, const char *needle) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return false;
  fseek(f, offset, SEEK_SET);
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static void pick_admin_port(instance *in) {
  in->admin_port = proc_free_tcp_port();
  snprintf(in->port_arg, sizeof in->port_arg, "%d", in->admin_port);
  snprintf(in->ready_url, sizeof in->ready_url, "http://127.0.0.1:%d/readyz", in->admin_port);
}

/* Fills in how program is started: --config, --listen, --admin-port. */
static void instance_prepare(instance *in, const char *program, const stack_opts *so) {
  memset(in, 0, sizeof *in);
  snprintf(in->name, sizeof in->name, "%s", program);
  stack_bin(in->bin, sizeof in->bin, program);
  const char *dir = getenv("SHOP_LOG_DIR");
  if (so->log_path != NULL)
    snprintf(in->log, sizeof in->log, "%s", so->log_path);
  else
    snprintf(in->log, sizeof in->log, "%.900s/e2e-%.64s.log",
             dir != NULL && dir[0] != '\0' ? dir : "/tmp", program);
  size_t n = 0;
  in->argv[n++] = "--config";
  in->argv[n++] = stack_config();
  if (so->url != NULL) {
    snprintf(in->url, sizeof in->url, "%s", so->url);
    in->argv[n++] = "--listen";
    in->argv[n++] = in->url;
  }
  if (so->admin_port >= 0) {
    in->picked_port = so->admin_port == 0;
    if (in->picked_port) {
      pick_admin_port(in);
    } else {
      in->admin_port = so->admin_port;
      snprintf(in->port_arg, sizeof in->port_arg, "%d", so->admin_port);
      snprintf(in->ready_url, sizeof in->ready_url, "http://127.0.0.1:%d/readyz", so->admin_port);
    }
    in->argv[n++] = "--admin-port";
    in->argv[n++] = in->port_arg;
  }
  in->argv[n] = NULL;
  in->o = (proc_opts){
      .path = in->bin,
      .argv = in->argv,
      .env = so->env,
      .ready_url = so->admin_port >= 0 && !so->no_wait ? in->ready_url : NULL,
      /* No admin port known: the RPC health, if it serves. */
      .probe_url = so->admin_port < 0 && !so->no_wait && so->url != NULL ? in->url : NULL,
      .ready_timeout_ms = STACK_READY_MS,
      .log_path = in->log};
}

static status_code instance_spawn(instance *in, char *err, size_t errlen) {
  in->log_offset = file_size(in->log);
  return proc_spawn(&in->p, &in->o, err, errlen);
}

/* Waits until the instance is ready. An admin port the harness picked may
 * have been taken in the meantime by someone else: then another is picked
 * and the program started again. */
static status_code instance_wait(instance *in, char *err, size_t errlen) {
  for (int tries = 1;; tries++) {
    status_code st = proc_wait_ready(in->p, &in->o, err, errlen);
    if (st == STATUS_OK) return st;
    bool port_taken = st == STATUS_UNAVAILABLE && in->picked_port &&
                      log_has_since(in->log, in->log_offset, "Address already in use");
    proc_destroy(in->p);
    in->p = NULL;
    size_t used = strlen(err);
    snprintf(err + used, errlen - used, " (see %s)", in->log);
    if (!port_taken || tries == STACK_START_TRIES) return st;
    pick_admin_port(in);
    if ((st = instance_spawn(in, err, errlen)) != STATUS_OK) return st;
  }
}

static status_code instance_start(instance **out, const char *program, const stack_opts *so,
                                  char *err, size_t errlen) {
  instance *in = malloc(sizeof *in);
  if (in == NULL) {
    snprintf(err, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  instance_prepare(in, program, so);
  status_code st = instance_spawn(in, err, errlen);
  if (st == STATUS_OK && !so->no_wait) st = instance_wait(in, err, errlen);
  if (st != STATUS_OK) {
    proc_destroy(in->p);
    free(in);
    return st;
  }
  *out = in;
  return STATUS_OK;
}

/* SIGCONT (a paused program never sees SIGTERM), SIGTERM, then SIGKILL
 * after STACK_STOP_MS. False, with the reason on stderr, when it did not
 * stop by itself with status 0; one that had ended before is reported
 * only when report_ended is set (a test may have ended it on purpose).
 * Frees nothing. */
static bool instance_stop(instance *in, int *code, bool report_ended) {
  *code = -1;
  if (in->p == NULL) return true;
  if (!proc_alive(in->p)) {
    proc_stop(in->p, 0, code);
    if (report_ended && *code != 0)
      fprintf(stderr, "stack: %s had ended with %d before it was stopped (see %s)\n", in->name,
              *code, in->log);
    return *code == 0;
  }
  kill(proc_pid(in->p), SIGCONT);
  status_code st = proc_stop(in->p, STACK_STOP_MS, code);
  if (st != STATUS_OK)
    fprintf(stderr, "stack: %s (pid %d) did not stop within %d ms of SIGTERM: killed\n", in->name,
            (int)proc_pid(in->p), STACK_STOP_MS);
  else if (*code != 0)
    fprintf(stderr, "stack: %s exited with %d after SIGTERM (see %s)\n", in->name, *code, in->log);
  return st == STATUS_OK && *code == 0;
}

static int instance_stop_free(instance *in) {
  int code;
  instance_stop(in, &code, false);
  proc_destroy(in->p);
  free(in);
  return code;
}

/* ---- Runner ---------------------------------------------------------------------------------- */

static void fail_all(const char *why) {
  fprintf(stderr, "stack: %s\n", why);
  setenv("SHOP_STACK_ERROR", why, 1);
}

static void env_name(char *out, size_t len, const char *prefix, const char *program) {
  size_t o = (size_t)snprintf(out, len, "%s", prefix);
  for (const char *p = program; *p != '\0' && o + 1 < len; p++)
    out[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[o] = '\0';
}

void stack_up(const char *const *names) {
  char err[1024] = "";
  const char *need[] = {"SHOP_RUN_DIR", "SHOP_MYSQL_PORT", "SHOP_KAFKA_BROKERS",
                        "SHOP_SECRETS_DIR"};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
    if (getenv(need[i]) == NULL) {
      snprintf(err, sizeof err,
               "%s is not set: run the tests through `make test` (scripts/test.sh)", need[i]);
      fail_all(err);
      return;
    }
  }
  const shop_cfg *cfg = stack_cfg_load(err, sizeof err);
  if (cfg == NULL) {
    fail_all(err);
    return;
  }
  char run[64];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  snprintf(run, sizeof run, "E2E-%d-%lld", (int)getpid(), (long long)tv.tv_sec);
  setenv("SHOP_E2E_RUN", run, 1);
  if (!stack_offsets_snapshot(err, sizeof err)) {
    fail_all(err);
    return;
  }
  /* Every program at once, then the wait for each: on two cores this
   * overlaps their start-ups (migrations, the first join of a group). */
  for (size_t i = 0; names[i] != NULL; i++) {
    if (n_running == STACK_RUNNING_MAX || config_program_find(names[i]) == NULL) {
      snprintf(err, sizeof err, "stack_up: %s: unknown program, or more than %d", names[i],
               STACK_RUNNING_MAX);
      fail_all(err);
      return;
    }
    instance *in = &running[n_running++];
    instance_prepare(in, names[i], &(stack_opts){.url = url_of(cfg, names[i])});
    char why[900] = "";
    if (instance_spawn(in, why, sizeof why) != STATUS_OK) {
      snprintf(err, sizeof err, "%s did not start: %s", names[i], why);
      fail_all(err);
      return;
    }
  }
  for (size_t i = 0; i < n_running; i++) {
    char why[900] = "";
    if (instance_wait(&running[i], why, sizeof why) != STATUS_OK) {
      snprintf(err, sizeof err, "%s did not start: %s", running[i].name, why);
      fail_all(err);
      return;
    }
    char name[96], pid[32];
    env_name(name, sizeof name, "SHOP_E2E_PID_", running[i].name);
    snprintf(pid, sizeof pid, "%d", (int)proc_pid(running[i].p));
    setenv(name, pid, 1);
  }
}

void stack_down(void) {
  bool clean = true;
  /* In reverse order: consumers before the producers they read. */
  while (n_running > 0) {
    instance *in = &running[--n_running];
    int code;
    if (!instance_stop(in, &code, true)) clean = false;
    proc_destroy(in->p);
    in->p = NULL;
  }
  config_free(cfg_cache);
  cfg_cache = NULL;
  if (!clean) exit(3);
}

void stack_down_after_books(int settle_ms) {
  bool clean = stack_books_clean(true, settle_ms);
  stack_down();
  if (!clean) exit(4);
}

/* ---- Test side ------------------------------------------------------------------------------- */

void stack_require(void) {
  const char *e = getenv("SHOP_STACK_ERROR");
  cr_assert(e == NULL, "the Shop programs are not running: %s", e);
}

void stack_release(void) {
  /* A test that paused one of the runner's programs and then failed must
   * not leave it paused for the tests after it. */
  size_t n_programs = 0;
  const config_program *programs = config_programs(&n_programs);
  for (size_t i = 0; i < n_programs; i++) {
    char name[96];
    env_name(name, sizeof name, "SHOP_E2E_PID_", programs[i].name);
    const char *pid = getenv(name);
    if (pid != NULL) kill((pid_t)atoi(pid), SIGCONT);
  }
  /* What the test (or its suite's .init) started and did not stop is
   * stopped like stack_stop does; one that does not stop cleanly is
   * reported. */
  for (size_t i = 0; i < STACK_EXTRA_MAX; i++) {
    if (extras[i] == NULL) continue;
    instance_stop_free(extras[i]);
    extras[i] = NULL;
  }
  while (clients.n > 0) {
    clients.n--;
    rpc_client_destroy(clients.c[clients.n]);
  }
  auth_keys_destroy(keys);
  keys = NULL;
  config_free(cfg_cache);
  cfg_cache = NULL;
}

pid_t stack_pid(const char *program) {
  char name[96];
  env_name(name, sizeof name, "SHOP_E2E_PID_", program);
  const char *v = getenv(name);
  cr_assert_not_null(v, "%s is not set: the runner did not start %s", name, program);
  return (pid_t)atoi(v);
}

const char *stack_run(void) {
  const char *v = getenv("SHOP_E2E_RUN");
  cr_assert_not_null(v, "SHOP_E2E_RUN is not set");
  return v;
}

/* Keeps in as the test's, so that stack_release finds it. */
static proc *adopt(instance *in) {
  for (size_t i = 0; i < STACK_EXTRA_MAX; i++) {
    if (extras[i] == NULL) {
      extras[i] = in;
      return in->p;
    }
  }
  instance_stop_free(in);
  cr_assert_fail("more than %d instances started by one test", STACK_EXTRA_MAX);
  return NULL;
}

proc *stack_start_with(const char *program, const stack_opts *o) {
  char err[1024] = "";
  instance *in = NULL;
  cr_assert_eq(instance_start(&in, program, o, err, sizeof err), STATUS_OK, "%s: %s", program, err);
  return adopt(in);
}

proc *stack_start(const char *program, const char *url, const char *const *env) {
  return stack_start_with(program, &(stack_opts){.url = url, .env = env});
}

static instance *extra_of(const proc *p) {
  for (size_t i = 0; i < STACK_EXTRA_MAX; i++)
    if (extras[i] != NULL && extras[i]->p == p) return extras[i];
  return NULL;
}

int stack_stop(proc *p) {
  instance *in = extra_of(p);
  cr_assert_not_null(in, "stack_stop: not an instance this test started");
  for (size_t i = 0; i < STACK_EXTRA_MAX; i++)
    if (extras[i] == in) extras[i] = NULL;
  return instance_stop_free(in);
}

int stack_admin_port(const proc *p) {
  const instance *in = extra_of(p);
  return in != NULL ? in->admin_port : 0;
}

proc *stack_sink(const char *script, int port, const char *dir) {
  instance *in = calloc(1, sizeof *in);
  cr_assert_not_null(in);
  snprintf(in->name, sizeof in->name, "%s", script);
  snprintf(in->bin, sizeof in->bin, "%s/tests/notification/%s", SHOP_SOURCE_DIR, script);
  snprintf(in->port_arg, sizeof in->port_arg, "%d", port);
  snprintf(in->url, sizeof in->url, "%s", dir);
  snprintf(in->log, sizeof in->log, "%.1000s.log", dir);
  snprintf(in->ready_file, sizeof in->ready_file, "%.1000s/ready", dir);
  unlink(in->ready_file);
  in->argv[0] = in->bin;
  in->argv[1] = in->port_arg;
  in->argv[2] = in->url;
  in->argv[3] = NULL;
  in->o = (proc_opts){.path = "/usr/bin/python3",
                      .argv = in->argv,
                      .ready_file = in->ready_file,
                      .ready_timeout_ms = 10000,
                      .log_path = in->log};
  char err[1024] = "";
  status_code st = proc_start(&in->p, &in->o, err, sizeof err);
  if (st != STATUS_OK) free(in);
  cr_assert_eq(st, STATUS_OK, "%s: %s (see %s.log)", script, err, dir);
  return adopt(in);
}

void stack_unique(char *out, size_t len, const char *prefix) {
  static unsigned n;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  snprintf(out, len, "%s-%d-%u-%lld", prefix, (int)getpid(), ++n,
           (long long)tv.tv_sec * 1000000 + tv.tv_usec);
}

bool stack_has_violation(const rpc_status *st, const char *field) {
  for (size_t i = 0; i < st->n_violations; i++)
    if (strcmp(st->violations[i].field, field) == 0) return true;
  return false;
}

char *stack_sink_received(const char *dir, const char *ext, const char *needle, int *count) {
  *count = 0;
  char *all = calloc(1, 1);
  cr_assert_not_null(all);
  size_t len = 0;
  DIR *d = opendir(dir);
  if (d == NULL) return all;
  struct dirent *de;
  while ((de = readdir(d)) != NULL) {
    size_t nl = strlen(de->d_name), el = strlen(ext);
    if (nl < el || strcmp(de->d_name + nl - el, ext) != 0) continue;
    char path[1400], buf[16384];
    snprintf(path, sizeof path, "%.1000s/%.300s", dir, de->d_name);
    FILE *f = fopen(path, "rb");
    if (f == NULL) continue;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    if (needle != NULL && strstr(buf, needle) == NULL) continue;
    char *grown = realloc(all, len + n + 2);
    cr_assert_not_null(grown);
    all = grown;
    memcpy(all + len, buf, n);
    len += n;
    all[len++] = '\n';
    all[len] = '\0';
    (*count)++;
  }
  closedir(d);
  return all;
}

/* ---- Clients and calls ----------------------------------------------------------------------- */

rpc_client *stack_client(const char *url) {
  for (size_t i = 0; i < clients.n; i++)
    if (strcmp(clients.url[i], url) == 0) return clients.c[i];
  cr_assert_lt(clients.n, STACK_CLIENTS_MAX);
  char err[512] = "";
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, stack_cfg(), url, "e2e-test");
  o.default_timeout_ms = STACK_CALL_TIMEOUT_MS;
  rpc_client *c = NULL;
  cr_assert_eq(rpc_client_create(&c, &o, err, sizeof err), STATUS_OK, "client: %s", err);
  cr_assert(rpc_client_wait_connected(c, 10000), "%s does not answer", url);
  snprintf(clients.url[clients.n], sizeof clients.url[0], "%s", url);
  clients.c[clients.n++] = c;
  return c;
}

status_code stack_call_at(const char *url, const ProtobufCServiceDescriptor *desc,
                          const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                          const char *token, const char *key, rpc_status *st) {
  rpc_status local;
  rpc_call_opts o = {.token = token, .idempotency_key = key};
  ProtobufCMessage *reply = NULL;
  status_code code = rpc_client_call_sync(stack_client(url), desc, method, in, &reply, &o,
                                          st != NULL ? st : &local);
  if (out != NULL)
    *out = reply;
  else if (reply != NULL)
    protobuf_c_message_free_unpacked(reply, NULL);
  return code;
}

status_code stack_call(const char *program, const ProtobufCServiceDescriptor *desc,
                       const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                       const char *token, const char *key, rpc_status *st) {
  const char *url = stack_url(program);
  cr_assert_not_null(url, "%s serves no RPC", program);
  return stack_call_at(url, desc, method, in, out, token, key, st);
}

const char *stack_key(void) {
  static char k[16][96];
  static unsigned i;
  i = (i + 1) % 16;
  stack_unique(k[i], sizeof k[i], "k");
  return k[i];
}

Shop__User__V1__LoginResponse *stack_login(const char *email, const char *password) {
  Shop__User__V1__LoginRequest req = SHOP__USER__V1__LOGIN_REQUEST__INIT;
  req.email = (char *)email;
  req.password = (char *)password;
  Shop__User__V1__LoginResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call("user-command", &shop__user__v1__user_command_service__descriptor,
                          "Login", &req.base, (ProtobufCMessage **)&r, NULL, stack_key(), &st),
               STATUS_OK, "Login %s: %s %s", email, status_name(st.code), st.message);
  return r;
}

void stack_customer(stack_user *u, const char *who, const char *name) {
  char unique[96];
  stack_unique(unique, sizeof unique, who);
  snprintf(u->email, sizeof u->email, "%s@e2e.shop.test", unique);
  Shop__User__V1__RegisterUserRequest req = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  req.email = u->email;
  req.password = STACK_PASSWORD;
  req.name = (char *)name;
  Shop__User__V1__RegisterUserResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(
      stack_call("user-command", &shop__user__v1__user_command_service__descriptor, "RegisterUser",
                 &req.base, (ProtobufCMessage **)&r, NULL, stack_key(), &st),
      STATUS_OK, "RegisterUser %s: %s %s", u->email, status_name(st.code), st.message);
  snprintf(u->user_id, sizeof u->user_id, "%s", r->user_id);
  shop__common__v1__consistency_token__init(&u->consistency);
  u->consistency.aggregate_id = u->user_id;
  u->consistency.version = r->consistency->version;
  protobuf_c_message_free_unpacked(&r->base, NULL);
  Shop__User__V1__LoginResponse *l = stack_login(u->email, STACK_PASSWORD);
  snprintf(u->token, sizeof u->token, "%s", l->tokens->access_token);
  protobuf_c_message_free_unpacked(&l->base, NULL);
}

void stack_token(char *out, const char *sub, auth_role role) {
  char err[512] = "";
  cr_assert_eq(req_token(stack_cfg(), &keys, sub, role, out, err, sizeof err), STATUS_OK, "%s",
               err);
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

db_conn *stack_db(const char *account) {
  char err[512] = "";
  db_conn *c = NULL;
  status_code st = support_db_connect(stack_cfg(), account, &c, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "db_connect(%s): %s", account, err);
  return c;
}

void stack_product_seen(const char *id, Shop__Common__V1__ConsistencyToken *t) {
  Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = t;
  rc.wait_ms = 15000;
  g.product_id = (char *)id;
  g.consistency = &rc;
  rpc_status st;
  cr_assert_eq(stack_call("product-query", &shop__product__v1__product_query_service__descriptor,
                          "GetProduct", &g.base, NULL, NULL, NULL, &st),
               STATUS_OK, "GetProduct %s: %s", id, st.message);
}

void stack_product(const char *admin_token, int64_t stock, int64_t price, int32_t max,
                   char id[37]) {
  char sku[96], u[64], k[96];
  stack_unique(k, sizeof k, "k");
  stack_unique(u, sizeof u, "p");
  snprintf(sku, sizeof sku, "%s-%s", stack_run(), u);
  req_product p;
  req_product_init(&p, sku, stock, price, "EUR");
  p.rule.max_quantity_per_order = max;
  Shop__Product__V1__CreateProductResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(
      stack_call("product-command", &shop__product__v1__product_command_service__descriptor,
                 "CreateProduct", &p.req.base, (ProtobufCMessage **)&r, admin_token, k, &st),
      STATUS_OK, "CreateProduct: %s", st.message);
  snprintf(id, 37, "%s", r->product_id);
  stack_product_seen(id, r->consistency);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

int64_t stack_unsent(const char *account) {
  db_conn *c = stack_db(account);
  int64_t n = -1;
  char err[512] = "";
  status_code st = outbox_backlog(c, &n, NULL, err, sizeof err);
  db_close(c);
  cr_assert_eq(st, STATUS_OK, "the outbox of %s: %s", account, err);
  return n;
}

bool stack_quiet(const char *const *groups, size_t n_groups, const char *const *outboxes,
                 size_t n_outboxes, char *why, size_t whylen) {
  for (size_t i = 0; i < n_groups; i++) {
    if (!stack_group_quiet(groups[i])) {
      if (why != NULL) snprintf(why, whylen, "group %s has not caught up", groups[i]);
      return false;
    }
  }
  for (size_t i = 0; i < n_outboxes; i++) {
    int64_t n = stack_unsent(outboxes[i]);
    if (n != 0) {
      if (why != NULL)
        snprintf(why, whylen, "%lld unsent in the outbox of %s", (long long)n, outboxes[i]);
      return false;
    }
  }
  return true;
}

void stack_group_reset(const char *group, const char *inbox_db, bool earliest) {
  if (inbox_db != NULL) {
    db_conn *db = stack_db(inbox_db);
    char err[512] = "";
    db_value v[1] = {DB_STR(group)};
    status_code st = db_exec(db, "DELETE FROM processed_events WHERE consumer_group = ?", v, 1,
                             NULL, NULL, err, sizeof err);
    db_close(db);
    cr_assert_eq(st, STATUS_OK, "the inbox of %s in %s: %s", group, inbox_db, err);
  }
  const char *topics[STACK_GROUP_TOPICS_MAX];
  size_t n = stack_group_topics(group, topics, STACK_GROUP_TOPICS_MAX);
  WAIT_UNTIL(earliest ? stack_group_rewind_earliest(group, topics, n)
                      : stack_group_rewind(group, topics, n),
             60000, "group %s reset (the broker refuses while a paused member is in it)", group);
}

/* ---- The books ------------------------------------------------------------------------------- */

bool stack_books_clean(bool with_audit_worker, int settle_ms) {
  if (getenv("SHOP_STACK_ERROR") != NULL || getenv("SHOP_E2E_RUN") == NULL) return true;
  char err[1024] = "";
  const shop_cfg *cfg = stack_cfg_load(err, sizeof err);
  if (cfg == NULL) {
    fprintf(stderr, "stack: reconcile: config: %s\n", err);
    return false;
  }
  instance *audit = NULL;
  if (with_audit_worker &&
      instance_start(&audit, "audit-worker", &(stack_opts){.url = cfg->endpoints.audit_query}, err,
                     sizeof err) != STATUS_OK) {
    fprintf(stderr, "stack: reconcile: audit-worker did not start: %s\n", err);
    return false;
  }
  reconcile_opts o;
  reconcile_opts_init(&o);
  o.sku_prefix = getenv("SHOP_E2E_RUN");
  o.settle_ms = settle_ms;
  reconcile_report r;
  status_code st = reconcile_run(cfg, &o, &r, err, sizeof err);
  bool clean = st == STATUS_OK && r.findings_count == 0;
  if (st != STATUS_OK) {
    fprintf(stderr, "stack: reconcile: %s: %s\n", status_name(st), err);
  } else {
    for (size_t i = 0; i < r.findings_count; i++)
      fprintf(stderr, "stack: reconcile: %s %s: %s\n", reconcile_kind_name(r.findings[i].kind),
              r.findings[i].id, r.findings[i].why);
    fprintf(stderr,
            "stack: reconcile of run %s: %s: %" PRId64 " orders, %" PRId64 " products, %" PRId64
            " audit events, %d run(s) in %" PRId64 " ms\n",
            o.sku_prefix, clean ? "clean" : "BROKEN", r.orders, r.products, r.events, r.runs,
            r.elapsed_ms);
  }
  reconcile_report_free(&r);
  if (audit != NULL) instance_stop_free(audit);
  return clean;
}
