/* Orders end to end: product-command, product-query, order-command,
 * order-query, inventory-worker and payment-worker as real processes,
 * over the real RPC layer, Kafka and MariaDB (tests/support/stack.h). Tests run one at
 * a time and make their own customers, products (SKUs prefixed with the
 * run id) and orders; they wait on conditions with a bound, never on a
 * fixed sleep.
 *
 * Suites run in name order ("orders", then "replay"): the replay test
 * stops and restarts the order programs, so it comes last. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events/events.h"
#include "inventory/inventory.h"
#include "page/page.h"
#include "payment/payment.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "support/stack.h"
#include "support/wait.h"
#include "topology/topology.h"

#define OCMD_SVC (&shop__order__v1__order_command_service__descriptor)
#define OQRY_SVC (&shop__order__v1__order_query_service__descriptor)
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define ST(name) SHOP__ORDER__V1__ORDER_STATUS__ORDER_STATUS_##name
#define PAY(name) SHOP__PAYMENT__V1__PAYMENT_STATUS__PAYMENT_STATUS_##name
#define RES(name) SHOP__INVENTORY__V1__RESERVATION_STATUS__RESERVATION_STATUS_##name
#define CR(name) SHOP__ORDER__V1__CANCEL_REASON__CANCEL_REASON_##name
#define WAIT_MS 30000

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  stack_up((const char *const[]){STACK_ORDER_PROGRAMS, NULL});
}
/* After every scenario, on the quiet stack: the run's books must balance
 * (money, stock, one OrderCreated per order in the audit log, the chain). */
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down_after_books(60000); }

TestSuite(orders, .init = stack_require, .fini = stack_release, .timeout = 150);

/* ---- Helpers -----------------------------------------------------------------------------------
 */

typedef struct who {
  char id[EVENTS_ID_SIZE];
  char token[AUTH_TOKEN_MAX];
} who;

static void customer(who *w) {
  events_uuid_v7(w->id);
  stack_token(w->token, w->id, AUTH_ROLE_CUSTOMER);
}

static void admin(who *w) {
  events_uuid_v7(w->id);
  stack_token(w->token, w->id, AUTH_ROLE_ADMIN);
}

static const char *ocmd(void) { return stack_url("order-command"); }
static const char *oqry(void) { return stack_url("order-query"); }

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

/* A product with stock, price and rule, projected by product-query. */
static void product(const who *adm, int64_t stock, int64_t price, int32_t max, char id[37]) {
  stack_product(adm->token, stock, price, max, id);
}

/* A new admin and customer, and a product of the admin's with stock,
 * price and max units per order. */
static void actors(who *a, who *c, int64_t stock, int64_t price, int32_t max, char p[37]) {
  admin(a);
  customer(c);
  product(a, stock, price, max, p);
}

static Shop__Order__V1__CreateOrderResponse *place_at(const char *url, const who *w, const char *k,
                                                      const req_order *o) {
  Shop__Order__V1__CreateOrderResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call_at(url, OCMD_SVC, "CreateOrder", &o->req.base, (ProtobufCMessage **)&r,
                             w->token, k, &st),
               STATUS_OK, "CreateOrder: %s", st.message);
  return r;
}

/* Places one order of qty units of product_id. */
static Shop__Order__V1__CreateOrderResponse *place(const who *w, const char *product_id,
                                                   int32_t qty, const char *pay_token) {
  req_order o;
  req_order_init(&o, pay_token);
  req_order_line(&o, product_id, qty);
  return place_at(ocmd(), w, stack_key(), &o);
}

static Shop__Order__V1__GetOrderResponse *get(const who *w, const char *id, status_code *code) {
  Shop__Order__V1__GetOrderRequest req = SHOP__ORDER__V1__GET_ORDER_REQUEST__INIT;
  req.order_id = (char *)id;
  Shop__Order__V1__GetOrderResponse *r = NULL;
  rpc_status st;
  status_code c = stack_call_at(oqry(), OQRY_SVC, "GetOrder", &req.base, (ProtobufCMessage **)&r,
                                w->token, NULL, &st);
  if (code != NULL) *code = c;
  return r;
}

/* What a waited-for order must show; 0 fields are not looked at. */
typedef struct want {
  int status, payment, stock, reason;
} want;

static bool order_is(const Shop__Order__V1__Order *o, const want *w) {
  return (w->status == 0 || (int)o->status == w->status) &&
         (w->payment == 0 || (o->payment != NULL && (int)o->payment->status == w->payment)) &&
         (w->stock == 0 || (o->stock != NULL && (int)o->stock->status == w->stock)) &&
         (w->reason == 0 || (int)o->cancel_reason == w->reason);
}

/* One GetOrder into *r (freed first): whether the order shows w. */
static bool order_shows(const who *who_, const char *id, const want *w,
                        Shop__Order__V1__GetOrderResponse **r) {
  free_msg(*r);
  *r = get(who_, id, NULL);
  return *r != NULL && order_is((*r)->order, w);
}

/* Polls GetOrder until the order shows w; fails the test after ms. */
static Shop__Order__V1__GetOrderResponse *wait_order(const who *who_, const char *id, want w,
                                                     int ms) {
  Shop__Order__V1__GetOrderResponse *r = NULL;
  WAIT_UNTIL(order_shows(who_, id, &w, &r), ms,
             "order %s: status %d payment %d stock %d reason %d (%s), want %d/%d/%d/%d", id,
             r != NULL ? (int)r->order->status : -1,
             r != NULL && r->order->payment ? (int)r->order->payment->status : -1,
             r != NULL && r->order->stock ? (int)r->order->stock->status : -1,
             r != NULL ? (int)r->order->cancel_reason : -1,
             r != NULL ? r->order->cancel_reason_text : "", w.status, w.payment, w.stock, w.reason);
  return r;
}

static inventory_level level(db_conn *inv, const char *product_id) {
  inventory_level l = {0};
  char err[512];
  cr_assert_eq(inventory_level_get(inv, product_id, &l, err, sizeof err), STATUS_OK, "%s", err);
  return l;
}

static int64_t attempts(db_conn *pay, const char *order_id, payment_op op) {
  int64_t n = -1;
  char err[512];
  cr_assert_eq(payment_attempts_count(pay, order_id, op, &n, err, sizeof err), STATUS_OK, "%s",
               err);
  return n;
}

