/*
 * money: the facts about shop.common.v1.Money that more than one module
 * checks (the config's catalog.currency, product prices and price filters,
 * an order's expected total). Pure functions; any thread.
 */
#ifndef SHOP_MONEY_H
#define SHOP_MONEY_H

/* A currency code: an ISO 4217 alphabetic code, three upper-case ASCII
 * letters ("EUR"). NULL when code is one, else why not (static text):
 * "must not be empty" or "must be an ISO 4217 code of three upper-case
 * letters". Whether the shop takes that currency is the caller's rule. */
const char *money_currency_check(const char *code);

#endif
