/* order-command's saga (consumer group "order-saga") and deadline
 * sweeper. See order.h. */
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crash/crash.h"
#include "log/log.h"
#include "order/order_internal.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "topology/topology.h"

#define SWEEP_BATCH 100
#define SWEEPER_LOCK "shop.order.sweeper"

/* ---- The batch ---------------------------------------------------------------------------------
 *
 * Within one consumer transaction the saga reads every order its events
 * name with one statement (locked: FOR UPDATE), changes the rows in memory
 * step by step, and writes the changed ones back with one statement before
 * the commit; the lines of confirmed orders are read at once too. A
 * cancellation (rare: it carries a reason text) is written at once. The
 * sweeper and the tests outside a consumer read and write each row on its
 * own.
 */

struct order_saga_batch {
  /* The consumer's connection between prepare and before_commit, else
   * NULL: a step on another connection (the sweeper's thread, a test)
   * never sees the batch. */
  _Atomic(db_conn *) tx;
  order_row *rows;
  bool *dirty;
  size_t n, cap;
};

order_saga_batch *order_saga_batch_new(void) { return calloc(1, sizeof(order_saga_batch)); }

static void batch_clear(order_saga_batch *b) {
  for (size_t i = 0; i < b->n; i++) order_row_free(&b->rows[i]);
  b->n = 0;
  atomic_store(&b->tx, NULL);
}

void order_saga_batch_free(order_saga_batch *b) {
  if (b == NULL) return;
  batch_clear(b);
  free(b->rows);
  free(b->dirty);
  free(b);
}

static order_row *batch_row(order_saga_batch *b, const char *order_id) {
  for (size_t i = 0; i < b->n; i++)
    if (strcmp(b->rows[i].order_id, order_id) == 0) return &b->rows[i];
  return NULL;
}

/* The lines of every row of the batch that has none yet: one statement
 * per DB_KEYS_CHUNK orders. */
typedef struct lines_read {
  order_saga_batch *b;
  bool out_of_memory;
} lines_read;

static bool line_row_cb(db_rows *r, void *arg) {
  lines_read *lr = arg;
  order_row *o = batch_row(lr->b, db_rows_str(r, 0, NULL));
  if (o == NULL) return true;
  if (o->lines == NULL && (o->lines = calloc(db_rows_count(r), sizeof *o->lines)) == NULL) {
    lr->out_of_memory = true;
    return false;
  }
  order_line_parse(r, 1, &o->lines[o->n_lines++]);
  return true;
}

static status_code batch_lines(db_conn *tx, order_saga_batch *b, char *errbuf, size_t errlen) {
  const char *ids[b->n > 0 ? b->n : 1];
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->rows[i].lines == NULL) ids[k++] = b->rows[i].order_id;
  lines_read lr = {.b = b};
  status_code st = db_query_keys(tx,
                                 "SELECT order_id, " ORDER_LINE_COLUMNS
                                 " FROM order_lines WHERE order_id IN (" DB_KEYS_PLACEHOLDERS
                                 ") ORDER BY order_id, line_no",
                                 ids, k, line_row_cb, &lr, errbuf, errlen);
  if (st == STATUS_OK && lr.out_of_memory) {
    snprintf(errbuf, errlen, "out of memory");
    st = STATUS_INTERNAL;
  }
  return st;
}

static bool saga_row_cb(db_rows *r, void *arg) {
  order_saga_batch *b = arg;
  if (b->n >= b->cap) return false;
  order_row_parse(r, &b->rows[b->n]);
  b->dirty[b->n++] = false;
  return true;
}

/* Reads and locks every order the batch's events name, in one statement
 * per DB_KEYS_CHUNK orders. */
