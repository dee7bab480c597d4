/* The catalog end to end: product-command and product-query as real
 * processes (and user-command for the tokens), through the RPC layer, the
 * outbox, Kafka and the projection in MariaDB. Every test makes its own
 * products (unique SKUs and categories); they run one at a time. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "events/events.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "support/stack.h"
#include "support/wait.h"

#define PCMD "product-command"
#define PQRY "product-query"
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define WAIT_MS 10000

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  static const char *const programs[] = {"user-command", PCMD, PQRY, NULL};
  stack_up(programs);
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

TestSuite(catalog, .init = stack_require, .fini = stack_release, .timeout = 60);

/* ---- helpers ------------------------------------------------------------------------- */

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

/* A unique lower-case slug part: digits and '-' only. */
static void slug(char *out, size_t len, const char *prefix) {
  char u[96];
  stack_unique(u, sizeof u, prefix);
  snprintf(out, len, "%s", u);
}

static char *admin_token(void) {
  char pw[256];
  stack_admin_password(pw, sizeof pw);
  Shop__User__V1__LoginResponse *r = stack_login("admin@shop.test", pw);
  char *tok = strdup(r->tokens->access_token);
  free_msg(r);
  return tok;
}

static char *customer_token(void) {
  stack_user u;
  stack_customer(&u, "shopper", "Shopper");
  return strdup(u.token);
}

typedef struct new_product {
  const char *sku, *name, *description, *category, *currency;
  int64_t price, stock;
} new_product;

static status_code try_create(const char *token, const new_product *np, const char *k,
                              Shop__Product__V1__CreateProductResponse **out, rpc_status *st) {
  Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  Shop__Product__V1__ProductDetails d = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  d.name = (char *)np->name;
  d.description = (char *)(np->description != NULL ? np->description : "");
  d.category = (char *)np->category;
  price.units = np->price;
  price.currency = (char *)(np->currency != NULL ? np->currency : "EUR");
  req.sku = (char *)np->sku;
  req.details = &d;
  req.price = &price;
  req.initial_stock = np->stock;
  return stack_call(PCMD, PCMD_SVC, "CreateProduct", &req.base, (ProtobufCMessage **)out, token, k,
                    st);
}

/* Creates a product; returns the reply (product id, token). */
static Shop__Product__V1__CreateProductResponse *create(const char *token, const new_product *np) {
  Shop__Product__V1__CreateProductResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(try_create(token, np, stack_key(), &r, &st), STATUS_OK, "CreateProduct: %s %s",
               status_name(st.code), st.message);
  cr_assert_str_eq(r->consistency->aggregate_id, r->product_id);
  cr_assert_eq(r->consistency->version, 1);
  return r;
}

static Shop__Common__V1__ReadConsistency *rc_of(Shop__Common__V1__ReadConsistency *rc,
                                                Shop__Common__V1__ConsistencyToken *t) {
  shop__common__v1__read_consistency__init(rc);
  rc->token = t;
  rc->wait_ms = WAIT_MS;
  return rc;
}

static Shop__Product__V1__Product *get_product(const char *id,
                                               Shop__Common__V1__ConsistencyToken *t,
                                               const char *token,
                                               Shop__Product__V1__GetProductResponse **holder) {
  Shop__Product__V1__GetProductRequest req = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc;
  req.product_id = (char *)id;
  if (t != NULL) req.consistency = rc_of(&rc, t);
  rpc_status st;
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "GetProduct", &req.base, (ProtobufCMessage **)holder,
                          token, NULL, &st),
               STATUS_OK, "GetProduct: %s %s", status_name(st.code), st.message);
  return (*holder)->product;
}

static Shop__Product__V1__ListProductsResponse *list(Shop__Product__V1__ListProductsRequest *req,
                                                     const char *token) {
  Shop__Product__V1__ListProductsResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "ListProducts", &req->base, (ProtobufCMessage **)&r,
                          token, NULL, &st),
               STATUS_OK, "ListProducts: %s %s", status_name(st.code), st.message);
  return r;
}

/* ---- browsing ------------------------------------------------------------------------- */

