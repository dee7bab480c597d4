/*
 * outbox: how every Shop process publishes events (DESIGN.md, "Events on
 * Kafka"): the state change and its event rows commit in one MariaDB
 * transaction, and a relay thread publishes the rows afterwards.
 *
 * A command handler:
 *
 *   db_begin(tx) ... change the aggregate (row locked, version checked) ...
 *   outbox_emit(&sink, tx, &cause, id, version, &event.base, ...);  // same transaction
 *   db_commit(tx);
 *   outbox_relay_nudge(ctx->relay);                    // low latency
 *
 * (or the same through an outbox_sink, which domain tests can fake).
 *
 * The relay (one thread per process; one active per database):
 *   - takes the named lock GET_LOCK('shop.outbox.<database>') on its own
 *     connection; other instances wait on it and take over when the holder
 *     dies or its connection drops (then re-send what was unsent);
 *   - reads unsent rows in id order and produces them with an idempotent
 *     producer (acks=all, murmur2_random, message.timeout.ms=0: no message
 *     ever times out, so a broker outage of any length is waited out);
 *   - marks a row sent only from its delivery report (batched UPDATEs);
 *   - on a fatal producer error (librdkafka's idempotence state broke, seen
 *     after long outages) or any other failed delivery, destroys the
 *     producer, makes a new one and re-sends every unsent row from the
 *     oldest, so per-key order holds (at the price of duplicates, which
 *     the consumers' inbox drops);
 *   - parks a row only on a permanent error (too large for the broker,
 *     unknown topic after provisioning, not authorised): state 2 with the
 *     error text in outbox.error; outbox_unpark() puts parked rows back.
 *     librdkafka declares a topic unknown only after the broker has said so
 *     for topic.metadata.propagation.max.ms (30 s), so a topic created late
 *     at start-up is waited for, not parked;
 *   - wakes on outbox_relay_nudge() or every poll_interval_ms;
 *   - deletes sent rows older than the retention period.
 *
 * Delivery is at-least-once: a crash between the broker's ack and the
 * UPDATE re-sends the row with the same event id.
 *
 * Order: rows are published in id order. Rows of one key (one aggregate)
 * are written by transactions that lock that aggregate's row, so their ids
 * follow their commit order. A transaction that commits after a higher id
 * was already published (another aggregate's) leaves a gap the relay
 * watches for and publishes as soon as it commits; a periodic sweep catches
 * anything else. Parked rows do not hold back later rows of their key.
 */
#ifndef SHOP_EVENTS_OUTBOX_H
#define SHOP_EVENTS_OUTBOX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "db/db.h"
#include "events/events.h"
#include "status/status.h"

typedef struct outbox_relay outbox_relay;

/*
 * Appends ev to the outbox inside the caller's open transaction on tx (the
 * caller owns the transaction; nothing is committed here): the row is sent
 * with the commit, every row of the transaction in as few statements as
 * possible (db_insert_later). ev is borrowed for the call. Fills in what
 * the envelope leaves empty: the id (a new UUIDv7) and the time (now); the
 * envelope itself is not changed. id_out (may be NULL) receives the id
 * that was generated; it is left alone when ev->id was set. Errors: FAILED_PRECONDITION when tx has
 * no open transaction, INVALID_ARGUMENT for an envelope that cannot be published (see
 * events_envelope_validate), or the database's status (the transaction is
 * then the caller's to roll back).
 * Thread: the thread that owns tx.
 */
status_code outbox_append(db_conn *tx, const events_envelope *ev, char id_out[EVENTS_ID_SIZE],
                          char *errbuf, size_t errlen);

/*
 * The event bus as domain code sees it (CONVENTIONS: infrastructure behind
 * a small function-pointer table): append in the caller's transaction,
 * then say the transaction committed. outbox_sink_of() gives the real one;
 * a domain test may pass a fake that records the envelopes. program names
 * the emitter (ce_source "/shop/<program>", and the actor of what no user
 * did).
 */
typedef struct outbox_sink {
  /* outbox_append(tx, ev, NULL, errbuf, errlen) for the real sink. */
  status_code (*append_cb)(void *self, db_conn *tx, const events_envelope *ev, char *errbuf,
                           size_t errlen);
  /* After the caller's commit: outbox_relay_nudge for the real sink. */
  void (*committed_cb)(void *self);
  void *self;
  const char *program;
} outbox_sink;

/* The real sink of program, nudging relay (may be NULL: the relay then
 * finds the rows within its poll interval). program is borrowed. */
outbox_sink outbox_sink_of(outbox_relay *relay, const char *program);

/* What caused an event: who acted, the correlation it carries on and the
 * trace it continues. Strings are borrowed; NULL reads as "". There are
 * two ways to make one: command_cause() (internal/command) for an event
 * caused by a call, outbox_cause_of_event() for an event caused by an
 * event. */
typedef struct outbox_cause {
  const char *actor;          /* ce_actor; NULL or "": the program */
  const char *correlation_id; /* ce_correlationid */
  const char *traceparent;    /* "": the current log scope's (log.h) */
} outbox_cause;

