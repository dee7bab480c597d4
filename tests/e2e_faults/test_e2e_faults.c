/* Outages under load and scale-out on one machine (issue 9), end to end:
 * the order programs of tests/support/stack.h plus the audit-worker as real processes,
 * the test profile's real Kafka broker and MariaDB, which these tests
 * SIGKILL and start again through scripts/infra.sh.
 *
 *   s1_kafka    the broker killed during a load of orders, kept down
 *               longer than any producer timeout, started again
 *   s2_mariadb  MariaDB killed during a load: UNAVAILABLE while down,
 *               reconnection timed once it is back
 *   s3_replay   every consumer group reset (to the run's start; the long
 *               variant to the earliest offset) and replayed on a quiet
 *               stack: table checksums unchanged
 *   s4_scale    two instances of each worker and of product-query under
 *               load, one of each SIGKILLed midway
 *
 * Each ends with the books (books.h). By default the variants are short
 * (a few dozen orders, outages of seconds) for `make test`;
 * SHOP_FAULTS_FULL=1 runs hundreds of orders and a 30 s broker outage.
 * Every test prints its figures on stderr as "faults: ..." lines.
 *
 * Suites run in name order, one test at a time (ctest -j1 keeps other
 * binaries off the broker and the database they kill). */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "e2e_faults/books.h"
#include "events/events.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/order/v1/queries.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "support/stack.h"
#include "support/wait.h"
#include "topology/topology.h"

#ifndef SHOP_SOURCE_DIR
#define SHOP_SOURCE_DIR "."
#endif

#define OCMD_SVC (&shop__order__v1__order_command_service__descriptor)
#define OQRY_SVC (&shop__order__v1__order_query_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define THREADS 4
#define PRODUCTS 4
#define GIVE_UP_MS 240000
#define SETTLE_MS 240000
#define RECONNECT_BOUND_MS 10000

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  stack_up((const char *const[]){STACK_ORDER_PROGRAMS, "audit-worker", NULL});
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

static bool full(void) {
  const char *s = getenv("SHOP_FAULTS_FULL");
  return s != NULL && s[0] != '\0' && strcmp(s, "0") != 0;
}

/* ---- Infrastructure ------------------------------------------------------------------------- */

static int infra_run(const char *what) {
  const char *repo = getenv("SHOP_REPO");
  const char *logs = getenv("SHOP_LOG_DIR");
  char cmd[2048];
  snprintf(cmd, sizeof cmd,
           "'%s/scripts/infra.sh' %s --profile test >>'%s/e2e-faults-infra.log' 2>&1",
           repo != NULL ? repo : SHOP_SOURCE_DIR, what, logs != NULL ? logs : "/tmp");
  return system(cmd);
}

/* Runs scripts/infra.sh what; returns how long it took. */
static int64_t infra(const char *what) {
  int64_t t0 = wait_now_ms();
  int rc = infra_run(what);
  cr_assert_eq(rc, 0, "scripts/infra.sh %s failed (%d, see e2e-faults-infra.log)", what, rc);
  return wait_now_ms() - t0;
}

/* Whatever a test killed is started again, even when it failed. */
static void infra_fini(void) {
  infra_run("start-mariadb");
  infra_run("start-kafka");
  stack_release();
}

/* ---- Load ----------------------------------------------------------------------------------- */

typedef struct load load;

typedef struct loader {
  pthread_t t;
  load *l;
  int i;
  char id[EVENTS_ID_SIZE];
  char token[AUTH_TOKEN_MAX];
  books_id first; /* the thread's first acknowledged order */
} loader;

struct load {
  const char *url;
  int per_thread, pace_ms;
  char prefix[96];
  char prod[PRODUCTS][37];
  loader th[THREADS];
  const char *customers[THREADS];
  books_id ids[THREADS * 100];
  _Atomic int acked;
  _Atomic int codes[17]; /* answers other than OK, by code */
  _Atomic int failed;
  char failure[512];
};

