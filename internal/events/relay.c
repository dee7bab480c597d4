/* The outbox relay: publishes outbox rows with an idempotent producer and
 * marks them sent from the delivery reports. See outbox.h. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "crash/crash.h"
#include "events/events_internal.h"
#include "events/kafka_internal.h"
#include "events/outbox.h"
#include "log/log.h"

/* Row states. */
#define OUTBOX_UNSENT 0
#define OUTBOX_SENT 1
#define OUTBOX_PARKED 2

/* Parameters per statement of the batched UPDATE and of IN lists; the db
 * layer binds at most 64. */
#define MARK_RANGES 32
#define IN_IDS 32
/* Gaps looked up per round (newest first) and remembered at most. */
#define GAP_LOOKUP_MAX (IN_IDS * 4)
#define GAP_MAX 4096

#include "events/idset_internal.h"

/* --- The relay ---------------------------------------------------------------- */

typedef struct park_item {
  int64_t id;
  char error[256];
} park_item;

typedef struct gap {
  int64_t id;
  int64_t seen_ms;
} gap;

struct outbox_relay {
  outbox_relay_opts o;
  char *brokers, *client_id;
  db_params_copy dbp; /* dbp.p: the relay's own connection's params */
  int wake[2];        /* a pipe: nudges, stop, and librdkafka's queue events */
  pthread_t thread;
  bool started, joined;
  atomic_bool stop;

  atomic_bool st_active;
  atomic_llong st_produced, st_sent, st_parked, st_rebuilds, st_in_flight, st_takeovers;
  events_kafka_counters kstats;

  /* Below: the relay thread's own. */
  db_conn *db;
  uint64_t db_reconnects;
  char lock_name[96];
  bool active;
  rd_kafka_t *rk;
  rd_kafka_queue_t *mainq;
  bool need_rebuild;
  int64_t cursor;      /* rows up to here were read (0: not yet known) */
  idset produced;      /* produced and not yet marked */
  int64_t outstanding; /* produced, delivery report not yet seen */
  int64_t *acked;
  size_t nacked;
  park_item *parks;
  size_t nparks, parks_cap;
  gap *gaps;
  size_t ngaps;
  int64_t next_sweep_ms, next_purge_ms;
  bool db_down_logged;
};

void outbox_relay_opts_init(outbox_relay_opts *o, const shop_cfg *cfg) {
  memset(o, 0, sizeof *o);
  o->poll_interval_ms = 200;
  o->batch_size = 500;
  o->max_in_flight = 10000;
  o->linger_ms = 5;
  o->retention_s = 7 * 24 * 3600;
  o->purge_interval_ms = 60000;
  o->gap_timeout_ms = 10000;
  o->sweep_interval_ms = 5000;
  o->stop_grace_ms = 5000;
  if (cfg != NULL) {
    o->brokers = cfg->kafka.brokers;
    o->retention_s = cfg->kafka.outbox_retention_s;
    o->statistics_interval_ms = cfg->kafka.statistics_interval_ms;
  }
}

void outbox_relay_nudge(outbox_relay *r) {
  if (r == NULL) return;
  char b = 'n';
  /* A full pipe already holds a wake-up; EAGAIN is fine. */
  ssize_t ignored = write(r->wake[1], &b, 1);
  (void)ignored;
}

static void drain_wake(outbox_relay *r) {
  char buf[256];
  while (read(r->wake[0], buf, sizeof buf) > 0) {
  }
}

static void wait_wake(outbox_relay *r, int timeout_ms) {
  struct pollfd pfd = {.fd = r->wake[0], .events = POLLIN};
  if (poll(&pfd, 1, timeout_ms) > 0) drain_wake(r);
}

void outbox_relay_stats_get(outbox_relay *r, outbox_relay_stats *out) {
  out->active = atomic_load(&r->st_active);
  out->produced = atomic_load(&r->st_produced);
  out->sent = atomic_load(&r->st_sent);
  out->parked = atomic_load(&r->st_parked);
  out->rebuilds = atomic_load(&r->st_rebuilds);
  out->in_flight = atomic_load(&r->st_in_flight);
  out->takeovers = atomic_load(&r->st_takeovers);
  events_kafka_counters_get(&r->kstats, &out->kafka);
}

