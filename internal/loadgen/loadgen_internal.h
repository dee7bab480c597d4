/*
 * What the files of the load generator share: loadgen.c (helpers, set-up,
 * the run), loadgen_orders.c (placing orders, watching them complete) and
 * loadgen_report.c (CPU of the stack's processes, reports). Not part of
 * the module's contract (that is loadgen.h); nothing outside
 * internal/loadgen includes this file.
 */
#ifndef SHOP_LOADGEN_INTERNAL_H
#define SHOP_LOADGEN_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "auth/auth.h"
#include "events/events.h"
#include "loadgen/loadgen.h"
#include "rpc/rpc.h"

#include "db/db.h"

#define LG_ACCOUNTS_MAX 256
#define LG_PAGE_MAX 500

/* A growable array of latencies in milliseconds. */
typedef struct lat_vec {
  double *v;
  size_t n, cap;
} lat_vec;

/* A closed-loop slot waiting for its order (no_wait off). */
typedef struct slot {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done; /* 0 waiting, 1 settled */
} slot;

/* An accepted order not yet seen settled. */
typedef struct open_order {
  char id[EVENTS_ID_SIZE];
  int64_t accepted_ns;
  int64_t seq; /* the account's count of accepted orders when it was added */
  bool in_window;
  slot *waiter; /* may be NULL */
} open_order;

typedef struct account {
  char user_id[AUTH_SUB_MAX + 1];
  char token[AUTH_TOKEN_MAX];
  pthread_mutex_t mu;
  pthread_cond_t cv; /* a new open order */
  open_order *open;
  size_t n_open, cap_open;
  int64_t accepted;   /* orders accepted for this account so far */
  int in_flight;      /* CreateOrder calls under way */
  int peak_in_flight; /* the most there ever were at once */
  pthread_t poller;
  struct loadgen *lg;
} account;

/* A closed-loop customer thread. */
typedef struct customer {
  loadgen *lg;
  int index;
  slot s;
  pthread_t thread;
} customer;

struct loadgen {
  loadgen_opts o;
  rpc_client *order_cmd, *order_query, *product_cmd, *product_query, *user_cmd;
  auth_keys *keys;
  char run[40];
  char sku_prefix[48];
  char admin_token[AUTH_TOKEN_MAX];
  char (*products)[EVENTS_ID_SIZE];
  int n_products;
  account *accounts;
  int n_accounts;

  /* The run. */
  atomic_bool stop_load, stop_pollers;
  atomic_llong orders_sent; /* numbering of idempotency keys and accounts (open loop) */
  int64_t window_start_ns, window_end_ns;
  pthread_mutex_t mu; /* guards what follows */
  lat_vec rpc_lat, done_lat;
  int64_t sent, accepted, completed, failed, polls;
  loadgen_count counts[LOADGEN_MAX_COUNTS];
  size_t n_counts;
  int64_t open_in_window; /* accepted in the window, not yet settled */

  /* Open loop: due times waiting for a sender. */
  pthread_mutex_t qmu;
  pthread_cond_t qcv;
  int64_t *queue;
  size_t qcap, qhead, qlen;
  bool qclosed;
};

int64_t loadgen_now_ns(void);
void loadgen_sleep_until_ns(int64_t ns);
void loadgen_sleep_ms(int ms);
void loadgen_abs_after_ms(struct timespec *ts, int ms);
void loadgen_lat_push(lat_vec *l, double ms);
bool loadgen_in_window(const loadgen *lg, int64_t t);
/* Counts one error (lg->mu held). */
void loadgen_count_locked(loadgen *lg, const char *what);
void loadgen_count_error(loadgen *lg, const char *what);
status_code loadgen_call(rpc_client *c, const ProtobufCServiceDescriptor *d, const char *method,
                         const ProtobufCMessage *in, ProtobufCMessage **out, const char *token,
                         const char *key, int timeout_ms, char *errbuf, size_t errlen);
void loadgen_slot_settle(slot *s);
void *loadgen_poller_main(void *arg);
void *loadgen_customer_main(void *arg);
void *loadgen_sender_main(void *arg);
/* Open loop: orders due at fixed intervals until end_ns. */
void loadgen_schedule(loadgen *lg, int64_t start_ns, int64_t end_ns);

/* The cost counters (loadgen_costs.c): a connection that may read
 * MariaDB's global status, one snapshot, the difference of two. */
status_code loadgen_costs_open(db_conn **out, const shop_cfg *cfg, char *errbuf, size_t errlen);
void loadgen_costs_read(db_conn *db, const loadgen_cpu *procs, size_t n, loadgen_costs *out);
void loadgen_costs_delta(const loadgen_costs *after, const loadgen_costs *before,
                         loadgen_costs *out);

#endif