/* One CreateOrder of the load; true when it is answered for good (OK, or
 * a refusal that is not the outage's). The same key again after an
 * UNAVAILABLE or DEADLINE_EXCEEDED: a command that did commit answers its
 * stored reply, so nothing is placed twice. */
static bool create_once(loader *me, const req_order *m, const rpc_call_opts *o, status_code *c,
                        rpc_status *st) {
  load *l = me->l;
  ProtobufCMessage *out = NULL;
  *c = rpc_client_call_sync(stack_client(l->url), OCMD_SVC, "CreateOrder", &m->req.base, &out, o,
                            st);
  if (*c == STATUS_OK) {
    int n = atomic_fetch_add(&l->acked, 1);
    const char *id = ((Shop__Order__V1__CreateOrderResponse *)out)->order_id;
    snprintf(l->ids[n], sizeof l->ids[n], "%s", id);
    if (me->first[0] == '\0') snprintf(me->first, sizeof me->first, "%s", id);
  } else if (*c >= 0 && *c < 17) {
    atomic_fetch_add(&l->codes[*c], 1);
  }
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
  return *c != STATUS_UNAVAILABLE && *c != STATUS_DEADLINE_EXCEEDED;
}

static void *loader_main(void *arg) {
  loader *me = arg;
  load *l = me->l;
  for (int j = 0; j < l->per_thread && !atomic_load(&l->failed); j++) {
    /* Every tenth card is declined: cancellations and voids under load too. */
    req_order m;
    req_order_init(&m, j % 10 == 9 ? "tok_decline_load" : "tok_visa");
    req_order_line(&m, l->prod[(me->i + j) % PRODUCTS], 1);
    char key[160];
    snprintf(key, sizeof key, "%s-%d-%d", l->prefix, me->i, j);
    rpc_call_opts o = {
        .token = me->token, .idempotency_key = key, .timeout_ms = 10000, .no_retry = true};
    status_code c = STATUS_UNKNOWN;
    rpc_status st;
    bool answered;
    WAIT_FOR(answered, create_once(me, &m, &o, &c, &st), GIVE_UP_MS);
    if (c != STATUS_OK && !atomic_exchange(&l->failed, 1))
      snprintf(l->failure, sizeof l->failure, "CreateOrder %.160s: %s: %.200s%s", key,
               status_name(c), st.message, answered ? "" : " (still after the give-up time)");
    wait_sleep_ms(l->pace_ms); /* a pace on purpose: the load spreads over the outage */
  }
  return NULL;
}

/* Products with stock for most but not all of total orders, customers,
 * and a client of url opened before the threads share it. */
static void load_init(load *l, const char *url, int per_thread, int pace_ms) {
  memset(l, 0, sizeof *l);
  l->url = url;
  l->per_thread = per_thread;
  l->pace_ms = pace_ms;
  stack_unique(l->prefix, sizeof l->prefix, "load");
  char admin_id[EVENTS_ID_SIZE], admin_token[AUTH_TOKEN_MAX];
  events_uuid_v7(admin_id);
  stack_token(admin_token, admin_id, AUTH_ROLE_ADMIN);
  int total = THREADS * per_thread;
  for (int p = 0; p < PRODUCTS; p++)
    stack_product(admin_token, (total * 4 / 5) / PRODUCTS, 700 + p, 0, l->prod[p]);
  for (int i = 0; i < THREADS; i++) {
    l->th[i].l = l;
    l->th[i].i = i;
    events_uuid_v7(l->th[i].id);
    stack_token(l->th[i].token, l->th[i].id, AUTH_ROLE_CUSTOMER);
    l->customers[i] = l->th[i].id;
  }
  cr_assert_leq(total, THREADS * 100);
  stack_client(url);
}

static void load_start(load *l) {
  for (int i = 0; i < THREADS; i++)
    cr_assert_eq(pthread_create(&l->th[i].t, NULL, loader_main, &l->th[i]), 0);
}

