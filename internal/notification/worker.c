/* notification-worker's handler (notification.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "check/check.h"
#include "clock/clock.h"
#include "log/log.h"
#include "notification/notification.h"
#include "notification/notification_internal.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/notification/v1/events.pb-c.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "shop/user/v1/events.pb-c.h"
#include "topology/topology.h"

/* How long a message about a user whose user events have not arrived yet
 * waits for them (see to_user). */
#define NOTIFY_CONTACT_WAIT_MS 15000

void notify_ctx_init(notify_ctx *ctx, const shop_cfg *cfg, const char *program, db_pool *db,
                     outbox_sink sink) {
  memset(ctx, 0, sizeof *ctx);
  ctx->program = program;
  ctx->db = db;
  ctx->sink = sink;
  ctx->admin_email = cfg->notify.admin_email;
  ctx->brokers = cfg->kafka.brokers;
  ctx->retry_backoff_ms = cfg->notify.retry_backoff_ms;
  ctx->retry_backoff_max_ms = cfg->notify.retry_backoff_max_ms;
  ctx->give_up_ms = (int64_t)cfg->notify.give_up_s * 1000;
}

const char *notify_channel_word(int ch) {
  switch (ch) {
  case SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_EMAIL:
    return "email";
  case SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_SMS:
    return "sms";
  default:
    return "push";
  }
}

/* The fields NotificationSent and NotificationFailed share. */
#define NOTIFY_OUTCOME_FIELDS(m, o)                                                                \
  do {                                                                                             \
    (m).notification_id = (char *)(o)->nid;                                                        \
    (m).source_event_id = (char *)(o)->event_id;                                                   \
    (m).source_event_type = (char *)(o)->event_type;                                               \
    (m).channel = (Shop__Notification__V1__Channel)(o)->channel;                                   \
    (m).recipient = (char *)(o)->recipient;                                                        \
    (m).user_id = (char *)(o)->user_id;                                                            \
    (m).attempts = (o)->attempts;                                                                  \
  } while (0)

status_code notify_emit(notify_ctx *ctx, db_conn *tx, const events_envelope *src,
                        const notify_outcome *o, char *errbuf, size_t errlen) {
  const outbox_cause cause = outbox_cause_of_event(src);
  if (o->sent) {
    Shop__Notification__V1__NotificationSent m = SHOP__NOTIFICATION__V1__NOTIFICATION_SENT__INIT;
    NOTIFY_OUTCOME_FIELDS(m, o);
    return outbox_emit(&ctx->sink, tx, &cause, o->nid, 1, &m.base, errbuf, errlen);
  }
  Shop__Notification__V1__NotificationFailed m = SHOP__NOTIFICATION__V1__NOTIFICATION_FAILED__INIT;
  NOTIFY_OUTCOME_FIELDS(m, o);
  char le[1001];
  snprintf(le, sizeof le, "%s", o->last_error != NULL ? o->last_error : "");
  m.last_error = le;
  m.permanent = o->permanent;
  return outbox_emit(&ctx->sink, tx, &cause, o->nid, 1, &m.base, errbuf, errlen);
}

typedef struct target {
  const consumer_msg *m;
  const notify_channel *ch;
  const char *recipient;
  const char *user_id;
  const char *name;
} target;

/* Queues one message on one channel in the consumer's transaction tx (see
 * notification.h): a redelivered event finds its row and changes nothing,
 * unless the row was given up (a replayed dead letter queues it again) or
 * is of the first schema (no text yet). */
