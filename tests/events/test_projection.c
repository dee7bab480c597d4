/* Projections fed through the whole path (outbox, relay, Kafka, consumer)
 * with a shuffled and duplicated stream end like the ordered one. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "events/projection.h"
#include "evtest.h"
#include "shop/product/v1/events.pb-c.h"
#include "testenv.h"

static char err[1024];
static db_conn *db;

static void setup(void) { db = evtest_suite_init(); }
static void teardown(void) { evtest_suite_fini(db); }

TestSuite(projection, .init = setup, .fini = teardown, .timeout = 180);

#define PRODUCTS 4
#define VERSIONS 20

typedef enum { KIND_STATE, KIND_DELTA } kind;

typedef struct proj_ctx {
  char table[64];
  char name[48];   /* projection name prefix */
  int outcomes[4]; /* by projection_outcome, counted on the consumer thread */
} proj_ctx;

/* Read-model changes, called by the projection helpers. */
static status_code set_price_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                                char *errbuf, size_t errlen) {
  proj_ctx *pc = arg;
  Shop__Product__V1__PriceChanged *m =
      shop__product__v1__price_changed__unpack(NULL, ev->data.len, ev->data.data);
  if (m == NULL || m->price == NULL) {
    snprintf(errbuf, errlen, "not a PriceChanged");
    return STATUS_INVALID_ARGUMENT;
  }
  char sql[256];
  snprintf(sql, sizeof sql,
           "INSERT INTO %s (stream, product_id, price, stock) VALUES (?, ?, ?, 0)"
           " ON DUPLICATE KEY UPDATE price = VALUES(price)",
           pc->table);
  char stream[2] = {ev->key[0], '\0'};
  db_value p[3] = {DB_STR(stream), DB_STR(m->product_id), DB_I64(m->price->units)};
  status_code st = db_exec(tx, sql, p, 3, NULL, NULL, errbuf, errlen);
  shop__product__v1__price_changed__free_unpacked(m, NULL);
  (void)version;
  return st;
}

static status_code add_stock_cb(db_conn *tx, const events_envelope *ev, int64_t version, void *arg,
                                char *errbuf, size_t errlen) {
  proj_ctx *pc = arg;
  Shop__Product__V1__StockAdjusted *m =
      shop__product__v1__stock_adjusted__unpack(NULL, ev->data.len, ev->data.data);
  if (m == NULL) {
    snprintf(errbuf, errlen, "not a StockAdjusted");
    return STATUS_INVALID_ARGUMENT;
  }
  char sql[256];
  snprintf(sql, sizeof sql,
           "INSERT INTO %s (stream, product_id, price, stock) VALUES (?, ?, 0, ?)"
           " ON DUPLICATE KEY UPDATE stock = stock + VALUES(stock)",
           pc->table);
  char stream[2] = {ev->key[0], '\0'};
  db_value p[3] = {DB_STR(stream), DB_STR(m->product_id), DB_I64(m->quantity)};
  status_code st = db_exec(tx, sql, p, 3, NULL, NULL, errbuf, errlen);
  (void)version;
  shop__product__v1__stock_adjusted__free_unpacked(m, NULL);
  return st;
}

/* The consumer's handler: one projection per stream ("o" ordered, "s"
 * shuffled), keyed by product. */
static status_code proj_handler(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                                char *errbuf, size_t errlen) {
  proj_ctx *pc = arg;
  for (size_t i = 0; i < n; i++) {
    const events_envelope *ev = msgs[i].env;
    char proj[64];
    snprintf(proj, sizeof proj, "%s.%c", pc->name, ev->key[0]);
    const char *product = ev->key + 2;
    status_code st;
    projection_outcome out = 0;
    if (strcmp(ev->type, "shop.product.v1.PriceChanged") == 0) {
      st = projection_apply_state(tx, proj, product, ev->sequence, ev, set_price_cb, pc, &out,
                                  errbuf, errlen);
    } else {
      Shop__Product__V1__StockAdjusted *m =
          shop__product__v1__stock_adjusted__unpack(NULL, ev->data.len, ev->data.data);
      if (m == NULL) return STATUS_INVALID_ARGUMENT;
      int64_t seq = m->restock_sequence;
      shop__product__v1__stock_adjusted__free_unpacked(m, NULL);
      st = projection_apply_delta(tx, proj, product, seq, ev, add_stock_cb, pc, &out, errbuf,
                                  errlen);
    }
    if (st != STATUS_OK) return st;
    pc->outcomes[out]++;
  }
  return STATUS_OK;
}