static int64_t approved(db_conn *pay, const char *order_id, payment_op op) {
  int64_t n = -1;
  char err[512];
  db_value v[2] = {DB_STR(order_id), DB_I64(op)};
  cr_assert_eq(db_query_i64(pay,
                            "SELECT COUNT(*) FROM payment_attempts WHERE order_id = ? AND "
                            "operation = ? AND outcome = 1",
                            v, 2, &n, err, sizeof err),
               STATUS_OK, "%s", err);
  return n;
}

static payment_row payment(db_conn *pay, const char *order_id) {
  payment_row r;
  char err[512];
  cr_assert_eq(payment_row_get(pay, order_id, &r, err, sizeof err), STATUS_OK, "%s", err);
  return r;
}

/* ---- Tests --------------------------------------------------------------------------------------
 */

Test(orders, a_new_order_is_readable_at_once_with_the_returned_consistency_token) {
  who a, c;
  char p[37];
  actors(&a, &c, 5, 1250, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 1, "tok_visa");
  cr_assert_eq(r->status, ST(PENDING));
  cr_assert_eq(r->consistency->version, 1);
  cr_assert_str_eq(r->consistency->aggregate_id, r->order_id);
  cr_assert_eq(r->total->units, 1250);
  cr_assert_not_null(r->deadline);
  Shop__Order__V1__GetOrderRequest req = SHOP__ORDER__V1__GET_ORDER_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  rc.token = r->consistency;
  rc.wait_ms = 10000;
  req.order_id = r->order_id;
  req.consistency = &rc;
  Shop__Order__V1__GetOrderResponse *g = NULL;
  rpc_status st;
  cr_assert_eq(stack_call_at(oqry(), OQRY_SVC, "GetOrder", &req.base, (ProtobufCMessage **)&g,
                             c.token, NULL, &st),
               STATUS_OK, "GetOrder right after CreateOrder: %s", st.message);
  cr_assert_geq(g->order->version, 1);
  cr_assert_str_eq(g->order->customer_id, c.id);
  cr_assert_eq(g->order->n_lines, 1);
  cr_assert_eq(g->order->lines[0]->unit_price->units, 1250, "priced from the catalog");
  cr_assert_str_eq(g->order->shipping_address->city, "Arlington");
  free_msg(g);
  free_msg(r);
}

Test(orders, the_happy_path_confirms_captures_once_and_takes_the_stock) {
  who a, c;
  admin(&a);
  customer(&c);
  char p[37], q[37];
  product(&a, 5, 1250, 0, p);
  product(&a, 9, 300, 0, q);
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, p, 2);
  req_order_line(&o, q, 3);
  Shop__Order__V1__CreateOrderResponse *r = place_at(ocmd(), &c, stack_key(), &o);
  cr_assert_eq(r->total->units, 2 * 1250 + 3 * 300);
  Shop__Order__V1__GetOrderResponse *g = wait_order(
      &c, r->order_id,
      (want){.status = ST(CONFIRMED), .payment = PAY(CAPTURED), .stock = RES(RESERVED)}, WAIT_MS);
  cr_assert_eq(g->order->payment->captured->units, 3400);
  db_conn *inv = stack_db("shop_inventory"), *pay = stack_db("shop_payment");
  inventory_level lp = level(inv, p), lq = level(inv, q);
  cr_assert_eq(lp.available, 3);
  cr_assert_eq(lp.reserved, 2);
  cr_assert_eq(lq.available, 6);
  cr_assert_eq(approved(pay, r->order_id, PAYMENT_OP_AUTHORIZE), 1);
  cr_assert_eq(approved(pay, r->order_id, PAYMENT_OP_CAPTURE), 1, "captured once");
  cr_assert_eq(payment(pay, r->order_id).status, PAY(CAPTURED));
  /* The catalog shows the stock that is left, a moment later. */
  Shop__Product__V1__GetProductRequest gp = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  gp.product_id = p;
  Shop__Product__V1__GetProductResponse *pr = NULL;
  WAIT_UNTIL((free_msg(pr), pr = NULL,
              stack_call("product-query", PQRY_SVC, "GetProduct", &gp.base,
                         (ProtobufCMessage **)&pr, NULL, NULL, NULL) == STATUS_OK &&
                  pr->product->stock->available == 3),
             WAIT_MS, "product-query showing 3 available (last seen %lld)",
             pr != NULL ? (long long)pr->product->stock->available : -1LL);
  free_msg(pr);
  db_close(inv);
  db_close(pay);
  free_msg(g);
  free_msg(r);
}

Test(orders, out_of_stock_cancels_voids_the_authorization_and_leaves_the_stock) {
  who a, c;
  char p[37];
  actors(&a, &c, 1, 1000, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 2, "tok_visa");
  Shop__Order__V1__GetOrderResponse *g = wait_order(
      &c, r->order_id,
      (want){.status = ST(CANCELLED), .reason = CR(INVENTORY_REJECTED), .payment = PAY(VOIDED)},
      WAIT_MS);
  cr_assert_eq(g->order->stock->status, RES(REJECTED));
  cr_assert_eq(g->order->stock->n_rejected_lines, 1);
  cr_assert_eq(g->order->stock->rejected_lines[0]->reason,
               SHOP__INVENTORY__V1__REJECT_REASON__REJECT_REASON_OUT_OF_STOCK);
  cr_assert_null(g->order->payment->captured);
  db_conn *inv = stack_db("shop_inventory"), *pay = stack_db("shop_payment");
  inventory_level l = level(inv, p);
  cr_assert_eq(l.available, 1);
  cr_assert_eq(l.reserved, 0);
  cr_assert_eq(attempts(pay, r->order_id, PAYMENT_OP_CAPTURE), 0, "nothing captured");
  cr_assert_eq(approved(pay, r->order_id, PAYMENT_OP_VOID), 1);
  db_close(inv);
  db_close(pay);
  free_msg(g);
  free_msg(r);
}

