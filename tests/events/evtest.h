/*
 * evtest: what the event backbone's integration tests share: the test
 * database with the events migrations, unique topics, a raw reader of a
 * topic's records, helper processes, and stopping/starting the broker.
 *
 * Every helper fails the current test (Criterion) on error.
 */
#ifndef SHOP_EVTEST_H
#define SHOP_EVTEST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "db/db.h"
#include "events/consumer.h"
#include "events/events.h"
#include "events/outbox.h"
#include "support/wait.h"

/* Applies the events migrations to shop_test (as shop_migrate) once per
 * process and returns a connection as shop_test. */
db_conn *evtest_db(void);

/* The old name of WAIT_FOR (support/wait.h), kept so that suites written
 * against it while the consumer API moves still build; new code uses
 * WAIT_FOR or WAIT_UNTIL. */
#define EVTEST_WAIT(ok, cond, timeout_ms) WAIT_FOR(ok, cond, timeout_ms)

/* Publishes envs through the outbox (in db) and a relay of its own, and
 * waits (30 s) until topic has no unsent row. Fails the test on error. */
void evtest_publish(db_conn *db, const events_envelope *envs, size_t n, const char *topic);

/* A suite's .init and .fini around evtest_db: a clean outbox before and
 * after, and (fini) every librdkafka handle gone, asserted. */
db_conn *evtest_suite_init(void);
void evtest_suite_fini(db_conn *db);

/* Connection parameters of shop_test for relays and consumers; the
 * password lives in the returned struct's storage until the next call. */
const db_params *evtest_db_params(void);

/* A unique topic "test.events.<what>.<pid>_<n>_<us>" with that many
 * partitions, created now; if group is not NULL, its dead-letter topic too.
 * name must hold 200 bytes. */
void evtest_topic(char *name, const char *what, int partitions, const char *group);

/* Deletes a topic made by evtest_topic (and its DLT for group). */
void evtest_topic_drop(const char *name, const char *group);

/* A table (event_id VARCHAR(64) PRIMARY KEY, n INT) counting applications.
 * name must hold 64 bytes. */
void evtest_count_table(db_conn *c, char *name);
/* How many times event_id was applied (0 when never). */
int evtest_count_of(db_conn *c, const char *table, const char *event_id);
void evtest_drop_table(db_conn *c, const char *table);

/* A record read back from Kafka, every field a copy. */
typedef struct evtest_rec {
  int32_t partition;
  int64_t offset;
  char *key;
  size_t key_len;
  uint8_t *value;
  size_t value_len;
  size_t nh;
  char **hname;
  char **hval; /* NUL-terminated copies */
  size_t *hlen;
} evtest_rec;

/* Reads every record of topic, from the start to the end it has now, in
 * partition then offset order. Returns the count; *out to evtest_recs_free. */
size_t evtest_read_topic(const char *topic, evtest_rec **out);
void evtest_recs_free(evtest_rec *recs, size_t n);
/* The last header called name, or NULL. */
const char *evtest_header(const evtest_rec *r, const char *name);

/* An envelope for tests: source "/shop/test", type, the given topic, key,
 * subject = key, sequence, data (borrowed), and a fresh id. The strings
 * are borrowed except the id, which lives in id_buf. */
void evtest_envelope(events_envelope *ev, events_timestamp *ts, char id_buf[EVENTS_ID_SIZE],
                     const char *topic, const char *key, const char *type, int64_t sequence,
                     const void *data, size_t len);

/* Appends envs[0..n) to the outbox in one transaction. */
void evtest_append(db_conn *c, const events_envelope *envs, size_t n);

/* Deletes leftover outbox rows of earlier runs of these tests (topics
 * test.events.*), so a relay starts with only this test's rows. */
void evtest_outbox_clean(db_conn *c);

/* Unsent outbox rows of one topic. */
int64_t evtest_unsent(db_conn *c, const char *topic);

/* Starts build/bin/events-testproc with args (NULL-terminated) and, if
 * crash_at is not NULL, SHOP_CRASH_AT=crash_at. */
pid_t evtest_spawn(const char *crash_at, const char *const *args);
/* Waits up to timeout_ms for pid to end; returns its wait status, or -1
 * after killing it on timeout. */
int evtest_wait_exit(pid_t pid, int timeout_ms);

/* scripts/infra.sh kill-kafka / start --profile test. */
void evtest_kafka_kill(void);
void evtest_kafka_start(void);
/* Starts the broker again if this test killed it and did not restart it
 * (a failed assertion in between): call from the suite's fini. */
void evtest_kafka_restore(void);

/* Consumer options for tests: the test broker and database, the short
 * session timeout (6 s) and heartbeat (1 s), quick retries. */
void evtest_consumer_opts(consumer_opts *o, const char *group, const char *const *topics,
                          size_t ntopics);

/* Relay options for tests: the test broker and database, short intervals. */
void evtest_relay_opts(outbox_relay_opts *o);

/* A consumer handler counting applications per event id in the table
 * named by arg (see evtest_count_table). */
status_code evtest_count_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                            char *errbuf, size_t errlen);

#endif