static void load_join(load *l) {
  for (int i = 0; i < THREADS; i++) pthread_join(l->th[i].t, NULL);
  cr_assert(!atomic_load(&l->failed), "%s", l->failure);
  cr_assert_eq(atomic_load(&l->acked), THREADS * l->per_thread);
}

/* Waits until at least n orders were acknowledged. */
static void load_wait(load *l, int n) {
  WAIT_UNTIL(atomic_load(&l->acked) >= n || atomic_load(&l->failed), 120000,
             "%d orders acknowledged (%d so far)", n, atomic_load(&l->acked));
  cr_assert(!atomic_load(&l->failed), "load: %d of %d acknowledged; %s", atomic_load(&l->acked), n,
            l->failure);
}

static void load_books(load *l, bool audit, books_figures *fig) {
  books_opts o = {.audit = audit};
  books_check(&o, l->customers, THREADS, (const books_id *)l->ids, (size_t)atomic_load(&l->acked),
              SETTLE_MS, fig);
}

/* A fixed sleep on purpose: the outage lasts this long by design. */
static void hold(int ms) { wait_sleep_ms(ms); }

/* One outage under load: once after orders are acknowledged, part
 * ("kafka", "mariadb") is SIGKILLed, stays down ms (while_down, if any,
 * runs at the end of it), and is started again. */
typedef struct outage {
  int64_t down_ms;    /* from the kill until it answered again */
  int64_t restart_ms; /* how long its start took */
  int64_t back;       /* when it answered again (wait_now_ms) */
} outage;

static outage outage_under_load(load *l, int after, const char *part, int ms,
                                void (*while_down)(void *), void *arg) {
  char cmd[64];
  load_wait(l, after);
  snprintf(cmd, sizeof cmd, "kill-%s", part);
  infra(cmd);
  int64_t down = wait_now_ms();
  hold(ms);
  if (while_down != NULL) while_down(arg);
  snprintf(cmd, sizeof cmd, "start-%s", part);
  outage o = {.restart_ms = infra(cmd)};
  o.back = wait_now_ms();
  o.down_ms = o.back - down;
  return o;
}

/* ---- 1. Kafka ------------------------------------------------------------------------------- */

TestSuite(s1_kafka, .init = stack_require, .fini = infra_fini, .timeout = 900);

Test(s1_kafka, a_broker_killed_under_load_loses_nothing_and_the_outboxes_drain_when_it_returns) {
  int per = full() ? 75 : 10, ms = full() ? 30000 : 5000;
  load l;
  load_init(&l, stack_url("order-command"), per, (ms + 2000) / per);
  int64_t t0 = wait_now_ms();
  load_start(&l);
  outage o = outage_under_load(&l, THREADS * per / 5, "kafka", ms, NULL, NULL);
  load_join(&l);
  int64_t backlog = stack_unsent("shop_order"), left = backlog;
  WAIT_UNTIL((left = stack_unsent("shop_order")) == 0, 120000,
             "the order outbox drained after the broker came back (%lld unsent)", (long long)left);
  int64_t drained = wait_now_ms() - o.back;
  books_figures f;
  load_books(&l, true, &f);
  fprintf(stderr,
          "faults: kafka: broker down %lld ms (restart took %lld ms); %zu orders (%zu confirmed, "
          "%zu cancelled); order outbox %lld unsent when the load ended, drained %lld ms after "
          "the broker was back; settled in %lld ms; %zu redelivered records; test %lld ms\n",
          (long long)o.down_ms, (long long)o.restart_ms, f.orders, f.confirmed, f.cancelled,
          (long long)backlog, (long long)drained, (long long)f.settle_ms, f.redelivered,
          (long long)(wait_now_ms() - t0));
  cr_assert_eq(f.orders, (size_t)(THREADS * per));
}

