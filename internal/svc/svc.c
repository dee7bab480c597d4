/* Helpers shared by the domain services. See svc.h. */
#include "svc/svc.h"

#include <errno.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "crash/crash.h"
#include "events/events.h"
#include "log/log.h"

/* ---- Text and ids ------------------------------------------------------------ */

/* Decodes one code point at s; returns its length, 0 when malformed. */
static size_t utf8_next(const unsigned char *s, uint32_t *cp) {
  unsigned char c = s[0];
  if (c < 0x80) {
    *cp = c;
    return 1;
  }
  size_t n;
  uint32_t v, min;
  if ((c & 0xe0) == 0xc0) {
    n = 2, v = c & 0x1f, min = 0x80;
  } else if ((c & 0xf0) == 0xe0) {
    n = 3, v = c & 0x0f, min = 0x800;
  } else if ((c & 0xf8) == 0xf0) {
    n = 4, v = c & 0x07, min = 0x10000;
  } else {
    return 0;
  }
  for (size_t i = 1; i < n; i++) {
    if ((s[i] & 0xc0) != 0x80) return 0;
    v = (v << 6) | (s[i] & 0x3f);
  }
  if (v < min || v > 0x10ffff || (v >= 0xd800 && v <= 0xdfff)) return 0;
  *cp = v;
  return n;
}

long svc_utf8_chars(const char *s) {
  long count = 0;
  const unsigned char *p = (const unsigned char *)s;
  while (*p != '\0') {
    uint32_t cp;
    size_t n = utf8_next(p, &cp);
    if (n == 0) return -1;
    p += n;
    count++;
  }
  return count;
}

const char *svc_text_check(const char *s, size_t min_chars, size_t max_chars, unsigned flags) {
  static _Thread_local char why[96];
  if (s == NULL) s = "";
  size_t count = 0;
  const unsigned char *p = (const unsigned char *)s;
  while (*p != '\0') {
    uint32_t cp;
    size_t n = utf8_next(p, &cp);
    if (n == 0) return "must be valid UTF-8";
    bool line = cp == '\n' || cp == '\r' || cp == '\t';
    if ((cp < 0x20 || cp == 0x7f || (cp >= 0x80 && cp < 0xa0)) &&
        !(line && (flags & SVC_TEXT_MULTILINE)))
      return "must not contain control characters";
    p += n;
    count++;
  }
  if (count == 0 && min_chars > 0) return "must not be empty";
  if (count < min_chars) {
    snprintf(why, sizeof why, "must be at least %zu characters", min_chars);
    return why;
  }
  if (count > max_chars) {
    snprintf(why, sizeof why, "must be at most %zu characters", max_chars);
    return why;
  }
  return NULL;
}

void svc_violation(rpc_call *call, int *count, const char *field, const char *why) {
  if (why == NULL) return;
  if (*count == 0) rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid %s: %s", field, why);
  rpc_call_add_field_violation(call, field, "%s", why);
  (*count)++;
}

void svc_vlist_add(svc_vlist *l, const char *field, const char *why) {
  if (why == NULL) return;
  if (l->n < RPC_MAX_VIOLATIONS) {
    snprintf(l->v[l->n].field, sizeof l->v[l->n].field, "%s", field);
    l->v[l->n].why = why;
  }
  l->n++;
}

size_t svc_vlist_apply(rpc_call *call, const svc_vlist *l) {
  int count = 0;
  for (size_t i = 0; i < l->n && i < RPC_MAX_VIOLATIONS; i++)
    svc_violation(call, &count, l->v[i].field, l->v[i].why);
  return l->n;
}

const char *svc_message_string(const ProtobufCMessage *m, const char *field) {
  const ProtobufCFieldDescriptor *f =
      protobuf_c_message_descriptor_get_field_by_name(m->descriptor, field);
  if (f == NULL || f->type != PROTOBUF_C_TYPE_STRING || f->label == PROTOBUF_C_LABEL_REPEATED)
    return NULL;
  return *(const char *const *)((const char *)m + f->offset);
}

bool svc_id_valid(const char *s) {
  if (s == NULL || strlen(s) != 36) return false;
  for (int i = 0; i < 36; i++) {
    char c = s[i];
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      if (c != '-') return false;
    } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
      return false;
    }
  }
  return true;
}

/* ---- Times and patterns ------------------------------------------------------------ */

