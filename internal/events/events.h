/*
 * events: Shop's event backbone on Kafka. This header holds what every part
 * shares: event ids, the envelope <-> Kafka record mapping, the schema
 * migrations, topic administration and the dead-letter tools. The other
 * headers of the module are
 *
 *   events/outbox.h      publishing: outbox_append() in the caller's
 *                        transaction, and the relay thread that sends the
 *                        rows with an idempotent producer;
 *   events/consumer.h    consuming: a consumer group whose handler runs in a
 *                        MariaDB transaction with an inbox, dead letters;
 *   events/projection.h  read models: last applied version per row, version
 *                        gaps held in a pending table.
 *
 * Domain code includes these headers and never rdkafka.h or mysql.h:
 * librdkafka stays inside internal/events.
 *
 * The record (CloudEvents binary mode, DESIGN.md "Events on Kafka"):
 *   key    = envelope.key (the aggregate id: order id, product id, user id)
 *   value  = envelope.data (the typed event's protobuf bytes)
 *   headers:
 *     ce_specversion    "1.0"                                 always
 *     ce_id             envelope.id (UUIDv7, 36 chars)        always
 *     ce_source         envelope.source                       always
 *     ce_type           envelope.type (protobuf full name)    always
 *     ce_subject        envelope.subject                      when not empty
 *     ce_time           RFC 3339 UTC with milliseconds,
 *                       "2026-11-25T12:00:00.123Z"            when set
 *     ce_sequence       envelope.sequence, decimal            when not 0
 *     ce_correlationid  envelope.correlation_id               when not empty
 *     ce_actor          envelope.actor                        when not empty
 *     content-type      "application/protobuf"                always
 *     traceparent       envelope.traceparent                  when not empty
 * CloudEvents wants optional attributes left out rather than empty, and a
 * decoder reads a missing one as empty (0 for the sequence, no time).
 *
 * Thread-safety: every function in this header may be called from any
 * thread; none keeps state between calls except events_uuid_v7 (per
 * thread, see there).
 */
#ifndef SHOP_EVENTS_H
#define SHOP_EVENTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "log/log.h"
#include "shop/events/v1/envelope.pb-c.h"
#include "status/status.h"

/* The envelope type, short. */
typedef Shop__Events__V1__EventEnvelope events_envelope;
typedef Shop__Common__V1__Timestamp events_timestamp;

/* Bytes for an event id: 36 characters and the NUL. */
#define EVENTS_ID_SIZE 37
/* Longest event id a decoder accepts (ids made elsewhere may be longer
 * than ours, but they are stored in VARCHAR(64) columns). */
#define EVENTS_ID_MAX 64
/* Bytes for a ce_time text ("2026-11-25T12:00:00.123Z" and the NUL). */
#define EVENTS_TIME_SIZE 32

/* --- Event ids and times ----------------------------------------------- */

/*
 * Writes a new UUIDv7 (RFC 9562) in canonical form, 36 lower-case
 * characters and a NUL: 48 bits of Unix milliseconds, version 7, a 12-bit
 * counter, variant 10, 62 random bits (libsodium). Ids made by one thread
 * strictly increase, also within one millisecond (the counter; when it
 * runs out the id borrows the next millisecond); across threads and
 * processes they are ordered by millisecond. The per-thread counter is the
 * one piece of thread-local state here.
 */
void events_uuid_v7(char out[EVENTS_ID_SIZE]);

/* The event's time (ce_time) in Unix milliseconds; 0 when it has none. */
int64_t events_time_ms(const events_envelope *ev);

/* Sets ts to the current UTC time (CLOCK_REALTIME). */
void events_now(events_timestamp *ts);

/* Formats seconds + nanos as RFC 3339 UTC with milliseconds (nanos are
 * truncated to ms). Returns false if the time is out of the years
 * 0001..9999. */
bool events_time_format(int64_t seconds, int32_t nanos, char out[EVENTS_TIME_SIZE]);

/* Parses an RFC 3339 time ("...T...Z" or with a +hh:mm / -hh:mm offset,
 * 0-9 fraction digits). text need not be NUL-terminated. Returns false when
 * it is not one. */
bool events_time_parse(const char *text, size_t len, int64_t *seconds, int32_t *nanos);

/* --- Envelope <-> Kafka record ------------------------------------------ */

/* One record header, borrowed. */
typedef struct events_header {
  const char *name;
  const void *value;
  size_t len;
} events_header;

/* A Kafka record as plain data, every pointer borrowed. partition and
 * offset are -1 when not known (a record about to be produced). */
typedef struct events_record {
  const char *topic;
  int32_t partition;
  int64_t offset;
  int64_t timestamp_ms;
  const void *key;
  size_t key_len;
  const void *value;
  size_t value_len;
  const events_header *headers;
  size_t header_count;
} events_record;

