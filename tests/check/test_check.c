/* The domain services' shared checks, without sockets or a database. */
#include <criterion/criterion.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "consistency/consistency.h"

Test(check_text, counts_characters_not_bytes) {
  cr_assert_eq(check_utf8_chars("abc"), 3);
  cr_assert_eq(check_utf8_chars("Zo\xc3\xab"), 3);
  cr_assert_eq(check_utf8_chars("\xf0\x9f\x98\x80"), 1);
  cr_assert_null(check_text("\xc3\xa4\xc3\xa4", 1, 2, 0));
  cr_assert_not_null(check_text("\xc3\xa4\xc3\xa4\xc3\xa4", 1, 2, 0));
}

Test(check_text, refuses_invalid_utf8) {
  const char *bad[] = {"\xff",      "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                       "ok\xe2\x82"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(check_utf8_chars(bad[i]), -1, "case %zu", i);
    cr_assert_not_null(check_text(bad[i], 0, 100, 0));
  }
}

Test(check_text, control_characters_only_as_line_breaks_when_allowed) {
  cr_assert_not_null(check_text("a\nb", 0, 10, 0));
  cr_assert_null(check_text("a\nb\tc\r\n", 0, 10, CHECK_TEXT_MULTILINE));
  cr_assert_not_null(
      check_text("a\x01"
                 "b",
                 0, 10, CHECK_TEXT_MULTILINE));
  cr_assert_not_null(check_text("a\x7f", 0, 10, CHECK_TEXT_MULTILINE));
  cr_assert_not_null(check_text("a\xc2\x85", 0, 10, CHECK_TEXT_MULTILINE), "C1 controls too");
}

Test(check_text, bounds) {
  cr_assert_str_eq(check_text("", 1, 10, 0), "must not be empty");
  cr_assert_null(check_text("", 0, 10, 0));
  cr_assert_null(check_text(NULL, 0, 10, 0));
  cr_assert_str_eq(check_text("abcdef", 1, 5, 0), "must be at most 5 characters");
  cr_assert_str_eq(check_text("ab", 3, 5, 0), "must be at least 3 characters");
}

Test(check_id, is_a_canonical_lower_case_uuid) {
  cr_assert(check_id("0190c3c2-7e4a-7b3c-8f00-1234567890ab"));
  cr_assert_not(check_id("0190C3C2-7E4A-7B3C-8F00-1234567890AB"));
  cr_assert_not(check_id("0190c3c27e4a7b3c8f001234567890ab"));
  cr_assert_not(check_id("0190c3c2-7e4a-7b3c-8f00-1234567890a"));
  cr_assert_not(check_id("' OR 1=1 --"));
  cr_assert_not(check_id(NULL));
}

Test(db_like, wildcards_in_the_text_match_themselves) {
  char out[64];
  db_like_pattern("100%_off!", out, sizeof out);
  cr_assert_str_eq(out, "%100!%!_off!!%");
  db_like_pattern("", out, sizeof out);
  cr_assert_str_eq(out, "%%");
}

Test(clock, milliseconds_to_timestamp) {
  Shop__Common__V1__Timestamp t;
  clock_timestamp_set(&t, 1700000000123LL);
  cr_assert_eq(t.seconds, 1700000000);
  cr_assert_eq(t.nanos, 123000000);
  cr_assert_gt(clock_now_ms(), 1700000000000LL);
}

static consumer_msg notify_msg(events_envelope *e, const char *topic, const char *id, int64_t seq) {
  shop__events__v1__event_envelope__init(e);
  e->subject = (char *)id;
  e->sequence = seq;
  return (consumer_msg){.env = e, .topic = topic};
}

Test(consistency_notifier, keeps_the_newest_version_of_each_aggregate_of_its_topic) {
  consistency_notifier n;
  consistency_notifier_init(&n);
  const char *a = "0190c3c2-7e4a-7b3c-8f00-1234567890aa",
             *b = "0190c3c2-7e4a-7b3c-8f00-1234567890bb";
  events_envelope e[4];
  consumer_msg m[4] = {notify_msg(&e[0], "shop.order.events.v1", a, 2),
                       notify_msg(&e[1], "shop.payment.events.v1", a, 9),
                       notify_msg(&e[2], "shop.order.events.v1", a, 1),
                       notify_msg(&e[3], "shop.order.events.v1", b, 5)};
  consistency_notifier_committed(&n, m, 4, "shop.order.events.v1");
  cr_assert_eq(consistency_notifier_version(&n, a), 2,
               "an older event does not lower it, another "
               "topic's does not count");
  cr_assert_eq(consistency_notifier_version(&n, b), 5);
  cr_assert_eq(consistency_notifier_version(&n, "0190c3c2-7e4a-7b3c-8f00-1234567890cc"), 0);
  consistency_notifier_committed(&n, m + 1, 1, NULL);
  cr_assert_eq(consistency_notifier_version(&n, a), 9, "no topic: every event counts");
  consistency_notifier_destroy(&n);
}