static status_code saga_prepare_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                                   char *errbuf, size_t errlen) {
  const order_ctx *ctx = arg;
  order_saga_batch *b = ctx->saga;
  if (b == NULL) return STATUS_OK;
  batch_clear(b);
  const char *ids[n > 0 ? n : 1];
  size_t k = consumer_batch_keys(msgs, n, NULL, "order_id", CHECK_ID_SIZE - 1, ids);
  if (k > b->cap) {
    order_row *rows = realloc(b->rows, k * sizeof *rows);
    if (rows != NULL) b->rows = rows;
    bool *dirty = rows != NULL ? realloc(b->dirty, k * sizeof *dirty) : NULL;
    if (dirty != NULL) b->dirty = dirty;
    if (rows == NULL || dirty == NULL) return STATUS_OK; /* row by row, then */
    b->cap = k;
  }
  status_code st = db_query_keys(tx,
                                 "SELECT " ORDER_ROW_COLUMNS
                                 " FROM orders WHERE order_id IN (" DB_KEYS_PLACEHOLDERS
                                 ") ORDER BY order_id FOR UPDATE",
                                 ids, k, saga_row_cb, b, errbuf, errlen);
  if (st != STATUS_OK) {
    batch_clear(b);
    return st;
  }
  atomic_store(&b->tx, tx);
  return STATUS_OK;
}

static db_value saga_column_cb(size_t row, size_t col, void *arg) {
  const order_row *r = ((const order_row **)arg)[row];
  return DB_I64(col == 0   ? r->state.status
                : col == 1 ? (int64_t)r->state.stock
                : col == 2 ? (int64_t)r->state.payment
                           : r->version);
}

/* Writes the changed rows of the batch back: one UPDATE per DB_KEYS_CHUNK
 * rows, each column a CASE over the order ids (padded with the first
 * row, which writes it twice with the same values). */
static status_code saga_before_commit_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  const order_ctx *ctx = arg;
  order_saga_batch *b = ctx->saga;
  if (b == NULL || atomic_load(&b->tx) != tx) return STATUS_OK;
  const char *ids[b->n > 0 ? b->n : 1];
  const order_row *dirty[b->n > 0 ? b->n : 1];
  size_t k = 0;
  for (size_t i = 0; i < b->n; i++)
    if (b->dirty[i]) {
      ids[k] = b->rows[i].order_id;
      dirty[k++] = &b->rows[i];
    }
  static const char *const cols[] = {"status", "stock_state", "payment_state", "version"};
  status_code st = db_update_keys(tx, "orders", "order_id", cols, 4, ids, k, saga_column_cb, dirty,
                                  order_now_ms(ctx), errbuf, errlen);
  if (st != STATUS_OK) return st;
  /* Nothing is applied after this: a step from now on (the sweeper's, a
   * test's) reads and writes its row itself. */
  atomic_store(&b->tx, NULL);
  return STATUS_OK;
}

static void saga_ended_cb(db_conn *db, void *arg) {
  const order_ctx *ctx = arg;
  if (ctx->saga != NULL) batch_clear(ctx->saga);
}

/* ---- One step ---------------------------------------------------------------------------------
 */

status_code order_saga_step_apply(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                                  const char *order_id, order_saga_input in, const char *text,
                                  char *errbuf, size_t errlen) {
  order_saga_batch *b = ctx->saga != NULL && atomic_load(&ctx->saga->tx) == tx ? ctx->saga : NULL;
  order_row own = {0}, *r = &own;
  status_code st = STATUS_NOT_FOUND;
  if (b != NULL) {
    if ((r = batch_row(b, order_id)) != NULL) st = STATUS_OK;
  } else {
    st = order_row_lock(tx, order_id, &own, errbuf, errlen);
  }
  if (st == STATUS_NOT_FOUND) {
    log_warn(NULL, "saga: an answer (%d) for order %s, which order-command does not have", (int)in,
             order_id);
    return STATUS_OK;
  }
  if (st != STATUS_OK) {
    order_row_free(&own);
    return st;
  }
  order_saga_step step = order_saga_apply(r->state, in);
  if (step.next.status == r->state.status && step.next.stock == r->state.stock &&
      step.next.payment == r->state.payment) {
    order_row_free(&own); /* a repeat, or an answer that comes too late: nothing changes */
    return STATUS_OK;
  }
  int previous = r->state.status;
  r->state = step.next;
  if (step.emit != 0) r->version++;
  if (b != NULL && step.emit != ORDER_ST(CANCELLED)) {
    b->dirty[r - b->rows] = true; /* written in saga_before_commit_cb */
  } else {
    st = order_row_save(tx, ctx, r, step.emit == ORDER_ST(CANCELLED) ? step.cancel_reason : 0, text,
                        NULL, NULL, errbuf, errlen);
    if (b != NULL) b->dirty[r - b->rows] = false;
  }
  if (st == STATUS_OK && step.emit == ORDER_ST(CONFIRMED))
    st = b != NULL ? batch_lines(tx, b, errbuf, errlen) : order_row_lines(tx, r, errbuf, errlen);
  if (st == STATUS_OK && step.emit == ORDER_ST(CONFIRMED)) {
    order_pb_lines pb;
    if (!order_pb_lines_make(&pb, r->lines, r->n_lines, r->total, r->currency)) {
      snprintf(errbuf, errlen, "out of memory");
      st = STATUS_INTERNAL;
    } else {
      Shop__Order__V1__OrderConfirmed ev = SHOP__ORDER__V1__ORDER_CONFIRMED__INIT;
      ev.order_id = r->order_id;
      ev.customer_id = r->customer_id;
      ev.n_lines = pb.n;
      ev.lines = pb.ptrs;
      ev.total = &pb.total;
      st = outbox_emit(&ctx->sink, tx, origin, r->order_id, r->version, &ev.base, errbuf, errlen);
      order_pb_lines_free(&pb);
    }
    if (st == STATUS_OK) log_info(NULL, "order %s confirmed", r->order_id);
  } else if (st == STATUS_OK && step.emit == ORDER_ST(CANCELLED)) {
    st = order_emit_cancelled(tx, ctx, origin, r, previous, step.cancel_reason, text, errbuf,
                              errlen);
    if (st == STATUS_OK)
      log_info(NULL, "order %s cancelled (reason %d): %s", r->order_id, step.cancel_reason,
               text != NULL ? text : "");
  }
  order_row_free(&own);
  return st;
}

