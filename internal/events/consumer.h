/*
 * consumer: how every Shop worker and projection consumes events
 * (DESIGN.md, "Events on Kafka"): at least once, with an inbox.
 *
 * A consumer is described by a consumer_spec: its group and the table of
 * the event types it takes, each with the pure check of its decoded
 * message and the function that applies it. The table is the one dispatch:
 * the topics the group subscribes to follow from the types (an event's
 * topic follows from its package, topology.h), an event of a type the
 * table does not hold is skipped before any database work, and each taken
 * event reaches the apply function of its type, decoded and checked.
 *
 *   static const consumer_event_type types[] = {
 *       {&shop__order__v1__order_created__descriptor, created_check, reserve_apply},
 *       {&shop__order__v1__order_cancelled__descriptor, NULL, release_apply},
 *   };
 *   const consumer_spec inventory_consumer = {.group = TOPOLOGY_GROUP_INVENTORY_WORKER,
 *                                             .types = types, .n_types = 2};
 *
 *   consumer_opts o;
 *   consumer_opts_init(&o, cfg, &inventory_consumer);   // brokers, timeouts, retries
 *   o.db = &db_params_of_shop_inventory;
 *   o.arg = &ctx;
 *   o.relay = ctx.relay;                            // nudged after each commit
 *   consumer_create(&c, &o, errbuf, errlen);
 *   consumer_run(c, errbuf, errlen);  // or consumer_start() for a thread
 *   ... on SIGTERM: consumer_stop(c); ... consumer_destroy(c);
 *
 * A spec without a table takes every event of its topics undecoded, as one
 * batch handler (the audit log, which knows no domain; the framework's own
 * tests).
 *
 * For each batch of records polled (up to batch_size, from any of the
 * assigned partitions, in the order the partitions hold them; under load a
 * batch is whatever arrived while the previous one committed):
 *
 *   1. Records that do not decode (events_envelope_decode: no ce_id, no
 *      ce_type, ...) are poison: they go straight to the dead-letter topic
 *      (dlt_attempts "0"). So do events of a taken type whose data does
 *      not decode or whose check refuses them: no retry can change a pure
 *      check. Events of types the table does not take are done at once:
 *      no database round trip.
 *   2. One transaction: the event ids already in processed_events for
 *      this group are skipped (the handler never sees them), the new ids
 *      are inserted (one multi-row statement), each new event is applied
 *      (lower `pass` first, else in batch order; it may append outbox
 *      rows in the same transaction), commit.
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
  const events_envelope *env;  /* decoded; env->data is the record's value */
  const ProtobufCMessage *msg; /* env->data decoded as its type (table mode); NULL otherwise */
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t timestamp_ms; /* the record's timestamp */
} consumer_msg;

/* The distinct values of the string field `field` of the batch's decoded
 * messages (of type only, or of any type that has the field when only is
 * NULL), 1..max_len bytes long, into keys (room for n; borrowed from
 * msgs); returns how many. A prepare hook collects what its batch names
 * with it and reads those rows at once (db_query_keys). */
size_t consumer_batch_keys(const consumer_msg *msgs, size_t n,
                           const ProtobufCMessageDescriptor *only, const char *field,
                           size_t max_len, const char **keys);

/* Applies n >= 1 events (in partition order) inside the open transaction
 * on tx. Must not commit or roll back. Returns OK, a transient status or a
 * rejection (see above), with a reason in errbuf. Runs on the consumer's
 * thread. */
typedef status_code (*consumer_handler_cb)(db_conn *tx, const consumer_msg *msgs, size_t n,
                                           void *arg, char *errbuf, size_t errlen);

/* Applies one decoded and checked event (m->msg is its message) inside the
 * open transaction on tx; the same contract as consumer_handler_cb. The
 * event is the thread's current log scope while it runs. */
typedef status_code (*consumer_apply_cb)(db_conn *tx, const consumer_msg *m, void *arg,
                                         char *errbuf, size_t errlen);

