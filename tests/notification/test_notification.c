/* notification-worker's handler (internal/notification/notification.h)
 * against the test database, a real SMTP server (aiosmtpd, smtp_sink.py)
 * and a webhook receiver (http_sink.py), both on loopback, started and
 * stopped by each test. Events go to domtest's table, not Kafka. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "clock/clock.h"
#include "config/config.h"
#include "domtest.h"
#include "metrics/metrics.h"
#include "notification/notification.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/notification/v1/events.pb-c.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/user/v1/events.pb-c.h"
#include "support/proc.h"
#include "support/stack.h"

typedef struct sink {
  proc *p;
  int port;
  char dir[320];
} sink;

static sink smtp, http;
static char root[200];
static shop_cfg *cfg;
static db_pool *pool;
static db_conn *db;
static notify_smtp *smtp_ch;
static notify_webhook *sms_ch, *push_ch;
static notify_ctx ctx;
/* The topic the test's events are read from: its own, so that the dead
 * letters of a given-up message are this run's. */
static char topic[100];

static void sink_start(sink *s, const char *script) { s->p = stack_sink(script, s->port, s->dir); }

static void sink_stop(sink *s) {
  if (s->p == NULL) return;
  stack_stop(s->p);
  s->p = NULL;
}

static void set_str(char **slot, const char *v) {
  free(*slot);
  *slot = strdup(v);
}

static void setup(void) {
  char err[512];
  snprintf(root, sizeof root, "/tmp/shop-notify-XXXXXX");
  cr_assert_not_null(mkdtemp(root));
  smtp.port = proc_free_tcp_port();
  http.port = proc_free_tcp_port();
  snprintf(smtp.dir, sizeof smtp.dir, "%s/smtp", root);
  snprintf(http.dir, sizeof http.dir, "%s/http", root);
  cr_assert_eq(config_load(&cfg, NULL, err, sizeof err), 0, "%s", err);
  char url[128];
  snprintf(url, sizeof url, "smtp://127.0.0.1:%d", smtp.port);
  set_str(&cfg->notify.smtp_url, url);
  set_str(&cfg->notify.admin_email, "ops@shop.test");
  cfg->notify.retry_backoff_ms = 1000;
  cfg->notify.retry_backoff_max_ms = 8000;
  cfg->notify.give_up_s = 60;
  cfg->notify.timeout_ms = 5000;
  cr_assert_eq(notify_smtp_create(&smtp_ch, cfg, err, sizeof err), STATUS_OK, "%s", err);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/sms", http.port);
  cr_assert_eq(notify_webhook_create(&sms_ch, SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_SMS, url,
                                     5000, err, sizeof err),
               STATUS_OK);
  snprintf(url, sizeof url, "http://127.0.0.1:%d/push", http.port);
  cr_assert_eq(notify_webhook_create(&push_ch, SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_PUSH, url,
                                     5000, err, sizeof err),
               STATUS_OK);
  db = domtest_db("notification", notification_migrations, notification_migrations_count);
  char dir[512], pw[256];
  snprintf(dir, sizeof dir, "%s/mysql", getenv("SHOP_SECRETS_DIR"));
  cr_assert(db_password_from_dir(dir, "shop_test", pw, sizeof pw, err, sizeof err), "%s", err);
  db_params p = {.host = "127.0.0.1",
                 .port = atoi(getenv("SHOP_MYSQL_PORT")),
                 .user = "shop_test",
                 .password = pw,
                 .database = "shop_test",
                 .connect_timeout_ms = 5000,
                 .connect_retry_ms = 5000};
  cr_assert_eq(db_pool_create(&pool, &p, 2, err, sizeof err), STATUS_OK, "%s", err);
  notify_ctx_init(&ctx, cfg, "notification-worker", pool, domtest_sink());
  ctx.email = notify_smtp_channel(smtp_ch);
  ctx.sms = notify_webhook_channel(sms_ch);
  ctx.push = notify_webhook_channel(push_ch);
  if (getenv("SHOP_KAFKA_BROKERS") != NULL)
    set_str(&cfg->kafka.brokers, getenv("SHOP_KAFKA_BROKERS"));
  ctx.brokers = cfg->kafka.brokers;
  sink_start(&http, "http_sink.py");
  snprintf(topic, sizeof topic, "shop.order.v1.notify-test-%d", (int)getpid());
}