/* ---- The consumer --------------------------------------------------------------------------- */

static const char *reject_reason_text(int reason) {
  switch (reason) {
  case SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_OUT_OF_STOCK:
    return "out of stock";
  case SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_UNKNOWN_PRODUCT:
    return "unknown product";
  case SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_PRODUCT_ARCHIVED:
    return "archived";
  case SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_QUANTITY_LIMIT_EXCEEDED:
    return "over the per-order limit";
  default:
    return "rejected";
  }
}

/* "product <id>: out of stock (asked 2, available 1); ..." */
static void rejected_text(const Shop__Inventory__V1__InventoryRejected *e, char *out, size_t len) {
  size_t o = 0;
  out[0] = '\0';
  for (size_t i = 0; i < e->n_rejected_lines && o + 1 < len; i++) {
    const Shop__Inventory__V1__RejectedLine *l = e->rejected_lines[i];
    int w = snprintf(out + o, len - o, "%sproduct %s: %s (asked %d, available %lld)",
                     i > 0 ? "; " : "", l->product_id, reject_reason_text(l->reason),
                     (int)l->requested, (long long)l->available);
    if (w < 0) break;
    o += (size_t)w < len - o ? (size_t)w : len - o - 1;
  }
}

/* One saga step for the event m, caused by it. */
static status_code step(db_conn *tx, const consumer_msg *m, void *arg, order_saga_input in,
                        const char *order_id, const char *text, char *errbuf, size_t errlen) {
  const order_ctx *ctx = arg;
  outbox_cause cause = outbox_cause_of_event(m->env);
  return order_saga_step_apply(tx, ctx, &cause, order_id, in, text, errbuf, errlen);
}

static status_code reserved_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Inventory__V1__InventoryReserved *e = (const void *)m->msg;
  return step(tx, m, arg, ORDER_SAGA_RESERVED, e->order_id, NULL, errbuf, errlen);
}

static status_code rejected_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Inventory__V1__InventoryRejected *e = (const void *)m->msg;
  char text[1500];
  rejected_text(e, text, sizeof text);
  return step(tx, m, arg, ORDER_SAGA_REJECTED, e->order_id, text, errbuf, errlen);
}

static status_code authorized_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                    size_t errlen) {
  const Shop__Payment__V1__PaymentAuthorized *e = (const void *)m->msg;
  return step(tx, m, arg, ORDER_SAGA_AUTHORIZED, e->order_id, NULL, errbuf, errlen);
}

static status_code captured_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Payment__V1__PaymentCaptured *e = (const void *)m->msg;
  return step(tx, m, arg, ORDER_SAGA_CAPTURED, e->order_id, NULL, errbuf, errlen);
}