/* The CloudEvents headers of one envelope, as events_ce_headers_build()
 * makes them. The header values point into the envelope and into this
 * struct (time, sequence): keep both alive and do not copy the struct. */
#define EVENTS_CE_HEADERS_MAX 11
typedef struct events_ce_headers {
  events_header h[EVENTS_CE_HEADERS_MAX];
  size_t count;
  char time[EVENTS_TIME_SIZE];
  char sequence[24];
} events_ce_headers;

/* Checks that an envelope can be published: id, source, type, topic and
 * key present, the id at most EVENTS_ID_MAX printable ASCII characters,
 * the topic a legal Kafka name, the time (if set) in range.
 * INVALID_ARGUMENT with the reason in errbuf otherwise. */
status_code events_envelope_validate(const events_envelope *ev, char *errbuf, size_t errlen);

/* Fills out with the record headers of ev (see the table above). ev must
 * be valid (events_envelope_validate). */
void events_ce_headers_build(events_ce_headers *out, const events_envelope *ev);

/*
 * Decodes a record into a new envelope: the ce_* headers, the key, the
 * value as data and the record's topic. A record is refused
 * (INVALID_ARGUMENT, the reason in errbuf) when ce_specversion is not
 * "1.0", when ce_id, ce_source or ce_type is missing or empty, when ce_id
 * is longer than EVENTS_ID_MAX or not printable ASCII, when ce_time or
 * ce_sequence does not parse, when content-type is present and not
 * "application/protobuf", or when a header value holds a NUL byte. Such a
 * record is poison: no retry can make it valid.
 *
 * On success *out is a new envelope owned by the caller: free it with
 * events_envelope_free() (or protobuf-c's free_unpacked with a NULL
 * allocator, which is the same).
 */
status_code events_envelope_decode(events_envelope **out, const events_record *rec, char *errbuf,
                                   size_t errlen);

/* Frees an envelope from events_envelope_decode or protobuf-c's unpack;
 * NULL is fine. */
void events_envelope_free(events_envelope *ev);

/* Makes the handling of ev the calling thread's current log scope (log.h):
 * trace id from ev's traceparent, event_id ev's id; events appended inside
 * carry ev's traceparent. ev must outlive the scope; leave it with
 * log_scope_leave(s). The consumer does this around each event; a
 * handler that loops over its batch itself does it too. */
void events_log_scope_enter(log_scope *s, const events_envelope *ev);

/* --- Client statistics -------------------------------------------------- */

/* What librdkafka's statistics (its STATISTICS.md) say about one Kafka
 * client of a consumer or relay: requests sent to the brokers in all (the
 * top-level "tx"), the Fetch and Produce requests among them (summed over
 * the brokers' "req"), and bytes sent and received. Totals since the
 * consumer or relay was made (a rebuilt producer's are kept), as of the
 * last statistics emitted: kafka.statistics_interval_ms apart, all zero
 * when that is 0. */
typedef struct events_kafka_totals {
  int64_t requests, fetches, produces, bytes_sent, bytes_received;
} events_kafka_totals;

/* --- Schema ------------------------------------------------------------- */

/* The module's migrations (component "events"): the outbox, the
 * processed-events inbox, projection versions and pending deltas. Every
 * database of a process that publishes or consumes applies them. */
extern const db_migration events_migrations[];
extern const size_t events_migrations_count;

/* db_migrate(c, "events", events_migrations, ...): run on a connection of
 * the migration account to the service's database. */
status_code events_migrate(db_conn *c, int *applied, char *errbuf, size_t errlen);

/* --- Topics ------------------------------------------------------------- */

/* One topic of events_topics_create: name and partitions in, result out. */
typedef enum events_topic_result {
  EVENTS_TOPIC_FAILED = -1, /* see the status and errbuf */
  EVENTS_TOPIC_ALREADY = 0, /* it existed (its settings are left as they are) */
  EVENTS_TOPIC_DONE = 1,    /* created */
} events_topic_result;
typedef struct events_topic_spec {
  const char *name; /* borrowed */
  int partitions;
  events_topic_result result;
} events_topic_spec;

/* Creates the n topics in one admin request, each with the brokers'
 * default replication factor (default.replication.factor, and their
 * min.insync.replicas), no time- or size-based retention and cleanup.policy=delete,
 * waiting up to timeout_ms. A topic that already exists is success (its
 * settings are left as they are). Each spec's result says what happened to
 * it; the status and errbuf are the first failure's. What shop-admin
 * creates Shop's topics with. */
status_code events_topics_create(const char *brokers, events_topic_spec *topics, size_t n,
                                 int timeout_ms, char *errbuf, size_t errlen);