Test(catalog, admin_creates_a_product_and_an_anonymous_caller_finds_it_by_text_and_category) {
  char *admin = admin_token();
  char sku[96], cat[96], word[96], name[200];
  slug(sku, sizeof sku, "sku");
  slug(cat, sizeof cat, "cat");
  slug(word, sizeof word, "zebra");
  snprintf(name, sizeof name, "Striped %s mug", word);
  new_product np = {.sku = sku,
                    .name = name,
                    .description = "Holds tea.",
                    .category = cat,
                    .price = 1299,
                    .stock = 7};
  Shop__Product__V1__CreateProductResponse *c = create(admin, &np);

  /* Anonymous, with the command's consistency token: no sleep needed. */
  Shop__Product__V1__ListProductsRequest req = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc;
  req.consistency = rc_of(&rc, c->consistency);
  req.category = cat;
  req.text = word;
  Shop__Product__V1__ListProductsResponse *r = list(&req, NULL);
  cr_assert_eq(r->n_products, 1);
  cr_assert_eq(r->page->total_size, 1);
  Shop__Product__V1__Product *p = r->products[0];
  cr_assert_str_eq(p->product_id, c->product_id);
  cr_assert_str_eq(p->sku, sku);
  cr_assert_str_eq(p->details->name, name);
  cr_assert_str_eq(p->details->description, "Holds tea.");
  cr_assert_str_eq(p->details->category, cat);
  cr_assert_eq(p->price->units, 1299);
  cr_assert_str_eq(p->price->currency, "EUR");
  cr_assert_eq(p->stock->available, 7, "initial stock until inventory reports");
  cr_assert_eq(p->stock->received, 7);
  cr_assert_eq(p->stock->version, 0);
  cr_assert_not(p->archived);
  cr_assert_eq(p->version, 1);
  /* The text matches case-insensitively, in the description too. */
  req.text = "HOLDS TEA";
  free_msg(r);
  r = list(&req, NULL);
  cr_assert_eq(r->n_products, 1);
  /* Another category finds nothing. */
  req.category = "no-such-category";
  req.text = "";
  free_msg(r);
  r = list(&req, NULL);
  cr_assert_eq(r->n_products, 0);
  cr_assert_eq(r->page->total_size, 0);
  free_msg(r);
  free_msg(c);
  free(admin);
}

/* GetProducts: a cart's products in one call, in the order asked. */
Test(catalog, get_products_answers_the_known_ids_in_the_order_asked) {
  char *admin = admin_token();
  char sku1[96], sku2[96];
  slug(sku1, sizeof sku1, "batch-a");
  slug(sku2, sizeof sku2, "batch-b");
  new_product a = {.sku = sku1,
                   .name = "Cup",
                   .description = "A cup.",
                   .category = "batch",
                   .price = 450,
                   .stock = 3};
  new_product b = {.sku = sku2,
                   .name = "Saucer",
                   .description = "A saucer.",
                   .category = "batch",
                   .price = 275,
                   .stock = 5};
  Shop__Product__V1__CreateProductResponse *ca = create(admin, &a);
  Shop__Product__V1__CreateProductResponse *cb = create(admin, &b);
  const char *unknown = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  char *ids[4] = {cb->product_id, (char *)unknown, ca->product_id, cb->product_id};
  Shop__Product__V1__GetProductsRequest req = SHOP__PRODUCT__V1__GET_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc;
  req.n_product_ids = 4;
  req.product_ids = ids;
  req.consistency = rc_of(&rc, cb->consistency);
  Shop__Product__V1__GetProductsResponse *r = NULL;
  rpc_status st;
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "GetProducts", &req.base, (ProtobufCMessage **)&r, NULL,
                          NULL, &st),
               STATUS_OK, "GetProducts: %s %s", status_name(st.code), st.message);
  cr_assert_eq(r->n_products, 2, "the unknown id is left out, the repeated one answered once");
  cr_assert_str_eq(r->products[0]->product_id, cb->product_id);
  cr_assert_str_eq(r->products[0]->sku, sku2);
  cr_assert_eq(r->products[0]->price->units, 275);
  cr_assert_eq(r->products[0]->stock->available, 5);
  cr_assert_str_eq(r->products[1]->product_id, ca->product_id);
  cr_assert_str_eq(r->products[1]->details->name, "Cup");
  cr_assert_eq(r->products[1]->price->units, 450);
  free_msg(r);
  /* Only unknown ids: an empty answer, not NOT_FOUND. */
  req.n_product_ids = 1;
  req.product_ids = (char **)&unknown;
  req.consistency = NULL;
  r = NULL;
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "GetProducts", &req.base, (ProtobufCMessage **)&r, NULL,
                          NULL, &st),
               STATUS_OK);
  cr_assert_eq(r->n_products, 0);
  free_msg(r);
  /* No id, a malformed one, more than 100. */
  req.n_product_ids = 0;
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "GetProducts", &req.base, NULL, NULL, NULL, &st),
                       st, "product_ids");
  char *bad[2] = {ca->product_id, "not-an-id"};
  req.n_product_ids = 2;
  req.product_ids = bad;
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "GetProducts", &req.base, NULL, NULL, NULL, &st),
                       st, "product_ids[1]");
  char *many[101];
  for (size_t i = 0; i < 101; i++) many[i] = ca->product_id;
  req.n_product_ids = 101;
  req.product_ids = many;
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "GetProducts", &req.base, NULL, NULL, NULL, &st),
                       st, "product_ids");
  free_msg(ca);
  free_msg(cb);
  free(admin);
}