int64_t svc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void svc_timestamp_set(Shop__Common__V1__Timestamp *t, int64_t ms) {
  shop__common__v1__timestamp__init(t);
  t->seconds = ms / 1000;
  t->nanos = (int32_t)(ms % 1000) * 1000000;
}

int64_t svc_event_time_ms(const events_envelope *ev) {
  if (ev->time == NULL) return 0;
  return ev->time->seconds * 1000 + ev->time->nanos / 1000000;
}

void svc_like_pattern(const char *text, char *out, size_t len) {
  size_t o = 0;
  out[o++] = '%';
  for (const char *p = text; *p != '\0' && o + 3 < len; p++) {
    if (*p == '!' || *p == '%' || *p == '_') out[o++] = '!';
    out[o++] = *p;
  }
  out[o++] = '%';
  out[o] = '\0';
}

/* ---- Commands ---------------------------------------------------------------- */

void svc_fail(svc_outcome *out, status_code code, const char *field, const char *fmt, ...) {
  out->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out->message, sizeof out->message, fmt, ap);
  va_end(ap);
  snprintf(out->field, sizeof out->field, "%s", field != NULL ? field : "");
  snprintf(out->description, sizeof out->description, "%.*s", (int)sizeof out->description - 1,
           out->message);
}

void svc_token_set(Shop__Common__V1__ConsistencyToken *t, const char *id, int64_t version) {
  shop__common__v1__consistency_token__init(t);
  t->aggregate_id = (char *)id;
  t->version = version;
}

void svc_db_failed(rpc_call *call, status_code st, const char *what, const char *err) {
  log_error(
      &(log_ctx){.request_id = rpc_call_request_id(call), .trace_id = rpc_call_trace_id(call)},
      "%s: %s: %s (%s)", rpc_call_method(call), what, status_name(st), err);
  if (st == STATUS_UNAVAILABLE)
    rpc_call_set_status(call, STATUS_UNAVAILABLE, "the database is unavailable; try again");
  else
    rpc_call_set_status(call, STATUS_INTERNAL, "internal error");
}

bool svc_db_get(rpc_call *call, db_pool *pool, db_conn **out) {
  char err[512];
  *out = NULL;
  status_code st = db_pool_get(pool, out, err, sizeof err);
  if (st == STATUS_OK) return true;
  svc_db_failed(call, st, "no database connection", err);
  return false;
}

bool svc_list_page(rpc_call *call, db_pool *pool, const char *count_sql,
                   const db_value *count_params, size_t ncount, const char *page_sql,
                   const db_value *page_params, size_t npage, const char *what, int64_t *total,
                   db_rows **rows) {
  char err[512];
  db_conn *c = NULL;
  *total = 0;
  *rows = NULL;
  if (!svc_db_get(call, pool, &c)) return false;
  status_code st = db_query_i64(c, count_sql, count_params, ncount, total, err, sizeof err);
  if (st == STATUS_OK) st = db_query(c, page_sql, page_params, npage, rows, err, sizeof err);
  db_pool_put(pool, c);
  if (st != STATUS_OK) {
    svc_db_failed(call, st, what, err);
    return false;
  }
  return true;
}

/* Failures a repeat of the same request may not meet again: not recorded. */
static bool outcome_recordable(status_code c) {
  switch (c) {
  case STATUS_RESOURCE_EXHAUSTED:
  case STATUS_UNAVAILABLE:
  case STATUS_DEADLINE_EXCEEDED:
  case STATUS_INTERNAL:
  case STATUS_UNKNOWN:
  case STATUS_CANCELLED:
    return false;
  default:
    return true;
  }
}

static void outcome_details(rpc_call *call, const svc_outcome *o) {
  if (o->field[0] != '\0') rpc_call_add_field_violation(call, o->field, "%s", o->description);
  if (o->retry_delay_ms >= 0) rpc_call_set_retry_delay(call, o->retry_delay_ms);
}

#define SVC_TX_ATTEMPTS 4