status_code outbox_relay_create(outbox_relay **out, const outbox_relay_opts *o, char *errbuf,
                                size_t errlen) {
  if (o->brokers == NULL || o->brokers[0] == '\0' || o->db == NULL) {
    status_seterr(errbuf, errlen, "outbox relay: brokers and db are required");
    return STATUS_INVALID_ARGUMENT;
  }
  if (o->batch_size < 1 || o->max_in_flight < o->batch_size || o->poll_interval_ms < 1) {
    status_seterr(errbuf, errlen,
                  "outbox relay: need batch_size >= 1, max_in_flight >= batch_size,"
                  " poll_interval_ms >= 1");
    return STATUS_INVALID_ARGUMENT;
  }
  outbox_relay *r = calloc(1, sizeof *r);
  if (r == NULL) goto oom;
  r->wake[0] = r->wake[1] = -1;
  r->o = *o;
  r->brokers = strdup(o->brokers);
  r->client_id = strdup(o->client_id != NULL ? o->client_id : "shop-outbox-relay");
  bool db_ok = db_params_dup(&r->dbp, o->db);
  r->o.brokers = r->brokers;
  r->o.client_id = r->client_id;
  r->o.db = &r->dbp.p;
  r->acked = calloc((size_t)o->max_in_flight, sizeof *r->acked);
  r->gaps = calloc(GAP_MAX, sizeof *r->gaps);
  if (!db_ok || r->brokers == NULL || r->client_id == NULL || r->acked == NULL || r->gaps == NULL ||
      !idset_init(&r->produced, (size_t)o->max_in_flight)) {
    outbox_relay_destroy(r);
    goto oom;
  }
  if (pipe(r->wake) != 0) {
    status_seterr(errbuf, errlen, "outbox relay: pipe: %s", strerror(errno));
    outbox_relay_destroy(r);
    return STATUS_INTERNAL;
  }
  for (int i = 0; i < 2; i++) {
    fcntl(r->wake[i], F_SETFL, fcntl(r->wake[i], F_GETFL) | O_NONBLOCK);
    fcntl(r->wake[i], F_SETFD, FD_CLOEXEC);
  }
  atomic_init(&r->stop, false);
  *out = r;
  return STATUS_OK;
oom:
  status_seterr(errbuf, errlen, "outbox relay: out of memory");
  return STATUS_RESOURCE_EXHAUSTED;
}

/* --- Relay: delivery reports --------------------------------------------------- */

static void relay_park(outbox_relay *r, int64_t id, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void relay_park(outbox_relay *r, int64_t id, const char *fmt, ...) {
  if (r->nparks == r->parks_cap) {
    size_t cap = r->parks_cap ? r->parks_cap * 2 : 16;
    park_item *p = realloc(r->parks, cap * sizeof *p);
    if (p == NULL) return; /* stays unsent; tried again later */
    r->parks = p;
    r->parks_cap = cap;
  }
  park_item *p = &r->parks[r->nparks++];
  p->id = id;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->error, sizeof p->error, fmt, ap);
  va_end(ap);
}

