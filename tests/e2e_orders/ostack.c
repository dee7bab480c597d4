/* The programs of the order end-to-end tests. See ostack.h. */
#include "e2e_orders/ostack.h"

#include <criterion/criterion.h>
#include <ctype.h>
#include <inttypes.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "reconcile/reconcile.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "support/account.h"
#include "topology/topology.h"

#define OSTACK_READY_MS 60000
#define OSTACK_STOP_MS 30000
#define OSTACK_CALL_TIMEOUT_MS 20000
#define OSTACK_MAX 8
#define KAFKA_TIMEOUT_MS 10000

#ifndef SHOP_SOURCE_DIR
#define SHOP_SOURCE_DIR "."
#endif

static const char *const programs[] = {"product-command", "product-query",    "order-command",
                                       "order-query",     "inventory-worker", "payment-worker"};
#define N_PROGRAMS (sizeof programs / sizeof programs[0])

#define OSTACK_MORE_MAX 4
static const char *more_programs[OSTACK_MORE_MAX]; /* runner: ostack_up_with's */
static size_t n_more;
static proc *running[N_PROGRAMS + OSTACK_MORE_MAX]; /* runner */
static proc *extras[OSTACK_MAX];                    /* test */
static struct {
  size_t n;
  char url[OSTACK_MAX][128];
  rpc_client *c[OSTACK_MAX];
} clients;
static shop_cfg *cfg_cache;
static auth_keys *keys;

int64_t ostack_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static const char *config_path(void) {
  static char path[1024];
  const char *env = getenv("SHOP_CONFIG");
  if (env != NULL && env[0] != '\0') return env;
  snprintf(path, sizeof path, "%s/config/test.yaml", SHOP_SOURCE_DIR);
  return path;
}

static const shop_cfg *cfg_load(char *err, size_t errlen) {
  if (cfg_cache == NULL && config_load(&cfg_cache, config_path(), err, errlen) != 0) return NULL;
  return cfg_cache;
}

const shop_cfg *ostack_cfg(void) {
  char err[512] = "";
  const shop_cfg *c = cfg_load(err, sizeof err);
  cr_assert_not_null(c, "config: %s", err);
  return c;
}

static const char *url_of(const shop_cfg *cfg, const char *program) {
  if (strcmp(program, "product-command") == 0) return cfg->endpoints.product_command;
  if (strcmp(program, "product-query") == 0) return cfg->endpoints.product_query;
  if (strcmp(program, "order-command") == 0) return cfg->endpoints.order_command;
  if (strcmp(program, "order-query") == 0) return cfg->endpoints.order_query;
  if (strcmp(program, "audit-worker") == 0) return cfg->endpoints.audit_query;
  return NULL;
}

const char *ostack_url(const char *program) { return url_of(ostack_cfg(), program); }

static void bin_path(char *out, size_t len, const char *program) {
  char self[1024];
  ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
  if (n <= 0) {
    snprintf(out, len, "%s", program);
    return;
  }
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash != NULL) *slash = '\0';
  snprintf(out, len, "%.900s/../bin/%.64s", self, program);
}

static void log_path(char *out, size_t len, const char *program) {
  const char *dir = getenv("SHOP_LOG_DIR");
  snprintf(out, len, "%s/e2e-%s.log", dir != NULL && dir[0] != '\0' ? dir : "/tmp", program);
}

