/* notification-worker's mail queue (notification.h, "Delivery"): one
 * sender per channel sends what is due, defers what a channel does not
 * take yet and gives up what waited past notify.give_up_s. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "clock/clock.h"
#include "log/log.h"
#include "notification/notification.h"
#include "notification/notification_internal.h"
#include "shop/notification/v1/events.pb-c.h"
#include "topology/topology.h"

/* The most a sender sleeps between rounds when nothing is due sooner
 * (a message queued by another instance is found by then). */
#define NOTIFY_IDLE_MS 2000
/* Rows given up or deferred per statement round. */
#define NOTIFY_GIVE_UP_BATCH 100

static const notify_channel *channel_of(notify_ctx *ctx, int ch) {
  switch (ch) {
  case NOTIFY_CH_EMAIL:
    return &ctx->email;
  case NOTIFY_CH_SMS:
    return &ctx->sms;
  default:
    return &ctx->push;
  }
}

/* One queued message as read back for sending. */
typedef struct queued {
  char nid[128];
  char event_id[65];
  char event_type[256];
  char recipient[321];
  char user_id[129];
  char last[1001];
  int attempts;
  int64_t queued_ms;
} queued;

#define QUEUED_COLS                                                                                \
  "notification_id, event_id, event_type, recipient, user_id, last_error, attempts, queued_ms"

static void queued_read(db_rows *r, queued *q) {
  snprintf(q->nid, sizeof q->nid, "%s", db_rows_str(r, 0, NULL));
  snprintf(q->event_id, sizeof q->event_id, "%s", db_rows_str(r, 1, NULL));
  snprintf(q->event_type, sizeof q->event_type, "%s", db_rows_str(r, 2, NULL));
  snprintf(q->recipient, sizeof q->recipient, "%s", db_rows_str(r, 3, NULL));
  snprintf(q->user_id, sizeof q->user_id, "%s", db_rows_str(r, 4, NULL));
  snprintf(q->last, sizeof q->last, "%s", db_rows_str(r, 5, NULL));
  q->attempts = (int)db_rows_i64(r, 6);
  q->queued_ms = db_rows_i64(r, 7);
}

/* The announcement of a message's outcome, in tx. cause: its source
 * event's (the envelope queued with it). */
static status_code announce(notify_ctx *ctx, db_conn *tx, const events_envelope *src, int ch,
                            const queued *q, bool sent, bool permanent, char *errbuf,
                            size_t errlen) {
  notify_outcome o = {.nid = q->nid,
                      .event_id = q->event_id,
                      .event_type = q->event_type,
                      .channel = ch,
                      .recipient = q->recipient,
                      .user_id = q->user_id,
                      .attempts = q->attempts,
                      .last_error = q->last,
                      .sent = sent,
                      .permanent = permanent};
  return notify_emit(ctx, tx, src, &o, errbuf, errlen);
}

/* The source envelope of nid (kept with the message), or NULL. */
static events_envelope *source_of(db_conn *tx, const char *nid, char *topic, size_t topic_len,
                                  int32_t *partition, int64_t *offset, char *errbuf,
                                  size_t errlen) {
  db_value p[1] = {DB_STR(nid)};
  db_rows *r = NULL;
  if (db_query(tx,
               "SELECT source, source_topic, source_partition, source_offset FROM notifications"
               " WHERE notification_id = ?",
               p, 1, &r, errbuf, errlen) != STATUS_OK)
    return NULL;
  events_envelope *ev = NULL;
  if (db_rows_next(r) && !db_rows_is_null(r, 0)) {
    size_t len = 0;
    const char *b = db_rows_str(r, 0, &len);
    ev = shop__events__v1__event_envelope__unpack(NULL, len, (const uint8_t *)b);
    snprintf(topic, topic_len, "%s", db_rows_str(r, 1, NULL));
    *partition = (int32_t)db_rows_i64(r, 2);
    *offset = db_rows_i64(r, 3);
  }
  db_rows_free(r);
  if (ev == NULL) status_seterr(errbuf, errlen, "notification %s: no source event kept", nid);
  return ev;
}