Test(catalog, list_sorts_by_price_and_name_and_pages_through_results) {
  char *admin = admin_token();
  char cat[96];
  slug(cat, sizeof cat, "sort");
  const char *names[] = {"Delta", "alpha", "Charlie", "bravo"};
  int64_t prices[] = {400, 300, 100, 200};
  Shop__Product__V1__CreateProductResponse *made[4];
  for (int i = 0; i < 4; i++) {
    char sku[96];
    slug(sku, sizeof sku, "sortsku");
    new_product np = {
        .sku = sku, .name = names[i], .category = cat, .price = prices[i], .stock = 1};
    made[i] = create(admin, &np);
  }
  /* Wait for all four (each token covers its own product). */
  for (int i = 0; i < 4; i++) {
    Shop__Product__V1__GetProductResponse *h = NULL;
    get_product(made[i]->product_id, made[i]->consistency, NULL, &h);
    free_msg(h);
  }
  Shop__Product__V1__ListProductsRequest req = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  req.category = cat;
  req.page = &page;
  page.page_size = 3;
  req.sort = SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_PRICE_ASC;
  Shop__Product__V1__ListProductsResponse *a = list(&req, NULL);
  cr_assert_eq(a->n_products, 3);
  cr_assert_eq(a->page->total_size, 4);
  cr_assert_eq(a->products[0]->price->units, 100);
  cr_assert_eq(a->products[1]->price->units, 200);
  cr_assert_eq(a->products[2]->price->units, 300);
  page.page_token = a->page->next_page_token;
  Shop__Product__V1__ListProductsResponse *b = list(&req, NULL);
  cr_assert_eq(b->n_products, 1);
  cr_assert_eq(b->products[0]->price->units, 400);
  cr_assert_str_eq(b->page->next_page_token, "");
  free_msg(a);
  free_msg(b);

  page.page_token = "";
  page.page_size = 2;
  req.sort = SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_NAME_DESC;
  a = list(&req, NULL);
  cr_assert_str_eq(a->products[0]->details->name, "Delta");
  cr_assert_str_eq(a->products[1]->details->name, "Charlie");
  page.page_token = a->page->next_page_token;
  b = list(&req, NULL);
  cr_assert_eq(b->n_products, 2);
  cr_assert_str_eq(b->products[0]->details->name, "bravo");
  cr_assert_str_eq(b->products[1]->details->name, "alpha");
  free_msg(a);
  free_msg(b);

  /* A price range, inclusive. */
  Shop__Common__V1__Money lo = SHOP__COMMON__V1__MONEY__INIT, hi = SHOP__COMMON__V1__MONEY__INIT;
  lo.units = 200;
  lo.currency = "EUR";
  hi.units = 300;
  hi.currency = "EUR";
  req.min_price = &lo;
  req.max_price = &hi;
  req.page = NULL;
  req.sort = SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_UNSPECIFIED;
  a = list(&req, NULL);
  cr_assert_eq(a->n_products, 2);
  cr_assert_str_eq(a->products[0]->details->name, "alpha", "name order by default");
  cr_assert_str_eq(a->products[1]->details->name, "bravo");
  free_msg(a);
  for (int i = 0; i < 4; i++) free_msg(made[i]);
  free(admin);
}

Test(catalog, text_that_looks_like_sql_or_a_pattern_is_taken_literally) {
  char *admin = admin_token();
  char cat[96], sku[96];
  slug(cat, sizeof cat, "sql");
  slug(sku, sizeof sku, "sqlsku");
  const char *name = "x'); DROP TABLE products; -- 100% _real_";
  new_product np = {.sku = sku,
                    .name = name,
                    .description = "a\nb \\ \" ' ` ;",
                    .category = cat,
                    .price = 1,
                    .stock = 0};
  Shop__Product__V1__CreateProductResponse *c = create(admin, &np);
  char sku2[96];
  slug(sku2, sizeof sku2, "sqlsku");
  new_product np2 = {.sku = sku2, .name = "100 percent real", .category = cat, .price = 1};
  Shop__Product__V1__CreateProductResponse *c2 = create(admin, &np2);
  Shop__Product__V1__GetProductResponse *h = NULL;
  Shop__Product__V1__Product *p = get_product(c->product_id, c->consistency, NULL, &h);
  cr_assert_str_eq(p->details->name, name);
  cr_assert_str_eq(p->details->description, "a\nb \\ \" ' ` ;");
  free_msg(h);
  Shop__Product__V1__ListProductsRequest req = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc;
  req.consistency = rc_of(&rc, c2->consistency);
  req.category = cat;
  req.text = "100%";
  Shop__Product__V1__ListProductsResponse *r = list(&req, NULL);
  cr_assert_eq(r->n_products, 1, "'%%' is a character, not a wildcard");
  cr_assert_str_eq(r->products[0]->product_id, c->product_id);
  free_msg(r);
  req.text = "_real_";
  r = list(&req, NULL);
  cr_assert_eq(r->n_products, 1, "'_' is a character, not a wildcard");
  free_msg(r);
  free_msg(c);
  free_msg(c2);
  free(admin);
}