/* One event type a consumer takes: the pure check of its decoded message
 * that runs before any database work (NULL: none; it returns NULL when the
 * event is usable, else why not), and the function that applies it. */
typedef struct consumer_event_type {
  const ProtobufCMessageDescriptor *desc;
  const char *(*check)(const ProtobufCMessage *m, const events_envelope *ev);
  consumer_apply_cb apply;
  int pass; /* within one batch, events of a lower pass are applied first */
} consumer_event_type;

/*
 * Decodes ev as the one of types whose full name is its ce_type, and runs
 * that type's check: the framework's decode and checks before the
 * database, pure (tests/fuzz runs every consumer's table through it).
 * Returns
 *   - OK with *out NULL: a type the consumer does not take (skip it);
 *   - OK with *out the message (free with protobuf_c_message_free_unpacked)
 *     and *which its index in types;
 *   - INVALID_ARGUMENT when the data does not decode or the check refuses
 *     it, with the reason in errbuf.
 */
status_code consumer_event_decode(const events_envelope *ev, const consumer_event_type *types,
                                  size_t n, ProtobufCMessage **out, size_t *which, char *errbuf,
                                  size_t errlen);

/* Called after a transaction with n >= 1 newly applied events committed
 * (for waiters and metrics); on the consumer's thread; must not block. */
typedef void (*consumer_committed_cb)(const consumer_msg *msgs, size_t n, void *arg);

/* Called on the consumer's thread after each transaction of the consumer
 * ended (committed or rolled back), with its connection (no transaction
 * open; it may run statements): the audit log releases its chain lock
 * here. Must not fail. */
typedef void (*consumer_ended_cb)(db_conn *db, void *arg);

/* Called in each transaction of the consumer after its events were
 * applied and before the commit, with the transaction's connection: what
 * the events did outside the database is made durable here (payment's
 * gateway answers). A status that is not OK rolls the transaction back
 * as the handler's would. */
typedef status_code (*consumer_before_commit_cb)(db_conn *tx, void *arg, char *errbuf,
                                                 size_t errlen);

/* Called in each transaction of a table consumer before its events are
 * applied, with every event the transaction will apply (decoded: msg is
 * set), so the domain can read what they all need with one statement
 * (the saga locks every order of the batch at once) and keep it for the
 * apply functions; before_commit writes back, ended forgets. A status
 * that is not OK rolls the transaction back as an apply's would. */
typedef status_code (*consumer_prepare_cb)(db_conn *tx, const consumer_msg *msgs, size_t n,
                                           void *arg, char *errbuf, size_t errlen);

/* What a consumer takes and does, written once by its domain. */
typedef struct consumer_spec {
  const char *group;                /* group.id: one of TOPOLOGY_GROUP_* */
  const consumer_event_type *types; /* the table (n_types entries), or NULL: */
  size_t n_types;
  consumer_handler_cb handler; /* every event of `topics`, as batches */
  const char *const *topics;   /* with handler: NULL means every domain topic */
  size_t topic_count;
  consumer_committed_cb committed;         /* may be NULL */
  consumer_prepare_cb prepare;             /* table mode; may be NULL */
  consumer_before_commit_cb before_commit; /* may be NULL */
  consumer_ended_cb ended;                 /* may be NULL */
} consumer_spec;

/* The topics a spec subscribes to: the distinct topics of its types, in
 * table order (or its handler's topics). Writes at most max pointers to
 * static topic names into out; returns how many there are, or 0 when a
 * type has no domain topic. */
size_t consumer_spec_topics(const consumer_spec *spec, const char **out, size_t max);

/* Applies msgs (their env only) as the consumer of spec would, inside the
 * open transaction tx, without Kafka and without the inbox: a table's
 * types are decoded and checked (a refused event is INVALID_ARGUMENT),
 * types it does not take skipped, the rest prepared and applied pass by
 * pass; a handler gets them all; then the spec's before_commit runs (the
 * caller commits, and calls ended if the spec has one). For rebuilding a
 * read model from a log of events. */
