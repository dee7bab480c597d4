/*
 * events_tail: follows one topic from now on, for a cache that must hear of
 * every change after it started (order-command's catalog, order/catalog.c).
 *
 *   events_tail *t;
 *   events_tail_start(&t, &(events_tail_opts){.brokers = b, .client_id = "order-command",
 *                     .topic = TOPOLOGY_TOPIC_PRODUCT, .cb = changed_cb,
 *                     .ready_cb = following_cb, .arg = cache}, err, sizeof err);
 *   ...
 *   events_tail_stop(t);
 *
 * A thread of its own assigns every partition of the topic (no consumer
 * group: nothing is committed, every instance reads everything), each from
 * the high watermark it had when the tail asked, and calls cb for every
 * record after it, in partition order. ready_cb is called once, when
 * those offsets are known and assigned: from then on no record published
 * afterwards is missed (a partition whose offset falls out of range is read
 * again from its start: more calls, never fewer). Until then, and while the
 * brokers do not answer, the thread keeps asking (every retry_ms). A
 * reader that cannot be sure it heard of a change must not trust what it
 * holds: cb is called on the tail's thread and must not block for long.
 */
#ifndef SHOP_EVENTS_TAIL_H
#define SHOP_EVENTS_TAIL_H

#include <stdbool.h>
#include <stddef.h>

#include "events/events.h"
#include "status/status.h"

typedef struct events_tail events_tail;
typedef void (*events_tail_cb)(const events_record *rec, void *arg);

typedef struct events_tail_opts {
  const char *brokers;
  const char *client_id; /* may be NULL */
  const char *topic;
  events_tail_cb cb;
  void (*ready_cb)(void *arg); /* may be NULL */
  void *arg;
  int retry_ms; /* 0: 1000 */
} events_tail_opts;

/* Starts the thread; the options' strings are copied. INVALID_ARGUMENT for a
 * missing field, INTERNAL when librdkafka refuses its configuration. */
status_code events_tail_start(events_tail **out, const events_tail_opts *o, char *errbuf,
                              size_t errlen);
/* Stops the thread and frees t; NULL is fine. */
void events_tail_stop(events_tail *t);

#endif