static long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/* Whether the log grew a line saying "<program>: serving" past offset. */
static bool log_says_serving(const char *path, long offset, const char *program) {
  FILE *f = fopen(path, "r");
  if (f == NULL) return false;
  fseek(f, offset, SEEK_SET);
  char needle[128], line[4096];
  snprintf(needle, sizeof needle, "\"%s: serving", program);
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static status_code start_one(proc **out, const char *program, const char *url,
                             const char *const *env, char *err, size_t errlen) {
  char bin[1024], logp[1024];
  bin_path(bin, sizeof bin, program);
  log_path(logp, sizeof logp, program);
  long offset = file_size(logp);
  /* An ephemeral admin port: tests start second instances of workers,
   * which would otherwise both take the config's admin port. */
  const char *argv_url[] = {"--config", config_path(), "--listen", url, "--admin-port", "0", NULL};
  const char *argv_plain[] = {"--config", config_path(), "--admin-port", "0", NULL};
  proc_opts o = {.path = bin,
                 .argv = url != NULL ? argv_url : argv_plain,
                 .env = env,
                 .probe_url = url,
                 .ready_timeout_ms = OSTACK_READY_MS,
                 .log_path = logp};
  status_code st = proc_start(out, &o, err, errlen);
  if (st != STATUS_OK || url != NULL) return st;
  int64_t until = ostack_now_ms() + OSTACK_READY_MS;
  while (ostack_now_ms() < until) {
    if (log_says_serving(logp, offset, program)) return STATUS_OK;
    if (!proc_alive(*out)) {
      snprintf(err, errlen, "%s exited during start-up (see %.600s)", program, logp);
      proc_destroy(*out);
      *out = NULL;
      return STATUS_UNAVAILABLE;
    }
    usleep(50000);
  }
  snprintf(err, errlen, "%s did not say it was serving within %d ms (see %.600s)", program,
           OSTACK_READY_MS, logp);
  proc_destroy(*out);
  *out = NULL;
  return STATUS_DEADLINE_EXCEEDED;
}

static void env_name(char *out, size_t len, const char *prefix, const char *program) {
  size_t o = (size_t)snprintf(out, len, "%s", prefix);
  for (const char *p = program; *p != '\0' && o + 1 < len; p++)
    out[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
  out[o] = '\0';
}

/* ---- Kafka --------------------------------------------------------------------------------- */

static rd_kafka_t *kafka_consumer(const char *group, char *err, size_t errlen) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  const char *brokers = getenv("SHOP_KAFKA_BROKERS");
  if (rd_kafka_conf_set(conf, "bootstrap.servers", brokers != NULL ? brokers : "127.0.0.1:29092",
                        err, errlen) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "group.id", group, err, errlen) != RD_KAFKA_CONF_OK ||
      rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, errlen) != RD_KAFKA_CONF_OK) {
    rd_kafka_conf_destroy(conf);
    return NULL;
  }
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, errlen);
  if (rk == NULL) rd_kafka_conf_destroy(conf);
  return rk;
}

/* "topic/partition=offset;..." of the end offsets now. */
static bool end_offsets_text(char *out, size_t len, char *err, size_t errlen) {
  rd_kafka_t *rk = kafka_consumer("ostack-offsets", err, errlen);
  if (rk == NULL) return false;
  size_t o = 0;
  out[0] = '\0';
  bool ok = true;
  /* Every domain topic: the replay tests rewind groups to these. */
  for (size_t t = 0; ok && t < topology_topic_count(); t++) {
    const char *topic = topology_topic(t);
    for (int p = 0; ok && p < TOPOLOGY_DOMAIN_PARTITIONS; p++) {
      int64_t lo = 0, hi = 0;
      rd_kafka_resp_err_t e =
          rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &hi, KAFKA_TIMEOUT_MS);
      if (e != RD_KAFKA_RESP_ERR_NO_ERROR) {
        snprintf(err, errlen, "watermarks of %s/%d: %s", topic, p, rd_kafka_err2str(e));
        ok = false;
        break;
      }
      o += (size_t)snprintf(out + o, len - o, "%s/%d=%lld;", topic, p, (long long)hi);
    }
  }
  rd_kafka_destroy(rk);
  return ok;
}

int64_t ostack_start_offset(const char *topic, int partition) {
  const char *s = getenv("SHOP_E2E_REPLAY_FROM");
  cr_assert_not_null(s, "SHOP_E2E_REPLAY_FROM is not set");
  char key[300];
  snprintf(key, sizeof key, "%s/%d=", topic, partition);
  const char *at = strstr(s, key);
  cr_assert_not_null(at, "no start offset for %s/%d", topic, partition);
  return strtoll(at + strlen(key), NULL, 10);
}

