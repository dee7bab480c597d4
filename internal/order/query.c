/* order-query: the read model orders_view, built only from order, payment
 * and inventory events, and the handlers of shop.order.v1.OrderQueryService.
 * See order.h.
 *
 * Three parts of a row are set by three independent streams, so each has
 * its own projection version (events/projection.h): "order" (order events,
 * the order's version, which is also orders_view.version and what
 * consistency tokens are compared with), "order.payment" (payment events,
 * the payment's version) and "order.stock" (reservation events, the
 * reservation's version). Each stream's events of one order are in one
 * partition, in order; the projection versions drop duplicates and
 * replays. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check/check.h"
#include "clock/clock.h"
#include "consistency/consistency.h"
#include "handler/handler.h"
#include "log/log.h"
#include "order/order.h"
#include "page/page.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "topology/topology.h"

typedef Shop__Order__V1__OrderQueryService_Service order_query_service;

#define PAY(name) SHOP__PAYMENT__V1__PAYMENT_STATUS__PAYMENT_STATUS_##name
#define RES(name) SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_##name

/* ---- Projection --------------------------------------------------------------------------------
 */

/* Each event is one row of a guarded upsert: the row is made if it is
 * not there (a payment or inventory event ahead of OrderCreated makes a
 * hidden one), and each column of the event's part is set only when the
 * event is newer than that part's version, which moves last (MariaDB
 * assigns left to right, so the guards read the old version); the columns
 * only OrderCreated sets are set once, while created_ms (assigned after
 * them) is still 0. updated_ms takes the newest event time of any part.
 * So the writes of different events commute, and the rows of one kind of
 * event in a consumer transaction go in one multi-row statement with its
 * commit (db_upsert_later): the upserts of a batch run kind by kind, not
 * event by event, and end in the same rows. */
#define GUARD(col, vcol) col " = IF(VALUES(" vcol ") > " vcol ", VALUES(" col "), " col ")"
#define ONCE(col) col " = IF(created_ms = 0, VALUES(" col "), " col ")"
#define TAIL(vcol)                                                                                 \
  "updated_ms = GREATEST(updated_ms, VALUES(updated_ms)), " vcol " = GREATEST(" vcol               \
  ", VALUES(" vcol "))"
#define UPSERT(head, tail, v, errbuf, errlen)                                                      \
  db_upsert_later(tx, "INSERT INTO orders_view " head, "ON DUPLICATE KEY UPDATE " tail, v,         \
                  sizeof v / sizeof v[0], errbuf, errlen)

/* A text column as LEFT(s, max) keeps it. */
static db_value text_left(const char *s, size_t max) {
  return DB_STRN(s != NULL ? s : "", check_utf8_prefix(s, max));
}

static status_code created_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  /* The read model keeps neither the payment token nor the key. */
  Shop__Order__V1__OrderCreated copy = *(const Shop__Order__V1__OrderCreated *)m->msg;
  copy.payment_token = "";
  copy.idempotency_key = "";
  size_t n = protobuf_c_message_get_packed_size(&copy.base);
  uint8_t *buf = malloc(n > 0 ? n : 1);
  if (buf == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  protobuf_c_message_pack(&copy.base, buf);
  int64_t t = events_time_ms(m->env);
  int64_t deadline =
      copy.deadline != NULL ? copy.deadline->seconds * 1000 + copy.deadline->nanos / 1000000 : 0;
  db_value v[10] = {DB_STR(copy.order_id),
                    DB_STR(copy.customer_id),
                    DB_I64(ORDER_ST(PENDING)),
                    DB_I64(copy.total != NULL ? copy.total->units : 0),
                    DB_STR(copy.total != NULL ? copy.total->currency : ""),
                    DB_BLOB(buf, n),
                    DB_I64(t > 0 ? t : 1),
                    DB_I64(deadline),
                    DB_I64(m->env->sequence),
                    DB_I64(t)};
  status_code st = UPSERT(
      "(order_id, customer_id, status, total_units, currency, details, created_ms, deadline_ms,"
      " version, updated_ms)",
      ONCE("customer_id") ", " ONCE("total_units") ", " ONCE("currency") ", " ONCE(
          "details") ", " ONCE("deadline_ms") ", " ONCE("created_ms") ", " GUARD("status", "version")
          ", " TAIL("version"),
      v, errbuf, errlen);
  free(buf); /* db_upsert_later copied it */
  return st;
}

