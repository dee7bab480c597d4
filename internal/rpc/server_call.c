/* The RPC server's calls: the rpc_call accessors, dispatch to the
 * handler, and the built-in interceptors (server_internal.h). */
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "log/log.h"
#include "rpc/server_internal.h"

/* ---- rpc_call accessors ------------------------------------------------------ */

const char *rpc_call_method(const rpc_call *c) { return c->env->method; }
const char *rpc_call_request_id(const rpc_call *c) { return c->env->request_id; }
const char *rpc_call_traceparent(const rpc_call *c) { return c->traceparent; }
const char *rpc_call_trace_id(const rpc_call *c) { return c->trace_id; }
const char *rpc_call_idempotency_key(const rpc_call *c) { return c->env->idempotency_key; }
const char *rpc_call_caller(const rpc_call *c) { return c->env->caller; }
const char *rpc_call_authorization(const rpc_call *c) { return c->env->authorization; }
const auth_keys *rpc_call_auth_keys(const rpc_call *c) { return c->srv->o.auth; }
int rpc_call_attempt(const rpc_call *c) { return c->env->attempt; }
unsigned rpc_call_policy(const rpc_call *c) { return c->policy; }
void *rpc_call_service_ctx(const rpc_call *c) { return c->svc != NULL ? c->svc->ctx : NULL; }
const char *rpc_call_user_id(const rpc_call *c) { return c->user_id; }
auth_role rpc_call_role(const rpc_call *c) { return c->role; }
bool rpc_call_authenticated(const rpc_call *c) { return c->authenticated; }
int64_t rpc_call_deadline_ms(const rpc_call *c) { return c->deadline_ms; }
int64_t rpc_call_remaining_ms(const rpc_call *c) { return c->deadline_ms - rpc_now_ms(); }
status_code rpc_call_status(const rpc_call *c) { return c->st.code; }
const char *rpc_call_status_message(const rpc_call *c) { return c->st.message; }
bool rpc_call_replied(const rpc_call *c) { return c->replied; }

bool rpc_call_cancelled(const rpc_call *c) {
  return rpc_call_remaining_ms(c) <= 0 || atomic_load(&c->srv->abandoned);
}

const char *rpc_call_metadata(const rpc_call *c, const char *key) {
  for (size_t i = 0; i < c->env->n_metadata; i++) {
    const Shop__Rpc__V1__RequestEnvelope__MetadataEntry *e = c->env->metadata[i];
    if (e != NULL && e->key != NULL && strcmp(e->key, key) == 0) return e->value;
  }
  return NULL;
}

const void *rpc_call_payload(const rpc_call *c, size_t *len) {
  *len = c->env->payload.len;
  return c->env->payload.data;
}

void rpc_call_set_status(rpc_call *c, status_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  rpc_status_setv(&c->st, code, fmt, ap);
  va_end(ap);
}

void rpc_call_add_field_violation(rpc_call *c, const char *field, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  rpc_status_add_violation(&c->st, field, fmt, ap);
  va_end(ap);
}

void rpc_call_set_retry_delay(rpc_call *c, int64_t ms) { c->st.retry_delay_ms = ms < 0 ? 0 : ms; }
void rpc_call_set_projection(rpc_call *c, const char *aggregate_id, int64_t version) {
  rpc_strlcpy(c->st.projection_id, sizeof c->st.projection_id, aggregate_id,
              aggregate_id != NULL ? strlen(aggregate_id) : 0);
  c->st.projection_version = version;
}

void rpc_call_put_stored_reply(rpc_call *c, status_code code, const char *message,
                               const void *reply, size_t len) {
  free(c->reply);
  c->reply = NULL;
  c->reply_len = 0;
  rpc_status_clear(&c->st);
  c->st.code = status_is_valid(code) ? code : STATUS_UNKNOWN;
  rpc_strlcpy(c->st.message, sizeof c->st.message, message, message ? strlen(message) : 0);
  if (len > 0) {
    c->reply = malloc(len);
    if (c->reply == NULL) {
      c->bad_reply = true;
      return;
    }
    memcpy(c->reply, reply, len);
    c->reply_len = len;
  }
  c->replied = true;
}