/* A failed authorization or capture moves the order; a failed void or
 * refund (an operator's matter) does not. */
static status_code failed_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                size_t errlen) {
  const Shop__Payment__V1__PaymentFailed *e = (const void *)m->msg;
  order_saga_input in = 0;
  if (e->operation == SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_AUTHORIZE)
    in = ORDER_SAGA_AUTH_FAILED;
  else if (e->operation == SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_CAPTURE)
    in = ORDER_SAGA_CAPTURE_FAILED;
  if (in == 0) return STATUS_OK;
  char text[400];
  snprintf(text, sizeof text, "payment %s failed: %s",
           in == ORDER_SAGA_AUTH_FAILED ? "authorization" : "capture",
           e->reason_text[0] != '\0' ? e->reason_text : "declined");
  return step(tx, m, arg, in, e->order_id, text, errbuf, errlen);
}

/* The saga's step committed (with its outbox rows, if it moved the order
 * on); the consumer wakes the relay right after this. */
static void saga_committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  crash_point("saga.after_commit");
}

static const consumer_event_type saga_types[] = {
    {&shop__inventory__v1__inventory_reserved__descriptor, NULL, reserved_apply, 0},
    {&shop__inventory__v1__inventory_rejected__descriptor, NULL, rejected_apply, 0},
    {&shop__payment__v1__payment_authorized__descriptor, NULL, authorized_apply, 0},
    {&shop__payment__v1__payment_captured__descriptor, NULL, captured_apply, 0},
    {&shop__payment__v1__payment_failed__descriptor, NULL, failed_apply, 0},
};

const consumer_spec order_saga_consumer = {.group = TOPOLOGY_GROUP_ORDER_SAGA,
                                           .types = saga_types,
                                           .n_types = sizeof saga_types / sizeof saga_types[0],
                                           .committed = saga_committed_cb,
                                           .prepare = saga_prepare_cb,
                                           .before_commit = saga_before_commit_cb,
                                           .ended = saga_ended_cb};

/* ---- The sweeper ------------------------------------------------------------------------------
 */

typedef struct sweep_arg {
  const order_ctx *ctx;
  const char *order_id;
  int64_t now_ms;
  bool cancelled;
  char traceparent[LOG_TRACEPARENT_SIZE]; /* the order's, for the log after the commit */
} sweep_arg;

static status_code sweep_one_cb(db_conn *c, void *arg, char *errbuf, size_t errlen) {
  sweep_arg *a = arg;
  order_row r;
  /* Look again under the lock: the order may have moved on since the
   * scan. */
  status_code st = order_row_lock(c, a->order_id, &r, errbuf, errlen);
  bool due = st == STATUS_OK && r.state.status == ORDER_ST(PENDING) && r.deadline_ms <= a->now_ms;
  order_row_free(&r);
  if (st == STATUS_NOT_FOUND) return STATUS_OK;
  if (st != STATUS_OK || !due) return st;
  /* The cancellation continues the trace the order was created under
   * (a new one for orders older than that column). */
  if (r.traceparent[0] != '\0')
    snprintf(a->traceparent, sizeof a->traceparent, "%s", r.traceparent);
  else
    log_traceparent_child(NULL, a->traceparent);
  log_scope scope;
  log_scope_enter(&scope, NULL, a->traceparent, NULL);
  outbox_cause origin = {.correlation_id = a->order_id, .traceparent = a->traceparent};
  char text[160];
  snprintf(text, sizeof text, "no answer from inventory or payment before the order's deadline");
  st = order_saga_step_apply(c, a->ctx, &origin, a->order_id, ORDER_SAGA_DEADLINE, text, errbuf,
                             errlen);
  log_scope_leave(&scope);
  a->cancelled = st == STATUS_OK;
  return st;
}

