/*
 * product: Shop's catalog on both sides: the command side (product-command,
 * database shop_product, admin only) and the query side (product-query,
 * database shop_product_read, public, built only from product events and
 * the inventory worker's StockLevelChanged).
 *
 * Follow CreateProduct from proto/shop/product/v1/commands.proto: the
 * handler product_cmd_create_product (command.c) checks the request with
 * the rules below, then in one transaction (command_run) keeps the
 * idempotency record, inserts the products row and appends ProductCreated
 * to the outbox; the relay publishes it on shop.product.events.v1;
 * product-query's consumer (group "product-query") applies it to
 * products_view (product_projection_consumer, query.c), where GetProduct,
 * GetProducts and ListProducts read it.
 *
 * Rules (rules.c), pure and tested on their own:
 *   - sku: 1 to 64 characters of [A-Za-z0-9._-]; unique across the
 *     catalog regardless of letter case ("ABC-1" and "abc-1" collide), and
 *     immutable;
 *   - name: 1 to 200 characters; description: up to 10000 characters, line
 *     breaks allowed; no other control characters; stored verbatim;
 *   - category: a slug, 1 to 64 characters of [a-z0-9-], not starting or
 *     ending with '-';
 *   - price: units 1 to PRODUCT_PRICE_MAX, currency the shop's
 *     (catalog.currency; any other code, or one that is not three
 *     upper-case letters, is INVALID_ARGUMENT);
 *   - stock: initial stock 0 to PRODUCT_STOCK_MAX, a restock 1 to
 *     PRODUCT_RESTOCK_MAX units with a reference of up to 500 characters;
 *   - inventory rule: low_stock_threshold 0 to PRODUCT_STOCK_MAX,
 *     max_quantity_per_order 0 to 1000000 (0: no limit).
 *
 * A command that changes nothing (same price, same rule, same details, an
 * archived product archived again) emits no event and answers with the
 * current version. Commands other than ArchiveProduct on an archived
 * product are FAILED_PRECONDITION.
 *
 * Threads: handlers on the RPC server's workers, the projection on the
 * consumer's thread; contexts are read-only after init, except the
 * notifier.
 */
#ifndef SHOP_PRODUCT_H
#define SHOP_PRODUCT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check/check.h"
#include "command/command.h"
#include "config/config.h"
#include "consistency/consistency.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "page/page.h"
#include "rpc/rpc.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/events.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "status/status.h"

/* ---- Rules ------------------------------------------------------------------------ */

#define PRODUCT_SKU_MAX 64
#define PRODUCT_NAME_MAX 200
#define PRODUCT_DESCRIPTION_MAX 10000
#define PRODUCT_CATEGORY_MAX 64
#define PRODUCT_REFERENCE_MAX 500
#define PRODUCT_TEXT_FILTER_MAX 200
#define PRODUCT_PRICE_MAX 100000000000000LL /* 10^14 minor units */
#define PRODUCT_STOCK_MAX 1000000000000LL   /* 10^12 units */
#define PRODUCT_RESTOCK_MAX 1000000000LL    /* 10^9 units at once */
#define PRODUCT_MAX_PER_ORDER_MAX 1000000
#define PRODUCT_BATCH_MAX 100 /* ids of one GetProducts (ORDER_LINES_MAX) */

/* Each returns NULL when valid, else a description for a field
 * violation. */
const char *product_sku_check(const char *sku);
const char *product_name_check(const char *name);
const char *product_description_check(const char *description);
const char *product_category_check(const char *category);
/* A currency code: three upper-case ASCII letters, and shop's. */
const char *product_currency_check(const char *currency, const char *shop);
/* A field violation found by a check: field is "" when the value is
 * valid. */
typedef struct product_violation {
  char field[64];
  const char *why;
} product_violation;

/* A price: present, units 1..PRODUCT_PRICE_MAX, the shop's currency. The
 * violation's field is prefix, prefix.units or prefix.currency. */
product_violation product_price_check(const Shop__Common__V1__Money *price, const char *shop,
                                      const char *prefix);

/* An inventory rule (present; prefix "inventory_rule"). */
product_violation product_rule_check(const Shop__Product__V1__InventoryRule *rule,
                                     const char *prefix);

/* The handlers' checks of each request on its own (no database, no
 * caller): violations go to v (see check_violations); the handler answers
 * INVALID_ARGUMENT with them when v->n > 0. currency is the shop's
 * (catalog.currency). Pure, so they are fuzzed without a server
 * (tests/fuzz). */
void product_validate_create_product(const Shop__Product__V1__CreateProductRequest *in,
                                     const char *currency, check_violations *v);
void product_validate_update_product(const Shop__Product__V1__UpdateProductRequest *in,
                                     check_violations *v);
void product_validate_archive_product(const Shop__Product__V1__ArchiveProductRequest *in,
                                      check_violations *v);
void product_validate_set_price(const Shop__Product__V1__SetPriceRequest *in, const char *currency,
                                check_violations *v);
void product_validate_set_inventory_rule(const Shop__Product__V1__SetInventoryRuleRequest *in,
                                         check_violations *v);
void product_validate_restock(const Shop__Product__V1__RestockRequest *in, check_violations *v);
void product_validate_get_product(const Shop__Product__V1__GetProductRequest *in,
                                  check_violations *v);
/* 1 to PRODUCT_BATCH_MAX ids, each a product id. */
void product_validate_get_products(const Shop__Product__V1__GetProductsRequest *in,
                                   check_violations *v);
/* ListProducts' filters and sort (the page size is page_size's;
 * include_archived is an authorization question, the handler's). */
void product_validate_list_products(const Shop__Product__V1__ListProductsRequest *in,
                                    const char *currency, check_violations *v);

/* ---- Command side (product-command) ------------------------------------------------- */

typedef struct product_cmd_ctx {
  const shop_cfg *cfg;
  const char *program;
  const char *currency; /* catalog.currency */
  db_pool *db;
  outbox_relay *relay;
  outbox_sink sink; /* where product events go (outbox_sink_of(relay, program)) */
} product_cmd_ctx;

void product_cmd_ctx_init(product_cmd_ctx *ctx, const shop_cfg *cfg, const char *program,
                          db_pool *db, outbox_relay *relay);

/* Registers ProductCommandService on s (every method admin only and a
 * command); ctx must outlive the server. */
status_code product_cmd_register(rpc_server *s, product_cmd_ctx *ctx, char *errbuf, size_t errlen);

extern const db_migration product_migrations[];
extern const size_t product_migrations_count;

/* ---- Query side (product-query) ------------------------------------------------------- */

typedef struct product_query_ctx {
  const char *currency;
  db_pool *db;
  consistency_notifier notifier;
} product_query_ctx;

void product_query_ctx_init(product_query_ctx *ctx, const shop_cfg *cfg, db_pool *db);
void product_query_ctx_destroy(product_query_ctx *ctx);

status_code product_query_register(rpc_server *s, product_query_ctx *ctx, char *errbuf,
                                   size_t errlen);

/* product-query's consumer (group "product-query", arg: the
 * product_query_ctx): product events and StockLevelChanged. */
extern const consumer_spec product_projection_consumer;

extern const db_migration product_read_migrations[];
extern const size_t product_read_migrations_count;

#endif
