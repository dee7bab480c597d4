/* The gateway's HTTP server: a request becomes one RPC call through the
 * route table, its JSON through pbjson. See gateway.h. */
#include <arpa/inet.h>
#include <ctype.h>
#include <inttypes.h>
#include <microhttpd.h>
#include <netinet/in.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"
#include "log/log.h"
#include "pbjson/pbjson.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

#define GW_JSON "application/json"
#define GW_MAX_CLIENTS 16
/* MHD's own hard limit sits this far past ours, so that a connection over
 * ours still gets its 503 in JSON; past both, MHD refuses it at accept. */
#define GW_CONNECTION_MARGIN 32
/* Marks a connection accepted over gateway.max_connections. */
#define GW_OVER_LIMIT ((void *)1)

typedef struct gw_backend {
  char *url;
  rpc_client *cli;
} gw_backend;

/* What a route needs at run time, beside the route itself. */
typedef struct gw_target {
  const ProtobufCServiceDescriptor *svc;
  const ProtobufCMessageDescriptor *input;
  gw_backend *backend;
} gw_target;

struct gateway {
  const shop_cfg *cfg;
  gateway_routes *routes;
  gw_target *targets; /* one per route, same index */
  gw_backend backends[GW_MAX_CLIENTS];
  size_t n_backends;
  struct MHD_Daemon *d;
  int port;
  atomic_int connections;
  metrics_family *m_requests, *m_duration, *m_rejected;
  metrics_series *m_connections;
};

/* One HTTP request, across the access handler's calls. */
typedef struct gw_req {
  const gateway_route *rt;
  size_t route_index;
  gateway_vars vars;
  char *body;
  size_t len, cap;
  bool over; /* the body passed max_body_bytes: already answered 413 */
  struct timespec t0;
} gw_req;

/* ---- replies ---------------------------------------------------------------- */

typedef struct gw_reply {
  const char *request_id;
  const char *traceparent;
  const char *allow;
  int retry_after_s; /* 0: no Retry-After */
  bool close;
  bool www_authenticate;
} gw_reply;

static void observe(gateway *g, const char *method, const char *route, unsigned code,
                    const struct timespec *t0) {
  char c[8];
  snprintf(c, sizeof c, "%u", code);
  const char *v[] = {method, route, c};
  metrics_counter_add(metrics_series_get(g->m_requests, v), 1);
  if (t0 != NULL && t0->tv_sec != 0) {
    struct timespec t1;
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double s = (double)(t1.tv_sec - t0->tv_sec) + (double)(t1.tv_nsec - t0->tv_nsec) / 1e9;
    const char *hv[] = {method, route};
    metrics_histogram_observe(metrics_series_get(g->m_duration, hv), s);
  }
}

static void rejected(gateway *g, const char *reason) {
  const char *v[] = {reason};
  metrics_counter_add(metrics_series_get(g->m_rejected, v), 1);
}