Test(orders, a_declined_card_cancels_and_releases_the_reserved_stock) {
  who a, c;
  char p[37];
  actors(&a, &c, 4, 1000, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 3, "tok_decline");
  Shop__Order__V1__GetOrderResponse *g = wait_order(
      &c, r->order_id,
      (want){.status = ST(CANCELLED), .reason = CR(PAYMENT_FAILED), .stock = RES(RELEASED)},
      WAIT_MS);
  cr_assert_eq(g->order->payment->status, PAY(FAILED));
  cr_assert_eq(g->order->payment->failure_reason,
               SHOP__PAYMENT__V1__PAYMENT_FAILURE_REASON__PAYMENT_FAILURE_REASON_DECLINED);
  db_conn *inv = stack_db("shop_inventory");
  inventory_level l = level(inv, p);
  cr_assert_eq(l.available, 4);
  cr_assert_eq(l.reserved, 0);
  db_close(inv);
  free_msg(g);
  free_msg(r);
}

Test(orders, a_customer_cancels_a_confirmed_order_and_gets_one_refund_and_one_release) {
  who a, c;
  char p[37];
  actors(&a, &c, 6, 700, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 2, "tok_visa");
  free_msg(wait_order(&c, r->order_id, (want){.status = ST(CONFIRMED), .payment = PAY(CAPTURED)},
                      WAIT_MS));
  Shop__Order__V1__CancelOrderRequest cr = SHOP__ORDER__V1__CANCEL_ORDER_REQUEST__INIT;
  cr.order_id = r->order_id;
  cr.reason = "found it cheaper";
  Shop__Order__V1__CancelOrderResponse *cres = NULL;
  rpc_status st;
  const char *k = stack_key();
  cr_assert_eq(stack_call_at(ocmd(), OCMD_SVC, "CancelOrder", &cr.base, (ProtobufCMessage **)&cres,
                             c.token, k, &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(cres->status, ST(CANCELLED));
  cr_assert_eq(cres->consistency->version, 3);
  /* The same call again is answered from the idempotency record. */
  cr_assert_eq(stack_call_at(ocmd(), OCMD_SVC, "CancelOrder", &cr.base, NULL, c.token, k, &st),
               STATUS_OK, "%s", st.message);
  Shop__Order__V1__GetOrderResponse *g = wait_order(&c, r->order_id,
                                                    (want){.status = ST(CANCELLED),
                                                           .reason = CR(CUSTOMER_REQUESTED),
                                                           .payment = PAY(REFUNDED),
                                                           .stock = RES(RELEASED)},
                                                    WAIT_MS);
  cr_assert_str_eq(g->order->cancel_reason_text, "found it cheaper");
  cr_assert_eq(g->order->payment->refunded->units, 1400);
  db_conn *inv = stack_db("shop_inventory"), *pay = stack_db("shop_payment");
  inventory_level l = level(inv, p);
  cr_assert_eq(l.available, 6);
  cr_assert_eq(l.reserved, 0);
  int rs = 0;
  int64_t rv = 0;
  char err[512];
  cr_assert_eq(inventory_reservation_get(inv, r->order_id, &rs, &rv, err, sizeof err), STATUS_OK);
  cr_assert_eq(rs, RES(RELEASED));
  cr_assert_eq(rv, 2, "reserved, then released once");
  cr_assert_eq(approved(pay, r->order_id, PAYMENT_OP_REFUND), 1, "refunded once");
  cr_assert_eq(attempts(pay, r->order_id, PAYMENT_OP_VOID), 0);
  db_close(inv);
  db_close(pay);
  free_msg(g);
  free_msg(cres);
  free_msg(r);
}

Test(orders, ship_order_ships_the_stock_and_cancel_after_it_is_refused) {
  who a, c;
  char p[37];
  actors(&a, &c, 5, 990, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 2, "tok_visa");
  free_msg(wait_order(&c, r->order_id, (want){.status = ST(CONFIRMED), .payment = PAY(CAPTURED)},
                      WAIT_MS));
  Shop__Order__V1__ShipOrderRequest sr = SHOP__ORDER__V1__SHIP_ORDER_REQUEST__INIT;
  sr.order_id = r->order_id;
  sr.carrier = "DHL";
  sr.tracking_number = "JD0001";
  rpc_status st;
  cr_assert_eq(
      stack_call_at(ocmd(), OCMD_SVC, "ShipOrder", &sr.base, NULL, c.token, stack_key(), &st),
      STATUS_PERMISSION_DENIED, "customers do not ship");
  Shop__Order__V1__ShipOrderResponse *sres = NULL;
  cr_assert_eq(stack_call_at(ocmd(), OCMD_SVC, "ShipOrder", &sr.base, (ProtobufCMessage **)&sres,
                             a.token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(sres->status, ST(SHIPPED));
  Shop__Order__V1__GetOrderResponse *g =
      wait_order(&c, r->order_id, (want){.status = ST(SHIPPED), .stock = RES(SHIPPED)}, WAIT_MS);
  cr_assert_str_eq(g->order->carrier, "DHL");
  cr_assert_str_eq(g->order->tracking_number, "JD0001");
  db_conn *inv = stack_db("shop_inventory");
  inventory_level l = level(inv, p);
  cr_assert_eq(l.available, 3);
  cr_assert_eq(l.reserved, 0);
  cr_assert_eq(l.shipped, 2);
  db_close(inv);
  Shop__Order__V1__CancelOrderRequest cr = SHOP__ORDER__V1__CANCEL_ORDER_REQUEST__INIT;
  cr.order_id = r->order_id;
  cr_assert_eq(
      stack_call_at(ocmd(), OCMD_SVC, "CancelOrder", &cr.base, NULL, c.token, stack_key(), &st),
      STATUS_FAILED_PRECONDITION);
  cr_assert(strstr(st.message, "SHIPPED") != NULL, "%s", st.message);
  free_msg(g);
  free_msg(sres);
  free_msg(r);
}

Test(orders, create_order_refuses_unknown_archived_over_limit_and_repriced_orders) {
  who a, c;
  admin(&a);
  customer(&c);
  char p[37], archived[37], unknown[37];
  product(&a, 5, 1000, 2, p);
  product(&a, 5, 1000, 0, archived);
  events_uuid_v7(unknown);
  Shop__Product__V1__ArchiveProductRequest ar = SHOP__PRODUCT__V1__ARCHIVE_PRODUCT_REQUEST__INIT;
  ar.product_id = archived;
  Shop__Product__V1__ArchiveProductResponse *arr = NULL;
  rpc_status st;
  cr_assert_eq(stack_call_at(stack_url("product-command"), PCMD_SVC, "ArchiveProduct", &ar.base,
                             (ProtobufCMessage **)&arr, a.token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  stack_product_seen(archived, arr->consistency);
  free_msg(arr);

  struct {
    const char *product;
    int32_t qty;
    int64_t expected; /* -1: none */
    status_code want;
    const char *field;
  } cases[] = {
      {unknown, 1, -1, STATUS_NOT_FOUND, "lines[0].product_id"},
      {archived, 1, -1, STATUS_FAILED_PRECONDITION, "lines[0].product_id"},
      {p, 3, -1, STATUS_INVALID_ARGUMENT, "lines[0].quantity"},
      {p, 1, 999, STATUS_FAILED_PRECONDITION, "expected_total"},
      {p, 0, -1, STATUS_INVALID_ARGUMENT, "lines[0].quantity"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    req_order o;
    req_order_init(&o, "tok_visa");
    req_order_line(&o, cases[i].product, cases[i].qty);
    Shop__Common__V1__Money m = SHOP__COMMON__V1__MONEY__INIT;
    if (cases[i].expected >= 0) {
      m.units = cases[i].expected;
      m.currency = "EUR";
      o.req.expected_total = &m;
    }
    cr_assert_eq(stack_call_at(ocmd(), OCMD_SVC, "CreateOrder", &o.req.base, NULL, c.token,
                               stack_key(), &st),
                 cases[i].want, "case %zu: %s %s", i, status_name(st.code), st.message);
    bool named = false;
    for (size_t v = 0; v < st.n_violations; v++)
      named = named || strcmp(st.violations[v].field, cases[i].field) == 0;
    cr_assert(named, "case %zu names %s: %s", i, cases[i].field, st.message);
  }
  /* Without an idempotency key a command is refused by the RPC layer. */
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, p, 1);
  cr_assert_eq(
      stack_call_at(ocmd(), OCMD_SVC, "CreateOrder", &o.req.base, NULL, c.token, NULL, &st),
      STATUS_INVALID_ARGUMENT);
  /* Without a token, no order at all. */
  cr_assert_eq(
      stack_call_at(ocmd(), OCMD_SVC, "CreateOrder", &o.req.base, NULL, NULL, stack_key(), &st),
      STATUS_UNAUTHENTICATED);
  Shop__Order__V1__ListOrdersByCustomerResponse *mine = NULL;
  Shop__Order__V1__ListOrdersByCustomerRequest lr =
      SHOP__ORDER__V1__LIST_ORDERS_BY_CUSTOMER_REQUEST__INIT;
  cr_assert_eq(stack_call_at(oqry(), OQRY_SVC, "ListOrdersByCustomer", &lr.base,
                             (ProtobufCMessage **)&mine, c.token, NULL, &st),
               STATUS_OK);
  cr_assert_eq(mine->n_orders, 0, "no refused order was placed");
  free_msg(mine);
}

/* order-command keeps the products it priced (config/test.yaml: for 60 s,
 * longer than this test waits) and forgets one when its event comes: an
 * order placed once product-query shows the new price is priced at it
 * within the event hop, as it would be by product-query itself. */
static status_code place_expecting(const who *c, const char *product_id, int64_t total,
                                   Shop__Order__V1__CreateOrderResponse **r, rpc_status *st) {
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, product_id, 1);
  Shop__Common__V1__Money m = SHOP__COMMON__V1__MONEY__INIT;
  m.units = total;
  m.currency = "EUR";
  o.req.expected_total = &m;
  free_msg(*r);
  *r = NULL;
  return stack_call_at(ocmd(), OCMD_SVC, "CreateOrder", &o.req.base, (ProtobufCMessage **)r,
                       c->token, stack_key(), st);
}

Test(orders, a_repriced_product_is_priced_anew_though_order_command_keeps_its_catalog) {
  who a, c;
  char p[37];
  actors(&a, &c, 100, 1000, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = NULL;
  rpc_status st;
  for (int i = 0; i < 2; i++)
    cr_assert_eq(place_expecting(&c, p, 1000, &r, &st), STATUS_OK, "order %d: %s", i, st.message);

  Shop__Product__V1__SetPriceRequest sp = SHOP__PRODUCT__V1__SET_PRICE_REQUEST__INIT;
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  price.units = 1500;
  price.currency = "EUR";
  sp.product_id = p;
  sp.price = &price;
  Shop__Product__V1__SetPriceResponse *spr = NULL;
  cr_assert_eq(stack_call_at(stack_url("product-command"), PCMD_SVC, "SetPrice", &sp.base,
                             (ProtobufCMessage **)&spr, a.token, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  stack_product_seen(p, spr->consistency);
  free_msg(spr);

  /* Each refused attempt has a key of its own (a refusal is recorded with
   * its key). */
  status_code code = STATUS_UNKNOWN;
  WAIT_UNTIL((code = place_expecting(&c, p, 1500, &r, &st)) == STATUS_OK, 3000,
             "the new price is not taken: %s %s", status_name(code), st.message);
  cr_assert_eq(r->lines[0]->unit_price->units, 1500);
  cr_assert_eq(place_expecting(&c, p, 1000, &r, &st), STATUS_FAILED_PRECONDITION,
               "the old price is gone for good: %s", st.message);
  free_msg(r);
}

Test(orders, admins_list_orders_by_status_and_stuck_orders_page_by_page) {
  who a, c;
  char p[37];
  actors(&a, &c, 10, 100, 0, p);
  char ids[3][37];
  for (int i = 0; i < 3; i++) {
    Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 1, "tok_visa");
    snprintf(ids[i], 37, "%s", r->order_id);
    free_msg(r);
  }
  for (int i = 0; i < 3; i++)
    free_msg(
        wait_order(&c, ids[i], (want){.status = ST(CONFIRMED), .payment = PAY(CAPTURED)}, WAIT_MS));
  /* Customers may not list by status or stuck orders. */
  Shop__Order__V1__ListStuckOrdersRequest sr = SHOP__ORDER__V1__LIST_STUCK_ORDERS_REQUEST__INIT;
  rpc_status st;
  cr_assert_eq(
      stack_call_at(oqry(), OQRY_SVC, "ListStuckOrders", &sr.base, NULL, c.token, NULL, &st),
      STATUS_PERMISSION_DENIED);
  sr.status = ST(SHIPPED);
  cr_assert_eq(
      stack_call_at(oqry(), OQRY_SVC, "ListStuckOrders", &sr.base, NULL, a.token, NULL, &st),
      STATUS_INVALID_ARGUMENT);
  /* Every CONFIRMED order, oldest first: ours are among them, in the
   * order they were placed. */
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  page.page_size = 2;
  Shop__Order__V1__ListOrdersByStatusRequest lr =
      SHOP__ORDER__V1__LIST_ORDERS_BY_STATUS_REQUEST__INIT;
  lr.status = ST(CONFIRMED);
  lr.page = &page;
  int seen = 0, pages = 0;
  char token[PAGE_TOKEN_MAX] = "";
  int64_t last = 0;
  do {
    /* Two small pages to walk the tokens, then big ones: the list holds
     * every CONFIRMED order the test database ever had. */
    page.page_size = pages < 2 ? 2 : 500;
    page.page_token = token;
    Shop__Order__V1__ListOrdersByStatusResponse *r = NULL;
    cr_assert_eq(stack_call_at(oqry(), OQRY_SVC, "ListOrdersByStatus", &lr.base,
                               (ProtobufCMessage **)&r, a.token, NULL, &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_leq(r->n_orders, (size_t)page.page_size);
    for (size_t i = 0; i < r->n_orders; i++) {
      const Shop__Order__V1__Order *o = r->orders[i];
      cr_assert_eq(o->status, ST(CONFIRMED));
      int64_t t = o->created_at->seconds * 1000 + o->created_at->nanos / 1000000;
      cr_assert_geq(t, last, "oldest first");
      last = t;
      if (seen < 3 && strcmp(o->order_id, ids[seen]) == 0) seen++;
    }
    snprintf(token, sizeof token, "%s", r->page->next_page_token);
    free_msg(r);
    pages++;
  } while (token[0] != '\0' && pages < 1000);
  cr_assert_eq(seen, 3, "all three, in order, across pages");
  /* Stuck: CONFIRMED orders older than 0 s include ours; older than a day
   * they do not. */
  sr.status = ST(CONFIRMED);
  sr.older_than_seconds = 86400;
  Shop__Order__V1__ListStuckOrdersResponse *sres = NULL;
  cr_assert_eq(stack_call_at(oqry(), OQRY_SVC, "ListStuckOrders", &sr.base,
                             (ProtobufCMessage **)&sres, a.token, NULL, &st),
               STATUS_OK, "%s", st.message);
  for (size_t i = 0; i < sres->n_orders; i++)
    for (int k = 0; k < 3; k++) cr_assert_str_neq(sres->orders[i]->order_id, ids[k]);
  free_msg(sres);
}

/* ---- 100 at once -------------------------------------------------------------------------------
 */

#define RACERS 100

typedef struct racer {
  pthread_t t;
  const who *w;
  const char *product_id;
  char key[96];
  char order_id[37];
  status_code code;
  char message[256];
  pthread_barrier_t *start;
} racer;

static void *racer_main(void *arg) {
  racer *r = arg;
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, r->product_id, 1);
  rpc_call_opts opts = {.token = r->w->token, .idempotency_key = r->key, .timeout_ms = 60000};
  rpc_status st;
  ProtobufCMessage *out = NULL;
  pthread_barrier_wait(r->start);
  r->code = rpc_client_call_sync(stack_client(ocmd()), OCMD_SVC, "CreateOrder", &o.req.base, &out,
                                 &opts, &st);
  snprintf(r->message, sizeof r->message, "%.200s", st.message);
  if (out != NULL) {
    snprintf(r->order_id, sizeof r->order_id, "%s",
             ((Shop__Order__V1__CreateOrderResponse *)out)->order_id);
    free_msg(out);
  }
  return NULL;
}

/* Lists all of w's orders (at most 500). */
static Shop__Order__V1__ListOrdersByCustomerResponse *list_mine(const who *w) {
  Shop__Order__V1__ListOrdersByCustomerRequest req =
      SHOP__ORDER__V1__LIST_ORDERS_BY_CUSTOMER_REQUEST__INIT;
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  page.page_size = 500;
  req.page = &page;
  Shop__Order__V1__ListOrdersByCustomerResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call_at(oqry(), OQRY_SVC, "ListOrdersByCustomer", &req.base,
                             (ProtobufCMessage **)&r, w->token, NULL, &st),
               STATUS_OK, "%s", st.message);
  return r;
}

/* True when all n orders are settled: confirmed and captured, or
 * cancelled with the authorization voided. */
static bool all_settled(const Shop__Order__V1__ListOrdersByCustomerResponse *l, size_t n,
                        int *confirmed, int *cancelled) {
  *confirmed = *cancelled = 0;
  if (l->n_orders != n) return false;
  for (size_t i = 0; i < l->n_orders; i++) {
    const Shop__Order__V1__Order *o = l->orders[i];
    if (o->status == ST(CONFIRMED) && o->payment->status == PAY(CAPTURED))
      (*confirmed)++;
    else if (o->status == ST(CANCELLED) && o->payment->status == PAY(VOIDED))
      (*cancelled)++;
    else
      return false;
  }
  return true;
}

Test(orders, a_hundred_concurrent_one_unit_orders_against_stock_ten_confirm_exactly_ten) {
  who a, c;
  char p[37];
  actors(&a, &c, 10, 500, 0, p);
  stack_client(ocmd()); /* opened before the threads share it */
  static racer r[RACERS];
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, RACERS);
  for (int i = 0; i < RACERS; i++) {
    r[i] = (racer){.w = &c, .product_id = p, .start = &start};
    stack_unique(r[i].key, sizeof r[i].key, "race");
    cr_assert_eq(pthread_create(&r[i].t, NULL, racer_main, &r[i]), 0);
  }
  for (int i = 0; i < RACERS; i++) pthread_join(r[i].t, NULL);
  pthread_barrier_destroy(&start);
  for (int i = 0; i < RACERS; i++)
    cr_assert_eq(r[i].code, STATUS_OK, "CreateOrder %d: %s: %s", i, status_name(r[i].code),
                 r[i].message);

  int confirmed = 0, cancelled = 0;
  Shop__Order__V1__ListOrdersByCustomerResponse *l = NULL;
  WAIT_UNTIL((free_msg(l), l = list_mine(&c), all_settled(l, RACERS, &confirmed, &cancelled)),
             90000, "%d orders settled (last: %zu orders, %d confirmed, %d cancelled)", RACERS,
             l->n_orders, confirmed, cancelled);
  cr_assert_eq(confirmed, 10);
  cr_assert_eq(cancelled, 90);
  db_conn *inv = stack_db("shop_inventory"), *pay = stack_db("shop_payment");
  inventory_level lv = level(inv, p);
  cr_assert_eq(lv.available, 0);
  cr_assert_eq(lv.reserved, 10);
  cr_assert_eq(lv.version, 11, "one change per reservation, no other");
  for (size_t i = 0; i < l->n_orders; i++) {
    const Shop__Order__V1__Order *o = l->orders[i];
    if (o->status == ST(CANCELLED)) {
      cr_assert_eq(o->cancel_reason, CR(INVENTORY_REJECTED));
      cr_assert_eq(attempts(pay, o->order_id, PAYMENT_OP_CAPTURE), 0, "nothing captured");
      cr_assert_eq(approved(pay, o->order_id, PAYMENT_OP_VOID), 1, "the authorization voided");
    } else {
      cr_assert_eq(approved(pay, o->order_id, PAYMENT_OP_CAPTURE), 1);
    }
    cr_assert_eq(approved(pay, o->order_id, PAYMENT_OP_AUTHORIZE), 1);
  }
  /* Newest first. */
  for (size_t i = 1; i < l->n_orders; i++)
    cr_assert_geq(l->orders[i - 1]->created_at->seconds, l->orders[i]->created_at->seconds);
  db_close(inv);
  db_close(pay);
  free_msg(l);
}

typedef struct twin {
  pthread_t t;
  const who *w;
  const req_order *o;
  const char *key;
  char order_id[37];
  status_code code;
  pthread_barrier_t *start;
} twin;

static void *twin_main(void *arg) {
  twin *t = arg;
  rpc_call_opts opts = {.token = t->w->token, .idempotency_key = t->key};
  rpc_status st;
  ProtobufCMessage *out = NULL;
  pthread_barrier_wait(t->start);
  t->code = rpc_client_call_sync(stack_client(ocmd()), OCMD_SVC, "CreateOrder", &t->o->req.base,
                                 &out, &opts, &st);
  if (out != NULL) {
    snprintf(t->order_id, sizeof t->order_id, "%s",
             ((Shop__Order__V1__CreateOrderResponse *)out)->order_id);
    free_msg(out);
  }
  return NULL;
}

Test(orders, the_same_create_order_sent_twice_at_once_makes_one_order_and_one_authorization) {
  who a, c;
  char p[37];
  actors(&a, &c, 5, 800, 0, p);
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, p, 1);
  stack_client(ocmd());
  const char *k = stack_key();
  pthread_barrier_t start;
  pthread_barrier_init(&start, NULL, 2);
  twin t[2];
  for (int i = 0; i < 2; i++) {
    t[i] = (twin){.w = &c, .o = &o, .key = k, .start = &start};
    cr_assert_eq(pthread_create(&t[i].t, NULL, twin_main, &t[i]), 0);
  }
  for (int i = 0; i < 2; i++) pthread_join(t[i].t, NULL);
  pthread_barrier_destroy(&start);
  cr_assert_eq(t[0].code, STATUS_OK);
  cr_assert_eq(t[1].code, STATUS_OK);
  cr_assert_str_eq(t[0].order_id, t[1].order_id, "one order");
  free_msg(wait_order(&c, t[0].order_id, (want){.status = ST(CONFIRMED), .payment = PAY(CAPTURED)},
                      WAIT_MS));
  Shop__Order__V1__ListOrdersByCustomerResponse *l = list_mine(&c);
  cr_assert_eq(l->n_orders, 1);
  db_conn *pay = stack_db("shop_payment"), *inv = stack_db("shop_inventory");
  cr_assert_eq(attempts(pay, t[0].order_id, PAYMENT_OP_AUTHORIZE), 1, "one authorization");
  cr_assert_eq(level(inv, p).reserved, 1);
  db_close(pay);
  db_close(inv);
  free_msg(l);
}

Test(orders, with_the_payment_worker_stopped_the_deadline_cancels_and_the_stock_comes_back) {
  who a, c;
  char p[37];
  actors(&a, &c, 3, 450, 0, p);
  /* An order-command whose orders get a 2 s deadline; the sweeper of
   * whichever instance holds the sweeper lock cancels them. */
  char url[64];
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", proc_free_tcp_port());
  const char *env[] = {"SHOP_ORDER__DEADLINE_S=2", NULL};
  proc *extra = stack_start("order-command", url, env);
  pid_t pw = stack_pid("payment-worker");
  cr_assert_eq(kill(pw, SIGSTOP), 0);
  req_order o;
  req_order_init(&o, "tok_visa");
  req_order_line(&o, p, 2);
  /* Placed under a known trace, which the sweeper's cancellation goes on
   * with (the order row keeps it). */
  char tp[LOG_TRACEPARENT_SIZE], trace[LOG_TRACE_ID_SIZE];
  log_traceparent_child(NULL, tp);
  log_trace_id(tp, trace);
  log_scope scope;
  log_scope_enter(&scope, NULL, tp, NULL);
  Shop__Order__V1__CreateOrderResponse *r = place_at(url, &c, stack_key(), &o);
  log_scope_leave(&scope);
  Shop__Order__V1__GetOrderResponse *g = wait_order(
      &c, r->order_id,
      (want){.status = ST(CANCELLED), .reason = CR(DEADLINE_EXCEEDED), .stock = RES(RELEASED)},
      WAIT_MS);
  cr_assert_eq(g->order->payment->status, 0, "payment never answered");
  /* OrderCreated, OrderCancelled; InventoryReserved, InventoryReleased. */
  const char *topics[] = {TOPOLOGY_TOPIC_ORDER, TOPOLOGY_TOPIC_INVENTORY};
  for (size_t t = 0; t < 2; t++) {
    stack_record ev[8];
    size_t nev = stack_records(topics[t], r->order_id, ev, 8);
    cr_assert_eq(nev, 2, "%zu events of %s on %s", nev, r->order_id, topics[t]);
    for (size_t i = 0; i < nev; i++)
      cr_assert(strncmp(ev[i].traceparent + 3, trace, 32) == 0, "%s: '%s', not trace %s",
                ev[i].type, ev[i].traceparent, trace);
  }
  db_conn *inv = stack_db("shop_inventory"), *pay = stack_db("shop_payment");
  inventory_level l = level(inv, p);
  cr_assert_eq(l.available, 3, "the stock came back");
  cr_assert_eq(l.reserved, 0);
  /* Back on, payment authorizes the old order and voids it at once. */
  cr_assert_eq(kill(pw, SIGCONT), 0);
  free_msg(g);
  g = wait_order(&c, r->order_id, (want){.payment = PAY(VOIDED)}, 60000);
  cr_assert_eq(attempts(pay, r->order_id, PAYMENT_OP_CAPTURE), 0, "nothing captured");
  cr_assert_eq(stack_stop(extra), 0);
  db_close(inv);
  db_close(pay);
  free_msg(g);
  free_msg(r);
}

Test(orders, a_customer_can_neither_read_nor_cancel_another_customers_order) {
  who a, c, other;
  admin(&a);
  customer(&c);
  customer(&other);
  char p[37];
  product(&a, 5, 100, 0, p);
  Shop__Order__V1__CreateOrderResponse *r = place(&c, p, 1, "tok_visa");
  free_msg(wait_order(&c, r->order_id, (want){.status = ST(CONFIRMED)}, WAIT_MS));
  status_code code;
  free_msg(get(&other, r->order_id, &code));
  cr_assert_eq(code, STATUS_NOT_FOUND);
  Shop__Order__V1__CancelOrderRequest cr = SHOP__ORDER__V1__CANCEL_ORDER_REQUEST__INIT;
  cr.order_id = r->order_id;
  rpc_status st;
  cr_assert_eq(
      stack_call_at(ocmd(), OCMD_SVC, "CancelOrder", &cr.base, NULL, other.token, stack_key(), &st),
      STATUS_NOT_FOUND);
  Shop__Order__V1__ListOrdersByCustomerRequest lr =
      SHOP__ORDER__V1__LIST_ORDERS_BY_CUSTOMER_REQUEST__INIT;
  lr.customer_id = c.id;
  cr_assert_eq(stack_call_at(oqry(), OQRY_SVC, "ListOrdersByCustomer", &lr.base, NULL, other.token,
                             NULL, &st),
               STATUS_PERMISSION_DENIED);
  Shop__Order__V1__ListOrdersByStatusRequest ls =
      SHOP__ORDER__V1__LIST_ORDERS_BY_STATUS_REQUEST__INIT;
  ls.status = ST(CONFIRMED);
  cr_assert_eq(
      stack_call_at(oqry(), OQRY_SVC, "ListOrdersByStatus", &ls.base, NULL, other.token, NULL, &st),
      STATUS_PERMISSION_DENIED);
  Shop__Order__V1__ListOrdersByCustomerResponse *mine = list_mine(&other);
  cr_assert_eq(mine->n_orders, 0);
  free_msg(mine);
  /* The owner and an admin still see it, untouched. */
  Shop__Order__V1__GetOrderResponse *g = get(&a, r->order_id, &code);
  cr_assert_eq(code, STATUS_OK);
  cr_assert_eq(g->order->status, ST(CONFIRMED));
  free_msg(g);
  free_msg(r);
}

/* ---- Replay ------------------------------------------------------------------------------------
 */

typedef struct snapshot {
  int64_t outbox_max[3];
  int64_t orders[4], view[5], stock[4], reservations[3], payments[3], attempts;
  long ledger;
} snapshot;

static const char *const snap_dbs[3] = {"shop_order", "shop_inventory", "shop_payment"};

static void q(db_conn *c, const char *sql, const db_value *v, size_t nv, int64_t *out, int n) {
  char err[512];
  db_rows *r = NULL;
  cr_assert_eq(db_query(c, sql, v, nv, &r, err, sizeof err), STATUS_OK, "%s: %s", sql, err);
  cr_assert(db_rows_next(r));
  for (int i = 0; i < n; i++) out[i] = db_rows_i64(r, (unsigned)i);
  db_rows_free(r);
}

/* The ledger lines of the card processor's journal: every authorization,
 * capture, void or refund appends one (payment.h). */
static long ledger_lines(void) {
  char path[1024], line[8192];
  snprintf(path, sizeof path, "%s/journal", stack_cfg()->payment.state_dir);
  FILE *f = fopen(path, "r");
  if (f == NULL) return -1;
  long n = 0;
  while (fgets(line, sizeof line, f) != NULL) n += line[0] == 'L' && line[1] == '\t';
  fclose(f);
  return n;
}

static void snap(snapshot *s) {
  memset(s, 0, sizeof *s);
  for (int i = 0; i < 3; i++) {
    db_conn *c = stack_db(snap_dbs[i]);
    q(c, "SELECT COALESCE(MAX(id), 0) FROM outbox", NULL, 0, &s->outbox_max[i], 1);
    if (i == 0)
      q(c,
        "SELECT COUNT(*), COALESCE(SUM(version), 0), COALESCE(SUM(status), 0), "
        "COALESCE(SUM(stock_state * 8 + payment_state), 0) FROM orders",
        NULL, 0, s->orders, 4);
    if (i == 1) {
      char like[128];
      snprintf(like, sizeof like, "%s-%%", stack_run());
      db_value v[1] = {DB_STR(like)};
      q(c,
        "SELECT COALESCE(SUM(available), 0), COALESCE(SUM(reserved), 0), "
        "COALESCE(SUM(shipped), 0), COALESCE(SUM(version), 0) FROM stock_levels WHERE sku LIKE ?",
        v, 1, s->stock, 4);
      q(c,
        "SELECT COUNT(*), COALESCE(SUM(status), 0), COALESCE(SUM(version), 0) FROM "
        "reservations",
        NULL, 0, s->reservations, 3);
    }
    if (i == 2) {
      q(c, "SELECT COUNT(*), COALESCE(SUM(status), 0), COALESCE(SUM(version), 0) FROM payments",
        NULL, 0, s->payments, 3);
      q(c, "SELECT COUNT(*) FROM payment_attempts", NULL, 0, &s->attempts, 1);
    }
    db_close(c);
  }
  db_conn *c = stack_db("shop_order_read");
  q(c,
    "SELECT COUNT(*), COALESCE(SUM(version), 0), COALESCE(SUM(status), 0), "
    "COALESCE(SUM(payment_status), 0), COALESCE(SUM(stock_status), 0) FROM orders_view",
    NULL, 0, s->view, 5);
  db_close(c);
  s->ledger = ledger_lines();
}

/* The outbox rows after `after` in db, decoded: returns how many are
 * anything but a StockLevelChanged of a new product or a restock (which
 * the catalog tests running beside this one may cause). */
static int new_effects(const char *dbname, int64_t after) {
  db_conn *c = stack_db(dbname);
  char err[512];
  db_value v[1] = {DB_I64(after)};
  db_rows *r = NULL;
  cr_assert_eq(db_query(c, "SELECT envelope FROM outbox WHERE id > ?", v, 1, &r, err, sizeof err),
               STATUS_OK, "%s", err);
  int effects = 0;
  while (db_rows_next(r)) {
    size_t len = 0;
    const char *b = db_rows_str(r, 0, &len);
    events_envelope *ev = shop__events__v1__event_envelope__unpack(NULL, len, (const uint8_t *)b);
    cr_assert_not_null(ev);
    bool harmless = false;
    if (strcmp(ev->type, shop__inventory__v1__stock_level_changed__descriptor.name) == 0) {
      Shop__Inventory__V1__StockLevelChanged *e =
          shop__inventory__v1__stock_level_changed__unpack(NULL, ev->data.len, ev->data.data);
      harmless = e != NULL &&
                 (e->cause == SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_INITIAL ||
                  e->cause == SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESTOCKED);
      free_msg(e);
    }
    if (!harmless) {
      fprintf(stderr, "replay: new %s for %s in %s\n", ev->type, ev->key, dbname);
      effects++;
    }
    events_envelope_free(ev);
  }
  db_rows_free(r);
  db_close(c);
  return effects;
}

/* The consumer groups of the four order programs, and their database. */
static const struct {
  const char *program, *group, *db;
} groups[] = {
    {"order-command", TOPOLOGY_GROUP_ORDER_SAGA, "shop_order"},
    {"inventory-worker", TOPOLOGY_GROUP_INVENTORY_WORKER, "shop_inventory"},
    {"payment-worker", TOPOLOGY_GROUP_PAYMENT_WORKER, "shop_payment"},
    {"order-query", TOPOLOGY_GROUP_ORDER_QUERY, "shop_order_read"},
};
#define N_GROUPS (sizeof groups / sizeof groups[0])

/* Every group caught up and no outbox row unsent; why says what is not. */
static bool quiet(char *why, size_t len) {
  for (size_t i = 0; i < N_GROUPS; i++)
    if (!stack_quiet(&groups[i].group, 1, NULL, 0, why, len)) return false;
  return stack_quiet(NULL, 0, snap_dbs, 3, why, len);
}

/* stack_release lets the paused programs go on, even when the test fails. */
TestSuite(replay, .init = stack_require, .fini = stack_release, .timeout = 180);

Test(replay, replaying_every_consumer_group_on_a_quiet_stack_changes_nothing) {
  /* Some traffic of this test's own, in case it runs alone. */
  who a, c;
  char p[37];
  actors(&a, &c, 2, 100, 0, p);
  Shop__Order__V1__CreateOrderResponse *r1 = place(&c, p, 1, "tok_visa");
  Shop__Order__V1__CreateOrderResponse *r2 = place(&c, p, 5, "tok_visa");
  free_msg(wait_order(&c, r1->order_id, (want){.status = ST(CONFIRMED), .payment = PAY(CAPTURED)},
                      WAIT_MS));
  free_msg(wait_order(&c, r2->order_id, (want){.status = ST(CANCELLED), .payment = PAY(VOIDED)},
                      WAIT_MS));

  char why[200] = "";
  WAIT_UNTIL(quiet(why, sizeof why), 60000, "a quiet stack (%s)", why);
  snapshot before, after;
  snap(&before);

  /* Pause the four order programs (the runner owns them; they must not
   * die under it) until the broker drops them from their groups, forget
   * what their inboxes saw, rewind the groups to the start of this run,
   * and let them go on: they read everything this run produced again. */
  for (size_t i = 0; i < N_GROUPS; i++)
    cr_assert_eq(kill(stack_pid(groups[i].program), SIGSTOP), 0);
  for (size_t i = 0; i < N_GROUPS; i++) stack_group_reset(groups[i].group, groups[i].db, false);
  for (size_t i = 0; i < N_GROUPS; i++) kill(stack_pid(groups[i].program), SIGCONT);

  WAIT_UNTIL(quiet(why, sizeof why), 120000, "the replay finished (%s)", why);
  /* The inboxes were emptied: whatever they hold now was handled again. */
  for (size_t i = 0; i < N_GROUPS; i++) {
    db_conn *db = stack_db(groups[i].db);
    int64_t n = 0;
    db_value v[1] = {DB_STR(groups[i].group)};
    q(db, "SELECT COUNT(*) FROM processed_events WHERE consumer_group = ?", v, 1, &n, 1);
    db_close(db);
    cr_assert_gt(n, 0, "%s replayed nothing", groups[i].group);
  }
  snap(&after);
  cr_assert_eq(new_effects("shop_order", before.outbox_max[0]), 0, "no new order event");
  cr_assert_eq(new_effects("shop_inventory", before.outbox_max[1]), 0, "no new reservation");
  cr_assert_eq(new_effects("shop_payment", before.outbox_max[2]), 0, "no new payment event");
  cr_assert_eq(memcmp(before.orders, after.orders, sizeof before.orders), 0, "orders unchanged");
  cr_assert_eq(memcmp(before.view, after.view, sizeof before.view), 0, "read model unchanged");
  cr_assert_eq(memcmp(before.stock, after.stock, sizeof before.stock), 0, "stock unchanged");
  cr_assert_eq(memcmp(before.reservations, after.reservations, sizeof before.reservations), 0);
  cr_assert_eq(memcmp(before.payments, after.payments, sizeof before.payments), 0);
  cr_assert_eq(before.attempts, after.attempts, "no gateway call");
  cr_assert_eq(before.ledger, after.ledger, "no authorization, capture, void or refund");

  free_msg(r1);
  free_msg(r2);
}