/* ---- 2. MariaDB ----------------------------------------------------------------------------- */

TestSuite(s2_mariadb, .init = stack_require, .fini = infra_fini, .timeout = 900);

typedef struct probe {
  load *l;
  char key[128];
  status_code last; /* the last answer that was not OK */
} probe;

/* How long until fn answers OK, tried every 100 ms (at most 60 s). */
typedef status_code (*probe_fn)(probe *p);

static int64_t until_ok(probe_fn fn, probe *p, int64_t since) {
  status_code c;
  bool ok;
  WAIT_FOR(ok, (c = fn(p)) == STATUS_OK || (p->last = c, false), since + 60000 - wait_now_ms());
  (void)ok; /* the caller asserts on the time it took */
  return wait_now_ms() - since;
}

static status_code probe_create(probe *p) {
  req_order m;
  req_order_init(&m, "tok_visa");
  req_order_line(&m, p->l->prod[0], 1);
  rpc_call_opts o = {
      .token = p->l->th[0].token, .idempotency_key = p->key, .timeout_ms = 2000, .no_retry = true};
  rpc_status st;
  ProtobufCMessage *out = NULL;
  status_code c = rpc_client_call_sync(stack_client(p->l->url), OCMD_SVC, "CreateOrder",
                                       &m.req.base, &out, &o, &st);
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
  return c;
}

static const char *refusal(status_code c) { return c == STATUS_OK ? "none" : status_name(c); }

/* A command while the database is down: UNAVAILABLE, not a hang or
 * INTERNAL. */
static void probe_down(void *arg) { cr_assert_eq(probe_create(arg), STATUS_UNAVAILABLE); }

static status_code probe_get_order(probe *p) {
  Shop__Order__V1__GetOrderRequest req = SHOP__ORDER__V1__GET_ORDER_REQUEST__INIT;
  req.order_id = p->l->th[0].first; /* placed before the outage */
  rpc_call_opts o = {.token = p->l->th[0].token, .timeout_ms = 2000, .no_retry = true};
  rpc_status st;
  ProtobufCMessage *out = NULL;
  status_code c = rpc_client_call_sync(stack_client(stack_url("order-query")), OQRY_SVC, "GetOrder",
                                       &req.base, &out, &o, &st);
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
  return c;
}

static status_code probe_get_product(probe *p) {
  Shop__Product__V1__GetProductRequest req = SHOP__PRODUCT__V1__GET_PRODUCT_REQUEST__INIT;
  req.product_id = p->l->prod[1];
  rpc_call_opts o = {.timeout_ms = 2000, .no_retry = true};
  rpc_status st;
  ProtobufCMessage *out = NULL;
  status_code c = rpc_client_call_sync(stack_client(stack_url("product-query")), PQRY_SVC,
                                       "GetProduct", &req.base, &out, &o, &st);
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
  return c;
}

