/* The consumer's table: the one dispatch of a consumer (events/consumer.h).
 * Types it does not take cost no transaction, a taken type that does not
 * decode or pass its check is dead-lettered at once, passes order a batch,
 * topics follow from the types, and a consumer makes its dead-letter
 * topics; against the real broker and MariaDB. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "evtest.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "testenv.h"
#include "topology/topology.h"

static char err[1024];
static db_conn *db;

static void setup(void) {
  db = evtest_db();
  evtest_outbox_clean(db);
}

static void teardown(void) {
  evtest_outbox_clean(db);
  db_close(db);
  cr_assert(events_shutdown_wait(10000), "librdkafka handles left behind");
}

TestSuite(consumer_table, .init = setup, .fini = teardown, .timeout = 120);

#define T_CREATED "shop.order.v1.OrderCreated"
#define T_CANCELLED "shop.order.v1.OrderCancelled"

/* What the apply functions saw, in the order they saw it. */
typedef struct seen {
  pthread_mutex_t mu;
  const char *table;
  char types[64][64];
  size_t n;
} seen;

static status_code record(db_conn *tx, const consumer_msg *m, seen *s, char *errbuf,
                          size_t errlen) {
  pthread_mutex_lock(&s->mu);
  if (s->n < 64) snprintf(s->types[s->n++], sizeof s->types[0], "%s", m->msg->descriptor->name);
  pthread_mutex_unlock(&s->mu);
  return evtest_count_cb(tx, m, 1, (void *)s->table, errbuf, errlen);
}

static status_code created_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  cr_assert_eq(m->msg->descriptor, &shop__order__v1__order_created__descriptor);
  return record(tx, m, arg, errbuf, errlen);
}

static status_code cancelled_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                   size_t errlen) {
  cr_assert_eq(m->msg->descriptor, &shop__order__v1__order_cancelled__descriptor);
  return record(tx, m, arg, errbuf, errlen);
}

/* A created order needs a customer. */
static const char *created_check(const ProtobufCMessage *m, const events_envelope *ev) {
  const Shop__Order__V1__OrderCreated *e = (const void *)m;
  return e->customer_id[0] == '\0' ? "no customer" : NULL;
}

/* Cancellations first in every batch (pass 0), creations after (pass 1). */
static const consumer_event_type types[] = {
    {&shop__order__v1__order_created__descriptor, created_check, created_apply, 1},
    {&shop__order__v1__order_cancelled__descriptor, NULL, cancelled_apply, 0},
};

/* A packed OrderCreated (customer may be ""), or OrderCancelled. */
static size_t pack_created(uint8_t *buf, size_t cap, const char *customer) {
  Shop__Order__V1__OrderCreated e = SHOP__ORDER__V1__ORDER_CREATED__INIT;
  e.order_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  e.customer_id = (char *)customer;
  size_t n = shop__order__v1__order_created__get_packed_size(&e);
  cr_assert_leq(n, cap);
  return shop__order__v1__order_created__pack(&e, buf);
}

static size_t pack_cancelled(uint8_t *buf, size_t cap) {
  Shop__Order__V1__OrderCancelled e = SHOP__ORDER__V1__ORDER_CANCELLED__INIT;
  e.order_id = "0190c3c2-7e4a-7b3c-8f00-1234567890ab";
  size_t n = shop__order__v1__order_cancelled__get_packed_size(&e);
  cr_assert_leq(n, cap);
  return shop__order__v1__order_cancelled__pack(&e, buf);
}

static void publish(const events_envelope *envs, size_t n, const char *topic) {
  evtest_publish(db, envs, n, topic);
}