bool svc_command_run(const svc_command *cmd) {
  rpc_call *call = cmd->call;
  char err[512] = "";
  db_conn *c = NULL;
  if (!svc_db_get(call, cmd->db, &c)) return false;
  status_code st;
  bool send = false;
  for (int attempt = 1;; attempt++) {
    svc_outcome out = {.code = STATUS_OK, .retry_delay_ms = -1};
    bool replayed = false;
    st = db_begin(c, err, sizeof err);
    if (st == STATUS_OK && cmd->idempotent) {
      st = rpc_idem_begin(call, c, &replayed, err, sizeof err);
      if (st == STATUS_INVALID_ARGUMENT || st == STATUS_FAILED_PRECONDITION ||
          (st == STATUS_INTERNAL && rpc_call_status(call) == STATUS_INTERNAL)) {
        /* The layer set the answer on the call (no key, key reused, a
         * record without reply). */
        db_rollback(c);
        break;
      }
      if (st == STATUS_OK && replayed) {
        st = db_commit(c, err, sizeof err);
        if (st == STATUS_OK) break;
      }
    }
    if (st == STATUS_OK) st = cmd->apply(c, cmd->arg, &out, err, sizeof err);
    if (st == STATUS_OK) {
      if (out.code == STATUS_OK) {
        rpc_call_set_status(call, STATUS_OK, NULL);
        if (cmd->idempotent) st = rpc_idem_record(call, c, cmd->reply, err, sizeof err);
        if (st == STATUS_OK) st = db_commit(c, err, sizeof err);
        if (st == STATUS_OK) {
          /* Committed, not yet answered nor published: the caller's retry
           * with the same key must get the stored reply, and the relay of
           * the restarted process must publish the events. */
          crash_point("command.after_commit");
          outbox_relay_nudge(cmd->relay);
          send = true;
          break;
        }
      } else if (outcome_recordable(out.code)) {
        /* Only code and message are stored with the record; the details
         * are added once the commit went through. */
        rpc_call_set_status(call, out.code, "%s", out.message);
        if (cmd->idempotent) st = rpc_idem_record(call, c, NULL, err, sizeof err);
        if (st == STATUS_OK) st = db_commit(c, err, sizeof err);
        if (st == STATUS_OK) {
          outbox_relay_nudge(cmd->relay);
          outcome_details(call, &out);
          break;
        }
      } else {
        db_rollback(c);
        rpc_call_set_status(call, out.code, "%s", out.message);
        outcome_details(call, &out);
        break;
      }
    }
    db_rollback(c);
    bool again = (st == STATUS_ABORTED || st == STATUS_UNAVAILABLE) && attempt < SVC_TX_ATTEMPTS &&
                 !rpc_call_cancelled(call);
    if (!again) {
      svc_db_failed(call, st, "transaction failed", err);
      break;
    }
    struct timespec ts = {0, 5L * 1000000L * attempt};
    nanosleep(&ts, NULL);
  }
  db_pool_put(cmd->db, c);
  return send;
}

status_code svc_event_append(db_conn *tx, const rpc_call *call, const char *program,
                             const char *topic, const char *aggregate_id, int64_t version,
                             const ProtobufCMessage *event, const char *actor, char *errbuf,
                             size_t errlen) {
  (void)topic; /* follows from the event's package */
  if (actor == NULL || actor[0] == '\0')
    actor = call != NULL && rpc_call_authenticated(call) ? rpc_call_user_id(call) : program;
  const outbox_cause cause = {.actor = actor,
                              .correlation_id = call != NULL ? rpc_call_request_id(call) : NULL,
                              .traceparent = call != NULL ? rpc_call_traceparent(call) : NULL};
  const outbox_sink sink = outbox_sink_of(NULL, program);
  return outbox_emit(&sink, tx, &cause, aggregate_id, version, event, errbuf, errlen);
}

/* ---- Read-your-writes ---------------------------------------------------------- */

void svc_notifier_init(svc_notifier *n) {
  pthread_mutex_init(&n->mu, NULL);
  pthread_condattr_t a;
  pthread_condattr_init(&a);
  pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
  pthread_cond_init(&n->cv, &a);
  pthread_condattr_destroy(&a);
  n->generation = 0;
  n->slots = calloc(SVC_NOTIFIER_SLOTS, sizeof *n->slots);
}

void svc_notifier_destroy(svc_notifier *n) {
  pthread_mutex_destroy(&n->mu);
  pthread_cond_destroy(&n->cv);
  free(n->slots);
  n->slots = NULL;
}

static size_t slot_of(const char *id) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char *p = (const unsigned char *)id; *p != '\0'; p++) {
    h ^= *p;
    h *= 1099511628211ULL;
  }
  return (size_t)(h % SVC_NOTIFIER_SLOTS);
}

