/* The consumer framework: inbox, offsets after commit, dead letters and
 * replay, transient failures; against the real broker and MariaDB. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "evtest.h"
#include "testenv.h"
#include "topology/topology.h"

static char err[1024];
static db_conn *db;

static void setup(void) { db = evtest_suite_init(); }
static void teardown(void) { evtest_suite_fini(db); }

TestSuite(consumer, .init = setup, .fini = teardown, .timeout = 180);

/* Publishes envs through the outbox and a relay, and waits until sent. */
static void publish(const events_envelope *envs, size_t n, const char *topic) {
  evtest_publish(db, envs, n, topic);
}

static consumer *consumer_go(const char *group, const char *topic, consumer_handler_cb cb,
                             void *arg) {
  static const char *topics[1];
  topics[0] = topic;
  consumer_opts o;
  evtest_consumer_opts(&o, group, topics, 1);
  o.handler = cb;
  o.handler_arg = arg;
  consumer *c = NULL;
  cr_assert_eq(consumer_create(&c, &o, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(consumer_start(c, err, sizeof err), STATUS_OK, "%s", err);
  return c;
}

static void clean_group(const char *group) {
  db_value p[1] = {DB_STR(group)};
  db_exec(db, "DELETE FROM processed_events WHERE consumer_group = ?", p, 1, NULL, NULL, NULL, 0);
}

/* Kills a consumer process at crash_point, then lets another consumer of
 * the group finish: every event must end applied exactly once. Returns
 * how many were committed before the crash. */
static int kill_and_resume(const char *crash_at, bool committed_before) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "ckill", 2, NULL);
  evtest_count_table(db, table);
  enum { N = 10 };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE], keys[N][16];
  for (int i = 0; i < N; i++) {
    snprintf(keys[i], sizeof keys[i], "k%d", i % 5);
    evtest_envelope(&envs[i], &ts[i], ids[i], topic, keys[i], "shop.test.v1.Thing", i / 5 + 1, "x",
                    1);
  }
  publish(envs, N, topic);

  const char *args[] = {"consume", "--topic", topic, "--group",   group, "--table",
                        table,     "--batch", "10",  "--seconds", "60",  NULL};
  pid_t pid = evtest_spawn(crash_at, args);
  int status = evtest_wait_exit(pid, 60000);
  cr_assert(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
            "the consumer process should abort at %s (status %d)", crash_at, status);
  int first = 0;
  for (int i = 0; i < N; i++) {
    int n = evtest_count_of(db, table, ids[i]);
    cr_assert(n == 0 || n == 1);
    first += n;
  }
  if (committed_before) {
    cr_assert_geq(first, 1, "the first transaction committed before the crash");
  } else {
    cr_assert_eq(first, 0, "nothing committed before the crash");
  }

  consumer *c = consumer_go(group, topic, evtest_count_cb, table);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied + cs.duplicates >= N), 60000);
  consumer_destroy(c);
  cr_assert(ok, "saw %lld of %d records", (long long)(cs.applied + cs.duplicates), N);
  cr_assert_eq(cs.duplicates, first, "the committed ones came again and were skipped");
  cr_assert_eq(cs.applied, N - first);
  for (int i = 0; i < N; i++) cr_assert_eq(evtest_count_of(db, table, ids[i]), 1, "event %d", i);
  clean_group(group);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, NULL);
  return first;
}

Test(consumer,
     a_consumer_killed_after_its_commit_and_before_storing_the_offset_applies_the_redelivery_once) {
  kill_and_resume("consumer.after_commit:1", true);
}

Test(consumer, a_consumer_killed_in_the_middle_of_its_transaction_applies_the_redelivery_once) {
  kill_and_resume("consumer.mid_batch:1", false);
}

/* A handler that rejects events whose data is "poison" until healed. */
typedef struct poison_ctx {
  const char *table;
  atomic_bool healed;
  atomic_int poison_calls;
} poison_ctx;

static status_code poison_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                             char *errbuf, size_t errlen) {
  poison_ctx *pc = arg;
  for (size_t i = 0; i < n; i++) {
    const ProtobufCBinaryData *d = &msgs[i].env->data;
    if (d->len == 6 && memcmp(d->data, "poison", 6) == 0 && !atomic_load(&pc->healed)) {
      atomic_fetch_add(&pc->poison_calls, 1);
      snprintf(errbuf, errlen, "poison pill %s", msgs[i].env->id);
      return STATUS_INVALID_ARGUMENT;
    }
  }
  return evtest_count_cb(tx, msgs, n, (void *)pc->table, errbuf, errlen);
}

