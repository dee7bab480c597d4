/* The catalog's rules. No I/O. See product.h. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "check/check.h"
#include "money/money.h"
#include "product/product.h"

const char *product_sku_check(const char *sku) {
  if (sku == NULL || sku[0] == '\0') return "must not be empty";
  size_t n = strlen(sku);
  if (n > PRODUCT_SKU_MAX) return "must be at most 64 characters";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)sku[i];
    if (!isalnum(c) && c != '.' && c != '_' && c != '-')
      return "must hold only letters, digits, '.', '_' and '-'";
  }
  return NULL;
}

const char *product_name_check(const char *name) {
  const char *why = check_text(name, 1, PRODUCT_NAME_MAX, 0);
  if (why != NULL) return why;
  for (const char *p = name; *p != '\0'; p++)
    if (*p != ' ') return NULL;
  return "must not be only spaces";
}

const char *product_description_check(const char *description) {
  return check_text(description, 0, PRODUCT_DESCRIPTION_MAX, CHECK_TEXT_MULTILINE);
}

const char *product_category_check(const char *category) {
  if (category == NULL || category[0] == '\0') return "must not be empty";
  size_t n = strlen(category);
  if (n > PRODUCT_CATEGORY_MAX) return "must be at most 64 characters";
  for (size_t i = 0; i < n; i++) {
    unsigned char c = (unsigned char)category[i];
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-'))
      return "must be a slug: lower-case letters, digits and '-'";
  }
  if (category[0] == '-' || category[n - 1] == '-') return "must not start or end with '-'";
  return NULL;
}

const char *product_currency_check(const char *currency, const char *shop) {
  const char *why = money_currency_check(currency);
  if (why != NULL) return why;
  if (strcmp(currency, shop) != 0) return "must be the shop's currency";
  return NULL;
}

static product_violation violation(const char *prefix, const char *sub, const char *why) {
  product_violation v = {.why = why};
  if (why == NULL) return v;
  snprintf(v.field, sizeof v.field, "%s%s%s", prefix, sub[0] != '\0' ? "." : "", sub);
  return v;
}

product_violation product_price_check(const Shop__Common__V1__Money *price, const char *shop,
                                      const char *prefix) {
  if (price == NULL) return violation(prefix, "", "is required");
  if (price->units <= 0) return violation(prefix, "units", "must be positive");
  if (price->units > PRODUCT_PRICE_MAX)
    return violation(prefix, "units", "must be at most 10^14 minor units");
  return violation(prefix, "currency", product_currency_check(price->currency, shop));
}

product_violation product_rule_check(const Shop__Product__V1__InventoryRule *rule,
                                     const char *prefix) {
  if (rule == NULL) return violation(prefix, "", "is required");
  if (rule->low_stock_threshold < 0)
    return violation(prefix, "low_stock_threshold", "must not be negative");
  if (rule->low_stock_threshold > PRODUCT_STOCK_MAX)
    return violation(prefix, "low_stock_threshold", "must be at most 10^12");
  if (rule->max_quantity_per_order < 0)
    return violation(prefix, "max_quantity_per_order", "must not be negative");
  if (rule->max_quantity_per_order > PRODUCT_MAX_PER_ORDER_MAX)
    return violation(prefix, "max_quantity_per_order", "must be at most 1000000");
  return violation(prefix, "", NULL);
}

/* ---- Request checks ------------------------------------------------------------------ */

static void add(check_violations *v, product_violation pv) {
  if (pv.why != NULL) check_violation_add(v, pv.field, pv.why);
}

static void id_check(check_violations *v, const char *id) {
  if (!check_id(id)) check_violation_add(v, "product_id", "must be a product id");
}

static void expected_check(check_violations *v, int64_t version) {
  if (version < 0) check_violation_add(v, "expected_version", "must not be negative");
}

void product_validate_create_product(const Shop__Product__V1__CreateProductRequest *in,
                                     const char *currency, check_violations *v) {
  check_violation_add(v, "sku", product_sku_check(in->sku));
  if (in->details == NULL) {
    check_violation_add(v, "details", "is required");
  } else {
    check_violation_add(v, "details.name", product_name_check(in->details->name));
    check_violation_add(v, "details.description",
                        product_description_check(in->details->description));
    check_violation_add(v, "details.category", product_category_check(in->details->category));
  }
  add(v, product_price_check(in->price, currency, "price"));
  if (in->initial_stock < 0)
    check_violation_add(v, "initial_stock", "must not be negative");
  else if (in->initial_stock > PRODUCT_STOCK_MAX)
    check_violation_add(v, "initial_stock", "must be at most 10^12");
  if (in->inventory_rule != NULL) add(v, product_rule_check(in->inventory_rule, "inventory_rule"));
}

