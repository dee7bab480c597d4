/* faults-load: the orders and the counts of the crash matrix
 * (scripts/faults.sh). It talks to a running Shop through the real RPC
 * layer and reads the services' databases with their own accounts.
 *
 *   faults-load load  --orders N [--concurrency C] [--pace-ms MS] [--run ID]
 *   faults-load lag                   consumer lag, outbox backlog, pending orders
 *   faults-load quiet [--timeout S]   waits until lag, backlog and pending are 0
 *   faults-load check                 the invariants; exit 1 on a violation
 *
 * The config is SHOP_CONFIG (or --config PATH first). Access tokens are
 * minted with the profile's JWT key, so no user-command round trips.
 *
 * load: registers eight customers (user-command, email on), creates four
 * products whose total stock is about two thirds of the
 * units ordered (so inventory rejects some), then places N one- or
 * two-line orders from C threads, each pausing MS between two orders
 * (--pace-ms: a load that lasts; default none) (every tenth card declined, every tenth
 * failing at capture), then cancels every eighth order as its customer.
 * A command that fails UNAVAILABLE, DEADLINE_EXCEEDED or ABORTED (the
 * armed process died under it) is sent again with the same idempotency key
 * until it is answered, for at most 120 s: the stored reply must come back.
 * Prints "placed=N cancelled=M retried=R failed=F retried_codes=CODE:n,..."
 * (the transient answers that were sent again, by code).
 *
 * check prints one key=value line (see main) and fails when an order is
 * PENDING, an order has no or several OrderCreated event ids in the audit
 * log, an order's events on shop.order.events.v1 are out of ce_sequence
 * order, a gateway operation was approved twice for an order, a cancelled
 * order kept its money or stock, a confirmed order was not captured, stock
 * is negative or does not add up, the audit chain is broken, order-query
 * shows another status than order-command, or reconcile_run (what
 * `shopctl reconcile` runs; settles for up to 10 s) has a finding. */
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "auth/auth.h"
#include "config/config.h"
#include "consumers/consumers.h"
#include "db/db.h"
#include "events/events.h"
#include "reconcile/reconcile.h"
#include "rpc/rpc.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"
#include "support/account.h"
#include "support/requests.h"
#include "support/wait.h"
#include "topology/topology.h"

#define OCMD_SVC (&shop__order__v1__order_command_service__descriptor)
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define UCMD_SVC (&shop__user__v1__user_command_service__descriptor)
#define N_PRODUCTS 4
#define N_CUSTOMERS 8
#define RETRY_FOR_MS 120000
#define MAX_THREADS 64

static const shop_cfg *cfg;
static auth_keys *keys;

static void die(const char *what, const char *why) {
  fprintf(stderr, "faults-load: %s: %s\n", what, why);
  exit(2);
}

static void token(char *out, const char *sub, auth_role role) {
  char err[512];
  if (req_token(cfg, &keys, sub, role, out, err, sizeof err) != STATUS_OK) die("token", err);
}

static rpc_client *client(const char *url) {
  char err[512];
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, cfg, url, "faults-load");
  o.default_timeout_ms = 15000;
  rpc_client *c = NULL;
  if (rpc_client_create(&c, &o, err, sizeof err) != STATUS_OK) die(url, err);
  return c;
}

static bool transient(status_code c) {
  return c == STATUS_UNAVAILABLE || c == STATUS_DEADLINE_EXCEEDED || c == STATUS_ABORTED ||
         c == STATUS_RESOURCE_EXHAUSTED;
}

static atomic_int retried;
/* The transient answers that were retried, by code (load prints them). */
static atomic_int retried_code[STATUS_UNAUTHENTICATED + 1];

typedef struct call {
  rpc_client *c;
  const ProtobufCServiceDescriptor *d;
  const char *method;
  const ProtobufCMessage *in;
  ProtobufCMessage **out;
  rpc_call_opts o;
  rpc_status *st;
  status_code code;
  int attempts;
  bool count_retries; /* a command's retries are counted in "retried" */
} call;

/* One attempt; true when it is answered with something other than a
 * transient failure. */