typedef struct dlt_seen {
  int count;
  events_dlt_entry first;
  char event_id[80], error[300], original_topic[200];
} dlt_seen;

static int dlt_collect(const events_dlt_entry *e, void *arg) {
  dlt_seen *s = arg;
  if (s->count++ == 0) {
    s->first = *e;
    snprintf(s->event_id, sizeof s->event_id, "%s", e->event_id);
    snprintf(s->error, sizeof s->error, "%s", e->error);
    snprintf(s->original_topic, sizeof s->original_topic, "%s", e->original_topic);
  }
  return 0;
}

Test(
    consumer,
    a_poison_event_is_dead_lettered_after_its_retries_while_the_rest_flows_and_replay_puts_it_back) {
  char topic[200], group[96], table[64], dlt[256];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "poison", 3, group);
  topology_dlt_name(dlt, sizeof dlt, topic, group);
  evtest_count_table(db, table);
  enum { KEYS = 3, PER = 10, N = KEYS * PER };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE];
  static const char *const keys[KEYS] = {"a", "b", "c"};
  int poison = -1;
  for (int seq = 1, i = 0; seq <= PER; seq++) {
    for (int k = 0; k < KEYS; k++, i++) {
      bool bad = k == 1 && seq == 5;
      if (bad) poison = i;
      evtest_envelope(&envs[i], &ts[i], ids[i], topic, keys[k], "shop.test.v1.Thing", seq,
                      bad ? "poison" : "fine", bad ? 6 : 4);
    }
  }
  publish(envs, N, topic);

  poison_ctx pc = {.table = table};
  consumer *c = consumer_go(group, topic, poison_cb, &pc);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= N - 1 && cs.dead_lettered >= 1), 60000);
  cr_assert(ok, "applied %lld, dead-lettered %lld", (long long)cs.applied,
            (long long)cs.dead_lettered);
  cr_assert_eq(cs.dead_lettered, 1);
  for (int i = 0; i < N; i++) {
    cr_assert_eq(evtest_count_of(db, table, ids[i]), i == poison ? 0 : 1, "event %d (key %s)", i,
                 envs[i].key);
  }
  cr_assert_geq(atomic_load(&pc.poison_calls), 3, "three attempts alone, after the batch");

  /* The dead letter: the record unchanged, plus where it came from. */
  evtest_rec *orig, *dead;
  size_t norig = evtest_read_topic(topic, &orig);
  size_t ndead = evtest_read_topic(dlt, &dead);
  cr_assert_eq(ndead, 1);
  const evtest_rec *o = NULL;
  for (size_t i = 0; i < norig; i++) {
    if (strcmp(evtest_header(&orig[i], "ce_id"), ids[poison]) == 0) o = &orig[i];
  }
  cr_assert_not_null(o);
  cr_assert_str_eq(dead[0].key, "b");
  cr_assert_eq(dead[0].value_len, 6);
  cr_assert_arr_eq(dead[0].value, "poison", 6);
  cr_assert_eq(dead[0].nh, o->nh + 6, "original headers plus six dlt_ headers");
  for (size_t i = 0; i < o->nh; i++) {
    cr_assert_str_eq(dead[0].hname[i], o->hname[i]);
    cr_assert_str_eq(dead[0].hval[i], o->hval[i], "header %s", o->hname[i]);
  }
  char part[16], off[24];
  snprintf(part, sizeof part, "%d", (int)o->partition);
  snprintf(off, sizeof off, "%lld", (long long)o->offset);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_original_topic"), topic);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_original_partition"), part);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_original_offset"), off);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_group"), group);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_attempts"), "3");
  cr_assert(strncmp(evtest_header(&dead[0], "dlt_error"), "INVALID_ARGUMENT: poison pill", 29) == 0,
            "dlt_error: %s", evtest_header(&dead[0], "dlt_error"));
  evtest_recs_free(orig, norig);
  evtest_recs_free(dead, ndead);

  dlt_seen seen = {0};
  cr_assert_eq(events_dlt_list(testenv_kafka_brokers(), topic, group, dlt_collect, &seen, 30000,
                               err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(seen.count, 1);
  cr_assert_str_eq(seen.event_id, ids[poison]);
  cr_assert_str_eq(seen.original_topic, topic);
  cr_assert_eq(seen.first.attempts, 3);
  cr_assert_not(seen.first.replayed);

  /* Fixed; replay puts it back and the consumer applies it. */
  atomic_store(&pc.healed, true);
  size_t replayed = 0;
  cr_assert_eq(
      events_dlt_replay(testenv_kafka_brokers(), topic, group, NULL, &replayed, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert_eq(replayed, 1);
  /* The row is visible once the consumer committed; its count of applied
   * events moves just after: wait for both. */
  WAIT_FOR(
      ok,
      evtest_count_of(db, table, ids[poison]) == 1 && (consumer_stats_get(c, &cs), cs.applied >= N),
      30000);
  consumer_stats_get(c, &cs);
  consumer_destroy(c);
  cr_assert(ok, "the replayed event is applied");
  cr_assert_eq(cs.applied, N);
  for (int i = 0; i < N; i++) cr_assert_eq(evtest_count_of(db, table, ids[i]), 1);

  /* The replay position moved: a second replay sends nothing. */
  cr_assert_eq(
      events_dlt_replay(testenv_kafka_brokers(), topic, group, NULL, &replayed, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert_eq(replayed, 0);
  seen = (dlt_seen){0};
  events_dlt_list(testenv_kafka_brokers(), topic, group, dlt_collect, &seen, 30000, err,
                  sizeof err);
  cr_assert(seen.count == 1 && seen.first.replayed);
  /* The replayed record carries no dlt_ headers. */
  norig = evtest_read_topic(topic, &orig);
  cr_assert_eq(norig, N + 1);
  const evtest_rec *last = NULL;
  for (size_t i = 0; i < norig; i++) {
    if (strcmp(evtest_header(&orig[i], "ce_id"), ids[poison]) == 0) last = &orig[i];
  }
  cr_assert_null(evtest_header(last, "dlt_error"));
  cr_assert_str_eq(evtest_header(last, "ce_type"), "shop.test.v1.Thing");
  evtest_recs_free(orig, norig);
  clean_group(group);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

/* Produces raw records (no outbox): one without any header, then a valid
 * one. */
static void produce_raw(const char *topic, const events_envelope *valid) {
  char errstr[512];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", testenv_kafka_brokers(), NULL, 0);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  cr_assert_not_null(p, "%s", errstr);
  cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("k", 1),
                                 RD_KAFKA_V_VALUE("junk", 4),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END),
               RD_KAFKA_RESP_ERR_NO_ERROR);
  events_ce_headers ce;
  events_ce_headers_build(&ce, valid);
  rd_kafka_headers_t *h = rd_kafka_headers_new(ce.count);
  for (size_t i = 0; i < ce.count; i++) {
    rd_kafka_header_add(h, ce.h[i].name, -1, ce.h[i].value, (ssize_t)ce.h[i].len);
  }
  cr_assert_eq(rd_kafka_producev(p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY("k", 1),
                                 RD_KAFKA_V_VALUE(valid->data.data, valid->data.len),
                                 RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(h),
                                 RD_KAFKA_V_END),
               RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(p);
}

Test(consumer, a_record_without_ce_id_is_dead_lettered_at_once_and_the_partition_moves_on) {
  char topic[200], group[96], table[64], dlt[256];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "nohdr", 1, group);
  topology_dlt_name(dlt, sizeof dlt, topic, group);
  evtest_count_table(db, table);
  events_envelope ev;
  events_timestamp ts;
  char id[EVENTS_ID_SIZE];
  evtest_envelope(&ev, &ts, id, topic, "k", "shop.test.v1.Thing", 1, "ok", 2);
  produce_raw(topic, &ev);

  consumer *c = consumer_go(group, topic, evtest_count_cb, table);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= 1 && cs.dead_lettered >= 1), 60000);
  consumer_destroy(c);
  cr_assert(ok, "applied %lld, dead-lettered %lld", (long long)cs.applied,
            (long long)cs.dead_lettered);
  cr_assert_eq(evtest_count_of(db, table, id), 1);
  evtest_rec *dead;
  size_t n = evtest_read_topic(dlt, &dead);
  cr_assert_eq(n, 1);
  cr_assert_arr_eq(dead[0].value, "junk", 4);
  cr_assert_str_eq(evtest_header(&dead[0], "dlt_attempts"), "0");
  cr_assert(strstr(evtest_header(&dead[0], "dlt_error"), "ce_specversion") != NULL ||
                strstr(evtest_header(&dead[0], "dlt_error"), "ce_id") != NULL,
            "%s", evtest_header(&dead[0], "dlt_error"));
  evtest_recs_free(dead, n);
  clean_group(group);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

/* Fails the first `failures` calls as a database outage would. */
typedef struct flaky_ctx {
  const char *table;
  atomic_int calls;
  int failures;
} flaky_ctx;

static status_code flaky_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                            char *errbuf, size_t errlen) {
  flaky_ctx *fc = arg;
  if (atomic_fetch_add(&fc->calls, 1) < fc->failures) {
    snprintf(errbuf, errlen, "lost connection to the database (simulated)");
    return STATUS_UNAVAILABLE;
  }
  return evtest_count_cb(tx, msgs, n, (void *)fc->table, errbuf, errlen);
}

Test(consumer, a_transient_database_failure_is_retried_and_never_dead_lettered) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "flaky", 1, group);
  evtest_count_table(db, table);
  enum { N = 5 };
  events_envelope envs[N];
  events_timestamp ts[N];
  char ids[N][EVENTS_ID_SIZE];
  for (int i = 0; i < N; i++) {
    evtest_envelope(&envs[i], &ts[i], ids[i], topic, "k", "shop.test.v1.Thing", i + 1, "x", 1);
  }
  publish(envs, N, topic);
  /* More failures than max_retries (3): were they counted as attempts,
   * the events would be dead-lettered. */
  flaky_ctx fc = {.table = table, .failures = 6};
  consumer *c = consumer_go(group, topic, flaky_cb, &fc);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied >= N), 60000);
  consumer_destroy(c);
  cr_assert(ok, "applied %lld of %d", (long long)cs.applied, N);
  cr_assert_eq(cs.dead_lettered, 0);
  cr_assert_geq(cs.transient, 6);
  for (int i = 0; i < N; i++) cr_assert_eq(evtest_count_of(db, table, ids[i]), 1);
  clean_group(group);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, group);
}

