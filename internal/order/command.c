/* order-command: the orders table, order events, and the handlers of
 * shop.order.v1.OrderCommandService. See order.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check/check.h"
#include "clock/clock.h"
#include "command/command.h"
#include "consistency/consistency.h"
#include "events/events.h"
#include "handler/handler.h"
#include "log/log.h"
#include "order/order_internal.h"
#include "topology/topology.h"

typedef Shop__Order__V1__OrderCommandService_Service order_cmd_service;

/* ---- Context ------------------------------------------------------------------------------ */

int64_t order_now_ms(const order_ctx *ctx) { return clock_now(&ctx->clock); }

void order_ctx_init(order_ctx *ctx, const shop_cfg *cfg, const char *program, db_pool *db,
                    outbox_relay *relay, order_catalog catalog) {
  memset(ctx, 0, sizeof *ctx);
  ctx->program = program;
  ctx->currency = cfg != NULL ? cfg->catalog.currency : "EUR";
  ctx->db = db;
  ctx->relay = relay;
  ctx->sink = outbox_sink_of(relay, program);
  ctx->catalog = catalog;
  ctx->deadline_ms = (cfg != NULL ? cfg->order.deadline_s : 900) * (int64_t)1000;
  ctx->saga = order_saga_batch_new();
}

void order_ctx_destroy(order_ctx *ctx) {
  order_saga_batch_free(ctx->saga);
  ctx->saga = NULL;
}

/* ---- Rows and events ---------------------------------------------------------------------- */

void order_row_parse(db_rows *r, order_row *out) {
  memset(out, 0, sizeof *out);
  snprintf(out->order_id, sizeof out->order_id, "%s", db_rows_str(r, 0, NULL));
  snprintf(out->customer_id, sizeof out->customer_id, "%s", db_rows_str(r, 1, NULL));
  out->state.status = (int)db_rows_i64(r, 2);
  out->state.stock = (order_stock_state)db_rows_i64(r, 3);
  out->state.payment = (order_payment_state)db_rows_i64(r, 4);
  out->version = db_rows_i64(r, 5);
  out->total = db_rows_i64(r, 6);
  snprintf(out->currency, sizeof out->currency, "%s", db_rows_str(r, 7, NULL));
  out->deadline_ms = db_rows_i64(r, 8);
  snprintf(out->traceparent, sizeof out->traceparent, "%s", db_rows_str(r, 9, NULL));
}

status_code order_row_lock(db_conn *tx, const char *order_id, order_row *out, char *errbuf,
                           size_t errlen) {
  memset(out, 0, sizeof *out);
  db_value v[1] = {DB_STR(order_id)};
  db_rows *r = NULL;
  status_code st =
      db_query(tx, "SELECT " ORDER_ROW_COLUMNS " FROM orders WHERE order_id = ? FOR UPDATE", v, 1,
               &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return STATUS_NOT_FOUND;
  }
  order_row_parse(r, out);
  db_rows_free(r);
  return STATUS_OK;
}

