#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "log/log.h"

static char *capture(log_level min, void (*emit)(void)) {
  char *buf = NULL;
  size_t len = 0;
  FILE *mem = open_memstream(&buf, &len);
  log_setup("test-svc", min, mem);
  emit();
  fclose(mem);
  log_setup("test-svc", LOG_LEVEL_INFO, NULL);
  return buf;
}

static void emit_info(void) {
  log_ctx ctx = {.request_id = "req-1", .trace_id = "0af7651916cd43dd8448eb211c80319c"};
  log_info(&ctx, "order %s placed for %d units", "o-1", 3);
}

Test(log, a_record_is_one_json_line_with_service_level_and_ids) {
  char *out = capture(LOG_LEVEL_DEBUG, emit_info);
  cr_assert_not_null(strstr(out, "\"level\":\"info\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"service\":\"test-svc\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"msg\":\"order o-1 placed for 3 units\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"request_id\":\"req-1\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"trace_id\":\"0af7651916cd43dd8448eb211c80319c\""), "%s", out);
  cr_assert_null(strstr(out, "event_id"), "empty fields are left out: %s", out);
  cr_assert_eq(out[0], '{');
  size_t n = strlen(out);
  cr_assert_eq(out[n - 1], '\n');
  cr_assert_eq(out[n - 2], '}');
  cr_assert_null(strchr(out, '\n') != out + n - 1 ? out : NULL, "exactly one line: %s", out);
  free(out);
}

static void emit_debug(void) { log_debug(NULL, "hidden"); }

Test(log, records_below_the_level_are_not_written) {
  char *out = capture(LOG_LEVEL_INFO, emit_debug);
  cr_assert_str_eq(out, "");
  free(out);
}

static void emit_nasty(void) { log_warn(NULL, "quote \" backslash \\ newline \n tab \t bell \a"); }

Test(log, messages_are_json_escaped) {
  char *out = capture(LOG_LEVEL_DEBUG, emit_nasty);
  cr_assert_not_null(strstr(out, "quote \\\" backslash \\\\ newline \\n tab \\t bell \\u0007"),
                     "%s", out);
  free(out);
}

static void emit_kv(void) {
  const char *kv[] = {"topic", "shop.order.events.v1", "partition", "3", "skipped", NULL};
  log_emit_kv(LOG_LEVEL_ERROR, NULL, kv, 3, "dead-lettered");
}

Test(log, extra_fields_are_added_and_null_values_left_out) {
  char *out = capture(LOG_LEVEL_DEBUG, emit_kv);
  cr_assert_not_null(strstr(out, "\"topic\":\"shop.order.events.v1\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"partition\":\"3\""), "%s", out);
  cr_assert_null(strstr(out, "skipped"), "%s", out);
  cr_assert_not_null(strstr(out, "\"level\":\"error\""), "%s", out);
  free(out);
}

Test(log, escaping_truncates_without_splitting_utf8) {
  char dst[6];
  /* "ab" + U+00E9 (2 bytes) + U+20AC (3 bytes): the euro sign does not fit. */
  size_t n = log_json_escape(dst, sizeof dst, "ab\xc3\xa9\xe2\x82\xac");
  cr_assert_eq(n, 4);
  cr_assert_str_eq(dst, "ab\xc3\xa9");
}

Test(log, levels_parse_by_name) {
  log_level l;
  cr_assert(log_level_parse("warn", &l));
  cr_assert_eq(l, LOG_LEVEL_WARN);
  cr_assert_not(log_level_parse("loud", &l));
  cr_assert_str_eq(log_level_name(LOG_LEVEL_ERROR), "error");
}
