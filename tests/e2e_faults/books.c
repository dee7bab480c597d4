/* The books of the fault scenarios. See books.h. */
#include "e2e_faults/books.h"

#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events/events.h"
#include "shop/order/v1/events.pb-c.h"
#include "support/stack.h"
#include "support/wait.h"
#include "topology/topology.h"

#define ST_CONFIRMED 2
#define ST_SHIPPED 3
#define ST_CANCELLED 4
#define PAY_FAILED 3
#define PAY_CAPTURED 4
#define PAY_VOIDED 6
#define PAY_REFUNDED 7
#define RES_RESERVED 2
#define RES_REJECTED 3
#define RES_RELEASED 4
#define RES_SHIPPED 5
#define SEEN_MAX 8
#define KAFKA_READ_MS 60000

typedef struct ord {
  books_id id;
  int status, pay, res;
  int created;      /* distinct OrderCreated ids */
  int64_t last_seq; /* ce_sequence of the last distinct event */
  bool out_of_order;
  char seen[SEEN_MAX][EVENTS_ID_SIZE];
  int n_seen;
} ord;

typedef struct book {
  ord *o;
  size_t n;
} book;

static int ord_cmp(const void *a, const void *b) { return strcmp(a, b); }

static ord *find(const book *b, const char *id, size_t len) {
  books_id key;
  if (len >= sizeof key) return NULL;
  memcpy(key, id, len);
  key[len] = '\0';
  return bsearch(key, b->o, b->n, sizeof *b->o, ord_cmp);
}

/* "?,?,...,?" for n placeholders (n >= 1); the caller frees it. */
static char *marks(size_t n) {
  char *s = malloc(2 * n);
  cr_assert_not_null(s);
  for (size_t i = 0; i < n; i++) {
    s[2 * i] = '?';
    s[2 * i + 1] = i + 1 < n ? ',' : '\0';
  }
  return s;
}

/* Runs "<head> (<marks>)<tail>" with the n strings as parameters, at
 * most IN_CHUNK at a time (a statement of the db layer takes at most 64
 * parameters), and hands each row to fn. */
#define IN_CHUNK 50
typedef void (*row_fn)(db_rows *r, void *arg);

static void each_in(db_conn *c, const char *head, const char *tail, const char *const *v, size_t n,
                    row_fn fn, void *arg) {
  for (size_t at = 0; at < n; at += IN_CHUNK) {
    size_t k = n - at < IN_CHUNK ? n - at : IN_CHUNK;
    char *m = marks(k);
    size_t len = strlen(head) + strlen(m) + strlen(tail) + 8;
    char *sql = malloc(len);
    db_value p[IN_CHUNK];
    cr_assert_not_null(sql);
    snprintf(sql, len, "%s (%s)%s", head, m, tail);
    for (size_t i = 0; i < k; i++) p[i] = DB_STR(v[at + i]);
    char err[512] = "";
    db_rows *r = NULL;
    cr_assert_eq(db_query(c, sql, p, k, &r, err, sizeof err), STATUS_OK, "%s: %s", head, err);
    free(m);
    free(sql);
    while (db_rows_next(r)) fn(r, arg);
    db_rows_free(r);
  }
}

/* Appends an order row (order_id, status). */
static void add_order_cb(db_rows *r, void *arg) {
  book *b = arg;
  ord *o = realloc(b->o, (b->n + 1) * sizeof *b->o);
  cr_assert_not_null(o);
  b->o = o;
  memset(&o[b->n], 0, sizeof *o);
  snprintf(o[b->n].id, sizeof o[b->n].id, "%s", db_rows_str(r, 0, NULL));
  o[b->n].status = (int)db_rows_i64(r, 1);
  b->n++;
}

static void pay_cb(db_rows *r, void *arg) {
  size_t len = 0;
  const char *id = db_rows_str(r, 0, &len);
  ord *o = find(arg, id, len);
  if (o != NULL) o->pay = (int)db_rows_i64(r, 1);
}

static void res_cb(db_rows *r, void *arg) {
  size_t len = 0;
  const char *id = db_rows_str(r, 0, &len);
  ord *o = find(arg, id, len);
  if (o != NULL) o->res = (int)db_rows_i64(r, 1);
}

/* The customers' orders, their payments and reservations, sorted by id. */
static void load(book *b, db_conn *ordc, db_conn *payc, db_conn *invc, const char *const *customers,
                 size_t nc) {
  free(b->o);
  b->o = NULL;
  b->n = 0;
  each_in(ordc, "SELECT order_id, status FROM orders WHERE customer_id IN", "", customers, nc,
          add_order_cb, b);
  if (b->n == 0) return;
  qsort(b->o, b->n, sizeof *b->o, ord_cmp);
  each_in(payc, "SELECT order_id, status FROM payments WHERE customer_id IN", "", customers, nc,
          pay_cb, b);
  const char **ids = malloc(b->n * sizeof *ids);
  cr_assert_not_null(ids);
  for (size_t i = 0; i < b->n; i++) ids[i] = b->o[i].id;
  each_in(invc, "SELECT order_id, status FROM reservations WHERE order_id IN", "", ids, b->n,
          res_cb, b);
  free(ids);
}

static bool settled(const ord *o) {
  switch (o->status) {
  case ST_CONFIRMED:
    return o->pay == PAY_CAPTURED && o->res == RES_RESERVED;
  case ST_SHIPPED:
    return o->pay == PAY_CAPTURED && o->res == RES_SHIPPED;
  case ST_CANCELLED:
    return (o->pay == PAY_FAILED || o->pay == PAY_VOIDED || o->pay == PAY_REFUNDED) &&
           (o->res == RES_REJECTED || o->res == RES_RELEASED);
  default:
    return false;
  }
}