static void teardown(void) {
  sink_stop(&smtp);
  sink_stop(&http);
  notify_smtp_destroy(smtp_ch);
  notify_webhook_destroy(sms_ch);
  notify_webhook_destroy(push_ch);
  db_pool_destroy(pool);
  db_close(db);
  config_free(cfg);
  char cmd[300];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", root);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", root);
}

TestSuite(notify, .init = setup, .fini = teardown, .timeout = 60);

/* ---- Events ------------------------------------------------------------------------ */

typedef struct event {
  events_envelope env;
  Shop__Common__V1__Timestamp ts;
  char id[EVENTS_ID_SIZE];
  uint8_t buf[4096];
} event;

static void event_make(event *e, const char *type, const char *subject, int64_t seq,
                       const ProtobufCMessage *m) {
  domtest_id(e->id);
  shop__events__v1__event_envelope__init(&e->env);
  shop__common__v1__timestamp__init(&e->ts);
  e->ts.seconds = 1700000000;
  e->env.id = e->id;
  e->env.type = (char *)type;
  e->env.source = "/shop/test";
  e->env.subject = (char *)subject;
  e->env.key = (char *)subject;
  e->env.sequence = seq;
  e->env.time = &e->ts;
  size_t n = protobuf_c_message_get_packed_size(m);
  cr_assert_leq(n, sizeof e->buf);
  protobuf_c_message_pack(m, e->buf);
  e->env.data.data = e->buf;
  e->env.data.len = n;
}

typedef struct handle_arg {
  event *e;
  size_t n;
} handle_arg;

static status_code handle_tx(db_conn *c, void *arg, char *errbuf, size_t errlen) {
  handle_arg *h = arg;
  consumer_msg msgs[8];
  for (size_t i = 0; i < h->n; i++)
    msgs[i] = (consumer_msg){.env = &h->e[i].env, .topic = topic, .partition = 0, .offset = 7};
  return consumer_spec_apply(c, &notify_consumer, msgs, h->n, &ctx, errbuf, errlen);
}

/* Sends what the queue has due at now_ms (each channel's sender round);
 * returns how many went out. */
static int send_due_at(int64_t now_ms) {
  char err[512] = "";
  int n = notify_queue_run_due(&ctx, now_ms, err, sizeof err);
  cr_assert_geq(n, 0, "%s", err);
  return n;
}

/* Runs the handler over events in one transaction (which queues their
 * messages), then sends what is due; returns the handler's status. */
static status_code handle(event *e, size_t n) {
  handle_arg h = {e, n};
  char err[512] = "";
  status_code st = db_tx_run(db, handle_tx, &h, 1, err, sizeof err);
  if (st == STATUS_OK) send_due_at(clock_now_ms());
  return st;
}

static void user(char id[EVENTS_ID_SIZE], const char *email, bool sms, bool push) {
  domtest_id(id);
  Shop__User__V1__UserRegistered m = SHOP__USER__V1__USER_REGISTERED__INIT;
  Shop__User__V1__UserProfile pr = SHOP__USER__V1__USER_PROFILE__INIT;
  Shop__User__V1__NotificationPreferences np = SHOP__USER__V1__NOTIFICATION_PREFERENCES__INIT;
  np.email = true;
  np.sms = sms;
  np.push = push;
  pr.name = "Ada";
  pr.phone = "+15550100";
  pr.notification_preferences = &np;
  m.user_id = id;
  m.email = (char *)email;
  m.profile = &pr;
  m.role = SHOP__USER__V1__ROLE__ROLE_CUSTOMER;
  event e;
  event_make(&e, "shop.user.v1.UserRegistered", id, 1, &m.base);
  cr_assert_eq(handle(&e, 1), STATUS_OK);
}

typedef struct lines {
  Shop__Order__V1__OrderLine l[2];
  Shop__Order__V1__OrderLine *lp[2];
  Shop__Common__V1__Money up[2], lt[2], total;
} lines;

static void lines_make(lines *L) {
  const char *names[] = {"Stoneware mug", "Teapot"};
  const char *skus[] = {"MUG-1", "POT-7"};
  for (int i = 0; i < 2; i++) {
    shop__order__v1__order_line__init(&L->l[i]);
    shop__common__v1__money__init(&L->up[i]);
    shop__common__v1__money__init(&L->lt[i]);
    L->up[i].units = 1250 * (i + 1);
    L->up[i].currency = "EUR";
    L->lt[i].units = 1250 * (i + 1) * (i + 2);
    L->lt[i].currency = "EUR";
    L->l[i].product_id = "p";
    L->l[i].quantity = i + 2;
    L->l[i].sku = (char *)skus[i];
    L->l[i].product_name = (char *)names[i];
    L->l[i].unit_price = &L->up[i];
    L->l[i].line_total = &L->lt[i];
    L->lp[i] = &L->l[i];
  }
  shop__common__v1__money__init(&L->total);
  L->total.units = 2500 + 7500;
  L->total.currency = "EUR";
}

