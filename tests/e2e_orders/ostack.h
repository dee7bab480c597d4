/*
 * ostack: the running Shop programs that the order end-to-end tests talk
 * to: product-command, product-query, order-command, order-query,
 * inventory-worker and payment-worker, each a real process of build/bin
 * with the test config (SHOP_CONFIG, or config/test.yaml of the source
 * tree), on the test profile's Kafka and MariaDB.
 *
 * Criterion runs each test in a process of its own, so the programs are
 * started once, in the runner (ReportHook PRE_ALL: ostack_up; POST_ALL:
 * ostack_down). The runner hands the tests what they need through the
 * environment: each program's pid (SHOP_E2E_PID_<PROGRAM>, for the tests
 * that pause or stop one), a run id (SHOP_E2E_RUN, a prefix for every SKU
 * the run creates), and the end offsets of the order, payment, inventory
 * and product topics when the run began (SHOP_E2E_REPLAY_FROM, where the
 * replay test rewinds the consumer groups to). A failed start is handed on
 * as SHOP_STACK_ERROR and fails every test with its reason.
 *
 * Programs with an RPC endpoint are ready when Health/Check answers
 * SERVING; the workers, which have none, when their log says "serving".
 * Logs are appended to $SHOP_LOG_DIR/e2e-<program>.log.
 *
 * Access tokens are minted with the test profile's JWT key (ostack_token),
 * so the tests need no user-command: any user id, customer or admin.
 */
#ifndef SHOP_TESTS_OSTACK_H
#define SHOP_TESTS_OSTACK_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "auth/auth.h"
#include "config/config.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "shop/order/v1/commands.pb-c.h"
#include "support/proc.h"

/* Runner side. ostack_up_with also starts the n programs of more (at
 * most 4, e.g. "audit-worker"; names borrowed for the run) after the six. */
void ostack_up(void);
void ostack_up_with(const char *const *more, size_t n);
void ostack_down(void);

/* Test side: .init fails the test if the stack did not start; .fini
 * closes clients and kills what the test started and did not stop. */
void ostack_require(void);
void ostack_release(void);

/* The test config (loaded once per process). */
const shop_cfg *ostack_cfg(void);
/* The endpoint of program from the config, NULL for the workers. */
const char *ostack_url(const char *program);
/* The pid the runner started program with. */
pid_t ostack_pid(const char *program);
/* The run id (SKU prefix). */
const char *ostack_run(void);
/* The test config's path (SHOP_CONFIG, or config/test.yaml of the source
 * tree), for programs a test runs itself. */
const char *ostack_config_path(void);
/* The path of a Shop program of this build (build/bin/<program>). */
void ostack_bin_path(char *out, size_t len, const char *program);

/* Starts another instance of program (on url when it serves RPC), with
 * env additions ("NAME=value", NULL-terminated; may be NULL), and waits
 * until it is ready. Fails the test on error. */
proc *ostack_start(const char *program, const char *url, const char *const *env);
/* SIGTERMs it, waits, frees; returns its exit status. */
int ostack_stop(proc *p);

/* A client of the endpoint url (opened on first use, closed at .fini). */
rpc_client *ostack_client(const char *url);

/* Calls method of desc on url; see stack_call in e2e_catalog/stack.h. */
status_code ostack_call(const char *url, const ProtobufCServiceDescriptor *desc, const char *method,
                        const ProtobufCMessage *in, ProtobufCMessage **out, const char *token,
                        const char *key, rpc_status *st);

/* Mints an access token for sub with role. out holds AUTH_TOKEN_MAX. */
void ostack_token(char *out, const char *sub, auth_role role);

/* Creates a product (SKU prefixed with the run id) with stock, price (EUR
 * minor units) and max units per order (0: no limit), as the admin of
 * admin_token, and waits until product-query has it. Fails the test on
 * error. */
void ostack_product(const char *admin_token, int64_t stock, int64_t price, int32_t max,
                    char id[37]);

/* A CreateOrder request of up to 4 lines to one shipping address; every
 * string is borrowed. */
typedef struct ostack_order {
  Shop__Order__V1__CreateOrderRequest req;
  Shop__Order__V1__CreateOrderLine line[4];
  Shop__Order__V1__CreateOrderLine *lp[4];
  Shop__Order__V1__ShippingAddress addr;
} ostack_order;

/* An order without lines, paid with the card token. */
void ostack_order_init(ostack_order *o, const char *token);
/* Adds a line of qty units of product_id. */
void ostack_order_line(ostack_order *o, const char *product_id, int32_t qty);

/* A fresh idempotency key or unique name part. */
void ostack_unique(char *out, size_t len, const char *prefix);

/* A connection to the database named like its account (shop_order, ...). */
db_conn *ostack_db(const char *account);

/* Kafka, for the replay test. True when group has committed, on every
 * partition of the topics, the end offset the partition has now. */
bool ostack_group_caught_up(const char *group, const char *const *topics, size_t n);
/* Commits, for group, the offsets the topics had when the run began
 * (SHOP_E2E_REPLAY_FROM). The broker refuses while the group has a
 * member: false then (try again once the member has left or been
 * dropped). */
bool ostack_group_rewind(const char *group, const char *const *topics, size_t n);

/* One record of a domain topic, as its headers say. */
typedef struct ostack_record {
  char type[160];        /* ce_type */
  char id[64];           /* ce_id */
  char traceparent[128]; /* "" when the record has none */
} ostack_record;

/* The records of topic (order, payment, inventory or product) with key,
 * from where the run began (SHOP_E2E_REPLAY_FROM) to the topic's end now.
 * Fills out with at most max of them and returns how many there are. */
size_t ostack_records(const char *topic, const char *key, ostack_record *out, size_t max);

/* The same for every partition's low watermark (a reset to the earliest
 * offset). */
bool ostack_group_rewind_earliest(const char *group, const char *const *topics, size_t n);
/* The end offset topic/partition (a domain topic) had when the run
 * began. */
int64_t ostack_start_offset(const char *topic, int partition);

/* Runs reconcile (reconcile.h) on the orders and products of this run
 * (SKU prefix SHOP_E2E_RUN), settling for at most settle_ms, and prints
 * every finding and a summary to stderr. with_audit_worker: starts an
 * audit-worker for the time of the check, so that the audit log catches
 * up with the run's events (the caller must not run one of its own). True
 * when the books are clean, or when the stack never started (the tests
 * have failed already). Runner or test side. */
bool ostack_books_clean(bool with_audit_worker, int settle_ms);

/* Milliseconds on a monotonic clock. */
int64_t ostack_now_ms(void);

/* Waits until cond holds (looked at every 20 ms) for at most ms; sets ok. */
#define OSTACK_WAIT(ok, cond, ms)                                                                  \
  do {                                                                                             \
    int64_t ostack_until_ = ostack_now_ms() + (ms);                                                \
    while (!((ok) = (cond)) && ostack_now_ms() < ostack_until_) usleep(20000);                     \
  } while (0)

#endif
