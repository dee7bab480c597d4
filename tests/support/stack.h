/*
 * stack: the one harness that runs real Shop programs for the end-to-end
 * tests (the sanitized build's build/bin/<program>, the test config, the
 * test profile's MariaDB and Kafka that scripts/test.sh brought up).
 *
 * Criterion runs each test in a process of its own (it re-executes the test
 * binary), so the programs a binary needs are started once, in the runner:
 *
 *   ReportHook(PRE_ALL)(struct criterion_test_set *s) {
 *     stack_up((const char *const[]){STACK_ORDER_PROGRAMS, "audit-worker", NULL});
 *   }
 *   ReportHook(POST_ALL)(struct criterion_global_stats *s) { stack_down(); }
 *   TestSuite(orders, .init = stack_require, .fini = stack_release);
 *
 * stack_up starts every program at once, each with --admin-port on a free
 * port the harness picked (and --listen on its config endpoint when it
 * serves RPC), its output appended to $SHOP_LOG_DIR/e2e-<program>.log, then
 * waits until each answers 200 on its admin /readyz (started, database
 * answering, RPC server up, consumer with partitions: internal/app/app.h).
 * The runner hands the tests what they need in the environment: a failed
 * start (SHOP_STACK_ERROR, which makes stack_require fail every test with
 * the reason instead of letting each time out), the run id
 * (SHOP_E2E_RUN, a prefix for every SKU the run creates), each program's
 * pid (SHOP_E2E_PID_<PROGRAM>, for the tests that pause one) and the end
 * offset of every domain topic's partitions when the run began
 * (SHOP_E2E_REPLAY_FROM: the replay tests rewind groups there, the record
 * readers start there).
 *
 * stack_down stops them in the reverse order (SIGCONT first: a test may
 * have paused one; then SIGTERM, SIGKILL after 30 s) and reports on stderr
 * each program that did not exit 0 after SIGTERM; the runner then exits 3.
 * stack_release (a suite's .fini) closes the test's clients and stops
 * every extra instance the test or its suite's .init started (stack_start,
 * stack_sink) and did not stop, reporting each that does not stop cleanly,
 * so a failed assertion leaves no process behind; it also lets go
 * (SIGCONT) every program of the runner a test may have paused.
 *
 * Which harness is which:
 *  - this one: every Criterion end-to-end test (tests/e2e_*, tests/user,
 *    tests/product, tests/authz, tests/metrics, tests/shopctl): unsupervised
 *    programs it starts and stops itself, in the test profile;
 *  - scripts/lib/faults.sh (with scripts/services.sh and
 *    scripts/lib/supervise.sh): the crash matrix (scripts/faults.sh,
 *    faults_fast), which needs every program under a supervisor that
 *    restarts it after an armed crash, on a stack of its own
 *    (SHOP_FAULTS_PORT_BASE); tests/faults/faults_load.c drives and checks
 *    it. What both need and is not about processes (a product, an order
 *    request) is in tests/support/requests.h.
 * The programs and their endpoints: the project's one list
 * (internal/config/programs.list, config_programs), which scripts/services.sh
 * and CMake's SHOP_PROGRAMS read too.
 *
 * Not thread-safe: call from the runner's or the test's main thread
 * (stack_call and stack_client from any thread once the client exists).
 */
#ifndef SHOP_TESTS_STACK_H
#define SHOP_TESTS_STACK_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "auth/auth.h"
#include "config/config.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "shop/user/v1/commands.pb-c.h"
#include "support/proc.h"
#include "support/requests.h"

/* The programs an order flows through, for stack_up's list. */
#define STACK_ORDER_PROGRAMS                                                                       \
  "product-command", "product-query", "order-command", "order-query", "inventory-worker",          \
      "payment-worker"

/* ---- Runner side ---------------------------------------------------------------------------- */

/* Starts the programs (NULL-terminated names, at most 12; borrowed for the
 * run) and waits until each is ready. A failure is handed to the tests
 * (SHOP_STACK_ERROR) and printed. */
void stack_up(const char *const *programs);
/* Stops them; exits 3 when one did not stop cleanly. */
void stack_down(void);
/* For a POST_ALL hook after scenarios that leave the books of their run
 * behind: stack_books_clean(true, settle_ms) on the quiet stack, then
 * stack_down; exits 4 when the books did not balance. */
void stack_down_after_books(int settle_ms);

/* ---- Test side ------------------------------------------------------------------------------ */

/* .init: fails the test if stack_up failed. */
void stack_require(void);
/* .fini: closes clients, kills (and reports) what the test left running. */
void stack_release(void);