/* OrderConfirmed of the two lines of lines_make, for customer uid, in e. */
static void order_confirmed(event *e, Shop__Order__V1__OrderConfirmed *m, lines *L, char *oid,
                            const char *uid) {
  domtest_id(oid);
  lines_make(L);
  shop__order__v1__order_confirmed__init(m);
  m->order_id = oid;
  m->customer_id = (char *)uid;
  m->n_lines = 2;
  m->lines = L->lp;
  m->total = &L->total;
  event_make(e, "shop.order.v1.OrderConfirmed", oid, 2, &m->base);
}

/* ---- What the receivers got ------------------------------------------------------------ */

/* Every file in dir whose name ends in ext, concatenated; count. */
static char *received(const char *dir, const char *ext, int *count) {
  return stack_sink_received(dir, ext, NULL, count);
}

/* ---- Tests ------------------------------------------------------------------------------ */

Test(notify, a_confirmation_email_carries_the_lines_and_total) {
  sink_start(&smtp, "smtp_sink.py");
  char uid[EVENTS_ID_SIZE], oid[EVENTS_ID_SIZE];
  user(uid, "ada@example.com", false, false);
  lines L;
  Shop__Order__V1__OrderConfirmed m;
  event e;
  order_confirmed(&e, &m, &L, oid, uid);
  cr_assert_eq(handle(&e, 1), STATUS_OK);
  cr_assert_eq(handle(&e, 1), STATUS_OK); /* a redelivery sends nothing more */
  int n = 0;
  char *mail = received(smtp.dir, ".eml", &n);
  cr_assert_eq(n, 2, "welcome and confirmation, once each: %d\n%s", n, mail);
  cr_assert(strstr(mail, "X-Envelope-To: ada@example.com") != NULL, "%s", mail);
  cr_assert(strstr(mail, "2 x Stoneware mug (MUG-1) at 12.50 EUR = 25.00 EUR") != NULL, "%s", mail);
  cr_assert(strstr(mail, "3 x Teapot (POT-7) at 25.00 EUR = 75.00 EUR") != NULL, "%s", mail);
  cr_assert(strstr(mail, "Total: 100.00 EUR") != NULL, "%s", mail);
  char mid[100];
  snprintf(mid, sizeof mid, "Message-ID: <%s@shop>", e.id);
  cr_assert(strstr(mail, mid) != NULL, "%s", mail);
  free(mail);
  char nid[100];
  snprintf(nid, sizeof nid, "%s:email", e.id);
  cr_assert_eq(domtest_count(db, nid, "shop.notification.v1.NotificationSent"), 1);
}

Test(notify, a_cancelled_orders_email_carries_the_reason) {
  sink_start(&smtp, "smtp_sink.py");
  char uid[EVENTS_ID_SIZE], oid[EVENTS_ID_SIZE];
  user(uid, "grace@example.com", false, false);
  domtest_id(oid);
  lines L;
  lines_make(&L);
  Shop__Order__V1__OrderCancelled m = SHOP__ORDER__V1__ORDER_CANCELLED__INIT;
  m.order_id = oid;
  m.customer_id = uid;
  m.reason = SHOP__ORDER__V1__CANCEL_REASON__CANCEL_REASON_PAYMENT_FAILED;
  m.reason_text = "card declined";
  m.n_lines = 2;
  m.lines = L.lp;
  m.total = &L.total;
  event e;
  event_make(&e, "shop.order.v1.OrderCancelled", oid, 2, &m.base);
  cr_assert_eq(handle(&e, 1), STATUS_OK);
  int n = 0;
  char *mail = received(smtp.dir, ".eml", &n);
  cr_assert(strstr(mail, "Reason: CANCEL_REASON_PAYMENT_FAILED: card declined") != NULL, "%s",
            mail);
  cr_assert(strstr(mail, "Total: 100.00 EUR") != NULL, "%s", mail);
  free(mail);
}

