/*
 * books: the checks every fault and scale-out scenario ends with, against
 * the real databases and the real order topic (ostack.h must be up).
 *
 *   books_check(&b, customers, n, acked, n_acked, 120000, &fig);
 *
 * waits (bounded) until every order of the given customers has settled,
 * then asserts (cr_assert, so call it from the test's thread):
 *
 *  - every acknowledged CreateOrder (acked) has its order;
 *  - every order is terminal: CONFIRMED with the payment captured and the
 *    stock reserved, SHIPPED, or CANCELLED with the payment failed, voided
 *    or refunded and the stock rejected or released;
 *  - the outboxes of shop_order, shop_inventory, shop_payment and
 *    shop_product are drained (no unsent row);
 *  - on shop.order.events.v1 (from the run's start): each order has exactly
 *    one distinct OrderCreated event id, and its distinct events come in
 *    strictly increasing ce_sequence (per-order order kept; a redelivered
 *    copy of an event id is counted, not refused: delivery is at least
 *    once);
 *  - across shop_payment: at most one approved authorization, capture,
 *    void and refund per order;
 *  - across shop_inventory: no negative stock, available + reserved +
 *    shipped = received, and each product's reserved units equal the sum
 *    of its open (RESERVED) reservations;
 *  - when the audit-worker runs (books.audit): its group has caught up,
 *    the chain verifies from row 1 (audit_verify), row ids have no gap,
 *    and every OrderCreated of these orders is in the log.
 *
 * The SQL here is the scenarios' own; a shared reconciler can take its
 * place check by check.
 */
#ifndef SHOP_TESTS_BOOKS_H
#define SHOP_TESTS_BOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct books_opts {
  bool audit; /* the audit-worker runs: check its log too */
} books_opts;

typedef struct books_figures {
  size_t orders, confirmed, cancelled, shipped;
  size_t redelivered; /* order-topic records whose event id came before */
  int64_t settle_ms;  /* how long the orders took to settle */
} books_figures;

/* An order id. */
typedef char books_id[37];

void books_check(const books_opts *o, const char *const *customers, size_t n_customers,
                 const books_id *acked, size_t n_acked, int wait_ms, books_figures *out);

#endif
