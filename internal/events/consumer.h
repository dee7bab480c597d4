/*
 * consumer: how every Shop worker and projection consumes events
 * (DESIGN.md, "Events on Kafka"): at least once, with an inbox.
 *
 *   consumer_opts o;
 *   consumer_opts_init(&o, cfg);                  // brokers, timeouts, retries
 *   o.group = TOPOLOGY_GROUP_INVENTORY_WORKER;     // topics from topology
 *   o.db = &db_params_of_shop_inventory;
 *   o.handler = inventory_apply_cb; o.handler_arg = &ctx;
 *   o.relay = ctx.relay;                            // if the handler appends
 *   consumer_create(&c, &o, errbuf, errlen);
 *   consumer_run(c, errbuf, errlen);  // or consumer_start() for a thread
 *   ... on SIGTERM: consumer_stop(c); ... consumer_destroy(c);
 *
 * For each batch of records polled (up to batch_size, from any of the
 * assigned partitions, in the order the partitions hold them):
 *
 *   1. Records that do not decode (events_envelope_decode: no ce_id, no
 *      ce_type, ...) are poison: they go straight to the dead-letter topic
 *      (dlt_attempts "0").
 *   2. One transaction: the event ids already in processed_events for
 *      this group are skipped (the handler never sees them), the new ids
 *      are inserted, the handler runs with the new events (it may append
 *      outbox rows in the same transaction), commit.
 *   3. Only after the commit are the offsets stored (librdkafka's
 *      enable.auto.offset.store=false); librdkafka's auto-commit sends the
 *      stored offsets every second and at revoke and close. Chosen over
 *      explicit commits: no commit round trip per batch, and a crash in
 *      between costs only redeliveries, which step 2 skips.
 *
 * What a handler's status means:
 *   OK                         applied; committed with the inbox rows.
 *   UNAVAILABLE, ABORTED       transient (database down, deadlock): the
 *                              transaction is rolled back, the batch's
 *                              partitions are rewound (seek) and retried
 *                              after a backoff, for as long as it takes.
 *                              Never dead-lettered: a database outage must
 *                              not empty the partitions into the DLT. Any
 *                              status is transient when the handler lost
 *                              its database link (the transaction is gone),
 *                              and failures of the framework's own
 *                              statements always are.
 *   anything else              the handler rejects an event: the batch is
 *                              rolled back and retried one event per
 *                              transaction, so only the poison event fails;
 *                              that one is tried max_retries times alone,
 *                              with a backoff doubling from retry_backoff_ms
 *                              (up to 10x), then goes to the DLT.
 *
 * A dead letter is the record unchanged (key, value, original headers) on
 * topic "<topic>.<group>.dlt" plus the headers dlt_original_topic,
 * dlt_original_partition, dlt_original_offset, dlt_group, dlt_error
 * ("<STATUS>: <handler's text>") and dlt_attempts (handler calls for the
 * event alone). Its offset is stored once the dead letter is delivered, and
 * the partition moves on. A dead-lettered event is not recorded as
 * processed, so events_dlt_replay() makes the consumer apply it.
 *
 * Rebalances: the eager assignors (librdkafka's default range,roundrobin)
 * with rd_kafka_assign, the cooperative protocol with the incremental
 * calls; records of revoked partitions not yet processed are dropped (the
 * new owner gets them). consumer_run ends with rd_kafka_consumer_close,
 * which commits the stored offsets and leaves the group.
 *
 * Processed ids older than processed_retention_s are purged every
 * purge_interval_ms; projections keep their own versions, so a replay past
 * that window still changes nothing (see projection.h).
 */
#ifndef SHOP_EVENTS_CONSUMER_H
#define SHOP_EVENTS_CONSUMER_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "db/db.h"
#include "events/events.h"
#include "events/outbox.h"
#include "status/status.h"

/* One event handed to a handler. Everything is borrowed for the duration
 * of the call. */
typedef struct consumer_msg {
  const events_envelope *env; /* decoded; env->data is the record's value */
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t timestamp_ms; /* the record's timestamp */
} consumer_msg;

/* Applies n >= 1 events (in partition order) inside the open transaction
 * on tx. Must not commit or roll back. Returns OK, a transient status or a
 * rejection (see above), with a reason in errbuf. Runs on the consumer's
 * thread. */
typedef status_code (*consumer_handler_cb)(db_conn *tx, const consumer_msg *msgs, size_t n,
                                           void *arg, char *errbuf, size_t errlen);

/* A handler that treats each event on its own: applies one event in the
 * open transaction tx (arg as given to consumer_apply_each). */
typedef status_code (*consumer_apply_one_cb)(db_conn *tx, const events_envelope *ev, void *arg,
                                             char *errbuf, size_t errlen);

/* The body of a consumer_handler_cb for such handlers: applies msgs in
 * order with apply_one and stops at the first status that is not OK. */
status_code consumer_apply_each(db_conn *tx, const consumer_msg *msgs, size_t n,
                                consumer_apply_one_cb apply_one, void *arg, char *errbuf,
                                size_t errlen);

/* One event type a consumer takes, and the pure check of its decoded
 * message that runs before any database work (NULL: none). A check
 * returns NULL when the event is usable, else why not. */
