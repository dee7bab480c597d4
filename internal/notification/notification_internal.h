/* notification's own: what worker.c and queue.c share. */
#ifndef SHOP_NOTIFICATION_INTERNAL_H
#define SHOP_NOTIFICATION_INTERNAL_H

#include "notification/notification.h"

/* Channel numbers (Shop__Notification__V1__Channel). */
enum { NOTIFY_CH_EMAIL = 1, NOTIFY_CH_SMS = 2, NOTIFY_CH_PUSH = 3 };

/* A row's status (migrations/002_queue.sql). */
enum { NOTIFY_ST_SENT = 1, NOTIFY_ST_FAILED = 2, NOTIFY_ST_PENDING = 3, NOTIFY_ST_EXPIRED = 4 };

/* "email", "sms", "push": a notification id's suffix, a metric label. */
const char *notify_channel_word(int ch);

/* A message's outcome, announced with NotificationSent (sent) or
 * NotificationFailed. Strings are borrowed. */
typedef struct notify_outcome {
  const char *nid;
  const char *event_id;
  const char *event_type;
  int channel;
  const char *recipient;
  const char *user_id;
  int attempts;
  const char *last_error;
  bool sent;
  bool permanent;
} notify_outcome;

/* Appends the announcement of o to the outbox in tx, caused by src (the
 * message's source event). */
status_code notify_emit(notify_ctx *ctx, db_conn *tx, const events_envelope *src,
                        const notify_outcome *o, char *errbuf, size_t errlen);

#endif
