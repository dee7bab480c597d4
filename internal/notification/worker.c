/* notification-worker's handler (notification.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check/check.h"
#include "clock/clock.h"
#include "log/log.h"
#include "notification/notification.h"
#include "shop/inventory/v1/events.pb-c.h"
#include "shop/notification/v1/events.pb-c.h"
#include "shop/order/v1/events.pb-c.h"
#include "shop/payment/v1/events.pb-c.h"
#include "shop/user/v1/events.pb-c.h"
#include "topology/topology.h"

enum { ST_SENT = 1, ST_FAILED = 2, ST_PENDING = 3 };

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
  ctx->retry_max = cfg->notify.retry_max;
  ctx->retry_backoff_ms = cfg->notify.retry_backoff_ms;
}

static const char *channel_word(int ch) {
  switch (ch) {
  case SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_EMAIL:
    return "email";
  case SHOP__NOTIFICATION__V1__CHANNEL__CHANNEL_SMS:
    return "sms";
  default:
    return "push";
  }
}

static void sleep_ms(int ms) {
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  nanosleep(&ts, NULL);
}

typedef struct target {
  const events_envelope *ev;
  const notify_channel *ch;
  const char *recipient;
  const char *user_id;
  const char *name;
} target;

static status_code emit(notify_ctx *ctx, db_conn *tx, const target *t, const char *nid, bool sent,
                        int attempts, const char *last_error, bool permanent, char *errbuf,
                        size_t errlen) {
  const outbox_cause cause = outbox_cause_of_event(t->ev);
  if (sent) {
    Shop__Notification__V1__NotificationSent m = SHOP__NOTIFICATION__V1__NOTIFICATION_SENT__INIT;
    m.notification_id = (char *)nid;
    m.source_event_id = t->ev->id;
    m.source_event_type = t->ev->type;
    m.channel = (Shop__Notification__V1__Channel)t->ch->channel;
    m.recipient = (char *)t->recipient;
    m.user_id = (char *)t->user_id;
    m.attempts = attempts;
    return outbox_emit(&ctx->sink, tx, &cause, nid, 1, &m.base, errbuf, errlen);
  }
  Shop__Notification__V1__NotificationFailed m = SHOP__NOTIFICATION__V1__NOTIFICATION_FAILED__INIT;
  m.notification_id = (char *)nid;
  m.source_event_id = t->ev->id;
  m.source_event_type = t->ev->type;
  m.channel = (Shop__Notification__V1__Channel)t->ch->channel;
  m.recipient = (char *)t->recipient;
  m.user_id = (char *)t->user_id;
  m.attempts = attempts;
  char le[1001];
  snprintf(le, sizeof le, "%s", last_error != NULL ? last_error : "");
  m.last_error = le;
  m.permanent = permanent;
  return outbox_emit(&ctx->sink, tx, &cause, nid, 1, &m.base, errbuf, errlen);
}

static status_code record(db_conn *rc, const target *t, const char *nid, int status, int attempts,
                          const char *last_error, char *errbuf, size_t errlen) {
  char le[1001];
  snprintf(le, sizeof le, "%s", last_error != NULL ? last_error : "");
  db_value p[10] = {
      DB_STR(nid),          DB_STR(t->ev->id),     DB_STR(t->ev->type), DB_I64(t->ch->channel),
      DB_STR(t->recipient), DB_STR(t->user_id),    DB_I64(status),      DB_I64(attempts),
      DB_STR(le),           DB_I64(clock_now_ms())};
  return db_exec(rc,
                 "INSERT INTO notifications (notification_id, event_id, event_type, channel,"
                 " recipient, user_id, status, attempts, last_error, updated_ms)"
                 " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
                 " status = VALUES(status), attempts = VALUES(attempts),"
                 " last_error = VALUES(last_error), updated_ms = VALUES(updated_ms)",
                 p, 10, NULL, NULL, errbuf, errlen);
}

/* Sends one message on one channel, at most once per (event, channel)
 * unless a crash intervenes; see notification.h. */
