/* Time as Shop stores it. See clock.h. */
#include "clock/clock.h"

#include <time.h>

int64_t clock_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void clock_timestamp_set(Shop__Common__V1__Timestamp *t, int64_t ms) {
  shop__common__v1__timestamp__init(t);
  t->seconds = ms / 1000;
  t->nanos = (int32_t)(ms % 1000) * 1000000;
}

int64_t clock_now(const shop_clock *c) {
  return c != NULL && c->now_ms_cb != NULL ? c->now_ms_cb(c->self) : clock_now_ms();
}