bool ostack_group_caught_up(const char *group, const char *const *topics, size_t n) {
  char err[512];
  rd_kafka_t *rk = kafka_consumer(group, err, sizeof err);
  cr_assert_not_null(rk, "kafka: %s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n * 6);
  for (size_t t = 0; t < n; t++)
    for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++)
      rd_kafka_topic_partition_list_add(l, topics[t], p);
  bool caught = rd_kafka_committed(rk, l, KAFKA_TIMEOUT_MS) == RD_KAFKA_RESP_ERR_NO_ERROR;
  for (int i = 0; caught && i < l->cnt; i++) {
    int64_t lo = 0, hi = 0;
    if (rd_kafka_query_watermark_offsets(rk, l->elems[i].topic, l->elems[i].partition, &lo, &hi,
                                         KAFKA_TIMEOUT_MS) != RD_KAFKA_RESP_ERR_NO_ERROR) {
      caught = false;
      break;
    }
    int64_t committed = l->elems[i].offset;
    if (hi > lo && (committed < 0 || committed < hi)) caught = false;
  }
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return caught;
}

/* Commits, for group, the run's start offsets or (earliest) each
 * partition's low watermark. */
static bool group_rewind(const char *group, const char *const *topics, size_t n, bool earliest) {
  char err[512];
  rd_kafka_t *rk = kafka_consumer(group, err, sizeof err);
  cr_assert_not_null(rk, "kafka: %s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new((int)n * 6);
  rd_kafka_resp_err_t e = RD_KAFKA_RESP_ERR_NO_ERROR;
  for (size_t t = 0; t < n; t++) {
    for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++) {
      int64_t lo = 0, hi = 0;
      if (earliest && e == RD_KAFKA_RESP_ERR_NO_ERROR)
        e = rd_kafka_query_watermark_offsets(rk, topics[t], p, &lo, &hi, KAFKA_TIMEOUT_MS);
      rd_kafka_topic_partition_list_add(l, topics[t], p)->offset =
          earliest ? lo : ostack_start_offset(topics[t], p);
    }
  }
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR) e = rd_kafka_commit(rk, l, 0);
  for (int i = 0; e == RD_KAFKA_RESP_ERR_NO_ERROR && i < l->cnt; i++) e = l->elems[i].err;
  rd_kafka_topic_partition_list_destroy(l);
  rd_kafka_destroy(rk);
  return e == RD_KAFKA_RESP_ERR_NO_ERROR;
}

static void header_copy(rd_kafka_headers_t *h, const char *name, char *out, size_t len) {
  const void *v = NULL;
  size_t n = 0;
  out[0] = '\0';
  if (h != NULL && rd_kafka_header_get_last(h, name, &v, &n) == RD_KAFKA_RESP_ERR_NO_ERROR)
    snprintf(out, len, "%.*s", (int)n, (const char *)v);
}

size_t ostack_records(const char *topic, const char *key, ostack_record *out, size_t max) {
  char err[512];
  rd_kafka_t *rk = kafka_consumer("ostack-records", err, sizeof err);
  cr_assert_not_null(rk, "kafka: %s", err);
  rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(6);
  int64_t end[TOPOLOGY_DOMAIN_PARTITIONS];
  int open = 0;
  for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++) {
    int64_t lo = 0;
    cr_assert_eq(rd_kafka_query_watermark_offsets(rk, topic, p, &lo, &end[p], KAFKA_TIMEOUT_MS),
                 RD_KAFKA_RESP_ERR_NO_ERROR, "watermarks of %s/%d", topic, p);
    int64_t from = ostack_start_offset(topic, p);
    if (from < end[p]) {
      rd_kafka_topic_partition_list_add(l, topic, p)->offset = from;
      open++;
    }
  }
  cr_assert_eq(rd_kafka_assign(rk, l), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(l);
  size_t n = 0;
  int64_t until = ostack_now_ms() + KAFKA_TIMEOUT_MS;
  while (open > 0 && ostack_now_ms() < until) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(rk, 100);
    if (m == NULL) continue;
    if (m->err == RD_KAFKA_RESP_ERR_NO_ERROR) {
      if (m->offset + 1 >= end[m->partition]) open--;
      rd_kafka_headers_t *h = NULL;
      rd_kafka_message_headers(m, &h);
      if (m->key_len == strlen(key) && memcmp(m->key, key, m->key_len) == 0) {
        if (n < max) {
          header_copy(h, "ce_type", out[n].type, sizeof out[n].type);
          header_copy(h, "ce_id", out[n].id, sizeof out[n].id);
          header_copy(h, "traceparent", out[n].traceparent, sizeof out[n].traceparent);
        }
        n++;
      }
    }
    rd_kafka_message_destroy(m);
  }
  cr_assert_eq(open, 0, "%s was not read to its end within %d ms", topic, KAFKA_TIMEOUT_MS);
  rd_kafka_consumer_close(rk);
  rd_kafka_destroy(rk);
  return n;
}