/* ---- authorization ---------------------------------------------------------------------- */

Test(catalog, customers_and_anonymous_callers_cannot_write_the_catalog) {
  char *customer = customer_token();
  char sku[96];
  slug(sku, sizeof sku, "nope");
  new_product np = {.sku = sku, .name = "Forbidden", .category = "misc", .price = 100};
  rpc_status st;
  cr_assert_eq(try_create(customer, &np, stack_key(), NULL, &st), STATUS_PERMISSION_DENIED);
  cr_assert_eq(try_create(NULL, &np, stack_key(), NULL, &st), STATUS_UNAUTHENTICATED);
  Shop__Product__V1__RestockRequest rs = SHOP__PRODUCT__V1__RESTOCK_REQUEST__INIT;
  rs.product_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  rs.quantity = 5;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, NULL, customer, stack_key(), &st),
               STATUS_PERMISSION_DENIED);
  /* Archived products are for admins only. */
  Shop__Product__V1__ListProductsRequest lr = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  lr.include_archived = true;
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, customer, NULL, &st),
               STATUS_PERMISSION_DENIED);
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st),
               STATUS_PERMISSION_DENIED);
  free(customer);
}

/* ---- changes ----------------------------------------------------------------------------- */

Test(catalog, price_rule_details_and_archive_are_read_back_with_their_tokens) {
  char *admin = admin_token();
  char sku[96], cat[96];
  slug(sku, sizeof sku, "life");
  slug(cat, sizeof cat, "life");
  new_product np = {.sku = sku, .name = "Lamp", .category = cat, .price = 5000, .stock = 3};
  Shop__Product__V1__CreateProductResponse *c = create(admin, &np);
  rpc_status st;

  Shop__Product__V1__SetPriceRequest sp = SHOP__PRODUCT__V1__SET_PRICE_REQUEST__INIT;
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  price.units = 4500;
  price.currency = "EUR";
  sp.product_id = c->product_id;
  sp.price = &price;
  sp.expected_version = 1;
  Shop__Product__V1__SetPriceResponse *spr = NULL;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "SetPrice", &sp.base, (ProtobufCMessage **)&spr, admin,
                          stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(spr->consistency->version, 2);
  /* The same price again changes nothing. */
  sp.expected_version = 0;
  Shop__Product__V1__SetPriceResponse *same = NULL;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "SetPrice", &sp.base, (ProtobufCMessage **)&same, admin,
                          stack_key(), &st),
               STATUS_OK);
  cr_assert_eq(same->consistency->version, 2);
  /* A stale expected version is ABORTED. */
  sp.expected_version = 1;
  price.units = 4000;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "SetPrice", &sp.base, NULL, admin, stack_key(), &st),
               STATUS_ABORTED);

  Shop__Product__V1__SetInventoryRuleRequest sr =
      SHOP__PRODUCT__V1__SET_INVENTORY_RULE_REQUEST__INIT;
  Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  rule.low_stock_threshold = 2;
  rule.max_quantity_per_order = 5;
  sr.product_id = c->product_id;
  sr.inventory_rule = &rule;
  cr_assert_eq(
      stack_call(PCMD, PCMD_SVC, "SetInventoryRule", &sr.base, NULL, admin, stack_key(), &st),
      STATUS_OK, "%s", st.message);

  Shop__Product__V1__UpdateProductRequest up = SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__INIT;
  up.product_id = c->product_id;
  up.description_update_case =
      SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__DESCRIPTION_UPDATE_DESCRIPTION;
  up.description = "Warm light.";
  Shop__Product__V1__UpdateProductResponse *upr = NULL;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "UpdateProduct", &up.base, (ProtobufCMessage **)&upr,
                          admin, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(upr->consistency->version, 4);
  Shop__Product__V1__GetProductResponse *h = NULL;
  Shop__Product__V1__Product *p = get_product(c->product_id, upr->consistency, NULL, &h);
  cr_assert_eq(p->price->units, 4500);
  cr_assert_eq(p->inventory_rule->low_stock_threshold, 2);
  cr_assert_eq(p->inventory_rule->max_quantity_per_order, 5);
  cr_assert_str_eq(p->details->name, "Lamp", "not given: kept");
  cr_assert_str_eq(p->details->description, "Warm light.");
  cr_assert_eq(p->version, 4);
  free_msg(h);

  Shop__Product__V1__ArchiveProductRequest ar = SHOP__PRODUCT__V1__ARCHIVE_PRODUCT_REQUEST__INIT;
  ar.product_id = c->product_id;
  Shop__Product__V1__ArchiveProductResponse *arr = NULL, *again = NULL;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "ArchiveProduct", &ar.base, (ProtobufCMessage **)&arr,
                          admin, stack_key(), &st),
               STATUS_OK, "%s", st.message);
  cr_assert_eq(arr->consistency->version, 5);
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "ArchiveProduct", &ar.base, (ProtobufCMessage **)&again,
                          admin, stack_key(), &st),
               STATUS_OK, "archiving an archived product succeeds");
  cr_assert_eq(again->consistency->version, 5, "...and changes nothing");
  price.units = 100;
  sp.expected_version = 0;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "SetPrice", &sp.base, NULL, admin, stack_key(), &st),
               STATUS_FAILED_PRECONDITION);

  /* Hidden from the catalog, still readable by id (marked), listed for an
   * admin who asks. */
  p = get_product(c->product_id, arr->consistency, NULL, &h);
  cr_assert(p->archived);
  free_msg(h);
  Shop__Product__V1__ListProductsRequest lr = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  lr.category = cat;
  Shop__Product__V1__ListProductsResponse *r = list(&lr, NULL);
  cr_assert_eq(r->n_products, 0);
  free_msg(r);
  lr.include_archived = true;
  r = list(&lr, admin);
  cr_assert_eq(r->n_products, 1);
  cr_assert(r->products[0]->archived);
  free_msg(r);
  free_msg(arr);
  free_msg(again);
  free_msg(upr);
  free_msg(spr);
  free_msg(same);
  free_msg(c);
  free(admin);
}

