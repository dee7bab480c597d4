/*
 * loadgen: places orders against a running Shop through its real RPC
 * endpoints and measures what a customer sees (shop-loadgen is its
 * command line; scripts/bench.sh drives it).
 *
 * Set-up (loadgen_setup):
 *   - accounts: `accounts` customers registered through
 *     UserCommandService.RegisterUser (so user events flow and the
 *     notification worker has somebody to write to), or, with
 *     register_users false, fresh ids that exist only in their tokens;
 *   - tokens: minted with the JWT key of the config (auth.jwt_key), for the
 *     customers and one admin. Logging in would cost an argon2id check per
 *     account and meet the login throttle; what is measured is ordering,
 *     not logging in;
 *   - products: `products` products created by the admin through
 *     ProductCommandService.CreateProduct with LOADGEN_STOCK units each
 *     (ample: stock never runs out), then read back from product-query
 *     with the reply's consistency token.
 *
 * Load (loadgen_run): CreateOrder with a fresh idempotency key per order
 * ("<run>-<slot>-<n>"), `lines` distinct products of quantity 1, card
 * token tok_visa.
 *   - closed loop: `customers` slots, each places an order, waits for the
 *     reply and, unless no_wait, for the order's completion, then places
 *     the next;
 *   - open loop: orders are due at `rate` per second at fixed intervals
 *     whatever the replies; `senders` threads send them, and the RPC
 *     latency counts from the time an order was due (a late send is the
 *     system's delay, not hidden: no coordinated omission).
 * Slot i (or order i, open loop) orders as account i % accounts.
 *
 * Completion (accepted -> CONFIRMED visible on order-query) is watched
 * by one poller thread per account, not per order: it calls
 * ListOrdersByCustomer with a consistency token on the account's oldest
 * open order (version 2: the order's second event is OrderConfirmed or
 * OrderCancelled) and a wait budget of LOADGEN_POLL_WAIT_MS, so order-query
 * answers as soon as its projection has it; a page sized to the account's
 * open orders settles every one of them that is done. When the oldest is
 * not done within the budget and the account has other open orders, one
 * list without a token settles those that are. So the load of watching grows with the accounts, not
 * the rate, and an order is seen at most about LOADGEN_POLL_WAIT_MS after its confirmation (sooner
 * when it is the oldest open one).
 *
 * Measurement: warm-up first (orders placed, nothing recorded), then the
 * window of duration_s: the orders whose CreateOrder was sent in it are
 * counted, and their completions are waited for up to drain_s after it.
 *
 * Threads: loadgen_setup, loadgen_run and loadgen_destroy from one thread;
 * loadgen_run starts and joins its own threads.
 */
#ifndef SHOP_LOADGEN_H
#define SHOP_LOADGEN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "config/config.h"
#include "status/status.h"

#define LOADGEN_STOCK 1000000000LL
#define LOADGEN_POLL_WAIT_MS 250
#define LOADGEN_MAX_CPU 24

typedef enum loadgen_mode {
  LOADGEN_CLOSED = 0,
  LOADGEN_OPEN = 1,
} loadgen_mode;

typedef struct loadgen_opts {
  const shop_cfg *cfg; /* endpoints, JWT key, currency (borrowed) */
  loadgen_mode mode;
  double rate;         /* open loop: orders per second */
  int customers;       /* closed loop: concurrent customers */
  bool no_wait;        /* closed loop: next order as soon as the reply is in */
  bool no_watch;       /* with no_wait: orders are not watched for completion, so
                        * order-query need not run (the command side alone) */
  int accounts;        /* distinct customer accounts; 0: min(customers or senders, 16) */
  int senders;         /* open loop: sending threads; 0: 64 */
  double warmup_s;     /* default 3 */
  double duration_s;   /* default 10 */
  double drain_s;      /* wait for completions after the window; default 30 */
  int products;        /* default 20 */
  int lines;           /* products per order; default 2 */
  bool register_users; /* RegisterUser each account (needs user-command) */
  int timeout_ms;      /* per CreateOrder; default 10000 */
  const char *run_dir; /* run folder whose processes' CPU is measured; may be NULL */
} loadgen_opts;

/* Latency summary in milliseconds. */
typedef struct loadgen_lat {
  size_t n;
  double p50, p90, p99, max;
} loadgen_lat;

/* One status code (or outcome) and how often it was met. */
typedef struct loadgen_count {
  char what[48]; /* "UNAVAILABLE", "order CANCELLED: INVENTORY_REJECTED", "incomplete" */
  int64_t n;
} loadgen_count;

