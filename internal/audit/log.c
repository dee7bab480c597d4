/* The audit log's writer and its chain check (audit.h). */
#include <inttypes.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audit/audit.h"
#include "clock/clock.h"
#include "consistency/consistency.h"
#include "log/log.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "topology/topology.h"

static void hash_field(crypto_hash_sha256_state *st, const void *p, size_t len) {
  uint8_t be[8];
  uint64_t l = (uint64_t)len;
  for (int i = 7; i >= 0; i--) {
    be[i] = (uint8_t)(l & 0xff);
    l >>= 8;
  }
  crypto_hash_sha256_update(st, be, sizeof be);
  if (len > 0) crypto_hash_sha256_update(st, p, len);
}

static void hash_str(crypto_hash_sha256_state *st, const char *s) {
  if (s == NULL) s = "";
  hash_field(st, s, strlen(s));
}

static void hash_int(crypto_hash_sha256_state *st, int64_t v) {
  char buf[32];
  int n = snprintf(buf, sizeof buf, "%" PRId64, v);
  hash_field(st, buf, (size_t)n);
}

void audit_row_hash(const audit_row *r, const uint8_t prev[AUDIT_HASH_SIZE],
                    uint8_t out[AUDIT_HASH_SIZE]) {
  crypto_hash_sha256_state st;
  crypto_hash_sha256_init(&st);
  crypto_hash_sha256_update(&st, prev, AUDIT_HASH_SIZE);
  hash_int(&st, r->row_id);
  hash_str(&st, r->event_id);
  hash_str(&st, r->topic);
  hash_int(&st, r->partition);
  hash_int(&st, r->offset);
  hash_str(&st, r->type);
  hash_str(&st, r->source);
  hash_str(&st, r->actor);
  hash_str(&st, r->subject);
  hash_int(&st, r->sequence);
  hash_int(&st, r->event_time_ms);
  hash_str(&st, r->correlation_id);
  hash_str(&st, r->traceparent);
  hash_str(&st, r->key);
  hash_field(&st, r->data, r->data_len);
  hash_int(&st, r->recorded_ms);
  crypto_hash_sha256_final(&st, out);
}

void audit_ctx_init(audit_ctx *ctx, db_pool *db) {
  memset(ctx, 0, sizeof *ctx);
  ctx->db = db;
  ctx->lock_timeout_s = 10;
  consistency_notifier_init(&ctx->notifier);
  if (sodium_init() < 0) log_warn(NULL, "audit: sodium_init failed");
}

void audit_ctx_destroy(audit_ctx *ctx) { consistency_notifier_destroy(&ctx->notifier); }

