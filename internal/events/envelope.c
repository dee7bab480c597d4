/* Event ids, ce_time texts and the envelope <-> record mapping (no
 * librdkafka here: kafka.c turns these into librdkafka calls). */
#include <errno.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "events/events.h"
#include "events/events_internal.h"

/* --- UUIDv7 --------------------------------------------------------------- */

static pthread_once_t sodium_once = PTHREAD_ONCE_INIT;
static void sodium_init_once(void) {
  /* sodium_init() only fails when the system has no entropy source; a
   * process that cannot make random ids must not run. */
  if (sodium_init() < 0) abort();
}

void events_sodium_ready(void) { pthread_once(&sodium_once, sodium_init_once); }

/* Per thread: the millisecond of the last id and its 12-bit counter. */
static _Thread_local int64_t uuid_last_ms = -1;
static _Thread_local uint32_t uuid_counter;

void events_uuid_v7(char out[EVENTS_ID_SIZE]) {
  events_sodium_ready();
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  int64_t ms = (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
  if (ms <= uuid_last_ms) {
    /* Same (or an earlier: the clock stepped back) millisecond: count up so
     * the id still sorts after the previous one. */
    ms = uuid_last_ms;
    if (++uuid_counter > 0xfff) {
      ms++;
      uuid_counter = randombytes_uniform(0x800);
    }
  } else {
    /* A fresh millisecond starts the counter at a random value with the
     * top bit clear, leaving at least 2048 ids of headroom (RFC 9562 6.2). */
    uuid_counter = randombytes_uniform(0x800);
  }
  uuid_last_ms = ms;

  uint8_t b[16];
  randombytes_buf(b + 8, 8);
  for (int i = 0; i < 6; i++) b[i] = (uint8_t)((uint64_t)ms >> (40 - 8 * i));
  b[6] = (uint8_t)(0x70 | ((uuid_counter >> 8) & 0x0f));
  b[7] = (uint8_t)(uuid_counter & 0xff);
  b[8] = (uint8_t)(0x80 | (b[8] & 0x3f));

  static const char hex[] = "0123456789abcdef";
  size_t o = 0;
  for (int i = 0; i < 16; i++) {
    if (i == 4 || i == 6 || i == 8 || i == 10) out[o++] = '-';
    out[o++] = hex[b[i] >> 4];
    out[o++] = hex[b[i] & 0x0f];
  }
  out[o] = '\0';
}

void events_now(events_timestamp *ts) {
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  ts->seconds = (int64_t)now.tv_sec;
  ts->nanos = (int32_t)now.tv_nsec;
}

/* --- RFC 3339 -------------------------------------------------------------- */

/* Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
 * days_from_civil): exact for every year, no time zone involved. */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
  y -= m <= 2;
  const int64_t era = (y >= 0 ? y : y - 399) / 400;
  const unsigned yoe = (unsigned)(y - era * 400);
  const unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
  const unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
  return era * 146097 + (int64_t)doe - 719468;
}

static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
  z += 719468;
  const int64_t era = (z >= 0 ? z : z - 146096) / 146097;
  const unsigned doe = (unsigned)(z - era * 146097);
  const unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
  const unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
  const unsigned mp = (5 * doy + 2) / 153;
  *d = doy - (153 * mp + 2) / 5 + 1;
  *m = mp < 10 ? mp + 3 : mp - 9;
  *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

#define EVENTS_MIN_SECONDS (-62135596800LL) /* 0001-01-01T00:00:00Z */
#define EVENTS_MAX_SECONDS (253402300799LL) /* 9999-12-31T23:59:59Z */

bool events_time_format(int64_t seconds, int32_t nanos, char out[EVENTS_TIME_SIZE]) {
  if (seconds < EVENTS_MIN_SECONDS || seconds > EVENTS_MAX_SECONDS || nanos < 0 ||
      nanos > 999999999) {
    out[0] = '\0';
    return false;
  }
  int64_t days = seconds >= 0 ? seconds / 86400 : -((-seconds + 86399) / 86400);
  int64_t rem = seconds - days * 86400;
  int64_t y;
  unsigned m, d;
  civil_from_days(days, &y, &m, &d);
  /* Every field is in range here; the buffer always suffices. */
  char buf[64];
  snprintf(buf, sizeof buf, "%04d-%02u-%02uT%02d:%02d:%02d.%03dZ", (int)y, m % 100, d % 100,
           (int)(rem / 3600) % 100, (int)(rem / 60 % 60), (int)(rem % 60),
           (int)(nanos / 1000000) % 1000);
  memcpy(out, buf, 25);
  return true;
}

