/* payment-worker's domain: the payments table, the gateway calls with
 * retries and attempts, and the payment events. See payment.h. */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check/check.h"
#include "log/log.h"
#include "payment/payment.h"
#include "shop/order/v1/events.pb-c.h"
#include "topology/topology.h"

#define PS(name) SHOP__PAYMENT__V1__PAYMENT_STATUS__PAYMENT_STATUS_##name
#define FR(name) SHOP__PAYMENT__V1__PAYMENT_FAILURE_REASON__PAYMENT_FAILURE_REASON_##name
#define BACKOFF_MAX_MS 5000

/* ---- Context ------------------------------------------------------------------------ */

static void real_sleep_ms(void *self, int ms) {
  (void)self;
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (ms > 0 && nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static payment_batch *batch_new(void);
static void batch_free(payment_batch *b);

void payment_ctx_init(payment_ctx *ctx, const shop_cfg *cfg, const char *program, outbox_sink sink,
                      payment_gateway gw) {
  memset(ctx, 0, sizeof *ctx);
  ctx->program = program;
  ctx->sink = sink;
  ctx->gw = gw;
  ctx->retry_max = cfg != NULL ? cfg->payment.retry_max : 5;
  ctx->retry_backoff_ms = cfg != NULL ? cfg->payment.retry_backoff_ms : 100;
  ctx->sleep_ms_cb = real_sleep_ms;
  ctx->batch = batch_new();
}

void payment_ctx_destroy(payment_ctx *ctx) {
  batch_free(ctx->batch);
  ctx->batch = NULL;
}

static int64_t now_ms(const payment_ctx *ctx) { return clock_now(&ctx->clock); }

static void sleep_ms(const payment_ctx *ctx, int ms) {
  if (ctx->sleep_ms_cb != NULL)
    ctx->sleep_ms_cb(ctx->clock.self, ms);
  else
    real_sleep_ms(NULL, ms);
}

/* ---- Events ------------------------------------------------------------------------- */

static status_code emit(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                        const char *order_id, int64_t seq, const ProtobufCMessage *m, char *errbuf,
                        size_t errlen) {
  const outbox_cause c = outbox_cause_of_event(cause);
  status_code st = outbox_emit(&ctx->sink, tx, &c, order_id, seq, m, errbuf, errlen);
  /* One line per decision, under the current scope's trace. */
  if (st == STATUS_OK)
    log_info(NULL, "payment: %s for order %s (version %lld)", m->descriptor->short_name, order_id,
             (long long)seq);
  return st;
}

/* ---- The payments row ---------------------------------------------------------------------- */

typedef struct pay {
  bool found;
  payment_row r;
  char order_id[37];
  char customer_id[129];
  char currency[4];
  char gateway_key[301];
} pay;

#define PAY_COLUMNS                                                                                \
  "order_id, status, version, amount_units, currency, customer_id, gateway_key,"                   \
  " authorization_id, capture_id, refund_id, failure_reason"

static void pay_parse(db_rows *r, pay *p) {
  memset(p, 0, sizeof *p);
  p->found = true;
  snprintf(p->order_id, sizeof p->order_id, "%s", db_rows_str(r, 0, NULL));
  p->r.status = (int)db_rows_i64(r, 1);
  p->r.version = db_rows_i64(r, 2);
  p->r.amount = db_rows_i64(r, 3);
  snprintf(p->currency, sizeof p->currency, "%s", db_rows_str(r, 4, NULL));
  snprintf(p->customer_id, sizeof p->customer_id, "%s", db_rows_str(r, 5, NULL));
  snprintf(p->gateway_key, sizeof p->gateway_key, "%s", db_rows_str(r, 6, NULL));
  snprintf(p->r.authorization_id, PAYMENT_REF_MAX, "%s", db_rows_str(r, 7, NULL));
  snprintf(p->r.capture_id, PAYMENT_REF_MAX, "%s", db_rows_str(r, 8, NULL));
  snprintf(p->r.refund_id, PAYMENT_REF_MAX, "%s", db_rows_str(r, 9, NULL));
  p->r.failure_reason = (int)db_rows_i64(r, 10);
}

/* ---- The consumer's batch ---------------------------------------------------------------------
 *
 * Within one consumer transaction the payments of every order its events
 * name are read (locked) with one statement before the events are
 * applied; each step reads and changes the row in memory; before the
 * commit the new rows go in one multi-row INSERT and the changed ones in
 * one UPDATE (a CASE over the ids). Outside a consumer (tests, tools) a
 * step reads and writes its row itself.
 */

typedef struct pay_entry {
  pay p;           /* p.found false: no row (yet) */
  bool is_new;     /* to be inserted */
  bool dirty;      /* an existing row to be updated */
  char text[2001]; /* failure_text to write (500 characters) */
  int64_t created; /* created_ms of a new row */
} pay_entry;

struct payment_batch {
  /* The consumer's connection while the batch is open, else NULL. */
  _Atomic(db_conn *) tx;
  pay_entry *e;
  size_t n, cap;
};

static payment_batch *batch_new(void) { return calloc(1, sizeof(payment_batch)); }

static void batch_free(payment_batch *b) {
  if (b == NULL) return;
  free(b->e);
  free(b);
}

static pay_entry *batch_entry(const payment_ctx *ctx, db_conn *tx, const char *order_id) {
  payment_batch *b = ctx->batch;
  if (b == NULL || atomic_load(&b->tx) != tx) return NULL;
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->e[i].p.order_id, order_id) == 0) return &b->e[i];
  return NULL;
}

