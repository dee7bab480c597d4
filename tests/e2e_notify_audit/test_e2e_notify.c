/* notification-worker end to end: user-command, the order programs
 * (tests/support/stack.h) and a real notification-worker, with a real SMTP server and a
 * webhook receiver on the test profile's notify ports (config/test.yaml):
 * a registered customer's order delivers a confirmation email with the
 * lines and total, and the SMS webhook gets the JSON. */
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "events/events.h"
#include "shop/order/v1/commands.pb-c.h"
#include "shop/product/v1/commands.pb-c.h"
#include "shop/product/v1/queries.pb-c.h"
#include "shop/user/v1/commands.pb-c.h"
#include "support/proc.h"
#include "support/stack.h"
#include "support/wait.h"

#define OCMD_SVC (&shop__order__v1__order_command_service__descriptor)
#define PCMD_SVC (&shop__product__v1__product_command_service__descriptor)
#define PQRY_SVC (&shop__product__v1__product_query_service__descriptor)
#define UCMD_SVC (&shop__user__v1__user_command_service__descriptor)

ReportHook(PRE_ALL)(struct criterion_test_set *set) {
  stack_up((const char *const[]){STACK_ORDER_PROGRAMS, NULL});
}
/* After the scenario, on the quiet stack: the run's books balance (an
 * audit-worker is started for the check, so the log catches up). */
ReportHook(POST_ALL)(struct criterion_global_stats *stats) { stack_down_after_books(60000); }

static char root[200];
static proc *smtp_sink, *worker;
static char worker_log[320];

static int port_of(const char *url) {
  const char *c = strrchr(url, ':');
  return c != NULL ? atoi(c + 1) : 0;
}

static void notify_up(void) {
  stack_require();
  snprintf(root, sizeof root, "/tmp/shop-e2e-notify-XXXXXX");
  cr_assert_not_null(mkdtemp(root));
  char d[300];
  snprintf(d, sizeof d, "%s/smtp", root);
  smtp_sink = stack_sink("smtp_sink.py", port_of(stack_cfg()->notify.smtp_url), d);
  snprintf(d, sizeof d, "%s/http", root);
  stack_sink("http_sink.py", port_of(stack_cfg()->notify.sms_url), d);
  stack_start("user-command", stack_cfg()->endpoints.user_command, NULL);
  snprintf(worker_log, sizeof worker_log, "%s/notification-worker.log", root);
  stack_opts o = {.log_path = worker_log};
  worker = stack_start_with("notification-worker", &o);
}

