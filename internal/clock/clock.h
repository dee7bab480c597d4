/*
 * clock: wall-clock time in the form Shop stores it (Unix milliseconds),
 * protobuf Timestamps, and the one seam through which a domain reads the
 * time, so that a test can set it:
 *
 *   typedef struct order_ctx { ... shop_clock clock; } order_ctx;
 *   int64_t now = clock_now(&ctx->clock);   // the real clock unless a test set one
 *
 * Thread-safety: every function may be called from any thread; a
 * shop_clock is read-only after set-up.
 */
#ifndef SHOP_CLOCK_H
#define SHOP_CLOCK_H

#include <stdint.h>

#include "shop/common/v1/common.pb-c.h"

/* Wall-clock time in Unix milliseconds (what the tables store). */
int64_t clock_now_ms(void);

/* Sets a Timestamp from Unix milliseconds. */
void clock_timestamp_set(Shop__Common__V1__Timestamp *t, int64_t ms);

/* A clock a domain reads its time from: now_ms_cb(self), or the real
 * clock when now_ms_cb is NULL (a zeroed shop_clock is the real one). */
typedef struct shop_clock {
  int64_t (*now_ms_cb)(void *self);
  void *self;
} shop_clock;

/* The time of c in Unix milliseconds; c may be NULL (the real clock). */
int64_t clock_now(const shop_clock *c);

#endif
