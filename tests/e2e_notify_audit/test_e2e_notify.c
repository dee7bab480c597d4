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
  stack_sink("smtp_sink.py", port_of(stack_cfg()->notify.smtp_url), d);
  snprintf(d, sizeof d, "%s/http", root);
  stack_sink("http_sink.py", port_of(stack_cfg()->notify.sms_url), d);
  stack_start("user-command", stack_cfg()->endpoints.user_command, NULL);
  stack_start("notification-worker", NULL, NULL);
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

Test(notify, an_order_of_a_registered_customer_is_confirmed_by_email_and_sms) {
  rpc_status st;
  char email[128], u[64];
  stack_unique(u, sizeof u, "n");
  snprintf(email, sizeof email, "%s-%s@example.com", stack_run(), u);
  for (char *c = email; *c; c++)
    if (*c >= 'A' && *c <= 'Z') *c = (char)(*c - 'A' + 'a');
  Shop__User__V1__RegisterUserRequest reg = SHOP__USER__V1__REGISTER_USER_REQUEST__INIT;
  Shop__User__V1__NotificationPreferences np = SHOP__USER__V1__NOTIFICATION_PREFERENCES__INIT;
  np.email = true;
  np.sms = true;
  reg.email = email;
  reg.password = "correct horse battery staple";
  reg.name = "Ada Lovelace";
  reg.phone = "+15550123";
  reg.notification_preferences = &np;
  Shop__User__V1__RegisterUserResponse *rr = NULL;
  char key[96];
  stack_unique(key, sizeof key, "k");
  cr_assert_eq(stack_call_at(stack_cfg()->endpoints.user_command, UCMD_SVC, "RegisterUser",
                             &reg.base, (ProtobufCMessage **)&rr, NULL, key, &st),
               STATUS_OK, "RegisterUser: %s", st.message);
  char uid[EVENTS_ID_SIZE];
  snprintf(uid, sizeof uid, "%s", rr->user_id);
  free_msg(rr);
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
