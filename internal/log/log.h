/*
 * log: JSON-lines logging for every Shop process.
 *
 * One line per record on the configured stream (stderr by default):
 *   {"ts":"2026-11-25T12:00:00.123Z","level":"info","service":"order-command",
 *    "msg":"...","request_id":"...","trace_id":"...","event_id":"..."}
 * Empty or NULL context fields are left out. Messages are JSON-escaped.
 *
 * The logger is the one piece of process-wide state in Shop: log_setup() is
 * called once by main() before any thread starts and is read-only afterwards.
 * log_emit() is thread-safe (one write per line, under a lock).
 *
 * Never log passwords, password hashes or tokens.
 */
#ifndef SHOP_LOG_H
#define SHOP_LOG_H

#include <stdbool.h>
#include <stdio.h>

typedef enum log_level {
  LOG_LEVEL_DEBUG = 0,
  LOG_LEVEL_INFO = 1,
  LOG_LEVEL_WARN = 2,
  LOG_LEVEL_ERROR = 3,
} log_level;

/* Correlation ids of the record; any member may be NULL. Borrowed. */
typedef struct log_ctx {
  const char *request_id;
  const char *trace_id;
  const char *event_id;
} log_ctx;

/* Sets the service name (copied), the minimum level and the stream (NULL
 * means stderr; borrowed, must outlive logging). Call before threads start. */
void log_setup(const char *service, log_level min_level, FILE *out);

/* Parses "debug", "info", "warn" or "error". Returns false otherwise. */
bool log_level_parse(const char *text, log_level *out);

const char *log_level_name(log_level level);

/* True if records of this level are written; check before formatting. */
bool log_enabled(log_level level);

/* Writes one record. ctx may be NULL. printf-style format. */
void log_emit(log_level level, const log_ctx *ctx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Writes one record with extra string fields: kv holds nkv pairs
 * {key, value, key, value, ...}; NULL values are left out. */
void log_emit_kv(log_level level, const log_ctx *ctx, const char *const *kv, int nkv,
                 const char *fmt, ...) __attribute__((format(printf, 5, 6)));

/* Escapes src into dst as the inside of a JSON string (no quotes). Always
 * NUL-terminates when dstlen > 0; truncates at a character boundary. Returns
 * the length written. */
size_t log_json_escape(char *dst, size_t dstlen, const char *src);

#define LOG_AT_(lvl, ctx, ...)                                                                     \
  do {                                                                                             \
    if (log_enabled(lvl)) log_emit(lvl, ctx, __VA_ARGS__);                                         \
  } while (0)
#define log_debug(ctx, ...) LOG_AT_(LOG_LEVEL_DEBUG, ctx, __VA_ARGS__)
#define log_info(ctx, ...) LOG_AT_(LOG_LEVEL_INFO, ctx, __VA_ARGS__)
#define log_warn(ctx, ...) LOG_AT_(LOG_LEVEL_WARN, ctx, __VA_ARGS__)
#define log_error(ctx, ...) LOG_AT_(LOG_LEVEL_ERROR, ctx, __VA_ARGS__)

#endif
