/* The bounded wait of wait.h. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdatomic.h>

#include "support/wait.h"

static int looks;
static bool count_look(bool result) {
  looks++;
  return result;
}

Test(wait, a_condition_already_true_is_looked_at_once) {
  bool ok = false;
  looks = 0;
  WAIT_FOR(ok, count_look(true), 1000);
  cr_assert(ok);
  cr_assert_eq(looks, 1);
}

Test(wait, a_condition_never_true_is_false_after_the_bound_and_looked_at_once_past_it) {
  bool ok = true;
  looks = 0;
  int64_t t0 = wait_now_ms();
  int64_t last_look = 0;
  WAIT_FOR(ok, (last_look = wait_now_ms(), count_look(false)), 300);
  cr_assert_not(ok);
  cr_assert_geq(last_look - t0, 300, "the last look is at or after the bound");
  /* 1, 2, 4, ... 64, then WAIT_POLL_MAX_MS: a handful of looks, not a spin. */
  cr_assert_geq(looks, 3);
  cr_assert_leq(looks, 20, "%d looks in 300 ms", looks);
}

typedef struct later {
  atomic_bool flag;
  int after_ms;
  pthread_t t;
} later;

static void *set_later(void *arg) {
  later *l = arg;
  wait_sleep_ms(l->after_ms);
  atomic_store(&l->flag, true);
  return NULL;
}

Test(wait, a_condition_that_becomes_true_ends_the_wait_soon_after) {
  later l = {.after_ms = 200};
  pthread_create(&l.t, NULL, set_later, &l);
  int64_t t0 = wait_now_ms();
  WAIT_UNTIL(atomic_load(&l.flag), 10000, "the flag set by the thread");
  int64_t took = wait_now_ms() - t0;
  pthread_join(l.t, NULL);
  cr_assert_geq(took, 200);
  cr_assert_lt(took, 200 + 5000, "ended by the condition, not by the 10 s bound (%lld ms)",
               (long long)took);
}

Test(wait, abstime_is_ms_from_now_on_the_realtime_clock) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  struct timespec t = wait_abstime(1500);
  int64_t d = ((int64_t)t.tv_sec - now.tv_sec) * 1000 + (t.tv_nsec - now.tv_nsec) / 1000000;
  cr_assert_geq(d, 1500);
  cr_assert_lt(d, 1600);
  cr_assert_lt(t.tv_nsec, 1000000000L);
}

Test(wait, a_paced_wait_looks_less_often) {
  bool ok = true;
  looks = 0;
  WAIT_FOR_PACED(ok, count_look(false), 1500, 1000);
  cr_assert_not(ok);
  /* 1 + 2 + ... + 512 ms is about 1 s in 11 looks, then one of 1000 ms. */
  cr_assert_leq(looks, 14, "%d looks", looks);
}