static bool digits(const char *s, size_t n, int *out) {
  int v = 0;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (s[i] - '0');
  }
  *out = v;
  return true;
}

bool events_time_parse(const char *s, size_t len, int64_t *seconds, int32_t *nanos) {
  int y, mo, d, h, mi, se;
  if (len < 20 || !digits(s, 4, &y) || s[4] != '-' || !digits(s + 5, 2, &mo) || s[7] != '-' ||
      !digits(s + 8, 2, &d) || (s[10] != 'T' && s[10] != 't' && s[10] != ' ') ||
      !digits(s + 11, 2, &h) || s[13] != ':' || !digits(s + 14, 2, &mi) || s[16] != ':' ||
      !digits(s + 17, 2, &se)) {
    return false;
  }
  static const int mdays[] = {31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
  if (y < 1 || mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] || h > 23 || mi > 59 || se > 60) {
    return false;
  }
  bool leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
  if (mo == 2 && d == 29 && !leap) return false;
  if (se == 60) se = 59; /* a leap second is held at :59, as protobuf's Timestamp does */
  size_t i = 19;
  int64_t ns = 0;
  if (i < len && s[i] == '.') {
    i++;
    size_t start = i;
    int scale = 100000000;
    while (i < len && s[i] >= '0' && s[i] <= '9') {
      if (i - start < 9) {
        ns += (int64_t)(s[i] - '0') * scale;
        scale /= 10;
      }
      i++;
    }
    if (i == start) return false;
  }
  int64_t offset = 0;
  if (i < len && (s[i] == 'Z' || s[i] == 'z')) {
    i++;
  } else if (i + 6 <= len && (s[i] == '+' || s[i] == '-') && s[i + 3] == ':') {
    int oh, om;
    if (!digits(s + i + 1, 2, &oh) || !digits(s + i + 4, 2, &om) || oh > 23 || om > 59) {
      return false;
    }
    offset = (int64_t)(oh * 3600 + om * 60) * (s[i] == '+' ? 1 : -1);
    i += 6;
  } else {
    return false;
  }
  if (i != len) return false;
  int64_t secs = days_from_civil(y, (unsigned)mo, (unsigned)d) * 86400 + h * 3600 + mi * 60 + se;
  *seconds = secs - offset;
  *nanos = (int32_t)ns;
  return true;
}

/* --- Envelope -------------------------------------------------------------- */

static bool empty(const char *s) { return s == NULL || s[0] == '\0'; }

bool events_id_ok(const char *id, size_t len) {
  if (len == 0 || len > EVENTS_ID_MAX) return false;
  for (size_t i = 0; i < len; i++) {
    if (id[i] <= 0x20 || id[i] >= 0x7f) return false;
  }
  return true;
}

bool events_topic_ok(const char *t) {
  size_t n = strlen(t);
  if (n == 0 || n > 249 || strcmp(t, ".") == 0 || strcmp(t, "..") == 0) return false;
  for (size_t i = 0; i < n; i++) {
    char c = t[i];
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
          c == '_' || c == '-')) {
      return false;
    }
  }
  return true;
}

