/* The order domain's pure rules: request checks, pricing, the saga's
 * state machine. See order.h. */
#include <stdio.h>
#include <string.h>

#include "check/check.h"
#include "money/money.h"
#include "order/order.h"

/* ---- Request checks -------------------------------------------------------------------- */

static const char *token_check(const char *t) {
  size_t n = strlen(t);
  if (n == 0) return "is required";
  if (n > ORDER_TOKEN_MAX) return "must be at most 256 characters";
  for (const char *p = t; *p != '\0'; p++)
    if (*p <= ' ' || *p > '~') return "must be printable ASCII without spaces";
  return NULL;
}

static const char *postal_check(const char *s) {
  const char *why = check_text(s, 1, 20, 0);
  if (why != NULL) return why;
  for (const char *p = s; *p != '\0'; p++) {
    char c = *p;
    if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == ' ' ||
          c == '-'))
      return "must hold only letters, digits, spaces and '-'";
  }
  return NULL;
}

static const char *country_check(const char *s) {
  if (strlen(s) != 2 || s[0] < 'A' || s[0] > 'Z' || s[1] < 'A' || s[1] > 'Z')
    return "must be an ISO 3166-1 alpha-2 code in upper case";
  return NULL;
}

static const char *phone_check(const char *s) {
  if (s[0] == '\0') return NULL;
  size_t digits = 0;
  if (s[0] != '+') return "must be in E.164 form (+ and 7 to 15 digits)";
  for (const char *p = s + 1; *p != '\0'; p++) {
    if (*p < '0' || *p > '9') return "must be in E.164 form (+ and 7 to 15 digits)";
    digits++;
  }
  if (digits < 7 || digits > 15) return "must be in E.164 form (+ and 7 to 15 digits)";
  return NULL;
}

void order_validate_create_order(const order_create_req *in, check_violations *v) {
  char field[64];
  if (in->n_lines == 0) check_violation_add(v, "lines", "at least one line is required");
  if (in->n_lines > ORDER_LINES_MAX) check_violation_add(v, "lines", "must be at most 100 lines");
  for (size_t i = 0; i < in->n_lines && i < ORDER_LINES_MAX; i++) {
    const Shop__Order__V1__CreateOrderLine *line = in->lines[i];
    snprintf(field, sizeof field, "lines[%zu].product_id", i);
    if (!check_id(line->product_id)) {
      check_violation_add(v, field, "must be a product id");
    } else {
      for (size_t j = 0; j < i; j++)
        if (strcmp(in->lines[j]->product_id, line->product_id) == 0) {
          check_violation_add(v, field,
                              "names a product of an earlier line (one line per product)");
          break;
        }
    }
    snprintf(field, sizeof field, "lines[%zu].quantity", i);
    if (line->quantity < 1) check_violation_add(v, field, "must be at least 1");
    if (line->quantity > ORDER_QUANTITY_MAX)
      check_violation_add(v, field, "must be at most 1000000");
  }
  check_violation_add(v, "payment_token", token_check(in->payment_token));
  const order_address *a = in->shipping_address;
  if (a == NULL) {
    check_violation_add(v, "shipping_address", "is required");
  } else {
    check_violation_add(v, "shipping_address.recipient", check_text(a->recipient, 1, 200, 0));
    check_violation_add(v, "shipping_address.line1", check_text(a->line1, 1, 200, 0));
    check_violation_add(v, "shipping_address.line2", check_text(a->line2, 0, 200, 0));
    check_violation_add(v, "shipping_address.city", check_text(a->city, 1, 100, 0));
    check_violation_add(v, "shipping_address.region", check_text(a->region, 0, 100, 0));
    check_violation_add(v, "shipping_address.postal_code", postal_check(a->postal_code));
    check_violation_add(v, "shipping_address.country", country_check(a->country));
    check_violation_add(v, "shipping_address.phone", phone_check(a->phone));
  }
  if (in->expected_total != NULL) {
    if (in->expected_total->units < 0)
      check_violation_add(v, "expected_total.units", "must not be negative");
    check_violation_add(v, "expected_total.currency",
                        money_currency_check(in->expected_total->currency));
  }
}

void order_validate_cancel_order(const Shop__Order__V1__CancelOrderRequest *in,
                                 check_violations *v) {
  if (!check_id(in->order_id)) check_violation_add(v, "order_id", "must be an order id");
  check_violation_add(v, "reason",
                      check_text(in->reason, 0, ORDER_REASON_MAX, CHECK_TEXT_MULTILINE));
}