static status_code enqueue(notify_ctx *ctx, db_conn *tx, const target *t, char *errbuf,
                           size_t errlen) {
  (void)ctx;
  const events_envelope *ev = t->m->env;
  notify_text txt;
  if (!notify_render(ev, t->ch->channel, t->name, &txt)) return STATUS_OK; /* no template */
  size_t n = protobuf_c_message_get_packed_size(&ev->base);
  uint8_t *src = malloc(n > 0 ? n : 1);
  if (src == NULL) {
    notify_text_free(&txt);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  protobuf_c_message_pack(&ev->base, src);
  char nid[128];
  snprintf(nid, sizeof nid, "%s:%s", ev->id, notify_channel_word(t->ch->channel));
  int64_t now = clock_now_ms();
  db_value p[16] = {DB_STR(nid),
                    DB_STR(ev->id),
                    DB_STR(ev->type),
                    DB_I64(t->ch->channel),
                    DB_STR(t->recipient),
                    DB_STR(t->user_id),
                    DB_I64(NOTIFY_ST_PENDING),
                    DB_I64(now),
                    DB_STR(txt.subject),
                    DB_STR(txt.body),
                    DB_BLOB(src, n),
                    DB_STR(t->m->topic != NULL ? t->m->topic : ""),
                    DB_I64(t->m->partition),
                    DB_I64(t->m->offset),
                    DB_I64(now),
                    DB_I64(now)};
  uint64_t inserted = 0;
  status_code st = db_exec(
      tx,
      "INSERT INTO notifications (notification_id, event_id, event_type, channel, recipient,"
      " user_id, status, attempts, last_error, updated_ms, subject, body, source, source_topic,"
      " source_partition, source_offset, queued_ms, next_ms)"
      " VALUES (?, ?, ?, ?, ?, ?, ?, 0, '', ?, ?, ?, ?, ?, ?, ?, ?, ?)"
      " ON DUPLICATE KEY UPDATE notification_id = notification_id",
      p, 16, &inserted, NULL, errbuf, errlen);
  if (st == STATUS_OK && inserted == 0) {
    /* The row exists: taken again only when given up or of the first
     * schema. */
    db_value u[11] = {p[4], p[5], p[8], p[9], p[10], p[11], p[12], p[13], p[14], p[15], p[0]};
    st = db_exec(tx,
                 "UPDATE notifications SET status = 3, attempts = 0, last_error = '',"
                 " recipient = ?, user_id = ?, subject = ?, body = ?, source = ?,"
                 " source_topic = ?, source_partition = ?, source_offset = ?, queued_ms = ?,"
                 " next_ms = ?, updated_ms = queued_ms WHERE notification_id = ?"
                 " AND (status = 4 OR (status = 3 AND queued_ms = 0))",
                 u, 11, NULL, NULL, errbuf, errlen);
  }
  free(src);
  notify_text_free(&txt);
  return st;
}

static status_code to_user(notify_ctx *ctx, db_conn *tx, const consumer_msg *m, const char *user_id,
                           char *errbuf, size_t errlen) {
  const events_envelope *ev = m->env;
  db_value q[1] = {DB_STR(user_id)};
  db_rows *r = NULL;
  status_code st =
      db_query(tx,
               "SELECT email, phone, name, pref_email, pref_sms, pref_push FROM contacts"
               " WHERE user_id = ?",
               q, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    /* User events travel on another topic: a fresh event may overtake the
     * registration of its user. Wait a little for it (the consumer tries
     * the batch again); older events of users never seen are skipped. */
    int64_t age = clock_now_ms() - events_time_ms(ev);
    if (age < NOTIFY_CONTACT_WAIT_MS) {
      snprintf(errbuf, errlen, "waiting for the user events of %s (%s %s)", user_id, ev->type,
               ev->id);
      return STATUS_UNAVAILABLE;
    }
    log_info(NULL, "notification: no contact for user %s; %s %s not sent", user_id, ev->type,
             ev->id);
    return STATUS_OK;
  }
  char email[321], phone[33], name[201];
  snprintf(email, sizeof email, "%s", db_rows_str(r, 0, NULL));
  snprintf(phone, sizeof phone, "%s", db_rows_str(r, 1, NULL));
  snprintf(name, sizeof name, "%s", db_rows_str(r, 2, NULL));
  bool pe = db_rows_i64(r, 3) != 0, ps = db_rows_i64(r, 4) != 0, pp = db_rows_i64(r, 5) != 0;
  db_rows_free(r);
  if (pe && email[0] != '\0') {
    target t = {m, &ctx->email, email, user_id, name};
    st = enqueue(ctx, tx, &t, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if (ps && phone[0] != '\0' && ctx->sms.send_cb != NULL) {
    target t = {m, &ctx->sms, phone, user_id, name};
    st = enqueue(ctx, tx, &t, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if (pp && ctx->push.send_cb != NULL) {
    target t = {m, &ctx->push, user_id, user_id, name};
    st = enqueue(ctx, tx, &t, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

static status_code upsert_contact(db_conn *tx, const char *user_id, const char *email,
                                  const Shop__User__V1__UserProfile *pr, int64_t version,
                                  char *errbuf, size_t errlen) {
  bool pe = true, ps = false, pp = false;
  if (pr != NULL && pr->notification_preferences != NULL) {
    pe = pr->notification_preferences->email;
    ps = pr->notification_preferences->sms;
    pp = pr->notification_preferences->push;
  }
  db_value p[9] = {DB_STR(user_id),
                   DB_STR(email != NULL ? email : ""),
                   DB_STR(pr != NULL ? pr->phone : ""),
                   DB_STR(pr != NULL ? pr->name : ""),
                   DB_I64(pe),
                   DB_I64(ps),
                   DB_I64(pp),
                   DB_I64(version),
                   DB_I64(email != NULL)};
  /* Only a newer event changes the row; UserProfileUpdated keeps the
   * email (it does not carry one). */
  return db_exec(
      tx,
      "INSERT INTO contacts (user_id, email, phone, name, pref_email, pref_sms, pref_push,"
      " version) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
      " email = IF(VALUES(version) > version AND ?, VALUES(email), email),"
      " phone = IF(VALUES(version) > version, VALUES(phone), phone),"
      " name = IF(VALUES(version) > version, VALUES(name), name),"
      " pref_email = IF(VALUES(version) > version, VALUES(pref_email), pref_email),"
      " pref_sms = IF(VALUES(version) > version, VALUES(pref_sms), pref_sms),"
      " pref_push = IF(VALUES(version) > version, VALUES(pref_push), pref_push),"
      " version = GREATEST(version, VALUES(version))",
      p, 9, NULL, NULL, errbuf, errlen);
}

/* InventoryLow goes to the admin; the template reads the event itself. */
static status_code low_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                             size_t errlen) {
  notify_ctx *ctx = arg;
  target t = {m, &ctx->email, ctx->admin_email, "", "admin"};
  return enqueue(ctx, tx, &t, errbuf, errlen);
}

static status_code registered_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                    size_t errlen) {
  const Shop__User__V1__UserRegistered *e = (const void *)m->msg;
  status_code st =
      upsert_contact(tx, e->user_id, e->email, e->profile, m->env->sequence, errbuf, errlen);
  return st == STATUS_OK ? to_user(arg, tx, m, e->user_id, errbuf, errlen) : st;
}

static status_code profile_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  const Shop__User__V1__UserProfileUpdated *e = (const void *)m->msg;
  return upsert_contact(tx, e->user_id, NULL, e->profile, m->env->sequence, errbuf, errlen);
}

/* Order and payment events: to the customer they name. */
static status_code customer_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  return to_user(arg, tx, m, check_message_string(m->msg, "customer_id"), errbuf, errlen);
}

static const consumer_event_type notify_types[] = {
    {&shop__user__v1__user_registered__descriptor, NULL, registered_apply, 0},
    {&shop__user__v1__user_profile_updated__descriptor, NULL, profile_apply, 0},
    {&shop__order__v1__order_confirmed__descriptor, NULL, customer_apply, 0},
    {&shop__order__v1__order_cancelled__descriptor, NULL, customer_apply, 0},
    {&shop__order__v1__order_shipped__descriptor, NULL, customer_apply, 0},
    {&shop__payment__v1__payment_failed__descriptor, NULL, customer_apply, 0},
    {&shop__payment__v1__payment_refunded__descriptor, NULL, customer_apply, 0},
    {&shop__inventory__v1__inventory_low__descriptor, NULL, low_apply, 0},
};

/* After a commit that may have queued messages: wake the senders. */
static void committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  (void)msgs;
  (void)n;
  notify_queue_nudge(((notify_ctx *)arg)->queue);
}

const consumer_spec notify_consumer = {.group = TOPOLOGY_GROUP_NOTIFICATION_WORKER,
                                       .types = notify_types,
                                       .n_types = sizeof notify_types / sizeof notify_types[0],
                                       .committed = committed_cb};
