/*
 * notification: notification-worker's domain (DESIGN.md, "Notification").
 *
 * From user events it projects contact details and channel preferences
 * (table contacts); for UserRegistered (welcome), OrderConfirmed,
 * OrderCancelled (with the reason), OrderShipped, PaymentFailed,
 * PaymentRefunded it messages the customer on each channel their
 * preferences allow (email by default), and for InventoryLow it mails
 * notify.admin_email. Messages are rendered per event type and channel
 * (notify_render) with the order's lines, total and reason.
 *
 * Channels sit behind one interface (notify_channel): email over SMTP and
 * SMS / push as JSON webhooks, both through libcurl (channels.c). The
 * message id a receiver sees is the source event id (the email's
 * Message-ID "<event id@shop>", the webhook's X-Message-Id header).
 *
 * Delivery: every send is recorded in table notifications (event id,
 * channel, recipient, status, attempts, last error) on a connection of its
 * own, committed right after the send, so that a rolled-back consumer
 * transaction never makes the same channel send twice: without a crash
 * each event is sent once per channel. A crash between the send and that
 * commit sends again (at least once; the receiver drops the repeat by its
 * id). A transient failure is tried notify.retry_max more times with a
 * doubling backoff from notify.retry_backoff_ms; if it still fails the
 * handler returns UNAVAILABLE, the consumer rolls back and tries the event
 * again later, for as long as it takes (an SMTP server that is down gets
 * the message once it is back). A permanent failure (SMTP 5xx, HTTP 4xx
 * other than 408/429) is recorded failed and announced with
 * NotificationFailed (permanent = true); success with NotificationSent.
 * Both are appended to the outbox in the consumer's transaction.
 *
 * A customer whose user events have not been seen (no contact row): user
 * events travel on their own topic, so an order event can overtake its
 * user's registration. An event younger than 15 s (by ce_time) waits for
 * them (UNAVAILABLE: the consumer tries again); an older one is logged and
 * skipped (tests mint tokens for users that never registered).
 *
 * Domain code: no mysql.h, nng.h or rdkafka.h; curl.h only in channels.c.
 */
#ifndef SHOP_NOTIFICATION_H
#define SHOP_NOTIFICATION_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config/config.h"
#include "db/db.h"
#include "events/consumer.h"
#include "events/outbox.h"
#include "status/status.h"

extern const db_migration notification_migrations[];
extern const size_t notification_migrations_count;

typedef enum notify_result {
  NOTIFY_OK = 0,
  NOTIFY_TRANSIENT,
  NOTIFY_PERMANENT,
} notify_result;

/* One rendered message. Strings are borrowed. */
typedef struct notify_message {
  const char *message_id; /* the source event id */
  const char *event_type;
  const char *to;      /* email, phone or user id */
  const char *user_id; /* "" for the admin */
  const char *subject; /* email subject, push title */
  const char *body;    /* email body, SMS text, push body */
} notify_message;

/* A channel: send one message. Thread: the consumer's. */
typedef struct notify_channel {
  int channel; /* Shop__Notification__V1__Channel */
  notify_result (*send_cb)(void *self, const notify_message *m, char *errbuf, size_t errlen);
  void *self;
} notify_channel;

/* libcurl channels. The created objects copy what they need from cfg. */
typedef struct notify_smtp notify_smtp;
typedef struct notify_webhook notify_webhook;
status_code notify_smtp_create(notify_smtp **out, const shop_cfg *cfg, char *errbuf, size_t errlen);
void notify_smtp_destroy(notify_smtp *s);
notify_channel notify_smtp_channel(notify_smtp *s);
/* channel: CHANNEL_SMS or CHANNEL_PUSH; url "" makes a channel that
 * always fails permanently ("not configured"). */
status_code notify_webhook_create(notify_webhook **out, int channel, const char *url,
                                  int timeout_ms, char *errbuf, size_t errlen);
void notify_webhook_destroy(notify_webhook *w);
notify_channel notify_webhook_channel(notify_webhook *w);

/* Rendered text, owned by the caller (notify_text_free). */
typedef struct notify_text {
  char *subject;
  char *body;
} notify_text;
void notify_text_free(notify_text *t);

/* Renders the message about event ev (its data decoded by type) for
 * channel; name greets the user when not empty. False when the event type
 * gets no message. */
bool notify_render(const events_envelope *ev, int channel, const char *name, notify_text *out);

typedef struct notify_ctx {
  const char *program; /* event source */
  db_pool *db;         /* the send records' own connections */
  outbox_sink sink;
  notify_channel email, sms, push;
  const char *admin_email;
  int retry_max;
  int retry_backoff_ms;
} notify_ctx;

/* Fills ctx from cfg (admin email, retries); channels are set by the
 * caller. */
void notify_ctx_init(notify_ctx *ctx, const shop_cfg *cfg, const char *program, db_pool *db,
                     outbox_sink sink);

/* The consumer of group "notification-worker" (arg: notify_ctx *): user
 * events keep the contacts; order and payment events mail their customer,
 * InventoryLow the admin. */
extern const consumer_spec notify_consumer;

#endif
