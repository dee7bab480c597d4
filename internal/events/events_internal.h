/* Helpers shared by the .c files of internal/events; not part of the
 * module's contract. No librdkafka here (see kafka_internal.h). */
#ifndef SHOP_EVENTS_INTERNAL_H
#define SHOP_EVENTS_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

/* sodium_init() once per process. */
void events_sodium_ready(void);

/* 1..EVENTS_ID_MAX printable ASCII characters (no space). */
bool events_id_ok(const char *id, size_t len);

/* A legal Kafka topic name. */
bool events_topic_ok(const char *topic);

/* Monotonic clock in ms / ns, and a sleep that resumes after EINTR. */
int64_t events_now_ms(void);
int64_t events_now_ns(void);
void events_sleep_ms(int64_t ms);

#endif