/* One event of the stream. */
typedef struct gen_event {
  events_envelope env;
  events_timestamp ts;
  char id[EVENTS_ID_SIZE];
  char key[32];
  uint8_t data[128];
} gen_event;

static void make_event(gen_event *g, kind k, const char *topic, char stream, int p, int v,
                       int64_t *total) {
  char product[16];
  snprintf(product, sizeof product, "p%d", p);
  snprintf(g->key, sizeof g->key, "%c-%s", stream, product);
  size_t len;
  const char *type;
  if (k == KIND_STATE) {
    Shop__Common__V1__Money price = SHOP__COMMON__V1__MONEY__INIT;
    price.units = 1000 + v * 10 + p;
    price.currency = "EUR";
    Shop__Product__V1__PriceChanged m = SHOP__PRODUCT__V1__PRICE_CHANGED__INIT;
    m.product_id = product;
    m.price = &price;
    len = shop__product__v1__price_changed__pack(&m, g->data);
    type = "shop.product.v1.PriceChanged";
  } else {
    Shop__Product__V1__StockAdjusted m = SHOP__PRODUCT__V1__STOCK_ADJUSTED__INIT;
    m.product_id = product;
    m.quantity = v * 3 + p + 1;
    m.restock_sequence = v;
    *total += m.quantity;
    m.total_restocked = *total;
    len = shop__product__v1__stock_adjusted__pack(&m, g->data);
    type = "shop.product.v1.StockAdjusted";
  }
  evtest_envelope(&g->env, &g->ts, g->id, topic, g->key, type, v, g->data, len);
  g->env.key = g->key;
  g->env.subject = g->key;
  g->env.correlation_id = g->key;
}

/* After building, the envelope's borrowed pointers must point into the
 * copy, not into the original. */
static void fix_pointers(gen_event *g) {
  g->env.id = g->id;
  g->env.time = &g->ts;
  g->env.key = g->env.subject = g->env.correlation_id = g->key;
  g->env.data.data = g->data;
}

static bool read_model_matches(const char *table, const int64_t *want, kind k, bool *pending_zero,
                               const char *name) {
  for (int s = 0; s < 2; s++) {
    for (int p = 0; p < PRODUCTS; p++) {
      char sql[256], product[16];
      snprintf(product, sizeof product, "p%d", p);
      snprintf(sql, sizeof sql, "SELECT %s FROM %s WHERE stream = ? AND product_id = ?",
               k == KIND_STATE ? "price" : "stock", table);
      db_value v[2] = {DB_STR(s == 0 ? "o" : "s"), DB_STR(product)};
      int64_t got = -1;
      if (db_query_i64(db, sql, v, 2, &got, err, sizeof err) != STATUS_OK || got != want[p]) {
        return false;
      }
    }
  }
  char proj[64];
  snprintf(proj, sizeof proj, "%s.s", name);
  int64_t held = -1;
  projection_pending_count(db, proj, &held, err, sizeof err);
  *pending_zero = held == 0;
  return *pending_zero;
}