/* Runs on the relay thread, inside rd_kafka_poll/flush. */
static void relay_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  outbox_relay *r = opaque;
  int64_t id = (int64_t)(intptr_t)m->_private;
  r->outstanding--;
  switch (m->err) {
  case RD_KAFKA_RESP_ERR_NO_ERROR:
    crash_point("relay.after_ack");
    r->acked[r->nacked++] = id;
    return;
  case RD_KAFKA_RESP_ERR__PURGE_QUEUE:
  case RD_KAFKA_RESP_ERR__PURGE_INFLIGHT:
    /* Dropped by a rebuild; the row is still unsent and is sent again. */
    idset_del(&r->produced, id);
    return;
  default:
    break;
  }
  if (events_kafka_err_permanent(m->err)) {
    log_error(NULL, "outbox: row %lld to %s cannot be published: %s; parking it", (long long)id,
              rd_kafka_topic_name(m->rkt), rd_kafka_err2str(m->err));
    relay_park(r, id, "%s: %s", rd_kafka_err2name(m->err), rd_kafka_err2str(m->err));
    return;
  }
  /* Anything else (a fatal idempotence error included) breaks the order of
   * what follows: start over from the oldest unsent row. */
  log_warn(NULL, "outbox: delivery of row %lld failed: %s; rebuilding the producer", (long long)id,
           rd_kafka_err2str(m->err));
  idset_del(&r->produced, id);
  r->need_rebuild = true;
  (void)rk;
}

/* --- Relay: producer ----------------------------------------------------------- */

/* Serves delivery reports for up to timeout_ms (0: what is there now). */
static void relay_serve(outbox_relay *r, int timeout_ms) {
  if (r->rk != NULL) rd_kafka_poll(r->rk, timeout_ms);
}

static void relay_producer_destroy(outbox_relay *r) {
  if (r->rk == NULL) return;
  /* Purge what is queued or in flight (their reports say PURGE), serve
   * the reports that remain, then destroy. */
  rd_kafka_purge(r->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
  rd_kafka_flush(r->rk, 2000);
  rd_kafka_poll(r->rk, 0);
  if (r->mainq != NULL) rd_kafka_queue_destroy(r->mainq);
  r->mainq = NULL;
  rd_kafka_destroy(r->rk);
  r->rk = NULL;
  r->outstanding = 0;
  events_kafka_counters_rebase(&r->kstats);
}

static int relay_stats_cb(rd_kafka_t *rk, char *json, size_t len, void *opaque) {
  (void)rk;
  events_kafka_stats_parse(&((outbox_relay *)opaque)->kstats, json, len);
  return 0; /* librdkafka frees json */
}

static bool relay_producer_new(outbox_relay *r) {
  char err[512];
  rd_kafka_conf_t *conf = events_kafka_conf_new(r->brokers, r->client_id, err, sizeof err);
  char qmax[24];
  snprintf(qmax, sizeof qmax, "%d", r->o.max_in_flight + 1000);
  if (conf == NULL || !events_kafka_producer_conf(conf, 0, r->o.linger_ms, err, sizeof err) ||
      !events_kafka_set(conf, "queue.buffering.max.messages", qmax, err, sizeof err) ||
      !events_kafka_stats_conf(conf, r->o.statistics_interval_ms, relay_stats_cb, err,
                               sizeof err)) {
    if (conf != NULL) rd_kafka_conf_destroy(conf);
    log_error(NULL, "outbox: producer config: %s", err);
    return false;
  }
  rd_kafka_conf_set_dr_msg_cb(conf, relay_dr_cb);
  rd_kafka_conf_set_opaque(conf, r);
  rd_kafka_t *rk = events_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err, "outbox: producer");
  if (rk == NULL) {
    log_error(NULL, "%s", err);
    return false;
  }
  r->rk = rk;
  /* Delivery reports wake the relay through the same pipe as nudges. */
  r->mainq = rd_kafka_queue_get_main(rk);
  rd_kafka_queue_io_event_enable(r->mainq, r->wake[1], "k", 1);
  return true;
}

/* --- Relay: marking rows -------------------------------------------------------- */

static int cmp_i64(const void *a, const void *b) {
  int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
  return x < y ? -1 : x > y;
}

/* One statement text with MARK_RANGES ranges, so one prepared statement
 * serves every batch (unused ranges are bound as 0..-1, which matches
 * nothing). */
#define MARK_R1 "id BETWEEN ? AND ?"
#define MARK_R2 MARK_R1 " OR " MARK_R1
#define MARK_R4 MARK_R2 " OR " MARK_R2
#define MARK_R8 MARK_R4 " OR " MARK_R4
#define MARK_R16 MARK_R8 " OR " MARK_R8
#define MARK_R32 MARK_R16 " OR " MARK_R16
static const char mark_sql[] =
    "UPDATE outbox SET state = 1, sent_at = NOW(6) WHERE (" MARK_R32 ") AND state = 0";