status_code order_sweep(db_conn *c, const order_ctx *ctx, int64_t now_ms, int *cancelled,
                        char *errbuf, size_t errlen) {
  if (cancelled != NULL) *cancelled = 0;
  db_value v[2] = {DB_I64(ORDER_ST(PENDING)), DB_I64(now_ms)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            "SELECT order_id FROM orders WHERE status = ? AND deadline_ms <= ? "
                            "ORDER BY deadline_ms LIMIT 100",
                            v, 2, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  char ids[SWEEP_BATCH][37];
  size_t n = 0;
  while (n < SWEEP_BATCH && db_rows_next(r)) snprintf(ids[n++], 37, "%s", db_rows_str(r, 0, NULL));
  db_rows_free(r);
  for (size_t i = 0; i < n; i++) {
    sweep_arg a = {.ctx = ctx, .order_id = ids[i], .now_ms = now_ms};
    st = db_tx_run(c, sweep_one_cb, &a, 4, errbuf, errlen);
    if (st != STATUS_OK) return st;
    if (a.cancelled) {
      if (ctx->sink.committed_cb != NULL) ctx->sink.committed_cb(ctx->sink.self);
      char trace[LOG_TRACE_ID_SIZE];
      log_trace_id(a.traceparent, trace);
      log_info(&(log_ctx){.trace_id = trace}, "sweeper: order %s cancelled, its deadline passed",
               ids[i]);
      if (cancelled != NULL) (*cancelled)++;
    }
  }
  return STATUS_OK;
}

struct order_sweeper {
  const order_ctx *ctx;
  db_params_copy params; /* params.p: the sweeper's connection's */
  int interval_ms;
  pthread_t thread;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
};

static void *sweeper_main(void *arg) {
  order_sweeper *s = arg;
  db_conn *c = NULL;
  bool holder = false;
  char err[512];
  for (;;) {
    pthread_mutex_lock(&s->mu);
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += s->interval_ms / 1000;
    until.tv_nsec += (long)(s->interval_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
      until.tv_sec++;
      until.tv_nsec -= 1000000000L;
    }
    while (!s->stop && pthread_cond_timedwait(&s->cv, &s->mu, &until) != ETIMEDOUT) {
    }
    bool stop = s->stop;
    pthread_mutex_unlock(&s->mu);
    if (stop) break;

    if (c == NULL) {
      db_params p = s->params.p;
      p.connect_retry_ms = 0;
      if (db_connect(&c, &p, err, sizeof err) != STATUS_OK) {
        c = NULL;
        continue;
      }
      holder = false;
    }
    if (!holder) {
      bool got = false;
      if (db_lock_try(c, SWEEPER_LOCK, 0, &got, err, sizeof err) != STATUS_OK) {
        db_close(c);
        c = NULL;
        continue;
      }
      if (!got) continue; /* another instance sweeps */
      holder = true;
      log_info(NULL, "sweeper: this instance sweeps expired orders");
    }
    int cancelled = 0;
    status_code st = order_sweep(c, s->ctx, order_now_ms(s->ctx), &cancelled, err, sizeof err);
    if (st != STATUS_OK) {
      log_warn(NULL, "sweeper: %s: %s", status_name(st), err);
      /* A lost link also lost the lock: start over with a new one. */
      if (st == STATUS_UNAVAILABLE) {
        db_close(c);
        c = NULL;
      }
    }
  }
  if (c != NULL) {
    if (holder) db_lock_release(c, SWEEPER_LOCK, err, sizeof err);
    db_close(c);
  }
  return NULL;
}

status_code order_sweeper_start(order_sweeper **out, const order_ctx *ctx, const db_params *params,
                                int interval_ms, char *errbuf, size_t errlen) {
  order_sweeper *s = calloc(1, sizeof *s);
  if (s == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  s->ctx = ctx;
  s->interval_ms = interval_ms > 0 ? interval_ms : 1000;
  if (!db_params_dup(&s->params, params)) {
    free(s);
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &a);
  pthread_condattr_destroy(&a);
  if (pthread_create(&s->thread, NULL, sweeper_main, s) != 0) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
    db_params_copy_free(&s->params);
    free(s);
    snprintf(errbuf, errlen, "cannot start the sweeper thread");
    return STATUS_INTERNAL;
  }
  *out = s;
  return STATUS_OK;
}

void order_sweeper_stop(order_sweeper *s) {
  if (s == NULL) return;
  pthread_mutex_lock(&s->mu);
  s->stop = true;
  pthread_cond_signal(&s->cv);
  pthread_mutex_unlock(&s->mu);
  pthread_join(s->thread, NULL);
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
  db_params_copy_free(&s->params);
  free(s);
}