Test(s2_mariadb, a_database_killed_under_load_answers_unavailable_loses_nothing_and_is_rejoined) {
  int per = full() ? 50 : 8, ms = full() ? 15000 : 3000;
  load l;
  load_init(&l, stack_url("order-command"), per, (ms + 2000) / per);
  stack_client(stack_url("order-query"));
  stack_client(stack_url("product-query"));
  probe p = {.l = &l};
  stack_unique(p.key, sizeof p.key, "probe");
  int64_t t0 = wait_now_ms();
  load_start(&l);
  outage o = outage_under_load(&l, THREADS * per / 4, "mariadb", ms, probe_down, &p);
  int64_t back = o.back;
  cr_assert_neq(l.th[0].first[0], '\0');
  int64_t t_cmd = until_ok(probe_create, &p, back);
  status_code c_cmd = p.last;
  p.last = STATUS_OK;
  int64_t t_qry = until_ok(probe_get_order, &p, back);
  status_code c_qry = p.last;
  p.last = STATUS_OK;
  int64_t t_pq = until_ok(probe_get_product, &p, back);
  status_code c_pq = p.last;
  load_join(&l);
  books_figures f;
  load_books(&l, true, &f);
  int unavailable = atomic_load(&l.codes[STATUS_UNAVAILABLE]),
      deadline = atomic_load(&l.codes[STATUS_DEADLINE_EXCEEDED]);
  fprintf(stderr,
          "faults: mariadb: down %lld ms (restart took %lld ms); answers while down: %d "
          "UNAVAILABLE, %d DEADLINE_EXCEEDED; back in service after its return: order-command "
          "%lld ms (last refusal: %s), order-query %lld ms (%s), product-query %lld ms (%s); %zu "
          "orders "
          "(%zu confirmed, %zu cancelled), settled in %lld ms; test %lld ms\n",
          (long long)o.down_ms, (long long)o.restart_ms, unavailable, deadline, (long long)t_cmd,
          refusal(c_cmd), (long long)t_qry, refusal(c_qry), (long long)t_pq, refusal(c_pq),
          f.orders, f.confirmed, f.cancelled, (long long)f.settle_ms,
          (long long)(wait_now_ms() - t0));
  cr_assert_gt(unavailable, 0, "no command was refused UNAVAILABLE while the database was down");
  for (int c = 1; c < 17; c++)
    if (c != STATUS_UNAVAILABLE && c != STATUS_DEADLINE_EXCEEDED)
      cr_assert_eq(atomic_load(&l.codes[c]), 0, "%d answers %s", atomic_load(&l.codes[c]),
                   status_name((status_code)c));
  cr_assert_leq(t_cmd, RECONNECT_BOUND_MS, "order-command took %lld ms", (long long)t_cmd);
  cr_assert_leq(t_qry, RECONNECT_BOUND_MS, "order-query took %lld ms", (long long)t_qry);
  cr_assert_leq(t_pq, RECONNECT_BOUND_MS, "product-query took %lld ms", (long long)t_pq);
  /* The load's orders and the probe's one. */
  cr_assert_eq(f.orders, (size_t)(THREADS * per + 1));
}

/* ---- 3. Replay ------------------------------------------------------------------------------ */

/* The consumer groups of the stack, their program and database. The
 * audit account may not DELETE, so the audit-worker's inbox is kept: its
 * replay goes through the inbox and the log's unique event ids. */
static const struct {
  const char *program, *group, *db;
  bool clear_inbox;
} groups[] = {
    {"order-command", TOPOLOGY_GROUP_ORDER_SAGA, "shop_order", true},
    {"inventory-worker", TOPOLOGY_GROUP_INVENTORY_WORKER, "shop_inventory", true},
    {"payment-worker", TOPOLOGY_GROUP_PAYMENT_WORKER, "shop_payment", true},
    {"order-query", TOPOLOGY_GROUP_ORDER_QUERY, "shop_order_read", true},
    {"product-query", TOPOLOGY_GROUP_PRODUCT_QUERY, "shop_product_read", true},
    {"audit-worker", TOPOLOGY_GROUP_AUDIT_WORKER, "shop_audit", false},
};
#define N_GROUPS (sizeof groups / sizeof groups[0])

static const char *const checked_dbs[] = {"shop_order",   "shop_order_read", "shop_inventory",
                                          "shop_payment", "shop_product",    "shop_product_read",
                                          "shop_audit"};
#define N_DBS (sizeof checked_dbs / sizeof checked_dbs[0])

/* Every group caught up and no outbox row unsent; why says what is not. */
static bool quiet(char *why, size_t len) {
  static const char *const outboxes[] = {"shop_order", "shop_inventory", "shop_payment",
                                         "shop_product"};
  for (size_t i = 0; i < N_GROUPS; i++)
    if (!stack_quiet(&groups[i].group, 1, NULL, 0, why, len)) return false;
  return stack_quiet(NULL, 0, outboxes, sizeof outboxes / sizeof outboxes[0], why, len);
}

