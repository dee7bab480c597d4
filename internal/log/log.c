#include "log/log.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

/* The process-wide logger: written by log_setup() before threads start, read
 * afterwards. See log.h. */
static struct {
  char service[64];
  log_level min;
  FILE *out;
  pthread_mutex_t mu;
} logger = {.service = "shop", .min = LOG_LEVEL_INFO, .out = NULL, .mu = PTHREAD_MUTEX_INITIALIZER};

/* The current scope of each thread (see log.h, "The current context").
 * Thread-local rather than passed along: domain code deep below a handler
 * logs and appends events without every signature carrying a context. */
static _Thread_local log_scope *current;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_setup(const char *service, log_level min_level, FILE *out) {
  if (service != NULL) {
    strncpy(logger.service, service, sizeof logger.service - 1);
    logger.service[sizeof logger.service - 1] = '\0';
  }
  logger.min = min_level;
  logger.out = out;
}

bool log_level_parse(const char *text, log_level *out) {
  for (int i = 0; i < 4; i++) {
    if (text != NULL && strcmp(text, level_names[i]) == 0) {
      *out = (log_level)i;
      return true;
    }
  }
  return false;
}

const char *log_level_name(log_level level) {
  return (level >= LOG_LEVEL_DEBUG && level <= LOG_LEVEL_ERROR) ? level_names[level] : "info";
}

bool log_enabled(log_level level) { return level >= logger.min; }

size_t log_json_escape(char *dst, size_t dstlen, const char *src) {
  size_t o = 0;
  if (dstlen == 0) return 0;
  for (const unsigned char *s = (const unsigned char *)src; s != NULL && *s != '\0'; s++) {
    char tmp[8];
    size_t n;
    switch (*s) {
    case '"':
      n = 2, memcpy(tmp, "\\\"", 2);
      break;
    case '\\':
      n = 2, memcpy(tmp, "\\\\", 2);
      break;
    case '\n':
      n = 2, memcpy(tmp, "\\n", 2);
      break;
    case '\r':
      n = 2, memcpy(tmp, "\\r", 2);
      break;
    case '\t':
      n = 2, memcpy(tmp, "\\t", 2);
      break;
    default:
      if (*s < 0x20 || *s == 0x7f) {
        n = (size_t)snprintf(tmp, sizeof tmp, "\\u%04x", *s);
      } else {
        tmp[0] = (char)*s;
        n = 1;
      }
    }
    /* Do not split a UTF-8 sequence: stop before a lead byte whose whole
     * sequence does not fit. */
    if (n == 1 && *s >= 0xc0) {
      size_t seq = *s >= 0xf0 ? 4 : *s >= 0xe0 ? 3 : 2;
      if (o + seq >= dstlen) break;
    }
    if (o + n >= dstlen) break;
    memcpy(dst + o, tmp, n);
    o += n;
  }
  dst[o] = '\0';
  return o;
}

/* ---- Trace context --------------------------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  return -1;
}

static bool hex_run(const char *s, size_t n, bool *nonzero) {
  *nonzero = false;
  for (size_t i = 0; i < n; i++) {
    int h = hexval(s[i]);
    if (h < 0) return false;
    if (h != 0) *nonzero = true;
  }
  return true;
}

/* W3C Trace Context, version 00: "00-" trace-id(32) "-" parent-id(16) "-"
 * flags(2), lowercase hex, neither id all zeros. Longer values of a later
 * version are accepted for their first 55 characters, as the spec asks. */
static bool traceparent_valid(const char *tp) {
  if (tp == NULL || strlen(tp) < 55 || tp[2] != '-' || tp[35] != '-' || tp[52] != '-') return false;
  bool nz, nz_trace, nz_span;
  if (!hex_run(tp, 2, &nz) || strncmp(tp, "ff", 2) == 0) return false;
  if (strncmp(tp, "00", 2) == 0 && tp[55] != '\0') return false;
  return hex_run(tp + 3, 32, &nz_trace) && nz_trace && hex_run(tp + 36, 16, &nz_span) && nz_span &&
         hex_run(tp + 53, 2, &nz);
}

bool log_trace_id(const char *tp, char out[LOG_TRACE_ID_SIZE]) {
  out[0] = '\0';
  if (!traceparent_valid(tp)) return false;
  memcpy(out, tp + 3, 32);
  out[32] = '\0';
  return true;
}

/* Random bits for ids: the kernel's generator; a per-thread xorshift
 * seeded from the clock if that ever fails (ids need to be unique, not
 * secret). */
static void random_bytes(unsigned char *out, size_t n) {
  if (getrandom(out, n, GRND_NONBLOCK) == (ssize_t)n) return;
  static _Thread_local unsigned long long x;
  if (x == 0) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    x = ((unsigned long long)ts.tv_sec << 32) ^ (unsigned long long)ts.tv_nsec ^
        (unsigned long long)(uintptr_t)&ts;
    if (x == 0) x = 0x9e3779b97f4a7c15ULL;
  }
  for (size_t i = 0; i < n; i++) {
    x ^= x << 13, x ^= x >> 7, x ^= x << 17;
    out[i] = (unsigned char)x;
  }
}