Test(notify, inventory_low_mails_the_admin) {
  sink_start(&smtp, "smtp_sink.py");
  char pid[EVENTS_ID_SIZE];
  domtest_id(pid);
  Shop__Inventory__V1__InventoryLow m = SHOP__INVENTORY__V1__INVENTORY_LOW__INIT;
  m.product_id = pid;
  m.sku = "MUG-LOW";
  m.available = 3;
  m.threshold = 5;
  event e;
  event_make(&e, "shop.inventory.v1.InventoryLow", pid, 4, &m.base);
  cr_assert_eq(handle(&e, 1), STATUS_OK);
  int n = 0;
  char *mail = received(smtp.dir, ".eml", &n);
  cr_assert_eq(n, 1);
  cr_assert(strstr(mail, "X-Envelope-To: ops@shop.test") != NULL, "%s", mail);
  cr_assert(strstr(mail, "MUG-LOW") != NULL && strstr(mail, "3 available") != NULL, "%s", mail);
  free(mail);
}

Test(notify, sms_and_push_webhooks_get_the_right_json) {
  sink_start(&smtp, "smtp_sink.py");
  char uid[EVENTS_ID_SIZE], oid[EVENTS_ID_SIZE];
  user(uid, "linus@example.com", true, true);
  lines L;
  Shop__Order__V1__OrderConfirmed m;
  event e;
  order_confirmed(&e, &m, &L, oid, uid);
  e.env.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  cr_assert_eq(handle(&e, 1), STATUS_OK);
  int n = 0;
  char *hooks = received(http.dir, ".json", &n);
  /* Welcome and confirmation, on sms and push each. */
  cr_assert_eq(n, 4, "%s", hooks);
  /* The confirmation's hooks continue the event's trace with a span of
   * their own. */
  const char *tp = strstr(hooks, "\"traceparent\": \"00-4bf92f3577b34da6a3ce929d0e0e4736-");
  cr_assert(tp != NULL, "%s", hooks);
  cr_assert(strstr(hooks, "00f067aa0ba902b7") == NULL, "a new span id: %s", hooks);
  char want[200];
  snprintf(want, sizeof want, "\"path\": \"/sms\", \"message_id\": \"%s\"", e.id);
  cr_assert(strstr(hooks, want) != NULL, "%s", hooks);
  snprintf(want, sizeof want, "\"path\": \"/push\", \"message_id\": \"%s\"", e.id);
  cr_assert(strstr(hooks, want) != NULL, "%s", hooks);
  cr_assert(strstr(hooks, "\"to\": \"+15550100\"") != NULL, "%s", hooks);
  cr_assert(strstr(hooks, "total 100.00 EUR") != NULL, "%s", hooks);
  snprintf(want, sizeof want, "\"user_id\": \"%s\"", uid);
  cr_assert(strstr(hooks, want) != NULL, "%s", hooks);
  free(hooks);
}

/* A customer with email and SMS; the welcome is left to whatever the
 * channels do. */
static void customer(char uid[EVENTS_ID_SIZE], const char *email) { user(uid, email, true, false); }

/* The pending gauge of channel after a scrape. */
static double gauge(const char *name, const char *channel) {
  metrics_registry *reg = NULL;
  cr_assert_eq(metrics_registry_create(&reg), STATUS_OK);
  notify_metrics_cb(db, reg, NULL);
  static const char *const labels[] = {"channel", NULL};
  const char *v[1] = {channel};
  double x =
      metrics_series_value(metrics_series_get(metrics_gauge_family(reg, name, "", labels), v));
  metrics_registry_destroy(reg);
  return x;
}

static int64_t tries_of(const char *nid) {
  int64_t n = -1;
  char err[256];
  db_value p[1] = {DB_STR(nid)};
  cr_assert_eq(db_query_i64(db, "SELECT attempts FROM notifications WHERE notification_id = ?", p,
                            1, &n, err, sizeof err),
               STATUS_OK, "%s", err);
  return n;
}

