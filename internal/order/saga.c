/* order-command's saga (consumer group "order-saga") and deadline
 * sweeper. See order.h. */
#include <errno.h>
#include <pthread.h>
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

/* ---- One step ---------------------------------------------------------------------------------
 */

status_code order_saga_step_apply(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                                  const char *order_id, order_saga_input in, const char *text,
                                  char *errbuf, size_t errlen) {
  order_row r;
  status_code st = order_row_lock(tx, order_id, &r, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    log_warn(NULL, "saga: an answer (%d) for order %s, which order-command does not have", (int)in,
             order_id);
    return STATUS_OK;
  }
  if (st != STATUS_OK) {
    order_row_free(&r);
    return st;
  }
  order_saga_step step = order_saga_apply(r.state, in);
  if (step.next.status == r.state.status && step.next.stock == r.state.stock &&
      step.next.payment == r.state.payment) {
    order_row_free(&r); /* a repeat, or an answer that comes too late: nothing changes */
    return STATUS_OK;
  }
  int previous = r.state.status;
  r.state = step.next;
  if (step.emit != 0) r.version++;
  st = order_row_save(tx, ctx, &r, step.emit == ORDER_ST(CANCELLED) ? step.cancel_reason : 0, text,
                      NULL, NULL, errbuf, errlen);
  if (st == STATUS_OK && step.emit == ORDER_ST(CONFIRMED))
    st = order_row_lines(tx, &r, errbuf, errlen);
  if (st == STATUS_OK && step.emit == ORDER_ST(CONFIRMED)) {
    order_pb_lines pb;
    if (!order_pb_lines_make(&pb, r.lines, r.n_lines, r.total, r.currency)) {
      snprintf(errbuf, errlen, "out of memory");
      st = STATUS_INTERNAL;
    } else {
      Shop__Order__V1__OrderConfirmed ev = SHOP__ORDER__V1__ORDER_CONFIRMED__INIT;
      ev.order_id = r.order_id;
      ev.customer_id = r.customer_id;
      ev.n_lines = pb.n;
      ev.lines = pb.ptrs;
      ev.total = &pb.total;
      st = outbox_emit(&ctx->sink, tx, origin, r.order_id, r.version, &ev.base, errbuf, errlen);
      order_pb_lines_free(&pb);
    }
    if (st == STATUS_OK) log_info(NULL, "order %s confirmed", r.order_id);
  } else if (st == STATUS_OK && step.emit == ORDER_ST(CANCELLED)) {
    st = order_emit_cancelled(tx, ctx, origin, &r, previous, step.cancel_reason, text, errbuf,
                              errlen);
    if (st == STATUS_OK)
      log_info(NULL, "order %s cancelled (reason %d): %s", r.order_id, step.cancel_reason,
               text != NULL ? text : "");
  }
  order_row_free(&r);
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
                                           .committed = saga_committed_cb};

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
  db_params params;
  char host[256], user[128], password[256], database[128];
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
      db_params p = s->params;
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
  s->params = *params;
  snprintf(s->host, sizeof s->host, "%s", params->host != NULL ? params->host : "");
  snprintf(s->user, sizeof s->user, "%s", params->user != NULL ? params->user : "");
  snprintf(s->password, sizeof s->password, "%s", params->password != NULL ? params->password : "");
  snprintf(s->database, sizeof s->database, "%s", params->database != NULL ? params->database : "");
  s->params.host = s->host;
  s->params.user = s->user;
  s->params.password = s->password;
  s->params.database = s->database;
  pthread_mutex_init(&s->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&s->cv, &a);
  pthread_condattr_destroy(&a);
  if (pthread_create(&s->thread, NULL, sweeper_main, s) != 0) {
    pthread_mutex_destroy(&s->mu);
    pthread_cond_destroy(&s->cv);
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
  memset(s->password, 0, sizeof s->password);
  free(s);
}