/* Gives up one message that waited too long (notification.h). */
static status_code give_up_one(notify_ctx *ctx, db_conn *c, int ch, const char *nid,
                               int64_t deadline, char *errbuf, size_t errlen) {
  status_code st = db_begin(c, errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value p[4] = {DB_STR(nid), DB_I64(ch), DB_I64(deadline)};
  db_rows *r = NULL;
  st = db_query(c,
                "SELECT " QUEUED_COLS
                " FROM notifications WHERE notification_id = ? AND"
                " channel = ? AND status = 3 AND queued_ms > 0 AND queued_ms <= ?"
                " FOR UPDATE SKIP LOCKED",
                p, 3, &r, errbuf, errlen);
  if (st != STATUS_OK) goto fail;
  queued q;
  bool have = db_rows_next(r);
  if (have) queued_read(r, &q);
  db_rows_free(r);
  if (!have) {
    db_rollback(c); /* sent meanwhile, or another instance has it */
    return STATUS_OK;
  }
  char topic[250] = "";
  int32_t part = -1;
  int64_t off = -1;
  events_envelope *src = source_of(c, nid, topic, sizeof topic, &part, &off, errbuf, errlen);
  if (src == NULL) {
    st = STATUS_INTERNAL;
    goto fail;
  }
  char why[1200];
  snprintf(why, sizeof why, "notification %s given up after %d tries: %s", nid, q.attempts, q.last);
  /* The dead letter names the topic it was read from. */
  char *keep = src->topic;
  src->topic = topic;
  st = events_dlt_send(ctx->brokers, src, TOPOLOGY_GROUP_NOTIFICATION_WORKER, part, off, why,
                       q.attempts, 10000, errbuf, errlen);
  src->topic = keep;
  if (st == STATUS_OK) {
    db_value u[2] = {DB_I64(clock_now_ms()), DB_STR(nid)};
    st = db_exec(c, "UPDATE notifications SET status = 4, updated_ms = ? WHERE notification_id = ?",
                 u, 2, NULL, NULL, errbuf, errlen);
  }
  if (st == STATUS_OK) st = announce(ctx, c, src, ch, &q, false, false, errbuf, errlen);
  if (st == STATUS_OK)
    st = consumer_inbox_forget(c, TOPOLOGY_GROUP_NOTIFICATION_WORKER, q.event_id, errbuf, errlen);
  shop__events__v1__event_envelope__free_unpacked(src, NULL);
  if (st != STATUS_OK) goto fail;
  st = db_commit(c, errbuf, errlen);
  if (st != STATUS_OK) return st;
  ctx->sink.committed_cb(ctx->sink.self);
  log_warn(NULL, "%s", why);
  return STATUS_OK;
fail:
  db_rollback(c);
  return st;
}

static status_code give_up(notify_ctx *ctx, db_conn *c, int ch, int64_t now_ms, char *errbuf,
                           size_t errlen) {
  int64_t deadline = now_ms - ctx->give_up_ms;
  db_value p[3] = {DB_I64(ch), DB_I64(deadline), DB_I64(NOTIFY_GIVE_UP_BATCH)};
  db_rows *r = NULL;
  status_code st = db_query(c,
                            "SELECT notification_id FROM notifications WHERE status = 3 AND"
                            " channel = ? AND queued_ms > 0 AND queued_ms <= ? LIMIT ?",
                            p, 3, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  size_t n = 0;
  char(*ids)[128] = calloc(NOTIFY_GIVE_UP_BATCH, sizeof *ids);
  if (ids == NULL) {
    db_rows_free(r);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  while (n < NOTIFY_GIVE_UP_BATCH && db_rows_next(r))
    snprintf(ids[n++], sizeof ids[0], "%s", db_rows_str(r, 0, NULL));
  db_rows_free(r);
  for (size_t i = 0; i < n && st == STATUS_OK; i++)
    st = give_up_one(ctx, c, ch, ids[i], deadline, errbuf, errlen);
  free(ids);
  return st;
}

/* Defers in c's open transaction the message nid, or (nid NULL) every
 * message of ch due at now_ms: one more try counted, the next after
 * retry_backoff_ms * 2^(tries-1), at most retry_backoff_max_ms. */
static status_code defer(notify_ctx *ctx, db_conn *c, int ch, const char *nid, int64_t now_ms,
                         const char *error, char *errbuf, size_t errlen) {
  char le[1001];
  snprintf(le, sizeof le, "%s", error);
  db_value p[7] = {DB_STR(le),
                   DB_I64(now_ms),
                   DB_I64(now_ms),
                   DB_I64(ctx->retry_backoff_max_ms),
                   DB_I64(ctx->retry_backoff_ms),
                   DB_I64(ch),
                   nid != NULL ? DB_STR(nid) : DB_I64(now_ms)};
  return db_exec(c,
                 nid != NULL ? "UPDATE notifications SET attempts = attempts + 1, last_error = ?,"
                               " updated_ms = ?, next_ms = ? + LEAST(?, ? << LEAST(attempts - 1,"
                               " 40)) WHERE status = 3 AND channel = ? AND notification_id = ?"
                             : "UPDATE notifications SET attempts = attempts + 1, last_error = ?,"
                               " updated_ms = ?, next_ms = ? + LEAST(?, ? << LEAST(attempts - 1,"
                               " 40)) WHERE status = 3 AND channel = ? AND queued_ms > 0"
                               " AND next_ms <= ?",
                 p, 7, NULL, NULL, errbuf, errlen);
}

/* Tries the due message of ch that is first in line. 1: one was sent; 0:
 * none was (nothing due, or the channel deferred it); -1: the database
 * failed. */
static int send_one(notify_ctx *ctx, db_conn *c, int ch, int64_t now_ms, char *errbuf,
                    size_t errlen) {
  notify_link *link = &ctx->link[ch];
  if (db_begin(c, errbuf, errlen) != STATUS_OK) return -1;
  db_value p[2] = {DB_I64(ch), DB_I64(now_ms)};
  db_rows *r = NULL;
  if (db_query(c,
               "SELECT " QUEUED_COLS ", subject, body FROM notifications WHERE status = 3 AND"
               " channel = ? AND queued_ms > 0 AND next_ms <= ? ORDER BY next_ms LIMIT 1"
               " FOR UPDATE SKIP LOCKED",
               p, 2, &r, errbuf, errlen) != STATUS_OK)
    goto fail;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    db_rollback(c);
    return 0;
  }
  queued q;
  queued_read(r, &q);
  char *subject = strdup(db_rows_str(r, 8, NULL)), *body = strdup(db_rows_str(r, 9, NULL));
  db_rows_free(r);
  char topic[250];
  int32_t part;
  int64_t off;
  events_envelope *src = source_of(c, q.nid, topic, sizeof topic, &part, &off, errbuf, errlen);
  if (subject == NULL || body == NULL || src == NULL) {
    free(subject);
    free(body);
    if (src != NULL)
      shop__events__v1__event_envelope__free_unpacked(src, NULL);
    else
      status_seterr(errbuf, errlen, "notification %s: no source event kept", q.nid);
    goto fail;
  }
  /* The send continues the source event's trace (the webhook's
   * traceparent) and its lines name the event. */
  log_scope scope;
  log_scope_enter(&scope, NULL, src->traceparent, src->id);
  const notify_channel *nc = channel_of(ctx, ch);
  notify_message m = {.message_id = q.event_id,
                      .event_type = q.event_type,
                      .to = q.recipient,
                      .user_id = q.user_id,
                      .subject = subject,
                      .body = body};
  char err[1001] = "";
  notify_result res = nc->send_cb(nc->self, &m, err, sizeof err);
  free(subject);
  free(body);
  q.attempts++;
  status_code st = STATUS_OK;
  int sent = 0;
  if (res == NOTIFY_OK || res == NOTIFY_PERMANENT) {
    snprintf(q.last, sizeof q.last, "%s", res == NOTIFY_OK ? "" : err);
    db_value u[4] = {DB_I64(res == NOTIFY_OK ? 1 : 2), DB_STR(q.last), DB_I64(clock_now_ms()),
                     DB_STR(q.nid)};
    st = db_exec(c,
                 "UPDATE notifications SET status = ?, attempts = attempts + 1, last_error = ?,"
                 " updated_ms = ? WHERE notification_id = ?",
                 u, 4, NULL, NULL, errbuf, errlen);
    if (st == STATUS_OK) st = announce(ctx, c, src, ch, &q, res == NOTIFY_OK, true, errbuf, errlen);
    if (res == NOTIFY_PERMANENT)
      log_warn(NULL, "notification %s failed for good: %s", q.nid, err);
    else
      log_debug(NULL, "notification %s sent (%d tries)", q.nid, q.attempts);
    sent = res == NOTIFY_OK;
  } else {
    /* TRANSIENT defers this message; UNREACHABLE every due one. */
    st = defer(ctx, c, ch, res == NOTIFY_TRANSIENT ? q.nid : NULL, now_ms, err, errbuf, errlen);
    log_debug(NULL, "notification %s: try %d deferred: %s", q.nid, q.attempts, err);
  }
  log_scope_leave(&scope);
  shop__events__v1__event_envelope__free_unpacked(src, NULL);
  if (st != STATUS_OK) goto fail;
  if (db_commit(c, errbuf, errlen) != STATUS_OK) return -1;
  if (res != NOTIFY_TRANSIENT && res != NOTIFY_UNREACHABLE) ctx->sink.committed_cb(ctx->sink.self);
  if (res == NOTIFY_UNREACHABLE && !link->down) {
    link->down = true;
    link->down_since_ms = now_ms;
    log_warn(NULL, "notification: %s channel unreachable (%s); messages wait for it",
             notify_channel_word(ch), err);
  } else if (res != NOTIFY_UNREACHABLE && link->down) {
    link->down = false;
    /* What waited is due at once. */
    int64_t waited = 0;
    db_value w[2] = {DB_I64(ch)};
    db_query_i64(
        c, "SELECT COUNT(*) FROM notifications WHERE status = 3 AND channel = ? AND attempts > 0",
        w, 1, &waited, errbuf, errlen);
    db_value u[2] = {DB_I64(now_ms), DB_I64(ch)};
    db_exec(c, "UPDATE notifications SET next_ms = ? WHERE status = 3 AND channel = ?", u, 2, NULL,
            NULL, errbuf, errlen);
    log_info(NULL,
             "notification: %s channel answers again after %lld s; %lld waiting messages go out",
             notify_channel_word(ch), (long long)((now_ms - link->down_since_ms) / 1000),
             (long long)waited + (res == NOTIFY_OK ? 1 : 0));
  }
  return sent;
fail:
  db_rollback(c);
  return -1;
}

/* One round of channel ch: give up, then send until nothing is due.
 * Returns the number sent (or -1) and sets *next_ms to when the next
 * message of ch is due (0: none waits). */
static int run_channel(notify_ctx *ctx, int ch, int64_t now_ms, int64_t *next_ms, char *errbuf,
                       size_t errlen) {
  if (next_ms != NULL) *next_ms = 0;
  if (channel_of(ctx, ch)->send_cb == NULL) return 0;
  db_conn *c = NULL;
  if (db_pool_get(ctx->db, &c, errbuf, errlen) != STATUS_OK) return -1;
  int total = 0;
  if (give_up(ctx, c, ch, now_ms, errbuf, errlen) != STATUS_OK) {
    total = -1;
    goto out;
  }
  for (;;) {
    int k = send_one(ctx, c, ch, now_ms, errbuf, errlen);
    if (k < 0) {
      total = -1;
      goto out;
    }
    if (k == 0 && ctx->link[ch].down) break;
    total += k;
    if (k == 0) {
      /* Nothing sent: nothing due any more, or a transient deferral;
       * either way the next query tells. */
      int64_t due = 0;
      db_value p[2] = {DB_I64(ch), DB_I64(now_ms)};
      if (db_query_i64(c,
                       "SELECT COUNT(*) FROM notifications WHERE status = 3 AND channel = ?"
                       " AND queued_ms > 0 AND next_ms <= ?",
                       p, 2, &due, errbuf, errlen) != STATUS_OK) {
        total = -1;
        goto out;
      }
      if (due == 0) break;
    }
  }
  if (next_ms != NULL) {
    db_value p[1] = {DB_I64(ch)};
    int64_t v = 0;
    if (db_query_i64(c,
                     "SELECT COALESCE(MIN(next_ms), 0) FROM notifications WHERE status = 3 AND"
                     " channel = ? AND queued_ms > 0",
                     p, 1, &v, errbuf, errlen) == STATUS_OK)
      *next_ms = v;
  }
out:
  db_pool_put(ctx->db, c);
  return total;
}

int notify_queue_run_due(notify_ctx *ctx, int64_t now_ms, char *errbuf, size_t errlen) {
  int total = 0;
  for (int ch = NOTIFY_CH_EMAIL; ch <= NOTIFY_CH_PUSH; ch++) {
    int k = run_channel(ctx, ch, now_ms, NULL, errbuf, errlen);
    if (k < 0) return -1;
    total += k;
  }
  return total;
}

/* --- Sender threads --------------------------------------------------------------------- */

typedef struct sender {
  notify_queue *q;
  int ch;
  pthread_t th;
  bool started;
} sender;

struct notify_queue {
  notify_ctx *ctx;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool stop;
  unsigned nudges;
  sender s[3];
};

static void *sender_main(void *arg) {
  sender *s = arg;
  notify_queue *q = s->q;
  unsigned seen = 0;
  int64_t failed_since = 0;
  for (;;) {
    pthread_mutex_lock(&q->mu);
    bool stop = q->stop;
    seen = q->nudges;
    pthread_mutex_unlock(&q->mu);
    if (stop) break;
    char err[512] = "";
    int64_t now = clock_now_ms(), next = 0;
    int k = run_channel(q->ctx, s->ch, now, &next, err, sizeof err);
    int64_t wait = NOTIFY_IDLE_MS;
    if (k < 0) {
      if (failed_since == 0) {
        failed_since = now;
        log_warn(NULL, "notification: %s sender: %s (trying again)", notify_channel_word(s->ch),
                 err);
      }
      wait = 1000;
    } else {
      if (failed_since != 0)
        log_info(NULL, "notification: %s sender works again", notify_channel_word(s->ch));
      failed_since = 0;
      if (next > 0 && next - now < wait) wait = next > now ? next - now : 1;
    }
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(wait / 1000);
    ts.tv_nsec += (long)(wait % 1000) * 1000000L;
    if (ts.tv_nsec >= 1000000000L) {
      ts.tv_sec++;
      ts.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&q->mu);
    while (!q->stop && q->nudges == seen) {
      if (pthread_cond_timedwait(&q->cv, &q->mu, &ts) == ETIMEDOUT) break;
    }
    pthread_mutex_unlock(&q->mu);
  }
  return NULL;
}

status_code notify_queue_start(notify_queue **out, notify_ctx *ctx, char *errbuf, size_t errlen) {
  notify_queue *q = calloc(1, sizeof *q);
  if (q == NULL) return STATUS_RESOURCE_EXHAUSTED;
  q->ctx = ctx;
  pthread_mutex_init(&q->mu, NULL);
  pthread_cond_init(&q->cv, NULL);
  for (int i = 0; i < 3; i++) {
    q->s[i].q = q;
    q->s[i].ch = NOTIFY_CH_EMAIL + i;
    if (pthread_create(&q->s[i].th, NULL, sender_main, &q->s[i]) != 0) {
      status_seterr(errbuf, errlen, "notification: no sender thread");
      notify_queue_stop(q);
      return STATUS_RESOURCE_EXHAUSTED;
    }
    q->s[i].started = true;
  }
  ctx->queue = q;
  *out = q;
  return STATUS_OK;
}

void notify_queue_nudge(notify_queue *q) {
  if (q == NULL) return;
  pthread_mutex_lock(&q->mu);
  q->nudges++;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
}

void notify_queue_stop(notify_queue *q) {
  if (q == NULL) return;
  pthread_mutex_lock(&q->mu);
  q->stop = true;
  pthread_cond_broadcast(&q->cv);
  pthread_mutex_unlock(&q->mu);
  for (int i = 0; i < 3; i++)
    if (q->s[i].started) pthread_join(q->s[i].th, NULL);
  if (q->ctx->queue == q) q->ctx->queue = NULL;
  pthread_mutex_destroy(&q->mu);
  pthread_cond_destroy(&q->cv);
  free(q);
}

/* --- Metrics ----------------------------------------------------------------------------- */

void notify_metrics_cb(db_conn *db, metrics_registry *reg, void *arg) {
  (void)arg;
  static const char *const labels[] = {"channel", NULL};
  metrics_family *pending = metrics_gauge_family(
      reg, "shop_notification_pending", "Messages waiting in the queue, by channel.", labels);
  metrics_family *oldest = metrics_gauge_family(
      reg, "shop_notification_oldest_pending_seconds",
      "Age of the oldest message waiting in the queue, by channel (0: none).", labels);
  int64_t n[4] = {0}, first[4] = {0};
  db_rows *r = NULL;
  char err[256];
  if (db_query(db,
               "SELECT channel, COUNT(*), MIN(queued_ms) FROM notifications WHERE status = 3"
               " AND queued_ms > 0 GROUP BY channel",
               NULL, 0, &r, err, sizeof err) != STATUS_OK) {
    log_debug(NULL, "notification metrics: %s", err);
    return;
  }
  while (db_rows_next(r)) {
    int64_t ch = db_rows_i64(r, 0);
    if (ch < NOTIFY_CH_EMAIL || ch > NOTIFY_CH_PUSH) continue;
    n[ch] = db_rows_i64(r, 1);
    first[ch] = db_rows_i64(r, 2);
  }
  db_rows_free(r);
  int64_t now = clock_now_ms();
  for (int ch = NOTIFY_CH_EMAIL; ch <= NOTIFY_CH_PUSH; ch++) {
    const char *v[1] = {notify_channel_word(ch)};
    metrics_gauge_set(metrics_series_get(pending, v), (double)n[ch]);
    metrics_gauge_set(metrics_series_get(oldest, v),
                      n[ch] > 0 ? (double)(now - first[ch]) / 1000.0 : 0.0);
  }
}