_Static_assert(MARK_RANGES == 32, "mark_sql holds 32 ranges");

/* Marks the delivered rows sent: consecutive ids become one BETWEEN, up to
 * MARK_RANGES ranges per statement. Returns false on a database error (the
 * ids stay queued and are marked on a later round). */
static bool relay_flush_marks(outbox_relay *r) {
  if (r->nacked == 0) return true;
  qsort(r->acked, r->nacked, sizeof *r->acked, cmp_i64);
  size_t i = 0;
  while (i < r->nacked) {
    db_value p[MARK_RANGES * 2];
    size_t start = i;
    int nr = 0;
    while (i < r->nacked && nr < MARK_RANGES) {
      int64_t lo = r->acked[i], hi = lo;
      i++;
      while (i < r->nacked && r->acked[i] <= hi + 1) hi = r->acked[i++];
      p[2 * nr] = DB_I64(lo);
      p[2 * nr + 1] = DB_I64(hi);
      nr++;
    }
    for (int k = nr; k < MARK_RANGES; k++) {
      p[2 * k] = DB_I64(0);
      p[2 * k + 1] = DB_I64(-1);
    }
    char err[512];
    status_code st = db_exec(r->db, mark_sql, p, MARK_RANGES * 2, NULL, NULL, err, sizeof err);
    if (st != STATUS_OK) {
      if (!r->db_down_logged) log_warn(NULL, "outbox: marking rows sent: %s", err);
      r->db_down_logged = true;
      /* Keep what is not yet marked. */
      memmove(r->acked, r->acked + start, (r->nacked - start) * sizeof *r->acked);
      r->nacked -= start;
      return false;
    }
    for (size_t k = start; k < i; k++) idset_del(&r->produced, r->acked[k]);
    atomic_fetch_add(&r->st_sent, (long long)(i - start));
  }
  r->nacked = 0;
  return true;
}

static bool relay_flush_parks(outbox_relay *r) {
  while (r->nparks > 0) {
    park_item *p = &r->parks[r->nparks - 1];
    db_value v[2] = {DB_STR(p->error), DB_I64(p->id)};
    char err[512];
    status_code st =
        db_exec(r->db, "UPDATE outbox SET state = 2, error = ? WHERE id = ? AND state = 0", v, 2,
                NULL, NULL, err, sizeof err);
    if (st != STATUS_OK) return false;
    idset_del(&r->produced, p->id);
    atomic_fetch_add(&r->st_parked, 1);
    r->nparks--;
  }
  return true;
}

/* --- Relay: reading and producing --------------------------------------------- */

/* Whether the connection was re-opened since the lock was taken: the lock
 * died with the old connection. */
static bool relay_lost_lock(outbox_relay *r) {
  return r->db == NULL || db_reconnects(r->db) != r->db_reconnects;
}

static void gap_remove(outbox_relay *r, int64_t id) {
  for (size_t i = 0; i < r->ngaps; i++) {
    if (r->gaps[i].id == id) {
      memmove(&r->gaps[i], &r->gaps[i + 1], (r->ngaps - i - 1) * sizeof *r->gaps);
      r->ngaps--;
      return;
    }
  }
}

typedef enum { PRODUCED, PARKED, STOP_FULL, STOP_REBUILD } produce_result;