/* The cause an event handled by a consumer (or a timer acting for it)
 * hands on: actor the program, cause's correlation id (its own id when it
 * has none), its traceparent. cause may be NULL (a timer): all empty. */
outbox_cause outbox_cause_of_event(const events_envelope *cause);

/* Emits m for aggregate_id at version (ce_sequence) through sink, in the
 * caller's open transaction tx: ce_type is m's full name and the topic
 * follows from its package (topology_topic_of_type), ce_subject and the
 * key are aggregate_id. The one way Shop's code builds an outgoing event.
 * INVALID_ARGUMENT when m's package has no domain topic. */
status_code outbox_emit(const outbox_sink *sink, db_conn *tx, const outbox_cause *cause,
                        const char *aggregate_id, int64_t version, const ProtobufCMessage *m,
                        char *errbuf, size_t errlen);

/* The number of unsent rows (the backlog, for metrics) and, if parked is
 * not NULL, of parked ones. Any connection to the service's database. */
status_code outbox_backlog(db_conn *c, int64_t *unsent, int64_t *parked, char *errbuf,
                           size_t errlen);

/* The age in milliseconds of the oldest unsent row (0 when there is none),
 * for metrics. Any connection to the service's database. */
status_code outbox_oldest_unsent_age_ms(db_conn *c, int64_t *age_ms, char *errbuf, size_t errlen);

/* Puts every parked row back to unsent (after the topic was created, for
 * instance). *count (may be NULL) is how many. */
status_code outbox_unpark(db_conn *c, int64_t *count, char *errbuf, size_t errlen);

/* Deletes sent rows older than retention_s, in chunks. The relay calls it
 * every purge_interval_ms; exposed for tools and tests. */
status_code outbox_purge(db_conn *c, int retention_s, int64_t *deleted, char *errbuf,
                         size_t errlen);

/* --- The relay ---------------------------------------------------------- */

/* create, start, stop and destroy are called from one thread (the
 * service's main thread); nudge and stats_get from any. */

typedef struct outbox_relay_opts {
  const char *brokers;        /* bootstrap servers */
  const db_params *db;        /* the relay's own connection (copied) */
  const char *client_id;      /* librdkafka client.id; NULL: "shop-outbox-relay" */
  int poll_interval_ms;       /* look for rows at least this often; default 200 */
  int batch_size;             /* rows per SELECT; default 500 */
  int max_in_flight;          /* rows produced and not yet marked; default 10000 */
  int linger_ms;              /* producer linger.ms; default 5 */
  int retention_s;            /* keep sent rows this long; default 7 days */
  int purge_interval_ms;      /* how often to purge; default 60000 */
  int gap_timeout_ms;         /* how long an id gap may be a late commit; default 10000 */
  int sweep_interval_ms;      /* full look for missed rows; default 5000 */
  int stop_grace_ms;          /* at stop, wait this long for acks; default 5000 */
  int statistics_interval_ms; /* librdkafka statistics; 0 (default): off */
} outbox_relay_opts;

/* Sets every field to its default, then takes brokers, retention and the
 * statistics interval from cfg's kafka section when cfg is not NULL. db
 * stays NULL. */
void outbox_relay_opts_init(outbox_relay_opts *o, const shop_cfg *cfg);

/* What a relay has done, for metrics and tests. */
typedef struct outbox_relay_stats {
  bool active;               /* holds the lock */
  int64_t produced;          /* records handed to the producer (re-sends count) */
  int64_t sent;              /* rows marked sent */
  int64_t parked;            /* rows parked */
  int64_t rebuilds;          /* producers replaced after a fatal or failed delivery */
  events_kafka_totals kafka; /* the producer's, over its rebuilds */
  int64_t in_flight;         /* produced, not yet marked */
  int64_t takeovers;         /* times this relay took the lock */
} outbox_relay_stats;

/* Makes a relay (no thread yet, no connection yet). The options, their
 * strings and the db params are copied. Errors: INVALID_ARGUMENT for bad
 * options. On success *out owns the relay. */
status_code outbox_relay_create(outbox_relay **out, const outbox_relay_opts *o, char *errbuf,
                                size_t errlen);

/* Starts the relay thread. It connects to the database (retrying while the
 * database is down), waits for the lock, then publishes until stopped.
 * Call once. */
status_code outbox_relay_start(outbox_relay *r, char *errbuf, size_t errlen);

/* Wakes the relay now: call after committing a transaction that appended
 * rows. Thread-safe and async-signal-safe (one write to a pipe); never
 * blocks. r may be NULL (nothing happens). */
void outbox_relay_nudge(outbox_relay *r);

/* Copies the counters; thread-safe. */
void outbox_relay_stats_get(outbox_relay *r, outbox_relay_stats *out);

/* Stops the thread: waits up to stop_grace_ms for outstanding acks, marks
 * them, destroys the producer, releases the lock, joins. Safe to call
 * twice, or on a relay never started. Thread: not the relay's own. */
void outbox_relay_stop(outbox_relay *r);

/* Stops (if needed) and frees; NULL is fine. */
void outbox_relay_destroy(outbox_relay *r);

#endif
