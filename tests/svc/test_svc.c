/* The domain services' shared checks, without sockets or a database. */
#include <criterion/criterion.h>
#include <string.h>

#include "svc/svc.h"

Test(svc_text, counts_characters_not_bytes) {
  cr_assert_eq(svc_utf8_chars("abc"), 3);
  cr_assert_eq(svc_utf8_chars("Zo\xc3\xab"), 3);
  cr_assert_eq(svc_utf8_chars("\xf0\x9f\x98\x80"), 1);
  cr_assert_null(svc_text_check("\xc3\xa4\xc3\xa4", 1, 2, 0));
  cr_assert_not_null(svc_text_check("\xc3\xa4\xc3\xa4\xc3\xa4", 1, 2, 0));
}

Test(svc_text, refuses_invalid_utf8) {
  const char *bad[] = {"\xff",      "\xc3", "\xc0\xaf", "\xed\xa0\x80", "\xf4\x90\x80\x80",
                       "ok\xe2\x82"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_eq(svc_utf8_chars(bad[i]), -1, "case %zu", i);
    cr_assert_not_null(svc_text_check(bad[i], 0, 100, 0));
  }
}

Test(svc_text, control_characters_only_as_line_breaks_when_allowed) {
  cr_assert_not_null(svc_text_check("a\nb", 0, 10, 0));
  cr_assert_null(svc_text_check("a\nb\tc\r\n", 0, 10, SVC_TEXT_MULTILINE));
  cr_assert_not_null(
      svc_text_check("a\x01"
                     "b",
                     0, 10, SVC_TEXT_MULTILINE));
  cr_assert_not_null(svc_text_check("a\x7f", 0, 10, SVC_TEXT_MULTILINE));
  cr_assert_not_null(svc_text_check("a\xc2\x85", 0, 10, SVC_TEXT_MULTILINE), "C1 controls too");
}

Test(svc_text, bounds) {
  cr_assert_str_eq(svc_text_check("", 1, 10, 0), "must not be empty");
  cr_assert_null(svc_text_check("", 0, 10, 0));
  cr_assert_null(svc_text_check(NULL, 0, 10, 0));
  cr_assert_str_eq(svc_text_check("abcdef", 1, 5, 0), "must be at most 5 characters");
  cr_assert_str_eq(svc_text_check("ab", 3, 5, 0), "must be at least 3 characters");
}

Test(svc_id, is_a_canonical_lower_case_uuid) {
  cr_assert(svc_id_valid("0190c3c2-7e4a-7b3c-8f00-1234567890ab"));
  cr_assert_not(svc_id_valid("0190C3C2-7E4A-7B3C-8F00-1234567890AB"));
  cr_assert_not(svc_id_valid("0190c3c27e4a7b3c8f001234567890ab"));
  cr_assert_not(svc_id_valid("0190c3c2-7e4a-7b3c-8f00-1234567890a"));
  cr_assert_not(svc_id_valid("' OR 1=1 --"));
  cr_assert_not(svc_id_valid(NULL));
}

Test(svc_like, wildcards_in_the_text_match_themselves) {
  char out[64];
  svc_like_pattern("100%_off!", out, sizeof out);
  cr_assert_str_eq(out, "%100!%!_off!!%");
  svc_like_pattern("", out, sizeof out);
  cr_assert_str_eq(out, "%%");
}

Test(svc_time, milliseconds_to_timestamp) {
  Shop__Common__V1__Timestamp t;
  svc_timestamp_set(&t, 1700000000123LL);
  cr_assert_eq(t.seconds, 1700000000);
  cr_assert_eq(t.nanos, 123000000);
  cr_assert_gt(svc_now_ms(), 1700000000000LL);
}

static consumer_msg notify_msg(events_envelope *e, const char *topic, const char *id, int64_t seq) {
  shop__events__v1__event_envelope__init(e);
  e->subject = (char *)id;
  e->sequence = seq;
  return (consumer_msg){.env = e, .topic = topic};
}

Test(svc_notifier, keeps_the_newest_version_of_each_aggregate_of_its_topic) {
  svc_notifier n;
  svc_notifier_init(&n);
  const char *a = "0190c3c2-7e4a-7b3c-8f00-1234567890aa",
             *b = "0190c3c2-7e4a-7b3c-8f00-1234567890bb";
  events_envelope e[4];
  consumer_msg m[4] = {notify_msg(&e[0], "shop.order.events.v1", a, 2),
                       notify_msg(&e[1], "shop.payment.events.v1", a, 9),
                       notify_msg(&e[2], "shop.order.events.v1", a, 1),
                       notify_msg(&e[3], "shop.order.events.v1", b, 5)};
  svc_notifier_committed(&n, m, 4, "shop.order.events.v1");
  cr_assert_eq(svc_notifier_version(&n, a), 2,
               "an older event does not lower it, another "
               "topic's does not count");
  cr_assert_eq(svc_notifier_version(&n, b), 5);
  cr_assert_eq(svc_notifier_version(&n, "0190c3c2-7e4a-7b3c-8f00-1234567890cc"), 0);
  svc_notifier_committed(&n, m + 1, 1, NULL);
  cr_assert_eq(svc_notifier_version(&n, a), 9, "no topic: every event counts");
  svc_notifier_destroy(&n);
}