/* Produces one row. */
static produce_result relay_produce(outbox_relay *r, int64_t id, const char *blob, size_t len) {
  events_envelope *ev = shop__events__v1__event_envelope__unpack(NULL, len, (const uint8_t *)blob);
  char err[256];
  if (ev == NULL || events_envelope_validate(ev, err, sizeof err) != STATUS_OK) {
    if (ev == NULL) snprintf(err, sizeof err, "the stored envelope does not decode");
    log_error(NULL, "outbox: row %lld: %s; parking it", (long long)id, err);
    idset_add(&r->produced, id);
    relay_park(r, id, "%s", err);
    events_envelope_free(ev);
    return PARKED;
  }
  rd_kafka_headers_t *h = events_kafka_headers_from_envelope(ev);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      r->rk, RD_KAFKA_V_TOPIC(ev->topic), RD_KAFKA_V_KEY(ev->key, strlen(ev->key)),
      RD_KAFKA_V_VALUE(ev->data.data, ev->data.len), RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
      RD_KAFKA_V_HEADERS(h), RD_KAFKA_V_OPAQUE((void *)(intptr_t)id), RD_KAFKA_V_END);
  if (e == RD_KAFKA_RESP_ERR_NO_ERROR) {
    idset_add(&r->produced, id);
    r->outstanding++;
    atomic_fetch_add(&r->st_produced, 1);
    if (crash_fault("relay.fatal")) {
      rd_kafka_test_fatal_error(r->rk, RD_KAFKA_RESP_ERR_OUT_OF_ORDER_SEQUENCE_NUMBER,
                                "injected by SHOP_CRASH_AT=relay.fatal");
    }
    log_debug(&(log_ctx){.event_id = ev->id}, "outbox: produced row %lld to %s", (long long)id,
              ev->topic);
    events_envelope_free(ev);
    return PRODUCED;
  }
  rd_kafka_headers_destroy(h); /* producev takes the headers only on success */
  produce_result res;
  if (e == RD_KAFKA_RESP_ERR__QUEUE_FULL) {
    res = STOP_FULL;
  } else if (events_kafka_err_permanent(e)) {
    log_error(&(log_ctx){.event_id = ev->id}, "outbox: row %lld to %s cannot be published: %s",
              (long long)id, ev->topic, rd_kafka_err2str(e));
    idset_add(&r->produced, id);
    relay_park(r, id, "%s: %s", rd_kafka_err2name(e), rd_kafka_err2str(e));
    res = PARKED;
  } else {
    log_warn(NULL, "outbox: producing row %lld: %s; rebuilding the producer", (long long)id,
             rd_kafka_err2str(e));
    r->need_rebuild = true;
    res = STOP_REBUILD;
  }
  events_envelope_free(ev);
  return res;
}

static int64_t relay_room(const outbox_relay *r) {
  return (int64_t)r->o.max_in_flight - (int64_t)r->produced.n;
}

/* Reads unsent rows past the cursor, in id order, and produces them.
 * Returns the number read, or -1 on a database error. */
static int relay_fetch(outbox_relay *r) {
  int64_t room = relay_room(r);
  if (room <= 0) return 0;
  int64_t limit = room < r->o.batch_size ? room : r->o.batch_size;
  db_value p[2] = {DB_I64(r->cursor), DB_I64(limit)};
  db_rows *rows;
  char err[512];
  status_code st = db_query(
      r->db, "SELECT id, envelope FROM outbox WHERE state = 0 AND id > ? ORDER BY id LIMIT ?", p, 2,
      &rows, err, sizeof err);
  if (st != STATUS_OK) {
    if (!r->db_down_logged) log_warn(NULL, "outbox: reading rows: %s", err);
    r->db_down_logged = true;
    return -1;
  }
  r->db_down_logged = false;
  if (relay_lost_lock(r)) {
    db_rows_free(rows);
    return -1;
  }
  int n = 0;
  int64_t now = events_now_ms();
  while (db_rows_next(rows)) {
    int64_t id = db_rows_i64(rows, 0);
    size_t len;
    const char *blob = db_rows_str(rows, 1, &len);
    produce_result pr = relay_produce(r, id, blob, len);
    if (pr == STOP_FULL || pr == STOP_REBUILD) break;
    /* Ids skipped between the cursor and this row may belong to
     * transactions still open: remember them for a while. */
    if (r->cursor > 0 && id - r->cursor - 1 <= (int64_t)(GAP_MAX - r->ngaps)) {
      for (int64_t g = r->cursor + 1; g < id; g++) r->gaps[r->ngaps++] = (gap){g, now};
    }
    r->cursor = id;
    n++;
  }
  db_rows_free(rows);
  return n;
}

