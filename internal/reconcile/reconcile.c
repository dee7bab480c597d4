/* reconcile: the checks of reconcile.h. Each check is one query that
 * gathers every fact about an order (or a product) across the databases,
 * and C code that says what is wrong with it, so the rules read as rules. */
#ifndef _POSIX_C_SOURCE
#define _POSIX_C_SOURCE 200809L
#endif

#include "reconcile/reconcile.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "audit/audit.h"
#include "clock/clock.h"
#include "db/db.h"
#include "order/order.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"

#define OS(x) SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_##x
#define PS(x) SHOP__PAYMENT__V1__PAYMENT_STATUS__PAYMENT_STATUS_##x
#define PO(x) SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_##x
#define RS(x) SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_##x

/* payment_attempts.outcome of an approved gateway call (payment.h). */
#define GW_APPROVED 1

void reconcile_opts_init(reconcile_opts *o) {
  memset(o, 0, sizeof *o);
  o->deadline_grace_ms = -1;
  o->connect_retry_ms = 2000;
}

const char *reconcile_kind_name(reconcile_kind k) {
  switch (k) {
  case RECONCILE_ORDER:
    return "order";
  case RECONCILE_PRODUCT:
    return "product";
  case RECONCILE_AUDIT:
    return "audit";
  }
  return "?";
}

