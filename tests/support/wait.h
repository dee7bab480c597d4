/*
 * wait: wait on a condition with a bound, the one way tests/ waits.
 *
 * In a Criterion test, WAIT_UNTIL fails the test when the bound passes, with
 * what it waited for and what it saw last:
 *
 *   WAIT_UNTIL(order_status(id) == CONFIRMED, 30000, "order %s CONFIRMED (last seen %s)", id,
 *              status_name(last));
 *
 * prints, on timeout,
 *
 *   wait: not true after 30000 ms: order 0190... CONFIRMED (last seen PENDING)
 *         [order_status(id) == CONFIRMED]
 *
 * The message (a printf format and its arguments, at least the format) is
 * formatted only on timeout, after the last look, so it shows the state the
 * condition saw last. The condition is evaluated at once, then after pauses
 * that grow from 1 ms to WAIT_POLL_MAX_MS, and one last time at or after the
 * bound; it may have side effects (a query, a call) and may assign what it
 * read to a variable the message prints. A condition that consumes a
 * stream (records, lines) should take all that is there at each look, so
 * that the pauses fall only where nothing came.
 *
 * Code that must not depend on Criterion (the runner side of the stack,
 * faults-load, proc.c) uses WAIT_FOR, which only sets a bool:
 *
 *   bool ok;
 *   WAIT_FOR(ok, proc_alive(p) == false, 5000);
 *
 * A fixed sleep is not a wait: sleep only where the sleep itself is the
 * point (an outage held for its length, a pace), and say so at the call.
 *
 * Thread-safe: no shared state.
 */
#ifndef SHOP_TESTS_WAIT_H
#define SHOP_TESTS_WAIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* The longest pause between two looks at a condition. */
#define WAIT_POLL_MAX_MS 100

/* Milliseconds on the monotonic clock. */
int64_t wait_now_ms(void);
/* Sleeps ms milliseconds (ms <= 0: not at all). For pauses that are the
 * point of the test, not for waiting on something. */
void wait_sleep_ms(int64_t ms);
/* The CLOCK_REALTIME time ms milliseconds from now, for
 * pthread_cond_timedwait. */
struct timespec wait_abstime(int64_t ms);

/* The pacing of one wait; see WAIT_FOR. */
typedef struct wait_clock {
  int64_t until; /* monotonic ms */
  int64_t pause_ms, pause_max_ms;
} wait_clock;

/* Pauses grow from 1 ms to WAIT_POLL_MAX_MS (wait_start) or to
 * pause_max_ms (wait_start_paced, for a condition that costs the system it
 * looks at: a retried command against a crashed program, say). */
void wait_start(wait_clock *w, int64_t timeout_ms);
void wait_start_paced(wait_clock *w, int64_t timeout_ms, int64_t pause_max_ms);
/* False once the bound has passed; else pauses (never past the bound) and
 * returns true, for one more look. */
bool wait_next(wait_clock *w);

/* snprintf, for WAIT_UNTIL's message (a function: a long message is cut,
 * not a compile-time warning). */
void wait_format(char *out, size_t len, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Sets ok to cond, looking again until it holds or timeout_ms passed. */
#define WAIT_FOR(ok, cond, timeout_ms)                                                             \
  do {                                                                                             \
    wait_clock wait_clock_;                                                                        \
    wait_start(&wait_clock_, (timeout_ms));                                                        \
    while (!((ok) = (cond)) && wait_next(&wait_clock_)) {                                          \
    }                                                                                              \
  } while (0)

/* WAIT_FOR with pauses up to pause_max_ms. */
#define WAIT_FOR_PACED(ok, cond, timeout_ms, pause_max_ms)                                         \
  do {                                                                                             \
    wait_clock wait_clock_;                                                                        \
    wait_start_paced(&wait_clock_, (timeout_ms), (pause_max_ms));                                  \
    while (!((ok) = (cond)) && wait_next(&wait_clock_)) {                                          \
    }                                                                                              \
  } while (0)

/* In a Criterion test: waits like WAIT_FOR and fails the test on timeout
 * with the message (printf format and arguments) and the condition's text.
 * The caller includes <criterion/criterion.h>. */
#define WAIT_UNTIL(cond, timeout_ms, ...)                                                          \
  do {                                                                                             \
    bool wait_ok_;                                                                                 \
    WAIT_FOR(wait_ok_, cond, timeout_ms);                                                          \
    if (!wait_ok_) {                                                                               \
      char wait_msg_[2048];                                                                        \
      wait_format(wait_msg_, sizeof wait_msg_, __VA_ARGS__);                                       \
      cr_assert_fail("wait: not true after %lld ms: %s [%s]", (long long)(timeout_ms), wait_msg_,  \
                     #cond);                                                                       \
    }                                                                                              \
  } while (0)

#endif