Test(consumer, processed_ids_older_than_the_retention_are_purged) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "purge", 1, NULL);
  evtest_count_table(db, table);
  db_value p[2] = {DB_STR(group), DB_STR("old-event")};
  cr_assert_eq(db_exec(db,
                       "INSERT INTO processed_events (consumer_group, event_id, processed_at)"
                       " VALUES (?, ?, NOW(6) - INTERVAL 2 DAY)",
                       p, 2, NULL, NULL, err, sizeof err),
               STATUS_OK, "%s", err);
  db_value q[2] = {DB_STR(group), DB_STR("new-event")};
  cr_assert_eq(db_exec(db, "INSERT INTO processed_events (consumer_group, event_id) VALUES (?, ?)",
                       q, 2, NULL, NULL, err, sizeof err),
               STATUS_OK, "%s", err);
  const char *topics[] = {topic};
  consumer_opts o;
  evtest_consumer_opts(&o, group, topics, 1);
  o.handler = evtest_count_cb;
  o.handler_arg = table;
  o.processed_retention_s = 24 * 3600;
  o.purge_interval_ms = 100;
  consumer *c = NULL;
  cr_assert_eq(consumer_create(&c, &o, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(consumer_start(c, err, sizeof err), STATUS_OK, "%s", err);
  bool ok;
  int64_t n = -1;
  WAIT_FOR(ok,
           db_query_i64(db, "SELECT COUNT(*) FROM processed_events WHERE consumer_group = ?", p, 1,
                        &n, err, sizeof err) == STATUS_OK &&
               n == 1,
           20000);
  consumer_destroy(c);
  cr_assert(ok, "%lld processed id(s) left", (long long)n);
  cr_assert_eq(db_query_i64(db,
                            "SELECT COUNT(*) FROM processed_events WHERE consumer_group = ? AND"
                            " event_id = 'new-event'",
                            p, 1, &n, err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(n, 1, "the recent one stays");
  clean_group(group);
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, NULL);
}