static bool call_once(call *k) {
  if (k->attempts++ > 0 && k->count_retries) atomic_fetch_add(&retried, 1);
  if (*k->out != NULL) protobuf_c_message_free_unpacked(*k->out, NULL);
  *k->out = NULL;
  k->code = rpc_client_call_sync(k->c, k->d, k->method, k->in, k->out, &k->o, k->st);
  if (transient(k->code) && k->count_retries && (int)k->code >= 0 &&
      (int)k->code <= STATUS_UNAUTHENTICATED)
    atomic_fetch_add(&retried_code[k->code], 1);
  return !transient(k->code);
}

/* Calls a command until it is answered with something other than a
 * transient failure (same key every time), for at most RETRY_FOR_MS,
 * pausing up to a second between attempts (the program may be starting
 * again after a crash). */
static status_code command(rpc_client *c, const ProtobufCServiceDescriptor *d, const char *method,
                           const ProtobufCMessage *in, ProtobufCMessage **out, const char *tok,
                           const char *key, rpc_status *st) {
  *out = NULL;
  call k = {.c = c,
            .d = d,
            .method = method,
            .in = in,
            .out = out,
            .st = st,
            .o = {.token = tok, .idempotency_key = key, .timeout_ms = 15000},
            .count_retries = true};
  bool answered;
  WAIT_FOR_PACED(answered, call_once(&k), RETRY_FOR_MS, 1000);
  (void)answered; /* the last code says */
  return k.code;
}

/* ---- load ---------------------------------------------------------------------------------- */

typedef struct load {
  int orders, threads;
  int pace_ms; /* each thread's pause between two orders */
  const char *run;
  char admin[AUTH_TOKEN_MAX];
  char customer[N_CUSTOMERS][AUTH_TOKEN_MAX];
  char product[N_PRODUCTS][37];
  char (*order_id)[37];
  atomic_int next, failed;
  rpc_client *ocmd;
} load;

static void make_product(load *l, int i, int64_t stock) {
  rpc_client *pc = client(cfg->endpoints.product_command);
  rpc_client *pq = client(cfg->endpoints.product_query);
  char sku[64], key[96];
  snprintf(sku, sizeof sku, "F-%s-%d", l->run, i);
  snprintf(key, sizeof key, "faults-%s-product-%d", l->run, i);
  req_product p;
  req_product_init(&p, sku, stock, 250 + 100 * i, cfg->catalog.currency);
  p.details.name = "Fault-test mug";
  p.details.description = "Ordered by the crash matrix.";
  p.details.category = "faults";
  p.rule.low_stock_threshold = stock / 4;
  ProtobufCMessage *out = NULL;
  rpc_status st;
  status_code c = command(pc, PCMD_SVC, "CreateProduct", &p.req.base, &out, l->admin, key, &st);
  if (c != STATUS_OK) die("CreateProduct", st.message);
  Shop__Product__V1__CreateProductResponse *r = (Shop__Product__V1__CreateProductResponse *)out;
  snprintf(l->product[i], 37, "%s", r->product_id);
  /* Wait until product-query has it, so CreateOrder can price it. */
  Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = r->consistency;
  rc.wait_ms = 10000;
  g.product_id = l->product[i];
  g.consistency = &rc;
  ProtobufCMessage *got = NULL;
  call k = {.c = pq,
            .d = PQRY_SVC,
            .method = "GetProduct",
            .in = &g.base,
            .out = &got,
            .st = &st,
            .o = {.timeout_ms = 15000}};
  bool seen;
  WAIT_FOR_PACED(seen, (call_once(&k), k.code == STATUS_OK), RETRY_FOR_MS, 200);
  if (got != NULL) protobuf_c_message_free_unpacked(got, NULL);
  if (!seen) die("GetProduct", st.message);
  protobuf_c_message_free_unpacked(out, NULL);
  rpc_client_destroy(pc);
  rpc_client_destroy(pq);
}

/* A registered customer (email on), so that notification-worker has an
 * address for the order's emails. Returns the user id in id. */
