/* reconcile against the real test MariaDB: each test builds a private set
 * of books (the order, payment, inventory, product and audit tables, from
 * the services' own migrations) in a database of its own, writes
 * consistent or broken rows into it, and runs reconcile_run (and the
 * shopctl binary) on it with reconcile_opts.database. Other suites' data
 * is never touched; the database is dropped afterwards. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "audit/audit.h"
#include "config/config.h"
#include "db/db.h"
#include "inventory/inventory.h"
#include "order/order.h"
#include "payment/payment.h"
#include "product/product.h"
#include "reconcile/reconcile.h"
#include "testenv.h"

#define CONFIRMED 2
#define SHIPPED 3
#define CANCELLED 4
#define PENDING 1

static char dbname[64];
static db_conn *mig; /* shop_migrate on dbname: writes the books */
static shop_cfg *cfg;
static int64_t audit_rows;
static uint8_t audit_head[AUDIT_HASH_SIZE];

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sql(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sql(const char *fmt, ...) {
  char text[2048], err[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(text, sizeof text, fmt, ap);
  va_end(ap);
  status_code st = db_exec(mig, text, NULL, 0, NULL, NULL, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s: %s", text, err);
}

static void books_up(void) {
  char err[512];
  snprintf(dbname, sizeof dbname, "shop_rctest_%d", (int)getpid());
  db_conn *root = testenv_db_connect("shop_migrate", NULL);
  char text[200];
  snprintf(text, sizeof text, "CREATE DATABASE IF NOT EXISTS %s", dbname);
  cr_assert_eq(db_exec(root, text, NULL, 0, NULL, NULL, err, sizeof err), STATUS_OK, "%s", err);
  db_close(root);
  mig = testenv_db_connect("shop_migrate", dbname);
  struct {
    const char *component;
    const db_migration *m;
    size_t n;
  } sets[] = {
      {"order", order_migrations, order_migrations_count},
      {"payment", payment_migrations, payment_migrations_count},
      {"inventory", inventory_migrations, inventory_migrations_count},
      {"product", product_migrations, product_migrations_count},
      {"audit", audit_migrations, audit_migrations_count},
  };
  for (size_t i = 0; i < sizeof sets / sizeof sets[0]; i++)
    cr_assert_eq(db_migrate(mig, sets[i].component, sets[i].m, sets[i].n, NULL, err, sizeof err),
                 STATUS_OK, "%s: %s", sets[i].component, err);
  const char *path = getenv("SHOP_CONFIG");
  cr_assert(path != NULL && path[0], "SHOP_CONFIG is not set: run through make test");
  cr_assert_eq(config_load(&cfg, path, err, sizeof err), 0, "%s", err);
  audit_rows = 0;
  memset(audit_head, 0, sizeof audit_head);
}

static void books_down(void) {
  if (mig != NULL) {
    char text[200], err[512];
    snprintf(text, sizeof text, "DROP DATABASE IF EXISTS %s", dbname);
    cr_expect_eq(db_exec(mig, text, NULL, 0, NULL, NULL, err, sizeof err), STATUS_OK, "%s", err);
    db_close(mig);
    mig = NULL;
  }
  config_free(cfg);
  cfg = NULL;
}

/* ---- Writing books ------------------------------------------------------------------------ */

static void id_of(char out[37], char kind, int n) {
  snprintf(out, 37, "0000000%c-0000-7000-8000-%012d", kind, n);
}

static void product(const char *id, const char *sku, int64_t initial, int64_t restocked,
                    int64_t avail, int64_t reserved, int64_t shipped) {
  int64_t t = now_ms();
  sql("INSERT INTO products (product_id, sku, name, description, category, price_units, "
      "currency, initial_stock, low_stock_threshold, max_quantity_per_order, archived, "
      "restock_seq, total_restocked, version, created_ms, updated_ms) VALUES ('%s', '%s', 'x', "
      "'', 'c', 100, 'EUR', %" PRId64 ", 0, 0, 0, %d, %" PRId64 ", 1, %" PRId64 ", %" PRId64 ")",
      id, sku, initial, restocked > 0, restocked, t, t);
  /* received is what inventory took in; the CHECK makes it the sum. */
  sql("INSERT INTO stock_levels (product_id, sku, available, reserved, shipped, received, "
      "version, updated_ms) VALUES ('%s', '%s', %" PRId64 ", %" PRId64 ", %" PRId64 ", %" PRId64
      ", 1, %" PRId64 ")",
      id, sku, avail, reserved, shipped, avail + reserved + shipped, t);
}

/* Appends one event to the audit chain, with a correct hash unless
 * bad_prev. */
static void audit_event(const char *event_id, const char *type, const char *subject,
                        bool bad_prev) {
  audit_row r = {.row_id = ++audit_rows,
                 .event_id = event_id,
                 .topic = "shop.order.events.v1",
                 .partition = 0,
                 .offset = audit_rows,
                 .type = type,
                 .source = "/shop/test",
                 .actor = "test",
                 .subject = subject,
                 .sequence = 1,
                 .event_time_ms = now_ms(),
                 .correlation_id = "",
                 .traceparent = "",
                 .key = subject,
                 .data = (const uint8_t *)"",
                 .data_len = 0,
                 .recorded_ms = now_ms()};
  uint8_t prev[AUDIT_HASH_SIZE], hash[AUDIT_HASH_SIZE];
  memcpy(prev, audit_head, sizeof prev);
  if (bad_prev) prev[0] ^= 0xff;
  audit_row_hash(&r, prev, hash);
  char ph[65], hh[65];
  for (int i = 0; i < AUDIT_HASH_SIZE; i++) {
    sprintf(ph + 2 * i, "%02x", prev[i]);
    sprintf(hh + 2 * i, "%02x", hash[i]);
  }
  sql("INSERT INTO audit_log (row_id, event_id, topic, kpartition, koffset, type, source, actor, "
      "subject, sequence, event_time_ms, correlation_id, traceparent, ev_key, data, recorded_ms, "
      "prev_hash, hash) VALUES (%" PRId64 ", '%s', '%s', 0, %" PRId64
      ", '%s', '%s', '%s', '%s', "
      "1, %" PRId64 ", '', '', '%s', '', %" PRId64 ", UNHEX('%s'), UNHEX('%s'))",
      r.row_id, event_id, r.topic, r.offset, type, r.source, r.actor, subject, r.event_time_ms,
      subject, r.recorded_ms, ph, hh);
  memcpy(audit_head, hash, sizeof hash);
}

/* Gateway operation codes (shop.payment.v1.PaymentOperation) and
 * reservation states (shop.inventory.v1.ReservationStatus). */
enum { AUTH = 1, CAPTURE = 2, VOID = 3, REFUND = 4 };
enum { R_RESERVED = 2, R_RELEASED = 4, R_SHIPPED = 5 };

static void attempt(const char *order_id, int op, const char *ref, int64_t amount) {
  sql("INSERT INTO payment_attempts (order_id, operation, attempt, gateway_key, amount_units, "
      "outcome, reference, latency_ms, created_ms) VALUES ('%s', %d, 1, 'k', %" PRId64
      ", 1, '%s', 0, %" PRId64 ")",
      order_id, op, amount, ref, now_ms());
}

/* One order of qty units of product at 100 each, with its payment row
 * (pay_status, 0: none), reservation (res_status, 0: none) and one
 * OrderCreated in the audit log. created_ms 0: now. */
static void order(const char *id, const char *product_id, const char *sku, int qty, int status,
                  int pay_status, int res_status, int64_t deadline_ms, int64_t created_ms) {
  int64_t t = created_ms ? created_ms : now_ms();
  sql("INSERT INTO orders (order_id, customer_id, status, version, total_units, currency, "
      "payment_token, shipping, idempotency_key, deadline_ms, created_ms, updated_ms) VALUES "
      "('%s', 'c1', %d, 1, %d, 'EUR', 'tok_visa', '', 'k', %" PRId64 ", %" PRId64 ", %" PRId64 ")",
      id, status, qty * 100, deadline_ms ? deadline_ms : t + 600000, t, t);
  sql("INSERT INTO order_lines (order_id, line_no, product_id, quantity, unit_price, line_total, "
      "sku, product_name) VALUES ('%s', 0, '%s', %d, 100, %d, '%s', 'x')",
      id, product_id, qty, qty * 100, sku);
  if (pay_status)
    sql("INSERT INTO payments (order_id, customer_id, status, version, amount_units, currency, "
        "gateway_key, created_ms, updated_ms) VALUES ('%s', 'c1', %d, 1, %d, 'EUR', 'k', %" PRId64
        ", %" PRId64 ")",
        id, pay_status, qty * 100, t, t);
  if (res_status) {
    sql("INSERT INTO reservations (order_id, status, version, waiting_since_ms, created_ms, "
        "updated_ms) VALUES ('%s', %d, 1, 0, %" PRId64 ", %" PRId64 ")",
        id, res_status, t, t);
    sql("INSERT INTO reservation_lines (order_id, product_id, quantity) VALUES ('%s', '%s', %d)",
        id, product_id, qty);
  }
  char ev[64];
  snprintf(ev, sizeof ev, "ev-created-%s", id);
  audit_event(ev, "shop.order.v1.OrderCreated", id, false);
}

/* A consistent set: product P1 (10 initial + 5 restocked) and orders in
 * every state; returns P1's id in p1. */
static void consistent_books(char p1[37]) {
  id_of(p1, 'p', 1);
  /* O1 CONFIRMED 2 units reserved, O2 SHIPPED 1, O3 CANCELLED (voided,
   * released 3), O4 CANCELLED after capture (refunded, released 1), O5
   * PENDING. */
  product(p1, "RC-MUG", 10, 5, 12, 2, 1);
  char o[37];
  id_of(o, 'o', 1);
  order(o, p1, "RC-MUG", 2, CONFIRMED, 4, R_RESERVED, 0, 0);
  attempt(o, AUTH, "auth-1", 200);
  attempt(o, CAPTURE, "cap-1", 200);
  id_of(o, 'o', 2);
  order(o, p1, "RC-MUG", 1, SHIPPED, 4, R_SHIPPED, 0, 0);
  attempt(o, AUTH, "auth-2", 100);
  attempt(o, CAPTURE, "cap-2", 100);
  attempt(o, CAPTURE, "cap-2", 100); /* a repeat answered with the same capture */
  id_of(o, 'o', 3);
  order(o, p1, "RC-MUG", 3, CANCELLED, 6, R_RELEASED, 0, 0);
  attempt(o, AUTH, "auth-3", 300);
  attempt(o, VOID, "void-3", 300);
  id_of(o, 'o', 4);
  order(o, p1, "RC-MUG", 1, CANCELLED, 7, R_RELEASED, 0, 0);
  attempt(o, AUTH, "auth-4", 100);
  attempt(o, CAPTURE, "cap-4", 100);
  attempt(o, REFUND, "ref-4", 100);
  id_of(o, 'o', 5);
  order(o, p1, "RC-MUG", 1, PENDING, 0, 0, 0, 0);
  audit_event("ev-other-1", "shop.product.v1.ProductCreated", p1, false);
}

static reconcile_report run(const reconcile_opts *extra) {
  reconcile_opts o;
  if (extra != NULL)
    o = *extra;
  else
    reconcile_opts_init(&o);
  o.database = dbname;
  reconcile_report r;
  char err[512];
  status_code st = reconcile_run(cfg, &o, &r, err, sizeof err);
  cr_assert_eq(st, STATUS_OK, "%s: %s", status_name(st), err);
  return r;
}

/* The finding about id, or NULL. */
static const reconcile_finding *finding(const reconcile_report *r, reconcile_kind kind,
                                        const char *id) {
  for (size_t i = 0; i < r->findings_count; i++)
    if (r->findings[i].kind == kind && strcmp(r->findings[i].id, id) == 0) return &r->findings[i];
  return NULL;
}

static void expect_finding(const reconcile_report *r, reconcile_kind kind, const char *id,
                           const char *why_part) {
  const reconcile_finding *f = finding(r, kind, id);
  cr_assert_not_null(f, "no %s finding for %s", reconcile_kind_name(kind), id);
  cr_assert_not_null(strstr(f->why, why_part), "%s %s: \"%s\" does not say \"%s\"",
                     reconcile_kind_name(kind), id, f->why, why_part);
}

/* ---- The tests ---------------------------------------------------------------------------- */

TestSuite(reconcile, .init = books_up, .fini = books_down);

Test(reconcile, consistent_books_are_clean_and_counted) {
  char p1[37];
  consistent_books(p1);
  reconcile_report r = run(NULL);
  for (size_t i = 0; i < r.findings_count; i++)
    cr_log_error("%s %s: %s", reconcile_kind_name(r.findings[i].kind), r.findings[i].id,
                 r.findings[i].why);
  cr_expect_eq(r.findings_count, 0);
  cr_expect_eq(r.orders, 5);
  cr_expect_eq(r.orders_confirmed, 1);
  cr_expect_eq(r.orders_shipped, 1);
  cr_expect_eq(r.orders_cancelled, 2);
  cr_expect_eq(r.orders_pending, 1);
  cr_expect_eq(r.products, 1);
  cr_expect_eq(r.events, 6);
  cr_expect_eq(r.runs, 1);
  reconcile_report_free(&r);
}

Test(reconcile, every_broken_order_product_and_audit_link_is_named) {
  char p1[37], p2[37], o[8][37];
  consistent_books(p1);
  for (int i = 0; i < 8; i++) id_of(o[i], 'b', i);
  /* b0: CONFIRMED, authorized, capture missing (its reservation holds 1
   * more unit of P1, so P1 is made to agree). */
  sql("UPDATE stock_levels SET available = available - 1, reserved = reserved + 1 WHERE "
      "product_id = '%s'",
      p1);
  order(o[0], p1, "RC-MUG", 1, CONFIRMED, 2, R_RESERVED, 0, 0);
  attempt(o[0], AUTH, "auth-b0", 100);
  /* b1: CANCELLED after a capture that was never refunded. */
  order(o[1], p1, "RC-MUG", 1, CANCELLED, 4, R_RELEASED, 0, 0);
  attempt(o[1], AUTH, "auth-b1", 100);
  attempt(o[1], CAPTURE, "cap-b1", 100);
  /* b2: PENDING, a minute past its deadline. */
  order(o[2], p1, "RC-MUG", 1, PENDING, 0, 0, now_ms() - 60000, now_ms() - 120000);
  /* b3: two authorizations. */
  order(o[3], p1, "RC-MUG", 1, CANCELLED, 6, R_RELEASED, 0, 0);
  attempt(o[3], AUTH, "auth-b3a", 100);
  attempt(o[3], AUTH, "auth-b3b", 100);
  attempt(o[3], VOID, "void-b3", 100);
  /* b4: a second, distinct OrderCreated event. */
  order(o[4], p1, "RC-MUG", 1, PENDING, 0, 0, 0, 0);
  audit_event("ev-created-again-b4", "shop.order.v1.OrderCreated", o[4], false);
  /* P2: 5 in the catalog, but inventory holds 4 (and counts 4 received). */
  id_of(p2, 'p', 2);
  product(p2, "RC-CUP", 5, 0, 4, 0, 0);
  /* A link of the chain that does not match its predecessor. */
  audit_event("ev-tampered", "shop.product.v1.PriceChanged", p2, true);

  reconcile_report r = run(NULL);
  expect_finding(&r, RECONCILE_ORDER, o[0], "captured 0 of 100 EUR");
  expect_finding(&r, RECONCILE_ORDER, o[0], "open authorization");
  expect_finding(&r, RECONCILE_ORDER, o[1], "captured 100 minus refunded 0 EUR is not zero");
  expect_finding(&r, RECONCILE_ORDER, o[2], "past its deadline");
  expect_finding(&r, RECONCILE_ORDER, o[3], "2 authorizations");
  expect_finding(&r, RECONCILE_ORDER, o[4], "2 distinct OrderCreated events");
  expect_finding(&r, RECONCILE_PRODUCT, p2, "initial stock 5 + restocks 0 = 5");
  char row[40];
  snprintf(row, sizeof row, "row %" PRId64, audit_rows);
  expect_finding(&r, RECONCILE_AUDIT, row, "previous hash");
  cr_expect_eq(r.findings_count, 7, "nothing else is named (P1 and the first orders are fine)");
  reconcile_report_free(&r);
}

Test(reconcile, a_reservation_that_stock_does_not_hold_is_named) {
  char p1[37], o[37];
  consistent_books(p1);
  /* Inventory moved 2 units to reserved for an order, but no reservation
   * holds them (and the order is CANCELLED). */
  sql("UPDATE stock_levels SET available = available - 2, reserved = reserved + 2 WHERE "
      "product_id = '%s'",
      p1);
  id_of(o, 'x', 1);
  order(o, p1, "RC-MUG", 2, CANCELLED, 6, R_RESERVED, 0, 0);
  attempt(o, AUTH, "auth-x1", 200);
  attempt(o, VOID, "void-x1", 200);
  reconcile_report r = run(NULL);
  expect_finding(&r, RECONCILE_ORDER, o, "stock reservation is still RESERVED");
  cr_expect_eq(r.findings_count, 1);
  reconcile_report_free(&r);
}

Test(reconcile, since_and_sku_prefix_leave_older_and_other_books_out) {
  char p1[37], old[37], other[37], p3[37];
  consistent_books(p1);
  id_of(old, 'y', 1);
  order(old, p1, "RC-MUG", 1, PENDING, 0, 0, now_ms() - 3600000, now_ms() - 7200000);
  id_of(p3, 'p', 3);
  product(p3, "ZZ-OTHER", 1, 0, 1, 0, 0);
  id_of(other, 'y', 2);
  order(other, p3, "ZZ-OTHER", 1, CONFIRMED, 2, 0, 0, 0); /* nothing captured */
  reconcile_report r = run(NULL);
  cr_expect_not_null(finding(&r, RECONCILE_ORDER, old));
  cr_expect_not_null(finding(&r, RECONCILE_ORDER, other));
  reconcile_report_free(&r);

  reconcile_opts o;
  reconcile_opts_init(&o);
  o.since_ms = now_ms() - 3000000; /* after the old order */
  o.sku_prefix = "RC-";
  r = run(&o);
  cr_expect_eq(r.findings_count, 0, "%zu findings, first: %s", r.findings_count,
               r.findings_count ? r.findings[0].why : "");
  cr_expect_eq(r.orders, 5);
  cr_expect_eq(r.products, 1);
  reconcile_report_free(&r);
}

/* Between the first run (which finds the capture missing) and the
 * second: the capture lands. */
typedef struct late_capture {
  const char *order_id;
  bool written;
} late_capture;

static void capture_between_runs_cb(int runs, const reconcile_report *r, void *arg) {
  late_capture *lc = arg;
  if (runs != 1) return;
  char err[512];
  db_conn *c = testenv_db_connect("shop_migrate", dbname);
  char text[600];
  snprintf(text, sizeof text,
           "INSERT INTO payment_attempts (order_id, operation, attempt, gateway_key, "
           "amount_units, outcome, reference, latency_ms, created_ms) VALUES ('%s', 2, 1, 'k', "
           "100, 1, 'cap-late', 0, 0)",
           lc->order_id);
  status_code st = db_exec(c, text, NULL, 0, NULL, NULL, err, sizeof err);
  if (st == STATUS_OK) {
    snprintf(text, sizeof text, "UPDATE payments SET status = 4 WHERE order_id = '%s'",
             lc->order_id);
    st = db_exec(c, text, NULL, 0, NULL, NULL, err, sizeof err);
  }
  db_close(c);
  lc->written = st == STATUS_OK;
}

Test(reconcile, settle_runs_again_until_a_late_capture_lands) {
  char p1[37], o[37];
  consistent_books(p1);
  sql("UPDATE stock_levels SET available = available - 1, reserved = reserved + 1 WHERE "
      "product_id = '%s'",
      p1);
  id_of(o, 'z', 1);
  order(o, p1, "RC-MUG", 1, CONFIRMED, 2, R_RESERVED, 0, 0);
  attempt(o, AUTH, "auth-z1", 100);
  late_capture lc = {.order_id = o};
  reconcile_opts ro;
  reconcile_opts_init(&ro);
  ro.settle_ms = 20000;
  ro.between_runs_cb = capture_between_runs_cb;
  ro.between_runs_arg = &lc;
  reconcile_report r = run(&ro);
  cr_assert(lc.written, "the late capture was not written");
  cr_expect_eq(r.findings_count, 0, "%s", r.findings_count ? r.findings[0].why : "");
  cr_expect_gt(r.runs, 1, "the first run saw the missing capture");
  cr_expect_eq(r.events, 7, "later runs verify the chain from where the first one ended");
  reconcile_report_free(&r);
}

/* ---- shopctl reconcile ------------------------------------------------------------------- */

/* Runs shopctl with args (and env before it) through the shell; stdout and
 * stderr land in out. Returns the exit status. */
static int shopctl(char *out, size_t len, const char *env, const char *args) {
  char cmd[1024];
  snprintf(cmd, sizeof cmd, "%s '%s' %s 2>&1", env, SHOPCTL_BIN, args);
  FILE *p = popen(cmd, "r");
  cr_assert_not_null(p);
  size_t n = fread(out, 1, len - 1, p);
  out[n] = '\0';
  int st = pclose(p);
  cr_assert(WIFEXITED(st), "%s: %d", cmd, st);
  return WEXITSTATUS(st);
}

Test(reconcile, shopctl_exits_0_when_clean_1_naming_what_is_broken_and_14_without_database) {
  static char out[65536];
  char p1[37], args[256], o[37];
  consistent_books(p1);
  snprintf(args, sizeof args, "reconcile --database %s", dbname);
  cr_assert_eq(shopctl(out, sizeof out, "", args), 0, "%s", out);
  cr_assert_not_null(
      strstr(out, "clean: 5 orders (1 pending, 1 confirmed, 1 shipped, 2 cancelled)"), "%s", out);
  id_of(o, 'c', 1);
  order(o, p1, "RC-MUG", 1, SHIPPED, 2, 0, 0, 0);
  cr_assert_eq(shopctl(out, sizeof out, "", args), 1, "%s", out);
  char line[160];
  snprintf(line, sizeof line, "order %s: SHIPPED: captured 0 of 100 EUR", o);
  cr_assert_not_null(strstr(out, line), "%s", out);
  cr_assert_not_null(strstr(out, "BROKEN:"), "%s", out);
  snprintf(args, sizeof args, "reconcile --json --database %s", dbname);
  cr_assert_eq(shopctl(out, sizeof out, "", args), 1, "%s", out);
  cr_assert_not_null(strstr(out, "\"clean\": false"), "%s", out);
  cr_assert_not_null(strstr(out, "\"kind\": \"order\""), "%s", out);
  /* Nothing listens on port 1. */
  cr_assert_eq(shopctl(out, sizeof out, "SHOP_MYSQL__PORT=1", args), 14, "%s", out);
  cr_assert_not_null(strstr(out, "UNAVAILABLE"), "%s", out);
}
