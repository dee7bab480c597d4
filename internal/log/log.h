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
 *
 * The current context (tracing rule). Each thread has a current log scope
 * (log_scope_enter/leave, a stack kept in thread-local storage). Whoever
 * runs work on behalf of a request or an event sets it around that work,
 * so that code which logs without a log_ctx still names what it works for:
 *   - the RPC server around each call: request_id and the caller's
 *     traceparent (trace_id is taken from it);
 *   - the event consumer around each event's handler (the consumer framework
 *     and the handlers that loop themselves): the event's traceparent and
 *     event_id = the event's id;
 *   - timers (the order deadline sweeper) around each aggregate they act
 *     on: the traceparent the aggregate was created under.
 * A record gets, for each of request_id, trace_id and event_id, the value
 * of the ctx the caller passed, or the current scope's when the caller's is
 * NULL or empty. Anything sent outward from inside a scope continues its
 * trace: RPC calls send a child traceparent (same trace id, a new span id,
 * log_traceparent_child), and events appended to an outbox carry the
 * scope's traceparent unless the caller gives one (see
 * internal/events/README.md, "Tracing").
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

/* A W3C traceparent "00-<32 hex trace id>-<16 hex span id>-<2 hex flags>"
 * and its NUL. */
#define LOG_TRACEPARENT_SIZE 56
#define LOG_TRACE_ID_SIZE 33

/* One level of the current context of a thread. Lives on the stack of the
 * code that entered it; request_id and event_id are borrowed and must
 * outlive the scope; the traceparent is copied. */
typedef struct log_scope {
  log_ctx ctx; /* request_id, trace_id (points into trace_id[]), event_id */
  char trace_id[LOG_TRACE_ID_SIZE];
  char traceparent[LOG_TRACEPARENT_SIZE]; /* "" when none was valid */
  struct log_scope *prev;
} log_scope;

/* Makes s the calling thread's current scope until log_scope_leave(s).
 * Any argument may be NULL; an invalid traceparent is ignored (no trace).
 * Scopes nest: leave them in the reverse order. Thread: the calling one. */
void log_scope_enter(log_scope *s, const char *request_id, const char *traceparent,
                     const char *event_id);
/* Restores the scope that was current when s was entered. */
void log_scope_leave(log_scope *s);

/* The calling thread's current context, or NULL outside every scope. */
const log_ctx *log_current(void);
/* The current scope's traceparent; "" outside every scope or without a
 * trace. Valid until that scope is left. */
const char *log_current_traceparent(void);

/* Copies the trace id (32 lowercase hex digits) of a W3C traceparent into
 * out; false and out = "" when tp is NULL, malformed or all zeros. */
bool log_trace_id(const char *tp, char out[LOG_TRACE_ID_SIZE]);

/* Writes a child of parent to out: version 00, parent's trace id and
 * flags, a new random span id. When parent is NULL or not a valid
 * traceparent, starts a new trace (new random trace id, flags 01) and
 * returns false; true when it continued parent's trace. */
bool log_traceparent_child(const char *parent, char out[LOG_TRACEPARENT_SIZE]);

/* Sets the service name (copied), the minimum level and the stream (NULL
 * means stderr; borrowed, must outlive logging). Call before threads start. */
void log_setup(const char *service, log_level min_level, FILE *out);

/* Parses "debug", "info", "warn" or "error". Returns false otherwise. */
bool log_level_parse(const char *text, log_level *out);

const char *log_level_name(log_level level);

/* True if records of this level are written; check before formatting. */
bool log_enabled(log_level level);

/* Writes one record. ctx may be NULL: the current scope's ids are used for
 * what ctx leaves NULL or empty. printf-style format. */
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