static void make_customer(rpc_client *uc, const load *l, int i, char id[EVENTS_ID_SIZE]) {
  char email[128], key[96];
  snprintf(email, sizeof email, "c%d-%s@faults.test", i, l->run);
  snprintf(key, sizeof key, "faults-%s-user-%d", l->run, i);
  Shop__User__V1__RegisterUserRequest req = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  req.email = email;
  req.password = "correct horse battery staple";
  req.name = "Fault Tester";
  ProtobufCMessage *out = NULL;
  rpc_status st;
  status_code c = command(uc, UCMD_SVC, "RegisterUser", &req.base, &out, NULL, key, &st);
  if (c != STATUS_OK) die("RegisterUser", st.message);
  snprintf(id, EVENTS_ID_SIZE, "%s", ((Shop__User__V1__RegisterUserResponse *)out)->user_id);
  protobuf_c_message_free_unpacked(out, NULL);
}

static void *orderer_main(void *arg) {
  load *l = arg;
  for (;;) {
    int i = atomic_fetch_add(&l->next, 1);
    if (i >= l->orders) return NULL;
    req_order o;
    req_order_init(&o, i % 10 == 7 ? "tok_decline" : i % 10 == 8 ? "tok_capture_fail" : "tok_visa");
    for (int k = 0; k < (i % 3 == 0 ? 2 : 1); k++)
      req_order_line(&o, l->product[(i + k) % N_PRODUCTS], 1 + (i + k) % 2);
    char key[96];
    snprintf(key, sizeof key, "faults-%s-order-%d", l->run, i);
    ProtobufCMessage *out = NULL;
    rpc_status st;
    status_code c = command(l->ocmd, OCMD_SVC, "CreateOrder", &o.req.base, &out,
                            l->customer[i % N_CUSTOMERS], key, &st);
    if (c == STATUS_OK) {
      snprintf(l->order_id[i], 37, "%s", ((Shop__Order__V1__CreateOrderResponse *)out)->order_id);
    } else {
      fprintf(stderr, "faults-load: CreateOrder %d: %s: %s\n", i, status_name(c), st.message);
      atomic_fetch_add(&l->failed, 1);
    }
    if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
    if (l->pace_ms > 0) {
      struct timespec ts = {.tv_sec = l->pace_ms / 1000, .tv_nsec = (l->pace_ms % 1000) * 1000000L};
      nanosleep(&ts, NULL);
    }
  }
}

static int cmd_load(int orders, int threads, int pace_ms, const char *run) {
  static load l;
  l.orders = orders;
  l.pace_ms = pace_ms;
  l.threads = threads < 1 ? 1 : threads > MAX_THREADS ? MAX_THREADS : threads;
  l.run = run;
  l.order_id = calloc((size_t)orders, sizeof *l.order_id);
  char id[EVENTS_ID_SIZE];
  events_uuid_v7(id);
  token(l.admin, id, AUTH_ROLE_ADMIN);
  rpc_client *uc = client(cfg->endpoints.user_command);
  for (int i = 0; i < N_CUSTOMERS; i++) {
    make_customer(uc, &l, i, id);
    token(l.customer[i], id, AUTH_ROLE_CUSTOMER);
  }
  rpc_client_destroy(uc);
  /* About 1.33 units per order are asked for; stock for two thirds. */
  int64_t stock = orders * 2 / 9 + 2;
  for (int i = 0; i < N_PRODUCTS; i++) make_product(&l, i, stock);
  l.ocmd = client(cfg->endpoints.order_command);
  pthread_t t[MAX_THREADS];
  for (int i = 0; i < l.threads; i++) pthread_create(&t[i], NULL, orderer_main, &l);
  for (int i = 0; i < l.threads; i++) pthread_join(t[i], NULL);
  int cancelled = 0;
  for (int i = 3; i < orders; i += 8) {
    if (l.order_id[i][0] == '\0') continue;
    Shop__Order__V1__CancelOrderRequest req = SHOP__ORDER__V1__CANCEL_ORDER_REQUEST__INIT;
    req.order_id = l.order_id[i];
    req.reason = "changed my mind (fault test)";
    char key[96];
    snprintf(key, sizeof key, "faults-%s-cancel-%d", run, i);
    ProtobufCMessage *out = NULL;
    rpc_status st;
    status_code c = command(l.ocmd, OCMD_SVC, "CancelOrder", &req.base, &out,
                            l.customer[i % N_CUSTOMERS], key, &st);
    if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
    if (c == STATUS_OK) {
      cancelled++;
    } else if (c != STATUS_FAILED_PRECONDITION) { /* already cancelled: fine */
      fprintf(stderr, "faults-load: CancelOrder %d: %s: %s\n", i, status_name(c), st.message);
      atomic_fetch_add(&l.failed, 1);
    }
  }
  rpc_client_destroy(l.ocmd);
  int failed = atomic_load(&l.failed);
  char codes[256] = "";
  size_t used = 0;
  for (int c = 0; c <= STATUS_UNAUTHENTICATED && used < sizeof codes; c++) {
    int n = atomic_load(&retried_code[c]);
    if (n > 0)
      used += (size_t)snprintf(codes + used, sizeof codes - used, "%s%s:%d", used > 0 ? "," : "",
                               status_name((status_code)c), n);
  }
  printf("placed=%d cancelled=%d retried=%d failed=%d retried_codes=%s\n", orders - failed,
         cancelled, atomic_load(&retried), failed, used > 0 ? codes : "none");
  free(l.order_id);
  return failed == 0 ? 0 : 1;
}