/* Reads the chain head: 0 and zero hash on an empty log. */
static status_code read_head(db_conn *c, int64_t *row_id, uint8_t hash[AUDIT_HASH_SIZE],
                             char *errbuf, size_t errlen) {
  db_rows *r = NULL;
  status_code st = db_query(c, "SELECT row_id, hash FROM audit_log ORDER BY row_id DESC LIMIT 1",
                            NULL, 0, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  *row_id = 0;
  memset(hash, 0, AUDIT_HASH_SIZE);
  if (db_rows_next(r)) {
    size_t len = 0;
    const char *h = db_rows_str(r, 1, &len);
    *row_id = db_rows_i64(r, 0);
    if (len == AUDIT_HASH_SIZE) memcpy(hash, h, AUDIT_HASH_SIZE);
  }
  db_rows_free(r);
  return STATUS_OK;
}

/* The event ids of msgs already in the log (a redelivery, a replay after
 * the inbox was emptied), or earlier in msgs: seen[i] is true for them. One
 * lookup per SEEN_CHUNK events. */
#define SEEN_CHUNK 32
static status_code find_seen(db_conn *c, const consumer_msg *msgs, size_t n, bool *seen,
                             char *errbuf, size_t errlen) {
  static const char sql[] =
      "SELECT event_id FROM audit_log WHERE event_id IN (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?,"
      " ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
  _Static_assert(SEEN_CHUNK == 32, "sql holds 32 ids");
  for (size_t i = 0; i < n; i++) {
    seen[i] = false;
    for (size_t j = 0; j < i && !seen[i]; j++)
      seen[i] = strcmp(msgs[j].env->id, msgs[i].env->id) == 0;
  }
  for (size_t base = 0; base < n; base += SEEN_CHUNK) {
    size_t cnt = n - base < SEEN_CHUNK ? n - base : SEEN_CHUNK;
    db_value p[SEEN_CHUNK];
    for (size_t j = 0; j < SEEN_CHUNK; j++) p[j] = DB_STR(msgs[base + (j < cnt ? j : 0)].env->id);
    db_rows *r = NULL;
    status_code st = db_query(c, sql, p, SEEN_CHUNK, &r, errbuf, errlen);
    if (st != STATUS_OK) return st;
    while (db_rows_next(r)) {
      const char *id = db_rows_str(r, 0, NULL);
      for (size_t j = base; j < base + cnt; j++)
        if (strcmp(msgs[j].env->id, id) == 0) seen[j] = true;
    }
    db_rows_free(r);
  }
  return STATUS_OK;
}

status_code audit_append_tx(db_conn *c, const consumer_msg *msgs, size_t n, int *added,
                            char *errbuf, size_t errlen) {
  int dummy = 0;
  if (added == NULL) added = &dummy;
  *added = 0;
  bool *seen = calloc(n > 0 ? n : 1, sizeof *seen);
  if (seen == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  int64_t head = 0;
  uint8_t prev[AUDIT_HASH_SIZE];
  status_code st = find_seen(c, msgs, n, seen, errbuf, errlen);
  if (st == STATUS_OK) st = read_head(c, &head, prev, errbuf, errlen);
  int64_t now = clock_now_ms();
  for (size_t i = 0; st == STATUS_OK && i < n; i++) {
    if (seen[i]) continue;
    const events_envelope *ev = msgs[i].env;
    audit_row row = {
        .row_id = head + 1,
        .event_id = ev->id,
        .topic = msgs[i].topic,
        .partition = msgs[i].partition,
        .offset = msgs[i].offset,
        .type = ev->type,
        .source = ev->source,
        .actor = ev->actor,
        .subject = ev->subject,
        .sequence = ev->sequence,
        .event_time_ms = events_time_ms(ev),
        .correlation_id = ev->correlation_id,
        .traceparent = ev->traceparent,
        .key = ev->key,
        .data = ev->data.data,
        .data_len = ev->data.len,
        .recorded_ms = now,
    };
    uint8_t h[AUDIT_HASH_SIZE];
    audit_row_hash(&row, prev, h);
    db_value p[18] = {
        DB_I64(row.row_id),
        DB_STR(row.event_id),
        DB_STR(row.topic ? row.topic : ""),
        DB_I64(row.partition),
        DB_I64(row.offset),
        DB_STR(row.type ? row.type : ""),
        DB_STR(row.source ? row.source : ""),
        DB_STR(row.actor ? row.actor : ""),
        DB_STR(row.subject ? row.subject : ""),
        DB_I64(row.sequence),
        DB_I64(row.event_time_ms),
        DB_STR(row.correlation_id ? row.correlation_id : ""),
        DB_STR(row.traceparent ? row.traceparent : ""),
        DB_STR(row.key ? row.key : ""),
        DB_BLOB(row.data_len > 0 ? (const void *)row.data : "", row.data_len),
        DB_I64(row.recorded_ms),
        DB_BLOB(prev, AUDIT_HASH_SIZE),
        DB_BLOB(h, AUDIT_HASH_SIZE),
    };
    /* Every row of the batch in as few statements as the commit allows. */
    st = db_insert_later(c,
                         "INSERT INTO audit_log (row_id, event_id, topic, kpartition, koffset,"
                         " type, source, actor, subject, sequence, event_time_ms, correlation_id,"
                         " traceparent, ev_key, data, recorded_ms, prev_hash, hash)",
                         p, 18, errbuf, errlen);
    if (st != STATUS_OK) break;
    head++;
    memcpy(prev, h, AUDIT_HASH_SIZE);
    (*added)++;
  }
  free(seen);
  return st;
}

status_code audit_append(db_conn *c, const consumer_msg *msgs, size_t n, int lock_timeout_s,
                         int *added, char *errbuf, size_t errlen) {
  int dummy = 0;
  if (added == NULL) added = &dummy;
  *added = 0;
  bool got = false;
  status_code st = db_lock_try(c, AUDIT_CHAIN_LOCK, lock_timeout_s, &got, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!got) {
    snprintf(errbuf, errlen, "audit: another writer holds %s", AUDIT_CHAIN_LOCK);
    return STATUS_UNAVAILABLE;
  }
  st = db_begin(c, errbuf, errlen);
  if (st == STATUS_OK) {
    st = audit_append_tx(c, msgs, n, added, errbuf, errlen);
    if (st == STATUS_OK) st = db_commit(c, errbuf, errlen);
    if (st != STATUS_OK) {
      db_rollback(c);
      *added = 0;
    }
  }
  char err2[256];
  (void)db_lock_release(c, AUDIT_CHAIN_LOCK, err2, sizeof err2);
  return st;
}

/* The consumer's batch, in its own transaction (with its inbox rows): the
 * chain lock is taken on the consumer's connection for the batch and given
 * back when the transaction ended (ended_cb), so instances interleave
 * whole batches. */
static status_code audit_handle_cb(db_conn *tx, const consumer_msg *msgs, size_t n, void *arg,
                                   char *errbuf, size_t errlen) {
  audit_ctx *ctx = arg;
  bool got = false;
  status_code st = db_lock_try(tx, AUDIT_CHAIN_LOCK, ctx->lock_timeout_s, &got, errbuf, errlen);
  if (st == STATUS_OK && !got) {
    snprintf(errbuf, errlen, "audit: another writer holds %s", AUDIT_CHAIN_LOCK);
    st = STATUS_UNAVAILABLE;
  }
  int added = 0;
  if (st == STATUS_OK) st = audit_append_tx(tx, msgs, n, &added, errbuf, errlen);
  /* Every failure here is the database's (or the lock's): never a reason
   * to dead-letter an event the log must hold. */
  if (st != STATUS_OK) return STATUS_UNAVAILABLE;
  __atomic_add_fetch(&ctx->appended, added, __ATOMIC_RELAXED);
  return STATUS_OK;
}

static void audit_ended_cb(db_conn *db, void *arg) {
  char err[256];
  (void)db_lock_release(db, AUDIT_CHAIN_LOCK, err, sizeof err);
}

static void audit_committed_cb(const consumer_msg *msgs, size_t n, void *arg) {
  audit_ctx *ctx = arg;
  consistency_notifier_committed(&ctx->notifier, msgs, n, NULL);
}

const consumer_spec audit_consumer = {.group = TOPOLOGY_GROUP_AUDIT_WORKER,
                                      .handler = audit_handle_cb,
                                      .committed = audit_committed_cb,
                                      .ended = audit_ended_cb};

static void hex(const uint8_t *h, size_t n, char *out) {
  static const char d[] = "0123456789abcdef";
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[h[i] >> 4];
    out[2 * i + 1] = d[h[i] & 15];
  }
  out[2 * n] = '\0';
}

#define VERIFY_COLS                                                                                \
  "row_id, event_id, topic, kpartition, koffset, type, source, actor, subject, sequence,"          \
  " event_time_ms, correlation_id, traceparent, ev_key, data, recorded_ms, prev_hash, hash"

status_code audit_verify(db_conn *c, int64_t from_row_id, int64_t max_rows,
                         audit_verify_result *out, char *errbuf, size_t errlen) {
  memset(out, 0, sizeof *out);
  out->ok = true;
  if (from_row_id < 1) from_row_id = 1;
  int64_t expect = from_row_id;
  bool have_prev = false;
  uint8_t prev[AUDIT_HASH_SIZE] = {0};
  if (from_row_id == 1) have_prev = true; /* 32 zero bytes */
  for (;;) {
    db_value p[1] = {DB_I64(expect)};
    db_rows *r = NULL;
    status_code st = db_query(
        c, "SELECT " VERIFY_COLS " FROM audit_log WHERE row_id >= ? ORDER BY row_id LIMIT 500", p,
        1, &r, errbuf, errlen);
    if (st != STATUS_OK) return st;
    size_t got = 0;
    while (db_rows_next(r)) {
      got++;
      if (max_rows > 0 && out->rows_checked >= max_rows) break;
      audit_row row;
      row.row_id = db_rows_i64(r, 0);
      if (row.row_id != expect) {
        out->ok = false;
        out->bad_row_id = expect;
        out->fault = SHOP__AUDIT__V1__CHAIN_FAULT__CHAIN_FAULT_ROW_MISSING;
        snprintf(out->detail, sizeof out->detail,
                 "row %" PRId64 " is missing (next is %" PRId64 ")", expect, row.row_id);
        db_rows_free(r);
        return STATUS_OK;
      }
      row.event_id = db_rows_str(r, 1, NULL);
      row.topic = db_rows_str(r, 2, NULL);
      row.partition = (int32_t)db_rows_i64(r, 3);
      row.offset = db_rows_i64(r, 4);
      row.type = db_rows_str(r, 5, NULL);
      row.source = db_rows_str(r, 6, NULL);
      row.actor = db_rows_str(r, 7, NULL);
      row.subject = db_rows_str(r, 8, NULL);
      row.sequence = db_rows_i64(r, 9);
      row.event_time_ms = db_rows_i64(r, 10);
      row.correlation_id = db_rows_str(r, 11, NULL);
      row.traceparent = db_rows_str(r, 12, NULL);
      row.key = db_rows_str(r, 13, NULL);
      row.data = (const uint8_t *)db_rows_str(r, 14, &row.data_len);
      row.recorded_ms = db_rows_i64(r, 15);
      size_t plen = 0, hlen = 0;
      const uint8_t *sprev = (const uint8_t *)db_rows_str(r, 16, &plen);
      const uint8_t *shash = (const uint8_t *)db_rows_str(r, 17, &hlen);
      uint8_t stored_prev[AUDIT_HASH_SIZE] = {0}, stored_hash[AUDIT_HASH_SIZE] = {0};
      if (plen == AUDIT_HASH_SIZE) memcpy(stored_prev, sprev, AUDIT_HASH_SIZE);
      if (hlen == AUDIT_HASH_SIZE) memcpy(stored_hash, shash, AUDIT_HASH_SIZE);
      if (!have_prev) {
        memcpy(prev, stored_prev, AUDIT_HASH_SIZE); /* trusted start */
        have_prev = true;
      }
      char a[65], b[65];
      if (plen != AUDIT_HASH_SIZE || memcmp(prev, stored_prev, AUDIT_HASH_SIZE) != 0) {
        out->ok = false;
        out->fault = SHOP__AUDIT__V1__CHAIN_FAULT__CHAIN_FAULT_PREVIOUS_HASH_MISMATCH;
        hex(prev, AUDIT_HASH_SIZE, a);
        hex(stored_prev, AUDIT_HASH_SIZE, b);
        snprintf(out->detail, sizeof out->detail, "previous hash: expected %s, stored %s", a, b);
      } else {
        uint8_t h[AUDIT_HASH_SIZE];
        audit_row_hash(&row, prev, h);
        if (hlen != AUDIT_HASH_SIZE || memcmp(h, stored_hash, AUDIT_HASH_SIZE) != 0) {
          out->ok = false;
          out->fault = SHOP__AUDIT__V1__CHAIN_FAULT__CHAIN_FAULT_HASH_MISMATCH;
          hex(h, AUDIT_HASH_SIZE, a);
          hex(stored_hash, AUDIT_HASH_SIZE, b);
          snprintf(out->detail, sizeof out->detail, "hash: expected %s, stored %s", a, b);
        }
      }
      if (!out->ok) {
        out->bad_row_id = row.row_id;
        snprintf(out->bad_event_id, sizeof out->bad_event_id, "%s", row.event_id);
        db_rows_free(r);
        return STATUS_OK;
      }
      memcpy(prev, stored_hash, AUDIT_HASH_SIZE);
      out->rows_checked++;
      out->last_row_id = row.row_id;
      memcpy(out->last_hash, stored_hash, AUDIT_HASH_SIZE);
      expect++;
    }
    db_rows_free(r);
    if (got < 500 || (max_rows > 0 && out->rows_checked >= max_rows)) break;
  }
  return STATUS_OK;
}