Test(catalog, restock_numbers_its_restocks_and_unknown_products_are_not_found) {
  char *admin = admin_token();
  char sku[96];
  slug(sku, sizeof sku, "restock");
  new_product np = {.sku = sku, .name = "Crate", .category = "misc", .price = 990, .stock = 0};
  Shop__Product__V1__CreateProductResponse *c = create(admin, &np);
  rpc_status st;
  Shop__Product__V1__RestockRequest rs = SHOP__PRODUCT__V1__RESTOCK_REQUEST__INIT;
  rs.product_id = c->product_id;
  rs.quantity = 10;
  rs.reference = "PO-4711";
  for (int i = 1; i <= 2; i++) {
    Shop__Product__V1__RestockResponse *r = NULL;
    cr_assert_eq(stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, (ProtobufCMessage **)&r, admin,
                            stack_key(), &st),
                 STATUS_OK, "%s", st.message);
    cr_assert_eq(r->restock_sequence, i);
    cr_assert_eq(r->consistency->version, 1 + i);
    free_msg(r);
  }
  rs.product_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, NULL, admin, stack_key(), &st),
               STATUS_NOT_FOUND);
  Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  g.product_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "GetProduct", &g.base, NULL, NULL, NULL, &st),
               STATUS_NOT_FOUND);
  free_msg(c);
  free(admin);
}

Test(catalog, duplicate_sku_is_already_exists_whatever_its_case) {
  char *admin = admin_token();
  char sku[96], upper[96];
  slug(sku, sizeof sku, "dupsku");
  new_product np = {.sku = sku, .name = "One", .category = "misc", .price = 100};
  free_msg(create(admin, &np));
  rpc_status st;
  cr_assert_eq(try_create(admin, &np, stack_key(), NULL, &st), STATUS_ALREADY_EXISTS);
  cr_assert(stack_has_violation(&st, "sku"));
  snprintf(upper, sizeof upper, "%s", sku);
  for (char *p = upper; *p != '\0'; p++)
    if (*p >= 'a' && *p <= 'z') *p = (char)(*p - 'a' + 'A');
  np.sku = upper;
  cr_assert_eq(try_create(admin, &np, stack_key(), NULL, &st), STATUS_ALREADY_EXISTS);
  free(admin);
}

Test(catalog, a_repeated_command_with_the_same_key_changes_nothing) {
  char *admin = admin_token();
  char sku[96], cat[96];
  slug(sku, sizeof sku, "idem");
  slug(cat, sizeof cat, "idem");
  new_product np = {.sku = sku, .name = "Once", .category = cat, .price = 100, .stock = 1};
  const char *k = stack_key();
  Shop__Product__V1__CreateProductResponse *a = NULL, *b = NULL;
  rpc_status st;
  cr_assert_eq(try_create(admin, &np, k, &a, &st), STATUS_OK, "%s", st.message);
  cr_assert_eq(try_create(admin, &np, k, &b, &st), STATUS_OK, "the repeat: %s", st.message);
  cr_assert_str_eq(a->product_id, b->product_id);
  np.name = "Twice";
  cr_assert_eq(try_create(admin, &np, k, NULL, &st), STATUS_FAILED_PRECONDITION);

  Shop__Product__V1__RestockRequest rs = SHOP__PRODUCT__V1__RESTOCK_REQUEST__INIT;
  rs.product_id = a->product_id;
  rs.quantity = 4;
  const char *k2 = stack_key();
  Shop__Product__V1__RestockResponse *r1 = NULL, *r2 = NULL;
  cr_assert_eq(
      stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, (ProtobufCMessage **)&r1, admin, k2, &st),
      STATUS_OK);
  cr_assert_eq(
      stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, (ProtobufCMessage **)&r2, admin, k2, &st),
      STATUS_OK);
  cr_assert_eq(r1->restock_sequence, 1);
  cr_assert_eq(r2->restock_sequence, 1, "restocked once");
  cr_assert_eq(r2->consistency->version, 2);

  Shop__Product__V1__ListProductsRequest lr = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__ReadConsistency rc;
  lr.consistency = rc_of(&rc, r2->consistency);
  lr.category = cat;
  Shop__Product__V1__ListProductsResponse *l = list(&lr, NULL);
  cr_assert_eq(l->page->total_size, 1, "one product, not two");
  cr_assert_eq(l->products[0]->version, 2);
  free_msg(l);
  free_msg(r1);
  free_msg(r2);
  free_msg(a);
  free_msg(b);
  free(admin);
}