static status_code confirmed_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                   size_t errlen) {
  const Shop__Order__V1__OrderConfirmed *e = (const void *)m->msg;
  db_value v[4] = {DB_STR(e->order_id), DB_I64(ORDER_ST(CONFIRMED)), DB_I64(m->env->sequence),
                   DB_I64(events_time_ms(m->env))};
  return UPSERT("(order_id, status, version, updated_ms)",
                GUARD("status", "version") ", " TAIL("version"), v, errbuf, errlen);
}

static status_code cancelled_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                   size_t errlen) {
  const Shop__Order__V1__OrderCancelled *e = (const void *)m->msg;
  db_value v[6] = {DB_STR(e->order_id),      DB_I64(ORDER_ST(CANCELLED)),
                   DB_I64(e->reason),        text_left(e->reason_text, 2000),
                   DB_I64(m->env->sequence), DB_I64(events_time_ms(m->env))};
  return UPSERT("(order_id, status, cancel_reason, cancel_reason_text, version, updated_ms)",
                GUARD("status", "version") ", " GUARD("cancel_reason", "version") ", " GUARD(
                    "cancel_reason_text", "version") ", " TAIL("version"),
                v, errbuf, errlen);
}

static status_code shipped_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  const Shop__Order__V1__OrderShipped *e = (const void *)m->msg;
  db_value v[6] = {DB_STR(e->order_id),        DB_I64(ORDER_ST(SHIPPED)),
                   text_left(e->carrier, 400), text_left(e->tracking_number, 400),
                   DB_I64(m->env->sequence),   DB_I64(events_time_ms(m->env))};
  return UPSERT("(order_id, status, carrier, tracking_number, version, updated_ms)",
                GUARD("status", "version") ", " GUARD("carrier", "version") ", " GUARD(
                    "tracking_number", "version") ", " TAIL("version"),
                v, errbuf, errlen);
}

/* A payment event that sets its status and one amount column. */
#define PAYMENT_AMOUNT(col)                                                                        \
  UPSERT("(order_id, payment_status, " col ", payment_version, updated_ms)",                       \
         GUARD("payment_status", "payment_version") ", " GUARD(                                    \
             col, "payment_version") ", " TAIL("payment_version"),                                 \
         v, errbuf, errlen)

static status_code authorized_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                    size_t errlen) {
  const Shop__Payment__V1__PaymentAuthorized *e = (const void *)m->msg;
  db_value v[6] = {DB_STR(e->order_id),
                   DB_I64(PAY(AUTHORIZED)),
                   DB_I64(e->amount != NULL ? e->amount->units : 0),
                   DB_STR(e->authorization_id),
                   DB_I64(m->env->sequence),
                   DB_I64(events_time_ms(m->env))};
  return UPSERT(
      "(order_id, payment_status, authorized_units, authorization_id, payment_version,"
      " updated_ms)",
      GUARD("payment_status", "payment_version") ", " GUARD(
          "authorized_units",
          "payment_version") ", " GUARD("authorization_id",
                                        "payment_version") ", " TAIL("payment_version"),
      v, errbuf, errlen);
}

static status_code captured_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Payment__V1__PaymentCaptured *e = (const void *)m->msg;
  db_value v[5] = {DB_STR(e->order_id), DB_I64(PAY(CAPTURED)),
                   DB_I64(e->amount != NULL ? e->amount->units : 0), DB_I64(m->env->sequence),
                   DB_I64(events_time_ms(m->env))};
  return PAYMENT_AMOUNT("captured_units");
}

static status_code refunded_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  const Shop__Payment__V1__PaymentRefunded *e = (const void *)m->msg;
  db_value v[5] = {DB_STR(e->order_id), DB_I64(PAY(REFUNDED)),
                   DB_I64(e->amount != NULL ? e->amount->units : 0), DB_I64(m->env->sequence),
                   DB_I64(events_time_ms(m->env))};
  return PAYMENT_AMOUNT("refunded_units");
}

static status_code voided_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                size_t errlen) {
  const char *id = check_message_string(m->msg, "order_id");
  db_value v[4] = {DB_STR(id), DB_I64(PAY(VOIDED)), DB_I64(m->env->sequence),
                   DB_I64(events_time_ms(m->env))};
  return UPSERT("(order_id, payment_status, payment_version, updated_ms)",
                GUARD("payment_status", "payment_version") ", " TAIL("payment_version"), v, errbuf,
                errlen);
}

