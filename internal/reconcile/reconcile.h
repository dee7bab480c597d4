/*
 * reconcile: checks Shop's books on a quiet stack, reading the service
 * databases directly (read-only account shop_reconcile, SELECT on every
 * shop_* database) and the hash-chained audit log. What it checks, and
 * where each fact lives, is in README.md; in short:
 *
 *   order   money matches the final state (CONFIRMED or SHIPPED: captured
 *           equals the total, no open authorization; CANCELLED: captured
 *           minus refunded is zero, no open authorization); the stock
 *           reservation matches it too; a PENDING order is younger than its
 *           deadline; at most one authorization, capture, void and refund;
 *           exactly one distinct OrderCreated event id in the audit log;
 *   product available + reserved + shipped == initial stock + restocks
 *           (inventory's and the catalog's counts agree), none negative,
 *           reserved and shipped equal what the reservations hold;
 *   audit   the hash chain verifies (audit_verify).
 *
 * Each broken thing is one finding {kind, id, why}. A stack under load is
 * not quiet: a CONFIRMED order whose capture is on its way is a finding for
 * a moment. reconcile_opts.settle_ms re-runs the checks until they come out
 * clean or the time is up, and reports the last run.
 *
 * Errors: UNAVAILABLE when the database cannot be reached (or the link is
 * lost), FAILED_PRECONDITION when the account's password file is missing,
 * INTERNAL for anything else the server refuses (a missing table, no
 * privilege), with the reason in errbuf. Findings are not errors: the call
 * returns OK and out->findings_count says whether the books balance.
 *
 * Threads: reconcile_run opens and closes its own connection; it may run on
 * any thread, several at once.
 */
#ifndef SHOP_RECONCILE_H
#define SHOP_RECONCILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "status/status.h"

#define RECONCILE_ACCOUNT "shop_reconcile"

struct reconcile_report;

typedef struct reconcile_opts {
  /* Re-run until clean for at most this long (0: one run). */
  int settle_ms;
  /* Pause between runs while settling (0: 250 ms). */
  int settle_interval_ms;
  /* Only orders and products created at or after this Unix time in
   * milliseconds (0: all). The audit chain is always checked whole. */
  int64_t since_ms;
  /* Only products whose SKU starts with this, and orders with at least one
   * line of such a product (NULL or "": all). */
  const char *sku_prefix;
  /* Grace past an order's deadline before a PENDING order counts as stuck
   * (the sweeper runs every order.sweep_interval_ms; -1: that interval
   * plus 5 s). */
  int64_t deadline_grace_ms;
  /* Every table is read from this one database instead of shop_order,
   * shop_payment, shop_inventory, shop_product and shop_audit (tests build
   * a private set of books; NULL: the service databases). */
  const char *database;
  /* How long to keep trying the first connection (0: once). */
  int connect_retry_ms;
  /* While settling: called after each run that found something and will
   * be followed by another, with the number of runs so far and that run's
   * report (borrowed for the call), on the calling thread. NULL: none.
   * Tests use it to change the books between two runs. */
  void (*between_runs_cb)(int runs, const struct reconcile_report *r, void *arg);
  void *between_runs_arg;
} reconcile_opts;

/* Defaults: one run, no filters, deadline grace -1, service databases,
 * connect_retry_ms 2000. */
void reconcile_opts_init(reconcile_opts *o);

typedef enum reconcile_kind {
  RECONCILE_ORDER = 1,
  RECONCILE_PRODUCT = 2,
  RECONCILE_AUDIT = 3,
} reconcile_kind;

/* "order", "product", "audit". */
const char *reconcile_kind_name(reconcile_kind k);

/* One broken thing. id: the order or product id, or for the audit chain
 * "row <n>" or an order id. why: one line for people. */
typedef struct reconcile_finding {
  reconcile_kind kind;
  char id[40];
  char why[400];
} reconcile_finding;

typedef struct reconcile_report {
  int runs; /* checks done (1 + re-runs while settling) */
  int64_t elapsed_ms;
  int64_t orders;   /* orders checked */
  int64_t products; /* products checked */
  int64_t events;   /* audit rows verified in the chain */
  int64_t orders_pending, orders_confirmed, orders_shipped, orders_cancelled;
  reconcile_finding *findings; /* owned by the report */
  size_t findings_count;
  size_t findings_cap;
} reconcile_report;

/* Runs the checks (see above) with cfg's MariaDB host, port and secrets
 * dir, as RECONCILE_ACCOUNT (mysql.password, when set, is used instead of
 * the file, as the services do). o may be NULL (defaults). On OK *out holds
 * the last run's report: free it with reconcile_report_free. On error *out
 * is empty (nothing to free, freeing is harmless). */
status_code reconcile_run(const shop_cfg *cfg, const reconcile_opts *o, reconcile_report *out,
                          char *errbuf, size_t errlen);

/* Frees the findings and zeroes the report; NULL is fine. */
void reconcile_report_free(reconcile_report *r);

#endif