bool ostack_group_rewind(const char *group, const char *const *topics, size_t n) {
  return group_rewind(group, topics, n, false);
}

bool ostack_group_rewind_earliest(const char *group, const char *const *topics, size_t n) {
  return group_rewind(group, topics, n, true);
}

/* ---- Runner ---------------------------------------------------------------------------------- */

static void fail_all(const char *why) {
  fprintf(stderr, "ostack: %s\n", why);
  setenv("SHOP_STACK_ERROR", why, 1);
}

void ostack_up(void) { ostack_up_with(NULL, 0); }

static const char *program_at(size_t i) {
  return i < N_PROGRAMS ? programs[i] : more_programs[i - N_PROGRAMS];
}

void ostack_up_with(const char *const *more, size_t n) {
  char err[1024] = "";
  if (n > OSTACK_MORE_MAX) {
    fail_all("ostack_up_with: too many programs");
    return;
  }
  for (n_more = 0; n_more < n; n_more++) more_programs[n_more] = more[n_more];
  const char *need[] = {"SHOP_RUN_DIR", "SHOP_MYSQL_PORT", "SHOP_KAFKA_BROKERS",
                        "SHOP_SECRETS_DIR"};
  for (size_t i = 0; i < sizeof need / sizeof need[0]; i++) {
    if (getenv(need[i]) == NULL) {
      snprintf(err, sizeof err, "%s is not set: run the tests through `make test`", need[i]);
      fail_all(err);
      return;
    }
  }
  const shop_cfg *cfg = cfg_load(err, sizeof err);
  if (cfg == NULL) {
    fail_all(err);
    return;
  }
  char run[64];
  struct timeval tv;
  gettimeofday(&tv, NULL);
  snprintf(run, sizeof run, "E2EO-%d-%lld", (int)getpid(), (long long)tv.tv_sec);
  setenv("SHOP_E2E_RUN", run, 1);
  char offsets[4096];
  /* A broker that has just started may not have elected the leaders of
   * its partitions yet: "not leader" passes within seconds. */
  bool got = false;
  int64_t until = ostack_now_ms() + 30000;
  while (!(got = end_offsets_text(offsets, sizeof offsets, err, sizeof err)) &&
         ostack_now_ms() < until)
    usleep(250000);
  if (!got) {
    fail_all(err);
    return;
  }
  setenv("SHOP_E2E_REPLAY_FROM", offsets, 1);
  for (size_t i = 0; i < N_PROGRAMS + n_more; i++) {
    const char *program = program_at(i);
    char why[900] = "";
    if (start_one(&running[i], program, url_of(cfg, program), NULL, why, sizeof why) != STATUS_OK) {
      snprintf(err, sizeof err, "%s did not start: %s", program, why);
      fail_all(err);
      return;
    }
    char name[96], pid[32];
    env_name(name, sizeof name, "SHOP_E2E_PID_", program);
    snprintf(pid, sizeof pid, "%d", (int)proc_pid(running[i]));
    setenv(name, pid, 1);
  }
}

void ostack_down(void) {
  bool clean = true;
  for (size_t k = N_PROGRAMS + n_more; k-- > 0;) {
    if (running[k] == NULL) continue;
    /* A test may have paused it; a stopped process never sees SIGTERM. */
    kill(proc_pid(running[k]), SIGCONT);
    int code = -1;
    proc_stop(running[k], OSTACK_STOP_MS, &code);
    if (code != 0) {
      fprintf(stderr, "ostack: %s exited with %d after SIGTERM (see its log)\n", program_at(k),
              code);
      clean = false;
    }
    proc_destroy(running[k]);
    running[k] = NULL;
  }
  config_free(cfg_cache);
  cfg_cache = NULL;
  if (!clean) exit(3);
}

/* ---- Test side ------------------------------------------------------------------------------- */

void ostack_require(void) {
  const char *e = getenv("SHOP_STACK_ERROR");
  cr_assert(e == NULL, "the Shop programs are not running: %s", e);
}