static status_code payment_failed_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                        size_t errlen) {
  const Shop__Payment__V1__PaymentFailed *e = (const void *)m->msg;
  int status = 0; /* VOID and REFUND failures keep the status */
  if (e->operation == SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_AUTHORIZE)
    status = PAY(FAILED);
  else if (e->operation == SHOP__PAYMENT__V1__PAYMENT_OPERATION__PAYMENT_OPERATION_CAPTURE)
    status = PAY(CAPTURE_FAILED);
  db_value v[6] = {DB_STR(e->order_id),      DB_I64(status),
                   DB_I64(e->reason),        text_left(e->reason_text, 500),
                   DB_I64(m->env->sequence), DB_I64(events_time_ms(m->env))};
  return UPSERT(
      "(order_id, payment_status, payment_failure_reason, payment_failure_text,"
      " payment_version, updated_ms)",
      "payment_status = IF(VALUES(payment_version) > payment_version AND"
      " VALUES(payment_status) <> 0, VALUES(payment_status), payment_status), " GUARD(
          "payment_failure_reason",
          "payment_version") ", " GUARD("payment_failure_text",
                                        "payment_version") ", " TAIL("payment_version"),
      v, errbuf, errlen);
}

/* A reservation event: its status, and for a rejection the rejected
 * lines (the packed event). */
static status_code stock_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                               size_t errlen) {
  const ProtobufCMessageDescriptor *d = m->msg->descriptor;
  int status = d == &shop__inventory__v1__inventory_reserved__descriptor   ? RES(RESERVED)
               : d == &shop__inventory__v1__inventory_rejected__descriptor ? RES(REJECTED)
               : d == &shop__inventory__v1__inventory_released__descriptor ? RES(RELEASED)
                                                                           : RES(SHIPPED);
  bool rejected = status == RES(REJECTED);
  db_value v[5] = {DB_STR(check_message_string(m->msg, "order_id")), DB_I64(status),
                   rejected ? DB_BLOB(m->env->data.data, m->env->data.len) : DB_NULLV,
                   DB_I64(m->env->sequence), DB_I64(events_time_ms(m->env))};
  return UPSERT("(order_id, stock_status, rejected_lines, stock_version, updated_ms)",
                GUARD("stock_status", "stock_version") ", rejected_lines ="
                                                       " IF(VALUES(stock_version) > stock_version"
                                                       " AND VALUES(rejected_lines) IS NOT NULL,"
                                                       " VALUES(rejected_lines), rejected_lines), " TAIL(
                                                           "stock_version"),
                v, errbuf, errlen);
}

/* Every one of these events has the order id as its first field. */
static const char *order_event_check(const ProtobufCMessage *m, const events_envelope *ev) {
  const char *id = check_message_string(m, "order_id");
  if (id == NULL || !check_id(id) || ev->sequence < 1)
    return "without a valid order id or sequence";
  return NULL;
}

/* Wakes the consistency waits of the orders whose version an order event
 * moved (payment and stock events move no token's version). */
static void projection_committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  order_query_ctx *ctx = arg;
  consistency_notifier_committed(&ctx->notifier, msgs, n, TOPOLOGY_TOPIC_ORDER);
}

static const consumer_event_type projection_types[] = {
    {&shop__order__v1__order_created__descriptor, order_event_check, created_apply, 0},
    {&shop__order__v1__order_confirmed__descriptor, order_event_check, confirmed_apply, 0},
    {&shop__order__v1__order_cancelled__descriptor, order_event_check, cancelled_apply, 0},
    {&shop__order__v1__order_shipped__descriptor, order_event_check, shipped_apply, 0},
    {&shop__payment__v1__payment_authorized__descriptor, order_event_check, authorized_apply, 0},
    {&shop__payment__v1__payment_failed__descriptor, order_event_check, payment_failed_apply, 0},
    {&shop__payment__v1__payment_captured__descriptor, order_event_check, captured_apply, 0},
    {&shop__payment__v1__payment_voided__descriptor, order_event_check, voided_apply, 0},
    {&shop__payment__v1__payment_refunded__descriptor, order_event_check, refunded_apply, 0},
    {&shop__inventory__v1__inventory_reserved__descriptor, order_event_check, stock_apply, 0},
    {&shop__inventory__v1__inventory_rejected__descriptor, order_event_check, stock_apply, 0},
    {&shop__inventory__v1__inventory_released__descriptor, order_event_check, stock_apply, 0},
    {&shop__inventory__v1__inventory_shipped__descriptor, order_event_check, stock_apply, 0},
};

