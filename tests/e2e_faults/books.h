/*
 * books: the checks every fault and scale-out scenario ends with, against
 * the real databases and the real order topic (tests/support/stack.h must be up).
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
 *  - reconcile (internal/reconcile, stack_books_clean) on this run's
 *    orders and products: money matches each order's state, at most one
 *    authorization, capture, void and refund per order, stock never
 *    negative and adding up, one OrderCreated per order in the audit log,
 *    the audit chain verifies. With books.audit (the audit-worker runs in
 *    the stack) its group is first waited for until it has caught up;
 *    without, reconcile starts one for the time of the check.
 *
 * The Kafka-level checks (event order, redeliveries, drained outboxes) are
 * the scenarios' own: reconcile reads only the databases.
 */
#ifndef SHOP_TESTS_BOOKS_H
#define SHOP_TESTS_BOOKS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct books_opts {
  bool audit; /* an audit-worker runs in the stack */
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