void svc_notifier_committed(svc_notifier *n, const consumer_msg *msgs, size_t count,
                            const char *topic) {
  pthread_mutex_lock(&n->mu);
  for (size_t i = 0; n->slots != NULL && i < count; i++) {
    const events_envelope *ev = msgs[i].env;
    if (topic != NULL && (msgs[i].topic == NULL || strcmp(msgs[i].topic, topic) != 0)) continue;
    if (ev->subject == NULL || ev->subject[0] == '\0' || strlen(ev->subject) >= 65) continue;
    svc_notifier_slot *s = &n->slots[slot_of(ev->subject)];
    if (strcmp(s->id, ev->subject) != 0) {
      snprintf(s->id, sizeof s->id, "%s", ev->subject);
      s->version = 0;
    }
    if (ev->sequence > s->version) s->version = ev->sequence;
  }
  n->generation++;
  pthread_cond_broadcast(&n->cv);
  pthread_mutex_unlock(&n->mu);
}

int64_t svc_notifier_version(svc_notifier *n, const char *id) {
  pthread_mutex_lock(&n->mu);
  const svc_notifier_slot *s = n->slots != NULL ? &n->slots[slot_of(id)] : NULL;
  int64_t v = s != NULL && strcmp(s->id, id) == 0 ? s->version : 0;
  pthread_mutex_unlock(&n->mu);
  return v;
}

static int64_t mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The database is looked at again at least this often while waiting, for
 * an aggregate whose slot another one took. */
#define SVC_WAIT_RECHECK_MS 250

/* Waits until the notifier holds version want of id (true), or until ms
 * passed (false). */
static bool notifier_wait_for(svc_notifier *n, const char *id, int64_t want, int64_t ms) {
  struct timespec until;
  clock_gettime(CLOCK_MONOTONIC, &until);
  until.tv_sec += ms / 1000;
  until.tv_nsec += (ms % 1000) * 1000000L;
  if (until.tv_nsec >= 1000000000L) {
    until.tv_sec++;
    until.tv_nsec -= 1000000000L;
  }
  const svc_notifier_slot *s = n->slots != NULL ? &n->slots[slot_of(id)] : NULL;
  bool there = false;
  pthread_mutex_lock(&n->mu);
  for (;;) {
    there = s != NULL && strcmp(s->id, id) == 0 && s->version >= want;
    if (there) break;
    if (pthread_cond_timedwait(&n->cv, &n->mu, &until) == ETIMEDOUT) {
      there = s != NULL && strcmp(s->id, id) == 0 && s->version >= want;
      break;
    }
  }
  pthread_mutex_unlock(&n->mu);
  return there;
}

/* Reads the projected version of id on a pooled connection. */
static bool read_version(rpc_call *call, db_pool *db, svc_version_fn version_fn, const char *id,
                         int64_t *have) {
  char err[512] = "";
  db_conn *c = NULL;
  if (!svc_db_get(call, db, &c)) return false;
  status_code st = version_fn(c, id, have, err, sizeof err);
  db_pool_put(db, c);
  if (st != STATUS_OK) {
    svc_db_failed(call, st, "reading the projection's version", err);
    return false;
  }
  return true;
}

bool svc_consistency_wait(rpc_call *call, db_pool *db, svc_notifier *n,
                          const Shop__Common__V1__ReadConsistency *rc, svc_version_fn version_fn) {
  if (rc == NULL || rc->token == NULL) return true;
  const Shop__Common__V1__ConsistencyToken *t = rc->token;
  if (!svc_id_valid(t->aggregate_id)) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid consistency token");
    rpc_call_add_field_violation(call, "consistency.token.aggregate_id", "must be an id");
    return false;
  }
  if (t->version < 1) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid consistency token");
    rpc_call_add_field_violation(call, "consistency.token.version", "must be at least 1");
    return false;
  }
  if (rc->wait_ms < 0) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid wait budget");
    rpc_call_add_field_violation(call, "consistency.wait_ms", "must not be negative");
    return false;
  }
  /* Keep a little of the call's budget to answer in. */
  int64_t budget = rpc_call_remaining_ms(call) - 50;
  if (rc->wait_ms > 0 && rc->wait_ms < budget) budget = rc->wait_ms;
  int64_t deadline = mono_ms() + (budget > 0 ? budget : 0);
  int64_t have = 0;
  for (;;) {
    if (!read_version(call, db, version_fn, t->aggregate_id, &have)) return false;
    if (have >= t->version) return true;
    int64_t left = deadline - mono_ms();
    if (left <= 0) break;
    notifier_wait_for(n, t->aggregate_id, t->version,
                      left < SVC_WAIT_RECHECK_MS ? left : SVC_WAIT_RECHECK_MS);
  }
  rpc_call_set_status(call, STATUS_FAILED_PRECONDITION,
                      "projection of %s is at version %lld, token asks for %lld", t->aggregate_id,
                      (long long)have, (long long)t->version);
  rpc_call_add_field_violation(call, "consistency.token.version", "the projection has version %lld",
                               (long long)have);
  rpc_call_set_projection(call, t->aggregate_id, have);
  return false;
}