/* ---- dispatch ------------------------------------------------------------------ */

static void server_closure_cb(const ProtobufCMessage *msg, void *data) {
  rpc_call *c = data;
  if (c->replied) {
    log_warn(&(log_ctx){.request_id = c->env->request_id, .trace_id = c->trace_id},
             "rpc: handler of %s replied twice; the second reply is dropped", c->env->method);
    return;
  }
  if (msg == NULL) return; /* the handler signals failure through the status */
  if (msg->descriptor != c->method->output) {
    c->bad_reply = true;
    return;
  }
  size_t n = protobuf_c_message_get_packed_size(msg);
  c->reply = malloc(n > 0 ? n : 1);
  if (c->reply == NULL) {
    c->bad_reply = true;
    return;
  }
  c->reply_len = protobuf_c_message_pack(msg, c->reply);
  c->replied = true;
}

static bool key_char_ok(unsigned char ch) { return ch > 0x20 && ch < 0x7f; }

static void server_dispatch(rpc_call *c) {
  if (c->method == NULL) {
    rpc_call_set_status(c, STATUS_UNIMPLEMENTED, "unknown method %s", c->env->method);
    return;
  }
  if (c->policy & RPC_COMMAND) {
    const char *k = c->env->idempotency_key;
    size_t n = strlen(k);
    bool ok = n > 0 && n <= RPC_IDEMPOTENCY_KEY_MAX;
    for (size_t i = 0; ok && i < n; i++) ok = key_char_ok((unsigned char)k[i]);
    if (!ok) {
      rpc_call_set_status(c, STATUS_INVALID_ARGUMENT,
                          "%s is a command: it needs an idempotency key", c->env->method);
      rpc_call_add_field_violation(
          c, "idempotency_key",
          n == 0 ? "required" : "must be 1..%d printable ASCII characters without spaces",
          RPC_IDEMPOTENCY_KEY_MAX);
      return;
    }
  }
  ProtobufCMessage *in =
      protobuf_c_message_unpack(c->method->input, NULL, c->env->payload.len, c->env->payload.data);
  if (in == NULL) {
    rpc_call_set_status(c, STATUS_INVALID_ARGUMENT, "undecodable payload: not a %s",
                        c->method->input->name);
    return;
  }
  rpc_server *s = c->srv;
  uint64_t r = atomic_fetch_add(&s->st_running, 1) + 1;
  uint64_t peak = atomic_load(&s->st_peak);
  while (r > peak && !atomic_compare_exchange_weak(&s->st_peak, &peak, r)) {
  }
  ProtobufCService *svc = c->svc->svc;
  svc->invoke(svc, c->method_index, in, server_closure_cb, c);
  atomic_fetch_sub(&s->st_running, 1);
  protobuf_c_message_free_unpacked(in, NULL);
}

void rpc_call_proceed(rpc_call *c) {
  rpc_server *s = c->srv;
  if (c->pos < s->n_ics) {
    const rpc_server_interceptor *ic = &s->ics[c->pos++];
    ic->fn(c, ic->arg);
    return;
  }
  if (c->pos == s->n_ics) {
    c->pos++;
    server_dispatch(c);
  }
}

/* ---- built-in interceptors ----------------------------------------------------- */

