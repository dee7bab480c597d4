/* The catalog's rules. No I/O. See product.h. */
#include <ctype.h>
#include <stdio.h>
#include <string.h>

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
  const char *why = svc_text_check(name, 1, PRODUCT_NAME_MAX, 0);
  if (why != NULL) return why;
  for (const char *p = name; *p != '\0'; p++)
    if (*p != ' ') return NULL;
  return "must not be only spaces";
}

const char *product_description_check(const char *description) {
  return svc_text_check(description, 0, PRODUCT_DESCRIPTION_MAX, SVC_TEXT_MULTILINE);
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
  if (currency == NULL || currency[0] == '\0') return "must not be empty";
  if (strlen(currency) != 3 || !isupper((unsigned char)currency[0]) ||
      !isupper((unsigned char)currency[1]) || !isupper((unsigned char)currency[2]))
    return "must be an ISO 4217 code of three upper-case letters";
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