/* Produces the rows with the given ids that are unsent and not produced
 * yet (late commits). */
static bool relay_fetch_ids(outbox_relay *r, const int64_t *ids, size_t n) {
  db_value p[IN_IDS];
  for (size_t i = 0; i < IN_IDS; i++) p[i] = DB_I64(i < n ? ids[i] : ids[0]);
  static const char sql[] =
      "SELECT id, envelope FROM outbox WHERE state = 0 AND id IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
      " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ORDER BY id";
  db_rows *rows;
  char err[512];
  if (db_query(r->db, sql, p, IN_IDS, &rows, err, sizeof err) != STATUS_OK) return false;
  if (relay_lost_lock(r)) {
    db_rows_free(rows);
    return false;
  }
  while (db_rows_next(rows)) {
    int64_t id = db_rows_i64(rows, 0);
    if (idset_has(&r->produced, id)) {
      gap_remove(r, id);
      continue;
    }
    if (relay_room(r) <= 0) break;
    size_t len;
    const char *blob = db_rows_str(rows, 1, &len);
    produce_result pr = relay_produce(r, id, blob, len);
    if (pr == STOP_FULL || pr == STOP_REBUILD) break;
    gap_remove(r, id);
  }
  db_rows_free(rows);
  return true;
}

/* Looks up the newest remembered gaps (late commits show up there) and
 * forgets the ones older than gap_timeout_ms (rolled back, most likely;
 * the sweep would still find them). */
static void relay_check_gaps(outbox_relay *r) {
  int64_t now = events_now_ms();
  size_t keep = 0;
  for (size_t i = 0; i < r->ngaps; i++) {
    if (now - r->gaps[i].seen_ms < r->o.gap_timeout_ms) r->gaps[keep++] = r->gaps[i];
  }
  r->ngaps = keep;
  if (r->ngaps == 0) return;
  size_t from = r->ngaps > GAP_LOOKUP_MAX ? r->ngaps - GAP_LOOKUP_MAX : 0;
  int64_t ids[GAP_LOOKUP_MAX];
  size_t n = r->ngaps - from;
  for (size_t i = 0; i < n; i++) ids[i] = r->gaps[from + i].id;
  for (size_t i = 0; i < n; i += IN_IDS) {
    if (!relay_fetch_ids(r, ids + i, n - i < IN_IDS ? n - i : IN_IDS)) return;
  }
}

/* The safety net: every unsent row at or below the cursor that this
 * producer has not sent (a late commit older than the gap memory, rows
 * below the first one read after a restart). */
static void relay_sweep(outbox_relay *r) {
  if (r->cursor <= 0) return;
  db_value p[2] = {DB_I64(r->cursor), DB_I64((int64_t)r->produced.n + 256)};
  db_rows *rows;
  char err[512];
  if (db_query(r->db, "SELECT id FROM outbox WHERE state = 0 AND id <= ? ORDER BY id LIMIT ?", p, 2,
               &rows, err, sizeof err) != STATUS_OK) {
    return;
  }
  int64_t missed[IN_IDS];
  size_t n = 0;
  while (db_rows_next(rows)) {
    int64_t id = db_rows_i64(rows, 0);
    if (idset_has(&r->produced, id)) continue;
    missed[n++] = id;
    if (n == IN_IDS) {
      if (!relay_fetch_ids(r, missed, n)) break;
      n = 0;
    }
  }
  db_rows_free(rows);
  if (n > 0) {
    log_info(NULL, "outbox: the sweep found %zu unsent row(s) below the cursor", n);
    relay_fetch_ids(r, missed, n);
  }
}

/* Where reading starts after taking the lock or rebuilding the producer:
 * just below the oldest unsent row, or at the newest row handled so far. */
