/*
 * requests: the request messages the tests and the crash matrix's load
 * build again and again (a product to create, an order to place), with
 * their storage, so that a caller fills in only what differs. No Criterion,
 * no RPC: the caller sends them its own way (stack_call, faults-load's
 * retrying command).
 *
 *   req_order o;
 *   req_order_init(&o, "tok_visa");
 *   req_order_line(&o, product_id, 2);
 *   ... o.req is a complete CreateOrderRequest ...
 *
 * Every string is borrowed: it must outlive the request's use.
 */
#ifndef SHOP_TESTS_REQUESTS_H
#define SHOP_TESTS_REQUESTS_H

#include <stdint.h>

#include "auth/auth.h"
#include "config/config.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "status/status.h"

#define REQ_ORDER_LINES_MAX 4

/* A CreateOrderRequest of up to REQ_ORDER_LINES_MAX lines to one shipping
 * address. */
typedef struct req_order {
  Shop__Order__V1__CreateOrderRequest req;
  Shop__Order__V1__CreateOrderLine line[REQ_ORDER_LINES_MAX];
  Shop__Order__V1__CreateOrderLine *lp[REQ_ORDER_LINES_MAX];
  Shop__Order__V1__ShippingAddress addr;
} req_order;

/* An order without lines, to a complete address, paid with the card
 * token. */
void req_order_init(req_order *o, const char *pay_token);
/* Adds a line of qty units of product_id (at most REQ_ORDER_LINES_MAX:
 * asserted). */
void req_order_line(req_order *o, const char *product_id, int32_t qty);
/* A complete shipping address (the one req_order_init uses). */
void req_address_init(Shop__Order__V1__ShippingAddress *a);

/* A CreateProductRequest with its details, price and inventory rule. */
typedef struct req_product {
  Shop__Product__V1__CreateProductRequest req;
  Shop__Product__V1__ProductDetails details;
  Shop__Common__V1__Money price;
  Shop__Product__V1__InventoryRule rule;
} req_product;

/* A stoneware mug with SKU sku, stock units, price in minor units of
 * currency and no inventory limits; change the fields as needed. */
void req_product_init(req_product *p, const char *sku, int64_t stock, int64_t price,
                      const char *currency);

/* Mints an access token for sub with role with cfg's JWT key; *keys
 * caches the key (NULL at first; the caller frees it with
 * auth_keys_destroy). out holds AUTH_TOKEN_MAX. */
status_code req_token(const shop_cfg *cfg, auth_keys **keys, const char *sub, auth_role role,
                      char *out, char *errbuf, size_t errlen);

#endif