static const ord *first_unsettled(const book *b) {
  for (size_t i = 0; i < b->n; i++)
    if (!settled(&b->o[i])) return &b->o[i];
  return NULL;
}

/* ---- The order topic ------------------------------------------------------------------------ */

static void record(book *b, const rd_kafka_message_t *m, size_t *redelivered) {
  ord *o = find(b, m->key, m->key_len);
  if (o == NULL) return;
  events_header h[16];
  events_record rec = {.topic = TOPOLOGY_TOPIC_ORDER,
                       .partition = m->partition,
                       .offset = m->offset,
                       .key = m->key,
                       .key_len = m->key_len,
                       .value = m->payload,
                       .value_len = m->len,
                       .headers = h};
  rd_kafka_headers_t *hs = NULL;
  if (rd_kafka_message_headers(m, &hs) == RD_KAFKA_RESP_ERR_NO_ERROR) {
    const char *name;
    const void *val;
    size_t len;
    for (size_t i = 0; rec.header_count < 16 && rd_kafka_header_get_all(hs, i, &name, &val, &len) ==
                                                    RD_KAFKA_RESP_ERR_NO_ERROR;
         i++)
      h[rec.header_count++] = (events_header){.name = name, .value = val, .len = len};
  }
  events_envelope *ev = NULL;
  char err[256] = "";
  cr_assert_eq(events_envelope_decode(&ev, &rec, err, sizeof err), STATUS_OK,
               "order topic %d/%lld: %s", (int)m->partition, (long long)m->offset, err);
  for (int i = 0; i < o->n_seen; i++) {
    if (strcmp(o->seen[i], ev->id) == 0) {
      (*redelivered)++;
      events_envelope_free(ev);
      return;
    }
  }
  cr_assert_lt(o->n_seen, SEEN_MAX, "order %s: too many events", o->id);
  snprintf(o->seen[o->n_seen++], EVENTS_ID_SIZE, "%s", ev->id);
  if (ev->sequence <= o->last_seq) o->out_of_order = true;
  o->last_seq = ev->sequence;
  if (strcmp(ev->type, shop__order__v1__order_created__descriptor.name) == 0) o->created++;
  events_envelope_free(ev);
}

typedef struct topic_read {
  book *b;
  size_t *redelivered;
} topic_read;

static void record_cb(const void *m, void *arg) {
  topic_read *t = arg;
  record(t->b, m, t->redelivered);
}

/* Reads shop.order.events.v1 from the run's start to its end now. */
static void read_order_topic(book *b, size_t *redelivered) {
  topic_read t = {b, redelivered};
  stack_topic_read(TOPOLOGY_TOPIC_ORDER, record_cb, &t, KAFKA_READ_MS);
}

/* ---- Audit ---------------------------------------------------------------------------------- */

/* The audit log has every event up to now: what reconcile reads. */
static void audit_caught_up(void) {
  WAIT_UNTIL(stack_group_quiet(TOPOLOGY_GROUP_AUDIT_WORKER), 120000,
             "the audit-worker's group caught up");
}

/* ---- The books ------------------------------------------------------------------------------ */

void books_check(const books_opts *opts, const char *const *customers, size_t n_customers,
                 const books_id *acked, size_t n_acked, int wait_ms, books_figures *out) {
  memset(out, 0, sizeof *out);
  db_conn *ordc = stack_db("shop_order"), *payc = stack_db("shop_payment"),
          *invc = stack_db("shop_inventory");
  book b = {0};
  int64_t t0 = wait_now_ms();
  const ord *stuck = NULL;
  WAIT_UNTIL(
      (load(&b, ordc, payc, invc, customers, n_customers), stuck = first_unsettled(&b)) == NULL,
      wait_ms, "every order settled (order %s: status %d payment %d stock %d)",
      stuck != NULL ? stuck->id : "", stuck != NULL ? stuck->status : 0,
      stuck != NULL ? stuck->pay : 0, stuck != NULL ? stuck->res : 0);
  out->settle_ms = wait_now_ms() - t0;
  for (size_t i = 0; i < n_acked; i++)
    cr_assert_not_null(find(&b, acked[i], strlen(acked[i])), "acknowledged order %s is missing",
                       acked[i]);
  for (size_t i = 0; i < b.n; i++) {
    out->confirmed += b.o[i].status == ST_CONFIRMED;
    out->cancelled += b.o[i].status == ST_CANCELLED;
    out->shipped += b.o[i].status == ST_SHIPPED;
  }
  out->orders = b.n;

  static const char *const outboxes[] = {"shop_order", "shop_inventory", "shop_payment",
                                         "shop_product"};
  for (size_t i = 0; i < sizeof outboxes / sizeof outboxes[0]; i++) {
    int64_t n = -1;
    WAIT_UNTIL((n = stack_unsent(outboxes[i])) == 0, 60000,
               "the outbox of %s drained (%lld unsent)", outboxes[i], (long long)n);
  }

  read_order_topic(&b, &out->redelivered);
  for (size_t i = 0; i < b.n; i++) {
    cr_assert_eq(b.o[i].created, 1, "order %s: %d distinct OrderCreated ids", b.o[i].id,
                 b.o[i].created);
    cr_assert(!b.o[i].out_of_order, "order %s: its events came out of order", b.o[i].id);
  }

  /* Money, stock, at most one authorization, capture, void and refund
   * per order, one OrderCreated per order in the audit log, the chain:
   * reconcile (internal/reconcile), on this run's orders and products. */
  if (opts->audit) audit_caught_up();
  cr_assert(stack_books_clean(!opts->audit, 60000),
            "reconcile: the books do not balance (the findings are on stderr)");
  free(b.o);
  db_close(ordc);
  db_close(payc);
  db_close(invc);
}