status_code consumer_spec_apply(db_conn *tx, const consumer_spec *spec, const consumer_msg *msgs,
                                size_t n, void *arg, char *errbuf, size_t errlen);

typedef struct consumer_opts {
  const char *brokers;
  const char *group;         /* group.id: one of TOPOLOGY_GROUP_* */
  const char *const *topics; /* NULL: from the types (or every domain topic) */
  size_t topic_count;
  const char *client_id;            /* NULL: the group */
  const db_params *db;              /* the consumer's own connection (copied) */
  const consumer_event_type *types; /* table mode (n_types), or */
  size_t n_types;
  consumer_handler_cb handler;     /* a batch handler; one of the two is required */
  void *handler_arg;               /* the apply functions' and the handler's arg */
  consumer_committed_cb committed; /* may be NULL */
  void *committed_arg;
  consumer_prepare_cb prepare;             /* table mode; may be NULL; gets handler_arg */
  consumer_before_commit_cb before_commit; /* may be NULL; gets handler_arg */
  consumer_ended_cb ended;                 /* may be NULL; gets handler_arg */
  outbox_relay *relay;                     /* nudged after each commit; may be NULL */
  int batch_size;                          /* events per transaction at most; default 256 */
  int fetch_wait_max_ms;                   /* the broker holds a fetch this long for ... */
  int fetch_min_bytes;                     /* ... this many bytes; defaults 100 ms, 1 */
  int statistics_interval_ms;              /* librdkafka statistics; 0: off */
  int max_retries;                         /* handler attempts alone before the DLT; 5 */
  int retry_backoff_ms;                    /* first backoff; doubles up to 10x; 200 */
  int session_timeout_ms;                  /* default 45000 (tests use ~6000) */
  int heartbeat_ms;                        /* default 3000 (tests use 1000) */
  int processed_retention_s;               /* default 7 days */
  int purge_interval_ms;                   /* default 60000; 0: never (an account that may not
                                              DELETE, as the append-only audit one) */
  int poll_timeout_ms;                     /* wait for records (and stop); 100 */
  int batch_linger_ms; /* after a batch's first record, wait up to this long for more (a
                          batch fills to batch_size or until then); 0 (default): take only
                          what is there */
} consumer_opts;

/* Defaults, then cfg's kafka section when cfg is not NULL, then spec's
 * group, table or handler and committed callback when spec is not NULL. */
void consumer_opts_init(consumer_opts *o, const shop_cfg *cfg, const consumer_spec *spec);

/* Counters, for metrics and tests. */
typedef struct consumer_stats {
  int64_t applied;           /* events handed to the handler and committed */
  int64_t skipped;           /* events of types the consumer does not take */
  int64_t duplicates;        /* events skipped as already processed */
  int64_t dead_lettered;     /* records sent to the DLT */
  int64_t batches;           /* committed transactions */
  int64_t rejects;           /* handler rejections (each attempt) */
  int64_t transient;         /* transient failures (each rewind) */
  int64_t assigned;          /* partitions assigned now */
  events_kafka_totals kafka; /* the consumer's Kafka client */
} consumer_stats;

typedef struct consumer consumer;

/* create, run/start and destroy are called from one thread (the service's
 * main thread; run blocks it); stop and stats_get from any thread. */

/* Forgets, in the open transaction tx, that group applied event_id (its
 * inbox row): the event was dead-lettered after it was applied (a worker
 * gave up on it later, events_dlt_send), so that a replay of the dead
 * letter is applied again rather than skipped as a duplicate. */
status_code consumer_inbox_forget(db_conn *tx, const char *group, const char *event_id,
                                  char *errbuf, size_t errlen);

/* Whether a handler status is retried without dead-lettering. */
bool consumer_status_transient(status_code st);

/* Makes the consumer: validates the options, connects to the database
 * (retrying for db->connect_retry_ms) and creates the Kafka consumer (no
 * subscription yet; consumer_run creates the group's dead-letter topics,
 * then subscribes). The options, the strings and the db params are
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