static bool pay_row_cb(db_rows *r, void *arg) {
  payment_batch *b = arg;
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->e[i].p.order_id, db_rows_str(r, 0, NULL)) == 0) pay_parse(r, &b->e[i].p);
  return true;
}

static status_code prepare_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                              char *errbuf, size_t errlen) {
  const payment_ctx *ctx = arg;
  payment_batch *b = ctx->batch;
  if (b == NULL) return STATUS_OK;
  atomic_store(&b->tx, NULL);
  b->n = 0;
  if (n > b->cap) {
    pay_entry *e = realloc(b->e, n * sizeof *e);
    if (e == NULL) return STATUS_OK; /* row by row, then */
    b->e = e;
    b->cap = n;
  }
  const char *ids[n > 0 ? n : 1];
  size_t k = consumer_batch_keys(msgs, n, NULL, "order_id", 36, ids);
  for (size_t i = 0; i < k; i++) {
    pay_entry *e = &b->e[b->n++];
    memset(e, 0, sizeof *e);
    snprintf(e->p.order_id, sizeof e->p.order_id, "%s", ids[i]);
  }
  status_code st =
      db_query_keys(tx,
                    "SELECT " PAY_COLUMNS " FROM payments WHERE order_id IN (" DB_KEYS_PLACEHOLDERS
                    ") ORDER BY order_id FOR UPDATE",
                    ids, k, pay_row_cb, b, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (k > 0) atomic_store(&b->tx, tx);
  return STATUS_OK;
}

/* failure_text as the column keeps it (LEFT(text, 500)). */
static void text_cut(char *out, size_t cap, const char *text) {
  snprintf(out, cap, "%.*s", (int)check_utf8_prefix(text, 500), text != NULL ? text : "");
}

static db_value pay_column_cb(size_t row, size_t col, void *arg) {
  const pay_entry *e = ((const pay_entry **)arg)[row];
  switch (col) {
  case 0:
    return DB_I64(e->p.r.status);
  case 1:
    return DB_I64(e->p.r.version);
  case 2:
    return DB_STR(e->p.r.authorization_id);
  case 3:
    return DB_STR(e->p.r.capture_id);
  case 4:
    return DB_STR(e->p.r.refund_id);
  case 5:
    return DB_I64(e->p.r.failure_reason);
  default:
    return DB_STR(e->text);
  }
}

/* Writes the batch's rows: new ones with one multi-row INSERT (with the
 * commit), changed ones with one UPDATE per DB_KEYS_CHUNK rows. */
static status_code batch_write(db_conn *tx, const payment_ctx *ctx, payment_batch *b, char *errbuf,
                               size_t errlen) {
  int64_t now = now_ms(ctx);
  const pay_entry *dirty[b->n > 0 ? b->n : 1];
  const char *ids[b->n > 0 ? b->n : 1];
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++) {
    const pay_entry *e = &b->e[i];
    if (e->is_new) {
      db_value v[14] = {DB_STR(e->p.order_id),
                        DB_STR(e->p.customer_id),
                        DB_I64(e->p.r.status),
                        DB_I64(e->p.r.version),
                        DB_I64(e->p.r.amount),
                        DB_STR(e->p.currency),
                        DB_STR(e->p.gateway_key),
                        DB_STR(e->p.r.authorization_id),
                        DB_STR(e->p.r.capture_id),
                        DB_STR(e->p.r.refund_id),
                        DB_I64(e->p.r.failure_reason),
                        DB_STR(e->text),
                        DB_I64(e->created),
                        DB_I64(now)};
      status_code st = db_insert_later(
          tx,
          "INSERT INTO payments (order_id, customer_id, status, version, amount_units, currency,"
          " gateway_key, authorization_id, capture_id, refund_id, failure_reason, failure_text,"
          " created_ms, updated_ms)",
          v, 14, errbuf, errlen);
      if (st != STATUS_OK) return st;
    } else if (e->dirty) {
      ids[k] = e->p.order_id;
      dirty[k++] = e;
    }
  }
  static const char *const cols[] = {"status",      "version",   "authorization_id",
                                     "capture_id",  "refund_id", "failure_reason",
                                     "failure_text"};
  return db_update_keys(tx, "payments", "order_id", cols, 7, ids, k, pay_column_cb, dirty, now,
                        errbuf, errlen);
}

