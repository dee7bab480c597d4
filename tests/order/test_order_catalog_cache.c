/* order-command's catalog cache (order.h, order_catalog_cache) in front of
 * a catalog of the test's own, on a clock of the test's own: what is kept,
 * for how long, and what a product event makes stale. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "order/order.h"

/* The catalog behind the cache: one product version per id, counted. */
static struct {
  int calls, asked;       /* GetProducts calls, products asked for */
  int64_t price, version; /* what every known product is at */
  status_code fail;       /* the answer when not OK */
  int64_t now;            /* the test's clock */
} F;

static status_code inner_get(void *self, const rpc_call *parent, const char *const *ids, size_t n,
                             order_product *out, char *errbuf, size_t errlen) {
  (void)self, (void)parent;
  F.calls++;
  F.asked += (int)n;
  if (F.fail != STATUS_OK) {
    snprintf(errbuf, errlen, "the catalog is down");
    return F.fail;
  }
  for (size_t i = 0; i < n; i++) {
    memset(&out[i], 0, sizeof out[i]);
    out[i].found = strncmp(ids[i], "unknown", 7) != 0;
    out[i].price_units = F.price;
    out[i].version = F.version;
    snprintf(out[i].sku, sizeof out[i].sku, "SKU-%s", ids[i]);
  }
  return STATUS_OK;
}

static int64_t now_cb(void *self) {
  (void)self;
  return F.now;
}

static order_catalog_cache *C;

static void setup_ttl(int ttl_ms) {
  memset(&F, 0, sizeof F);
  F.price = 1000;
  F.version = 1;
  F.now = 1000000;
  char err[256];
  shop_clock clock = {.now_ms_cb = now_cb};
  cr_assert_eq(order_catalog_cache_create(&C, (order_catalog){.get_cb = inner_get}, ttl_ms, &clock,
                                          NULL, err, sizeof err),
               STATUS_OK, "%s", err);
}
static void setup(void) {
  setup_ttl(5000);
  order_catalog_cache_following(C);
}
static void teardown(void) { order_catalog_cache_destroy(C); }

TestSuite(catalog_cache, .init = setup, .fini = teardown);

/* One lookup of ids through the cache into out. */
static status_code get(const char *const *ids, size_t n, order_product *out) {
  char err[256];
  order_catalog cat = order_catalog_cache_get(C);
  return cat.get_cb(cat.self, NULL, ids, n, out, err, sizeof err);
}
static int64_t price_of(const char *id) {
  order_product p;
  cr_assert_eq(get((const char *[]){id}, 1, &p), STATUS_OK);
  return p.price_units;
}

Test(catalog_cache, a_product_priced_once_is_not_asked_for_again_until_its_time_is_up) {
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(F.calls, 1, "the second order asked again");
  F.price = 2000; /* a change the cache cannot know of (no event) */
  F.now += 4999;
  cr_assert_eq(price_of("p1"), 1000, "kept for ttl_ms");
  F.now += 1;
  cr_assert_eq(price_of("p1"), 2000, "no longer than ttl_ms");
  cr_assert_eq(F.calls, 2);
}

Test(catalog_cache, only_the_products_not_kept_are_asked_for_in_one_call) {
  order_product out[3];
  cr_assert_eq(get((const char *[]){"p1"}, 1, out), STATUS_OK);
  cr_assert_eq(get((const char *[]){"p2", "p1", "p3"}, 3, out), STATUS_OK);
  cr_assert_eq(F.calls, 2);
  cr_assert_eq(F.asked, 3, "p1 was asked for twice");
  cr_assert_str_eq(out[0].sku, "SKU-p2");
  cr_assert_str_eq(out[1].sku, "SKU-p1");
  cr_assert_str_eq(out[2].sku, "SKU-p3");
}

Test(catalog_cache, a_product_event_makes_older_answers_stale_and_a_lagging_answer_is_not_kept) {
  cr_assert_eq(price_of("p1"), 1000);
  /* SetPrice: version 2 is on the topic; product-query has not applied it
   * yet and still answers version 1. */
  order_catalog_cache_changed(C, "p1", 2);
  cr_assert_eq(price_of("p1"), 1000, "what product-query answers is what the order gets");
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(F.calls, 3, "an answer older than the event was kept");
  /* product-query has it now. */
  F.price = 1500;
  F.version = 2;
  cr_assert_eq(price_of("p1"), 1500);
  cr_assert_eq(price_of("p1"), 1500);
  cr_assert_eq(F.calls, 4, "the up-to-date answer is kept");
  /* An event of a version already kept (a replay) changes nothing; an
   * event without a sequence drops what is kept. */
  order_catalog_cache_changed(C, "p1", 2);
  cr_assert_eq(price_of("p1"), 1500);
  cr_assert_eq(F.calls, 4);
  order_catalog_cache_changed(C, "p1", 0);
  F.version = 3;
  cr_assert_eq(price_of("p1"), 1500);
  cr_assert_eq(F.calls, 5);
}

Test(catalog_cache, unknown_products_and_failures_are_not_kept) {
  order_product p;
  cr_assert_eq(get((const char *[]){"unknown-1"}, 1, &p), STATUS_OK);
  cr_assert(!p.found);
  cr_assert_eq(get((const char *[]){"unknown-1"}, 1, &p), STATUS_OK);
  cr_assert_eq(F.calls, 2, "an unknown product was kept (it may be created any moment)");
  F.fail = STATUS_UNAVAILABLE;
  cr_assert_eq(get((const char *[]){"p1"}, 1, &p), STATUS_UNAVAILABLE);
  F.fail = STATUS_OK;
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(F.calls, 4);
}

/* Caches made by the test itself. */
TestSuite(catalog_cache_made, .fini = teardown);

Test(catalog_cache_made, nothing_is_kept_before_the_tail_follows_every_partition) {
  setup_ttl(5000);
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(F.calls, 2, "kept before the product events could be heard");
  order_catalog_cache_following(C);
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(F.calls, 3);
}

Test(catalog_cache_made, a_ttl_of_zero_asks_for_every_order) {
  setup_ttl(0);
  order_catalog_cache_following(C);
  for (int i = 0; i < 3; i++) cr_assert_eq(price_of("p1"), 1000);
  cr_assert_eq(F.calls, 3);
}
