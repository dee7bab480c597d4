/* The order domain's pure rules: request checks, pricing, the saga's
 * state machine. See order.h. */
#include <stdio.h>
#include <string.h>

#include "money/money.h"
#include "order/order.h"

/* ---- Request checks -------------------------------------------------------------------- */

typedef struct vlist {
  order_violation *out;
  size_t max, n;
} vlist;

static void add(vlist *l, const char *field, const char *why) {
  if (why == NULL) return;
  if (l->n < l->max) {
    snprintf(l->out[l->n].field, sizeof l->out[l->n].field, "%s", field);
    l->out[l->n].why = why;
  }
  l->n++;
}

static const char *token_check(const char *t) {
  size_t n = strlen(t);
  if (n == 0) return "is required";
  if (n > ORDER_TOKEN_MAX) return "must be at most 256 characters";
  for (const char *p = t; *p != '\0'; p++)
    if (*p <= ' ' || *p > '~') return "must be printable ASCII without spaces";
  return NULL;
}

static const char *postal_check(const char *s) {
  const char *why = svc_text_check(s, 1, 20, 0);
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

size_t order_create_check(const order_create_req *in, order_violation *out, size_t max) {
  vlist l = {.out = out, .max = max};
  char field[64];
  if (in->n_lines == 0) add(&l, "lines", "at least one line is required");
  if (in->n_lines > ORDER_LINES_MAX) add(&l, "lines", "must be at most 100 lines");
  for (size_t i = 0; i < in->n_lines && i < ORDER_LINES_MAX; i++) {
    const Shop__Order__V1__CreateOrderLine *line = in->lines[i];
    snprintf(field, sizeof field, "lines[%zu].product_id", i);
    if (!svc_id_valid(line->product_id)) {
      add(&l, field, "must be a product id");
    } else {
      for (size_t j = 0; j < i; j++)
        if (strcmp(in->lines[j]->product_id, line->product_id) == 0) {
          add(&l, field, "names a product of an earlier line (one line per product)");
          break;
        }
    }
    snprintf(field, sizeof field, "lines[%zu].quantity", i);
    if (line->quantity < 1) add(&l, field, "must be at least 1");
    if (line->quantity > ORDER_QUANTITY_MAX) add(&l, field, "must be at most 1000000");
  }
  add(&l, "payment_token", token_check(in->payment_token));
  const order_address *a = in->shipping_address;
  if (a == NULL) {
    add(&l, "shipping_address", "is required");
  } else {
    add(&l, "shipping_address.recipient", svc_text_check(a->recipient, 1, 200, 0));
    add(&l, "shipping_address.line1", svc_text_check(a->line1, 1, 200, 0));
    add(&l, "shipping_address.line2", svc_text_check(a->line2, 0, 200, 0));
    add(&l, "shipping_address.city", svc_text_check(a->city, 1, 100, 0));
    add(&l, "shipping_address.region", svc_text_check(a->region, 0, 100, 0));
    add(&l, "shipping_address.postal_code", postal_check(a->postal_code));
    add(&l, "shipping_address.country", country_check(a->country));
    add(&l, "shipping_address.phone", phone_check(a->phone));
  }
  if (in->expected_total != NULL) {
    if (in->expected_total->units < 0) add(&l, "expected_total.units", "must not be negative");
    add(&l, "expected_total.currency", money_currency_check(in->expected_total->currency));
  }
  return l.n;
}

void order_validate_cancel_order(const Shop__Order__V1__CancelOrderRequest *in, svc_vlist *v) {
  if (!svc_id_valid(in->order_id)) svc_vlist_add(v, "order_id", "must be an order id");
  svc_vlist_add(v, "reason", svc_text_check(in->reason, 0, ORDER_REASON_MAX, SVC_TEXT_MULTILINE));
}

void order_validate_ship_order(const Shop__Order__V1__ShipOrderRequest *in, svc_vlist *v) {
  if (!svc_id_valid(in->order_id)) svc_vlist_add(v, "order_id", "must be an order id");
  svc_vlist_add(v, "carrier", svc_text_check(in->carrier, 0, ORDER_SHIP_TEXT_MAX, 0));
  svc_vlist_add(v, "tracking_number",
                svc_text_check(in->tracking_number, 0, ORDER_SHIP_TEXT_MAX, 0));
}

void order_validate_get_order(const Shop__Order__V1__GetOrderRequest *in, svc_vlist *v) {
  if (!svc_id_valid(in->order_id)) svc_vlist_add(v, "order_id", "must be an order id");
}

void order_validate_list_orders_by_customer(const Shop__Order__V1__ListOrdersByCustomerRequest *in,
                                            const char *caller_id, svc_vlist *v) {
  const char *customer = in->customer_id[0] != '\0' ? in->customer_id : caller_id;
  svc_vlist_add(v, "customer_id", svc_text_check(customer, 1, ORDER_CUSTOMER_MAX, 0));
}

void order_validate_list_orders_by_status(const Shop__Order__V1__ListOrdersByStatusRequest *in,
                                          svc_vlist *v) {
  int s = (int)in->status;
  if (s < ORDER_ST(PENDING) || s > ORDER_ST(CANCELLED))
    svc_vlist_add(v, "status", "must be a known status other than UNSPECIFIED");
}

void order_validate_list_stuck_orders(const Shop__Order__V1__ListStuckOrdersRequest *in,
                                      svc_vlist *v) {
  int s = (int)in->status;
  if (in->older_than_seconds < 0 || in->older_than_seconds > 100LL * 365 * 86400)
    svc_vlist_add(v, "older_than_seconds", "must be 0 to 100 years");
  if (s != 0 && s != ORDER_ST(PENDING) && s != ORDER_ST(CONFIRMED))
    svc_vlist_add(v, "status", "must be PENDING, CONFIRMED or UNSPECIFIED (both)");
}

/* ---- Pricing ------------------------------------------------------------------------------- */

static status_code price_fail(order_violation *v, const char *field, const char *why,
                              status_code code, char *msg, size_t msglen) {
  snprintf(v->field, sizeof v->field, "%s", field);
  v->why = why;
  snprintf(msg, msglen, "%s %s", field, why);
  return code;
}

status_code order_price(const order_create_req *in, const order_product *products,
                        const char *currency, order_line *lines, int64_t *total, order_violation *v,
                        char *msg, size_t msglen) {
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
      snprintf(v->field, sizeof v->field, "%s", field);
      v->why = "is over the product's per-order limit";
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
    snprintf(v->field, sizeof v->field, "expected_total");
    v->why = "differs from the catalog's total";
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

bool order_ship_allowed(const order_saga_state *s, char *msg, size_t msglen) {
  if (s->status != ORDER_ST(CONFIRMED)) {
    snprintf(msg, msglen, "the order is %s; only CONFIRMED orders can be shipped",
             order_status_name(s->status));
    return false;
  }
  if (s->payment != ORDER_PAY_CAPTURED) {
    snprintf(msg, msglen,
             "the order is CONFIRMED but its payment is not captured yet; try again shortly");
    return false;
  }
  return true;
}
