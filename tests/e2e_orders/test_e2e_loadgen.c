/* shop-loadgen end to end: a short closed-loop run against every Shop
 * program (the order programs of tests/support/stack.h plus user-command, the
 * notification worker with a real SMTP server, and the audit worker),
 * then the books check it runs itself (shopctl reconcile). Every order
 * placed in the window completes, no call fails, the books are clean. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <jansson.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "support/proc.h"
#include "support/stack.h"
#include "support/wait.h"

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  stack_up((const char *const[]){STACK_ORDER_PROGRAMS, NULL});
}
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down(); }

static proc *smtp_p;

static int port_of(const char *url) {
  const char *c = strrchr(url, ':');
  return c != NULL ? atoi(c + 1) : 0;
}

static bool port_answers(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return false;
  struct sockaddr_in a = {.sin_family = AF_INET,
                          .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  bool ok = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return ok;
}

static void full_stack_up(void) {
  stack_require();
  const shop_cfg *cfg = stack_cfg();
  /* Mail goes to a real SMTP server (aiosmtpd prints what it receives). */
  int port = port_of(cfg->notify.smtp_url);
  char listen[64], log[1024], err[512];
  snprintf(listen, sizeof listen, "127.0.0.1:%d", port);
  const char *dir = getenv("SHOP_LOG_DIR");
  snprintf(log, sizeof log, "%s/e2e-loadgen-smtp.log", dir != NULL ? dir : "/tmp");
  const char *argv[] = {"-m", "aiosmtpd", "-n", "-l", listen, NULL};
  proc_opts o = {.path = "/usr/bin/python3", .argv = argv, .log_path = log};
  cr_assert_eq(proc_start(&smtp_p, &o, err, sizeof err), STATUS_OK, "smtp: %s", err);
  WAIT_UNTIL(port_answers(port), 10000, "the SMTP server answering on %s (see %s)", listen, log);
  stack_start("user-command", cfg->endpoints.user_command, NULL);
  stack_start("notification-worker", NULL, NULL);
  stack_start("audit-worker", cfg->endpoints.audit_query, NULL);
}

static void full_stack_down(void) {
  stack_release();
  if (smtp_p != NULL) {
    proc_stop(smtp_p, 10000, NULL);
    proc_destroy(smtp_p);
  }
}

TestSuite(loadgen, .init = full_stack_up, .fini = full_stack_down, .timeout = 150);

/* The last line of path that starts with '{', parsed. */
static json_t *last_json_line(const char *path) {
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "no output at %s", path);
  static char line[1 << 16], last[1 << 16];
  last[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL)
    if (line[0] == '{') memcpy(last, line, sizeof last);
  fclose(f);
  json_error_t je;
  json_t *j = json_loads(last, 0, &je);
  cr_assert_not_null(j, "shop-loadgen printed no JSON report (see %s): %s", path, je.text);
  return j;
}

/* Runs shop-loadgen with these arguments (after --config) and the
 * environment additions env (may be NULL); returns its JSON report and
 * its exit code. */
static json_t *run_loadgen(const char *const *args, const char *const *env, int *code) {
  char bin[1024], out[] = "/tmp/shop-e2e-loadgen-XXXXXX", err[512];
  int fd = mkstemp(out);
  cr_assert_geq(fd, 0);
  close(fd);
  stack_bin(bin, sizeof bin, "shop-loadgen");
  const char *argv[32] = {"--config", stack_config()};
  size_t n = 2;
  for (; args[n - 2] != NULL && n < 31; n++) argv[n] = args[n - 2];
  argv[n] = NULL;
  proc_opts o = {.path = bin, .argv = argv, .env = env, .log_path = out};
  proc *p = NULL;
  cr_assert_eq(proc_start(&p, &o, err, sizeof err), STATUS_OK, "shop-loadgen: %s", err);
  bool done; /* asserted once the program is stopped, so none is left behind */
  WAIT_FOR(done, !proc_alive(p), 120000);
  *code = -1;
  proc_stop(p, 5000, code);
  proc_destroy(p);
  cr_assert(done, "shop-loadgen did not finish in 120 s");
  json_t *r = last_json_line(out);
  unlink(out);
  return r;
}