/* ---- databases ---------------------------------------------------------------------------- */

static db_conn *db(const char *account) {
  char err[512];
  db_conn *c = NULL;
  if (support_db_connect(cfg, account, &c, err, sizeof err) != STATUS_OK) die(account, err);
  return c;
}

static int64_t i64(db_conn *c, const char *sql) {
  char err[512];
  int64_t v = 0;
  status_code st = db_query_i64(c, sql, NULL, 0, &v, err, sizeof err);
  if (st == STATUS_NOT_FOUND) return 0;
  if (st != STATUS_OK) die(sql, err);
  return v;
}

/* Every database with an outbox (the programs that publish). */
static const char *const publishers[] = {"shop_user",      "shop_product", "shop_order",
                                         "shop_inventory", "shop_payment", "shop_notification"};
#define N_PUBLISHERS (sizeof publishers / sizeof publishers[0])

static int64_t faults_backlog(void) {
  int64_t n = 0;
  for (size_t i = 0; i < N_PUBLISHERS; i++) {
    db_conn *c = db(publishers[i]);
    n += i64(c, "SELECT COUNT(*) FROM outbox WHERE state = 0");
    db_close(c);
  }
  return n;
}

/* ---- Kafka lag ------------------------------------------------------------------------------ */

/* Where the last consumer_lag() found lag: "group topic[p]=n" entries
 * (cut at its size), for a check that says what was not quiet. */
static char lag_where[1024];

/* Sum over every consumer group and every partition of the topics it reads
 * of (end offset - committed offset); a partition with records and no
 * commit counts whole. -1 when the broker did not answer. */