/* linger_ms: the consumer's batch_linger_ms. */
static consumer *start_table_lingering(const char *group, const char *topic, seen *s,
                                       int linger_ms) {
  static const char *topics[1];
  topics[0] = topic;
  consumer_opts o;
  evtest_consumer_opts(&o, group, topics, 1);
  o.batch_linger_ms = linger_ms;
  o.types = types;
  o.n_types = sizeof types / sizeof types[0];
  o.handler_arg = s;
  consumer *c = NULL;
  cr_assert_eq(consumer_create(&c, &o, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(consumer_start(c, err, sizeof err), STATUS_OK, "%s", err);
  return c;
}

static consumer *start_table(const char *group, const char *topic, seen *s) {
  return start_table_lingering(group, topic, s, 0);
}

Test(consumer_table, types_the_table_does_not_take_are_skipped_without_a_transaction) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "skip", 2, NULL);
  evtest_count_table(db, table);
  enum { N = 12 };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE];
  for (int i = 0; i < N; i++)
    evtest_envelope(&envs[i], &ts[i], ids[i], topic, "k", "shop.test.v1.Thing", i + 1, "x", 1);
  publish(envs, N, topic);

  seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .table = table};
  consumer *c = start_table(group, topic, &s);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.skipped >= N), 60000);
  consumer_destroy(c);
  cr_assert(ok, "skipped %lld of %d", (long long)cs.skipped, N);
  cr_assert_eq(cs.skipped, N);
  cr_assert_eq(cs.applied, 0);
  cr_assert_eq(cs.batches, 0, "no transaction for events nobody takes");
  cr_assert_eq(s.n, 0);
  int64_t inbox = -1;
  db_value p[1] = {DB_STR(group)};
  cr_assert_eq(db_query_i64(db, "SELECT COUNT(*) FROM processed_events WHERE consumer_group = ?", p,
                            1, &inbox, err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(inbox, 0, "no inbox rows for skipped events");
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

Test(consumer_table,
     a_taken_type_that_does_not_decode_or_fails_its_check_is_dead_lettered_at_once) {
  char topic[200], group[96], table[64], dlt[256];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "refuse", 1, NULL);
  topology_dlt_name(dlt, sizeof dlt, topic, group);
  evtest_count_table(db, table);
  uint8_t good[256], bad_check[256];
  size_t ngood = pack_created(good, sizeof good, "ada");
  size_t nbad = pack_created(bad_check, sizeof bad_check, "");
  static const uint8_t garbage[] = {0xff, 0xff, 0xff, 0x07};
  enum { N = 4 };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE];
  evtest_envelope(&envs[0], &ts[0], ids[0], topic, "k", T_CREATED, 1, good, ngood);
  evtest_envelope(&envs[1], &ts[1], ids[1], topic, "k", T_CREATED, 2, garbage, sizeof garbage);
  evtest_envelope(&envs[2], &ts[2], ids[2], topic, "k", T_CREATED, 3, bad_check, nbad);
  evtest_envelope(&envs[3], &ts[3], ids[3], topic, "k", T_CREATED, 4, good, ngood);
  publish(envs, N, topic);

  seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .table = table};
  consumer *c = start_table(group, topic, &s);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= 2 && cs.dead_lettered >= 2), 60000);
  consumer_destroy(c);
  cr_assert(ok, "applied %lld, dead-lettered %lld", (long long)cs.applied,
            (long long)cs.dead_lettered);
  cr_assert_eq(cs.rejects, 0, "a pure check is not retried");
  cr_assert_eq(evtest_count_of(db, table, ids[0]), 1);
  cr_assert_eq(evtest_count_of(db, table, ids[1]), 0);
  cr_assert_eq(evtest_count_of(db, table, ids[2]), 0);
  cr_assert_eq(evtest_count_of(db, table, ids[3]), 1);
  evtest_rec *dead;
  size_t ndead = evtest_read_topic(dlt, &dead);
  cr_assert_eq(ndead, 2, "the consumer made its dead-letter topic and wrote both");
  cr_assert_str_eq(evtest_header(&dead[0], "ce_id"), ids[1]);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_attempts"), "0");
  cr_assert(strstr(evtest_header(&dead[0], "dlt_error"), "undecodable") != NULL, "%s",
            evtest_header(&dead[0], "dlt_error"));
  cr_assert_str_eq(evtest_header(&dead[1], "ce_id"), ids[2]);
  cr_assert_str_eq(evtest_header(&dead[1], "dlt_attempts"), "0");
  cr_assert(strstr(evtest_header(&dead[1], "dlt_error"), "no customer") != NULL, "%s",
            evtest_header(&dead[1], "dlt_error"));
  evtest_recs_free(dead, ndead);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

