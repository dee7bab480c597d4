/*
 * gateway: HTTP/JSON in front of Shop's RPC services, as grpc-gateway and
 * Envoy's JSON transcoding do, with no hand-written route table: the
 * routes are the google.api.http options of proto/'s rpcs, read at start-up
 * out of the FileDescriptorSet the build embeds (shop_descriptor_set).
 *
 * Routes (gateway_routes_*). Each rpc's HttpRule (and its
 * additional_bindings) gives a method and a path template:
 *   /v1/products/{product_id}      a variable matches one path segment
 *   /v1/orders/{order_id}:cancel   ":verb" after the last segment
 * Literal segments beat variables ("/v1/users/me" before
 * "/v1/users/{user_id}"). Only "{field}", "{field.sub}" and "{field=*}"
 * variables are accepted; anything else fails gateway_routes_load.
 *
 * Binding, as grpc-gateway does: path variables set their fields; with
 * body "*" the JSON body is the whole request (path fields on top), with
 * body "field" it is that field and the query string sets the others; with
 * no body the query string sets any field not bound by the path
 * ("?page.pageSize=10&text=mug"; proto or JSON names, a repeated field by
 * repeating the key). The JSON mapping is proto3's (pbjson/pbjson.h); an
 * unknown field or query parameter is INVALID_ARGUMENT.
 *
 * Server (gateway_create): one HTTP/1.1 listener (libmicrohttpd, a thread
 * per connection, since each request blocks on its RPC call). Per request:
 *   Authorization: Bearer T   the call's token (another scheme: 401)
 *   Idempotency-Key: K        the call's idempotency key (commands need one:
 *                             the RPC layer answers 400 without it)
 *   X-Request-Timeout: 500m   the call's budget, grpc-timeout syntax
 *                             (digits + H M S m u n; bare digits are ms)
 *   traceparent               continued (a new trace when absent); the
 *                             gateway's span goes back in "traceparent"
 *   X-Request-Id              echoed, or made
 * Statuses follow google.rpc's HTTP mapping (gateway_http_status); errors
 * are JSON: {"error": {"code": 400, "status": "INVALID_ARGUMENT",
 * "message": ..., "details": [{"@type": "type.googleapis.com/
 * google.rpc.BadRequest", "fieldViolations": [...]}, ...RetryInfo]}};
 * 429 and 503 carry Retry-After. Bad HTTP input costs no RPC call: a body
 * over gateway.max_body_bytes 413 (refused from Content-Length before a
 * byte of it is read; a chunked one is read to its end and dropped, since
 * libmicrohttpd cannot answer mid-upload), malformed JSON 400 with line, column and
 * offset, a body that is not application/json 415, an unknown path 404, a
 * method the path does not have 405 with Allow, more than
 * gateway.max_connections open connections 503 (and the connection is
 * closed), a connection idle or stalled for gateway.connection_timeout_s
 * closed.
 *
 * Also served: GET /openapi.json (the OpenAPI 3.1 document generated from
 * proto/ at build time, openapi.c), the storefront page (/, /app.js,
 * /style.css) and /livez, /readyz. /metrics is on the program's admin port
 * (internal/app) with the rest of its metrics: shop_http_requests_total
 * {method,route,code}, shop_http_request_duration_seconds{method,route},
 * shop_http_connections, shop_http_rejected_total{reason} and the
 * grpc_client_* families of its RPC clients.
 *
 * Threads: gateway_routes_* are pure functions of their arguments; a
 * gateway_routes is read-only once loaded and may be shared. gateway_create
 * and gateway_destroy belong to one thread; gateway_ready and
 * gateway_port may be called from any thread in between.
 */
#ifndef SHOP_GATEWAY_H
#define SHOP_GATEWAY_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "config/config.h"
#include "metrics/metrics.h"
#include "rpc/rpc.h"
#include "status/status.h"

/* ---- Routes ------------------------------------------------------------- */

#define GATEWAY_MAX_SEGMENTS 16
#define GATEWAY_MAX_VARS 4

typedef struct gateway_segment {
  char *literal; /* the segment's text, or NULL for a variable */
  char *field;   /* a variable's field path ("order_id", "product.id") */
} gateway_segment;