static int64_t consumer_lag(void) {
  lag_where[0] = '\0';
  char err[512];
  int64_t lag = 0;
  for (size_t g = 0; g < consumers_all_count; g++) {
    const consumer_spec *grp = consumers_all[g];
    const char *topics[16];
    size_t ntopics = consumer_spec_topics(grp, topics, 16);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    if (rd_kafka_conf_set(conf, "bootstrap.servers", cfg->kafka.brokers, err, sizeof err) ||
        rd_kafka_conf_set(conf, "group.id", grp->group, err, sizeof err) ||
        rd_kafka_conf_set(conf, "enable.auto.commit", "false", err, sizeof err))
      die("kafka conf", err);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, err, sizeof err);
    if (rk == NULL) die("kafka", err);
    rd_kafka_topic_partition_list_t *l = rd_kafka_topic_partition_list_new(64);
    for (size_t t = 0; t < ntopics; t++) {
      for (int p = 0; p < TOPOLOGY_DOMAIN_PARTITIONS; p++)
        rd_kafka_topic_partition_list_add(l, topics[t], p);
    }
    if (rd_kafka_committed(rk, l, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) lag = -1;
    for (int i = 0; lag >= 0 && i < l->cnt; i++) {
      int64_t lo = 0, hi = 0;
      if (rd_kafka_query_watermark_offsets(rk, l->elems[i].topic, l->elems[i].partition, &lo, &hi,
                                           10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        lag = -1;
        break;
      }
      int64_t committed = l->elems[i].offset;
      if (committed < lo) committed = lo;
      if (hi <= committed) continue;
      lag += hi - committed;
      size_t at = strlen(lag_where);
      snprintf(lag_where + at, sizeof lag_where - at, "%s%s %s[%d]=%lld", at > 0 ? " " : "",
               grp->group, l->elems[i].topic, (int)l->elems[i].partition,
               (long long)(hi - committed));
    }
    rd_kafka_topic_partition_list_destroy(l);
    rd_kafka_destroy(rk);
    if (lag < 0) return -1;
  }
  return lag;
}

typedef struct quiet_state {
  int64_t lag, backlog, pending;
} quiet_state;

static quiet_state quiet_now(void) {
  quiet_state q = {.lag = consumer_lag(), .backlog = faults_backlog()};
  db_conn *c = db("shop_order");
  q.pending = i64(c, "SELECT COUNT(*) FROM orders WHERE status = 1");
  db_close(c);
  return q;
}

static int cmd_lag(void) {
  quiet_state q = quiet_now();
  printf("lag=%lld backlog=%lld pending=%lld\n", (long long)q.lag, (long long)q.backlog,
         (long long)q.pending);
  return 0;
}

/* Quiet: nothing to consume, nothing to publish, no order waiting, seen
 * twice a second apart (a relay or a consumer between two steps would
 * show in one of them). */
/* One look: true once the stack was quiet at this look and at one a
 * second or more before it, with no look between that was not. */
static bool quiet_twice(quiet_state *q, int64_t *calm_since) {
  *q = quiet_now();
  if (q->lag != 0 || q->backlog != 0 || q->pending != 0) {
    *calm_since = 0;
    return false;
  }
  if (*calm_since == 0) *calm_since = wait_now_ms();
  return wait_now_ms() - *calm_since >= 1000;
}

static int cmd_quiet(int timeout_s) {
  int64_t start = wait_now_ms(), calm_since = 0;
  quiet_state q = {0};
  bool quiet;
  WAIT_FOR_PACED(quiet, quiet_twice(&q, &calm_since), (int64_t)timeout_s * 1000, 1000);
  if (quiet) {
    printf("quiet after %.1f s\n", (double)(wait_now_ms() - start) / 1000.0);
    return 0;
  }
  printf("not quiet after %d s: lag=%lld backlog=%lld pending=%lld%s%s\n", timeout_s,
         (long long)q.lag, (long long)q.backlog, (long long)q.pending,
         lag_where[0] != '\0' ? " lag_at=" : "", lag_where);
  return 1;
}

/* ---- check -------------------------------------------------------------------------------- */

static int cmd_check(void) {
  db_conn *ord = db("shop_order"), *aud = db("shop_audit"), *pay = db("shop_payment"),
          *inv = db("shop_inventory"), *view = db("shop_order_read");
  int64_t orders = i64(ord, "SELECT COUNT(*) FROM orders");
  int64_t confirmed = i64(ord, "SELECT COUNT(*) FROM orders WHERE status = 2");
  int64_t shipped = i64(ord, "SELECT COUNT(*) FROM orders WHERE status = 3");
  int64_t cancelled = i64(ord, "SELECT COUNT(*) FROM orders WHERE status = 4");
  int64_t pending = i64(ord, "SELECT COUNT(*) FROM orders WHERE status = 1");
  /* OrderCreated: one event id per order, whatever was re-sent. */
  int64_t created = i64(aud,
                        "SELECT COUNT(DISTINCT subject) FROM audit_log"
                        " WHERE type = 'shop.order.v1.OrderCreated'");
  int64_t created_ids = i64(aud,
                            "SELECT COUNT(DISTINCT event_id) FROM audit_log"
                            " WHERE type = 'shop.order.v1.OrderCreated'");
  /* Per-order event order: on shop.order.events.v1, each order's distinct
   * events (the audit log keeps the first of each id) in the order of the
   * partition carry strictly increasing ce_sequence. */
  int64_t out_of_order = i64(aud,
                             "SELECT COUNT(*) FROM (SELECT sequence, LAG(sequence) OVER"
                             " (PARTITION BY subject ORDER BY kpartition, koffset) AS prev"
                             " FROM audit_log WHERE topic = 'shop.order.events.v1') x"
                             " WHERE prev IS NOT NULL AND sequence <= prev");
  /* Money: each gateway operation approved at most once per order. */
  int64_t pay_twice = i64(pay,
                          "SELECT COUNT(*) FROM (SELECT order_id, operation FROM"
                          " payment_attempts WHERE outcome = 1 GROUP BY order_id, operation"
                          " HAVING COUNT(*) > 1) x");
  int64_t authorized = i64(pay,
                           "SELECT COUNT(DISTINCT order_id) FROM payment_attempts"
                           " WHERE operation = 1 AND outcome = 1");
  int64_t captured = i64(pay,
                         "SELECT COUNT(DISTINCT order_id) FROM payment_attempts"
                         " WHERE operation = 2 AND outcome = 1");
  /* An approved authorization not captured must be given back (void),
   * and a capture of a cancelled order refunded: payments.status 2
   * (AUTHORIZED) or 4 (CAPTURED) remain only on live orders. */
  int64_t open_auth = i64(pay, "SELECT COUNT(*) FROM payments WHERE status = 2");
  int64_t captured_now = i64(pay, "SELECT COUNT(*) FROM payments WHERE status = 4");
  /* Stock. */
  int64_t stock_bad = i64(inv,
                          "SELECT COUNT(*) FROM stock_levels WHERE available < 0 OR"
                          " reserved < 0 OR shipped < 0 OR"
                          " available + reserved + shipped <> received");
  int64_t reserved = i64(inv, "SELECT COALESCE(SUM(reserved), 0) FROM stock_levels");
  int64_t held = i64(inv,
                     "SELECT COALESCE(SUM(l.quantity), 0) FROM reservation_lines l JOIN"
                     " reservations r ON r.order_id = l.order_id WHERE r.status = 2");
  int64_t held_orders = i64(inv, "SELECT COUNT(*) FROM reservations WHERE status = 2");
  /* The read model agrees with order-command, status by status. */
  int64_t view_confirmed = i64(view, "SELECT COUNT(*) FROM orders_view WHERE status = 2");
  int64_t view_cancelled = i64(view, "SELECT COUNT(*) FROM orders_view WHERE status = 4");
  int64_t view_all = i64(view, "SELECT COUNT(*) FROM orders_view WHERE status <> 0");
  /* Notifications: each email sent at least once (scripts/faults.sh
   * counts the distinct Message-IDs the SMTP sink got). */
  db_conn *ntf = db("shop_notification");
  int64_t emailed = i64(ntf, "SELECT COUNT(*) FROM notifications WHERE status = 1 AND channel = 1");
  int64_t notify_pending = i64(ntf, "SELECT COUNT(*) FROM notifications WHERE status = 3");
  db_close(ntf);
  /* The audit chain. */
  audit_verify_result vr;
  char err[512];
  if (audit_verify(aud, 0, 0, &vr, err, sizeof err) != STATUS_OK) die("audit_verify", err);
  /* The books, as `shopctl reconcile` sees them. */
  reconcile_opts ro;
  reconcile_opts_init(&ro);
  ro.settle_ms = 10000;
  reconcile_report rr = {0};
  if (reconcile_run(cfg, &ro, &rr, err, sizeof err) != STATUS_OK) die("reconcile", err);
  for (size_t i = 0; i < rr.findings_count && i < 5; i++)
    fprintf(stderr, "faults-load: reconcile: %s %s: %s\n", reconcile_kind_name(rr.findings[i].kind),
            rr.findings[i].id, rr.findings[i].why);
  size_t findings = rr.findings_count;
  reconcile_report_free(&rr);
  char recon[32] = "clean";
  if (findings > 0) snprintf(recon, sizeof recon, "%zu-findings", findings);
  bool ok = findings == 0 && pending == 0 && created == orders && created_ids == orders &&
            out_of_order == 0 && pay_twice == 0 && stock_bad == 0 && reserved == held &&
            held_orders == confirmed + shipped && open_auth == 0 &&
            captured_now == confirmed + shipped && vr.ok && view_confirmed == confirmed &&
            view_cancelled == cancelled && view_all == orders;
  printf(
      "orders=%lld confirmed=%lld shipped=%lld cancelled=%lld pending=%lld"
      " created_subjects=%lld created_ids=%lld out_of_order=%lld authorized=%lld captured=%lld"
      " approved_twice=%lld open_auth=%lld captured_live=%lld stock_bad=%lld"
      " reserved=%lld held=%lld held_orders=%lld view=%lld/%lld/%lld chain=%s(%lld rows)"
      " emailed=%lld notify_pending=%lld reconcile=%s verdict=%s\n",
      (long long)orders, (long long)confirmed, (long long)shipped, (long long)cancelled,
      (long long)pending, (long long)created, (long long)created_ids, (long long)out_of_order,
      (long long)authorized, (long long)captured, (long long)pay_twice, (long long)open_auth,
      (long long)captured_now, (long long)stock_bad, (long long)reserved, (long long)held,
      (long long)held_orders, (long long)view_all, (long long)view_confirmed,
      (long long)view_cancelled, vr.ok ? "ok" : "BROKEN", (long long)vr.rows_checked,
      (long long)emailed, (long long)notify_pending, recon, ok ? "ok" : "VIOLATED");
  db_close(ord);
  db_close(aud);
  db_close(pay);
  db_close(inv);
  db_close(view);
  return ok ? 0 : 1;
}

/* ---- main --------------------------------------------------------------------------------- */

int main(int argc, char **argv) {
  const char *config = getenv("SHOP_CONFIG");
  int a = 1;
  if (a + 1 < argc && strcmp(argv[a], "--config") == 0) {
    config = argv[a + 1];
    a += 2;
  }
  if (a >= argc || config == NULL) {
    fprintf(stderr, "usage: faults-load [--config PATH] load|lag|quiet|check [options]\n");
    return 2;
  }
  const char *cmd = argv[a++];
  int orders = 40, threads = 8, timeout_s = 180, pace_ms = 0;
  const char *run = "r";
  for (; a + 1 < argc; a += 2) {
    if (strcmp(argv[a], "--orders") == 0)
      orders = atoi(argv[a + 1]);
    else if (strcmp(argv[a], "--concurrency") == 0)
      threads = atoi(argv[a + 1]);
    else if (strcmp(argv[a], "--pace-ms") == 0)
      pace_ms = atoi(argv[a + 1]);
    else if (strcmp(argv[a], "--run") == 0)
      run = argv[a + 1];
    else if (strcmp(argv[a], "--timeout") == 0)
      timeout_s = atoi(argv[a + 1]);
    else
      die("unknown option", argv[a]);
  }
  if (a != argc) die("option without a value", argv[a]);
  shop_cfg *c = NULL;
  char err[512];
  if (config_load(&c, config, err, sizeof err) != 0) die("config", err);
  cfg = c;
  int rc = 2;
  if (strcmp(cmd, "load") == 0)
    rc = cmd_load(orders > 0 ? orders : 1, threads, pace_ms < 0 ? 0 : pace_ms, run);
  else if (strcmp(cmd, "lag") == 0)
    rc = cmd_lag();
  else if (strcmp(cmd, "quiet") == 0)
    rc = cmd_quiet(timeout_s);
  else if (strcmp(cmd, "check") == 0)
    rc = cmd_check();
  else
    fprintf(stderr, "faults-load: unknown command %s\n", cmd);
  auth_keys_destroy(keys);
  config_free(c);
  return rc;
}
