/* The request messages the tests build. See requests.h. */
#include "support/requests.h"

#include <assert.h>
#include <string.h>

void req_address_init(Shop__Order__V1__ShippingAddress *a) {
  shop__order__v1__shipping_address__init(a);
  a->recipient = "Grace Hopper";
  a->line1 = "1 Harbour Street";
  a->city = "Arlington";
  a->postal_code = "22201";
  a->country = "US";
}

void req_order_init(req_order *o, const char *pay_token) {
  shop__order__v1__create_order_request__init(&o->req);
  req_address_init(&o->addr);
  o->req.shipping_address = &o->addr;
  o->req.payment_token = (char *)pay_token;
  o->req.lines = o->lp;
}

void req_order_line(req_order *o, const char *product_id, int32_t qty) {
  assert(o->req.n_lines < REQ_ORDER_LINES_MAX);
  size_t i = o->req.n_lines++;
  shop__order__v1__create_order_line__init(&o->line[i]);
  o->line[i].product_id = (char *)product_id;
  o->line[i].quantity = qty;
  o->lp[i] = &o->line[i];
}

void req_product_init(req_product *p, const char *sku, int64_t stock, int64_t price,
                      const char *currency) {
  shop__product__v1__create_product_request__init(&p->req);
  shop__product__v1__product_details__init(&p->details);
  shop__common__v1__money__init(&p->price);
  shop__product__v1__inventory_rule__init(&p->rule);
  p->details.name = "Stoneware mug";
  p->details.description = "Hand-thrown stoneware.";
  p->details.category = "mugs";
  p->price.units = price;
  p->price.currency = (char *)currency;
  p->req.sku = (char *)sku;
  p->req.details = &p->details;
  p->req.price = &p->price;
  p->req.initial_stock = stock;
  p->req.inventory_rule = &p->rule;
}

status_code req_token(const shop_cfg *cfg, auth_keys **keys, const char *sub, auth_role role,
                      char *out, char *errbuf, size_t errlen) {
  if (*keys == NULL) {
    status_code st = auth_keys_create(keys, cfg->auth.jwt_key, strlen(cfg->auth.jwt_key),
                                      cfg->auth.issuer, cfg->auth.access_ttl_s, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return auth_token_sign(*keys, sub, role, 0, out, AUTH_TOKEN_MAX, errbuf, errlen);
}