Test(consumer_table, a_lower_pass_is_applied_first_within_a_batch) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "pass", 1, NULL);
  evtest_count_table(db, table);
  uint8_t created[256], cancelled[256];
  size_t nc = pack_created(created, sizeof created, "ada");
  size_t nx = pack_cancelled(cancelled, sizeof cancelled);
  enum { N = 6 };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE];
  for (int i = 0; i < N; i++) {
    bool cancel = i % 2 == 1;
    evtest_envelope(&envs[i], &ts[i], ids[i], topic, "k", cancel ? T_CANCELLED : T_CREATED, i + 1,
                    cancel ? cancelled : created, cancel ? nx : nc);
  }
  publish(envs, N, topic);

  seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .table = table};
  consumer *c = start_table(group, topic, &s);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= N), 60000);
  consumer_destroy(c);
  cr_assert(ok, "applied %lld of %d", (long long)cs.applied, N);
  cr_assert_eq(s.n, N);
  /* One batch (all six were there before the consumer started): every
   * cancellation before every creation, each kind in record order. */
  cr_assert_eq(cs.batches, 1, "the six records were one batch");
  for (int i = 0; i < N; i++)
    cr_assert_str_eq(s.types[i], i < N / 2 ? T_CANCELLED : T_CREATED, "apply %d", i);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

Test(consumer_table, a_lingering_batch_takes_what_arrives_within_its_linger) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "linger", 1, NULL);
  evtest_count_table(db, table);
  uint8_t created[256];
  size_t nc = pack_created(created, sizeof created, "ada");
  enum { N = 3 };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE];
  for (int i = 0; i < N; i++)
    evtest_envelope(&envs[i], &ts[i], ids[i], topic, "k", T_CREATED, i + 1, created, nc);
  seen s = {.mu = PTHREAD_MUTEX_INITIALIZER, .table = table};
  consumer *c = start_table_lingering(group, topic, &s, 2000);
  /* The first record: its batch waits out the linger alone. */
  publish(&envs[0], 1, topic);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= 1), 60000);
  cr_assert(ok, "the first record was not applied");
  cr_assert_eq(cs.batches, 1);
  /* Two records 300 ms apart: one batch (without a linger they are two:
   * the first batch would hold only what was there). */
  publish(&envs[1], 1, topic);
  usleep(300 * 1000);
  publish(&envs[2], 1, topic);
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= N), 60000);
  consumer_destroy(c);
  cr_assert(ok, "applied %lld of %d", (long long)cs.applied, N);
  cr_assert_eq(cs.batches, 2, "the second and third records were %lld batches",
               (long long)cs.batches - 1);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

Test(consumer_table, a_spec_subscribes_to_the_topics_of_its_types_once_each) {
  static const consumer_event_type mixed[] = {
      {&shop__order__v1__order_created__descriptor, NULL, created_apply, 0},
      {&shop__payment__v1__payment_authorized__descriptor, NULL, created_apply, 0},
      {&shop__order__v1__order_cancelled__descriptor, NULL, cancelled_apply, 0},
  };
  consumer_spec spec = {.group = "g", .types = mixed, .n_types = 3};
  const char *topics[8];
  cr_assert_eq(consumer_spec_topics(&spec, topics, 8), 2);
  cr_assert_str_eq(topics[0], TOPOLOGY_TOPIC_ORDER);
  cr_assert_str_eq(topics[1], TOPOLOGY_TOPIC_PAYMENT);
  consumer_spec all = {.group = "g", .handler = evtest_count_cb};
  cr_assert_eq(consumer_spec_topics(&all, topics, 8), topology_topic_count(),
               "a handler without topics reads every domain topic");
}

Test(consumer_table, an_event_type_names_its_domain_topic_by_its_package) {
  cr_assert_str_eq(topology_topic_of_type("shop.order.v1.OrderCreated"), TOPOLOGY_TOPIC_ORDER);
  cr_assert_str_eq(topology_topic_of_type("shop.inventory.v1.StockLevelChanged"),
                   TOPOLOGY_TOPIC_INVENTORY);
  cr_assert_str_eq(topology_topic_of_type("shop.notification.v1.NotificationSent"),
                   TOPOLOGY_TOPIC_NOTIFICATION);
  cr_assert_null(topology_topic_of_type("shop.order.v2.OrderCreated"), "no v2 topic");
  cr_assert_null(topology_topic_of_type("shop.test.v1.Thing"));
  cr_assert_null(topology_topic_of_type("shop.ord.v1.OrderCreated"));
  cr_assert_null(topology_topic_of_type("OrderCreated"));
  cr_assert_null(topology_topic_of_type("shop.order.OrderCreated"));
  cr_assert_null(topology_topic_of_type(NULL));
}