/* Queues body (taken: freed by MHD) with the headers every reply has. */
static enum MHD_Result send_body(struct MHD_Connection *conn, unsigned code, const char *type,
                                 char *body, size_t len, bool owned, const gw_reply *r) {
  struct MHD_Response *resp = MHD_create_response_from_buffer(
      len, body, owned ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
  if (resp == NULL) {
    if (owned) free(body);
    return MHD_NO;
  }
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, type);
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  if (r != NULL) {
    if (r->request_id && r->request_id[0])
      MHD_add_response_header(resp, "X-Request-Id", r->request_id);
    if (r->traceparent && r->traceparent[0])
      MHD_add_response_header(resp, "traceparent", r->traceparent);
    if (r->allow != NULL) MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, r->allow);
    if (r->retry_after_s > 0) {
      char ra[16];
      snprintf(ra, sizeof ra, "%d", r->retry_after_s);
      MHD_add_response_header(resp, MHD_HTTP_HEADER_RETRY_AFTER, ra);
    }
    if (r->close) MHD_add_response_header(resp, MHD_HTTP_HEADER_CONNECTION, "close");
    if (r->www_authenticate)
      MHD_add_response_header(resp, MHD_HTTP_HEADER_WWW_AUTHENTICATE, "Bearer realm=\"shop\"");
  }
  enum MHD_Result ret = MHD_queue_response(conn, code, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result send_json(struct MHD_Connection *conn, unsigned code, json_t *j,
                                 const gw_reply *r) {
  char *text = json_dumps(j, JSON_COMPACT);
  json_decref(j);
  if (text == NULL) return MHD_NO;
  return send_body(conn, code, GW_JSON, text, strlen(text), true, r);
}

/* The google.rpc.Status of an error, as Google's JSON APIs write it. st
 * may be NULL (an error of the gateway's own). */
static json_t *error_json(unsigned http, status_code code, const char *message,
                          const rpc_status *st) {
  json_t *details = json_array();
  if (st != NULL && st->n_violations > 0) {
    json_t *v = json_array();
    for (size_t i = 0; i < st->n_violations; i++)
      json_array_append_new(v, json_pack("{s:s,s:s}", "field", st->violations[i].field,
                                         "description", st->violations[i].description));
    json_array_append_new(
        details, json_pack("{s:s,s:o}", "@type", "type.googleapis.com/google.rpc.BadRequest",
                           "fieldViolations", v));
  }
  if (st != NULL && st->retry_delay_ms >= 0) {
    char d[32];
    snprintf(d, sizeof d, "%" PRId64 ".%03" PRId64 "s", st->retry_delay_ms / 1000,
             st->retry_delay_ms % 1000);
    json_array_append_new(
        details, json_pack("{s:s,s:s}", "@type", "type.googleapis.com/google.rpc.RetryInfo",
                           "retryDelay", d));
  }
  if (st != NULL && st->projection_id[0] != '\0') {
    char desc[128];
    snprintf(desc, sizeof desc, "the read model is at version %" PRId64, st->projection_version);
    json_array_append_new(details, json_pack("{s:s,s:[{s:s,s:s,s:s}]}", "@type",
                                             "type.googleapis.com/google.rpc.PreconditionFailure",
                                             "violations", "type", "CONSISTENCY", "subject",
                                             st->projection_id, "description", desc));
  }
  return json_pack("{s:{s:i,s:s,s:s,s:o}}", "error", "code", (int)http, "status", status_name(code),
                   "message", message != NULL ? message : status_text(code), "details", details);
}

/* An error of the gateway's own (bad HTTP input): no RPC was made. */
static enum MHD_Result gw_error(gateway *g, struct MHD_Connection *conn, unsigned http,
                                status_code code, const char *reason, const char *field,
                                const char *message, gw_reply *r, const char *method,
                                const char *route, const struct timespec *t0) {
  rpc_status st;
  rpc_status_clear(&st);
  st.code = code;
  if (field != NULL) {
    st.n_violations = 1;
    snprintf(st.violations[0].field, sizeof st.violations[0].field, "%s", field);
    snprintf(st.violations[0].description, sizeof st.violations[0].description, "%s", message);
  }
  if (reason != NULL) rejected(g, reason);
  observe(g, method, route, http, t0);
  gw_reply none = {0};
  return send_json(conn, http, error_json(http, code, message, &st), r != NULL ? r : &none);
}

/* ---- the call ------------------------------------------------------------------ */

static int retry_after(const rpc_status *st) {
  if (st->retry_delay_ms < 0) return st->code == STATUS_RESOURCE_EXHAUSTED ? 1 : 0;
  int s = (int)((st->retry_delay_ms + 999) / 1000);
  return s > 0 ? s : 1;
}

static const char *header(struct MHD_Connection *conn, const char *name) {
  return MHD_lookup_connection_value(conn, MHD_HEADER_KIND, name);
}

/* A request id from the caller: 1..64 of [A-Za-z0-9._-]. */
static bool request_id_ok(const char *s) {
  size_t n = s ? strlen(s) : 0;
  if (n == 0 || n > 64) return false;
  for (size_t i = 0; i < n; i++)
    if (!(isalnum((unsigned char)s[i]) || s[i] == '.' || s[i] == '_' || s[i] == '-')) return false;
  return true;
}

static bool media_json(const char *ct) {
  if (ct == NULL) return false;
  while (*ct == ' ') ct++;
  size_t n = strcspn(ct, "; ");
  return n == strlen(GW_JSON) && strncasecmp(ct, GW_JSON, n) == 0;
}

static enum MHD_Result handle_rpc(gateway *g, struct MHD_Connection *conn, gw_req *rq,
                                  const char *method) {
  const gateway_route *rt = rq->rt;
  const gw_target *t = &g->targets[rq->route_index];
  char tp[LOG_TRACEPARENT_SIZE];
  log_traceparent_child(header(conn, "traceparent"), tp);
  char rid[72];
  const char *given = header(conn, "X-Request-Id");
  if (request_id_ok(given))
    snprintf(rid, sizeof rid, "%s", given);
  else
    snprintf(rid, sizeof rid, "gw-%.16s", tp + 36); /* the span id */
  gw_reply r = {.request_id = rid, .traceparent = tp};

  /* Headers first: they cost nothing to check. */
  rpc_call_opts opts = {.request_id = rid};
  const char *auth = header(conn, MHD_HTTP_HEADER_AUTHORIZATION);
  if (auth != NULL) {
    if (strncasecmp(auth, "Bearer ", 7) != 0 || auth[7] == '\0') {
      r.www_authenticate = true;
      return gw_error(g, conn, 401, STATUS_UNAUTHENTICATED, "bad_authorization", "Authorization",
                      "Authorization must be \"Bearer <access token>\"", &r, method, rt->pattern,
                      &rq->t0);
    }
    opts.token = auth + 7;
  }
  opts.idempotency_key = header(conn, "Idempotency-Key");
  const char *to = header(conn, "X-Request-Timeout");
  if (to != NULL && !gateway_parse_timeout(to, &opts.timeout_ms))
    return gw_error(g, conn, 400, STATUS_INVALID_ARGUMENT, "bad_timeout", "X-Request-Timeout",
                    "X-Request-Timeout must be digits and a unit H, M, S, m, u or n (500m, 2S)", &r,
                    method, rt->pattern, &rq->t0);

  /* Body, path, query: one JSON object, one conversion. */
  json_t *root = NULL;
  if (rq->len > 0) {
    if (rt->body == NULL)
      return gw_error(g, conn, 400, STATUS_INVALID_ARGUMENT, "unexpected_body", "body",
                      "this route takes no request body", &r, method, rt->pattern, &rq->t0);
    json_error_t je;
    json_t *b = json_loadb(rq->body, rq->len, JSON_REJECT_DUPLICATES, &je);
    if (b == NULL) {
      char m[256];
      snprintf(m, sizeof m, "malformed JSON at line %d, column %d (byte %d): %s", je.line,
               je.column, je.position, je.text);
      return gw_error(g, conn, 400, STATUS_INVALID_ARGUMENT, "malformed_json", "body", m, &r,
                      method, rt->pattern, &rq->t0);
    }
    if (strcmp(rt->body, "*") == 0) {
      root = b;
    } else {
      root = json_object();
      json_object_set_new(root, rt->body, b);
    }
  } else {
    root = json_object();
  }
  if (!json_is_object(root)) {
    json_decref(root);
    return gw_error(g, conn, 400, STATUS_INVALID_ARGUMENT, "malformed_json", "body",
                    "the request body must be a JSON object", &r, method, rt->pattern, &rq->t0);
  }
  gateway_bind_err be;
  for (size_t i = 0; i < rq->vars.n; i++)
    if (!gateway_bind_text(root, t->input, rq->vars.field[i], rq->vars.value[i], true, &be)) {
      json_decref(root);
      return gw_error(g, conn, 400, STATUS_INVALID_ARGUMENT, "bad_path", be.field, be.msg, &r,
                      method, rt->pattern, &rq->t0);
    }
  gateway_query_ctx q = {.rt = rt, .d = t->input, .root = root, .e = &be, .ok = true};
  MHD_get_connection_values(conn, MHD_GET_ARGUMENT_KIND, gateway_query_cb, &q);
  if (!q.ok) {
    json_decref(root);
    return gw_error(g, conn, 400, STATUS_INVALID_ARGUMENT, "bad_query", be.field, be.msg, &r,
                    method, rt->pattern, &rq->t0);
  }
  ProtobufCMessage *in = NULL;
  char err[512];
  status_code sc = pbjson_to_message(&in, t->input, root, err, sizeof err);
  json_decref(root);
  if (sc != STATUS_OK) {
    /* pbjson's text is "path: what". */
    char field[RPC_FIELD_MAX] = "body";
    const char *sep = strstr(err, ": ");
    if (sep != NULL && (size_t)(sep - err) < sizeof field)
      snprintf(field, sizeof field, "%.*s", (int)(sep - err), err);
    return gw_error(g, conn, sc == STATUS_INVALID_ARGUMENT ? 400 : 500, sc, "bad_request", field,
                    err, &r, method, rt->pattern, &rq->t0);
  }

  log_scope scope;
  log_scope_enter(&scope, rid, tp, NULL);
  ProtobufCMessage *out = NULL;
  rpc_status st;
  sc = rpc_client_call_sync(t->backend->cli, t->svc, rt->rpc, in, &out, &opts, &st);
  protobuf_c_message_free_unpacked(in, NULL);
  unsigned http = (unsigned)gateway_http_status(sc, &st);
  if (http >= 500)
    log_warn(NULL, "gateway: %s %s -> %s/%s: %s %s", method, rt->pattern, rt->service, rt->rpc,
             status_name(sc), st.message);
  else
    log_debug(NULL, "gateway: %s %s -> %s/%s: %s", method, rt->pattern, rt->service, rt->rpc,
              status_name(sc));
  log_scope_leave(&scope);
  observe(g, method, rt->pattern, http, &rq->t0);
  if (sc != STATUS_OK) {
    r.retry_after_s =
        sc == STATUS_RESOURCE_EXHAUSTED || sc == STATUS_UNAVAILABLE ? retry_after(&st) : 0;
    r.www_authenticate = sc == STATUS_UNAUTHENTICATED;
    return send_json(conn, http, error_json(http, sc, st.message[0] ? st.message : NULL, &st), &r);
  }
  json_t *j = NULL;
  sc = pbjson_from_message(&j, out, err, sizeof err);
  protobuf_c_message_free_unpacked(out, NULL);
  if (sc != STATUS_OK) return send_json(conn, 500, error_json(500, sc, err, NULL), &r);
  return send_json(conn, 200, j, &r);
}

/* ---- static pages and probes ------------------------------------------------------ */

typedef struct gw_static {
  const char *path;
  const char *type;
  const unsigned char *data;
  const size_t *len;
} gw_static;

static const gw_static gw_statics[] = {
    {"/", "text/html; charset=utf-8", gateway_index_html, &gateway_index_html_len},
    {"/index.html", "text/html; charset=utf-8", gateway_index_html, &gateway_index_html_len},
    {"/app.js", "text/javascript; charset=utf-8", gateway_app_js, &gateway_app_js_len},
    {"/style.css", "text/css; charset=utf-8", gateway_style_css, &gateway_style_css_len},
    {"/openapi.json", GW_JSON, gateway_openapi_json, &gateway_openapi_json_len},
};

static enum MHD_Result handle_static(gateway *g, struct MHD_Connection *conn, const gw_static *s,
                                     const char *method) {
  if (strcmp(method, "GET") != 0 && strcmp(method, "HEAD") != 0) {
    gw_reply r = {.allow = "GET, HEAD"};
    return gw_error(g, conn, 405, STATUS_UNIMPLEMENTED, "method_not_allowed", NULL,
                    "method not allowed", &r, method, "static", NULL);
  }
  observe(g, method, "static", 200, NULL);
  struct MHD_Response *resp =
      MHD_create_response_from_buffer(*s->len, (void *)s->data, MHD_RESPMEM_PERSISTENT);
  if (resp == NULL) return MHD_NO;
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, s->type);
  MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-cache");
  MHD_add_response_header(resp, "X-Content-Type-Options", "nosniff");
  if (strncmp(s->type, "text/html", 9) == 0) {
    MHD_add_response_header(resp, "Content-Security-Policy",
                            "default-src 'self'; frame-ancestors 'none'");
    MHD_add_response_header(resp, "X-Frame-Options", "DENY");
  }
  enum MHD_Result ret = MHD_queue_response(conn, MHD_HTTP_OK, resp);
  MHD_destroy_response(resp);
  return ret;
}

