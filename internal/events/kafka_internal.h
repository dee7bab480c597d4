/* librdkafka helpers shared by the .c files of internal/events; not part
 * of the module's contract. The only header under internal/ that includes
 * rdkafka.h. */
#ifndef SHOP_EVENTS_KAFKA_INTERNAL_H
#define SHOP_EVENTS_KAFKA_INTERNAL_H

#include <librdkafka/rdkafka.h>

#include "events/events.h"

/* A new configuration with bootstrap.servers, client.id (may be NULL) and
 * librdkafka's log lines routed to Shop's logger. NULL with errbuf set on a
 * bad value. */
rd_kafka_conf_t *events_kafka_conf_new(const char *brokers, const char *client_id, char *errbuf,
                                       size_t errlen);

/* rd_kafka_new of type with conf, which it takes: on failure conf is
 * destroyed, NULL is returned and errbuf says "<prefix>: <librdkafka's
 * reason>", prefix printf-style. */
rd_kafka_t *events_kafka_new(rd_kafka_type_t type, rd_kafka_conf_t *conf, char *errbuf,
                             size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

/* rd_kafka_conf_set; false with errbuf set on error. */
bool events_kafka_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errbuf,
                      size_t errlen);

/* Sets the idempotent producer settings every Shop producer uses:
 * enable.idempotence, acks=all, murmur2_random, max.in.flight 5, retries
 * without end, message.timeout.ms as given (0: never time out). */
bool events_kafka_producer_conf(rd_kafka_conf_t *conf, int message_timeout_ms, int linger_ms,
                                char *errbuf, size_t errlen);

/* The record headers of a valid envelope; the caller owns the result
 * (rd_kafka_headers_destroy, or hand it to producev, which takes it on
 * success). */
rd_kafka_headers_t *events_kafka_headers_from_envelope(const events_envelope *ev);

/* Adds the dead-letter headers (events.h, EVENTS_DLT_*) to h: what a
 * consumer's dead letter and events_dlt_send carry on top of the
 * original headers. */
void events_kafka_dlt_headers_add(rd_kafka_headers_t *h, const char *topic, int32_t partition,
                                  int64_t offset, const char *group, const char *error,
                                  int attempts);

/* A view of a consumed message as an events_record. *headers receives a
 * heap array (free it) pointing into the message, which must outlive the
 * view. Returns false when out of memory. */
bool events_kafka_record_view(const rd_kafka_message_t *m, events_record *rec,
                              events_header **headers);

/* Whether a delivery or produce error can never succeed by retrying the
 * same message (too large, unknown topic, not authorised, invalid). */
bool events_kafka_err_permanent(rd_kafka_resp_err_t err);

/* librdkafka's own error_cb, logging once per kind of error. */
void events_kafka_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque);

/* Reads the committed/low/high offsets needed to read a topic to its end:
 * the number of partitions of topic, or -1 with errbuf set (NOT_FOUND in
 * *st when the topic does not exist). */
int events_kafka_topic_partitions(rd_kafka_t *rk, const char *topic, int timeout_ms,
                                  status_code *st, char *errbuf, size_t errlen);

/* The low and high watermarks of every partition of topic, each asked with
 * timeout_ms: the number of partitions, *lo and *hi heap arrays of as many
 * (free both), or -1 with errbuf and *st set (as above; UNAVAILABLE when a
 * partition's offsets do not come, RESOURCE_EXHAUSTED without memory). */
int events_kafka_watermarks(rd_kafka_t *rk, const char *topic, int timeout_ms, int64_t **lo,
                            int64_t **hi, status_code *st, char *errbuf, size_t errlen);

/* A client's statistics as they arrive (events_kafka_totals): base holds
 * the totals of earlier handles of the same owner, now those of the live
 * one. Written by the stats callback (the thread serving the handle's
 * queue), read by any thread. */
typedef struct events_kafka_counters {
  _Atomic int64_t base[5];
  _Atomic int64_t now[5];
} events_kafka_counters;

/* Turns librdkafka's statistics on, every interval_ms (0: off; nothing is
 * set), calling cb with the handle's opaque; cb hands the JSON to
 * events_kafka_stats_parse. */
bool events_kafka_stats_conf(rd_kafka_conf_t *conf, int interval_ms,
                             int (*cb)(rd_kafka_t *, char *, size_t, void *), char *errbuf,
                             size_t errlen);

/* Reads the totals out of one statistics JSON into c->now; a JSON it
 * cannot read changes nothing. */
void events_kafka_stats_parse(events_kafka_counters *c, const char *json, size_t len);

/* Before a handle is replaced: its totals go into the base. */
void events_kafka_counters_rebase(events_kafka_counters *c);

/* base + now. */
void events_kafka_counters_get(events_kafka_counters *c, events_kafka_totals *out);

#endif