/* The test config (SHOP_CONFIG, or config/test.yaml of the source tree),
 * loaded once per process; fails the test if it does not load. */
const shop_cfg *stack_cfg(void);
/* Its path. */
const char *stack_config(void);
/* The path of build/bin/<program> of this build. */
void stack_bin(char *out, size_t len, const char *program);
/* The endpoint of program from the config; NULL for a program without one
 * (the workers but audit-worker). */
const char *stack_url(const char *program);
/* The pid the runner started program with. */
pid_t stack_pid(const char *program);
/* The run id (SKU prefix). */
const char *stack_run(void);

/* How stack_start_with starts one more instance. */
typedef struct stack_opts {
  const char *url;        /* --listen URL; NULL: none (a worker, or the config's endpoint) */
  const char *const *env; /* "NAME=value" additions, NULL-terminated; may be NULL */
  /* --admin-port: 0 picks a free port and waits for /readyz there; -1
   * passes none (the program's own default) and waits only for url's
   * Health/Check, if url is given. */
  int admin_port;
  bool no_wait;         /* start only: the test looks at readiness itself */
  const char *log_path; /* NULL: $SHOP_LOG_DIR/e2e-<program>.log */
} stack_opts;

/* Starts another instance of program and waits until it is ready. Fails
 * the test on error. The instance is the test's: stack_stop it, or
 * stack_release stops it. */
proc *stack_start(const char *program, const char *url, const char *const *env);
proc *stack_start_with(const char *program, const stack_opts *o);
/* SIGTERMs it, waits (30 s, then SIGKILL), frees; returns its exit status
 * (0 after a clean stop). */
int stack_stop(proc *p);
/* The admin HTTP port an instance was started with (0: unknown). */
int stack_admin_port(const proc *p);

/* A client of url (opened on first use, closed by stack_release). */
rpc_client *stack_client(const char *url);

/*
 * Calls method of the service desc on program (stack_call) or on url
 * (stack_call_at) and returns the status code. token may be NULL
 * (anonymous); key is the idempotency key (NULL: none). On OK *out (if out
 * is not NULL) owns the reply (free it with protobuf_c_message_free_unpacked);
 * st (may be NULL) gets the status.
 */
status_code stack_call(const char *program, const ProtobufCServiceDescriptor *desc,
                       const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                       const char *token, const char *key, rpc_status *st);
status_code stack_call_at(const char *url, const ProtobufCServiceDescriptor *desc,
                          const char *method, const ProtobufCMessage *in, ProtobufCMessage **out,
                          const char *token, const char *key, rpc_status *st);

/* True when st carries a field violation on field. */
bool stack_has_violation(const rpc_status *st, const char *field);

/* Asserts that code (a call's answer, its status in st) is
 * INVALID_ARGUMENT with a violation on field. */
#define STACK_ASSERT_INVALID(code, st, field)                                                      \
  do {                                                                                             \
    status_code stack_code_ = (code);                                                              \
    cr_assert_eq(stack_code_, STATUS_INVALID_ARGUMENT, "%s: got %s (%s)", (field),                 \
                 status_name(stack_code_), (st).message);                                          \
    cr_assert(stack_has_violation(&(st), (field)), "no violation on %s (%s)", (field),             \
              (st).message);                                                                       \
  } while (0)

/* A fresh idempotency key or unique name part: prefix-<pid>-<n>-<us>. */
void stack_unique(char *out, size_t len, const char *prefix);

/* A fresh idempotency key (valid until 15 more calls). */
const char *stack_key(void);

/* Logs in through user-command, which must answer OK; the caller frees
 * the reply. */
Shop__User__V1__LoginResponse *stack_login(const char *email, const char *password);

/* A registered, logged-in user. */
typedef struct stack_user {
  char email[160];
  char user_id[40];
  char token[AUTH_TOKEN_MAX];
  /* RegisterUser's token; its aggregate_id points at user_id: do not copy the struct. */
  Shop__Common__V1__ConsistencyToken consistency;
} stack_user;

/* Registers a customer with a unique email made from who (name: name,
 * email notifications on) through user-command and logs in. Fails the
 * test on error. */
void stack_customer(stack_user *u, const char *who, const char *name);

/* Mints an access token for sub with role with the test profile's JWT key
 * (no user-command needed). out holds AUTH_TOKEN_MAX. */