void order_validate_ship_order(const Shop__Order__V1__ShipOrderRequest *in, check_violations *v) {
  if (!check_id(in->order_id)) check_violation_add(v, "order_id", "must be an order id");
  check_violation_add(v, "carrier", check_text(in->carrier, 0, ORDER_SHIP_TEXT_MAX, 0));
  check_violation_add(v, "tracking_number",
                      check_text(in->tracking_number, 0, ORDER_SHIP_TEXT_MAX, 0));
}

void order_validate_get_order(const Shop__Order__V1__GetOrderRequest *in, check_violations *v) {
  if (!check_id(in->order_id)) check_violation_add(v, "order_id", "must be an order id");
}

void order_validate_list_orders_by_customer(const Shop__Order__V1__ListOrdersByCustomerRequest *in,
                                            const char *caller_id, check_violations *v) {
  const char *customer = in->customer_id[0] != '\0' ? in->customer_id : caller_id;
  check_violation_add(v, "customer_id", check_text(customer, 1, ORDER_CUSTOMER_MAX, 0));
}

void order_validate_list_orders_by_status(const Shop__Order__V1__ListOrdersByStatusRequest *in,
                                          check_violations *v) {
  int s = (int)in->status;
  if (s < ORDER_ST(PENDING) || s > ORDER_ST(CANCELLED))
    check_violation_add(v, "status", "must be a known status other than UNSPECIFIED");
}

void order_validate_list_stuck_orders(const Shop__Order__V1__ListStuckOrdersRequest *in,
                                      check_violations *v) {
  int s = (int)in->status;
  if (in->older_than_seconds < 0 || in->older_than_seconds > 100LL * 365 * 86400)
    check_violation_add(v, "older_than_seconds", "must be 0 to 100 years");
  if (s != 0 && s != ORDER_ST(PENDING) && s != ORDER_ST(CONFIRMED))
    check_violation_add(v, "status", "must be PENDING, CONFIRMED or UNSPECIFIED (both)");
}

/* ---- Pricing ------------------------------------------------------------------------------- */

static status_code price_fail(check_violations *v, const char *field, const char *why,
                              status_code code, char *msg, size_t msglen) {
  check_violation_add(v, field, why);
  snprintf(msg, msglen, "%s %s", field, why);
  return code;
}

status_code order_price(const order_create_req *in, const order_product *products,
                        const char *currency, order_line *lines, int64_t *total,
                        check_violations *v, char *msg, size_t msglen) {
  memset(v, 0, sizeof *v);
  int64_t sum = 0;
  char field[64];
  for (size_t i = 0; i < in->n_lines; i++) {
    const Shop__Order__V1__CreateOrderLine *req = in->lines[i];
    const order_product *p = &products[i];
    if (!p->found) {
      snprintf(field, sizeof field, "lines[%zu].product_id", i);
      return price_fail(v, field, "is not in the catalog", STATUS_NOT_FOUND, msg, msglen);
    }
    if (p->archived) {
      snprintf(field, sizeof field, "lines[%zu].product_id", i);
      return price_fail(v, field, "is archived and can no longer be ordered",
                        STATUS_FAILED_PRECONDITION, msg, msglen);
    }
    if (req->quantity < 1) {
      snprintf(field, sizeof field, "lines[%zu].quantity", i);
      return price_fail(v, field, "must be at least 1", STATUS_INVALID_ARGUMENT, msg, msglen);
    }
    if (p->max_quantity_per_order > 0 && req->quantity > p->max_quantity_per_order) {
      snprintf(field, sizeof field, "lines[%zu].quantity", i);
      snprintf(msg, msglen, "%s is over the product's limit of %d per order", field,
               (int)p->max_quantity_per_order);
      check_violation_add(v, field, "is over the product's per-order limit");
      return STATUS_INVALID_ARGUMENT;
    }
    if (strcmp(p->currency, currency) != 0 || p->price_units <= 0) {
      snprintf(field, sizeof field, "lines[%zu].product_id", i);
      return price_fail(v, field, "has no price in the shop's currency", STATUS_FAILED_PRECONDITION,
                        msg, msglen);
    }
    order_line *l = &lines[i];
    memset(l, 0, sizeof *l);
    snprintf(l->product_id, sizeof l->product_id, "%s", req->product_id);
    snprintf(l->sku, sizeof l->sku, "%s", p->sku);
    snprintf(l->name, sizeof l->name, "%s", p->name);
    l->quantity = req->quantity;
    l->unit_price = p->price_units;
    /* Both factors are bounded (10^6 units, prices checked below the
     * total's limit), so the product is checked before it can overflow. */
    if (p->price_units > ORDER_TOTAL_MAX / req->quantity) {
      snprintf(field, sizeof field, "lines[%zu].quantity", i);
      return price_fail(v, field, "makes the line total too large", STATUS_OUT_OF_RANGE, msg,
                        msglen);
    }
    l->line_total = p->price_units * req->quantity;
    sum += l->line_total;
    if (sum > ORDER_TOTAL_MAX)
      return price_fail(v, "lines", "make the order total too large", STATUS_OUT_OF_RANGE, msg,
                        msglen);
  }
  if (in->expected_total != NULL &&
      (in->expected_total->units != sum || strcmp(in->expected_total->currency, currency) != 0)) {
    check_violation_add(v, "expected_total", "differs from the catalog's total");
    snprintf(msg, msglen, "the catalog total is %lld %s, not %lld %s (a price changed)",
             (long long)sum, currency, (long long)in->expected_total->units,
             in->expected_total->currency);
    return STATUS_FAILED_PRECONDITION;
  }
  *total = sum;
  return STATUS_OK;
}