static bool relay_reset_cursor(outbox_relay *r) {
  char err[512];
  int64_t below_unsent = 0, handled = 0;
  if (db_query_i64(r->db, "SELECT COALESCE(MIN(id) - 1, -1) FROM outbox WHERE state = 0", NULL, 0,
                   &below_unsent, err, sizeof err) != STATUS_OK ||
      db_query_i64(r->db, "SELECT COALESCE(MAX(id), 0) FROM outbox WHERE state <> 0", NULL, 0,
                   &handled, err, sizeof err) != STATUS_OK) {
    return false;
  }
  /* The lower of the two, so that ids between the newest handled row and
   * the oldest unsent one (transactions still open) are watched as gaps. */
  r->cursor = below_unsent >= 0 && below_unsent < handled ? below_unsent : handled;
  r->ngaps = 0;
  return true;
}

/* Replaces the producer and starts reading from the oldest unsent row
 * again. Rows delivered before the purge are marked first. */
static void relay_rebuild(outbox_relay *r) {
  bool had = r->rk != NULL;
  relay_producer_destroy(r);
  relay_flush_marks(r);
  relay_flush_parks(r);
  idset_clear(&r->produced);
  r->nacked = 0;
  r->nparks = 0;
  r->need_rebuild = false;
  r->cursor = 0;
  r->ngaps = 0;
  if (had) atomic_fetch_add(&r->st_rebuilds, 1);
  if (!relay_producer_new(r)) return;
  relay_reset_cursor(r);
}

/* --- Relay: the lock ---------------------------------------------------------- */

static void relay_deactivate(outbox_relay *r, const char *why) {
  if (r->active) log_warn(NULL, "outbox: relay gives up %s: %s", r->lock_name, why);
  relay_producer_destroy(r);
  /* Delivered rows are delivered whoever holds the lock now: marking them
   * spares the next holder a re-send (best effort). */
  relay_flush_marks(r);
  idset_clear(&r->produced);
  r->nacked = 0;
  r->nparks = 0;
  r->ngaps = 0;
  r->cursor = 0;
  r->active = false;
  atomic_store(&r->st_active, false);
}

/* Connects if needed and waits up to a second for the lock. */
static void relay_acquire(outbox_relay *r) {
  char err[512];
  if (r->db == NULL) {
    db_params p = r->dbp.p;
    p.connect_retry_ms = 0;
    if (db_connect(&r->db, &p, err, sizeof err) != STATUS_OK) {
      if (!r->db_down_logged) log_warn(NULL, "outbox: relay cannot connect: %s", err);
      r->db_down_logged = true;
      r->db = NULL;
      wait_wake(r, 1000);
      return;
    }
  }
  if (r->lock_name[0] == '\0') {
    db_rows *rows;
    if (db_query(r->db, "SELECT DATABASE()", NULL, 0, &rows, err, sizeof err) != STATUS_OK) {
      wait_wake(r, 500);
      return;
    }
    if (db_rows_next(rows)) {
      snprintf(r->lock_name, sizeof r->lock_name, "shop.outbox.%s", db_rows_str(rows, 0, NULL));
    }
    db_rows_free(rows);
  }
  bool got = false;
  if (db_lock_try(r->db, r->lock_name, 1, &got, err, sizeof err) != STATUS_OK) {
    if (!r->db_down_logged) log_warn(NULL, "outbox: relay waiting for the database: %s", err);
    r->db_down_logged = true;
    wait_wake(r, 500);
    return;
  }
  if (!got) return; /* another instance holds it; GET_LOCK waited a second */
  r->db_reconnects = db_reconnects(r->db);
  r->db_down_logged = false;
  r->active = true;
  atomic_store(&r->st_active, true);
  atomic_fetch_add(&r->st_takeovers, 1);
  log_info(NULL, "outbox: relay holds %s; publishing", r->lock_name);
  relay_rebuild(r);
  r->next_sweep_ms = events_now_ms() + r->o.sweep_interval_ms;
}

/* --- Relay: the thread ------------------------------------------------------------ */