/* ---- stock from the inventory worker ----------------------------------------------------- */

/* Publishes a StockLevelChanged as the inventory worker does (CloudEvents
 * binary mode on shop.inventory.events.v1). */
static void publish_stock(const char *product_id, int64_t available, int64_t version) {
  Shop__Inventory__V1__StockLevel level = SHOP__INVENTORY__V1__STOCK_LEVEL__INIT;
  level.available = available;
  level.received = available + 1;
  level.shipped = 1;
  level.version = version;
  Shop__Inventory__V1__StockLevelChanged ev = SHOP__INVENTORY__V1__STOCK_LEVEL_CHANGED__INIT;
  ev.product_id = (char *)product_id;
  ev.level = &level;
  ev.cause = SHOP__INVENTORY__V1__STOCK_LEVEL_CAUSE__STOCK_LEVEL_CAUSE_RESTOCKED;
  uint8_t data[256];
  size_t n = protobuf_c_message_pack(&ev.base, data);
  char id[EVENTS_ID_SIZE];
  events_uuid_v7(id);
  events_envelope env = SHOP__EVENTS__V1__EVENT_ENVELOPE__INIT;
  Shop__Common__V1__Timestamp now = SHOP__COMMON__V1__TIMESTAMP__INIT;
  events_now(&now);
  env.id = id;
  env.source = "/shop/e2e-test";
  env.type = (char *)ev.base.descriptor->name;
  env.subject = (char *)product_id;
  env.time = &now;
  env.sequence = version;
  env.topic = "shop.inventory.events.v1";
  env.key = (char *)product_id;
  env.data.data = data;
  env.data.len = n;
  events_ce_headers h;
  events_ce_headers_build(&h, &env);

  char err[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  const char *brokers = getenv("SHOP_KAFKA_BROKERS");
  cr_assert_eq(rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err),
               RD_KAFKA_CONF_OK);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  cr_assert_not_null(rk, "%s", err);
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(h.count);
  for (size_t i = 0; i < h.count; i++)
    rd_kafka_header_add(hdrs, h.h[i].name, -1, h.h[i].value, (ssize_t)h.h[i].len);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(env.topic), RD_KAFKA_V_KEY(product_id, strlen(product_id)),
      RD_KAFKA_V_VALUE(data, n), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_END);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(e));
  cr_assert_eq(rd_kafka_flush(rk, 10000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
}

/* Reads the product (at least at the version of t) until its stock
 * reaches version, for at most 20 s: the consistency token covers the
 * product's own version, not the stock's. */
/* Whether the product's stock has reached version; *h holds the last
 * read and *seen its stock version. */
static bool stock_at(const char *id, Shop__Common__V1__ConsistencyToken *t, int64_t version,
                     Shop__Product__V1__GetProductResponse **h, int64_t *seen) {
  free_msg(*h);
  *h = NULL;
  *seen = get_product(id, t, NULL, h)->stock->version;
  return *seen >= version;
}

static Shop__Product__V1__GetProductResponse *await_stock(const char *id,
                                                          Shop__Common__V1__ConsistencyToken *t,
                                                          int64_t version) {
  Shop__Product__V1__GetProductResponse *h = NULL;
  int64_t seen = -1;
  WAIT_UNTIL(stock_at(id, t, version, &h, &seen), 20000,
             "stock version %lld of product %s (last seen %lld)", (long long)version, id,
             (long long)seen);
  return h;
}

Test(catalog, available_stock_follows_the_inventory_workers_stock_level_events) {
  char *admin = admin_token();
  char sku[96];
  slug(sku, sizeof sku, "stock");
  new_product np = {.sku = sku, .name = "Stocked", .category = "misc", .price = 100, .stock = 5};
  Shop__Product__V1__CreateProductResponse *c = create(admin, &np);
  publish_stock(c->product_id, 42, 2);
  Shop__Product__V1__GetProductResponse *h = await_stock(c->product_id, c->consistency, 2);
  cr_assert_eq(h->product->stock->available, 42);
  cr_assert_eq(h->product->stock->received, 43);
  cr_assert_eq(h->product->stock->shipped, 1);
  free_msg(h);
  /* An older level arriving late is ignored; a newer one applies. */
  publish_stock(c->product_id, 7, 1);
  publish_stock(c->product_id, 40, 3);
  h = await_stock(c->product_id, c->consistency, 3);
  cr_assert_eq(h->product->stock->available, 40);
  free_msg(h);
  free_msg(c);
  free(admin);
}

/* ---- validation -------------------------------------------------------------------------- */

static void assert_create_invalid(const char *admin, new_product np, const char *field) {
  rpc_status st;
  cr_assert_eq(try_create(admin, &np, stack_key(), NULL, &st), STATUS_INVALID_ARGUMENT,
               "%s: got %s", field, status_name(st.code));
  cr_assert(stack_has_violation(&st, field), "no violation on %s (%s)", field, st.message);
}

Test(catalog, create_product_validates_every_field) {
  char *admin = admin_token();
  char sku[96], longtext[12000];
  slug(sku, sizeof sku, "valid");
  new_product ok = {.sku = sku, .name = "Valid", .category = "misc", .price = 100, .stock = 1};
  new_product np;
  memset(longtext, 'x', sizeof longtext - 1);
  longtext[sizeof longtext - 1] = '\0';

  np = ok, np.sku = "";
  assert_create_invalid(admin, np, "sku");
  np = ok, np.sku = "has space";
  assert_create_invalid(admin, np, "sku");
  np = ok, np.sku = "semi;colon'";
  assert_create_invalid(admin, np, "sku");
  char longsku[80];
  memset(longsku, 'S', 65);
  longsku[65] = '\0';
  np = ok, np.sku = longsku;
  assert_create_invalid(admin, np, "sku");

  np = ok, np.name = "";
  assert_create_invalid(admin, np, "details.name");
  longtext[201] = '\0';
  np = ok, np.name = longtext;
  assert_create_invalid(admin, np, "details.name");
  longtext[201] = 'x';
  np = ok, np.description = longtext;
  assert_create_invalid(admin, np, "details.description");
  np = ok, np.description = "bell\a";
  assert_create_invalid(admin, np, "details.description");
  np = ok, np.category = "";
  assert_create_invalid(admin, np, "details.category");
  np = ok, np.category = "Upper-Case";
  assert_create_invalid(admin, np, "details.category");
  np = ok, np.category = "-edge";
  assert_create_invalid(admin, np, "details.category");

  np = ok, np.price = 0;
  assert_create_invalid(admin, np, "price.units");
  np = ok, np.price = -5;
  assert_create_invalid(admin, np, "price.units");
  np = ok, np.price = 100000000000001LL;
  assert_create_invalid(admin, np, "price.units");
  np = ok, np.currency = "USD";
  assert_create_invalid(admin, np, "price.currency");
  np = ok, np.currency = "eur";
  assert_create_invalid(admin, np, "price.currency");
  np = ok, np.currency = "EURO";
  assert_create_invalid(admin, np, "price.currency");
  np = ok, np.stock = -1;
  assert_create_invalid(admin, np, "initial_stock");

  /* Missing messages and the inventory rule. */
  rpc_status st;
  Shop__Product__V1__CreateProductRequest req = SHOP__PRODUCT__V1__CREATE_PRODUCT_REQUEST__INIT;
  req.sku = sku;
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "CreateProduct", &req.base, NULL, admin, stack_key(), &st), st,
      "details");
  cr_assert(stack_has_violation(&st, "price"));
  Shop__Product__V1__ProductDetails d = SHOP__PRODUCT__V1__PRODUCT_DETAILS__INIT;
  Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
  Shop__Product__V1__InventoryRule rule = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  d.name = "Valid";
  d.category = "misc";
  price.units = 100;
  price.currency = "EUR";
  rule.low_stock_threshold = -1;
  req.details = &d;
  req.price = &price;
  req.inventory_rule = &rule;
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "CreateProduct", &req.base, NULL, admin, stack_key(), &st), st,
      "inventory_rule.low_stock_threshold");
  rule.low_stock_threshold = 0;
  rule.max_quantity_per_order = -2;
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "CreateProduct", &req.base, NULL, admin, stack_key(), &st), st,
      "inventory_rule.max_quantity_per_order");
  free(admin);
}