Test(loadgen, a_short_closed_loop_completes_every_order_and_the_books_balance) {
  int code;
  json_t *r = run_loadgen((const char *const[]){"--customers", "4", "--accounts", "2", "--products",
                                                "4", "--warmup", "1", "--duration", "4", "--drain",
                                                "60", "--settle", "5", "--json", NULL},
                          NULL, &code);
  json_int_t sent = json_integer_value(json_object_get(r, "sent"));
  json_int_t accepted = json_integer_value(json_object_get(r, "accepted"));
  json_int_t completed = json_integer_value(json_object_get(r, "completed"));
  json_int_t errors = json_integer_value(json_object_get(r, "errors_total"));
  json_t *rc = json_object_get(r, "reconcile");
  char *text = json_dumps(r, JSON_COMPACT);
  cr_expect_gt(completed, 0, "no order completed: %s", text);
  cr_expect_eq(errors, 0, "errors: %s", text);
  cr_expect_eq(sent, accepted, "%s", text);
  cr_expect_eq(accepted, completed, "%s", text);
  cr_expect(json_is_true(json_object_get(rc, "clean")), "the books are not clean: %s", text);
  cr_expect_eq(code, 0, "shop-loadgen exited %d: %s", code, text);
  cr_expect_gt(json_real_value(json_object_get(json_object_get(r, "completion"), "p50_ms")), 0.0,
               "%s", text);
  /* What an order cost: MariaDB's counters over the window, per order (a
   * completed order runs several statements and at least one commit). */
  json_t *costs = json_object_get(r, "costs");
  json_t *per = json_object_get(costs, "per_order");
  cr_expect(json_is_true(json_object_get(costs, "db_ok")), "MariaDB's status unread: %s", text);
  cr_expect_geq(json_real_value(json_object_get(per, "statements")), 3.0, "%s", text);
  cr_expect_geq(json_real_value(json_object_get(per, "inserts")), 1.0, "%s", text);
  cr_expect_gt(json_real_value(json_object_get(per, "commits")), 0.0, "%s", text);
  cr_expect_gt(json_real_value(json_object_get(per, "log_writes")), 0.0, "%s", text);
  free(text);
  json_decref(r);
}

/* CreateOrder alone (make bench's comparison with the raw transaction):
 * with --no-watch nothing asks order-query, here an endpoint where nothing
 * answers, and the orders placed are real ones that the pipeline completes
 * (the books of the run balance once they have). */
Test(loadgen, a_run_that_does_not_watch_needs_no_order_query_and_its_orders_are_real) {
  int code;
  json_t *r = run_loadgen(
      (const char *const[]){"--customers", "4", "--accounts", "2", "--products", "4", "--warmup",
                            "1", "--duration", "3", "--no-watch", "--settle", "30", "--json", NULL},
      (const char *const[]){"SHOP_ENDPOINTS__ORDER_QUERY=tcp://127.0.0.1:9", NULL}, &code);
  char *text = json_dumps(r, JSON_COMPACT);
  json_int_t sent = json_integer_value(json_object_get(r, "sent"));
  json_int_t accepted = json_integer_value(json_object_get(r, "accepted"));
  cr_expect(json_is_true(json_object_get(r, "no_watch")), "%s", text);
  cr_expect(json_is_true(json_object_get(r, "no_wait")), "%s", text);
  cr_expect_gt(accepted, 0, "no order accepted: %s", text);
  cr_expect_eq(sent, accepted, "%s", text);
  cr_expect_eq(json_integer_value(json_object_get(r, "completed")), 0, "%s", text);
  cr_expect_eq(json_integer_value(json_object_get(r, "errors_total")), 0, "errors: %s", text);
  cr_expect_eq(json_integer_value(json_object_get(r, "polls")), 0, "%s", text);
  json_t *rc = json_object_get(r, "reconcile");
  cr_expect(json_is_true(json_object_get(rc, "clean")), "the books are not clean: %s", text);
  cr_expect_eq(code, 0, "shop-loadgen exited %d: %s", code, text);
  free(text);
  json_decref(r);
}