/* events_topics_create of one topic (tools and tests). */
status_code events_topic_create(const char *brokers, const char *topic, int partitions,
                                int timeout_ms, char *errbuf, size_t errlen);

/* Deletes a topic (tests clean up after themselves). An unknown topic is
 * success. */
status_code events_topic_delete(const char *brokers, const char *topic, int timeout_ms,
                                char *errbuf, size_t errlen);

/* Waits up to timeout_ms for every librdkafka handle of the process to be
 * fully destroyed (their threads gone). Call at the end of main() and of
 * tests, after destroying relays and consumers, so leak checkers see a
 * clean exit. Returns false on timeout. */
bool events_shutdown_wait(int timeout_ms);

/* --- Dead letters -------------------------------------------------------- */

/* Header names a dead letter carries on top of its original headers. */
#define EVENTS_DLT_ORIGINAL_TOPIC "dlt_original_topic"
#define EVENTS_DLT_ORIGINAL_PARTITION "dlt_original_partition"
#define EVENTS_DLT_ORIGINAL_OFFSET "dlt_original_offset"
#define EVENTS_DLT_GROUP "dlt_group"
#define EVENTS_DLT_ERROR "dlt_error"
#define EVENTS_DLT_ATTEMPTS "dlt_attempts"

/* One dead letter, as events_dlt_list() shows it. Every pointer is
 * borrowed for the duration of the callback; strings are NUL-terminated
 * ("" when the header is missing). */
typedef struct events_dlt_entry {
  const char *dlt_topic;
  int32_t dlt_partition;
  int64_t dlt_offset;
  int64_t timestamp_ms; /* when it was dead-lettered */
  const char *original_topic;
  int32_t original_partition;
  int64_t original_offset;
  const char *group;
  const char *error;
  int attempts;
  const char *event_id;   /* ce_id, "" if missing (a poison record) */
  const char *event_type; /* ce_type */
  const void *key;
  size_t key_len;
  const void *value;
  size_t value_len;
  bool replayed; /* an earlier events_dlt_replay (without filter) sent it */
} events_dlt_entry;

/* Returns 0 to go on, non-zero to stop listing. */
typedef int (*events_dlt_entry_cb)(const events_dlt_entry *e, void *arg);

/*
 * Reads every dead letter of topic and group (topic "<topic>.<group>.dlt"),
 * oldest first, and calls cb for each; stops at the end of the topic as it
 * was when the call began, or when cb returns non-zero. Reads the replay
 * position (below) to set `replayed`, and commits nothing. NOT_FOUND when
 * the dead-letter topic does not exist.
 */
status_code events_dlt_list(const char *brokers, const char *topic, const char *group,
                            events_dlt_entry_cb cb, void *arg, int timeout_ms, char *errbuf,
                            size_t errlen);

typedef struct events_dlt_replay_opts {
  /* Replay only the dead letter(s) with this ce_id, wherever they are,
   * and leave the replay position alone. NULL: every dead letter past the
   * replay position, which then moves past them. */
  const char *event_id;
  int timeout_ms; /* for the whole call; 0 means 30000 */
} events_dlt_replay_opts;

/*
 * Re-publishes dead letters of topic and group to the topic each came from
 * (header dlt_original_topic), with their key, value and original headers
 * (every dlt_* header removed), through an idempotent producer, and waits
 * for every delivery. The replay position is kept as the committed offset
 * of the consumer group "<group>.dlt-replay" on the dead-letter topic, so
 * each dead letter is replayed once unless asked for by id. *replayed (may
 * be NULL) is the number re-published. opts may be NULL.
 *
 * A replayed event keeps its ce_id; it was never recorded as processed
 * (the consumer records only what it applied), so the consumer applies it.
 */
status_code events_dlt_replay(const char *brokers, const char *topic, const char *group,
                              const events_dlt_replay_opts *opts, size_t *replayed, char *errbuf,
                              size_t errlen);

/*
 * Sends one dead letter from outside a consumer: the record of ev (its
 * key, data and CloudEvents headers, as the relay publishes it; ev->topic
 * is the topic it was consumed from) on "<ev->topic>.<group>.dlt" with the
 * dead-letter headers above (partition and offset where the group read
 * it), through a producer of its own, waiting up to timeout_ms (0: 30000)
 * for the broker's ack. For a worker that took an event and later gave up
 * on what it meant to do with it (notification-worker's expired
 * messages). UNAVAILABLE when it was not delivered (try again).
 */
status_code events_dlt_send(const char *brokers, const events_envelope *ev, const char *group,
                            int32_t partition, int64_t offset, const char *error, int attempts,
                            int timeout_ms, char *errbuf, size_t errlen);

#endif /* SHOP_EVENTS_H */