Test(catalog, other_commands_and_queries_validate_their_fields) {
  char *admin = admin_token();
  rpc_status st;
  const char *some_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  /* UpdateProduct: an id, at least one field, valid values. */
  Shop__Product__V1__UpdateProductRequest up = SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__INIT;
  up.product_id = "1; DROP TABLE products";
  up.name_update_case = SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__NAME_UPDATE_NAME;
  up.name = "ok";
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "UpdateProduct", &up.base, NULL, admin, stack_key(), &st), st,
      "product_id");
  up.product_id = (char *)some_id;
  up.name_update_case = 0;
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "UpdateProduct", &up.base, NULL, admin, stack_key(), &st),
               STATUS_INVALID_ARGUMENT);
  up.category_update_case = SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__CATEGORY_UPDATE_CATEGORY;
  up.category = "Not A Slug";
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "UpdateProduct", &up.base, NULL, admin, stack_key(), &st), st,
      "category");
  up.category = "fine";
  cr_assert_eq(stack_call(PCMD, PCMD_SVC, "UpdateProduct", &up.base, NULL, admin, stack_key(), &st),
               STATUS_NOT_FOUND, "valid, but no such product");
  /* SetPrice */
  Shop__Product__V1__SetPriceRequest sp = SHOP__PRODUCT__V1__SET_PRICE_REQUEST__INIT;
  sp.product_id = (char *)some_id;
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "SetPrice", &sp.base, NULL, admin, stack_key(), &st), st, "price");
  /* SetInventoryRule */
  Shop__Product__V1__SetInventoryRuleRequest sr =
      SHOP__PRODUCT__V1__SET_INVENTORY_RULE_REQUEST__INIT;
  sr.product_id = (char *)some_id;
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "SetInventoryRule", &sr.base, NULL, admin, stack_key(), &st), st,
      "inventory_rule");
  /* Restock */
  Shop__Product__V1__RestockRequest rs = SHOP__PRODUCT__V1__RESTOCK_REQUEST__INIT;
  rs.product_id = (char *)some_id;
  int64_t qs[] = {0, -3, 1000000001LL};
  for (int i = 0; i < 3; i++) {
    rs.quantity = qs[i];
    STACK_ASSERT_INVALID(
        stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, NULL, admin, stack_key(), &st), st,
        "quantity");
  }
  char longref[600];
  memset(longref, 'r', 501);
  longref[501] = '\0';
  rs.quantity = 1;
  rs.reference = longref;
  STACK_ASSERT_INVALID(
      stack_call(PCMD, PCMD_SVC, "Restock", &rs.base, NULL, admin, stack_key(), &st), st,
      "reference");
  /* ArchiveProduct */
  Shop__Product__V1__ArchiveProductRequest ar = SHOP__PRODUCT__V1__ARCHIVE_PRODUCT_REQUEST__INIT;
  ar.product_id = "";
  cr_assert_eq(
      stack_call(PCMD, PCMD_SVC, "ArchiveProduct", &ar.base, NULL, admin, stack_key(), &st),
      STATUS_INVALID_ARGUMENT);
  /* ListProducts */
  Shop__Product__V1__ListProductsRequest lr = SHOP__PRODUCT__V1__LIST_PRODUCTS_REQUEST__INIT;
  Shop__Common__V1__PageRequest page = SHOP__COMMON__V1__PAGE_REQUEST__INIT;
  lr.page = &page;
  int32_t sizes[] = {-1, 501};
  for (int i = 0; i < 2; i++) {
    page.page_size = sizes[i];
    STACK_ASSERT_INVALID(
        stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st), st,
        "page.page_size");
  }
  page.page_size = 0;
  page.page_token = "garbage!";
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st),
                       st, "page.page_token");
  page.page_token = "";
  Shop__Common__V1__Money lo = SHOP__COMMON__V1__MONEY__INIT, hi = SHOP__COMMON__V1__MONEY__INIT;
  lo.units = 500;
  lo.currency = "EUR";
  hi.units = 100;
  hi.currency = "EUR";
  lr.min_price = &lo;
  lr.max_price = &hi;
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st),
                       st, "max_price.units");
  hi.units = 900;
  hi.currency = "GBP";
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st),
                       st, "max_price.currency");
  lr.min_price = lr.max_price = NULL;
  lr.category = "NOT_A_SLUG";
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st),
                       st, "category");
  lr.category = "";
  lr.sort = (Shop__Product__V1__ProductSort)9;
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "ListProducts", &lr.base, NULL, NULL, NULL, &st),
                       st, "sort");
  /* GetProduct */
  Shop__Product__V1__GetProductRequest g = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  g.product_id = "x";
  STACK_ASSERT_INVALID(stack_call(PQRY, PQRY_SVC, "GetProduct", &g.base, NULL, NULL, NULL, &st), st,
                       "product_id");
  /* A consistency token ahead of the projection. */
  Shop__Common__V1__ReadConsistency rc = SHOP__COMMON__V1__READ_CONSISTENCY__INIT;
  Shop__Common__V1__ConsistencyToken t = SHOP__COMMON__V1__CONSISTENCY_TOKEN__INIT;
  t.aggregate_id = (char *)some_id;
  t.version = 3;
  rc.token = &t;
  rc.wait_ms = 100;
  g.product_id = (char *)some_id;
  g.consistency = &rc;
  cr_assert_eq(stack_call(PQRY, PQRY_SVC, "GetProduct", &g.base, NULL, NULL, NULL, &st),
               STATUS_FAILED_PRECONDITION);
  free(admin);
}
