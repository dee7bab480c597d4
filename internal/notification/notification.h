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
 * Delivery is a mail queue (issue 19; queue.c), as Postfix's is (RFC 5321
 * 4.5.4.1): the consumer's handler only queues. For each channel a
 * message goes on, it renders the text and writes one row of table
 * notifications (status pending, with the text and the source event's
 * envelope, topic, partition and offset) in the consumer's transaction,
 * so the event is done at its commit whatever the channels do, and a
 * redelivery queues nothing twice (the row's key is the notification id).
 * One sender thread per channel (notify_queue_start) sends what is due,
 * one message per transaction of its own (the row locked FOR UPDATE SKIP
 * LOCKED, so several instances never send one message twice), and
 * commits the outcome with NotificationSent or NotificationFailed in the
 * outbox. A crash between the send and that commit sends again (at least
 * once; the receiver drops the repeat by its id).
 *
 * Retries: a transient failure (SMTP 4xx, a webhook's 408) defers the
 * message alone; a channel that does not answer (no connection, time-out,
 * HTTP 5xx or 429) defers every message of the channel that is due, each
 * on its own ladder: the k-th try is followed by a wait of
 * notify.retry_backoff_ms * 2^(k-1), at most notify.retry_backoff_max_ms.
 * A down channel is logged once (warn) when it stops answering and once
 * (info) when it answers again, with the count of messages that waited;
 * those are then due at once. Per-message lines are debug. A channel that
 * is down blocks no other: each has its own thread. A message still
 * waiting notify.give_up_s after it was queued is given up: its source
 * event goes to the group's dead-letter topic (events_dlt_send, headers
 * naming the notification and the last error), the row is marked expired,
 * NotificationFailed (permanent = false) is emitted and the event's inbox
 * row forgotten, so that replaying the dead letter queues the message
 * again. A permanent failure (SMTP 5xx, HTTP 4xx other than 408/429) is
 * recorded failed with NotificationFailed (permanent = true); nothing
 * more is tried. /metrics: shop_notification_pending{channel} and
 * shop_notification_oldest_pending_seconds{channel} (notify_metrics_cb).
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
#include "metrics/metrics.h"
#include "status/status.h"

extern const db_migration notification_migrations[];
extern const size_t notification_migrations_count;

typedef enum notify_result {
  NOTIFY_OK = 0,
  NOTIFY_TRANSIENT,   /* the channel answered, but not now for this message */
  NOTIFY_PERMANENT,   /* never for this message */
  NOTIFY_UNREACHABLE, /* the channel did not answer: every message waits */
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

/* libcurl channels. The created objects copy what they need from cfg.
 * The SMTP channel keeps its connection open between mails (one SMTP
 * session carries many) and opens a new one when the server has dropped
 * it; a channel may be used from any thread (sends are serialised). */
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

/* What a channel's sender knows of its channel; its thread's own. */
typedef struct notify_link {
  bool down;
  int64_t down_since_ms;
} notify_link;

typedef struct notify_queue notify_queue;

typedef struct notify_ctx {
  const char *program; /* event source */
  db_pool *db;         /* the senders' own connections */
  outbox_sink sink;
  notify_channel email, sms, push;
  const char *admin_email;
  const char *brokers; /* for the dead letters of given-up messages */
  int64_t retry_backoff_ms;
  int64_t retry_backoff_max_ms;
  int64_t give_up_ms;
  notify_link link[4]; /* by channel number */
  notify_queue *queue; /* nudged after each consumer commit; may be NULL */
} notify_ctx;

/* Fills ctx from cfg (admin email, the queue's timing, the brokers);
 * channels are set by the caller. cfg must outlive ctx. */
void notify_ctx_init(notify_ctx *ctx, const shop_cfg *cfg, const char *program, db_pool *db,
                     outbox_sink sink);

/* One round of every channel's sender on the calling thread, with now_ms
 * as the time: gives up what waited past give_up_ms, then sends what is
 * due (see above). Returns the number of messages sent, or -1 when the
 * database failed (errbuf says why). Tests call it; the sender threads run
 * the same code, one channel each. */
int notify_queue_run_due(notify_ctx *ctx, int64_t now_ms, char *errbuf, size_t errlen);

/* Starts the sender threads of ctx's channels (sets ctx->queue). ctx must
 * outlive the queue. On success *out owns it. */
status_code notify_queue_start(notify_queue **out, notify_ctx *ctx, char *errbuf, size_t errlen);

/* Wakes the senders: something was queued. Thread-safe; q may be NULL. */
void notify_queue_nudge(notify_queue *q);

/* Stops and joins the senders (each finishes the send in hand), frees the
 * queue and clears ctx->queue; NULL is fine. */
void notify_queue_stop(notify_queue *q);

/* /metrics (app_metrics_cb; arg: notify_ctx *, unused): the messages
 * waiting per channel, and the age of the oldest. */
void notify_metrics_cb(db_conn *db, metrics_registry *reg, void *arg);

/* The consumer of group "notification-worker" (arg: notify_ctx *): user
 * events keep the contacts; order and payment events mail their customer,
 * InventoryLow the admin. */
extern const consumer_spec notify_consumer;

#endif