static enum MHD_Result handle_probe(gateway *g, struct MHD_Connection *conn, const char *url) {
  char why[256] = "ok";
  bool ok = strcmp(url, "/livez") == 0 || gateway_ready(g, why, sizeof why);
  size_t n = strlen(why);
  char *text = malloc(n + 2);
  if (text == NULL) return MHD_NO;
  memcpy(text, why, n);
  text[n] = '\n';
  text[n + 1] = '\0';
  observe(g, "GET", "probe", ok ? 200 : 503, NULL);
  return send_body(conn, ok ? 200 : 503, "text/plain; charset=utf-8", text, n + 1, true, NULL);
}

/* ---- MHD callbacks ---------------------------------------------------------------- */

static enum MHD_Result access_cb(void *cls, struct MHD_Connection *conn, const char *url,
                                 const char *method, const char *version, const char *upload,
                                 size_t *upload_size, void **con_cls) {
  gateway *g = cls;
  gw_req *rq = *con_cls;
  if (rq == NULL) {
    /* First call: the headers are in, the body (if any) is not. Every
     * check that needs no body happens here, before a byte of it is
     * read. */
    const union MHD_ConnectionInfo *ci =
        MHD_get_connection_info(conn, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
    if (ci != NULL && ci->socket_context == GW_OVER_LIMIT) {
      gw_reply r = {.close = true, .retry_after_s = 1};
      return gw_error(g, conn, 503, STATUS_UNAVAILABLE, "too_many_connections", NULL,
                      "too many connections; retry later", &r, method, "unmatched", NULL);
    }
    rq = calloc(1, sizeof *rq);
    if (rq == NULL) return MHD_NO;
    *con_cls = rq;
    clock_gettime(CLOCK_MONOTONIC, &rq->t0);
    for (size_t i = 0; i < sizeof gw_statics / sizeof gw_statics[0]; i++)
      if (strcmp(url, gw_statics[i].path) == 0)
        return handle_static(g, conn, &gw_statics[i], method);
    if (strcmp(url, "/livez") == 0 || strcmp(url, "/readyz") == 0)
      return handle_probe(g, conn, url);
    char allowed[64];
    rq->rt = gateway_routes_match(g->routes, method, url, &rq->vars, allowed, sizeof allowed);
    if (rq->rt == NULL) {
      gw_reply r = {.allow = allowed[0] ? allowed : NULL, .close = *upload_size > 0};
      if (allowed[0])
        return gw_error(g, conn, 405, STATUS_UNIMPLEMENTED, "method_not_allowed", NULL,
                        "this path does not take that method", &r, method, "unmatched", &rq->t0);
      return gw_error(g, conn, 404, STATUS_NOT_FOUND, "no_route", NULL, "no route for this path",
                      &r, method, "unmatched", &rq->t0);
    }
    rq->route_index = (size_t)(rq->rt - gateway_routes_at(g->routes, 0));
    const char *cl = header(conn, MHD_HTTP_HEADER_CONTENT_LENGTH);
    const char *te = header(conn, MHD_HTTP_HEADER_TRANSFER_ENCODING);
    bool has_body = (cl != NULL && strcmp(cl, "0") != 0) || te != NULL;
    if (cl != NULL && strtoull(cl, NULL, 10) > (unsigned long long)g->cfg->gateway.max_body_bytes) {
      gw_reply r = {.close = true};
      char m[128];
      snprintf(m, sizeof m, "the request body is larger than %d bytes",
               g->cfg->gateway.max_body_bytes);
      return gw_error(g, conn, 413, STATUS_INVALID_ARGUMENT, "body_too_large", "body", m, &r,
                      method, rq->rt->pattern, &rq->t0);
    }
    if (has_body && !media_json(header(conn, MHD_HTTP_HEADER_CONTENT_TYPE))) {
      gw_reply r = {.close = true};
      return gw_error(g, conn, 415, STATUS_INVALID_ARGUMENT, "unsupported_media_type",
                      "Content-Type", "the request body must be application/json", &r, method,
                      rq->rt->pattern, &rq->t0);
    }
    return MHD_YES;
  }
  if (*upload_size > 0) {
    size_t n = *upload_size;
    *upload_size = 0;
    if (rq->over) return MHD_YES; /* dropped */
    size_t max = (size_t)g->cfg->gateway.max_body_bytes;
    if (rq->len + n > max) {
      /* Chunked: the size shows only while reading. MHD cannot answer in
       * the middle of an upload, so the rest is read and dropped (nothing
       * is kept), and the 413 goes out at its end. */
      rq->over = true;
      free(rq->body);
      rq->body = NULL;
      rq->len = rq->cap = 0;
      return MHD_YES;
    }
    if (rq->len + n > rq->cap) {
      size_t cap = rq->cap ? rq->cap : 4096;
      while (cap < rq->len + n) cap *= 2;
      if (cap > max) cap = max;
      char *nb = realloc(rq->body, cap);
      if (nb == NULL) return MHD_NO;
      rq->body = nb;
      rq->cap = cap;
    }
    memcpy(rq->body + rq->len, upload, n);
    rq->len += n;
    return MHD_YES;
  }
  if (rq->over) {
    gw_reply r = {.close = true};
    char m[128];
    snprintf(m, sizeof m, "the request body is larger than %d bytes",
             g->cfg->gateway.max_body_bytes);
    return gw_error(g, conn, 413, STATUS_INVALID_ARGUMENT, "body_too_large", "body", m, &r, method,
                    rq->rt->pattern, &rq->t0);
  }
  return handle_rpc(g, conn, rq, method);
}

static void completed_cb(void *cls, struct MHD_Connection *conn, void **con_cls,
                         enum MHD_RequestTerminationCode toe) {
  gw_req *rq = *con_cls;
  if (rq == NULL) return;
  free(rq->body);
  free(rq);
  *con_cls = NULL;
}

static void connection_cb(void *cls, struct MHD_Connection *conn, void **socket_context,
                          enum MHD_ConnectionNotificationCode toe) {
  gateway *g = cls;
  if (toe == MHD_CONNECTION_NOTIFY_STARTED) {
    int n = atomic_fetch_add(&g->connections, 1) + 1;
    *socket_context = n > g->cfg->gateway.max_connections ? GW_OVER_LIMIT : NULL;
  } else {
    atomic_fetch_sub(&g->connections, 1);
  }
  metrics_gauge_set(g->m_connections, (double)atomic_load(&g->connections));
}

/* Keeps the path and the query as sent: segments are decoded one by one
 * (so that %2F stays inside its segment), query values by gateway_query_cb. */
static size_t unescape_cb(void *cls, struct MHD_Connection *c, char *s) { return strlen(s); }

/* ---- life cycle -------------------------------------------------------------------- */

static gw_backend *backend_for(gateway *g, const char *url, char *errbuf, size_t errlen) {
  for (size_t i = 0; i < g->n_backends; i++)
    if (strcmp(g->backends[i].url, url) == 0) return &g->backends[i];
  if (g->n_backends == GW_MAX_CLIENTS) {
    snprintf(errbuf, errlen, "more than %d endpoints", GW_MAX_CLIENTS);
    return NULL;
  }
  gw_backend *b = &g->backends[g->n_backends];
  rpc_client_opts o;
  rpc_client_opts_from_cfg(&o, g->cfg, url, "shop-gateway");
  b->url = strdup(url);
  if (b->url == NULL || rpc_client_create(&b->cli, &o, errbuf, errlen) != STATUS_OK) {
    free(b->url);
    b->url = NULL;
    return NULL;
  }
  g->n_backends++;
  return b;
}

static status_code resolve_targets(gateway *g, char *errbuf, size_t errlen) {
  size_t n = gateway_routes_count(g->routes);
  g->targets = calloc(n ? n : 1, sizeof *g->targets);
  if (g->targets == NULL) return STATUS_RESOURCE_EXHAUSTED;
  for (size_t i = 0; i < n; i++) {
    const gateway_route *rt = gateway_routes_at(g->routes, i);
    gw_target *t = &g->targets[i];
    t->svc = pbjson_service_find(rt->service);
    t->input = pbjson_message_find(rt->input_type);
    if (t->svc == NULL || t->input == NULL ||
        protobuf_c_service_descriptor_get_method_by_name(t->svc, rt->rpc) == NULL) {
      snprintf(errbuf, errlen, "route %s %s: %s/%s is not in this build", rt->method, rt->pattern,
               rt->service, rt->rpc);
      return STATUS_INVALID_ARGUMENT;
    }
    const char *url = config_service_endpoint(g->cfg, rt->service);
    if (url == NULL) {
      snprintf(errbuf, errlen, "route %s %s: no endpoint configured for %s", rt->method,
               rt->pattern, rt->service);
      return STATUS_INVALID_ARGUMENT;
    }
    t->backend = backend_for(g, url, errbuf, errlen);
    if (t->backend == NULL) return STATUS_INTERNAL;
  }
  return STATUS_OK;
}

static void metrics_make(gateway *g, metrics_registry *reg) {
  if (reg == NULL) return;
  static const char *const req_labels[] = {"method", "route", "code", NULL};
  static const char *const dur_labels[] = {"method", "route", NULL};
  static const char *const rej_labels[] = {"reason", NULL};
  g->m_requests = metrics_counter_family(reg, "shop_http_requests_total",
                                         "HTTP requests answered by the gateway, by route "
                                         "template and status code.",
                                         req_labels);
  g->m_duration = metrics_histogram_family(
      reg, "shop_http_request_duration_seconds",
      "Time from the request's headers to its reply, by route template.", dur_labels, NULL, 0);
  g->m_rejected = metrics_counter_family(reg, "shop_http_rejected_total",
                                         "Requests the gateway refused without an RPC call, by "
                                         "reason.",
                                         rej_labels);
  g->m_connections = metrics_series_get(
      metrics_gauge_family(reg, "shop_http_connections", "Open HTTP connections.", NULL), NULL);
}

status_code gateway_create(gateway **out, const gateway_opts *opts, char *errbuf, size_t errlen) {
  *out = NULL;
  gateway *g = calloc(1, sizeof *g);
  if (g == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  g->cfg = opts->cfg;
  atomic_init(&g->connections, 0);
  metrics_make(g, opts->metrics);
  status_code st =
      gateway_routes_load(&g->routes, shop_descriptor_set, shop_descriptor_set_len, errbuf, errlen);
  if (st == STATUS_OK) st = resolve_targets(g, errbuf, errlen);
  if (st != STATUS_OK) {
    gateway_destroy(g);
    return st;
  }
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  int port = opts->port >= 0 ? opts->port : g->cfg->gateway.port;
  sa.sin_port = htons((uint16_t)port);
  if (inet_pton(AF_INET, g->cfg->gateway.host, &sa.sin_addr) != 1) {
    snprintf(errbuf, errlen, "gateway.host %s is not an IPv4 address", g->cfg->gateway.host);
    gateway_destroy(g);
    return STATUS_INVALID_ARGUMENT;
  }
  g->d = MHD_start_daemon(
      MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION, 0, NULL, NULL, access_cb, g,
      MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&sa, MHD_OPTION_CONNECTION_TIMEOUT,
      (unsigned)g->cfg->gateway.connection_timeout_s, MHD_OPTION_CONNECTION_LIMIT,
      (unsigned)(g->cfg->gateway.max_connections + GW_CONNECTION_MARGIN),
      MHD_OPTION_NOTIFY_COMPLETED, completed_cb, g, MHD_OPTION_NOTIFY_CONNECTION, connection_cb, g,
      MHD_OPTION_UNESCAPE_CALLBACK, unescape_cb, g, MHD_OPTION_LISTENING_ADDRESS_REUSE, 1u,
      MHD_OPTION_END);
  if (g->d == NULL) {
    snprintf(errbuf, errlen, "cannot listen on %s:%d (is the port in use?)", g->cfg->gateway.host,
             port);
    gateway_destroy(g);
    return STATUS_UNAVAILABLE;
  }
  const union MHD_DaemonInfo *di = MHD_get_daemon_info(g->d, MHD_DAEMON_INFO_BIND_PORT);
  g->port = di != NULL ? di->port : port;
  *out = g;
  return STATUS_OK;
}

int gateway_port(const gateway *g) { return g != NULL ? g->port : 0; }

bool gateway_ready(gateway *g, char *why, size_t len) {
  for (size_t i = 0; i < g->n_backends; i++)
    if (rpc_client_pipes(g->backends[i].cli) <= 0) {
      snprintf(why, len, "gateway: no connection to %s", g->backends[i].url);
      return false;
    }
  return true;
}

void gateway_destroy(gateway *g) {
  if (g == NULL) return;
  /* Waits for the connection threads: no request runs afterwards. */
  if (g->d != NULL) MHD_stop_daemon(g->d);
  for (size_t i = 0; i < g->n_backends; i++) {
    rpc_client_destroy(g->backends[i].cli);
    free(g->backends[i].url);
  }
  free(g->targets);
  gateway_routes_free(g->routes);
  free(g);
}