static void notify_down(void) {
  stack_release(); /* the workers and the sinks */
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

TestSuite(notify, .init = notify_up, .fini = notify_down, .timeout = 300);

static void free_msg(void *m) {
  if (m != NULL) protobuf_c_message_free_unpacked(m, NULL);
}

/* Registers a customer (a unique lower-case email from tag) who wants
 * email and SMS; its email and user id go to email and uid. */
static void register_notified(const char *tag, const char *name, const char *phone, char email[128],
                              char uid[EVENTS_ID_SIZE]) {
  rpc_status st;
  char u[64];
  stack_unique(u, sizeof u, tag);
  snprintf(email, 128, "%s-%s@example.com", stack_run(), u);
  for (char *c = email; *c; c++)
    if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  Shop__User__V1__RegisterUserRequest reg = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  Shop__User__V1__NotificationPreferences np = SHOP__USER__V1__NOTIFICATION_PREFERENCES__INIT;
  np.email = true;
  np.sms = true;
  reg.email = email;
  reg.password = "correct horse battery staple";
  reg.name = (char *)name;
  reg.phone = (char *)phone;
  reg.notification_preferences = &np;
  Shop__User__V1__RegisterUserResponse *rr = NULL;
  char key[96];
  stack_unique(key, sizeof key, "k");
  cr_assert_eq(stack_call_at(stack_cfg()->endpoints.user_command, UCMD_SVC, "RegisterUser",
                             &reg.base, (ProtobufCMessage **)&rr, NULL, key, &st),
               STATUS_OK, "RegisterUser: %s", st.message);
  snprintf(uid, EVENTS_ID_SIZE, "%s", rr->user_id);
  free_msg(rr);
}

Test(notify, an_order_of_a_registered_customer_is_confirmed_by_email_and_sms) {
  rpc_status st;
  char email[128], uid[EVENTS_ID_SIZE];
  register_notified("n", "Ada Lovelace", "+15550123", email, uid);
  char cust[AUTH_TOKEN_MAX], adm[AUTH_TOKEN_MAX], aid[EVENTS_ID_SIZE];
  stack_token(cust, uid, AUTH_ROLE_CUSTOMER);
  events_uuid_v7(aid);
  stack_token(adm, aid, AUTH_ROLE_ADMIN);

  /* A product and an order of 3. */
  char pid[37];
  stack_product(adm, 100, 1250, 10, pid);

  req_order req;
  req_order_init(&req, "tok_visa");
  req_order_line(&req, pid, 3);
  Shop__Order__V1__CreateOrderResponse *o = NULL;
  char key[96];
  stack_unique(key, sizeof key, "k");
  cr_assert_eq(stack_call_at(stack_url("order-command"), OCMD_SVC, "CreateOrder", &req.req.base,
                             (ProtobufCMessage **)&o, cust, key, &st),
               STATUS_OK, "CreateOrder: %s", st.message);
  char oid[37];
  snprintf(oid, sizeof oid, "%s", o->order_id);
  free_msg(o);

  /* The confirmation arrives by email (lines and total) and by SMS. */
  char dir[300], needle[200];
  snprintf(dir, sizeof dir, "%s/smtp", root);
  snprintf(needle, sizeof needle, "your order %s is confirmed", oid);
  int n = 0;
  char *mail = NULL;
  WAIT_UNTIL((free(mail), mail = stack_sink_received(dir, ".eml", needle, &n), n > 0), 180000,
             "the confirmation email of %s in %s", oid, dir);
  cr_assert_eq(n, 1, "confirmation emails for %s: %d", oid, n);
  cr_assert(strstr(mail, email) != NULL, "%s", mail);
  cr_assert(strstr(mail, "3 x Stoneware mug") != NULL, "%s", mail);
  cr_assert(strstr(mail, "at 12.50 EUR = 37.50 EUR") != NULL, "%s", mail);
  cr_assert(strstr(mail, "Total: 37.50 EUR") != NULL, "%s", mail);
  free(mail);
  snprintf(dir, sizeof dir, "%s/http", root);
  snprintf(needle, sizeof needle, "order %s confirmed", oid);
  char *hooks = NULL;
  WAIT_UNTIL((free(hooks), hooks = stack_sink_received(dir, ".json", needle, &n), n > 0), 30000,
             "the SMS webhook of %s in %s", oid, dir);
  cr_assert_eq(n, 1, "SMS webhooks for %s: %d", oid, n);
  cr_assert(strstr(hooks, "\"to\": \"+15550123\"") != NULL, "%s", hooks);
  cr_assert(strstr(hooks, "\"path\": \"/sms\"") != NULL, "%s", hooks);
  free(hooks);
}

/* The lines of the worker's log that contain every one of a and b. */
static int log_lines(const char *a, const char *b) {
  FILE *f = fopen(worker_log, "r");
  char line[8192];
  int n = 0;
  while (f != NULL && fgets(line, sizeof line, f) != NULL)
    n += strstr(line, a) != NULL && (b == NULL || strstr(line, b) != NULL);
  if (f != NULL) fclose(f);
  return n;
}

/* The value of the series line (name and labels, as exposed) on the
 * worker's /metrics; -1 when absent. */
static double metric(const char *series) {
  char url[128], *text = NULL;
  snprintf(url, sizeof url, "http://127.0.0.1:%d/metrics", stack_admin_port(worker));
  cr_assert_eq(proc_http("GET", url, 10000, &text), 200);
  double v = -1;
  const char *p = strstr(text, series);
  if (p != NULL) v = strtod(p + strlen(series), NULL);
  free(text);
  return v;
}

Test(notify, a_dead_smtp_server_floods_nothing_blocks_no_sms_and_gets_its_mail_once_back) {
  /* The server goes away; a customer registers (welcome by email and SMS). */
  cr_assert_eq(stack_stop(smtp_sink), 0);
  smtp_sink = NULL;
  int warn_before = log_lines("\"level\":\"warn\"", "smtp");
  char email[128], uid[EVENTS_ID_SIZE];
  register_notified("d", "Grace Hopper", "+15550199", email, uid);
  /* SMS goes out while email waits. */
  char dir[300];
  snprintf(dir, sizeof dir, "%s/http", root);
  int n = 0;
  char *hooks = NULL;
  WAIT_UNTIL((free(hooks), hooks = stack_sink_received(dir, ".json", uid, &n), n > 0), 30000,
             "the welcome SMS of %s in %s", uid, dir);
  free(hooks);
  /* Longer than several steps of the test profile's ladder (0.2 s doubling
   * to 2 s): the email waits, counted on /metrics, and the log has one
   * line for the outage, not one per try. */
  WAIT_UNTIL(metric("shop_notification_pending{channel=\"email\"} ") >= 1, 30000,
             "the waiting email on /metrics");
  struct timespec ts = {8, 0};
  nanosleep(&ts, NULL);
  cr_assert_geq(metric("shop_notification_pending{channel=\"email\"} "), 1);
  cr_assert_geq(metric("shop_notification_oldest_pending_seconds{channel=\"email\"} "), 8);
  cr_assert_eq(metric("shop_notification_pending{channel=\"sms\"} "), 0);
  int warns = log_lines("\"level\":\"warn\"", "smtp") - warn_before;
  cr_assert_leq(warns, 1, "%d warning lines about smtp during the outage", warns);
  cr_assert_leq(log_lines("Failed to connect", NULL), 1);
  /* Back: the welcome arrives once. */
  snprintf(dir, sizeof dir, "%s/smtp", root);
  smtp_sink = stack_sink("smtp_sink.py", port_of(stack_cfg()->notify.smtp_url), dir);
  char *mail = NULL;
  WAIT_UNTIL((free(mail), mail = stack_sink_received(dir, ".eml", email, &n), n > 0), 30000,
             "the welcome email of %s in %s", email, dir);
  free(mail);
  ts.tv_sec = 3;
  nanosleep(&ts, NULL);
  mail = stack_sink_received(dir, ".eml", email, &n);
  cr_assert_eq(n, 1, "welcome emails to %s: %d\n%s", email, n, mail);
  free(mail);
  cr_assert_geq(log_lines("answers again", NULL), 1);
  WAIT_UNTIL(metric("shop_notification_pending{channel=\"email\"} ") == 0, 10000,
             "no email waiting");
}
