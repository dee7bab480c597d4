/* The order domain's pure rules: request checks, pricing from the
 * catalog, the saga's state machine, what cancel and ship allow. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "order/order.h"

#define P1 "01900000-0000-7000-8000-000000000001"
#define P2 "01900000-0000-7000-8000-000000000002"

/* A valid request with two lines, in storage the test owns. */
typedef struct req_fixture {
  Shop__Order__V1__CreateOrderRequest req;
  Shop__Order__V1__CreateOrderLine l[2];
  Shop__Order__V1__CreateOrderLine *lp[2];
  Shop__Order__V1__ShippingAddress a;
  Shop__Common__V1__Money expected;
} req_fixture;

static void fixture(req_fixture *f) {
  shop__order__v1__create_order_request__init(&f->req);
  for (int i = 0; i < 2; i++) {
    shop__order__v1__create_order_line__init(&f->l[i]);
    f->lp[i] = &f->l[i];
  }
  f->l[0].product_id = P1;
  f->l[0].quantity = 2;
  f->l[1].product_id = P2;
  f->l[1].quantity = 1;
  f->req.n_lines = 2;
  f->req.lines = f->lp;
  f->req.payment_token = "tok_visa";
  shop__order__v1__shipping_address__init(&f->a);
  f->a.recipient = "Ada Lovelace";
  f->a.line1 = "12 St James's Square";
  f->a.city = "London";
  f->a.postal_code = "SW1Y 4JH";
  f->a.country = "GB";
  f->a.phone = "+442079460000";
  f->req.shipping_address = &f->a;
  shop__common__v1__money__init(&f->expected);
}

static bool has(const check_violations *v, const char *field) {
  for (size_t i = 0; i < v->n && i < CHECK_MAX_VIOLATIONS; i++)
    if (strcmp(v->v[i].field, field) == 0) return true;
  return false;
}

static check_violations validate(const order_create_req *req) {
  check_violations v = {0};
  order_validate_create_order(req, &v);
  return v;
}

Test(order_rules, a_complete_request_passes_the_checks) {
  req_fixture f;
  fixture(&f);
  check_violations v = validate(&f.req);
  cr_assert_eq(v.n, 0, "first violation: %s %s", v.n > 0 ? v.v[0].field : "",
               v.n > 0 ? v.v[0].why : "");
}

Test(order_rules, lines_tokens_and_addresses_are_checked_field_by_field) {
  req_fixture f;
  fixture(&f);
  f.l[1].product_id = P1; /* the same product twice */
  f.l[0].quantity = 0;
  f.req.payment_token = "tok visa";
  f.a.country = "gb";
  f.a.phone = "0207";
  f.a.postal_code = "";
  check_violations v = validate(&f.req);
  cr_assert(has(&v, "lines[1].product_id"));
  cr_assert(has(&v, "lines[0].quantity"));
  cr_assert(has(&v, "payment_token"));
  cr_assert(has(&v, "shipping_address.country"));
  cr_assert(has(&v, "shipping_address.phone"));
  cr_assert(has(&v, "shipping_address.postal_code"));

  fixture(&f);
  f.req.n_lines = 0;
  f.req.shipping_address = NULL;
  v = validate(&f.req);
  cr_assert(has(&v, "lines"));
  cr_assert(has(&v, "shipping_address"));

  fixture(&f);
  f.l[0].product_id = "not-a-uuid";
  v = validate(&f.req);
  cr_assert(has(&v, "lines[0].product_id"));
}

static void product(order_product *p, int64_t price, int32_t max) {
  memset(p, 0, sizeof *p);
  p->found = true;
  p->price_units = price;
  snprintf(p->currency, sizeof p->currency, "EUR");
  snprintf(p->sku, sizeof p->sku, "SKU");
  snprintf(p->name, sizeof p->name, "Name");
  p->max_quantity_per_order = max;
}

Test(order_rules, prices_come_from_the_catalog_and_add_up_in_minor_units) {
  req_fixture f;
  fixture(&f);
  order_product p[2];
  product(&p[0], 1999, 0);
  product(&p[1], 1, 5);
  order_line lines[2];
  int64_t total = 0;
  check_violations v;
  char msg[256];
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg), STATUS_OK, "%s",
               msg);
  cr_assert_eq(lines[0].unit_price, 1999);
  cr_assert_eq(lines[0].line_total, 3998);
  cr_assert_eq(lines[1].line_total, 1);
  cr_assert_eq(total, 3999);
  cr_assert_str_eq(lines[0].product_id, P1);

  f.expected.units = 3999;
  f.expected.currency = "EUR";
  f.req.expected_total = &f.expected;
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg), STATUS_OK);
  f.expected.units = 3998;
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg),
               STATUS_FAILED_PRECONDITION);
  cr_assert_str_eq(v.v[0].field, "expected_total");
}

Test(order_rules, unknown_archived_over_limit_and_foreign_currency_products_are_refused) {
  req_fixture f;
  fixture(&f);
  order_product p[2];
  order_line lines[2];
  int64_t total;
  check_violations v;
  char msg[256];
  product(&p[0], 100, 0);
  product(&p[1], 100, 0);
  p[1].found = false;
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg), STATUS_NOT_FOUND);
  cr_assert_str_eq(v.v[0].field, "lines[1].product_id");
  product(&p[1], 100, 0);
  p[1].archived = true;
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg),
               STATUS_FAILED_PRECONDITION);
  product(&p[0], 100, 1); /* line 0 asks for 2 */
  product(&p[1], 100, 0);
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg),
               STATUS_INVALID_ARGUMENT);
  cr_assert_str_eq(v.v[0].field, "lines[0].quantity");
  product(&p[0], 100, 0);
  snprintf(p[0].currency, sizeof p[0].currency, "USD");
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg),
               STATUS_FAILED_PRECONDITION);
  product(&p[0], ORDER_TOTAL_MAX, 0);
  cr_assert_eq(order_price(&f.req, p, "EUR", lines, &total, &v, msg, sizeof msg),
               STATUS_OUT_OF_RANGE);
}