status_code order_row_lines(db_conn *tx, order_row *out, char *errbuf, size_t errlen) {
  if (out->lines != NULL) return STATUS_OK;
  db_value v[1] = {DB_STR(out->order_id)};
  db_rows *r = NULL;
  status_code st = db_query(
      tx, "SELECT " ORDER_LINE_COLUMNS " FROM order_lines WHERE order_id = ? ORDER BY line_no", v,
      1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  size_t n = db_rows_count(r);
  out->lines = calloc(n > 0 ? n : 1, sizeof *out->lines);
  if (out->lines == NULL) {
    db_rows_free(r);
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  for (size_t i = 0; i < n && db_rows_next(r); i++) {
    order_line_parse(r, 0, &out->lines[i]);
    out->n_lines++;
  }
  db_rows_free(r);
  return STATUS_OK;
}

void order_line_parse(db_rows *r, size_t col, order_line *l) {
  snprintf(l->product_id, sizeof l->product_id, "%s", db_rows_str(r, col, NULL));
  l->quantity = (int32_t)db_rows_i64(r, col + 1);
  l->unit_price = db_rows_i64(r, col + 2);
  l->line_total = db_rows_i64(r, col + 3);
  snprintf(l->sku, sizeof l->sku, "%s", db_rows_str(r, col + 4, NULL));
  snprintf(l->name, sizeof l->name, "%s", db_rows_str(r, col + 5, NULL));
}

void order_row_free(order_row *r) {
  free(r->lines);
  r->lines = NULL;
  r->n_lines = 0;
}

status_code order_row_save(db_conn *tx, const order_ctx *ctx, const order_row *r, int cancel_reason,
                           const char *cancel_text, const char *carrier, const char *tracking,
                           char *errbuf, size_t errlen) {
  /* One statement whatever changes: the cancel reason and the shipping
   * details only when given. */
  int ship = carrier != NULL || tracking != NULL;
  db_value v[14] = {DB_I64(r->state.status),
                    DB_I64(r->state.stock),
                    DB_I64(r->state.payment),
                    DB_I64(r->version),
                    DB_I64(order_now_ms(ctx)),
                    DB_I64(cancel_reason),
                    DB_I64(cancel_reason),
                    DB_I64(cancel_reason),
                    DB_STR(cancel_text != NULL ? cancel_text : ""),
                    DB_I64(ship),
                    DB_STR(carrier != NULL ? carrier : ""),
                    DB_I64(ship),
                    DB_STR(tracking != NULL ? tracking : ""),
                    DB_STR(r->order_id)};
  return db_exec(tx,
                 "UPDATE orders SET status = ?, stock_state = ?, payment_state = ?, version = ?,"
                 " updated_ms = ?, cancel_reason = IF(? <> 0, ?, cancel_reason),"
                 " cancel_reason_text = IF(? <> 0, LEFT(?, 2000), cancel_reason_text),"
                 " carrier = IF(? <> 0, ?, carrier), tracking_number = IF(? <> 0, ?,"
                 " tracking_number) WHERE order_id = ?",
                 v, 14, NULL, NULL, errbuf, errlen);
}

bool order_pb_lines_make(order_pb_lines *pb, const order_line *lines, size_t n, int64_t total,
                         const char *currency) {
  memset(pb, 0, sizeof *pb);
  pb->n = n;
  pb->lines = calloc(n > 0 ? n : 1, sizeof *pb->lines);
  pb->ptrs = calloc(n > 0 ? n : 1, sizeof *pb->ptrs);
  pb->money = calloc(n > 0 ? 2 * n : 1, sizeof *pb->money);
  if (pb->lines == NULL || pb->ptrs == NULL || pb->money == NULL) {
    order_pb_lines_free(pb);
    return false;
  }
  for (size_t i = 0; i < n; i++) {
    Shop__Order__V1__OrderLine *l = &pb->lines[i];
    shop__order__v1__order_line__init(l);
    Shop__Common__V1__Money *unit = &pb->money[2 * i], *line = &pb->money[2 * i + 1];
    shop__common__v1__money__init(unit);
    shop__common__v1__money__init(line);
    unit->units = lines[i].unit_price;
    unit->currency = (char *)currency;
    line->units = lines[i].line_total;
    line->currency = (char *)currency;
    l->product_id = (char *)lines[i].product_id;
    l->quantity = lines[i].quantity;
    l->unit_price = unit;
    l->line_total = line;
    l->sku = (char *)lines[i].sku;
    l->product_name = (char *)lines[i].name;
    pb->ptrs[i] = l;
  }
  shop__common__v1__money__init(&pb->total);
  pb->total.units = total;
  pb->total.currency = (char *)currency;
  return true;
}

void order_pb_lines_free(order_pb_lines *pb) {
  free(pb->lines);
  free(pb->ptrs);
  free(pb->money);
  memset(pb, 0, sizeof *pb);
}

status_code order_emit_cancelled(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                                 order_row *r, int previous_status, int reason, const char *text,
                                 char *errbuf, size_t errlen) {
  status_code st = order_row_lines(tx, r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  order_pb_lines pb;
  if (!order_pb_lines_make(&pb, r->lines, r->n_lines, r->total, r->currency)) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  Shop__Order__V1__OrderCancelled ev = SHOP__ORDER__V1__ORDER_CANCELLED__INIT;
  ev.order_id = (char *)r->order_id;
  ev.customer_id = (char *)r->customer_id;
  ev.reason = reason;
  ev.reason_text = (char *)(text != NULL ? text : "");
  ev.previous_status = previous_status;
  ev.n_lines = pb.n;
  ev.lines = pb.ptrs;
  ev.total = &pb.total;
  st = outbox_emit(&ctx->sink, tx, origin, r->order_id, r->version, &ev.base, errbuf, errlen);
  order_pb_lines_free(&pb);
  return st;
}

/* ---- Operations ---------------------------------------------------------------------------- */

status_code order_place(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                        const order_new *n, char order_id[37], int64_t *deadline_ms, char *errbuf,
                        size_t errlen) {
  events_uuid_v7(order_id);
  int64_t now = order_now_ms(ctx);
  int64_t deadline = now + ctx->deadline_ms;
  *deadline_ms = deadline;
  uint8_t addr[4096];
  size_t addr_len = 0;
  if (n->address != NULL) {
    addr_len = protobuf_c_message_get_packed_size(&n->address->base);
    if (addr_len > sizeof addr) {
      snprintf(errbuf, errlen, "shipping address too large");
      return STATUS_INTERNAL;
    }
    shop__order__v1__shipping_address__pack(n->address, addr);
  }
  /* The trace the order was created under, for the sweeper (log.h). */
  const char *tp = origin != NULL && origin->traceparent != NULL && origin->traceparent[0] != '\0'
                       ? origin->traceparent
                       : log_current_traceparent();
  db_value v[12] = {DB_STR(order_id),
                    DB_STR(n->customer_id),
                    DB_I64(ORDER_ST(PENDING)),
                    DB_I64(n->total),
                    DB_STR(ctx->currency),
                    DB_STR(n->payment_token),
                    DB_BLOB(addr, addr_len),
                    DB_STR(n->idempotency_key),
                    DB_I64(deadline),
                    DB_I64(now),
                    DB_I64(now),
                    DB_STR(tp)};
  status_code st = db_exec(tx,
                           "INSERT INTO orders (order_id, customer_id, status, version, "
                           "total_units, currency, payment_token, shipping, idempotency_key, "
                           "deadline_ms, created_ms, updated_ms, traceparent) VALUES (?, ?, ?, 1, "
                           "?, ?, ?, ?, ?, ?, ?, ?, LEFT(?, 55))",
                           v, 12, NULL, NULL, errbuf, errlen);
  if (st != STATUS_OK) return st;
  for (size_t i = 0; i < n->n_lines; i++) {
    const order_line *l = &n->lines[i];
    db_value lv[8] = {DB_STR(order_id),      DB_I64(i),
                      DB_STR(l->product_id), DB_I64(l->quantity),
                      DB_I64(l->unit_price), DB_I64(l->line_total),
                      DB_STR(l->sku),        DB_STR(l->name)};
    /* Nothing reads them in this transaction: sent with the commit, one
     * statement for every line. */
    st = db_insert_later(tx,
                         "INSERT INTO order_lines (order_id, line_no, product_id, quantity,"
                         " unit_price, line_total, sku, product_name)",
                         lv, 8, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  order_pb_lines pb;
  if (!order_pb_lines_make(&pb, n->lines, n->n_lines, n->total, ctx->currency)) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  Shop__Common__V1__Timestamp dl;
  clock_timestamp_set(&dl, deadline);
  Shop__Order__V1__OrderCreated ev = SHOP__ORDER__V1__ORDER_CREATED__INIT;
  ev.order_id = order_id;
  ev.customer_id = (char *)n->customer_id;
  ev.n_lines = pb.n;
  ev.lines = pb.ptrs;
  ev.total = &pb.total;
  ev.payment_token = (char *)n->payment_token;
  ev.shipping_address = (order_address *)n->address;
  ev.idempotency_key = (char *)n->idempotency_key;
  ev.deadline = &dl;
  st = outbox_emit(&ctx->sink, tx, origin, order_id, 1, &ev.base, errbuf, errlen);
  order_pb_lines_free(&pb);
  return st;
}

status_code order_cancel(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                         const order_who *who, const char *order_id, const char *reason_text,
                         command_outcome *out, int64_t *version, char *errbuf, size_t errlen) {
  order_row r;
  status_code st = order_row_lock(tx, order_id, &r, errbuf, errlen);
  if (st == STATUS_NOT_FOUND ||
      (st == STATUS_OK && !who->admin && strcmp(r.customer_id, who->user_id) != 0)) {
    /* Someone else's order looks exactly like one that does not exist. */
    order_row_free(&r);
    command_fail(out, STATUS_NOT_FOUND, "order_id", "no such order");
    return STATUS_OK;
  }
  if (st != STATUS_OK) {
    order_row_free(&r);
    return st;
  }
  char msg[200];
  if (!order_cancel_allowed(&r.state, msg, sizeof msg)) {
    command_fail(out, STATUS_FAILED_PRECONDITION, "order_id", "%s", msg);
    *version = r.version;
    order_row_free(&r);
    return STATUS_OK;
  }
  int previous = r.state.status;
  int reason = strcmp(r.customer_id, who->user_id) == 0 ? ORDER_CANCEL(CUSTOMER_REQUESTED)
                                                        : ORDER_CANCEL(ADMIN_REQUESTED);
  r.state.status = ORDER_ST(CANCELLED);
  r.version++;
  st = order_row_save(tx, ctx, &r, reason, reason_text, NULL, NULL, errbuf, errlen);
  if (st == STATUS_OK)
    st = order_emit_cancelled(tx, ctx, origin, &r, previous, reason, reason_text, errbuf, errlen);
  *version = r.version;
  order_row_free(&r);
  return st;
}

status_code order_ship(db_conn *tx, const order_ctx *ctx, const outbox_cause *origin,
                       const char *order_id, const char *carrier, const char *tracking,
                       command_outcome *out, int64_t *version, char *errbuf, size_t errlen) {
  order_row r;
  status_code st = order_row_lock(tx, order_id, &r, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    command_fail(out, STATUS_NOT_FOUND, "order_id", "no such order");
    return STATUS_OK;
  }
  if (st != STATUS_OK) {
    order_row_free(&r);
    return st;
  }
  char msg[200];
  status_code allowed = order_ship_allowed(&r.state, msg, sizeof msg);
  if (allowed != STATUS_OK) {
    command_fail(out, allowed, "order_id", "%s", msg);
    if (allowed == STATUS_UNAVAILABLE) out->retry_delay_ms = 200;
    *version = r.version;
    order_row_free(&r);
    return STATUS_OK;
  }
  r.state.status = ORDER_ST(SHIPPED);
  r.version++;
  st = order_row_save(tx, ctx, &r, 0, NULL, carrier, tracking, errbuf, errlen);
  if (st == STATUS_OK) st = order_row_lines(tx, &r, errbuf, errlen);
  order_pb_lines pb = {0};
  if (st == STATUS_OK && !order_pb_lines_make(&pb, r.lines, r.n_lines, r.total, r.currency)) {
    snprintf(errbuf, errlen, "out of memory");
    st = STATUS_INTERNAL;
  }
  if (st == STATUS_OK) {
    Shop__Order__V1__OrderShipped ev = SHOP__ORDER__V1__ORDER_SHIPPED__INIT;
    ev.order_id = r.order_id;
    ev.customer_id = r.customer_id;
    ev.n_lines = pb.n;
    ev.lines = pb.ptrs;
    ev.carrier = (char *)(carrier != NULL ? carrier : "");
    ev.tracking_number = (char *)(tracking != NULL ? tracking : "");
    st = outbox_emit(&ctx->sink, tx, origin, r.order_id, r.version, &ev.base, errbuf, errlen);
  }
  order_pb_lines_free(&pb);
  *version = r.version;
  order_row_free(&r);
  return st;
}

/* ---- Handlers ----------------------------------------------------------------------------------
 */

typedef struct create_job {
  const order_ctx *ctx;
  rpc_call *call;
  const order_create_req *in;
  order_product *products;
  order_line *lines;
  int64_t total;
  char order_id[37];
  int64_t deadline_ms;
  order_pb_lines pb;
  Shop__Common__V1__ConsistencyToken token;
  Shop__Common__V1__Timestamp deadline;
  Shop__Order__V1__CreateOrderResponse reply;
} create_job;

/* Asks the catalog for every product at once, before the transaction (no
 * connection is held while product-query answers). On a failure the
 * caller may retry, a repeat of an answered request still gets its stored
 * reply (command_replayed); otherwise the call is answered UNAVAILABLE or
 * DEADLINE_EXCEEDED. False when the call holds its answer. */
static bool create_fetch(create_job *j) {
  char err[512] = "";
  const char *ids[ORDER_LINES_MAX];
  for (size_t i = 0; i < j->in->n_lines; i++) ids[i] = j->in->lines[i]->product_id;
  status_code st = j->ctx->catalog.get_cb(j->ctx->catalog.self, j->call, ids, j->in->n_lines,
                                          j->products, err, sizeof err);
  if (st == STATUS_OK) return true;
  log_warn(&(log_ctx){.request_id = rpc_call_request_id(j->call),
                      .trace_id = rpc_call_trace_id(j->call)},
           "CreateOrder: the catalog did not answer: %s (%s)", status_name(st), err);
  if (command_replayed(j->call, j->ctx->db)) return false;
  if (st == STATUS_DEADLINE_EXCEEDED) {
    rpc_call_set_status(j->call, STATUS_DEADLINE_EXCEEDED, "the catalog did not answer in time");
  } else {
    rpc_call_set_status(j->call, STATUS_UNAVAILABLE, "the catalog is unavailable; try again");
    rpc_call_set_retry_delay(j->call, 200);
  }
  return false;
}

static status_code create_apply(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                size_t errlen) {
  create_job *j = arg;
  check_violations v;
  char msg[256];
  status_code code =
      order_price(j->in, j->products, j->ctx->currency, j->lines, &j->total, &v, msg, sizeof msg);
  if (code != STATUS_OK) {
    command_fail(out, code, v.n > 0 ? v.v[0].field : NULL, "%s", msg);
    return STATUS_OK;
  }
  outbox_cause origin = command_cause(j->call);
  order_new n = {.customer_id = rpc_call_user_id(j->call),
                 .idempotency_key = rpc_call_idempotency_key(j->call),
                 .payment_token = j->in->payment_token,
                 .address = j->in->shipping_address,
                 .lines = j->lines,
                 .n_lines = j->in->n_lines,
                 .total = j->total};
  status_code st =
      order_place(tx, j->ctx, &origin, &n, j->order_id, &j->deadline_ms, errbuf, errlen);
  if (st != STATUS_OK) return st;
  order_pb_lines_free(&j->pb);
  if (!order_pb_lines_make(&j->pb, j->lines, j->in->n_lines, j->total, j->ctx->currency)) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  consistency_token_set(&j->token, j->order_id, 1);
  clock_timestamp_set(&j->deadline, j->deadline_ms);
  shop__order__v1__create_order_response__init(&j->reply);
  j->reply.order_id = j->order_id;
  j->reply.consistency = &j->token;
  j->reply.status = ORDER_ST(PENDING);
  j->reply.n_lines = j->pb.n;
  j->reply.lines = j->pb.ptrs;
  j->reply.total = &j->pb.total;
  j->reply.deadline = &j->deadline;
  return STATUS_OK;
}

static void order_cmd_create_order(order_cmd_service *svc, const order_create_req *in,
                                   Shop__Order__V1__CreateOrderResponse_Closure closure,
                                   void *data) {
  rpc_call *call = data;
  const order_ctx *ctx = rpc_call_service_ctx(call);
  check_violations v = {0};
  order_validate_create_order(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  if (strlen(rpc_call_user_id(call)) > ORDER_CUSTOMER_MAX) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "the caller's id is too long");
    return;
  }
  create_job *j = calloc(1, sizeof *j);
  if (j != NULL) {
    j->products = calloc(in->n_lines, sizeof *j->products);
    j->lines = calloc(in->n_lines, sizeof *j->lines);
  }
  bool ready = j != NULL && j->products != NULL && j->lines != NULL;
  if (!ready) {
    rpc_call_set_status(call, STATUS_RESOURCE_EXHAUSTED, "out of memory");
  } else {
    j->ctx = ctx;
    j->call = call;
    j->in = in;
  }
  if (ready && create_fetch(j)) {
    command_tx cmd = {.call = call,
                      .db = ctx->db,
                      .relay = ctx->relay,
                      .apply = create_apply,
                      .arg = j,
                      .reply = &j->reply.base,
                      .idempotent = true};
    if (command_run(&cmd)) {
      log_info(
          &(log_ctx){.request_id = rpc_call_request_id(call), .trace_id = rpc_call_trace_id(call)},
          "order %s created for %s: %zu line(s), %lld %s", j->order_id, rpc_call_user_id(call),
          in->n_lines, (long long)j->total, ctx->currency);
      closure(&j->reply, data);
    }
  }
  if (j != NULL) {
    order_pb_lines_free(&j->pb);
    free(j->products);
    free(j->lines);
  }
  free(j);
}

typedef struct change_job {
  const order_ctx *ctx;
  rpc_call *call;
  const char *order_id;
  const char *text, *carrier, *tracking;
  bool ship;
  int64_t version;
  Shop__Common__V1__ConsistencyToken token;
  Shop__Order__V1__CancelOrderResponse cancel_reply;
  Shop__Order__V1__ShipOrderResponse ship_reply;
} change_job;

static status_code change_apply(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                size_t errlen) {
  change_job *j = arg;
  outbox_cause origin = command_cause(j->call);
  status_code st;
  if (j->ship) {
    st = order_ship(tx, j->ctx, &origin, j->order_id, j->carrier, j->tracking, out, &j->version,
                    errbuf, errlen);
  } else {
    order_who who = {.user_id = rpc_call_user_id(j->call),
                     .admin = rpc_call_role(j->call) == AUTH_ROLE_ADMIN};
    st = order_cancel(tx, j->ctx, &origin, &who, j->order_id, j->text, out, &j->version, errbuf,
                      errlen);
  }
  if (st != STATUS_OK || out->code != STATUS_OK) return st;
  consistency_token_set(&j->token, j->order_id, j->version);
  shop__order__v1__cancel_order_response__init(&j->cancel_reply);
  j->cancel_reply.order_id = (char *)j->order_id;
  j->cancel_reply.consistency = &j->token;
  j->cancel_reply.status = ORDER_ST(CANCELLED);
  shop__order__v1__ship_order_response__init(&j->ship_reply);
  j->ship_reply.order_id = (char *)j->order_id;
  j->ship_reply.consistency = &j->token;
  j->ship_reply.status = ORDER_ST(SHIPPED);
  return STATUS_OK;
}

static bool change_run(change_job *j) {
  command_tx cmd = {.call = j->call,
                    .db = j->ctx->db,
                    .relay = j->ctx->relay,
                    .apply = change_apply,
                    .arg = j,
                    .reply = j->ship ? &j->ship_reply.base : &j->cancel_reply.base,
                    .idempotent = true};
  return command_run(&cmd);
}

static void order_cmd_cancel_order(order_cmd_service *svc,
                                   const Shop__Order__V1__CancelOrderRequest *in,
                                   Shop__Order__V1__CancelOrderResponse_Closure closure,
                                   void *data) {
  rpc_call *call = data;
  check_violations v = {0};
  order_validate_cancel_order(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  change_job j = {.ctx = rpc_call_service_ctx(call),
                  .call = call,
                  .order_id = in->order_id,
                  .text = in->reason};
  if (change_run(&j)) closure(&j.cancel_reply, data);
}

static void order_cmd_ship_order(order_cmd_service *svc,
                                 const Shop__Order__V1__ShipOrderRequest *in,
                                 Shop__Order__V1__ShipOrderResponse_Closure closure, void *data) {
  rpc_call *call = data;
  check_violations v = {0};
  order_validate_ship_order(in, &v);
  if (handler_violations_apply(call, &v) > 0) return;
  change_job j = {.ctx = rpc_call_service_ctx(call),
                  .call = call,
                  .order_id = in->order_id,
                  .carrier = in->carrier,
                  .tracking = in->tracking_number,
                  .ship = true};
  if (change_run(&j)) closure(&j.ship_reply, data);
}

static order_cmd_service order_cmd_svc = SHOP__ORDER__V1__ORDER_COMMAND_SERVICE__INIT(order_cmd_);

static const rpc_method_policy order_cmd_policies[] = {
    {"CreateOrder", RPC_AUTHENTICATED},
    {"CancelOrder", RPC_AUTHENTICATED},
    {"ShipOrder", RPC_ADMIN},
};

status_code order_cmd_register(rpc_server *s, order_ctx *ctx, char *errbuf, size_t errlen) {
  rpc_service_opts o = {.default_policy = RPC_AUTHENTICATED,
                        .policies = order_cmd_policies,
                        .n_policies = sizeof order_cmd_policies / sizeof order_cmd_policies[0],
                        .ctx = ctx};
  return rpc_server_register(s, &order_cmd_svc.base, &o, errbuf, errlen);
}