Test(notify, smtp_down_waits_on_a_backoff_sms_goes_out_all_mail_arrives_once_when_back) {
  char uid[EVENTS_ID_SIZE], uid2[EVENTS_ID_SIZE], oid[EVENTS_ID_SIZE], oid2[EVENTS_ID_SIZE];
  customer(uid, "barbara@example.com");
  customer(uid2, "edsger@example.com");
  lines L, L2;
  Shop__Order__V1__OrderConfirmed m, m2;
  event e[2];
  order_confirmed(&e[0], &m, &L, oid, uid);
  order_confirmed(&e[1], &m2, &L2, oid2, uid2);
  /* The SMTP server is down: the events are done (queued) at once. */
  cr_assert_eq(handle(e, 2), STATUS_OK);
  int n = 0;
  char *hooks = received(http.dir, ".json", &n);
  cr_assert_eq(n, 4, "welcome and confirmation by SMS, for both: %s", hooks);
  free(hooks);
  cr_assert_eq(gauge("shop_notification_pending", "email"), 4.0);
  cr_assert_eq(gauge("shop_notification_pending", "sms"), 0.0);
  char nid[100];
  snprintf(nid, sizeof nid, "%s:email", e[0].id);
  cr_assert_eq(tries_of(nid), 1);
  /* The ladder: 1 s, 2 s, 4 s, 8 s, 8 s after the first try. A round
   * before a step is due tries nothing. */
  int64_t t0 = clock_now_ms();
  cr_assert_eq(send_due_at(t0 + 500), 0);
  cr_assert_eq(tries_of(nid), 1);
  int64_t at = t0;
  const int64_t steps[] = {1000, 2000, 4000, 8000, 8000};
  for (size_t i = 0; i < sizeof steps / sizeof steps[0]; i++) {
    at += steps[i] + 100;
    cr_assert_eq(send_due_at(at), 0);
    cr_assert_eq(tries_of(nid), (int64_t)i + 2, "step %zu", i);
    cr_assert_eq(send_due_at(at + steps[i] / 2), 0); /* not due yet */
    cr_assert_eq(tries_of(nid), (int64_t)i + 2, "step %zu", i);
  }
  cr_assert_geq(gauge("shop_notification_oldest_pending_seconds", "email"), 0.0);
  cr_assert(ctx.link[1].down);
  /* Back: every waiting email goes out once, the next time one is due. */
  sink_start(&smtp, "smtp_sink.py");
  at += 8000 + 100;
  cr_assert_eq(send_due_at(at), 4);
  cr_assert(!ctx.link[1].down);
  cr_assert_eq(send_due_at(at + 60000 - 1000), 0);
  char *mail = received(smtp.dir, ".eml", &n);
  cr_assert_eq(n, 4, "%s", mail);
  cr_assert(strstr(mail, "X-Envelope-To: barbara@example.com") != NULL, "%s", mail);
  cr_assert(strstr(mail, "X-Envelope-To: edsger@example.com") != NULL, "%s", mail);
  free(mail);
  cr_assert_eq(gauge("shop_notification_pending", "email"), 0.0);
  cr_assert_eq(domtest_count(db, nid, "shop.notification.v1.NotificationSent"), 1);
  ProtobufCMessage *sent =
      domtest_last(db, nid, &shop__notification__v1__notification_sent__descriptor, NULL);
  cr_assert_not_null(sent);
  cr_assert_eq(((Shop__Notification__V1__NotificationSent *)sent)->attempts, 7);
  protobuf_c_message_free_unpacked(sent, NULL);
}

/* The X-Envelope-Peer line (the SMTP client's address and port) of mail
 * number k (1, 2, ...) in the sink's folder. */
static void peer_of(int k, char *out, size_t len) {
  char path[400];
  snprintf(path, sizeof path, "%s/%04d.eml", smtp.dir, k);
  FILE *f = fopen(path, "r");
  cr_assert_not_null(f, "no %s", path);
  char line[300];
  out[0] = '\0';
  while (fgets(line, sizeof line, f) != NULL) {
    if (strncmp(line, "X-Envelope-Peer: ", 17) == 0) {
      size_t n = strcspn(line + 17, "\r\n");
      if (n >= len) n = len - 1;
      memcpy(out, line + 17, n);
      out[n] = '\0';
      break;
    }
  }
  fclose(f);
  cr_assert(out[0] != '\0', "%s has no X-Envelope-Peer line", path);
}