static order_saga_state pending(void) { return (order_saga_state){.status = ORDER_ST(PENDING)}; }

Test(order_saga, reserved_and_authorized_confirm_in_either_order) {
  order_saga_step a = order_saga_apply(pending(), ORDER_SAGA_RESERVED);
  cr_assert_eq(a.emit, 0);
  order_saga_step b = order_saga_apply(a.next, ORDER_SAGA_AUTHORIZED);
  cr_assert_eq(b.emit, ORDER_ST(CONFIRMED));
  cr_assert_eq(b.next.status, ORDER_ST(CONFIRMED));

  a = order_saga_apply(pending(), ORDER_SAGA_AUTHORIZED);
  cr_assert_eq(a.emit, 0);
  b = order_saga_apply(a.next, ORDER_SAGA_RESERVED);
  cr_assert_eq(b.emit, ORDER_ST(CONFIRMED));
}

Test(order_saga, a_rejection_or_a_failed_authorization_cancels_a_pending_order) {
  order_saga_step s = order_saga_apply(pending(), ORDER_SAGA_REJECTED);
  cr_assert_eq(s.emit, ORDER_ST(CANCELLED));
  cr_assert_eq(s.cancel_reason, ORDER_CANCEL(INVENTORY_REJECTED));
  /* The authorization that arrives afterwards changes the record only. */
  order_saga_step t = order_saga_apply(s.next, ORDER_SAGA_AUTHORIZED);
  cr_assert_eq(t.emit, 0);
  cr_assert_eq(t.next.status, ORDER_ST(CANCELLED));
  cr_assert_eq(t.next.payment, ORDER_PAY_AUTHORIZED);

  s = order_saga_apply(pending(), ORDER_SAGA_AUTH_FAILED);
  cr_assert_eq(s.cancel_reason, ORDER_CANCEL(PAYMENT_FAILED));
  t = order_saga_apply(s.next, ORDER_SAGA_RESERVED);
  cr_assert_eq(t.emit, 0, "no second cancellation");
}

Test(order_saga, a_failed_capture_cancels_a_confirmed_order) {
  order_saga_state c = {.status = ORDER_ST(CONFIRMED),
                        .stock = ORDER_STOCK_RESERVED,
                        .payment = ORDER_PAY_AUTHORIZED};
  order_saga_step s = order_saga_apply(c, ORDER_SAGA_CAPTURE_FAILED);
  cr_assert_eq(s.emit, ORDER_ST(CANCELLED));
  cr_assert_eq(s.cancel_reason, ORDER_CANCEL(CAPTURE_FAILED));
  s = order_saga_apply(c, ORDER_SAGA_CAPTURED);
  cr_assert_eq(s.emit, 0);
  cr_assert_eq(s.next.payment, ORDER_PAY_CAPTURED);
}

Test(order_saga, the_deadline_cancels_only_pending_orders_and_repeats_change_nothing) {
  order_saga_step s = order_saga_apply(pending(), ORDER_SAGA_DEADLINE);
  cr_assert_eq(s.cancel_reason, ORDER_CANCEL(DEADLINE_EXCEEDED));
  order_saga_state c = {.status = ORDER_ST(CONFIRMED)};
  cr_assert_eq(order_saga_apply(c, ORDER_SAGA_DEADLINE).emit, 0);
  order_saga_step r = order_saga_apply(pending(), ORDER_SAGA_RESERVED);
  order_saga_step again = order_saga_apply(r.next, ORDER_SAGA_RESERVED);
  cr_assert_eq(memcmp(&again.next, &r.next, sizeof r.next), 0);
  cr_assert_eq(again.emit, 0);
}

Test(order_saga, cancel_and_ship_name_the_state_that_refuses_them) {
  char msg[200];
  order_saga_state s = {.status = ORDER_ST(SHIPPED)};
  cr_assert_not(order_cancel_allowed(&s, msg, sizeof msg));
  cr_assert(strstr(msg, "SHIPPED") != NULL, "%s", msg);
  s.status = ORDER_ST(CONFIRMED);
  cr_assert(order_cancel_allowed(&s, msg, sizeof msg));
  s.payment = ORDER_PAY_AUTHORIZED;
  cr_assert_eq(order_ship_allowed(&s, msg, sizeof msg), STATUS_UNAVAILABLE,
               "not captured yet: it comes by itself, retry");
  cr_assert(strstr(msg, "try again") != NULL, "%s", msg);
  s.payment = ORDER_PAY_CAPTURED;
  cr_assert_eq(order_ship_allowed(&s, msg, sizeof msg), STATUS_OK);
  s.status = ORDER_ST(PENDING);
  cr_assert_eq(order_ship_allowed(&s, msg, sizeof msg), STATUS_FAILED_PRECONDITION);
  cr_assert(strstr(msg, "PENDING") != NULL, "%s", msg);
}