static void run(kind k) {
  char topic[200], group[96];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, k == KIND_STATE ? "pstate" : "pdelta", 4, group);
  proj_ctx pc = {0};
  testenv_unique(pc.name, sizeof pc.name, "t");
  snprintf(pc.table, sizeof pc.table, "rm_%s", pc.name);
  char sql[256];
  snprintf(sql, sizeof sql,
           "CREATE TABLE %s (stream CHAR(1) NOT NULL, product_id VARCHAR(64) NOT NULL,"
           " price BIGINT NOT NULL, stock BIGINT NOT NULL, PRIMARY KEY (stream, product_id))",
           pc.table);
  cr_assert_eq(db_exec(db, sql, NULL, 0, NULL, NULL, err, sizeof err), STATUS_OK, "%s", err);

  /* The ordered stream and what it leaves behind. */
  enum { ORDERED = PRODUCTS * VERSIONS, MAX = ORDERED * 3 };
  gen_event *o = calloc(ORDERED, sizeof *o);
  gen_event *s = calloc(MAX, sizeof *s);
  int64_t want[PRODUCTS], total_o[PRODUCTS] = {0}, total_s[PRODUCTS] = {0};
  for (int v = 1; v <= VERSIONS; v++) {
    for (int p = 0; p < PRODUCTS; p++) {
      make_event(&o[(v - 1) * PRODUCTS + p], k, topic, 'o', p, v, &total_o[p]);
    }
  }
  for (int p = 0; p < PRODUCTS; p++) {
    want[p] = k == KIND_STATE ? 1000 + VERSIONS * 10 + p : total_o[p];
  }
  /* The same events for stream "s", with duplicates: a third repeated with
   * the same event id (a redelivery: the inbox drops it), a fifth repeated
   * with a new id (a re-publication: the version check drops it); then
   * shuffled. */
  unsigned seed = 20261125;
  size_t ns = 0, same_id = 0;
  for (int v = 1; v <= VERSIONS; v++) {
    for (int p = 0; p < PRODUCTS; p++) {
      gen_event *g = &s[ns++];
      make_event(g, k, topic, 's', p, v, &total_s[p]);
      if (rand_r(&seed) % 3 == 0) {
        s[ns] = *g;
        fix_pointers(&s[ns++]);
        same_id++;
      }
      if (rand_r(&seed) % 5 == 0) {
        s[ns] = *g;
        fix_pointers(&s[ns]);
        events_uuid_v7(s[ns].id);
        ns++;
      }
    }
  }
  for (size_t i = ns - 1; i > 0; i--) {
    size_t j = (size_t)rand_r(&seed) % (i + 1);
    gen_event t = s[i];
    s[i] = s[j];
    s[j] = t;
  }
  for (size_t i = 0; i < ns; i++) fix_pointers(&s[i]);

  events_envelope *envs = calloc(ORDERED + ns, sizeof *envs);
  for (size_t i = 0; i < ORDERED; i++) envs[i] = o[i].env;
  for (size_t i = 0; i < ns; i++) envs[ORDERED + i] = s[i].env;
  evtest_append(db, envs, ORDERED + ns);

  outbox_relay_opts ro;
  evtest_relay_opts(&ro);
  outbox_relay *r = NULL;
  cr_assert_eq(outbox_relay_create(&r, &ro, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(outbox_relay_start(r, err, sizeof err), STATUS_OK, "%s", err);
  const char *topics[] = {topic};
  consumer_opts co;
  evtest_consumer_opts(&co, group, topics, 1);
  co.handler = proj_handler;
  co.handler_arg = &pc;
  consumer *c = NULL;
  cr_assert_eq(consumer_create(&c, &co, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(consumer_start(c, err, sizeof err), STATUS_OK, "%s", err);

  bool ok, pending_zero = false;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied + cs.duplicates >= ORDERED + (int64_t)ns),
           60000);
  cr_assert(ok, "the consumer saw %lld of %zu records", (long long)(cs.applied + cs.duplicates),
            ORDERED + ns);
  WAIT_FOR(ok, read_model_matches(pc.table, want, k, &pending_zero, pc.name), 10000);
  consumer_destroy(c);
  outbox_relay_destroy(r);
  cr_assert(pending_zero, "no delta is left waiting behind a gap");
  cr_assert(ok, "both streams end in the ordered result");
  cr_assert_geq(cs.duplicates, (int64_t)same_id, "same-id repeats were skipped by the inbox");
  cr_log_info(
      "%s: %d ordered + %zu shuffled records (%zu same-id, %zu new-id repeats);"
      " applied %d, ignored %d, held %d",
      k == KIND_STATE ? "state" : "delta", ORDERED, ns, same_id, ns - ORDERED - same_id,
      pc.outcomes[PROJECTION_APPLIED], pc.outcomes[PROJECTION_IGNORED],
      pc.outcomes[PROJECTION_HELD]);
  /* The shuffle really did bring versions out of order. */
  if (k == KIND_STATE) {
    cr_assert_gt(pc.outcomes[PROJECTION_IGNORED], 0, "older versions were ignored");
  } else {
    cr_assert_gt(pc.outcomes[PROJECTION_HELD], 0, "deltas ahead of a gap were held");
  }

  snprintf(sql, sizeof sql, "DROP TABLE %s", pc.table);
  db_exec(db, sql, NULL, 0, NULL, NULL, NULL, 0);
  char like[64];
  snprintf(like, sizeof like, "%s.%%", pc.name);
  db_value p[1] = {DB_STR(like)};
  db_exec(db, "DELETE FROM projection_versions WHERE projection LIKE ?", p, 1, NULL, NULL, NULL, 0);
  db_value g[1] = {DB_STR(group)};
  db_exec(db, "DELETE FROM processed_events WHERE consumer_group = ?", g, 1, NULL, NULL, NULL, 0);
  free(envs);
  free(o);
  free(s);
  evtest_topic_drop(topic, group);
}

Test(projection, a_shuffled_and_duplicated_stream_of_state_events_ends_like_the_ordered_one) {
  run(KIND_STATE);
}

Test(projection, a_shuffled_and_duplicated_stream_of_delta_events_ends_like_the_ordered_one) {
  run(KIND_DELTA);
}