#define LOADGEN_MAX_COUNTS 32

/* CPU seconds a process spent in the window. */
typedef struct loadgen_cpu {
  char name[48];
  long pid;
  double seconds;
  char admin[96]; /* its admin server ("http://127.0.0.1:19105"), or "" */
} loadgen_cpu;

/* What the window cost the stack, counted by the stack itself: MariaDB's
 * global status (statements = Questions, explicit COMMITs, InnoDB's data
 * and redo-log fsyncs) and, summed over every program of the run folder,
 * its Kafka clients' requests (librdkafka statistics, as of their last
 * emission: kafka.statistics_interval_ms) and the events it published and
 * consumed (/metrics). Deltas over the window; per order in the JSON. */
typedef enum loadgen_cost {
  LOADGEN_COST_STATEMENTS,
  LOADGEN_COST_SELECTS,
  LOADGEN_COST_INSERTS,
  LOADGEN_COST_UPDATES,
  LOADGEN_COST_DELETES,
  LOADGEN_COST_COMMITS,
  LOADGEN_COST_DATA_FSYNCS,
  LOADGEN_COST_LOG_FSYNCS,
  LOADGEN_COST_KAFKA_REQUESTS,
  LOADGEN_COST_KAFKA_FETCHES,
  LOADGEN_COST_KAFKA_PRODUCES,
  LOADGEN_COST_EVENTS_PUBLISHED,
  LOADGEN_COST_EVENTS_CONSUMED,
  LOADGEN_COST_COUNT
} loadgen_cost;

typedef struct loadgen_costs {
  bool db_ok;  /* the MariaDB counters were read at both ends */
  int scraped; /* programs whose /metrics answered at both ends */
  double v[LOADGEN_COST_COUNT];
} loadgen_costs;

/* The JSON key of each loadgen_cost ("statements", "kafka_requests"...). */
extern const char *const loadgen_cost_names[LOADGEN_COST_COUNT];

typedef struct loadgen_report {
  loadgen_mode mode;
  double rate;
  int customers;
  bool no_wait;
  bool no_watch;
  int accounts;
  double window_s;
  int64_t sent;      /* CreateOrder calls sent in the window */
  int64_t accepted;  /* of which answered OK */
  int64_t completed; /* of which seen CONFIRMED */
  int64_t failed;    /* errors of any kind (calls and orders) */
  double accepted_per_s, completed_per_s;
  loadgen_lat rpc;        /* CreateOrder, OK calls */
  loadgen_lat completion; /* accepted -> CONFIRMED seen */
  size_t n_counts;
  loadgen_count counts[LOADGEN_MAX_COUNTS]; /* errors by code; empty when none */
  int64_t polls;                            /* ListOrdersByCustomer calls in the window */
  size_t n_cpu;
  loadgen_cpu cpu[LOADGEN_MAX_CPU];
  loadgen_costs costs; /* when run_dir is given */
} loadgen_report;

typedef struct loadgen loadgen;

/* Checks opts, connects, sets up accounts, tokens and products. On
 * success *out owns the generator (loadgen_destroy). Errors: INVALID_ARGUMENT
 * for bad options, else what the calls met; errbuf says which step. */
status_code loadgen_setup(loadgen **out, const loadgen_opts *opts, char *errbuf, size_t errlen);

/* Runs warm-up, window and drain; fills rep. */
status_code loadgen_run(loadgen *lg, loadgen_report *rep, char *errbuf, size_t errlen);

void loadgen_destroy(loadgen *lg);

/* The SKU prefix of the products this generator created ("LG-<run>-"):
 * what `shopctl reconcile --sku-prefix` narrows the books check to. */
const char *loadgen_sku_prefix(const loadgen *lg);

/* The report as a table for people. */
void loadgen_report_print(const loadgen_report *rep, FILE *f);

/* The report as one JSON object (malloc'd; free()). extra (may be NULL)
 * is a JSON object text whose members are added (the books check). */
char *loadgen_report_json(const loadgen_report *rep, const char *extra);

/* Reads the CPU seconds (utime + stime) of pid from /proc; -1 if unknown. */
double loadgen_cpu_seconds(long pid);

/* The processes of a run folder (scripts/services.sh and infra.sh):
 * the program each supervisor in <dir>/pids runs (with the admin URL
 * services.sh wrote beside its pid file), mysqld and the Kafka broker.
 * Fills up to max; returns how many. */
size_t loadgen_processes(const char *run_dir, loadgen_cpu *out, size_t max);

#endif