status_code events_envelope_validate(const events_envelope *ev, char *errbuf, size_t errlen) {
  const char *missing = empty(ev->id)       ? "id"
                        : empty(ev->source) ? "source"
                        : empty(ev->type)   ? "type"
                        : empty(ev->topic)  ? "topic"
                        : empty(ev->key)    ? "key"
                                            : NULL;
  if (missing != NULL) {
    status_seterr(errbuf, errlen, "event envelope without %s", missing);
    return STATUS_INVALID_ARGUMENT;
  }
  if (!events_id_ok(ev->id, strlen(ev->id))) {
    status_seterr(errbuf, errlen, "event id '%.80s' is not 1-%d printable ASCII characters", ev->id,
                  EVENTS_ID_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  if (!events_topic_ok(ev->topic)) {
    status_seterr(errbuf, errlen, "'%.80s' is not a legal Kafka topic name", ev->topic);
    return STATUS_INVALID_ARGUMENT;
  }
  char t[EVENTS_TIME_SIZE];
  if (ev->time != NULL && !events_time_format(ev->time->seconds, ev->time->nanos, t)) {
    status_seterr(errbuf, errlen, "event time out of range");
    return STATUS_INVALID_ARGUMENT;
  }
  if (ev->sequence < 0) {
    status_seterr(errbuf, errlen, "negative event sequence %lld", (long long)ev->sequence);
    return STATUS_INVALID_ARGUMENT;
  }
  return STATUS_OK;
}

static void add(events_ce_headers *o, const char *name, const char *value) {
  o->h[o->count++] = (events_header){.name = name, .value = value, .len = strlen(value)};
}

void events_ce_headers_build(events_ce_headers *o, const events_envelope *ev) {
  o->count = 0;
  add(o, "ce_specversion", "1.0");
  add(o, "ce_id", ev->id);
  add(o, "ce_source", ev->source);
  add(o, "ce_type", ev->type);
  if (!empty(ev->subject)) add(o, "ce_subject", ev->subject);
  if (ev->time != NULL && events_time_format(ev->time->seconds, ev->time->nanos, o->time)) {
    add(o, "ce_time", o->time);
  }
  if (ev->sequence != 0) {
    snprintf(o->sequence, sizeof o->sequence, "%lld", (long long)ev->sequence);
    add(o, "ce_sequence", o->sequence);
  }
  if (!empty(ev->correlation_id)) add(o, "ce_correlationid", ev->correlation_id);
  if (!empty(ev->actor)) add(o, "ce_actor", ev->actor);
  add(o, "content-type", "application/protobuf");
  if (!empty(ev->traceparent)) add(o, "traceparent", ev->traceparent);
}

void events_envelope_free(events_envelope *ev) {
  if (ev != NULL) shop__events__v1__event_envelope__free_unpacked(ev, NULL);
}

/* A NUL-terminated heap copy of n bytes; protobuf-c frees it. */
static char *dupn(const void *p, size_t n) {
  char *s = malloc(n + 1);
  if (s == NULL) return NULL;
  if (n > 0) memcpy(s, p, n);
  s[n] = '\0';
  return s;
}

/* The last header called name, as rd_kafka_header_get_last does. */
static const events_header *find(const events_record *rec, const char *name) {
  for (size_t i = rec->header_count; i > 0; i--) {
    if (strcmp(rec->headers[i - 1].name, name) == 0) return &rec->headers[i - 1];
  }
  return NULL;
}

static bool same(const events_header *h, const char *text) {
  size_t n = strlen(text);
  return h != NULL && h->len == n && (n == 0 || memcmp(h->value, text, n) == 0);
}

status_code events_envelope_decode(events_envelope **out, const events_record *rec, char *errbuf,
                                   size_t errlen) {
  static const char *const required[] = {"ce_id", "ce_source", "ce_type"};
  const events_header *spec = find(rec, "ce_specversion");
  if (!same(spec, "1.0")) {
    status_seterr(errbuf, errlen,
                  spec == NULL ? "invalid record: no ce_specversion header"
                               : "invalid record: ce_specversion is not 1.0");
    return STATUS_INVALID_ARGUMENT;
  }
  for (size_t i = 0; i < sizeof required / sizeof required[0]; i++) {
    const events_header *h = find(rec, required[i]);
    if (h == NULL || h->len == 0) {
      status_seterr(errbuf, errlen, "invalid record: no %s header", required[i]);
      return STATUS_INVALID_ARGUMENT;
    }
  }
  for (size_t i = 0; i < rec->header_count; i++) {
    const events_header *h = &rec->headers[i];
    if (h->len > 0 && h->value != NULL && memchr(h->value, '\0', h->len) != NULL &&
        strncmp(h->name, "ce_", 3) == 0) {
      status_seterr(errbuf, errlen, "invalid record: header %s holds a NUL byte", h->name);
      return STATUS_INVALID_ARGUMENT;
    }
  }
  const events_header *id = find(rec, "ce_id");
  if (!events_id_ok(id->value, id->len)) {
    status_seterr(errbuf, errlen, "invalid record: ce_id is not 1-%d printable ASCII characters",
                  EVENTS_ID_MAX);
    return STATUS_INVALID_ARGUMENT;
  }
  const events_header *ct = find(rec, "content-type");
  if (ct != NULL && !same(ct, "application/protobuf")) {
    status_seterr(errbuf, errlen, "invalid record: content-type is not application/protobuf");
    return STATUS_INVALID_ARGUMENT;
  }
  int64_t secs = 0, seq = 0;
  int32_t nanos = 0;
  const events_header *tm = find(rec, "ce_time");
  if (tm != NULL && !events_time_parse(tm->value, tm->len, &secs, &nanos)) {
    status_seterr(errbuf, errlen, "invalid record: ce_time is not an RFC 3339 time");
    return STATUS_INVALID_ARGUMENT;
  }
  const events_header *sq = find(rec, "ce_sequence");
  if (sq != NULL) {
    char buf[24];
    char *end;
    if (sq->len == 0 || sq->len >= sizeof buf) goto bad_seq;
    memcpy(buf, sq->value, sq->len);
    buf[sq->len] = '\0';
    seq = strtoll(buf, &end, 10);
    if (*end != '\0' || seq < 0) goto bad_seq;
  }

  events_envelope *ev = malloc(sizeof *ev);
  if (ev == NULL) goto oom;
  shop__events__v1__event_envelope__init(ev);
  /* Every string is a heap copy so that protobuf-c's free_unpacked frees
   * the envelope exactly; until all are set, unset ones hold NULL. */
  ev->id = ev->source = ev->type = ev->subject = NULL;
  ev->correlation_id = ev->actor = ev->traceparent = ev->topic = ev->key = NULL;
  struct {
    char **field;
    const char *header;
  } map[] = {
      {&ev->id, "ce_id"},
      {&ev->source, "ce_source"},
      {&ev->type, "ce_type"},
      {&ev->subject, "ce_subject"},
      {&ev->correlation_id, "ce_correlationid"},
      {&ev->actor, "ce_actor"},
      {&ev->traceparent, "traceparent"},
  };
  bool ok = true;
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    const events_header *h = find(rec, map[i].header);
    *map[i].field = h != NULL ? dupn(h->value, h->len) : dupn("", 0);
    ok = ok && *map[i].field != NULL;
  }
  ev->topic =
      dupn(rec->topic != NULL ? rec->topic : "", rec->topic != NULL ? strlen(rec->topic) : 0);
  ev->key = dupn(rec->key != NULL ? rec->key : "", rec->key != NULL ? rec->key_len : 0);
  ok = ok && ev->topic != NULL && ev->key != NULL;
  ev->sequence = seq;
  if (tm != NULL) {
    ev->time = malloc(sizeof *ev->time);
    if (ev->time != NULL) {
      shop__common__v1__timestamp__init(ev->time);
      ev->time->seconds = secs;
      ev->time->nanos = nanos;
    }
    ok = ok && ev->time != NULL;
  }
  if (rec->value_len > 0) {
    ev->data.data = malloc(rec->value_len);
    if (ev->data.data != NULL) {
      memcpy(ev->data.data, rec->value, rec->value_len);
      ev->data.len = rec->value_len;
    }
    ok = ok && ev->data.data != NULL;
  }
  if (!ok) {
    /* Unset strings are NULL, which free_unpacked skips. */
    events_envelope_free(ev);
    goto oom;
  }
  *out = ev;
  return STATUS_OK;
bad_seq:
  status_seterr(errbuf, errlen, "invalid record: ce_sequence is not a non-negative integer");
  return STATUS_INVALID_ARGUMENT;
oom:
  status_seterr(errbuf, errlen, "out of memory decoding a record");
  return STATUS_RESOURCE_EXHAUSTED;
}

status_code events_migrate(db_conn *c, int *applied, char *errbuf, size_t errlen) {
  return db_migrate(c, "events", events_migrations, events_migrations_count, applied, errbuf,
                    errlen);
}

/* --- Clocks ---------------------------------------------------------------- */

int64_t events_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

int64_t events_now_ms(void) { return events_now_ns() / 1000000; }

void events_sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

void events_log_scope_enter(log_scope *s, const events_envelope *ev) {
  log_scope_enter(s, NULL, ev->traceparent, ev->id);
}

int64_t events_time_ms(const events_envelope *ev) {
  if (ev->time == NULL) return 0;
  return ev->time->seconds * 1000 + ev->time->nanos / 1000000;
}