const consumer_spec order_projection_consumer = {
    .group = TOPOLOGY_GROUP_ORDER_QUERY,
    .types = projection_types,
    .n_types = sizeof projection_types / sizeof projection_types[0],
    .committed = projection_committed_cb};

/* ---- Reading ------------------------------------------------------------------------------- */

#define VIEW_COLS                                                                                  \
  "order_id, customer_id, status, total_units, currency, details, payment_status, "                \
  "authorized_units, captured_units, refunded_units, authorization_id, payment_failure_reason, "   \
  "payment_failure_text, stock_status, rejected_lines, cancel_reason, cancel_reason_text, "        \
  "carrier, tracking_number, created_ms, updated_ms, deadline_ms, version"

/* One order with everything its message borrows. */
typedef struct order_out {
  Shop__Order__V1__Order order;
  Shop__Order__V1__OrderPayment payment;
  Shop__Order__V1__OrderStock stock;
  Shop__Common__V1__Money total, authorized, captured, refunded;
  Shop__Common__V1__Timestamp created, updated, deadline;
  Shop__Order__V1__OrderCreated *details;
  Shop__Inventory__V1__InventoryRejected *rejected;
  char order_id[37];
  char customer_id[ORDER_CUSTOMER_MAX + 1];
  char currency[4];
  char authorization_id[65];
  char *failure_text, *cancel_text, *carrier, *tracking;
} order_out;

static void order_out_free(order_out *o) {
  if (o->details != NULL) shop__order__v1__order_created__free_unpacked(o->details, NULL);
  if (o->rejected != NULL)
    shop__inventory__v1__inventory_rejected__free_unpacked(o->rejected, NULL);
  free(o->failure_text);
  free(o->cancel_text);
  free(o->carrier);
  free(o->tracking);
  memset(o, 0, sizeof *o);
}

static bool order_out_fill(order_out *o, const db_rows *r) {
  memset(o, 0, sizeof *o);
  snprintf(o->order_id, sizeof o->order_id, "%s", db_rows_str(r, 0, NULL));
  snprintf(o->customer_id, sizeof o->customer_id, "%s", db_rows_str(r, 1, NULL));
  snprintf(o->currency, sizeof o->currency, "%s", db_rows_str(r, 4, NULL));
  snprintf(o->authorization_id, sizeof o->authorization_id, "%s", db_rows_str(r, 10, NULL));
  o->failure_text = strdup(db_rows_str(r, 12, NULL));
  o->cancel_text = strdup(db_rows_str(r, 16, NULL));
  o->carrier = strdup(db_rows_str(r, 17, NULL));
  o->tracking = strdup(db_rows_str(r, 18, NULL));
  if (o->failure_text == NULL || o->cancel_text == NULL || o->carrier == NULL ||
      o->tracking == NULL)
    return false;
  size_t len = 0;
  const char *blob = db_rows_str(r, 5, &len);
  if (!db_rows_is_null(r, 5))
    o->details = shop__order__v1__order_created__unpack(NULL, len, (const uint8_t *)blob);
  blob = db_rows_str(r, 14, &len);
  if (!db_rows_is_null(r, 14))
    o->rejected = shop__inventory__v1__inventory_rejected__unpack(NULL, len, (const uint8_t *)blob);

  Shop__Order__V1__Order *m = &o->order;
  shop__order__v1__order__init(m);
  m->order_id = o->order_id;
  m->customer_id = o->customer_id;
  m->status = (int)db_rows_i64(r, 2);
  shop__common__v1__money__init(&o->total);
  o->total.units = db_rows_i64(r, 3);
  o->total.currency = o->currency;
  m->total = &o->total;
  if (o->details != NULL) {
    m->n_lines = o->details->n_lines;
    m->lines = o->details->lines;
    m->shipping_address = o->details->shipping_address;
  }
  shop__order__v1__order_payment__init(&o->payment);
  o->payment.status = (int)db_rows_i64(r, 6);
  Shop__Common__V1__Money *amounts[3] = {&o->authorized, &o->captured, &o->refunded};
  Shop__Common__V1__Money **slots[3] = {&o->payment.authorized, &o->payment.captured,
                                        &o->payment.refunded};
  for (int i = 0; i < 3; i++) {
    if (db_rows_is_null(r, 7 + (unsigned)i)) continue;
    shop__common__v1__money__init(amounts[i]);
    amounts[i]->units = db_rows_i64(r, 7 + (unsigned)i);
    amounts[i]->currency = o->currency;
    *slots[i] = amounts[i];
  }
  o->payment.authorization_id = o->authorization_id;
  o->payment.failure_reason = (int)db_rows_i64(r, 11);
  o->payment.failure_text = o->failure_text;
  m->payment = &o->payment;
  shop__order__v1__order_stock__init(&o->stock);
  o->stock.status = (int)db_rows_i64(r, 13);
  if (o->rejected != NULL) {
    o->stock.n_rejected_lines = o->rejected->n_rejected_lines;
    o->stock.rejected_lines = o->rejected->rejected_lines;
  }
  m->stock = &o->stock;
  m->cancel_reason = (int)db_rows_i64(r, 15);
  m->cancel_reason_text = o->cancel_text;
  m->carrier = o->carrier;
  m->tracking_number = o->tracking;
  clock_timestamp_set(&o->created, db_rows_i64(r, 19));
  clock_timestamp_set(&o->updated, db_rows_i64(r, 20));
  m->created_at = &o->created;
  m->updated_at = &o->updated;
  if (db_rows_i64(r, 21) > 0) {
    clock_timestamp_set(&o->deadline, db_rows_i64(r, 21));
    m->deadline = &o->deadline;
  }
  m->version = db_rows_i64(r, 22);
  return true;
}