void stack_token(char *out, const char *sub, auth_role role);
/* The first admin's password ($SHOP_SECRETS_DIR/admin.password). */
void stack_admin_password(char *out, size_t len);
/* A connection to the database named like its account (shop_order, ...),
 * as that account. */
db_conn *stack_db(const char *account);

/* The password stack_customer registers with. */
#define STACK_PASSWORD "correct horse battery staple"

/* Creates a product (SKU prefixed with the run id) with stock, price (EUR
 * minor units) and max units per order (0: no limit), as the admin of
 * admin_token, and waits until product-query has it. Fails the test on
 * error. */
void stack_product(const char *admin_token, int64_t stock, int64_t price, int32_t max, char id[37]);

/* Waits (GetProduct with token t, 15 s) until product-query has product
 * id at t's version. Fails the test on error. */
void stack_product_seen(const char *id, Shop__Common__V1__ConsistencyToken *t);

/* Starts a test sink (tests/notification/<script>, a Python SMTP or
 * webhook receiver) on port, keeping what it receives in dir, and waits
 * for its ready file. The sink is the test's: stop it with stack_stop. */
proc *stack_sink(const char *script, int port, const char *dir);

/* What a sink received: every file of dir whose name ends in ext (".eml",
 * ".json") and that contains needle (NULL: any), concatenated, each
 * followed by a newline; *count gets how many. The caller frees it. */
char *stack_sink_received(const char *dir, const char *ext, const char *needle, int *count);

/* ---- Kafka ---------------------------------------------------------------------------------- */

/* True when group has committed, on every partition of the topics, the end
 * offset the partition has now. */
bool stack_group_caught_up(const char *group, const char *const *topics, size_t n);
/* Commits, for group, the offsets the topics had when the run began
 * (stack_group_rewind) or every partition's low watermark (_earliest). The
 * broker refuses while the group has a member: false then (try again once
 * the member has left or been dropped). */
bool stack_group_rewind(const char *group, const char *const *topics, size_t n);
bool stack_group_rewind_earliest(const char *group, const char *const *topics, size_t n);
/* For a replay: forgets what group's inbox saw (its processed_events rows
 * in database inbox_db; NULL: keeps them) and commits, for group, the
 * offsets its topics had when the run began (earliest: every partition's
 * low watermark), waiting up to 60 s while the broker refuses (a paused
 * member is still in the group). Fails the test on error. */
void stack_group_reset(const char *group, const char *inbox_db, bool earliest);

/* The end offset topic/partition (a domain topic) had when the run began. */
int64_t stack_start_offset(const char *topic, int partition);

/* Reads topic (a domain topic) from where the run began (not below the low
 * watermark) to its end now, handing each record to fn; fails the test
 * when that is not done within timeout_ms. */
typedef void (*stack_record_cb)(const void *rd_kafka_message, void *arg);
void stack_topic_read(const char *topic, stack_record_cb fn, void *arg, int timeout_ms);

/* One record of a domain topic, as its headers say. */
typedef struct stack_record {
  char type[160];        /* ce_type */
  char id[64];           /* ce_id */
  char traceparent[128]; /* "" when the record has none */
} stack_record;

/* The records of topic with key since the run began. Fills out with at
 * most max of them and returns how many there are. */
size_t stack_records(const char *topic, const char *key, stack_record *out, size_t max);

/* The topics consumer group (consumers.h) reads, into out (at most max);
 * how many. */
#define STACK_GROUP_TOPICS_MAX 16
size_t stack_group_topics(const char *group, const char **out, size_t max);

/* The group has committed the end of every topic it reads
 * (stack_group_caught_up of stack_group_topics). */
bool stack_group_quiet(const char *group);

/* Rows of account's outbox (its database) not sent yet. */
int64_t stack_unsent(const char *account);

/* Quiet: every group named has caught up (stack_group_quiet) and no
 * outbox of the accounts named has an unsent row. Otherwise false, and
 * why (may be NULL) says the first thing that is not. */
bool stack_quiet(const char *const *groups, size_t n_groups, const char *const *outboxes,
                 size_t n_outboxes, char *why, size_t whylen);

/* ---- The books ------------------------------------------------------------------------------ */

/* Runs reconcile (reconcile.h) on the orders and products of this run,
 * settling for at most settle_ms, and prints every finding and a summary to
 * stderr. with_audit_worker: starts an audit-worker for the time of the
 * check, so that the audit log catches up with the run's events (the
 * caller must not run one of its own). True when the books are clean, or
 * when the stack never started (the tests have failed already). Runner or
 * test side. */
bool stack_books_clean(bool with_audit_worker, int settle_ms);

#endif
