/* order-command's operations, saga steps and sweeper against MariaDB
 * (database shop_test), with events written to a test table in the same
 * transaction. Every test places its own orders. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "command/command.h"
#include "domtest.h"
#include "order/order.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "support/account.h"
#include "support/wait.h"

#define T_CREATED "shop.order.v1.OrderCreated"
#define T_CONFIRMED "shop.order.v1.OrderConfirmed"
#define T_CANCELLED "shop.order.v1.OrderCancelled"
#define T_SHIPPED "shop.order.v1.OrderShipped"

static db_conn *db;
static order_ctx ctx;
static int64_t fake_now;

static int64_t fake_now_cb(void *self) { return fake_now; }

static void setup(void) {
  db = domtest_db("order", order_migrations, order_migrations_count);
  order_ctx_init(&ctx, NULL, "order-test", NULL, NULL, (order_catalog){0});
  ctx.sink = domtest_sink();
  ctx.deadline_ms = 60000;
  ctx.clock.now_ms_cb = fake_now_cb;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  fake_now = (int64_t)ts.tv_sec * 1000;
}

static void teardown(void) {
  order_ctx_destroy(&ctx);
  db_close(db);
}

TestSuite(order_ops, .init = setup, .fini = teardown, .timeout = 60);

static const outbox_cause origin = {.actor = "tester", .correlation_id = "corr"};

typedef struct op {
  enum { PLACE, STEP, CANCEL, SHIP } kind;
  const char *customer;
  char order_id[37];
  order_saga_input in;
  const char *text;
  order_who who;
  command_outcome out;
  int64_t version, deadline;
} op;

static status_code op_cb(db_conn *tx, void *arg, char *errbuf, size_t errlen) {
  op *o = arg;
  o->out = (command_outcome){.code = STATUS_OK, .retry_delay_ms = -1};
  switch (o->kind) {
  case PLACE: {
    Shop__Order__V1__ShippingAddress a = SHOP__ORDER__V1__SHIPPING_ADDRESS__INIT;
    a.recipient = "R";
    a.line1 = "L";
    a.city = "C";
    a.postal_code = "1";
    a.country = "DE";
    order_line l[2] = {{.quantity = 2, .unit_price = 150, .line_total = 300},
                       {.quantity = 1, .unit_price = 99, .line_total = 99}};
    domtest_id(l[0].product_id);
    domtest_id(l[1].product_id);
    snprintf(l[0].sku, sizeof l[0].sku, "A");
    snprintf(l[1].sku, sizeof l[1].sku, "B");
    snprintf(l[0].name, sizeof l[0].name, "Apple");
    snprintf(l[1].name, sizeof l[1].name, "Pear");
    order_new n = {.customer_id = o->customer,
                   .idempotency_key = "key-1",
                   .payment_token = "tok_visa",
                   .address = &a,
                   .lines = l,
                   .n_lines = 2,
                   .total = 399};
    return order_place(tx, &ctx, &origin, &n, o->order_id, &o->deadline, errbuf, errlen);
  }
  case STEP:
    return order_saga_step_apply(tx, &ctx, &origin, o->order_id, o->in, o->text, errbuf, errlen);
  case CANCEL:
    return order_cancel(tx, &ctx, &origin, &o->who, o->order_id, o->text, &o->out, &o->version,
                        errbuf, errlen);
  case SHIP:
    return order_ship(tx, &ctx, &origin, o->order_id, "DHL", "T-1", &o->out, &o->version, errbuf,
                      errlen);
  }
  return STATUS_INTERNAL;
}

static void place(char id[37], const char *customer) {
  op o = {.kind = PLACE, .customer = customer};
  domtest_tx(db, op_cb, &o);
  snprintf(id, 37, "%s", o.order_id);
}

static void step(const char *id, order_saga_input in, const char *text) {
  op o = {.kind = STEP, .in = in, .text = text};
  snprintf(o.order_id, sizeof o.order_id, "%s", id);
  domtest_tx(db, op_cb, &o);
}

static op change(int kind, const char *id, const char *user, bool admin) {
  op o = {.kind = kind, .who = {.user_id = user, .admin = admin}, .text = "changed my mind"};
  snprintf(o.order_id, sizeof o.order_id, "%s", id);
  domtest_tx(db, op_cb, &o);
  return o;
}

/* ShipOrder succeeds: the order is CONFIRMED and its capture was seen. */
static void op_cb_ship_ok(const char *id) {
  op o = change(SHIP, id, "admin", true);
  cr_assert_eq(o.out.code, STATUS_OK, "%s", o.out.message);
}