static status_code view_version(db_conn *c, const char *id, int64_t *version, char *errbuf,
                                size_t errlen) {
  db_value p[1] = {DB_STR(id)};
  status_code st = db_query_i64(c,
                                "SELECT IF(created_ms > 0, version, 0) FROM orders_view WHERE "
                                "order_id = ?",
                                p, 1, version, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    *version = 0;
    return STATUS_OK;
  }
  return st;
}

static int64_t now_ms(const order_query_ctx *ctx) { return clock_now(&ctx->clock); }

static void order_query_get_order(order_query_service *svc,
                                  const Shop__Order__V1__GetOrderRequest *in,
                                  Shop__Order__V1__GetOrderResponse_Closure closure, void *data) {
  rpc_call *call = data;
  order_query_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  order_validate_get_order(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, in->consistency, view_version)) return;
  char err[512];
  db_conn *c = NULL;
  if (!handler_db_get(call, ctx->db, &c)) return;
  status_code st;
  db_value p[1] = {DB_STR(in->order_id)};
  db_rows *r = NULL;
  st = db_query(c, "SELECT " VIEW_COLS " FROM orders_view WHERE order_id = ? AND created_ms > 0", p,
                1, &r, err, sizeof err);
  db_pool_put(ctx->db, c);
  if (st != STATUS_OK) {
    handler_db_failed(call, st, "reading orders_view", err);
    return;
  }
  order_out o;
  bool admin = rpc_call_role(call) == AUTH_ROLE_ADMIN;
  if (!db_rows_next(r) ||
      (!admin && strcmp(db_rows_str(r, 1, NULL), rpc_call_user_id(call)) != 0)) {
    /* Someone else's order looks exactly like one that does not exist. */
    rpc_call_set_status(call, STATUS_NOT_FOUND, "no such order");
  } else if (!order_out_fill(&o, r)) {
    order_out_free(&o);
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    Shop__Order__V1__GetOrderResponse resp = SHOP__ORDER__V1__GET_ORDER_RESPONSE__INIT;
    resp.order = &o.order;
    closure(&resp, data);
    order_out_free(&o);
  }
  db_rows_free(r);
}

/* A list query: the fixed part of its WHERE clause with its parameters,
 * the sort direction, and the filters its page token is bound to. */
typedef struct list_spec {
  const char *where; /* "created_ms > 0 AND ..." */
  db_value params[4];
  size_t nparams;
  bool desc;
  const char *filters;
} list_spec;

/* One page of orders, ready for a response (list_free). */
typedef struct list_page {
  order_out *outs;
  Shop__Order__V1__Order **list;
  size_t n;
  Shop__Common__V1__PageResponse page;
  char next[PAGE_TOKEN_MAX];
} list_page;

static void list_free(list_page *p) {
  for (size_t i = 0; p->outs != NULL && i < p->n; i++) order_out_free(&p->outs[i]);
  free(p->outs);
  free(p->list);
}