static status_code deliver(notify_ctx *ctx, db_conn *tx, const target *t, char *errbuf,
                           size_t errlen) {
  char nid[128];
  snprintf(nid, sizeof nid, "%s:%s", t->ev->id, channel_word(t->ch->channel));
  db_conn *rc = NULL;
  status_code st = db_pool_get(ctx->db, &rc, errbuf, errlen);
  if (st != STATUS_OK) return STATUS_UNAVAILABLE;
  int status = 0, attempts = 0;
  char last[1001] = "";
  db_rows *r = NULL;
  db_value q[1] = {DB_STR(nid)};
  st = db_query(rc,
                "SELECT status, attempts, last_error FROM notifications WHERE notification_id = ?",
                q, 1, &r, errbuf, errlen);
  if (st != STATUS_OK) goto out;
  if (db_rows_next(r)) {
    status = (int)db_rows_i64(r, 0);
    attempts = (int)db_rows_i64(r, 1);
    snprintf(last, sizeof last, "%s", db_rows_str(r, 2, NULL));
  }
  db_rows_free(r);
  if (status == ST_SENT || status == ST_FAILED) {
    /* Sent (or failed for good) by an earlier, rolled-back try: only the
     * announcement is left to do. */
    st = emit(ctx, tx, t, nid, status == ST_SENT, attempts, last, true, errbuf, errlen);
    goto out;
  }
  notify_text txt;
  if (!notify_render(t->ev, t->ch->channel, t->name, &txt)) {
    st = STATUS_OK; /* no template for this event and channel */
    goto out;
  }
  notify_message m = {.message_id = t->ev->id,
                      .event_type = t->ev->type,
                      .to = t->recipient,
                      .user_id = t->user_id,
                      .subject = txt.subject,
                      .body = txt.body};
  notify_result res = NOTIFY_TRANSIENT;
  int backoff = ctx->retry_backoff_ms;
  for (int i = 0; i <= ctx->retry_max; i++) {
    if (i > 0) {
      sleep_ms(backoff);
      if (backoff < 60000) backoff *= 2;
    }
    attempts++;
    last[0] = '\0';
    res = t->ch->send_cb(t->ch->self, &m, last, sizeof last);
    if (res != NOTIFY_TRANSIENT) break;
    log_warn(NULL, "notification %s: attempt %d: %s", nid, attempts, last);
  }
  notify_text_free(&txt);
  int nst = res == NOTIFY_OK ? ST_SENT : res == NOTIFY_PERMANENT ? ST_FAILED : ST_PENDING;
  char err2[512];
  status_code rst = record(rc, t, nid, nst, attempts, last, err2, sizeof err2);
  if (rst != STATUS_OK) log_warn(NULL, "notification %s: recording: %s", nid, err2);
  if (res == NOTIFY_TRANSIENT) {
    snprintf(errbuf, errlen, "notification %s: %s", nid, last);
    st = STATUS_UNAVAILABLE;
    goto out;
  }
  if (res == NOTIFY_PERMANENT) log_warn(NULL, "notification %s failed for good: %s", nid, last);
  st = emit(ctx, tx, t, nid, res == NOTIFY_OK, attempts, last, true, errbuf, errlen);
out:
  db_pool_put(ctx->db, rc);
  return st;
}

static status_code to_user(notify_ctx *ctx, db_conn *tx, const events_envelope *ev,
                           const char *user_id, char *errbuf, size_t errlen) {
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
    target t = {ev, &ctx->email, email, user_id, name};
    st = deliver(ctx, tx, &t, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if (ps && phone[0] != '\0' && ctx->sms.send_cb != NULL) {
    target t = {ev, &ctx->sms, phone, user_id, name};
    st = deliver(ctx, tx, &t, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  if (pp && ctx->push.send_cb != NULL) {
    target t = {ev, &ctx->push, user_id, user_id, name};
    st = deliver(ctx, tx, &t, errbuf, errlen);
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
  target t = {m->env, &ctx->email, ctx->admin_email, "", "admin"};
  return deliver(ctx, tx, &t, errbuf, errlen);
}

static status_code registered_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                    size_t errlen) {
  const Shop__User__V1__UserRegistered *e = (const void *)m->msg;
  status_code st =
      upsert_contact(tx, e->user_id, e->email, e->profile, m->env->sequence, errbuf, errlen);
  return st == STATUS_OK ? to_user(arg, tx, m->env, e->user_id, errbuf, errlen) : st;
}

static status_code profile_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                 size_t errlen) {
  const Shop__User__V1__UserProfileUpdated *e = (const void *)m->msg;
  return upsert_contact(tx, e->user_id, NULL, e->profile, m->env->sequence, errbuf, errlen);
}

/* Order and payment events: to the customer they name. */
static status_code customer_apply(db_conn *tx, const consumer_msg *m, void *arg, char *errbuf,
                                  size_t errlen) {
  return to_user(arg, tx, m->env, check_message_string(m->msg, "customer_id"), errbuf, errlen);
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

const consumer_spec notify_consumer = {.group = TOPOLOGY_GROUP_NOTIFICATION_WORKER,
                                       .types = notify_types,
                                       .n_types = sizeof notify_types / sizeof notify_types[0]};