void ostack_release(void) {
  for (size_t i = 0; i < OSTACK_MAX; i++) {
    proc_destroy(extras[i]);
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

pid_t ostack_pid(const char *program) {
  char name[96];
  env_name(name, sizeof name, "SHOP_E2E_PID_", program);
  const char *v = getenv(name);
  cr_assert_not_null(v, "%s is not set", name);
  return (pid_t)atoi(v);
}

const char *ostack_run(void) {
  const char *v = getenv("SHOP_E2E_RUN");
  cr_assert_not_null(v, "SHOP_E2E_RUN is not set");
  return v;
}

proc *ostack_start(const char *program, const char *url, const char *const *env) {
  char err[1024] = "";
  size_t i = 0;
  while (i < OSTACK_MAX && extras[i] != NULL) i++;
  cr_assert_lt(i, OSTACK_MAX, "too many extra instances");
  proc *p = NULL;
  cr_assert_eq(start_one(&p, program, url, env, err, sizeof err), STATUS_OK, "%s: %s", program,
               err);
  extras[i] = p;
  return p;
}

int ostack_stop(proc *p) {
  int code = -1;
  proc_stop(p, OSTACK_STOP_MS, &code);
  for (size_t i = 0; i < OSTACK_MAX; i++)
    if (extras[i] == p) extras[i] = NULL;
  proc_destroy(p);
  return code;
}

rpc_client *ostack_client(const char *url) {
  for (size_t i = 0; i < clients.n; i++)
    if (strcmp(clients.url[i], url) == 0) return clients.c[i];
  cr_assert_lt(clients.n, OSTACK_MAX);
  char err[512] = "";
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, ostack_cfg(), url, "e2e-orders");
  o.default_timeout_ms = OSTACK_CALL_TIMEOUT_MS;
  rpc_client *c = NULL;
  cr_assert_eq(rpc_client_create(&c, &o, err, sizeof err), STATUS_OK, "client: %s", err);
  cr_assert(rpc_client_wait_connected(c, 10000), "%s does not answer", url);
  snprintf(clients.url[clients.n], sizeof clients.url[0], "%s", url);
  clients.c[clients.n++] = c;
  return c;
}

status_code ostack_call(const char *url, const ProtobufCServiceDescriptor *desc, const char *method,
                        const ProtobufCMessage *in, ProtobufCMessage **out, const char *token,
                        const char *key, rpc_status *st) {
  rpc_status local;
  rpc_call_opts o = {.token = token, .idempotency_key = key};
  ProtobufCMessage *reply = NULL;
  status_code code = rpc_client_call_sync(ostack_client(url), desc, method, in, &reply, &o,
                                          st != NULL ? st : &local);
  if (out != NULL)
    *out = reply;
  else if (reply != NULL)
    protobuf_c_message_free_unpacked(reply, NULL);
  return code;
}

void ostack_token(char *out, const char *sub, auth_role role) {
  char err[512];
  const shop_cfg *cfg = ostack_cfg();
  if (keys == NULL)
    cr_assert_eq(auth_keys_create(&keys, cfg->auth.jwt_key, strlen(cfg->auth.jwt_key),
                                  cfg->auth.issuer, cfg->auth.access_ttl_s, err, sizeof err),
                 STATUS_OK, "%s", err);
  cr_assert_eq(auth_token_sign(keys, sub, role, 0, out, AUTH_TOKEN_MAX, err, sizeof err), STATUS_OK,
               "%s", err);
}

void ostack_unique(char *out, size_t len, const char *prefix) {
  static unsigned n;
  struct timeval tv;
  gettimeofday(&tv, NULL);
  snprintf(out, len, "%s-%d-%u-%lld", prefix, (int)getpid(), ++n,
           (long long)tv.tv_sec * 1000000 + tv.tv_usec);
}

db_conn *ostack_db(const char *account) {
  char err[512];
  db_conn *c = NULL;
  status_code st = support_db_connect(ostack_cfg(), account, &c, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "db_connect(%s): %s", account, err);
  return c;
}

/* A product with stock, price and rule, projected by product-query. */
void ostack_product(const char *admin_token, int64_t stock, int64_t price, int32_t max,
                    char id[37]) {
  char sku[96], u[64], k[96];
  ostack_unique(k, sizeof k, "k");
  ostack_unique(u, sizeof u, "p");
  snprintf(sku, sizeof sku, "%s-%s", ostack_run(), u);
  Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  Shop__Product__V1__ProductDetails d = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money m = SHOP__COMMON__V1__MONEY__INIT;
  Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  d.name = "Stoneware mug";
  d.description = "For the order tests.";
  d.category = "mugs";
  m.units = price;
  m.currency = "EUR";
  rule.max_quantity_per_order = max;
  req.sku = sku;
  req.details = &d;
  req.price = &m;
  req.initial_stock = stock;
  req.inventory_rule = &rule;
  Shop__Product__V1__CreateProductResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(ostack_call(ostack_url("product-command"),
                           &shop__product__v1__product_command_service__descriptor, "CreateProduct",
                           &req.base, (ProtobufCMessage **)&r, admin_token, k, &st),
               STATUS_OK, "CreateProduct: %s", st.message);
  snprintf(id, 37, "%s", r->product_id);
  Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = r->consistency;
  rc.wait_ms = 15000;
  g.product_id = id;
  g.consistency = &rc;
  cr_assert_eq(ostack_call(ostack_url("product-query"),
                           &shop__product__v1__product_query_service__descriptor, "GetProduct",
                           &g.base, NULL, NULL, NULL, &st),
               STATUS_OK, "GetProduct: %s", st.message);
  protobuf_c_message_free_unpacked(&r->base, NULL);
}

void ostack_order_init(ostack_order *o, const char *token) {
  shop__order__v1__create_order_request__init(&o->req);
  shop__order__v1__shipping_address__init(&o->addr);
  o->addr.recipient = "Grace Hopper";
  o->addr.line1 = "1 Harbour Street";
  o->addr.city = "Arlington";
  o->addr.postal_code = "22201";
  o->addr.country = "US";
  o->req.shipping_address = &o->addr;
  o->req.payment_token = (char *)token;
  o->req.lines = o->lp;
}

void ostack_order_line(ostack_order *o, const char *product_id, int32_t qty) {
  cr_assert_lt(o->req.n_lines, 4);
  size_t i = o->req.n_lines++;
  shop__order__v1__create_order_line__init(&o->line[i]);
  o->line[i].product_id = (char *)product_id;
  o->line[i].quantity = qty;
  o->lp[i] = &o->line[i];
}

/* ---- The books --------------------------------------------------------------------------------
 */

bool ostack_books_clean(bool with_audit_worker, int settle_ms) {
  if (getenv("SHOP_STACK_ERROR") != NULL || getenv("SHOP_E2E_RUN") == NULL) return true;
  char err[1024] = "";
  const shop_cfg *cfg = cfg_load(err, sizeof err);
  if (cfg == NULL) {
    fprintf(stderr, "ostack: reconcile: config: %s\n", err);
    return false;
  }
  proc *audit = NULL;
  if (with_audit_worker && start_one(&audit, "audit-worker", cfg->endpoints.audit_query, NULL, err,
                                     sizeof err) != STATUS_OK) {
    fprintf(stderr, "ostack: reconcile: audit-worker did not start: %s\n", err);
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
    fprintf(stderr, "ostack: reconcile: %s: %s\n", status_name(st), err);
  } else {
    for (size_t i = 0; i < r.findings_count; i++)
      fprintf(stderr, "ostack: reconcile: %s %s: %s\n", reconcile_kind_name(r.findings[i].kind),
              r.findings[i].id, r.findings[i].why);
    fprintf(stderr,
            "ostack: reconcile of run %s: %s: %" PRId64 " orders, %" PRId64 " products, %" PRId64
            " audit events, %d run(s) in %" PRId64 " ms\n",
            o.sku_prefix, clean ? "clean" : "BROKEN", r.orders, r.products, r.events, r.runs,
            r.elapsed_ms);
  }
  reconcile_report_free(&r);
  if (audit != NULL) {
    int code = -1;
    proc_stop(audit, OSTACK_STOP_MS, &code);
    proc_destroy(audit);
  }
  return clean;
}

const char *ostack_config_path(void) { return config_path(); }

void ostack_bin_path(char *out, size_t len, const char *program) { bin_path(out, len, program); }
