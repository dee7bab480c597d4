#include "log/log.h"

#include <pthread.h>
#include <stdarg.h>
#include <string.h>
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
  if (ctx != NULL) {
    o = append_field(line, sizeof line - 2, o, "request_id", ctx->request_id);
    o = append_field(line, sizeof line - 2, o, "trace_id", ctx->trace_id);
    o = append_field(line, sizeof line - 2, o, "event_id", ctx->event_id);
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