/* n random bytes as 2n hex digits, never all zeros. */
static void random_hex(char *out, size_t n) {
  static const char d[] = "0123456789abcdef";
  unsigned char b[16];
  random_bytes(b, n);
  b[n - 1] |= 1;
  for (size_t i = 0; i < n; i++) {
    out[2 * i] = d[b[i] >> 4];
    out[2 * i + 1] = d[b[i] & 15];
  }
}

bool log_traceparent_child(const char *parent, char out[LOG_TRACEPARENT_SIZE]) {
  bool cont = traceparent_valid(parent);
  memcpy(out, "00-", 3);
  if (cont)
    memcpy(out + 3, parent + 3, 32);
  else
    random_hex(out + 3, 16);
  out[35] = '-';
  random_hex(out + 36, 8);
  out[52] = '-';
  if (cont)
    memcpy(out + 53, parent + 53, 2);
  else
    memcpy(out + 53, "01", 2);
  out[55] = '\0';
  return cont;
}

void log_scope_enter(log_scope *s, const char *request_id, const char *traceparent,
                     const char *event_id) {
  s->traceparent[0] = '\0';
  if (log_trace_id(traceparent, s->trace_id)) {
    memcpy(s->traceparent, traceparent, 55);
    s->traceparent[55] = '\0';
  }
  s->ctx = (log_ctx){.request_id = request_id, .trace_id = s->trace_id, .event_id = event_id};
  s->prev = current;
  current = s;
}

void log_scope_leave(log_scope *s) {
  /* Leaving out of order is a bug in the caller. */
  assert(current == s);
  current = s->prev;
}

const log_ctx *log_current(void) { return current != NULL ? &current->ctx : NULL; }

const char *log_current_traceparent(void) { return current != NULL ? current->traceparent : ""; }

/* ---- Records ------------------------------------------------------------------------------------
 */

static size_t append(char *buf, size_t len, size_t o, const char *s) {
  size_t n = strlen(s);
  if (o + n >= len) n = o < len ? len - o - 1 : 0;
  memcpy(buf + o, s, n);
  buf[o + n] = '\0';
  return o + n;
}

static size_t append_field(char *buf, size_t len, size_t o, const char *key, const char *value) {
  if (value == NULL || value[0] == '\0') return o;
  o = append(buf, len, o, ",\"");
  o = append(buf, len, o, key);
  o = append(buf, len, o, "\":\"");
  if (o < len) o += log_json_escape(buf + o, len - o, value);
  return append(buf, len, o, "\"");
}

static void emit(log_level level, const log_ctx *ctx, const char *const *kv, int nkv,
                 const char *fmt, va_list ap) {
  char msg[2048];
  char line[8192];
  vsnprintf(msg, sizeof msg, fmt, ap);

  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  struct tm tm;
  gmtime_r(&ts.tv_sec, &tm);
  char when[40];
  size_t w = strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
  snprintf(when + w, sizeof when - w, ".%03ldZ", ts.tv_nsec / 1000000);

  size_t o = 0;
  o = append(line, sizeof line - 2, o, "{\"ts\":\"");
  o = append(line, sizeof line - 2, o, when);
  o = append(line, sizeof line - 2, o, "\",\"level\":\"");
  o = append(line, sizeof line - 2, o, level_names[level]);
  o = append(line, sizeof line - 2, o, "\"");
  o = append_field(line, sizeof line - 2, o, "service", logger.service);
  o = append_field(line, sizeof line - 2, o, "msg", msg);
  /* What the caller leaves out comes from the current scope. */
  const log_ctx *cur = log_current();
  const char *ids[][2] = {
      {"request_id", ctx != NULL ? ctx->request_id : NULL},
      {"trace_id", ctx != NULL ? ctx->trace_id : NULL},
      {"event_id", ctx != NULL ? ctx->event_id : NULL},
  };
  const char *fallback[] = {cur != NULL ? cur->request_id : NULL,
                            cur != NULL ? cur->trace_id : NULL, cur != NULL ? cur->event_id : NULL};
  for (int i = 0; i < 3; i++) {
    const char *v = ids[i][1] != NULL && ids[i][1][0] != '\0' ? ids[i][1] : fallback[i];
    o = append_field(line, sizeof line - 2, o, ids[i][0], v);
  }
  for (int i = 0; i + 1 < nkv * 2; i += 2) {
    o = append_field(line, sizeof line - 2, o, kv[i], kv[i + 1]);
  }
  line[o++] = '}';
  line[o++] = '\n';

  FILE *out = logger.out != NULL ? logger.out : stderr;
  pthread_mutex_lock(&logger.mu);
  fwrite(line, 1, o, out);
  fflush(out);
  pthread_mutex_unlock(&logger.mu);
}

void log_emit(log_level level, const log_ctx *ctx, const char *fmt, ...) {
  if (!log_enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  emit(level, ctx, NULL, 0, fmt, ap);
  va_end(ap);
}

void log_emit_kv(log_level level, const log_ctx *ctx, const char *const *kv, int nkv,
                 const char *fmt, ...) {
  if (!log_enabled(level)) return;
  va_list ap;
  va_start(ap, fmt);
  emit(level, ctx, kv, nkv, fmt, ap);
  va_end(ap);
}