void rpc_server_ic_logging_cb(rpc_call *c, void *arg) {
  int64_t t0 = rpc_now_us();
  rpc_call_proceed(c);
  status_code code = c->st.code;
  log_level lvl = (code == STATUS_INTERNAL || code == STATUS_UNKNOWN || code == STATUS_DATA_LOSS)
                      ? LOG_LEVEL_ERROR
                      : LOG_LEVEL_DEBUG;
  if (!log_enabled(lvl)) return;
  char dur[32];
  snprintf(dur, sizeof dur, "%lld", (long long)(rpc_now_us() - t0));
  const char *kv[] = {"method",       c->env->method, "code",     status_name(code), "caller",
                      c->env->caller, "user_id",      c->user_id, "duration_us",     dur};
  log_ctx lc = {.request_id = c->env->request_id, .trace_id = c->trace_id};
  log_emit_kv(lvl, &lc, kv, 5, "rpc %s: %s%s%s", c->env->method, status_name(code),
              c->st.message[0] ? ": " : "", c->st.message);
}

void rpc_server_ic_metrics_cb(rpc_call *c, void *arg) {
  const char *svc = RPC_METRICS_UNKNOWN, *method = RPC_METRICS_UNKNOWN;
  if (c->srv->pm != NULL)
    rpc_server_metrics_labels(c->srv, c->env->method, strlen(c->env->method), &svc, &method);
  rpc_metrics_started(c->srv->pm, svc, method);
  int64_t t0 = rpc_now_us();
  rpc_call_proceed(c);
  rpc_metrics_handled(c->srv->pm, svc, method, c->st.code, (double)(rpc_now_us() - t0) / 1e6);
  rpc_server_count_reply(c->srv, c->st.code);
}

void rpc_server_ic_deadline_cb(rpc_call *c, void *arg) {
  if (rpc_call_remaining_ms(c) <= 0) {
    rpc_call_set_status(c, STATUS_DEADLINE_EXCEEDED, "deadline exceeded before the handler ran");
    return;
  }
  rpc_call_proceed(c);
}

void rpc_server_ic_auth_cb(rpc_call *c, void *arg) {
  rpc_server *s = c->srv;
  unsigned access = c->policy & RPC_ACCESS_MASK;
  if (c->method == NULL) { /* dispatch answers UNIMPLEMENTED */
    rpc_call_proceed(c);
    return;
  }
  const char *h = c->env->authorization;
  char why[STATUS_ERRBUF_SIZE] = "missing token";
  if (h[0] != '\0') {
    if (strncasecmp(h, "Bearer ", 7) != 0) {
      snprintf(why, sizeof why, "authorization is not a bearer token");
    } else if (s->o.auth == NULL) {
      snprintf(why, sizeof why, "this server verifies no tokens");
    } else {
      auth_claims cl;
      if (auth_token_verify(s->o.auth, h + 7, 0, &cl, why, sizeof why) == STATUS_OK) {
        memcpy(c->user_id, cl.sub, sizeof cl.sub);
        c->role = cl.role;
        c->authenticated = true;
      }
    }
  }
  /* A public method ignores a bad token: the caller is anonymous. */
  if (access != RPC_PUBLIC && !c->authenticated) {
    rpc_call_set_status(c, STATUS_UNAUTHENTICATED, "%s", why);
    return;
  }
  if (access == RPC_ADMIN && c->role != AUTH_ROLE_ADMIN) {
    rpc_call_set_status(c, STATUS_PERMISSION_DENIED, "%s needs the admin role", c->env->method);
    return;
  }
  rpc_call_proceed(c);
}

/* The INTERNAL set here is logged once, by the logging interceptor. */
void rpc_server_ic_recover_cb(rpc_call *c, void *arg) {
  rpc_call_proceed(c);
  if (!status_is_valid((int)c->st.code)) {
    int bad = (int)c->st.code;
    rpc_status_clear(&c->st);
    rpc_call_set_status(c, STATUS_INTERNAL, "handler set an invalid status code %d", bad);
  } else if (c->bad_reply && c->st.code == STATUS_OK) {
    rpc_call_set_status(c, STATUS_INTERNAL,
                        "handler replied with a message of the wrong type (or memory ran out)");
  } else if (!c->replied && c->st.code == STATUS_OK) {
    rpc_call_set_status(c, STATUS_INTERNAL, "handler returned no reply");
  }
}
