/* The catalog's rules, without sockets or a database. */
#include <criterion/criterion.h>
#include <string.h>

#include "product/product.h"

Test(product_sku, letters_digits_dot_underscore_dash_up_to_64) {
  cr_assert_null(product_sku_check("ABC-123_x.9"));
  cr_assert_not_null(product_sku_check(""));
  cr_assert_not_null(product_sku_check("a b"));
  cr_assert_not_null(product_sku_check("a'b"));
  cr_assert_not_null(product_sku_check("caf\xc3\xa9"));
  char s[80];
  memset(s, 'A', 64);
  s[64] = '\0';
  cr_assert_null(product_sku_check(s));
  s[64] = 'A';
  s[65] = '\0';
  cr_assert_not_null(product_sku_check(s));
}

Test(product_text, name_description_and_category) {
  cr_assert_null(product_name_check("Mug \xe2\x80\x93 blue"));
  cr_assert_not_null(product_name_check(""));
  cr_assert_not_null(product_name_check("   "));
  cr_assert_not_null(product_name_check("two\nlines"));
  cr_assert_null(product_description_check(""));
  cr_assert_null(product_description_check("two\nlines\tand tabs"));
  cr_assert_not_null(product_description_check("nul\x01"));
  cr_assert_null(product_category_check("books-2"));
  cr_assert_not_null(product_category_check("Books"));
  cr_assert_not_null(product_category_check("books_2"));
  cr_assert_not_null(product_category_check("-books"));
  cr_assert_not_null(product_category_check("books-"));
  cr_assert_not_null(product_category_check(""));
}

Test(product_money, positive_units_in_the_shops_currency) {
  Shop__Common__V1__Money m = SHOP__COMMON__V1__MONEY__INIT;
  m.units = 100;
  m.currency = "EUR";
  cr_assert_null(product_price_check(&m, "EUR", "price").why);
  cr_assert_str_eq(product_price_check(NULL, "EUR", "price").field, "price");
  m.units = 0;
  cr_assert_str_eq(product_price_check(&m, "EUR", "price").field, "price.units");
  m.units = PRODUCT_PRICE_MAX + 1;
  cr_assert_str_eq(product_price_check(&m, "EUR", "price").field, "price.units");
  m.units = 1;
  m.currency = "USD";
  cr_assert_str_eq(product_price_check(&m, "EUR", "price").field, "price.currency");
  m.currency = "eur";
  cr_assert_not_null(product_price_check(&m, "EUR", "price").why);
  cr_assert_not_null(product_currency_check("EU", "EU"));
  cr_assert_null(product_currency_check("JPY", "JPY"));
}

Test(product_rule, never_negative) {
  Shop__Product__V1__InventoryRule r = SHOP__PRODUCT__V1__INVENTORY_RULE__INIT;
  cr_assert_null(product_rule_check(&r, "inventory_rule").why);
  cr_assert_str_eq(product_rule_check(NULL, "inventory_rule").field, "inventory_rule");
  r.low_stock_threshold = -1;
  cr_assert_str_eq(product_rule_check(&r, "inventory_rule").field,
                   "inventory_rule.low_stock_threshold");
  r.low_stock_threshold = 3;
  r.max_quantity_per_order = -1;
  cr_assert_str_eq(product_rule_check(&r, "inventory_rule").field,
                   "inventory_rule.max_quantity_per_order");
}