typedef struct consumer_event_type {
  const ProtobufCMessageDescriptor *desc;
  const char *(*check)(const ProtobufCMessage *m, const events_envelope *ev);
} consumer_event_type;

/*
 * Decodes ev as the one of types whose full name is its ce_type, and runs
 * that type's check: a handler's decode and checks before the database,
 * pure (tests/fuzz runs every consumer's table through it). Returns
 *   - OK with *out NULL: a type the consumer does not take (skip it);
 *   - OK with *out the message (free with protobuf_c_message_free_unpacked)
 *     and *which its index in types;
 *   - INVALID_ARGUMENT (a rejection: no retry can help) when the data does
 *     not decode or the check refuses it, with the reason in errbuf.
 */
status_code consumer_event_decode(const events_envelope *ev, const consumer_event_type *types,
                                  size_t n, ProtobufCMessage **out, size_t *which, char *errbuf,
                                  size_t errlen);

/* Called after a transaction with n >= 1 newly applied events committed
 * (for waiters and metrics); on the consumer's thread; must not block. */
typedef void (*consumer_committed_cb)(const consumer_msg *msgs, size_t n, void *arg);

typedef struct consumer_opts {
  const char *brokers;
  const char *group;         /* group.id: one of TOPOLOGY_GROUP_* */
  const char *const *topics; /* NULL: the group's topics in topology */
  size_t topic_count;
  const char *client_id;       /* NULL: the group */
  const db_params *db;         /* the consumer's own connection (copied) */
  consumer_handler_cb handler; /* required */
  void *handler_arg;
  consumer_committed_cb committed; /* may be NULL */
  void *committed_arg;
  outbox_relay *relay;       /* nudged after each commit; may be NULL */
  int batch_size;            /* events per transaction; default 10 */
  int max_retries;           /* handler attempts alone before the DLT; 5 */
  int retry_backoff_ms;      /* first backoff; doubles up to 10x; 200 */
  int session_timeout_ms;    /* default 45000 (tests use ~6000) */
  int heartbeat_ms;          /* default 3000 (tests use 1000) */
  int processed_retention_s; /* default 7 days */
  int purge_interval_ms;     /* default 60000; 0: never (an account that may not
                                DELETE, as the append-only audit one) */
  int poll_timeout_ms;       /* wait for records (and stop); 100 */
} consumer_opts;

/* Defaults, then cfg's kafka section when cfg is not NULL. */
void consumer_opts_init(consumer_opts *o, const shop_cfg *cfg);

/* Counters, for metrics and tests. */
typedef struct consumer_stats {
  int64_t applied;       /* events handed to the handler and committed */
  int64_t duplicates;    /* events skipped as already processed */
  int64_t dead_lettered; /* records sent to the DLT */
  int64_t batches;       /* committed transactions */
  int64_t rejects;       /* handler rejections (each attempt) */
  int64_t transient;     /* transient failures (each rewind) */
  int64_t assigned;      /* partitions assigned now */
} consumer_stats;

typedef struct consumer consumer;

/* create, run/start and destroy are called from one thread (the service's
 * main thread; run blocks it); stop and stats_get from any thread. */

/* Whether a handler status is retried without dead-lettering. */
bool consumer_status_transient(status_code st);

/* Makes the consumer: validates the options, connects to the database
 * (retrying for db->connect_retry_ms) and creates the Kafka consumer (no
 * subscription yet). The options, the strings and the db params are
 * copied; handler_arg, committed_arg and relay are borrowed and must
 * outlive the consumer. On success *out owns it. */
status_code consumer_create(consumer **out, const consumer_opts *o, char *errbuf, size_t errlen);

/* Subscribes and runs the loop on the calling thread until consumer_stop,
 * then closes the Kafka consumer (final offset commit, leaves the group).
 * Call at most once per consumer (consumer_start calls it). Returns OK
 * after a stop, or the reason it could not run. */
status_code consumer_run(consumer *c, char *errbuf, size_t errlen);

/* Runs consumer_run on a new thread. */
status_code consumer_start(consumer *c, char *errbuf, size_t errlen);

/* Asks the loop to end after the batch in hand (within poll_timeout_ms
 * when idle). Thread-safe and async-signal-safe (one atomic store). */
void consumer_stop(consumer *c);

/* Copies the counters; thread-safe. */
void consumer_stats_get(consumer *c, consumer_stats *out);

/* Stops and joins a started consumer, then frees everything; NULL is fine.
 * Not from the consumer's own thread. */
void consumer_destroy(consumer *c);

/* The lag of each assigned partition: the high watermark librdkafka last
 * saw minus the consumer's position (the offset after the last record
 * handed out; before the first one, the group's committed offset, or the
 * log start when it has none). Partitions whose high watermark is not
 * known yet are left out. cb runs on the calling thread, which may be any;
 * the committed offsets are asked from the broker (up to timeout_ms). */
typedef void (*consumer_lag_cb)(const char *topic, int32_t partition, int64_t lag, void *arg);
void consumer_lag_foreach(consumer *c, int timeout_ms, consumer_lag_cb cb, void *arg);

#endif