void product_validate_update_product(const Shop__Product__V1__UpdateProductRequest *in,
                                     check_violations *v) {
  int given = 0;
  id_check(v, in->product_id);
  if (in->name_update_case == SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__NAME_UPDATE_NAME) {
    given++;
    check_violation_add(v, "name", product_name_check(in->name));
  }
  if (in->description_update_case ==
      SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__DESCRIPTION_UPDATE_DESCRIPTION) {
    given++;
    check_violation_add(v, "description", product_description_check(in->description));
  }
  if (in->category_update_case ==
      SHOP__PRODUCT__V1__UPDATE_PRODUCT_REQUEST__CATEGORY_UPDATE_CATEGORY) {
    given++;
    check_violation_add(v, "category", product_category_check(in->category));
  }
  if (given == 0)
    check_violation_add(v, "name", "at least one of name, description, category is required");
  expected_check(v, in->expected_version);
}

void product_validate_archive_product(const Shop__Product__V1__ArchiveProductRequest *in,
                                      check_violations *v) {
  id_check(v, in->product_id);
}

void product_validate_set_price(const Shop__Product__V1__SetPriceRequest *in, const char *currency,
                                check_violations *v) {
  id_check(v, in->product_id);
  add(v, product_price_check(in->price, currency, "price"));
  expected_check(v, in->expected_version);
}

void product_validate_set_inventory_rule(const Shop__Product__V1__SetInventoryRuleRequest *in,
                                         check_violations *v) {
  id_check(v, in->product_id);
  add(v, product_rule_check(in->inventory_rule, "inventory_rule"));
  expected_check(v, in->expected_version);
}

void product_validate_restock(const Shop__Product__V1__RestockRequest *in, check_violations *v) {
  id_check(v, in->product_id);
  if (in->quantity <= 0)
    check_violation_add(v, "quantity", "must be positive");
  else if (in->quantity > PRODUCT_RESTOCK_MAX)
    check_violation_add(v, "quantity", "must be at most 10^9 per restock");
  check_violation_add(v, "reference", check_text(in->reference, 0, PRODUCT_REFERENCE_MAX, 0));
}

void product_validate_get_product(const Shop__Product__V1__GetProductRequest *in,
                                  check_violations *v) {
  id_check(v, in->product_id);
}

void product_validate_get_products(const Shop__Product__V1__GetProductsRequest *in,
                                   check_violations *v) {
  if (in->n_product_ids == 0) check_violation_add(v, "product_ids", "must name a product");
  if (in->n_product_ids > PRODUCT_BATCH_MAX)
    check_violation_add(v, "product_ids", "must name at most 100 products");
  for (size_t i = 0; i < in->n_product_ids && i < PRODUCT_BATCH_MAX; i++) {
    if (check_id(in->product_ids[i])) continue;
    char field[32];
    snprintf(field, sizeof field, "product_ids[%zu]", i);
    check_violation_add(v, field, "must be a product id");
  }
}

void product_validate_list_products(const Shop__Product__V1__ListProductsRequest *in,
                                    const char *currency, check_violations *v) {
  if (in->category[0] != '\0')
    check_violation_add(v, "category", product_category_check(in->category));
  check_violation_add(v, "text", check_text(in->text, 0, PRODUCT_TEXT_FILTER_MAX, 0));
  const Shop__Common__V1__Money *lo = in->min_price, *hi = in->max_price;
  if (lo != NULL) {
    if (lo->units < 0) check_violation_add(v, "min_price.units", "must not be negative");
    check_violation_add(v, "min_price.currency", product_currency_check(lo->currency, currency));
  }
  if (hi != NULL) {
    if (hi->units < 0) check_violation_add(v, "max_price.units", "must not be negative");
    check_violation_add(v, "max_price.currency", product_currency_check(hi->currency, currency));
  }
  if (lo != NULL && hi != NULL && lo->units > hi->units)
    check_violation_add(v, "max_price.units", "must not be below min_price.units");
  int sort = (int)in->sort;
  if (sort < 0 || sort > SHOP__PRODUCT__V1__PRODUCT_SORT__PRODUCT_SORT_PRICE_DESC)
    check_violation_add(v, "sort", "must be a known ProductSort");
}