static status_code pay_lock(db_conn *tx, const payment_ctx *ctx, const char *order_id, pay *p,
                            char *errbuf, size_t errlen) {
  const pay_entry *e = batch_entry(ctx, tx, order_id);
  if (e != NULL) {
    *p = e->p;
    return STATUS_OK;
  }
  memset(p, 0, sizeof *p);
  snprintf(p->order_id, sizeof p->order_id, "%s", order_id);
  db_value v[1] = {DB_STR(order_id)};
  db_rows *r = NULL;
  status_code st =
      db_query(tx, "SELECT " PAY_COLUMNS " FROM payments WHERE order_id = ? FOR UPDATE", v, 1, &r,
               errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (db_rows_next(r)) pay_parse(r, p);
  db_rows_free(r);
  return STATUS_OK;
}

/* Inserts the row of a payment payment has not seen (version as p has
 * it): with the batch's INSERT, or at once. */
static status_code pay_insert(db_conn *tx, const payment_ctx *ctx, const pay *p,
                              const char *failure_text, char *errbuf, size_t errlen) {
  pay_entry *e = batch_entry(ctx, tx, p->order_id);
  int64_t t = now_ms(ctx);
  if (e != NULL) {
    e->p = *p;
    e->p.found = true;
    e->is_new = true;
    e->created = t;
    text_cut(e->text, sizeof e->text, failure_text);
    return STATUS_OK;
  }
  db_value v[12] = {DB_STR(p->order_id),
                    DB_STR(p->customer_id),
                    DB_I64(p->r.status),
                    DB_I64(p->r.version),
                    DB_I64(p->r.amount),
                    DB_STR(p->currency),
                    DB_STR(p->gateway_key),
                    DB_STR(p->r.authorization_id),
                    DB_I64(p->r.failure_reason),
                    DB_STR(failure_text != NULL ? failure_text : ""),
                    DB_I64(t),
                    DB_I64(t)};
  status_code st =
      db_exec(tx,
              "INSERT INTO payments (order_id, customer_id, status, version, amount_units,"
              " currency, gateway_key, authorization_id, failure_reason, failure_text,"
              " created_ms, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, LEFT(?, 500), ?, ?)",
              v, 12, NULL, NULL, errbuf, errlen);
  return st == STATUS_ALREADY_EXISTS ? STATUS_ABORTED : st; /* another instance: start again */
}

/* Writes the row's state back, one version further. */
static status_code pay_save(db_conn *tx, const payment_ctx *ctx, pay *p, const char *failure_text,
                            char *errbuf, size_t errlen) {
  p->r.version++;
  pay_entry *e = batch_entry(ctx, tx, p->order_id);
  if (e != NULL) {
    e->p = *p;
    if (!e->is_new) e->dirty = true;
    text_cut(e->text, sizeof e->text, failure_text);
    return STATUS_OK;
  }
  db_value v[9] = {DB_I64(p->r.status),
                   DB_I64(p->r.version),
                   DB_STR(p->r.authorization_id),
                   DB_STR(p->r.capture_id),
                   DB_STR(p->r.refund_id),
                   DB_I64(p->r.failure_reason),
                   DB_STR(failure_text != NULL ? failure_text : ""),
                   DB_I64(now_ms(ctx)),
                   DB_STR(p->order_id)};
  return db_exec(tx,
                 "UPDATE payments SET status = ?, version = ?, authorization_id = ?, capture_id = "
                 "?, refund_id = ?, failure_reason = ?, failure_text = LEFT(?, 500), updated_ms = "
                 "? WHERE order_id = ?",
                 v, 9, NULL, NULL, errbuf, errlen);
}

static void money(Shop__Common__V1__Money *m, const pay *p) {
  shop__common__v1__money__init(m);
  m->units = p->r.amount;
  m->currency = (char *)p->currency;
}

/* ---- The gateway, with retries ---------------------------------------------------------- */

/* Calls op until it is not TRANSIENT or retry_max retries are spent,
 * recording each attempt. */
static status_code gw_call(db_conn *tx, const payment_ctx *ctx, const pay *p, payment_op op,
                           const char *token, const char *reference, payment_gw_result *res,
                           char *errbuf, size_t errlen) {
  char key[PAYMENT_KEY_MAX + 1];
  snprintf(key, sizeof key, "%s/%s", p->gateway_key, payment_op_name(op));
  payment_gw_request req = {.idempotency_key = key,
                            .token = token,
                            .amount = p->r.amount,
                            .currency = p->currency,
                            .reference = reference};
  int backoff = ctx->retry_backoff_ms > 0 ? ctx->retry_backoff_ms : 1;
  for (int attempt = 1;; attempt++) {
    int64_t t0 = now_ms(ctx);
    ctx->gw.call_cb(ctx->gw.self, op, &req, res);
    int64_t took = now_ms(ctx) - t0;
    char message[257];
    snprintf(message, sizeof message, "%s", res->message); /* the column holds 256 */
    db_value v[11] = {
        DB_STR(p->order_id), DB_I64(op),           DB_I64(attempt),     DB_STR(key),
        DB_I64(p->r.amount), DB_I64(res->outcome), DB_I64(res->reason), DB_STR(res->reference),
        DB_STR(message),     DB_I64(took),         DB_I64(now_ms(ctx))};
    /* Nothing in the transaction reads the attempts back: they go with
     * the commit, every attempt of the batch in one statement. */
    status_code st = db_insert_later(tx,
                                     "INSERT INTO payment_attempts (order_id, operation, attempt,"
                                     " gateway_key, amount_units, outcome, reason, reference,"
                                     " message, latency_ms, created_ms)",
                                     v, 11, errbuf, errlen);
    if (st != STATUS_OK) return st;
    if (res->outcome != PAYMENT_GW_TRANSIENT || attempt > ctx->retry_max) break;
    log_warn(NULL, "payment %s of order %s: transient gateway failure (attempt %d): %s",
             payment_op_name(op), p->order_id, attempt, res->message);
    sleep_ms(ctx, backoff);
    backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : backoff * 2;
  }
  return STATUS_OK;
}

static Shop__Payment__V1__PaymentFailureReason failure_reason(const payment_gw_result *res) {
  if (res->outcome == PAYMENT_GW_TRANSIENT) return FR(GATEWAY_UNAVAILABLE);
  return res->reason != 0 ? res->reason : FR(DECLINED);
}

static status_code emit_failed(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                               const pay *p, payment_op op, const payment_gw_result *res,
                               char *errbuf, size_t errlen) {
  Shop__Common__V1__Money m;
  money(&m, p);
  Shop__Payment__V1__PaymentFailed ev = SHOP__PAYMENT__V1__PAYMENT_FAILED__INIT;
  ev.order_id = (char *)p->order_id;
  ev.customer_id = (char *)p->customer_id;
  ev.operation = op;
  ev.reason = failure_reason(res);
  ev.reason_text = (char *)res->message;
  ev.amount = &m;
  ev.authorization_id = (char *)p->r.authorization_id;
  return emit(tx, ctx, cause, p->order_id, p->r.version, &ev.base, errbuf, errlen);
}

/* Voids the open authorization of a locked row. */
static status_code do_void(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                           pay *p, char *errbuf, size_t errlen) {
  payment_gw_result res;
  status_code st =
      gw_call(tx, ctx, p, PAYMENT_OP_VOID, NULL, p->r.authorization_id, &res, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (res.outcome == PAYMENT_GW_TRANSIENT) {
    snprintf(errbuf, errlen, "voiding order %s: the gateway keeps failing: %s", p->order_id,
             res.message);
    return STATUS_UNAVAILABLE;
  }
  if (res.outcome == PAYMENT_GW_APPROVED) {
    p->r.status = PS(VOIDED);
    if ((st = pay_save(tx, ctx, p, NULL, errbuf, errlen)) != STATUS_OK) return st;
    Shop__Common__V1__Money m;
    money(&m, p);
    Shop__Payment__V1__PaymentVoided ev = SHOP__PAYMENT__V1__PAYMENT_VOIDED__INIT;
    ev.order_id = p->order_id;
    ev.customer_id = p->customer_id;
    ev.amount = &m;
    ev.authorization_id = p->r.authorization_id;
    return emit(tx, ctx, cause, p->order_id, p->r.version, &ev.base, errbuf, errlen);
  }
  log_error(NULL, "payment: void of order %s refused by the gateway: %s (needs an operator)",
            p->order_id, res.message);
  p->r.failure_reason = failure_reason(&res);
  if ((st = pay_save(tx, ctx, p, res.message, errbuf, errlen)) != STATUS_OK) return st;
  return emit_failed(tx, ctx, cause, p, PAYMENT_OP_VOID, &res, errbuf, errlen);
}

static status_code do_refund(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                             pay *p, char *errbuf, size_t errlen) {
  payment_gw_result res;
  status_code st =
      gw_call(tx, ctx, p, PAYMENT_OP_REFUND, NULL, p->r.capture_id, &res, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (res.outcome == PAYMENT_GW_TRANSIENT) {
    snprintf(errbuf, errlen, "refunding order %s: the gateway keeps failing: %s", p->order_id,
             res.message);
    return STATUS_UNAVAILABLE;
  }
  if (res.outcome == PAYMENT_GW_APPROVED) {
    p->r.status = PS(REFUNDED);
    snprintf(p->r.refund_id, PAYMENT_REF_MAX, "%s", res.reference);
    if ((st = pay_save(tx, ctx, p, NULL, errbuf, errlen)) != STATUS_OK) return st;
    Shop__Common__V1__Money m;
    money(&m, p);
    Shop__Payment__V1__PaymentRefunded ev = SHOP__PAYMENT__V1__PAYMENT_REFUNDED__INIT;
    ev.order_id = p->order_id;
    ev.customer_id = p->customer_id;
    ev.amount = &m;
    ev.authorization_id = p->r.authorization_id;
    ev.capture_id = p->r.capture_id;
    ev.refund_id = p->r.refund_id;
    return emit(tx, ctx, cause, p->order_id, p->r.version, &ev.base, errbuf, errlen);
  }
  log_error(NULL, "payment: refund of order %s refused by the gateway: %s (needs an operator)",
            p->order_id, res.message);
  p->r.failure_reason = failure_reason(&res);
  if ((st = pay_save(tx, ctx, p, res.message, errbuf, errlen)) != STATUS_OK) return st;
  return emit_failed(tx, ctx, cause, p, PAYMENT_OP_REFUND, &res, errbuf, errlen);
}

/* ---- Operations ---------------------------------------------------------------------------- */

status_code payment_authorize(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                              const payment_order *o, char *errbuf, size_t errlen) {
  pay p;
  status_code st = pay_lock(tx, ctx, o->order_id, &p, errbuf, errlen);
  if (st != STATUS_OK || p.found) return st; /* decided before (or cancelled first) */
  snprintf(p.customer_id, sizeof p.customer_id, "%s", o->customer_id);
  snprintf(p.currency, sizeof p.currency, "%s", o->currency != NULL ? o->currency : "");
  p.r.amount = o->amount;
  if (o->idempotency_key != NULL && o->idempotency_key[0] != '\0')
    snprintf(p.gateway_key, sizeof p.gateway_key, "%s/%s", o->idempotency_key, o->order_id);
  else
    snprintf(p.gateway_key, sizeof p.gateway_key, "order/%s", o->order_id);
  /* The gateway first (idempotent by the order's key), then the row with
   * what it decided: one INSERT, no placeholder to update. Two instances
   * meeting on one order both get the same answer; the second INSERT is a
   * duplicate and its transaction starts again (and finds the row). */
  payment_gw_result res;
  st = gw_call(tx, ctx, &p, PAYMENT_OP_AUTHORIZE, o->token, NULL, &res, errbuf, errlen);
  if (st != STATUS_OK) return st;
  bool approved = res.outcome == PAYMENT_GW_APPROVED;
  p.r.status = approved ? PS(AUTHORIZED) : PS(FAILED);
  p.r.version = 1;
  if (approved)
    snprintf(p.r.authorization_id, PAYMENT_REF_MAX, "%s", res.reference);
  else
    p.r.failure_reason = failure_reason(&res);
  st = pay_insert(tx, ctx, &p, approved ? "" : res.message, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!approved) return emit_failed(tx, ctx, cause, &p, PAYMENT_OP_AUTHORIZE, &res, errbuf, errlen);
  Shop__Common__V1__Money m;
  money(&m, &p);
  Shop__Payment__V1__PaymentAuthorized ev = SHOP__PAYMENT__V1__PAYMENT_AUTHORIZED__INIT;
  ev.order_id = p.order_id;
  ev.customer_id = p.customer_id;
  ev.amount = &m;
  ev.authorization_id = p.r.authorization_id;
  return emit(tx, ctx, cause, p.order_id, p.r.version, &ev.base, errbuf, errlen);
}

status_code payment_capture(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                            const char *order_id, char *errbuf, size_t errlen) {
  pay p;
  status_code st = pay_lock(tx, ctx, order_id, &p, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!p.found || p.r.status != PS(AUTHORIZED)) {
    if (!p.found) log_warn(NULL, "OrderConfirmed for order %s that payment never saw", order_id);
    return STATUS_OK;
  }
  payment_gw_result res;
  st = gw_call(tx, ctx, &p, PAYMENT_OP_CAPTURE, NULL, p.r.authorization_id, &res, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (res.outcome == PAYMENT_GW_APPROVED) {
    p.r.status = PS(CAPTURED);
    snprintf(p.r.capture_id, PAYMENT_REF_MAX, "%s", res.reference);
    if ((st = pay_save(tx, ctx, &p, NULL, errbuf, errlen)) != STATUS_OK) return st;
    Shop__Common__V1__Money m;
    money(&m, &p);
    Shop__Payment__V1__PaymentCaptured ev = SHOP__PAYMENT__V1__PAYMENT_CAPTURED__INIT;
    ev.order_id = p.order_id;
    ev.customer_id = p.customer_id;
    ev.amount = &m;
    ev.authorization_id = p.r.authorization_id;
    ev.capture_id = p.r.capture_id;
    return emit(tx, ctx, cause, p.order_id, p.r.version, &ev.base, errbuf, errlen);
  }
  /* The capture failed for good: say so (the saga cancels the order),
   * then give the hold back. */
  p.r.status = PS(CAPTURE_FAILED);
  p.r.failure_reason = failure_reason(&res);
  if ((st = pay_save(tx, ctx, &p, res.message, errbuf, errlen)) != STATUS_OK) return st;
  if ((st = emit_failed(tx, ctx, cause, &p, PAYMENT_OP_CAPTURE, &res, errbuf, errlen)) != STATUS_OK)
    return st;
  return do_void(tx, ctx, cause, &p, errbuf, errlen);
}

status_code payment_compensate(db_conn *tx, const payment_ctx *ctx, const events_envelope *cause,
                               const char *order_id, char *errbuf, size_t errlen) {
  pay p;
  status_code st = pay_lock(tx, ctx, order_id, &p, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!p.found) {
    /* Cancelled before payment saw the order (only after a dead letter):
     * keep a closed row so that a late OrderCreated authorizes nothing. */
    p.r.status = PS(FAILED);
    return pay_insert(tx, ctx, &p, "cancelled before payment saw the order", errbuf, errlen);
  }
  if (p.r.status == PS(AUTHORIZED) || p.r.status == PS(CAPTURE_FAILED))
    return do_void(tx, ctx, cause, &p, errbuf, errlen);
  if (p.r.status == PS(CAPTURED)) return do_refund(tx, ctx, cause, &p, errbuf, errlen);
  return STATUS_OK;
}

/* ---- The worker ------------------------------------------------------------------------------ */

static const char *created_check(const ProtobufCMessage *m, const events_envelope *ev) {
  const Shop__Order__V1__OrderCreated *e = (const void *)m;
  if (e->total == NULL || strlen(e->order_id) != 36)
    return "OrderCreated without a total or a valid order id";
  return NULL;
}

static status_code created_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  const Shop__Order__V1__OrderCreated *e = (const void *)m->msg;
  payment_order o = {.order_id = e->order_id,
                     .customer_id = e->customer_id,
                     .idempotency_key = e->idempotency_key,
                     .token = e->payment_token,
                     .amount = e->total->units,
                     .currency = e->total->currency};
  return payment_authorize(tx, arg, m->env, &o, errbuf, errlen);
}

static status_code confirmed_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                   size_t errlen) {
  const Shop__Order__V1__OrderConfirmed *e = (const void *)m->msg;
  return payment_capture(tx, arg, m->env, e->order_id, errbuf, errlen);
}

static status_code cancelled_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                   size_t errlen) {
  const Shop__Order__V1__OrderCancelled *e = (const void *)m->msg;
  return payment_compensate(tx, arg, m->env, e->order_id, errbuf, errlen);
}

static const consumer_event_type payment_types[] = {
    {&shop__order__v1__order_created__descriptor, created_check, created_apply, 0},
    {&shop__order__v1__order_confirmed__descriptor, NULL, confirmed_apply, 0},
    {&shop__order__v1__order_cancelled__descriptor, NULL, cancelled_apply, 0},
};

/* The batch's rows are written, and the gateway's answers of the batch
 * made durable before the commit records them: one sync per batch. */
static status_code before_commit_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  const payment_ctx *ctx = arg;
  payment_batch *b = ctx->batch;
  if (b != NULL && atomic_load(&b->tx) == tx) {
    status_code st = batch_write(tx, ctx, b, errbuf, errlen);
    atomic_store(&b->tx, NULL);
    if (st != STATUS_OK) return st;
  }
  if (ctx->gw.sync_cb == NULL) return STATUS_OK;
  status_code st = ctx->gw.sync_cb(ctx->gw.self, errbuf, errlen);
  return st == STATUS_OK ? st : STATUS_UNAVAILABLE;
}