/* One HTTP binding of one rpc. Strings are owned by the route table. */
typedef struct gateway_route {
  char method[8];    /* "GET", "POST", "PUT", "PATCH", "DELETE" */
  char *pattern;     /* the template as written: "/v1/orders/{order_id}:cancel" */
  char *verb;        /* "cancel", or NULL */
  char *body;        /* NULL (no body), "*" or a field name */
  char *service;     /* "shop.order.v1.OrderCommandService" */
  char *rpc;         /* "CancelOrder" */
  char *input_type;  /* "shop.order.v1.CancelOrderRequest" (no leading dot) */
  char *output_type; /* "shop.order.v1.CancelOrderResponse" */
  int file_index;    /* where the rpc sits in the descriptor set (for docs) */
  int service_index; /* FileDescriptorProto.service[...] */
  int method_index;  /* ServiceDescriptorProto.method[...] */
  size_t n_segments;
  gateway_segment segments[GATEWAY_MAX_SEGMENTS];
} gateway_route;

typedef struct gateway_routes gateway_routes;

/* Reads every rpc's google.api.http option out of a serialized
 * google.protobuf.FileDescriptorSet. On success *out is the caller's
 * (gateway_routes_free). Errors: INVALID_ARGUMENT (the bytes are not a
 * descriptor set, a rule is malformed or a template unsupported: errbuf
 * names the rpc), RESOURCE_EXHAUSTED (memory). */
status_code gateway_routes_load(gateway_routes **out, const void *fds, size_t len, char *errbuf,
                                size_t errlen);
void gateway_routes_free(gateway_routes *r);
size_t gateway_routes_count(const gateway_routes *r);
/* The i-th route (in descriptor order), borrowed from r. */
const gateway_route *gateway_routes_at(const gateway_routes *r, size_t i);

/* A matched route's path variables: field path and the percent-decoded
 * value of its segment (both borrowed from the route and the caller's
 * buffers). */
typedef struct gateway_vars {
  size_t n;
  const char *field[GATEWAY_MAX_VARS];
  char value[GATEWAY_MAX_VARS][256];
} gateway_vars;

/* Finds the route for method and path (the raw, still percent-encoded path,
 * without the query). NULL when none matches: *allowed (may be NULL) then
 * lists the methods other routes have for that path ("GET, POST"; "" when
 * the path is unknown). */
const gateway_route *gateway_routes_match(const gateway_routes *r, const char *method,
                                          const char *path, gateway_vars *vars, char *allowed,
                                          size_t allowed_len);

/* The HTTP status for an RPC status (google.rpc's mapping): OK 200,
 * INVALID_ARGUMENT/OUT_OF_RANGE 400, FAILED_PRECONDITION 400 (412 when st
 * names the projection version a query's consistency token did not
 * reach), UNAUTHENTICATED 401, PERMISSION_DENIED 403, NOT_FOUND 404,
 * ALREADY_EXISTS/ABORTED 409, RESOURCE_EXHAUSTED 429, CANCELLED 499,
 * UNIMPLEMENTED 501, UNAVAILABLE 503, DEADLINE_EXCEEDED 504, the rest 500.
 * st may be NULL. */
int gateway_http_status(status_code code, const rpc_status *st);

/* Parses an X-Request-Timeout value (grpc-timeout syntax: 1 to 8 digits
 * and a unit H, M, S, m, u or n; bare digits are milliseconds) into
 * milliseconds, rounded up. False when malformed or zero. */
bool gateway_parse_timeout(const char *text, int64_t *ms);

/* Builds the OpenAPI 3.1 document of every route from a serialized
 * FileDescriptorSet (with source info, for descriptions; without, the
 * document has none). On success *out is the caller's (json_decref).
 * Errors as gateway_routes_load. */
status_code gateway_openapi_build(json_t **out, const void *fds, size_t len, char *errbuf,
                                  size_t errlen);

/* ---- Server ------------------------------------------------------------- */

typedef struct gateway gateway;

typedef struct gateway_opts {
  const shop_cfg *cfg;       /* borrowed, must outlive the gateway: gateway.*,
                                endpoints.*, rpc.* (client budgets, retries) */
  metrics_registry *metrics; /* borrowed, must outlive the gateway; NULL: none */
  int port;                  /* -1: cfg->gateway.port; else this (0: ephemeral) */
} gateway_opts;

/* Loads the routes from the embedded descriptor set, opens one RPC client
 * per service endpoint (dialled in the background) and starts serving
 * HTTP on cfg->gateway.host. On success *out is the caller's. Errors:
 * UNAVAILABLE (the port is taken, said in errbuf), INVALID_ARGUMENT (a
 * route names a service or message this build does not have, or a service
 * without an endpoint), INTERNAL. */
status_code gateway_create(gateway **out, const gateway_opts *opts, char *errbuf, size_t errlen);

/* The bound HTTP port. */
int gateway_port(const gateway *g);

/* True when every backend has a connection; else a short reason. */
bool gateway_ready(gateway *g, char *why, size_t len);

/* Stops accepting, waits for the requests running, closes the clients and
 * frees g. NULL is fine. */
void gateway_destroy(gateway *g);

#endif