/* "db.table=checksum\n" for every table of the checked databases but
 * processed_events (the inboxes: the test empties them, and the replay
 * fills them again with new processed_at times). *n gets the number of
 * tables; *rows the rows of the domain tables, to show they are not
 * empty. The caller frees the text. */
static char *checksums(size_t *n) {
  size_t cap = 1 << 16, len = 0;
  char *out = malloc(cap);
  cr_assert_not_null(out);
  out[0] = '\0';
  *n = 0;
  for (size_t d = 0; d < N_DBS; d++) {
    db_conn *c = stack_db(checked_dbs[d]);
    char err[512] = "";
    db_rows *t = NULL;
    cr_assert_eq(db_query(c,
                          "SELECT table_name FROM information_schema.tables WHERE table_schema = "
                          "DATABASE() AND table_type = 'BASE TABLE' AND table_name <> "
                          "'processed_events' ORDER BY table_name",
                          NULL, 0, &t, err, sizeof err),
                 STATUS_OK, "%s", err);
    while (db_rows_next(t)) {
      char table[128], sql[200];
      snprintf(table, sizeof table, "%s", db_rows_str(t, 0, NULL));
      snprintf(sql, sizeof sql, "CHECKSUM TABLE `%s`", table);
      db_rows *r = NULL;
      cr_assert_eq(db_query(c, sql, NULL, 0, &r, err, sizeof err), STATUS_OK, "%s: %s", sql, err);
      cr_assert(db_rows_next(r));
      if (cap - len < 512) {
        cap *= 2;
        out = realloc(out, cap);
        cr_assert_not_null(out);
      }
      len += (size_t)snprintf(out + len, cap - len, "%s.%s=%s\n", checked_dbs[d], table,
                              db_rows_str(r, 1, NULL));
      db_rows_free(r);
      (*n)++;
    }
    db_rows_free(t);
    db_close(c);
  }
  return out;
}

/* Prints the lines of a that b does not have. */
static void diff(const char *a, const char *b) {
  const char *p = a;
  while (*p != '\0') {
    const char *e = strchr(p, '\n');
    size_t len = e != NULL ? (size_t)(e - p + 1) : strlen(p);
    char line[512];
    snprintf(line, sizeof line, "%.*s", (int)len, p);
    if (strstr(b, line) == NULL) fprintf(stderr, "faults: replay: before %s", line);
    p += len;
  }
}

/* The events the emptied inboxes hold again: how many were handled anew. */
static int64_t replayed_total(void) {
  int64_t n = 0;
  for (size_t i = 0; i < N_GROUPS; i++) {
    if (!groups[i].clear_inbox) continue;
    db_conn *c = stack_db(groups[i].db);
    int64_t k = 0;
    char err[256];
    db_value v[1] = {DB_STR(groups[i].group)};
    db_query_i64(c, "SELECT COUNT(*) FROM processed_events WHERE consumer_group = ?", v, 1, &k, err,
                 sizeof err);
    db_close(c);
    n += k;
  }
  return n;
}

/* stack_release lets the paused programs go on, even when the test fails. */
TestSuite(s3_replay, .init = stack_require, .fini = stack_release, .timeout = 900);