/* Runs a list query; true with *out filled, false with the status on the
 * call. */
static bool list_run(rpc_call *call, order_query_ctx *ctx, const list_spec *spec,
                     const Shop__Common__V1__PageRequest *page,
                     const Shop__Common__V1__ReadConsistency *rc, list_page *out) {
  memset(out, 0, sizeof *out);
  int size = 0;
  if (!page_size(call, page, &size)) return false;
  page_pos pos;
  if (!page_token_decode(call, page != NULL ? page->page_token : NULL, spec->filters, &pos))
    return false;
  if (pos.n != 2) pos.n = 0;
  if (!consistency_wait(call, ctx->db, &ctx->notifier, rc, view_version)) return false;

  db_value params[10];
  size_t np = spec->nparams;
  memcpy(params, spec->params, np * sizeof params[0]);
  char count_sql[600], page_sql[1400], where[500];
  snprintf(count_sql, sizeof count_sql, "SELECT COUNT(*) FROM orders_view WHERE %s", spec->where);
  snprintf(where, sizeof where, "%s", spec->where);
  int64_t after_t = 0;
  if (pos.n == 2) {
    after_t = strtoll(pos.field[0], NULL, 10);
    strncat(where,
            spec->desc ? " AND (created_ms < ? OR (created_ms = ? AND order_id < ?))"
                       : " AND (created_ms > ? OR (created_ms = ? AND order_id > ?))",
            sizeof where - strlen(where) - 1);
    params[np++] = DB_I64(after_t);
    params[np++] = DB_I64(after_t);
    params[np++] = DB_STR(pos.field[1]);
  }
  params[np++] = DB_I64(size + 1);
  snprintf(page_sql, sizeof page_sql,
           "SELECT " VIEW_COLS
           " FROM orders_view WHERE %s ORDER BY created_ms %s, order_id %s "
           "LIMIT ?",
           where, spec->desc ? "DESC" : "ASC", spec->desc ? "DESC" : "ASC");

  int64_t total = 0;
  db_rows *r = NULL;
  if (!page_list(call, ctx->db, count_sql, spec->params, spec->nparams, page_sql, params, np,
                 "listing orders_view", &total, &r))
    return false;
  size_t rows = db_rows_count(r);
  size_t n = rows > (size_t)size ? (size_t)size : rows;
  out->outs = calloc(n > 0 ? n : 1, sizeof *out->outs);
  out->list = calloc(n > 0 ? n : 1, sizeof *out->list);
  bool ok = out->outs != NULL && out->list != NULL;
  int64_t last_t = 0;
  for (; ok && out->n < n && db_rows_next(r); out->n++) {
    ok = order_out_fill(&out->outs[out->n], r);
    out->list[out->n] = &out->outs[out->n].order;
    last_t = db_rows_i64(r, 19);
  }
  db_rows_free(r);
  if (!ok) {
    list_free(out);
    memset(out, 0, sizeof *out);
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return false;
  }
  if (rows > (size_t)size && n > 0) {
    page_pos npos = {.n = 2};
    snprintf(npos.field[0], PAGE_FIELD_MAX, "%lld", (long long)last_t);
    snprintf(npos.field[1], PAGE_FIELD_MAX, "%s", out->outs[n - 1].order_id);
    page_token_encode(out->next, spec->filters, &npos);
  }
  shop__common__v1__page_response__init(&out->page);
  out->page.next_page_token = out->next;
  out->page.total_size = total;
  return true;
}