void reconcile_report_free(reconcile_report *r) {
  if (r == NULL) return;
  free(r->findings);
  memset(r, 0, sizeof *r);
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

static status_code add(reconcile_report *r, reconcile_kind kind, const char *id, const char *fmt,
                       ...) __attribute__((format(printf, 4, 5)));

static status_code add(reconcile_report *r, reconcile_kind kind, const char *id, const char *fmt,
                       ...) {
  if (r->findings_count == r->findings_cap) {
    size_t cap = r->findings_cap ? r->findings_cap * 2 : 16;
    reconcile_finding *f = realloc(r->findings, cap * sizeof *f);
    if (f == NULL) return STATUS_RESOURCE_EXHAUSTED;
    r->findings = f;
    r->findings_cap = cap;
  }
  reconcile_finding *f = &r->findings[r->findings_count++];
  f->kind = kind;
  snprintf(f->id, sizeof f->id, "%s", id);
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(f->why, sizeof f->why, fmt, ap);
  va_end(ap);
  return STATUS_OK;
}

/* The reasons one thing is broken, "; "-separated. */
typedef struct why_buf {
  char s[400];
  size_t n;
} why_buf;

static void why(why_buf *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void why(why_buf *w, const char *fmt, ...) {
  if (w->n + 3 >= sizeof w->s) return;
  if (w->n > 0) w->n += (size_t)snprintf(w->s + w->n, sizeof w->s - w->n, "; ");
  va_list ap;
  va_start(ap, fmt);
  int k = vsnprintf(w->s + w->n, sizeof w->s - w->n, fmt, ap);
  va_end(ap);
  if (k > 0) w->n += (size_t)k;
  if (w->n >= sizeof w->s) w->n = sizeof w->s - 1;
}

/* The LIKE pattern "prefix%" with '!' as the escape character. */
static void prefix_pattern(const char *prefix, char *out, size_t len) {
  size_t j = 0;
  for (const char *s = prefix; *s && j + 3 < len; s++) {
    if (*s == '%' || *s == '_' || *s == '!') out[j++] = '!';
    out[j++] = *s;
  }
  out[j++] = '%';
  out[j] = '\0';
}

/* Where each service's tables are. */
typedef struct books {
  const char *order, *payment, *inventory, *product, *audit;
} books;

static const char *payment_status_name(int s) {
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&shop__payment__v1__payment_status__descriptor, s);
  return s == 0 ? "none" : v != NULL ? v->name + strlen("PAYMENT_STATUS_") : "?";
}

static const char *reservation_status_name(int s) {
  if (s == 0) return "none";
  if (s == 100) return "CANCELLED_BEFORE_RESERVING";
  const ProtobufCEnumValue *v =
      protobuf_c_enum_descriptor_get_value(&shop__inventory__v1__reservation_status__descriptor, s);
  return v != NULL ? v->name + strlen("RESERVATION_STATUS_") : "?";
}

/* ---- Orders ------------------------------------------------------------------------------ */

/* Every fact about one order. */
typedef struct order_facts {
  const char *id;
  const char *currency;
  int status;
  int64_t total, deadline_ms;
  int pay_status;                              /* 0: payment has no row */
  int64_t n_auth, n_capture, n_void, n_refund; /* approved gateway operations */
  int64_t captured, refunded;                  /* minor units */
  int res_status;                              /* 0: inventory has no row */
  int64_t created_events;                      /* distinct OrderCreated ids in the audit log */
} order_facts;

static status_code check_order(reconcile_report *r, const order_facts *f, int64_t now,
                               int64_t grace) {
  why_buf w = {0};

  bool open_auth = f->pay_status == PS(AUTHORIZED) || f->pay_status == PS(CAPTURE_FAILED) ||
                   (f->n_auth > 0 && f->n_capture == 0 && f->n_void == 0);
  switch (f->status) {
  case OS(CONFIRMED):
  case OS(SHIPPED):
    if (f->captured != f->total)
      why(&w, "captured %" PRId64 " of %" PRId64 " %s", f->captured, f->total, f->currency);
    if (f->refunded != 0) why(&w, "refunded %" PRId64 " %s", f->refunded, f->currency);
    if (open_auth) why(&w, "open authorization (payment %s)", payment_status_name(f->pay_status));
    if (f->status == OS(CONFIRMED) && f->res_status != RS(RESERVED))
      why(&w, "stock reservation is %s, not RESERVED", reservation_status_name(f->res_status));
    if (f->status == OS(SHIPPED) && f->res_status != RS(SHIPPED))
      why(&w, "stock reservation is %s, not SHIPPED", reservation_status_name(f->res_status));
    break;
  case OS(CANCELLED):
    if (f->captured - f->refunded != 0)
      why(&w, "captured %" PRId64 " minus refunded %" PRId64 " %s is not zero", f->captured,
          f->refunded, f->currency);
    if (open_auth) why(&w, "open authorization (payment %s)", payment_status_name(f->pay_status));
    if (f->res_status == RS(RESERVED) || f->res_status == RS(SHIPPED))
      why(&w, "stock reservation is still %s", reservation_status_name(f->res_status));
    break;
  case OS(PENDING):
    if (now > f->deadline_ms + grace)
      why(&w, "PENDING %" PRId64 " s past its deadline", (now - f->deadline_ms) / 1000);
    break;
  default:
    why(&w, "unknown status %d", f->status);
  }
  if (f->n_auth > 1) why(&w, "%" PRId64 " authorizations", f->n_auth);
  if (f->n_capture > 1) why(&w, "%" PRId64 " captures", f->n_capture);
  if (f->n_void > 1) why(&w, "%" PRId64 " voids", f->n_void);
  if (f->n_refund > 1) why(&w, "%" PRId64 " refunds", f->n_refund);
  if (f->created_events != 1)
    why(&w, "%" PRId64 " distinct OrderCreated events in the audit log", f->created_events);
  if (w.n == 0) return STATUS_OK;
  return add(r, RECONCILE_ORDER, f->id, "%s: %s", order_status_name(f->status), w.s);
}

static status_code check_orders(db_conn *c, const books *b, const reconcile_opts *o, int64_t grace,
                                reconcile_report *r, char *errbuf, size_t errlen) {
  char sql[3072];
  /* Approved gateway operations, each counted once per distinct reference
   * (the gateway answers a repeated idempotency key with the same one). */
  snprintf(sql, sizeof sql,
           "SELECT o.order_id, o.status, o.total_units, o.currency, o.deadline_ms,"
           " IFNULL(p.status, 0),"
           " IFNULL(pa.n_auth, 0), IFNULL(pa.n_capture, 0), IFNULL(pa.n_void, 0), "
           "IFNULL(pa.n_refund, 0),"
           " IFNULL(pa.captured, 0), IFNULL(pa.refunded, 0),"
           " IFNULL(rv.status, 0),"
           /* Per order through audit_log_subject: a derived table grouped by
            * subject cannot be joined by key (audit_log's subject is
            * utf8mb4, order_id ascii), and a block-nested-loop join of it
            * took 13 minutes over 50,000 orders. */
           " (SELECT COUNT(DISTINCT a.event_id) FROM %s.audit_log a"
           "   WHERE a.subject = o.order_id AND a.type = 'shop.order.v1.OrderCreated')"
           " FROM %s.orders o"
           " LEFT JOIN %s.payments p ON p.order_id = o.order_id"
           " LEFT JOIN (SELECT order_id,"
           "   SUM(operation = %d) n_auth, SUM(operation = %d) n_capture,"
           "   SUM(operation = %d) n_void, SUM(operation = %d) n_refund,"
           "   SUM(IF(operation = %d, amount_units, 0)) captured,"
           "   SUM(IF(operation = %d, amount_units, 0)) refunded"
           "   FROM (SELECT DISTINCT order_id, operation, reference, amount_units"
           "         FROM %s.payment_attempts WHERE outcome = %d) d GROUP BY order_id) pa"
           "   ON pa.order_id = o.order_id"
           " LEFT JOIN %s.reservations rv ON rv.order_id = o.order_id"
           " WHERE o.created_ms >= ? AND (? = '' OR EXISTS (SELECT 1 FROM %s.order_lines l"
           "   WHERE l.order_id = o.order_id AND l.sku LIKE ? ESCAPE '!'))"
           " ORDER BY o.created_ms, o.order_id",
           b->audit, b->order, b->payment, PO(AUTHORIZE), PO(CAPTURE), PO(VOID), PO(REFUND),
           PO(CAPTURE), PO(REFUND), b->payment, GW_APPROVED, b->inventory, b->order);
  const char *prefix = o->sku_prefix ? o->sku_prefix : "";
  char like[200];
  prefix_pattern(prefix, like, sizeof like);
  db_value p[3] = {DB_I64(o->since_ms), DB_STR(prefix), DB_STR(like)};
  db_rows *rows = NULL;
  status_code st = db_query(c, sql, p, 3, &rows, errbuf, errlen);
  if (st != STATUS_OK) return st;
  int64_t now = clock_now_ms();
  while (st == STATUS_OK && db_rows_next(rows)) {
    order_facts f = {
        .id = db_rows_str(rows, 0, NULL),
        .status = (int)db_rows_i64(rows, 1),
        .total = db_rows_i64(rows, 2),
        .currency = db_rows_str(rows, 3, NULL),
        .deadline_ms = db_rows_i64(rows, 4),
        .pay_status = (int)db_rows_i64(rows, 5),
        .n_auth = db_rows_i64(rows, 6),
        .n_capture = db_rows_i64(rows, 7),
        .n_void = db_rows_i64(rows, 8),
        .n_refund = db_rows_i64(rows, 9),
        .captured = db_rows_i64(rows, 10),
        .refunded = db_rows_i64(rows, 11),
        .res_status = (int)db_rows_i64(rows, 12),
        .created_events = db_rows_i64(rows, 13),
    };
    r->orders++;
    switch (f.status) {
    case OS(PENDING):
      r->orders_pending++;
      break;
    case OS(CONFIRMED):
      r->orders_confirmed++;
      break;
    case OS(SHIPPED):
      r->orders_shipped++;
      break;
    case OS(CANCELLED):
      r->orders_cancelled++;
      break;
    }
    st = check_order(r, &f, now, grace);
  }
  db_rows_free(rows);
  if (st == STATUS_RESOURCE_EXHAUSTED) status_seterr(errbuf, errlen, "out of memory");
  return st;
}

/* ---- Products ---------------------------------------------------------------------------- */

static status_code check_products(db_conn *c, const books *b, const reconcile_opts *o,
                                  reconcile_report *r, char *errbuf, size_t errlen) {
  char sql[2048];
  /* The catalog (product-command) records the initial stock and the units
   * restocked; inventory records what it received and where it is now;
   * the reservations say what is reserved and shipped per product. */
  snprintf(sql, sizeof sql,
           "SELECT p.product_id, p.sku, p.initial_stock, p.total_restocked,"
           " s.product_id IS NULL, IFNULL(s.available, 0), IFNULL(s.reserved, 0),"
           " IFNULL(s.shipped, 0), IFNULL(s.received, 0),"
           " IFNULL(rl.reserved, 0), IFNULL(rl.shipped, 0)"
           " FROM %s.products p"
           " LEFT JOIN %s.stock_levels s ON s.product_id = p.product_id"
           " LEFT JOIN (SELECT l.product_id,"
           "   SUM(IF(v.status = %d, l.quantity, 0)) reserved,"
           "   SUM(IF(v.status = %d, l.quantity, 0)) shipped"
           "   FROM %s.reservation_lines l JOIN %s.reservations v ON v.order_id = l.order_id"
           "   GROUP BY l.product_id) rl ON rl.product_id = p.product_id"
           " WHERE p.created_ms >= ? AND p.sku LIKE ? ESCAPE '!'"
           " ORDER BY p.created_ms, p.product_id",
           b->product, b->inventory, RS(RESERVED), RS(SHIPPED), b->inventory, b->inventory);
  const char *prefix = o->sku_prefix ? o->sku_prefix : "";
  char like[200];
  prefix_pattern(prefix, like, sizeof like);
  db_value p[2] = {DB_I64(o->since_ms), DB_STR(like)};
  db_rows *rows = NULL;
  status_code st = db_query(c, sql, p, 2, &rows, errbuf, errlen);
  if (st != STATUS_OK) return st;
  while (st == STATUS_OK && db_rows_next(rows)) {
    const char *id = db_rows_str(rows, 0, NULL);
    const char *sku = db_rows_str(rows, 1, NULL);
    int64_t initial = db_rows_i64(rows, 2), restocked = db_rows_i64(rows, 3);
    bool missing = db_rows_i64(rows, 4) != 0;
    int64_t avail = db_rows_i64(rows, 5), reserved = db_rows_i64(rows, 6);
    int64_t shipped = db_rows_i64(rows, 7), received = db_rows_i64(rows, 8);
    int64_t res_reserved = db_rows_i64(rows, 9), res_shipped = db_rows_i64(rows, 10);
    r->products++;
    if (missing) {
      st = add(r, RECONCILE_PRODUCT, id, "%s: inventory has no stock for it", sku);
      continue;
    }
    why_buf w = {0};
    if (avail + reserved + shipped != initial + restocked)
      why(&w,
          "available %" PRId64 " + reserved %" PRId64 " + shipped %" PRId64 " = %" PRId64
          ", but initial stock %" PRId64 " + restocks %" PRId64 " = %" PRId64,
          avail, reserved, shipped, avail + reserved + shipped, initial, restocked,
          initial + restocked);
    if (received != initial + restocked)
      why(&w, "inventory received %" PRId64 ", the catalog says %" PRId64, received,
          initial + restocked);
    if (avail < 0 || reserved < 0 || shipped < 0) why(&w, "negative stock");
    if (reserved != res_reserved)
      why(&w, "reserved %" PRId64 ", but open reservations hold %" PRId64, reserved, res_reserved);
    if (shipped != res_shipped)
      why(&w, "shipped %" PRId64 ", but shipped reservations hold %" PRId64, shipped, res_shipped);
    if (w.n > 0) st = add(r, RECONCILE_PRODUCT, id, "%s: %s", sku, w.s);
  }
  db_rows_free(rows);
  if (st == STATUS_RESOURCE_EXHAUSTED) status_seterr(errbuf, errlen, "out of memory");
  return st;
}

/* ---- The audit chain --------------------------------------------------------------------- */

/* What earlier runs of one reconcile_run verified: rows 1..last_row_id
 * match. The log is append-only, so a re-run while settling starts at the
 * last verified row (trusting its previous hash, recomputing its own)
 * instead of hashing the whole log again. */
typedef struct chain_state {
  int64_t last_row_id;
  int64_t rows; /* verified, 1..last_row_id */
} chain_state;

static status_code check_chain(db_conn *c, chain_state *cs, reconcile_report *r, char *errbuf,
                               size_t errlen) {
  audit_verify_result v;
  int64_t from = cs->last_row_id > 0 ? cs->last_row_id : 1;
  status_code st = audit_verify(c, from, 0, &v, errbuf, errlen);
  if (st != STATUS_OK) return st;
  int64_t before = cs->last_row_id > 0 ? cs->rows - 1 : 0; /* row `from` is counted again */
  r->events = before + v.rows_checked;
  if (v.ok) {
    if (v.last_row_id > 0) {
      cs->last_row_id = v.last_row_id;
      cs->rows = r->events;
    }
    return STATUS_OK;
  }
  char id[40];
  snprintf(id, sizeof id, "row %" PRId64, v.bad_row_id);
  return add(r, RECONCILE_AUDIT, id, "chain broken at event %s: %s",
             v.bad_event_id[0] ? v.bad_event_id : "-", v.detail);
}

/* ---- The run ----------------------------------------------------------------------------- */

static bool ident_ok(const char *s) {
  if (s == NULL || *s == '\0' || strlen(s) > 64) return false;
  for (; *s; s++)
    if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_')) return false;
  return true;
}

static status_code run_once(db_conn *c, const books *b, const reconcile_opts *o, int64_t grace,
                            chain_state *cs, reconcile_report *r, char *errbuf, size_t errlen) {
  status_code st = check_orders(c, b, o, grace, r, errbuf, errlen);
  if (st == STATUS_OK) st = check_products(c, b, o, r, errbuf, errlen);
  if (st == STATUS_OK) st = check_chain(c, cs, r, errbuf, errlen);
  return st;
}

status_code reconcile_run(const shop_cfg *cfg, const reconcile_opts *opts, reconcile_report *out,
                          char *errbuf, size_t errlen) {
  memset(out, 0, sizeof *out);
  reconcile_opts o;
  if (opts != NULL)
    o = *opts;
  else
    reconcile_opts_init(&o);
  if (o.settle_interval_ms <= 0) o.settle_interval_ms = 250;
  int64_t grace =
      o.deadline_grace_ms >= 0 ? o.deadline_grace_ms : (int64_t)cfg->order.sweep_interval_ms + 5000;
  books b = {"shop_order", "shop_payment", "shop_inventory", "shop_product", "shop_audit"};
  if (o.database != NULL && o.database[0] != '\0') {
    if (!ident_ok(o.database)) {
      status_seterr(errbuf, errlen, "database name '%s' is not [a-z0-9_]+", o.database);
      return STATUS_INVALID_ARGUMENT;
    }
    b = (books){o.database, o.database, o.database, o.database, o.database};
  }

  char pw[256];
  if (cfg->mysql.password != NULL && cfg->mysql.password[0] != '\0') {
    snprintf(pw, sizeof pw, "%s", cfg->mysql.password);
  } else if (!db_password_from_dir(cfg->mysql.secrets_dir, RECONCILE_ACCOUNT, pw, sizeof pw, errbuf,
                                   errlen)) {
    return STATUS_FAILED_PRECONDITION;
  }
  /* The audit database is the default one: audit_verify names audit_log
   * unqualified; the other tables are qualified. */
  db_params p = {.host = cfg->mysql.host,
                 .port = cfg->mysql.port,
                 .socket = cfg->mysql.socket,
                 .user = RECONCILE_ACCOUNT,
                 .password = pw,
                 .database = b.audit,
                 .connect_timeout_ms = cfg->mysql.connect_timeout_ms,
                 .connect_retry_ms = o.connect_retry_ms};
  db_conn *c = NULL;
  status_code st = db_connect(&c, &p, errbuf, errlen);
  memset(pw, 0, sizeof pw);
  if (st != STATUS_OK) return st;

  int64_t t0 = mono_ms();
  int runs = 0;
  chain_state cs = {0};
  for (;;) {
    runs++;
    reconcile_report r = {0};
    st = run_once(c, &b, &o, grace, &cs, &r, errbuf, errlen);
    if (st != STATUS_OK) {
      reconcile_report_free(&r);
      reconcile_report_free(out);
      break;
    }
    reconcile_report_free(out);
    *out = r;
    int64_t spent = mono_ms() - t0;
    if (r.findings_count == 0 || spent + o.settle_interval_ms > o.settle_ms) break;
    if (o.between_runs_cb != NULL) o.between_runs_cb(runs, out, o.between_runs_arg);
    sleep_ms(o.settle_interval_ms);
  }
  if (st == STATUS_OK) {
    out->runs = runs;
    out->elapsed_ms = mono_ms() - t0;
  }
  db_close(c);
  return st;
}