Test(s3_replay, every_group_reset_and_replayed_on_a_quiet_stack_leaves_every_table_as_it_was) {
  int64_t t0 = wait_now_ms();
  /* Some traffic of this test's own, in case it runs alone. */
  load l;
  load_init(&l, stack_url("order-command"), 3, 0);
  load_start(&l);
  load_join(&l);
  books_figures f;
  load_books(&l, true, &f);
  char why[200] = "";
  WAIT_UNTIL(quiet(why, sizeof why), 120000, "a quiet stack (%s)", why);
  size_t n_before = 0, n_after = 0;
  char *before = checksums(&n_before);

  /* Pause the programs (the runner owns them) until the broker drops them
   * from their groups, empty their inboxes, reset the groups to each
   * partition's earliest offset (the long variant: everything the topics
   * hold) or to where this run began (the short one: what the scenarios
   * before this one produced, so that the time does not grow with the
   * suites that ran before), and let them go on. */
  for (size_t i = 0; i < N_GROUPS; i++)
    cr_assert_eq(kill(stack_pid(groups[i].program), SIGSTOP), 0);
  for (size_t i = 0; i < N_GROUPS; i++)
    stack_group_reset(groups[i].group, groups[i].clear_inbox ? groups[i].db : NULL, full());
  int64_t t_replay = wait_now_ms();
  for (size_t i = 0; i < N_GROUPS; i++) kill(stack_pid(groups[i].program), SIGCONT);
  WAIT_UNTIL(quiet(why, sizeof why), 600000, "the replay finished (%s)", why);
  int64_t replay_ms = wait_now_ms() - t_replay;
  int64_t replayed = replayed_total();
  char *after = checksums(&n_after);
  fprintf(stderr,
          "faults: replay from %s: %zu tables checksummed in %zu databases; %lld events handled "
          "again in %lld ms; test %lld ms\n",
          full() ? "the earliest offsets" : "the run's start", n_before, N_DBS, (long long)replayed,
          (long long)replay_ms, (long long)(wait_now_ms() - t0));
  if (strcmp(before, after) != 0) diff(before, after);
  cr_assert_str_eq(before, after, "a table changed in the replay");
  cr_assert_gt(replayed, 0, "nothing was replayed");
  free(before);
  free(after);
}

/* ---- 4. Scale-out --------------------------------------------------------------------------- */

static long log_size(const char *program) {
  char path[1024];
  const char *dir = getenv("SHOP_LOG_DIR");
  snprintf(path, sizeof path, "%s/e2e-%s.log", dir != NULL ? dir : "/tmp", program);
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : 0;
}

/* The "consumer <group>: assigned N partition(s)" lines that program's
 * log (every instance appends to it) got past offset: how many, and
 * whether one assigned all of the group's partitions / fewer. */
typedef struct assigned {
  int lines, whole, part;
} assigned;

static assigned assigned_since(const char *program, const char *group, long offset) {
  assigned a = {0};
  char path[1024], needle[160], line[8192];
  const char *dir = getenv("SHOP_LOG_DIR");
  snprintf(path, sizeof path, "%s/e2e-%s.log", dir != NULL ? dir : "/tmp", program);
  snprintf(needle, sizeof needle, "consumer %s: assigned ", group);
  const char *topics[16];
  int total = (int)stack_group_topics(group, topics, 16) * TOPOLOGY_DOMAIN_PARTITIONS;
  FILE *f = fopen(path, "r");
  if (f == NULL) return a;
  fseek(f, offset, SEEK_SET);
  while (fgets(line, sizeof line, f) != NULL) {
    const char *at = strstr(line, needle);
    if (at == NULL) continue;
    int k = atoi(at + strlen(needle));
    a.lines++;
    a.whole += k == total;
    a.part += k > 0 && k < total;
  }
  fclose(f);
  return a;
}

static const char *const workers[] = {"inventory-worker", "payment-worker", "audit-worker"};
static const char *const worker_groups[] = {
    TOPOLOGY_GROUP_INVENTORY_WORKER, TOPOLOGY_GROUP_PAYMENT_WORKER, TOPOLOGY_GROUP_AUDIT_WORKER};
#define N_WORKERS 3

static bool all_split(const long *offsets) {
  for (int i = 0; i < N_WORKERS; i++)
    if (assigned_since(workers[i], worker_groups[i], offsets[i]).part < 2) return false;
  return true;
}

static bool all_taken_over(const long *offsets) {
  for (int i = 0; i < N_WORKERS; i++)
    if (assigned_since(workers[i], worker_groups[i], offsets[i]).whole < 1) return false;
  return true;
}