/* ---- The saga ------------------------------------------------------------------------------- */

const char *order_status_name(int status) {
  switch (status) {
  case ORDER_ST(PENDING):
    return "PENDING";
  case ORDER_ST(CONFIRMED):
    return "CONFIRMED";
  case ORDER_ST(SHIPPED):
    return "SHIPPED";
  case ORDER_ST(CANCELLED):
    return "CANCELLED";
  default:
    return "UNSPECIFIED";
  }
}

static order_saga_step cancel(order_saga_step st, int reason) {
  st.next.status = ORDER_ST(CANCELLED);
  st.emit = ORDER_ST(CANCELLED);
  st.cancel_reason = reason;
  return st;
}

order_saga_step order_saga_apply(order_saga_state s, order_saga_input in) {
  order_saga_step st = {.next = s};
  bool pending = s.status == ORDER_ST(PENDING);
  switch (in) {
  case ORDER_SAGA_RESERVED:
    if (s.stock != ORDER_STOCK_PENDING) break;
    st.next.stock = ORDER_STOCK_RESERVED;
    if (pending && s.payment == ORDER_PAY_AUTHORIZED) {
      st.next.status = ORDER_ST(CONFIRMED);
      st.emit = ORDER_ST(CONFIRMED);
    }
    break;
  case ORDER_SAGA_REJECTED:
    if (s.stock != ORDER_STOCK_PENDING) break;
    st.next.stock = ORDER_STOCK_REJECTED;
    if (pending) st = cancel(st, ORDER_CANCEL(INVENTORY_REJECTED));
    break;
  case ORDER_SAGA_AUTHORIZED:
    if (s.payment != ORDER_PAY_PENDING) break;
    st.next.payment = ORDER_PAY_AUTHORIZED;
    if (pending && s.stock == ORDER_STOCK_RESERVED) {
      st.next.status = ORDER_ST(CONFIRMED);
      st.emit = ORDER_ST(CONFIRMED);
    }
    break;
  case ORDER_SAGA_AUTH_FAILED:
    if (s.payment != ORDER_PAY_PENDING) break;
    st.next.payment = ORDER_PAY_FAILED;
    if (pending) st = cancel(st, ORDER_CANCEL(PAYMENT_FAILED));
    break;
  case ORDER_SAGA_CAPTURED:
    if (s.payment == ORDER_PAY_AUTHORIZED) st.next.payment = ORDER_PAY_CAPTURED;
    break;
  case ORDER_SAGA_CAPTURE_FAILED:
    if (s.payment != ORDER_PAY_AUTHORIZED) break;
    st.next.payment = ORDER_PAY_CAPTURE_FAILED;
    if (s.status == ORDER_ST(CONFIRMED)) st = cancel(st, ORDER_CANCEL(CAPTURE_FAILED));
    break;
  case ORDER_SAGA_DEADLINE:
    if (pending) st = cancel(st, ORDER_CANCEL(DEADLINE_EXCEEDED));
    break;
  }
  return st;
}

bool order_cancel_allowed(const order_saga_state *s, char *msg, size_t msglen) {
  if (s->status == ORDER_ST(PENDING) || s->status == ORDER_ST(CONFIRMED)) return true;
  snprintf(msg, msglen, "the order is %s; only PENDING or CONFIRMED orders can be cancelled",
           order_status_name(s->status));
  return false;
}

status_code order_ship_allowed(const order_saga_state *s, char *msg, size_t msglen) {
  if (s->status != ORDER_ST(CONFIRMED)) {
    snprintf(msg, msglen, "the order is %s; only CONFIRMED orders can be shipped",
             order_status_name(s->status));
    return STATUS_FAILED_PRECONDITION;
  }
  if (s->payment != ORDER_PAY_CAPTURED) {
    snprintf(msg, msglen,
             "the order is CONFIRMED but its payment is not captured yet; try again shortly");
    return STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}