static void order_query_list_orders_by_customer(
    order_query_service *svc, const Shop__Order__V1__ListOrdersByCustomerRequest *in,
    Shop__Order__V1__ListOrdersByCustomerResponse_Closure closure, void *data) {
  rpc_call *call = data;
  order_query_ctx *ctx = rpc_call_service_ctx(call);
  const char *customer = in->customer_id[0] != '\0' ? in->customer_id : rpc_call_user_id(call);
  check_violations v = {0};
  order_validate_list_orders_by_customer(in, rpc_call_user_id(call), &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (strcmp(customer, rpc_call_user_id(call)) != 0 && rpc_call_role(call) != AUTH_ROLE_ADMIN) {
    rpc_call_set_status(call, STATUS_PERMISSION_DENIED,
                        "only an admin may list another customer's orders");
    return;
  }
  char filters[300];
  snprintf(filters, sizeof filters, "orders|customer=%s", customer);
  list_spec spec = {.where = "created_ms > 0 AND customer_id = ?",
                    .params = {DB_STR(customer)},
                    .nparams = 1,
                    .desc = true,
                    .filters = filters};
  list_page p;
  if (!list_run(call, ctx, &spec, in->page, in->consistency, &p)) return;
  Shop__Order__V1__ListOrdersByCustomerResponse resp =
      SHOP__ORDER__V1__LIST_ORDERS_BY_CUSTOMER_RESPONSE__INIT;
  resp.n_orders = p.n;
  resp.orders = p.list;
  resp.page = &p.page;
  closure(&resp, data);
  list_free(&p);
}

static void order_query_list_orders_by_status(
    order_query_service *svc, const Shop__Order__V1__ListOrdersByStatusRequest *in,
    Shop__Order__V1__ListOrdersByStatusResponse_Closure closure, void *data) {
  rpc_call *call = data;
  order_query_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  order_validate_list_orders_by_status(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  char filters[64];
  snprintf(filters, sizeof filters, "orders|status=%d", (int)in->status);
  list_spec spec = {.where = "created_ms > 0 AND status = ?",
                    .params = {DB_I64(in->status)},
                    .nparams = 1,
                    .desc = false,
                    .filters = filters};
  list_page p;
  if (!list_run(call, ctx, &spec, in->page, in->consistency, &p)) return;
  Shop__Order__V1__ListOrdersByStatusResponse resp =
      SHOP__ORDER__V1__LIST_ORDERS_BY_STATUS_RESPONSE__INIT;
  resp.n_orders = p.n;
  resp.orders = p.list;
  resp.page = &p.page;
  closure(&resp, data);
  list_free(&p);
}

static void order_query_list_stuck_orders(order_query_service *svc,
                                          const Shop__Order__V1__ListStuckOrdersRequest *in,
                                          Shop__Order__V1__ListStuckOrdersResponse_Closure closure,
                                          void *data) {
  rpc_call *call = data;
  order_query_ctx *ctx = rpc_call_service_ctx(call);
  int s = (int)in->status;
  check_violations v = {0};
  order_validate_list_stuck_orders(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  char filters[96];
  snprintf(filters, sizeof filters, "stuck|older=%lld|status=%d", (long long)in->older_than_seconds,
           s);
  int64_t cutoff = now_ms(ctx) - in->older_than_seconds * 1000;
  list_spec spec = {.where = "created_ms > 0 AND status IN (?, ?) AND created_ms <= ?",
                    .params = {DB_I64(s != 0 ? s : ORDER_ST(PENDING)),
                               DB_I64(s != 0 ? s : ORDER_ST(CONFIRMED)), DB_I64(cutoff)},
                    .nparams = 3,
                    .desc = false,
                    .filters = filters};
  list_page p;
  if (!list_run(call, ctx, &spec, in->page, in->consistency, &p)) return;
  Shop__Order__V1__ListStuckOrdersResponse resp = SHOP__ORDER__V1__LIST_STUCK_ORDERS_RESPONSE__INIT;
  resp.n_orders = p.n;
  resp.orders = p.list;
  resp.page = &p.page;
  closure(&resp, data);
  list_free(&p);
}

/* ---- Registration ------------------------------------------------------------------------- */

static order_query_service order_query_svc =
    SHOP__ORDER__V1__ORDER_QUERY_SERVICE__INIT(order_query_);

static const rpc_method_policy order_query_policies[] = {
    {"GetOrder", RPC_AUTHENTICATED},
    {"ListOrdersByCustomer", RPC_AUTHENTICATED},
    {"ListOrdersByStatus", RPC_ADMIN},
    {"ListStuckOrders", RPC_ADMIN},
};

status_code order_query_register(rpc_server *s, order_query_ctx *ctx, char *errbuf, size_t errlen) {
  rpc_service_opts o = {.default_policy = RPC_AUTHENTICATED,
                        .policies = order_query_policies,
                        .n_policies = sizeof order_query_policies / sizeof order_query_policies[0],
                        .ctx = ctx};
  return rpc_server_register(s, &order_query_svc.base, &o, errbuf, errlen);
}

void order_query_ctx_init(order_query_ctx *ctx, db_pool *db) {
  memset(ctx, 0, sizeof *ctx);
  ctx->db = db;
  consistency_notifier_init(&ctx->notifier);
}

void order_query_ctx_destroy(order_query_ctx *ctx) { consistency_notifier_destroy(&ctx->notifier); }
