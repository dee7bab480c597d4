/*
 * Helpers shared by the .c files of the rpc module. Not part of the
 * module's contract (that is rpc.h); nothing outside internal/rpc includes
 * this file.
 */
#ifndef SHOP_RPC_INTERNAL_H
#define SHOP_RPC_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/rpc.h"
#include "shop/rpc/v1/rpc.pb-c.h"

/* A borrowed byte range. */
typedef struct rpc_str {
  const char *p;
  size_t n;
} rpc_str;

/* What the receive callback needs before a worker decodes the envelope. */
typedef struct rpc_peek {
  rpc_str method;
  rpc_str request_id;
  int64_t timeout_ms;
} rpc_peek;

/* Scans a RequestEnvelope's wire bytes for fields 1-3 without allocating.
 * False when the bytes are not a well-formed protobuf message. */
bool rpc_wire_peek(const uint8_t *buf, size_t len, rpc_peek *out);

int64_t rpc_now_ms(void);
int64_t rpc_now_us(void);
void rpc_sleep_ms(int64_t ms);

/* A seed from the OS, and thread-safe 64-bit random numbers (splitmix64
 * over an atomic counter owned by the server or client). */
uint64_t rpc_rand_seed(void);
uint64_t rpc_rand64(_Atomic uint64_t *state);

void rpc_status_setv(rpc_status *st, status_code code, const char *fmt, va_list ap);
void rpc_status_set(rpc_status *st, status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void rpc_status_add_violation(rpc_status *st, const char *field, const char *fmt, va_list ap);

/* Fills st from a received Status message (NULL means OK). An unknown code
 * becomes UNKNOWN. */
void rpc_status_from_pb(rpc_status *st, const Shop__Rpc__V1__Status *pb);

/* Storage to turn an rpc_status into a Status message without allocating;
 * the message borrows st. */
typedef struct rpc_status_pb {
  Shop__Rpc__V1__Status status;
  Shop__Rpc__V1__RetryInfo retry;
  Shop__Common__V1__ConsistencyToken projection;
  Shop__Rpc__V1__FieldViolation fv[RPC_MAX_VIOLATIONS];
  Shop__Rpc__V1__FieldViolation *fvp[RPC_MAX_VIOLATIONS];
} rpc_status_pb;
void rpc_status_to_pb(rpc_status_pb *out, const rpc_status *st);

/* Packs a ResponseEnvelope with this status, no payload, into a malloc'd
 * buffer; NULL when out of memory. request_id may be NULL. */
uint8_t *rpc_error_frame(const rpc_str *request_id, const rpc_status *st, size_t *len);

/* Copies s (n bytes) into dst[dstlen] with a NUL, truncating. */
void rpc_strlcpy(char *dst, size_t dstlen, const char *s, size_t n);

/* The raw authorization value of a server call ("Bearer ..." or ""), for a
 * handler's downstream calls. */
const char *rpc_call_authorization(const rpc_call *c);

/* ---- Prometheus metrics of the server (metrics.c) ---------------------------- */

/* The label value for a method or service the server does not serve (or
 * an envelope that does not decode): one series for all of them, so that a
 * caller cannot grow the label set. */
#define RPC_METRICS_UNKNOWN "unknown"

/* The grpc_server_* (or grpc_client_*) families in a registry. */
typedef struct rpc_metrics rpc_metrics;
/* NULL when reg is NULL (no metrics) or memory runs out; every function
 * below accepts NULL and does nothing. */
rpc_metrics *rpc_metrics_create(metrics_registry *reg, bool client);
void rpc_metrics_destroy(rpc_metrics *m);
/* grpc-go's name of a code ("OK", "InvalidArgument"). */
const char *rpc_metrics_code_name(status_code code);
/* Makes a served method's series (all codes) at zero, as
 * go-grpc-prometheus' InitializeMetrics does. */
void rpc_metrics_init_method(rpc_metrics *m, const char *service, const char *method);
/* A call began: started, and received (server) or sent (client). */
void rpc_metrics_started(rpc_metrics *m, const char *service, const char *method);
/* A call was answered: handled{code}; when OK sent (server) or received
 * (client); the latency. */
void rpc_metrics_handled(rpc_metrics *m, const char *service, const char *method, status_code code,
                         double seconds);

#endif