Test(notify, mails_share_one_smtp_session_and_a_dropped_one_is_reopened_at_once) {
  sink_start(&smtp, "smtp_sink.py");
  notify_channel ch = notify_smtp_channel(smtp_ch);
  notify_message m = {.event_type = "shop.order.v1.OrderConfirmed",
                      .to = "ada@example.com",
                      .user_id = "u1",
                      .subject = "Your order",
                      .body = "Thank you.\n"};
  char err[512] = "", id[EVENTS_ID_SIZE];
  for (int i = 0; i < 3; i++) {
    domtest_id(id);
    m.message_id = id;
    cr_assert_eq(ch.send_cb(ch.self, &m, err, sizeof err), NOTIFY_OK, "mail %d: %s", i + 1, err);
  }
  char p1[100], p2[100], p3[100], p4[100];
  peer_of(1, p1, sizeof p1);
  peer_of(2, p2, sizeof p2);
  peer_of(3, p3, sizeof p3);
  cr_assert_str_eq(p1, p2, "the second mail came on a new connection");
  cr_assert_str_eq(p1, p3, "the third mail came on a new connection");
  /* The server restarts: the kept connection is gone; the next mail goes
   * out on a new one, not on a backoff. */
  sink_stop(&smtp);
  sink_start(&smtp, "smtp_sink.py");
  domtest_id(id);
  m.message_id = id;
  cr_assert_eq(ch.send_cb(ch.self, &m, err, sizeof err), NOTIFY_OK, "after the restart: %s", err);
  peer_of(4, p4, sizeof p4);
  cr_assert_str_neq(p1, p4);
  int n = 0;
  free(received(smtp.dir, ".eml", &n));
  cr_assert_eq(n, 4);
}

static int dlt_cb(const events_dlt_entry *d, void *arg) {
  const char *want = ((const char **)arg)[0];
  if (strcmp(d->event_id, want) == 0) {
    ((const char **)arg)[1] = "found";
    cr_expect_str_eq(d->original_topic, topic);
    cr_expect_eq(d->original_offset, 7);
    cr_expect_str_eq(d->group, "notification-worker");
    cr_expect(strstr(d->error, "given up") != NULL, "%s", d->error);
  }
  return 0;
}

Test(notify, a_message_waiting_past_the_give_up_time_fails_and_is_dead_lettered) {
  char err[512];
  char dlt[200];
  snprintf(dlt, sizeof dlt, "%s.notification-worker.dlt", topic);
  cr_assert_eq(events_topic_create(cfg->kafka.brokers, dlt, 1, 30000, err, sizeof err), STATUS_OK,
               "%s", err);
  char uid[EVENTS_ID_SIZE], oid[EVENTS_ID_SIZE];
  customer(uid, "alan@example.com");
  lines L;
  Shop__Order__V1__OrderConfirmed m;
  event e;
  order_confirmed(&e, &m, &L, oid, uid);
  cr_assert_eq(handle(&e, 1), STATUS_OK);
  char nid[100];
  snprintf(nid, sizeof nid, "%s:email", e.id);
  int64_t t0 = clock_now_ms();
  cr_assert_eq(send_due_at(t0 + 30000), 0);
  cr_assert_eq(domtest_count(db, nid, "shop.notification.v1.NotificationFailed"), 0);
  /* Past give_up_s (60 s): failed, not permanent, and dead-lettered. */
  cr_assert_eq(send_due_at(t0 + 61000), 0);
  cr_assert_eq(domtest_count(db, nid, "shop.notification.v1.NotificationFailed"), 1);
  ProtobufCMessage *f =
      domtest_last(db, nid, &shop__notification__v1__notification_failed__descriptor, NULL);
  cr_assert_not_null(f);
  cr_assert(!((Shop__Notification__V1__NotificationFailed *)f)->permanent);
  cr_assert_geq(((Shop__Notification__V1__NotificationFailed *)f)->attempts, 2);
  protobuf_c_message_free_unpacked(f, NULL);
  const char *arg[2] = {e.id, NULL};
  cr_assert_eq(events_dlt_list(cfg->kafka.brokers, topic, "notification-worker", dlt_cb, arg, 30000,
                               err, sizeof err),
               STATUS_OK, "%s", err);
  cr_assert_not_null(arg[1], "no dead letter of %s", e.id);
  /* Nothing is tried after it, even with the server back. */
  int64_t tries = tries_of(nid);
  sink_start(&smtp, "smtp_sink.py");
  cr_assert_eq(send_due_at(t0 + 120000), 0);
  cr_assert_eq(tries_of(nid), tries);
  cr_assert_eq(gauge("shop_notification_pending", "email"), 0.0);
  int n = 0;
  char *mail = received(smtp.dir, ".eml", &n);
  cr_assert_eq(n, 0, "%s", mail);
  free(mail);
  events_topic_delete(cfg->kafka.brokers, dlt, 30000, err, sizeof err);
}