/* ---- Pages ------------------------------------------------------------------- */

bool svc_page_size(rpc_call *call, const Shop__Common__V1__PageRequest *page, int *size) {
  int32_t s = page != NULL ? page->page_size : 0;
  if (s == 0) {
    *size = SVC_PAGE_DEFAULT;
    return true;
  }
  if (s < 1 || s > SVC_PAGE_MAX) {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid page size");
    rpc_call_add_field_violation(call, "page.page_size", "must be 0 (default %d) or 1 to %d",
                                 SVC_PAGE_DEFAULT, SVC_PAGE_MAX);
    return false;
  }
  *size = s;
  return true;
}

#define SVC_DIGEST_BYTES 8

static void filters_digest(const char *filters, unsigned char out[SVC_DIGEST_BYTES]) {
  crypto_generichash(out, SVC_DIGEST_BYTES, (const unsigned char *)filters, strlen(filters), NULL,
                     0);
}

/* Binary form: digest, then per field a 2-byte big-endian length and the
 * bytes. */
void svc_page_token_encode(char out[SVC_PAGE_TOKEN_MAX], const char *filters,
                           const svc_page_pos *pos) {
  unsigned char raw[SVC_DIGEST_BYTES + SVC_PAGE_FIELDS_MAX * (2 + SVC_PAGE_FIELD_MAX)];
  size_t n = 0;
  filters_digest(filters, raw);
  n = SVC_DIGEST_BYTES;
  for (size_t i = 0; i < pos->n && i < SVC_PAGE_FIELDS_MAX; i++) {
    size_t len = strnlen(pos->field[i], SVC_PAGE_FIELD_MAX - 1);
    raw[n++] = (unsigned char)(len >> 8);
    raw[n++] = (unsigned char)(len & 0xff);
    memcpy(raw + n, pos->field[i], len);
    n += len;
  }
  size_t need = sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  if (need > SVC_PAGE_TOKEN_MAX) {
    /* Cannot happen: 8 + 4 * 1025 bytes encode to 5478 characters. Keep
     * the token empty rather than truncated. */
    out[0] = '\0';
    return;
  }
  sodium_bin2base64(out, SVC_PAGE_TOKEN_MAX, raw, n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
}

static bool bad_token(rpc_call *call, const char *why) {
  rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid page token");
  rpc_call_add_field_violation(call, "page.page_token", "%s", why);
  return false;
}

bool svc_page_token_decode(rpc_call *call, const char *token, const char *filters,
                           svc_page_pos *pos) {
  memset(pos, 0, sizeof *pos);
  if (token == NULL || token[0] == '\0') return true;
  if (strlen(token) >= SVC_PAGE_TOKEN_MAX) return bad_token(call, "not a page token");
  unsigned char raw[SVC_PAGE_TOKEN_MAX];
  size_t n = 0;
  if (sodium_base642bin(raw, sizeof raw, token, strlen(token), NULL, &n, NULL,
                        sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
      n < SVC_DIGEST_BYTES)
    return bad_token(call, "not a page token");
  unsigned char want[SVC_DIGEST_BYTES];
  filters_digest(filters, want);
  if (memcmp(raw, want, SVC_DIGEST_BYTES) != 0)
    return bad_token(call, "was issued for other filters or another sort order");
  size_t i = SVC_DIGEST_BYTES;
  while (i < n) {
    if (pos->n >= SVC_PAGE_FIELDS_MAX || i + 2 > n) return bad_token(call, "not a page token");
    size_t len = ((size_t)raw[i] << 8) | raw[i + 1];
    i += 2;
    if (len >= SVC_PAGE_FIELD_MAX || i + len > n) return bad_token(call, "not a page token");
    memcpy(pos->field[pos->n], raw + i, len);
    pos->field[pos->n][len] = '\0';
    pos->n++;
    i += len;
  }
  return true;
}