static void relay_round(outbox_relay *r) {
  char why[512] = "";
  bool fatal = r->rk != NULL && rd_kafka_fatal_error(r->rk, why, sizeof why) != 0;
  if (r->rk == NULL || r->need_rebuild || fatal) {
    if (fatal) log_warn(NULL, "outbox: producer failed fatally (%s); rebuilding it", why);
    relay_rebuild(r);
    if (r->rk == NULL) {
      wait_wake(r, 1000);
      return;
    }
  }
  int got = relay_fetch(r);
  if (r->ngaps > 0) relay_check_gaps(r);
  int64_t now = events_now_ms();
  if (now >= r->next_sweep_ms) {
    relay_sweep(r);
    r->next_sweep_ms = now + r->o.sweep_interval_ms;
  }
  relay_serve(r, 0);
  relay_flush_marks(r);
  relay_flush_parks(r);
  atomic_store(&r->st_in_flight, (long long)r->produced.n);
  if (relay_lost_lock(r)) {
    relay_deactivate(r, "the database connection was re-opened");
    return;
  }
  if (now >= r->next_purge_ms) {
    char err[512];
    int64_t n = 0;
    if (outbox_purge(r->db, r->o.retention_s, &n, err, sizeof err) == STATUS_OK && n > 0) {
      log_info(NULL, "outbox: purged %lld sent row(s)", (long long)n);
    }
    r->next_purge_ms = now + r->o.purge_interval_ms;
  }
  if (got < 0) {
    wait_wake(r, r->o.poll_interval_ms);
  } else if (got < r->o.batch_size || relay_room(r) <= 0) {
    /* Caught up (or the window is full): sleep until a nudge, a delivery
     * report or the poll interval. Gaps are looked at again on wake-up. */
    int t = r->o.poll_interval_ms;
    if (r->ngaps > 0 && t > 50) t = 50;
    wait_wake(r, t);
  }
}

static void relay_finish(outbox_relay *r) {
  if (r->rk != NULL) {
    int64_t until = events_now_ms() + r->o.stop_grace_ms;
    while (r->outstanding > 0 && events_now_ms() < until) rd_kafka_poll(r->rk, 50);
  }
  if (r->db != NULL && r->active && !relay_lost_lock(r)) {
    relay_flush_marks(r);
    relay_flush_parks(r);
  }
  relay_producer_destroy(r);
  if (r->db != NULL && r->active) db_lock_release(r->db, r->lock_name, NULL, 0);
  r->active = false;
  atomic_store(&r->st_active, false);
  db_close(r->db);
  r->db = NULL;
}

static void *relay_main(void *arg) {
  outbox_relay *r = arg;
  while (!atomic_load(&r->stop)) {
    if (!r->active) {
      relay_acquire(r);
    } else {
      relay_round(r);
    }
  }
  relay_finish(r);
  return NULL;
}

status_code outbox_relay_start(outbox_relay *r, char *errbuf, size_t errlen) {
  if (r->started) {
    status_seterr(errbuf, errlen, "outbox relay already started");
    return STATUS_FAILED_PRECONDITION;
  }
  int e = pthread_create(&r->thread, NULL, relay_main, r);
  if (e != 0) {
    status_seterr(errbuf, errlen, "outbox relay thread: %s", strerror(e));
    return STATUS_INTERNAL;
  }
  r->started = true;
  return STATUS_OK;
}

void outbox_relay_stop(outbox_relay *r) {
  if (r == NULL || !r->started || r->joined) return;
  atomic_store(&r->stop, true);
  outbox_relay_nudge(r);
  pthread_join(r->thread, NULL);
  r->joined = true;
}

void outbox_relay_destroy(outbox_relay *r) {
  if (r == NULL) return;
  outbox_relay_stop(r);
  for (int i = 0; i < 2; i++) {
    if (r->wake[i] >= 0) close(r->wake[i]);
  }
  free(r->produced.slot);
  free(r->acked);
  free(r->parks);
  free(r->gaps);
  free(r->brokers);
  free(r->client_id);
  db_params_copy_free(&r->dbp);
  free(r);
}
