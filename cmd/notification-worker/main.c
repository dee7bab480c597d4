/* notification-worker: messages customers (and the admin) about order,
 * payment, inventory and user events (consumer group "notification-worker")
 * by email over SMTP and SMS / push webhooks, records every send (database
 * shop_notification) and publishes NotificationSent / NotificationFailed
 * through its outbox. No RPC endpoint.
 *
 *   notification-worker [--config PATH]
 *
 * See internal/notification/notification.h and internal/app/app.h. */
#include <curl/curl.h>

#include "app/app.h"
#include "log/log.h"
#include "notification/notification.h"
#include "shop/notification/v1/events.pb-c.h"
#include "topology/topology.h"

typedef struct program {
  notify_ctx ctx; /* first: the consumer's callbacks take it as their arg */
  notify_smtp *smtp;
  notify_webhook *sms, *push;
  notify_queue *queue;
} program;

static status_code setup_cb(app *a, void *arg, char *errbuf, size_t errlen) {
  program *p = arg;
  const shop_cfg *cfg = app_cfg(a);
  status_code st = notify_smtp_create(&p->smtp, cfg, errbuf, errlen);
  if (st != STATUS_OK) return st;
  st = notify_webhook_create(&p->sms, SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_SMS,
                             cfg->notify.sms_url, cfg->notify.timeout_ms, errbuf, errlen);
  if (st != STATUS_OK) return st;
  st = notify_webhook_create(&p->push, SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_PUSH,
                             cfg->notify.push_url, cfg->notify.timeout_ms, errbuf, errlen);
  if (st != STATUS_OK) return st;
  notify_ctx_init(&p->ctx, cfg, app_name(a), app_db(a), outbox_sink_of(app_relay(a), app_name(a)));
  p->ctx.email = notify_smtp_channel(p->smtp);
  p->ctx.sms = notify_webhook_channel(p->sms);
  p->ctx.push = notify_webhook_channel(p->push);
  st = notify_queue_start(&p->queue, &p->ctx, errbuf, errlen);
  if (st != STATUS_OK) return st;
  log_info(NULL, "notification-worker: smtp %s (tls %s), sms %s, push %s", cfg->notify.smtp_url,
           cfg->notify.smtp_tls, cfg->notify.sms_url[0] ? cfg->notify.sms_url : "(none)",
           cfg->notify.push_url[0] ? cfg->notify.push_url : "(none)");
  return STATUS_OK;
}

static void teardown_cb(app *a, void *arg) {
  program *p = arg;
  (void)a;
  notify_queue_stop(p->queue);
  p->queue = NULL;
  notify_smtp_destroy(p->smtp);
  notify_webhook_destroy(p->sms);
  notify_webhook_destroy(p->push);
  p->smtp = NULL;
  p->sms = p->push = NULL;
}

int main(int argc, char **argv) {
  static program p;
  /* Before any thread exists, as libcurl asks. */
  curl_global_init(CURL_GLOBAL_DEFAULT);
  const app_migrations migs[] = {
      {"notification", notification_migrations, notification_migrations_count}};
  const app_spec spec = {
      .name = "notification-worker",
      .db_account = "shop_notification",
      .migrations = migs,
      .n_migrations = 1,
      .relay = true,
      .consumer = &notify_consumer,
      .setup = setup_cb,
      .teardown = teardown_cb,
      .metrics = notify_metrics_cb,
      .arg = &p,
  };
  int rc = app_main(&spec, argc, argv);
  curl_global_cleanup();
  return rc;
}