static void ended_cb(db_conn *db, void *arg) {
  const payment_ctx *ctx = arg;
  if (ctx->batch != NULL) atomic_store(&ctx->batch->tx, NULL);
}

const consumer_spec payment_consumer = {.group = TOPOLOGY_GROUP_PAYMENT_WORKER,
                                        .types = payment_types,
                                        .n_types = sizeof payment_types / sizeof payment_types[0],
                                        .prepare = prepare_cb,
                                        .before_commit = before_commit_cb,
                                        .ended = ended_cb};

/* ---- Reading -------------------------------------------------------------------------------- */

status_code payment_row_get(db_conn *c, const char *order_id, payment_row *out, char *errbuf,
                            size_t errlen) {
  db_value v[1] = {DB_STR(order_id)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            "SELECT status, version, amount_units, authorization_id, capture_id, "
                            "refund_id, failure_reason FROM payments WHERE order_id = ?",
                            v, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  memset(out, 0, sizeof *out);
  out->status = (int)db_rows_i64(r, 0);
  out->version = db_rows_i64(r, 1);
  out->amount = db_rows_i64(r, 2);
  snprintf(out->authorization_id, PAYMENT_REF_MAX, "%s", db_rows_str(r, 3, NULL));
  snprintf(out->capture_id, PAYMENT_REF_MAX, "%s", db_rows_str(r, 4, NULL));
  snprintf(out->refund_id, PAYMENT_REF_MAX, "%s", db_rows_str(r, 5, NULL));
  out->failure_reason = (int)db_rows_i64(r, 6);
  db_rows_free(r);
  return STATUS_OK;
}

status_code payment_attempts_count(db_conn *c, const char *order_id, payment_op op, int64_t *count,
                                   char *errbuf, size_t errlen) {
  db_value v[3] = {DB_STR(order_id), DB_I64(op), DB_I64(op)};
  return db_query_i64(c,
                      "SELECT COUNT(*) FROM payment_attempts WHERE order_id = ? AND (? = 0 OR "
                      "operation = ?)",
                      v, 3, count, errbuf, errlen);
}