static void tcp_url(char *out, size_t len) {
  snprintf(out, len, "tcp://127.0.0.1:%d", proc_free_tcp_port());
}

TestSuite(s4_scale, .init = stack_require, .fini = stack_release, .timeout = 900);

Test(s4_scale, two_of_each_under_load_one_killed_midway_the_survivors_take_over_without_loss) {
  int per = full() ? 75 : 10;
  int64_t t0 = wait_now_ms();
  char pq_url[64], oc_url[64], au_url[64], list[200], env_pq[240];
  tcp_url(pq_url, sizeof pq_url);
  tcp_url(oc_url, sizeof oc_url);
  tcp_url(au_url, sizeof au_url);
  snprintf(list, sizeof list, "%s,%s", stack_url("product-query"), pq_url);
  snprintf(env_pq, sizeof env_pq, "SHOP_ENDPOINTS__PRODUCT_QUERY=%s", list);
  long split_from[N_WORKERS];
  for (int i = 0; i < N_WORKERS; i++) split_from[i] = log_size(workers[i]);

  /* A second product-query, and a second order-command (the load's entry)
   * whose one REQ socket dials both product-query instances. */
  proc *pq = stack_start("product-query", pq_url, NULL);
  const char *oc_env[] = {env_pq, NULL};
  proc *oc = stack_start("order-command", oc_url, oc_env);
  proc *extra[N_WORKERS];
  extra[0] = stack_start("inventory-worker", NULL, NULL);
  extra[1] = stack_start("payment-worker", NULL, NULL);
  extra[2] = stack_start("audit-worker", au_url, NULL);
  WAIT_UNTIL(all_split(split_from), 60000, "each worker group split between two instances");

  /* The endpoint list dials every instance. */
  rpc_client_opts co;
  rpc_client_opts_from_cfg(&co, stack_cfg(), list, "e2e-faults");
  rpc_client *both = NULL;
  char err[512] = "";
  cr_assert_eq(rpc_client_create(&both, &co, err, sizeof err), STATUS_OK, "%s", err);
  WAIT_UNTIL(rpc_client_pipes(both) == 2, 10000, "a client of \"%s\" with 2 connections (%d)", list,
             rpc_client_pipes(both));
  rpc_client_destroy(both);

  load l;
  load_init(&l, oc_url, per, full() ? 100 : 150);
  load_start(&l);
  load_wait(&l, THREADS * per * 2 / 5);
  long take_from[N_WORKERS];
  for (int i = 0; i < N_WORKERS; i++) take_from[i] = log_size(workers[i]);
  for (int i = 0; i < N_WORKERS; i++) cr_assert_eq(kill(proc_pid(extra[i]), SIGKILL), 0);
  cr_assert_eq(kill(proc_pid(pq), SIGKILL), 0);
  int64_t killed = wait_now_ms();
  WAIT_UNTIL(all_taken_over(take_from), 60000, "the survivors holding every partition");
  int64_t takeover = wait_now_ms() - killed;
  load_join(&l);
  books_figures f;
  load_books(&l, true, &f);
  fprintf(stderr,
          "faults: scale: 2 x inventory-worker, payment-worker, audit-worker, product-query, "
          "order-command; one of each of the first four SIGKILLed after %d of %d orders; the "
          "survivors held every partition %lld ms later; %zu orders (%zu confirmed, %zu "
          "cancelled), settled in %lld ms; test %lld ms\n",
          THREADS * per * 2 / 5, THREADS * per, (long long)takeover, f.orders, f.confirmed,
          f.cancelled, (long long)f.settle_ms, (long long)(wait_now_ms() - t0));
  cr_assert_eq(f.orders, (size_t)(THREADS * per));
  for (int i = 0; i < N_WORKERS; i++) stack_stop(extra[i]);
  stack_stop(pq);
  cr_assert_eq(stack_stop(oc), 0);
}
