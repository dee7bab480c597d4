/* Bounded waits for the tests. See wait.h. */
#include "support/wait.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>

int64_t wait_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void wait_sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {.tv_sec = (time_t)(ms / 1000), .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

struct timespec wait_abstime(int64_t ms) {
  struct timespec t;
  clock_gettime(CLOCK_REALTIME, &t);
  int64_t ns = t.tv_nsec + (ms > 0 ? ms : 0) % 1000 * 1000000;
  t.tv_sec += (time_t)((ms > 0 ? ms : 0) / 1000 + ns / 1000000000);
  t.tv_nsec = (long)(ns % 1000000000);
  return t;
}

void wait_start(wait_clock *w, int64_t timeout_ms) {
  wait_start_paced(w, timeout_ms, WAIT_POLL_MAX_MS);
}

void wait_start_paced(wait_clock *w, int64_t timeout_ms, int64_t pause_max_ms) {
  w->until = wait_now_ms() + timeout_ms;
  w->pause_ms = 1;
  w->pause_max_ms = pause_max_ms > 0 ? pause_max_ms : WAIT_POLL_MAX_MS;
}

bool wait_next(wait_clock *w) {
  int64_t left = w->until - wait_now_ms();
  if (left <= 0) return false;
  /* Short pauses first, so that a condition that is nearly true costs
   * little; longer ones later, so that a slow one is not hammered. */
  wait_sleep_ms(w->pause_ms < left ? w->pause_ms : left);
  w->pause_ms = w->pause_ms * 2 < w->pause_max_ms ? w->pause_ms * 2 : w->pause_max_ms;
  return true;
}

void wait_format(char *out, size_t len, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out, len, fmt, ap);
  va_end(ap);
}
