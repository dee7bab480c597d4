/* The transactional outbox and its relay, against the real broker and
 * MariaDB of the test profile. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "evtest.h"
#include "testenv.h"

static char err[1024];
static db_conn *db;

static void setup(void) { db = evtest_suite_init(); }

static void teardown(void) {
  evtest_kafka_restore();
  evtest_suite_fini(db);
}

TestSuite(outbox, .init = setup, .fini = teardown, .timeout = 180);

static outbox_relay *relay_start(void) {
  outbox_relay_opts o;
  evtest_relay_opts(&o);
  outbox_relay *r = NULL;
  cr_assert_eq(outbox_relay_create(&r, &o, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(outbox_relay_start(r, err, sizeof err), STATUS_OK, "%s", err);
  return r;
}

static void wait_all_sent(const char *topic, int timeout_ms) {
  bool ok;
  WAIT_FOR(ok, evtest_unsent(db, topic) == 0, timeout_ms);
  cr_assert(ok, "%lld row(s) of %s still unsent after %d ms", (long long)evtest_unsent(db, topic),
            topic, timeout_ms);
}

Test(outbox, one_outbox_row_becomes_exactly_one_record_with_its_key_headers_and_bytes) {
  char topic[200];
  evtest_topic(topic, "one", 3, NULL);
  static const uint8_t data[] = {0x0a, 0x03, 'a', 0x00, 'b', 0xff, 0x10};
  events_envelope ev;
  events_timestamp ts;
  char id[EVENTS_ID_SIZE];
  evtest_envelope(&ev, &ts, id, topic, "order-42", "shop.order.v1.OrderCreated", 7, data,
                  sizeof data);
  evtest_append(db, &ev, 1);

  outbox_relay *r = relay_start();
  outbox_relay_nudge(r);
  wait_all_sent(topic, 30000);
  outbox_relay_stats st;
  outbox_relay_stop(r); /* joins: the counters are final */
  outbox_relay_stats_get(r, &st);
  outbox_relay_destroy(r);
  cr_assert_eq(st.sent, 1);

  evtest_rec *recs;
  size_t n = evtest_read_topic(topic, &recs);
  cr_assert_eq(n, 1, "exactly one record, got %zu", n);
  cr_assert_eq(recs[0].key_len, strlen("order-42"));
  cr_assert_str_eq(recs[0].key, "order-42");
  cr_assert_eq(recs[0].value_len, sizeof data);
  cr_assert_arr_eq(recs[0].value, data, sizeof data);
  char when[EVENTS_TIME_SIZE];
  events_time_format(ts.seconds, ts.nanos, when);
  const char *want[][2] = {
      {"ce_specversion", "1.0"},
      {"ce_id", id},
      {"ce_source", "/shop/test"},
      {"ce_type", "shop.order.v1.OrderCreated"},
      {"ce_subject", "order-42"},
      {"ce_time", when},
      {"ce_sequence", "7"},
      {"ce_correlationid", "order-42"},
      {"ce_actor", "tester"},
      {"content-type", "application/protobuf"},
      {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
  };
  cr_assert_eq(recs[0].nh, sizeof want / sizeof want[0]);
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
    const char *v = evtest_header(&recs[0], want[i][0]);
    cr_assert_not_null(v, "header %s missing", want[i][0]);
    cr_assert_str_eq(v, want[i][1], "header %s", want[i][0]);
  }
  int64_t state = -1;
  db_value p[1] = {DB_STR(id)};
  cr_assert_eq(db_query_i64(db, "SELECT state FROM outbox WHERE event_id = ?", p, 1, &state, err,
                            sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(state, 1, "the row is marked sent");
  evtest_recs_free(recs, n);
  evtest_topic_drop(topic, NULL);
}

/* Reads topic back and checks that, per key "key-NN", the first record of
 * each event id comes in sequence order 1..per_key (re-sends may repeat a
 * suffix) and that every event is there; `extra` more events under other
 * keys ("warm-up") are expected. Returns the number of duplicates. */
static int check_key_order(const char *topic, int keys, int per_key, int extra) {
  evtest_rec *recs;
  size_t n = evtest_read_topic(topic, &recs);
  size_t total = (size_t)(keys * per_key + extra);
  cr_assert_geq(n, total);
  int *next = calloc((size_t)keys, sizeof *next);
  int dups = 0;
  char(*seen)[EVENTS_ID_SIZE] = calloc(n, sizeof *seen);
  size_t nseen = 0;
  for (size_t i = 0; i < n; i++) {
    const char *eid = evtest_header(&recs[i], "ce_id");
    cr_assert_not_null(eid);
    bool dup = false;
    for (size_t j = 0; j < nseen && !dup; j++) dup = strcmp(seen[j], eid) == 0;
    if (dup) {
      dups++;
      continue;
    }
    snprintf(seen[nseen++], EVENTS_ID_SIZE, "%s", eid);
    if (strncmp(recs[i].key, "key-", 4) != 0) continue;
    int k = atoi(recs[i].key + 4);
    cr_assert(k >= 0 && k < keys, "key %s", recs[i].key);
    int seq = atoi(evtest_header(&recs[i], "ce_sequence"));
    cr_assert_eq(seq, next[k] + 1, "key %s: sequence %d after %d", recs[i].key, seq, next[k]);
    next[k] = seq;
  }
  for (int k = 0; k < keys; k++) cr_assert_eq(next[k], per_key, "key %d", k);
  cr_assert_eq(nseen, total, "every event at least once");
  free(next);
  free(seen);
  evtest_recs_free(recs, n);
  return dups;
}

#define OUTAGE_KEYS 20
#define OUTAGE_PER_KEY 50

Test(outbox, rows_written_while_the_broker_is_down_are_all_published_in_key_order_once_it_is_back,
     .timeout = 300) {
  char topic[200];
  evtest_topic(topic, "outage", 6, NULL);
  outbox_relay *r = relay_start();

  /* The relay is connected and has the topic's metadata before the
   * outage. */
  events_envelope ev;
  events_timestamp ts;
  char id[EVENTS_ID_SIZE];
  evtest_envelope(&ev, &ts, id, topic, "warm-up", "shop.test.v1.Thing", 1, "w", 1);
  evtest_append(db, &ev, 1);
  outbox_relay_nudge(r);
  wait_all_sent(topic, 30000);

  evtest_kafka_kill();
  int64_t outage_start = wait_now_ms();
  char keys[OUTAGE_KEYS][16];
  for (int k = 0; k < OUTAGE_KEYS; k++) snprintf(keys[k], sizeof keys[k], "key-%02d", k);
  for (int seq = 1; seq <= OUTAGE_PER_KEY; seq++) {
    events_envelope envs[OUTAGE_KEYS];
    events_timestamp tss[OUTAGE_KEYS];
    char ids[OUTAGE_KEYS][EVENTS_ID_SIZE];
    for (int k = 0; k < OUTAGE_KEYS; k++) {
      evtest_envelope(&envs[k], &tss[k], ids[k], topic, keys[k], "shop.test.v1.Thing", seq, "x", 1);
    }
    evtest_append(db, envs, OUTAGE_KEYS);
    outbox_relay_nudge(r);
  }
  const int total = OUTAGE_KEYS * OUTAGE_PER_KEY;
  /* Every row is in the producer's hands, none is acknowledged. */
  bool ok;
  outbox_relay_stats st;
  WAIT_FOR(ok, (outbox_relay_stats_get(r, &st), st.produced >= total + 1), 20000);
  cr_assert(ok, "the relay produced only %lld rows", (long long)st.produced);
  cr_assert_eq(evtest_unsent(db, topic), total, "nothing is marked while the broker is down");
  /* The outage lasts well past librdkafka's retry backoff (100 ms) and
   * several of its reconnect attempts. */
  wait_sleep_ms(outage_start + 4000 - wait_now_ms()); /* held on purpose */
  cr_assert_eq(evtest_unsent(db, topic), total);

  evtest_kafka_start();
  wait_all_sent(topic, 120000);
  outbox_relay_stats_get(r, &st);
  outbox_relay_destroy(r);
  cr_log_info("outage: produced %lld records for %d rows, %lld producer rebuild(s)",
              (long long)st.produced, total + 1, (long long)st.rebuilds);

  db_value p[1] = {DB_STR(topic)};
  int64_t sent = 0;
  cr_assert_eq(db_query_i64(db, "SELECT COUNT(*) FROM outbox WHERE topic = ? AND state = 1", p, 1,
                            &sent, err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(sent, total + 1, "every row is marked sent");

  int dups = check_key_order(topic, OUTAGE_KEYS, OUTAGE_PER_KEY, 1);
  cr_log_info("outage: %d duplicate record(s) on the topic", dups);
  evtest_topic_drop(topic, NULL);
}

Test(outbox,
     a_relay_killed_after_the_ack_and_before_marking_sends_again_and_the_consumer_applies_once) {
  char topic[200], group[96], table[64];
  testenv_unique(group, sizeof group, "test-events-g-");
  evtest_topic(topic, "relaykill", 1, NULL);
  evtest_count_table(db, table);
  events_envelope ev;
  events_timestamp ts;
  char id[EVENTS_ID_SIZE];
  evtest_envelope(&ev, &ts, id, topic, "order-7", "shop.test.v1.Thing", 1, "x", 1);
  evtest_append(db, &ev, 1);

  const char *args[] = {"relay", "--seconds", "60", NULL};
  pid_t pid = evtest_spawn("relay.after_ack:1", args);
  int status = evtest_wait_exit(pid, 60000);
  cr_assert(status != -1 && WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
            "the relay process should abort at relay.after_ack (status %d)", status);
  cr_assert_eq(evtest_unsent(db, topic), 1, "the row was acknowledged but not marked");
  evtest_rec *recs;
  size_t n = evtest_read_topic(topic, &recs);
  cr_assert_eq(n, 1);
  evtest_recs_free(recs, n);

  outbox_relay *r = relay_start();
  wait_all_sent(topic, 30000);
  outbox_relay_destroy(r);
  n = evtest_read_topic(topic, &recs);
  cr_assert_eq(n, 2, "produced twice");
  cr_assert_str_eq(evtest_header(&recs[0], "ce_id"), id);
  cr_assert_str_eq(evtest_header(&recs[1], "ce_id"), id);
  evtest_recs_free(recs, n);

  consumer_opts o;
  const char *topics[] = {topic};
  evtest_consumer_opts(&o, group, topics, 1);
  o.handler = evtest_count_cb;
  o.handler_arg = table;
  consumer *c = NULL;
  cr_assert_eq(consumer_create(&c, &o, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(consumer_start(c, err, sizeof err), STATUS_OK, "%s", err);
  bool ok;
  consumer_stats cs;
  WAIT_FOR(ok, (consumer_stats_get(c, &cs), cs.applied + cs.duplicates >= 2), 60000);
  consumer_destroy(c);
  cr_assert(ok, "the consumer saw %lld record(s)", (long long)(cs.applied + cs.duplicates));
  cr_assert_eq(cs.applied, 1);
  cr_assert_eq(cs.duplicates, 1);
  cr_assert_eq(evtest_count_of(db, table, id), 1, "applied once");
  evtest_drop_table(db, table);
  evtest_topic_drop(topic, NULL);
}

Test(outbox, a_row_too_large_for_the_broker_is_parked_with_its_error_and_later_rows_flow) {
  char topic[200];
  evtest_topic(topic, "large", 1, NULL);
  size_t big = 2 * 1024 * 1024;
  uint8_t *data = calloc(1, big);
  events_envelope envs[2];
  events_timestamp ts[2];
  char ids[2][EVENTS_ID_SIZE];
  evtest_envelope(&envs[0], &ts[0], ids[0], topic, "k", "shop.test.v1.Thing", 1, data, big);
  evtest_envelope(&envs[1], &ts[1], ids[1], topic, "k", "shop.test.v1.Thing", 2, "small", 5);
  evtest_append(db, envs, 2);
  free(data);

  outbox_relay *r = relay_start();
  wait_all_sent(topic, 30000);
  outbox_relay_stats st;
  outbox_relay_stop(r); /* joins: the counters are final */
  outbox_relay_stats_get(r, &st);
  outbox_relay_destroy(r);
  cr_assert_eq(st.parked, 1);
  cr_assert_eq(st.sent, 1);

  db_value p[1] = {DB_STR(ids[0])};
  db_rows *rows;
  cr_assert_eq(db_query(db, "SELECT state, error FROM outbox WHERE event_id = ?", p, 1, &rows, err,
                        sizeof err),
               STATUS_OK, "%s", err);
  cr_assert(db_rows_next(rows));
  cr_assert_eq(db_rows_i64(rows, 0), 2, "parked");
  cr_assert(strstr(db_rows_str(rows, 1, NULL), "MSG_SIZE_TOO_LARGE") != NULL, "error: %s",
            db_rows_str(rows, 1, NULL));
  db_rows_free(rows);
  int64_t unsent, parked;
  cr_assert_eq(outbox_backlog(db, &unsent, &parked, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_geq(parked, 1);

  evtest_rec *recs;
  size_t n = evtest_read_topic(topic, &recs);
  cr_assert_eq(n, 1);
  cr_assert_str_eq(evtest_header(&recs[0], "ce_id"), ids[1]);
  evtest_recs_free(recs, n);
  evtest_topic_drop(topic, NULL);
}

Test(outbox, a_second_relay_waits_for_the_lock_and_takes_over_when_the_first_stops) {
  char topic[200];
  evtest_topic(topic, "lock", 1, NULL);
  outbox_relay *a = relay_start();
  bool ok;
  outbox_relay_stats sa, sb;
  WAIT_FOR(ok, (outbox_relay_stats_get(a, &sa), sa.active), 15000);
  cr_assert(ok, "the first relay takes the lock");
  outbox_relay *b = relay_start();

  events_envelope ev;
  events_timestamp ts;
  char id[EVENTS_ID_SIZE];
  evtest_envelope(&ev, &ts, id, topic, "k", "shop.test.v1.Thing", 1, "1", 1);
  evtest_append(db, &ev, 1);
  outbox_relay_nudge(a);
  outbox_relay_nudge(b);
  wait_all_sent(topic, 30000);
  /* The relay counts a row after its UPDATE commits: the row can read as
   * sent a moment before the counter moves. */
  WAIT_FOR(ok, (outbox_relay_stats_get(a, &sa), sa.sent >= 1), 5000);
  outbox_relay_stats_get(b, &sb);
  cr_assert(sa.active && !sb.active, "one relay at a time");
  cr_assert_eq(sa.sent, 1);
  cr_assert_eq(sb.sent, 0);

  outbox_relay_destroy(a); /* releases the lock */
  WAIT_FOR(ok, (outbox_relay_stats_get(b, &sb), sb.active), 15000);
  cr_assert(ok, "the second relay takes over");
  evtest_envelope(&ev, &ts, id, topic, "k", "shop.test.v1.Thing", 2, "2", 1);
  evtest_append(db, &ev, 1);
  outbox_relay_nudge(b);
  wait_all_sent(topic, 30000);
  WAIT_FOR(ok, (outbox_relay_stats_get(b, &sb), sb.sent >= 1), 5000);
  outbox_relay_destroy(b);
  cr_assert_eq(sb.sent, 1);
  evtest_topic_drop(topic, NULL);
}

Test(outbox, sent_rows_older_than_the_retention_are_purged_and_the_others_kept) {
  char topic[200];
  testenv_unique(topic, sizeof topic, "test.events.purge.");
  events_envelope envs[3];
  events_timestamp ts[3];
  char ids[3][EVENTS_ID_SIZE];
  for (int i = 0; i < 3; i++) {
    evtest_envelope(&envs[i], &ts[i], ids[i], topic, "k", "shop.test.v1.Thing", i + 1, "x", 1);
  }
  evtest_append(db, envs, 3);
  /* Row 0: sent long ago; row 1: sent just now; row 2: unsent. */
  db_value p0[1] = {DB_STR(ids[0])}, p1[1] = {DB_STR(ids[1])};
  cr_assert_eq(db_exec(db,
                       "UPDATE outbox SET state = 1, sent_at = NOW(6) - INTERVAL 2 HOUR"
                       " WHERE event_id = ?",
                       p0, 1, NULL, NULL, err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_eq(db_exec(db, "UPDATE outbox SET state = 1, sent_at = NOW(6) WHERE event_id = ?", p1,
                       1, NULL, NULL, err, sizeof err),
               STATUS_OK, "%s", err);
  int64_t deleted = 0;
  cr_assert_eq(outbox_purge(db, 3600, &deleted, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_geq(deleted, 1);
  db_value t[1] = {DB_STR(topic)};
  int64_t left = 0;
  cr_assert_eq(
      db_query_i64(db, "SELECT COUNT(*) FROM outbox WHERE topic = ?", t, 1, &left, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert_eq(left, 2, "the recent sent row and the unsent row stay");
  cr_assert_eq(evtest_unsent(db, topic), 1);
}

Test(outbox,
     a_fatal_producer_error_rebuilds_the_producer_and_resends_the_unsent_rows_in_key_order) {
  /* librdkafka raises a fatal error right after the 50th record is
   * handed to it (read once, at the first crash point of this process). */
  setenv("SHOP_CRASH_AT", "relay.fatal:50", 1);
  char topic[200];
  evtest_topic(topic, "fatal", 6, NULL);
  enum { KEYS = 8, PER = 50 };
  char keys[KEYS][16];
  for (int k = 0; k < KEYS; k++) snprintf(keys[k], sizeof keys[k], "key-%02d", k);
  for (int seq = 1; seq <= PER; seq++) {
    events_envelope envs[KEYS];
    events_timestamp tss[KEYS];
    char ids[KEYS][EVENTS_ID_SIZE];
    for (int k = 0; k < KEYS; k++) {
      evtest_envelope(&envs[k], &tss[k], ids[k], topic, keys[k], "shop.test.v1.Thing", seq, "x", 1);
    }
    evtest_append(db, envs, KEYS);
  }
  outbox_relay *r = relay_start();
  wait_all_sent(topic, 60000);
  outbox_relay_stats st;
  outbox_relay_stats_get(r, &st);
  outbox_relay_destroy(r);
  unsetenv("SHOP_CRASH_AT");
  cr_assert_eq(st.rebuilds, 1, "one producer rebuild");
  int dups = check_key_order(topic, KEYS, PER, 0);
  cr_log_info("fatal: produced %lld records for %d rows, %d duplicate(s) on the topic",
              (long long)st.produced, KEYS * PER, dups);
  evtest_topic_drop(topic, NULL);
}

/* The traceparent of the outbox row of event id, as stored. */
static void row_traceparent(const char *id, char *out, size_t len) {
  db_value p[1] = {DB_STR(id)};
  db_rows *r = NULL;
  cr_assert_eq(
      db_query(db, "SELECT envelope FROM outbox WHERE event_id = ?", p, 1, &r, err, sizeof err),
      STATUS_OK, "%s", err);
  cr_assert(db_rows_next(r), "no row for %s", id);
  size_t n = 0;
  const char *b = db_rows_str(r, 0, &n);
  events_envelope *e = shop__events__v1__event_envelope__unpack(NULL, n, (const uint8_t *)b);
  cr_assert_not_null(e);
  snprintf(out, len, "%s", e->traceparent);
  events_envelope_free(e);
  db_rows_free(r);
}

Test(outbox, an_event_appended_without_a_traceparent_continues_the_current_scopes_trace) {
  const char *tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  events_envelope ev[2];
  events_timestamp ts[2];
  char id[2][EVENTS_ID_SIZE];
  for (int i = 0; i < 2; i++)
    evtest_envelope(&ev[i], &ts[i], id[i], "test.events.trace", "k", "shop.test.v1.T", i + 1, "x",
                    1);
  ev[0].traceparent = "";
  log_scope s;
  log_scope_enter(&s, NULL, tp, "ev-1");
  evtest_append(db, ev, 2);
  log_scope_leave(&s);
  char got[128];
  row_traceparent(id[0], got, sizeof got);
  cr_assert_str_eq(got, tp, "the scope's trace");
  row_traceparent(id[1], got, sizeof got);
  cr_assert_str_eq(got, ev[1].traceparent, "a traceparent given wins");
}