Test(order_ops, a_placed_order_is_pending_with_its_lines_total_key_and_deadline) {
  char id[37];
  place(id, "cust-a");
  int64_t seq = 0;
  Shop__Order__V1__OrderCreated *e =
      (void *)domtest_last(db, id, &shop__order__v1__order_created__descriptor, &seq);
  cr_assert_not_null(e);
  cr_assert_eq(seq, 1);
  cr_assert_str_eq(e->customer_id, "cust-a");
  cr_assert_eq(e->n_lines, 2);
  cr_assert_eq(e->lines[0]->line_total->units, 300);
  cr_assert_str_eq(e->lines[1]->product_name, "Pear");
  cr_assert_eq(e->total->units, 399);
  cr_assert_str_eq(e->total->currency, "EUR");
  cr_assert_str_eq(e->idempotency_key, "key-1");
  cr_assert_str_eq(e->payment_token, "tok_visa");
  cr_assert_eq(e->deadline->seconds * 1000, fake_now + 60000);
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

Test(order_ops, reserved_and_authorized_confirm_the_order_once) {
  char id[37];
  place(id, "cust-a");
  step(id, ORDER_SAGA_AUTHORIZED, NULL);
  cr_assert_eq(domtest_count(db, id, T_CONFIRMED), 0);
  step(id, ORDER_SAGA_RESERVED, NULL);
  step(id, ORDER_SAGA_RESERVED, NULL);
  cr_assert_eq(domtest_count(db, id, T_CONFIRMED), 1);
  int64_t seq = 0;
  Shop__Order__V1__OrderConfirmed *e =
      (void *)domtest_last(db, id, &shop__order__v1__order_confirmed__descriptor, &seq);
  cr_assert_eq(seq, 2);
  cr_assert_eq(e->total->units, 399);
  cr_assert_eq(e->n_lines, 2);
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

Test(order_ops, a_rejection_cancels_with_its_reason_and_nothing_after_it_confirms) {
  char id[37];
  place(id, "cust-a");
  step(id, ORDER_SAGA_REJECTED, "product x: out of stock");
  step(id, ORDER_SAGA_AUTHORIZED, NULL);
  Shop__Order__V1__OrderCancelled *e =
      (void *)domtest_last(db, id, &shop__order__v1__order_cancelled__descriptor, NULL);
  cr_assert_eq(e->reason, ORDER_CANCEL(INVENTORY_REJECTED));
  cr_assert_str_eq(e->reason_text, "product x: out of stock");
  cr_assert_eq(e->previous_status, ORDER_ST(PENDING));
  cr_assert_eq(e->total->units, 399);
  protobuf_c_message_free_unpacked(&e->base, NULL);
  cr_assert_eq(domtest_count(db, id, T_CONFIRMED), 0);
  cr_assert_eq(domtest_count(db, id, NULL), 2);
}

Test(order_ops, only_the_owner_or_an_admin_cancels_and_only_once) {
  char id[37];
  place(id, "cust-a");
  op o = change(CANCEL, id, "cust-b", false);
  cr_assert_eq(o.out.code, STATUS_NOT_FOUND, "someone else's order is not found");
  o = change(CANCEL, id, "cust-a", false);
  cr_assert_eq(o.out.code, STATUS_OK);
  cr_assert_eq(o.version, 2);
  Shop__Order__V1__OrderCancelled *e =
      (void *)domtest_last(db, id, &shop__order__v1__order_cancelled__descriptor, NULL);
  cr_assert_eq(e->reason, ORDER_CANCEL(CUSTOMER_REQUESTED));
  cr_assert_str_eq(e->reason_text, "changed my mind");
  protobuf_c_message_free_unpacked(&e->base, NULL);
  o = change(CANCEL, id, "admin-1", true);
  cr_assert_eq(o.out.code, STATUS_FAILED_PRECONDITION);
  cr_assert(strstr(o.out.message, "CANCELLED") != NULL, "%s", o.out.message);
  cr_assert_eq(domtest_count(db, id, T_CANCELLED), 1);

  char id2[37];
  place(id2, "cust-a");
  o = change(CANCEL, id2, "admin-1", true);
  cr_assert_eq(o.out.code, STATUS_OK);
  e = (void *)domtest_last(db, id2, &shop__order__v1__order_cancelled__descriptor, NULL);
  cr_assert_eq(e->reason, ORDER_CANCEL(ADMIN_REQUESTED));
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

Test(order_ops, a_confirmed_order_ships_once_captured_and_then_cannot_be_cancelled) {
  char id[37];
  place(id, "cust-a");
  op o = change(SHIP, id, "admin", true);
  cr_assert_eq(o.out.code, STATUS_FAILED_PRECONDITION);
  cr_assert(strstr(o.out.message, "PENDING") != NULL, "%s", o.out.message);
  step(id, ORDER_SAGA_RESERVED, NULL);
  step(id, ORDER_SAGA_AUTHORIZED, NULL);
  o = change(SHIP, id, "admin", true);
  cr_assert_eq(o.out.code, STATUS_UNAVAILABLE, "the capture has not been seen: retry shortly");
  cr_assert_geq(o.out.retry_delay_ms, 1, "with RetryInfo");
  step(id, ORDER_SAGA_CAPTURED, NULL);
  o = change(SHIP, id, "admin", true);
  cr_assert_eq(o.out.code, STATUS_OK, "%s", o.out.message);
  cr_assert_eq(o.version, 3);
  Shop__Order__V1__OrderShipped *e =
      (void *)domtest_last(db, id, &shop__order__v1__order_shipped__descriptor, NULL);
  cr_assert_str_eq(e->carrier, "DHL");
  cr_assert_eq(e->n_lines, 2);
  protobuf_c_message_free_unpacked(&e->base, NULL);
  o = change(CANCEL, id, "cust-a", false);
  cr_assert_eq(o.out.code, STATUS_FAILED_PRECONDITION);
  cr_assert(strstr(o.out.message, "SHIPPED") != NULL, "%s", o.out.message);
}

Test(order_ops, a_failed_capture_cancels_the_confirmed_order) {
  char id[37];
  place(id, "cust-a");
  step(id, ORDER_SAGA_RESERVED, NULL);
  step(id, ORDER_SAGA_AUTHORIZED, NULL);
  step(id, ORDER_SAGA_CAPTURE_FAILED, "payment capture failed: declined");
  Shop__Order__V1__OrderCancelled *e =
      (void *)domtest_last(db, id, &shop__order__v1__order_cancelled__descriptor, NULL);
  cr_assert_eq(e->reason, ORDER_CANCEL(CAPTURE_FAILED));
  cr_assert_eq(e->previous_status, ORDER_ST(CONFIRMED));
  protobuf_c_message_free_unpacked(&e->base, NULL);
}

/* ---- The saga consumer's batch ---------------------------------------------------------- */

static int order_status(const char *id, int64_t *version) {
  db_value v[1] = {DB_STR(id)};
  db_rows *r = NULL;
  char err[256];
  cr_assert_eq(db_query(db, "SELECT status, version FROM orders WHERE order_id = ?", v, 1, &r, err,
                        sizeof err),
               STATUS_OK, "%s", err);
  cr_assert(db_rows_next(r));
  int st = (int)db_rows_i64(r, 0);
  *version = db_rows_i64(r, 1);
  db_rows_free(r);
  return st;
}

Test(order_ops, a_batch_of_answers_for_several_orders_is_applied_as_one_by_one) {
  char a[37], b[37], c[37], unknown[37];
  place(a, "cust-a");
  place(b, "cust-b");
  place(c, "cust-c");
  domtest_id(unknown);
  Shop__Inventory__V1__InventoryReserved res[3];
  Shop__Payment__V1__PaymentAuthorized auth[3];
  const char *ids[3] = {a, b, unknown};
  for (int i = 0; i < 3; i++) {
    shop__inventory__v1__inventory_reserved__init(&res[i]);
    res[i].order_id = (char *)ids[i];
    shop__payment__v1__payment_authorized__init(&auth[i]);
    auth[i].order_id = (char *)ids[i];
  }
  Shop__Inventory__V1__InventoryRejected rej = SHOP__INVENTORY__V1__INVENTORY_REJECTED__INIT;
  rej.order_id = c;
  Shop__Payment__V1__PaymentAuthorized auth_c = SHOP__PAYMENT__V1__PAYMENT_AUTHORIZED__INIT;
  auth_c.order_id = c;
  Shop__Payment__V1__PaymentCaptured cap = SHOP__PAYMENT__V1__PAYMENT_CAPTURED__INIT;
  cap.order_id = a;
  /* a: reserved, authorized (confirms), captured; b: authorized then
   * reserved; c: rejected (cancels at once), then a late authorization;
   * an order order-command does not have. */
  const ProtobufCMessage *ms[] = {&res[0].base,  &auth[1].base, &rej.base, &auth[0].base,
                                  &res[1].base,  &auth_c.base,  &cap.base, &res[2].base,
                                  &auth[2].base, &res[0].base};
  size_t n = sizeof ms / sizeof ms[0];
  domtest_event ev[sizeof ms / sizeof ms[0]];
  for (size_t i = 0; i < n; i++) domtest_event_make(&ev[i], ms[i]);
  domtest_consume(db, &order_saga_consumer, ev, n, &ctx);

  int64_t ver = 0;
  cr_assert_eq(order_status(a, &ver), ORDER_ST(CONFIRMED));
  cr_assert_eq(ver, 2);
  cr_assert_eq(order_status(b, &ver), ORDER_ST(CONFIRMED));
  cr_assert_eq(ver, 2);
  cr_assert_eq(order_status(c, &ver), ORDER_ST(CANCELLED));
  cr_assert_eq(ver, 2);
  for (int i = 0; i < 2; i++) {
    cr_assert_eq(domtest_count(db, ids[i], T_CONFIRMED), 1, "order %d", i);
    int64_t seq = 0;
    Shop__Order__V1__OrderConfirmed *e =
        (void *)domtest_last(db, ids[i], &shop__order__v1__order_confirmed__descriptor, &seq);
    cr_assert_eq(seq, 2);
    cr_assert_eq(e->n_lines, 2, "the lines were read for the confirmation");
    cr_assert_str_eq(e->lines[1]->product_name, "Pear");
    cr_assert_eq(e->total->units, 399);
    protobuf_c_message_free_unpacked(&e->base, NULL);
  }
  cr_assert_eq(domtest_count(db, c, T_CONFIRMED), 0);
  cr_assert_eq(domtest_count(db, c, T_CANCELLED), 1);
  /* The capture moved a's payment state (shipping needs it). */
  op_cb_ship_ok(a);

  /* The same batch again (a redelivery past the inbox) changes nothing. */
  for (size_t i = 0; i < n; i++) domtest_event_make(&ev[i], ms[i]);
  domtest_consume(db, &order_saga_consumer, ev, n, &ctx);
  cr_assert_eq(domtest_count(db, a, NULL), 3, "created, confirmed, shipped");
  cr_assert_eq(domtest_count(db, b, NULL), 2);
  cr_assert_eq(domtest_count(db, c, NULL), 2);

  /* After the batch the step works on its own again (the sweeper's path). */
  char d[37];
  place(d, "cust-d");
  step(d, ORDER_SAGA_RESERVED, NULL);
  step(d, ORDER_SAGA_AUTHORIZED, NULL);
  cr_assert_eq(order_status(d, &ver), ORDER_ST(CONFIRMED));
}

Test(order_ops, the_sweeper_cancels_pending_orders_past_their_deadline_only) {
  char due[37], answered[37];
  place(due, "cust-a");
  place(answered, "cust-a");
  step(answered, ORDER_SAGA_RESERVED, NULL);
  step(answered, ORDER_SAGA_AUTHORIZED, NULL);
  char err[512];
  int n = -1;
  cr_assert_eq(order_sweep(db, &ctx, fake_now + 59999, &n, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(domtest_count(db, due, T_CANCELLED), 0, "not yet due");
  /* Older leftovers of earlier runs may be swept too: sweep until done. */
  n = -1;
  for (int i = 0; i < 50 && n != 0; i++)
    cr_assert_eq(order_sweep(db, &ctx, fake_now + 60000, &n, err, sizeof err), STATUS_OK, "%s",
                 err);
  cr_assert_eq(domtest_count(db, due, T_CANCELLED), 1);
  Shop__Order__V1__OrderCancelled *e =
      (void *)domtest_last(db, due, &shop__order__v1__order_cancelled__descriptor, NULL);
  cr_assert_eq(e->reason, ORDER_CANCEL(DEADLINE_EXCEEDED));
  protobuf_c_message_free_unpacked(&e->base, NULL);
  cr_assert_eq(domtest_count(db, answered, T_CANCELLED), 0, "a confirmed order is not swept");
  cr_assert_eq(order_sweep(db, &ctx, fake_now + 60000, &n, err, sizeof err), STATUS_OK);
  cr_assert_eq(domtest_count(db, due, T_CANCELLED), 1);
}

Test(order_ops, the_sweeper_thread_takes_its_lock_and_cancels_due_orders) {
  char due[37];
  place(due, "cust-a");
  fake_now += 60000; /* the order is due from now on */
  char password[256], err[512];
  db_params p;
  cr_assert(support_env_db_params(&p, "shop_test", "shop_test", password, sizeof password, err,
                                  sizeof err),
            "%s", err);
  /* Two sweepers, as two instances would run them: one holds the lock. */
  order_sweeper *a = NULL, *b = NULL;
  cr_assert_eq(order_sweeper_start(&a, &ctx, &p, 50, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(order_sweeper_start(&b, &ctx, &p, 50, err, sizeof err), STATUS_OK, "%s", err);
  bool ok = false;
  WAIT_FOR(ok, domtest_count(db, due, T_CANCELLED) == 1, 10000);
  order_sweeper_stop(a);
  order_sweeper_stop(b);
  cr_assert(ok, "the sweeper cancelled the due order");
  cr_assert_eq(domtest_count(db, due, T_CANCELLED), 1);
}
