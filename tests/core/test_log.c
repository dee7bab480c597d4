#include <criterion/criterion.h>
#include <pthread.h>
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

/* ---- The current scope and trace context ----------------------------------------------------- */

#define TP "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
#define TRACE "4bf92f3577b34da6a3ce929d0e0e4736"

static void emit_in_scope(void) {
  log_scope s;
  log_scope_enter(&s, "req-9", TP, "ev-9");
  log_info(NULL, "inside");
  log_scope_leave(&s);
  log_info(NULL, "outside");
}

Test(log, a_record_without_ctx_gets_the_ids_of_the_current_scope) {
  char *out = capture(LOG_LEVEL_DEBUG, emit_in_scope);
  char *second = strchr(out, '\n');
  cr_assert_not_null(second, "%s", out);
  *second++ = '\0';
  cr_assert_not_null(strstr(out, "\"request_id\":\"req-9\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"trace_id\":\"" TRACE "\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"event_id\":\"ev-9\""), "%s", out);
  cr_assert_not_null(strstr(second, "outside"), "%s", second);
  cr_assert_null(strstr(second, "_id"), "no scope after leaving it: %s", second);
  free(out);
}

static void emit_partial_ctx(void) {
  log_scope s;
  log_scope_enter(&s, "req-9", TP, "ev-9");
  log_info(&(log_ctx){.request_id = "req-own", .event_id = ""}, "partial");
  log_scope_leave(&s);
}

Test(log, what_the_caller_gives_wins_and_what_it_leaves_empty_comes_from_the_scope) {
  char *out = capture(LOG_LEVEL_DEBUG, emit_partial_ctx);
  cr_assert_not_null(strstr(out, "\"request_id\":\"req-own\""), "%s", out);
  cr_assert_null(strstr(out, "req-9"), "%s", out);
  cr_assert_not_null(strstr(out, "\"trace_id\":\"" TRACE "\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"event_id\":\"ev-9\""), "%s", out);
  free(out);
}

Test(log, scopes_nest_and_leaving_restores_the_outer_one) {
  cr_assert_null(log_current());
  cr_assert_str_eq(log_current_traceparent(), "");
  log_scope outer, inner;
  log_scope_enter(&outer, "req-1", TP, NULL);
  log_scope_enter(&inner, NULL, "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", "ev-2");
  cr_assert_str_eq(log_current()->trace_id, "0af7651916cd43dd8448eb211c80319c");
  cr_assert_str_eq(log_current()->event_id, "ev-2");
  cr_assert_null(log_current()->request_id);
  log_scope_leave(&inner);
  cr_assert_str_eq(log_current()->request_id, "req-1");
  cr_assert_str_eq(log_current_traceparent(), TP);
  log_scope_leave(&outer);
  cr_assert_null(log_current());
}

Test(log, a_scope_with_a_bad_traceparent_has_no_trace) {
  log_scope s;
  log_scope_enter(&s, "req-1", "00-not-a-trace", NULL);
  cr_assert_str_eq(log_current()->trace_id, "");
  cr_assert_str_eq(log_current_traceparent(), "");
  cr_assert_str_eq(log_current()->request_id, "req-1");
  log_scope_leave(&s);
}

static void *other_thread(void *arg) {
  *(const log_ctx **)arg = log_current();
  return NULL;
}

Test(log, the_current_scope_belongs_to_its_thread) {
  log_scope s;
  log_scope_enter(&s, "req-1", TP, NULL);
  const log_ctx *seen = &s.ctx;
  pthread_t t;
  cr_assert_eq(pthread_create(&t, NULL, other_thread, &seen), 0);
  pthread_join(t, NULL);
  cr_assert_null(seen, "another thread sees no scope");
  cr_assert_eq(log_current(), &s.ctx);
  log_scope_leave(&s);
}

Test(log, trace_ids_come_only_from_valid_traceparents) {
  char id[LOG_TRACE_ID_SIZE];
  cr_assert(log_trace_id(TP, id));
  cr_assert_str_eq(id, TRACE);
  const char *bad[] = {
      NULL,
      "",
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",    /* short */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x", /* version 00 is exact */
      "00-00000000000000000000000000000000-00f067aa0ba902b7-01",   /* zero trace id */
      "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",   /* zero span id */
      "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",   /* uppercase */
      "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",   /* forbidden version */
      "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_not(log_trace_id(bad[i], id), "case %zu", i);
    cr_assert_str_eq(id, "");
  }
  /* A later version may be longer; its first 55 characters count. */
  cr_assert(log_trace_id("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more", id));
  cr_assert_str_eq(id, TRACE);
}

static bool lower_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return false;
  return true;
}

Test(log, a_child_traceparent_keeps_the_trace_and_flags_with_a_new_span) {
  char a[LOG_TRACEPARENT_SIZE], b[LOG_TRACEPARENT_SIZE];
  cr_assert(log_traceparent_child("00-" TRACE "-00f067aa0ba902b7-00", a));
  cr_assert(log_traceparent_child("00-" TRACE "-00f067aa0ba902b7-00", b));
  cr_assert_eq(strlen(a), 55, "%s", a);
  cr_assert_eq(strncmp(a, "00-" TRACE "-", 36), 0, "%s", a);
  cr_assert_str_eq(a + 52, "-00", "flags kept: %s", a);
  cr_assert(lower_hex(a + 36, 16), "%s", a);
  cr_assert_neq(strncmp(a + 36, "00f067aa0ba902b7", 16), 0, "new span id: %s", a);
  cr_assert_neq(strncmp(a + 36, b + 36, 16), 0, "every child its own span: %s %s", a, b);
  char id[LOG_TRACE_ID_SIZE];
  cr_assert(log_trace_id(a, id), "the child is a valid traceparent: %s", a);
}

Test(log, without_a_valid_parent_a_child_starts_a_new_trace) {
  char a[LOG_TRACEPARENT_SIZE], b[LOG_TRACEPARENT_SIZE];
  cr_assert_not(log_traceparent_child(NULL, a));
  cr_assert_not(log_traceparent_child("garbage", b));
  char ia[LOG_TRACE_ID_SIZE], ib[LOG_TRACE_ID_SIZE];
  cr_assert(log_trace_id(a, ia), "%s", a);
  cr_assert(log_trace_id(b, ib), "%s", b);
  cr_assert_str_neq(ia, ib);
  cr_assert_str_eq(a + 52, "-01", "sampled: %s", a);
  cr_assert(lower_hex(a + 3, 32) && lower_hex(a + 36, 16), "%s", a);
}
