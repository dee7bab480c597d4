/* The RPC server: a REP socket, a pool of nng_ctx receivers, a bounded queue
 * and worker threads of ours that run the interceptor chain and the
 * handlers. */
#include <errno.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/rep.h>
#include <nng/transport/tcp/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "grpc/health/v1/health.pb-c.h"
#include "log/log.h"
#include "rpc/rpc_internal.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

#define HEALTH_CHECK_PATH "/grpc.health.v1.Health/Check"
/* Receivers beyond workers + queue_size, so that a full queue is answered
 * RESOURCE_EXHAUSTED at once instead of leaving requests in NNG's buffers. */
#define SPARE_SLOTS_MIN 8
#define QUEUE_FULL_RETRY_MS 50

typedef struct rpc_service_entry {
  ProtobufCService *svc;
  unsigned *policy; /* per method index */
  void *ctx;
} rpc_service_entry;

enum slot_state { SLOT_IDLE, SLOT_RECV, SLOT_QUEUED, SLOT_SEND_REPLY, SLOT_SEND_REJECT };

typedef struct rpc_slot {
  rpc_server *srv;
  nng_ctx ctx;
  nng_aio *aio;
  nng_msg *req;
  int64_t recv_ms;
  int state;
  bool ctx_open;
  struct rpc_slot *next;
} rpc_slot;

/* A worker thread. Idle workers wait on their own condition variable on a
 * stack, and a new call wakes the one that went idle last: at low load
 * the same warm thread serves call after call, instead of a cold one
 * chosen by pthread_cond_signal. */
typedef struct rpc_worker {
  rpc_server *srv;
  pthread_t thread;
  pthread_cond_t cv;
  bool woken;
  struct rpc_worker *next_idle;
} rpc_worker;

struct rpc_server {
  char *name;
  rpc_server_opts o;
  nng_socket sock;
  bool sock_open;
  int port;

  rpc_service_entry *svcs;
  size_t n_svcs;
  rpc_server_interceptor *ics; /* built-ins first, then added ones */
  size_t n_ics;

  rpc_slot *slots;
  size_t n_slots;
  rpc_worker *workers;
  size_t n_workers; /* started */
  rpc_worker *idle; /* stack of idle workers */

  pthread_mutex_t mu;
  rpc_slot *qh, *qt;
  size_t qlen;
  /* Calls taken by a worker and not yet sent back (drain waits for 0). */
  _Atomic size_t pending;
  bool workers_stop;
  bool started;

  /* Callbacks hold it for reading while they hand work to NNG; destroy
   * takes it for writing to set `stopping`, so that nothing touches a
   * context once the socket closes (nng 1.5.2 panics on that race). */
  pthread_rwlock_t life;
  atomic_bool stopping;  /* receivers must not re-arm */
  atomic_bool draining;  /* health NOT_SERVING, new calls UNAVAILABLE */
  atomic_bool abandoned; /* drain grace ran out: calls are cancelled */

  _Atomic uint64_t st_calls, st_rejected, st_running, st_peak;
  _Atomic uint64_t st_by_code[17];
  rpc_metrics *pm; /* grpc_server_* in opts.metrics; NULL: none */

  Grpc__Health__V1__Health_Service health;
  Shop__Rpc__V1__ServerReflectionService_Service reflection;
};

struct rpc_call {
  rpc_server *srv;
  Shop__Rpc__V1__RequestEnvelope *env;
  const rpc_service_entry *svc;
  const ProtobufCMethodDescriptor *method;
  unsigned method_index;
  unsigned policy;
  int64_t deadline_ms;
  char trace_id[33];
  char user_id[AUTH_SUB_MAX + 1];
  auth_role role;
  bool authenticated;

  rpc_status st;
  bool replied;
  bool bad_reply; /* closure got a message of the wrong type, or ran out of memory */
  uint8_t *reply;
  size_t reply_len;

  size_t pos; /* next interceptor */
};

static void count_reply(rpc_server *s, status_code code) {
  atomic_fetch_add_explicit(&s->st_calls, 1, memory_order_relaxed);
  int i = status_is_valid(code) ? (int)code : STATUS_UNKNOWN;
  atomic_fetch_add_explicit(&s->st_by_code[i], 1, memory_order_relaxed);
}

/* ---- rpc_call accessors ------------------------------------------------------ */

const char *rpc_call_method(const rpc_call *c) { return c->env->method; }
const char *rpc_call_request_id(const rpc_call *c) { return c->env->request_id; }
const char *rpc_call_traceparent(const rpc_call *c) { return c->env->traceparent; }
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

static void server_closure(const ProtobufCMessage *msg, void *data) {
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
  svc->invoke(svc, c->method_index, in, server_closure, c);
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

static void ic_logging(rpc_call *c, void *arg) {
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

static void server_metrics_labels(const rpc_server *s, const char *path, size_t len,
                                  const char **service, const char **method);
static void server_metrics_reject(rpc_server *s, const rpc_str *method, status_code code);

static void ic_metrics(rpc_call *c, void *arg) {
  const char *svc = RPC_METRICS_UNKNOWN, *method = RPC_METRICS_UNKNOWN;
  if (c->srv->pm != NULL)
    server_metrics_labels(c->srv, c->env->method, strlen(c->env->method), &svc, &method);
  rpc_metrics_started(c->srv->pm, svc, method);
  int64_t t0 = rpc_now_us();
  rpc_call_proceed(c);
  rpc_metrics_handled(c->srv->pm, svc, method, c->st.code, (double)(rpc_now_us() - t0) / 1e6);
  count_reply(c->srv, c->st.code);
}

static void ic_deadline(rpc_call *c, void *arg) {
  if (rpc_call_remaining_ms(c) <= 0) {
    rpc_call_set_status(c, STATUS_DEADLINE_EXCEEDED, "deadline exceeded before the handler ran");
    return;
  }
  rpc_call_proceed(c);
}

static void ic_auth(rpc_call *c, void *arg) {
  rpc_server *s = c->srv;
  unsigned access = c->policy & RPC_ACCESS_MASK;
  if (c->method == NULL) { /* dispatch answers UNIMPLEMENTED */
    rpc_call_proceed(c);
    return;
  }
  const char *h = c->env->authorization;
  char why[128] = "missing token";
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
static void ic_recover(rpc_call *c, void *arg) {
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

/* ---- processing one frame ------------------------------------------------------ */

typedef struct out_frame {
  bool use_nng;
  nng_msg *msg;
  uint8_t *heap;
  size_t len;
} out_frame;

static uint8_t *out_alloc(out_frame *o, size_t n) {
  o->len = n;
  if (o->use_nng) {
    if (nng_msg_alloc(&o->msg, n) != 0) return NULL;
    return nng_msg_body(o->msg);
  }
  o->heap = malloc(n > 0 ? n : 1);
  return o->heap;
}

static const rpc_service_entry *find_service(const rpc_server *s, const char *name, size_t n) {
  for (size_t i = 0; i < s->n_svcs; i++) {
    const char *sn = s->svcs[i].svc->descriptor->name;
    if (strlen(sn) == n && memcmp(sn, name, n) == 0) return &s->svcs[i];
  }
  return NULL;
}

static void resolve_method(rpc_call *c) {
  const char *sp, *mp;
  size_t sn, mn;
  if (!rpc_method_path_split(c->env->method, &sp, &sn, &mp, &mn)) return;
  const rpc_service_entry *e = find_service(c->srv, sp, sn);
  if (e == NULL) return;
  const ProtobufCMethodDescriptor *m =
      protobuf_c_service_descriptor_get_method_by_name(e->svc->descriptor, mp);
  if (m == NULL) return;
  c->svc = e;
  c->method = m;
  c->method_index = (unsigned)(m - e->svc->descriptor->methods);
  c->policy = e->policy[c->method_index];
}

/* Runs one request to its reply. False only when memory ran out for the
 * reply frame. */
static bool server_process(rpc_server *s, const uint8_t *frame, size_t len, int64_t recv_ms,
                           out_frame *out) {
  Shop__Rpc__V1__RequestEnvelope *env = shop__rpc__v1__request_envelope__unpack(NULL, len, frame);
  rpc_status_pb spb;
  if (env == NULL) {
    rpc_status st;
    rpc_status_clear(&st);
    rpc_status_set(&st, STATUS_INVALID_ARGUMENT, "undecodable request envelope");
    count_reply(s, st.code);
    server_metrics_reject(s, NULL, st.code);
    rpc_status_to_pb(&spb, &st);
    Shop__Rpc__V1__ResponseEnvelope r = SHOP__RPC__V1__RESPONSE_ENVELOPE__INIT;
    r.status = &spb.status;
    uint8_t *p = out_alloc(out, shop__rpc__v1__response_envelope__get_packed_size(&r));
    if (p == NULL) return false;
    shop__rpc__v1__response_envelope__pack(&r, p);
    return true;
  }

  rpc_call c;
  c.srv = s;
  c.env = env;
  c.svc = NULL;
  c.method = NULL;
  c.method_index = 0;
  c.policy = RPC_PUBLIC;
  c.user_id[0] = '\0';
  c.role = AUTH_ROLE_NONE;
  c.authenticated = false;
  c.replied = false;
  c.bad_reply = false;
  c.reply = NULL;
  c.reply_len = 0;
  c.pos = 0;
  rpc_status_clear(&c.st);
  log_trace_id(env->traceparent, c.trace_id);
  int64_t budget = env->timeout_ms;
  if (budget == 0) budget = s->o.default_timeout_ms;
  if (budget > s->o.max_timeout_ms) budget = s->o.max_timeout_ms;
  c.deadline_ms = recv_ms + budget;
  resolve_method(&c);

  /* The call is the thread's current log scope while it runs (log.h). */
  log_scope scope;
  log_scope_enter(&scope, env->request_id, env->traceparent, NULL);
  rpc_call_proceed(&c);
  log_scope_leave(&scope);

  Shop__Rpc__V1__ResponseEnvelope r = SHOP__RPC__V1__RESPONSE_ENVELOPE__INIT;
  r.request_id = env->request_id;
  if (c.st.code == STATUS_OK) {
    r.payload.data = c.reply;
    r.payload.len = c.reply_len;
  }
  rpc_status_to_pb(&spb, &c.st);
  r.status = &spb.status;
  size_t n = shop__rpc__v1__response_envelope__get_packed_size(&r);
  if (n > (size_t)s->o.max_message_bytes) {
    /* Replace the reply by an error that names the limit. */
    atomic_fetch_sub(&s->st_by_code[c.st.code], 1);
    atomic_fetch_sub(&s->st_calls, 1);
    size_t plen = c.reply_len;
    rpc_status_clear(&c.st);
    rpc_status_set(&c.st, STATUS_RESOURCE_EXHAUSTED,
                   "reply of %zu bytes exceeds the %d-byte message limit", plen,
                   s->o.max_message_bytes);
    count_reply(s, c.st.code);
    r.payload.data = NULL;
    r.payload.len = 0;
    rpc_status_to_pb(&spb, &c.st);
    r.status = &spb.status;
    n = shop__rpc__v1__response_envelope__get_packed_size(&r);
  }
  uint8_t *p = out_alloc(out, n);
  if (p != NULL) shop__rpc__v1__response_envelope__pack(&r, p);
  free(c.reply);
  shop__rpc__v1__request_envelope__free_unpacked(env, NULL);
  return p != NULL;
}

static bool is_health_check(const rpc_str *m) {
  return m->n == strlen(HEALTH_CHECK_PATH) && memcmp(m->p, HEALTH_CHECK_PATH, m->n) == 0;
}

status_code rpc_server_handle_frame(rpc_server *s, const void *frame, size_t len, uint8_t **reply,
                                    size_t *reply_len) {
  *reply = NULL;
  *reply_len = 0;
  int64_t now = rpc_now_ms();
  rpc_peek pk;
  if (atomic_load(&s->draining) &&
      !(rpc_wire_peek(frame, len, &pk) && is_health_check(&pk.method))) {
    rpc_status st;
    rpc_status_clear(&st);
    rpc_status_set(&st, STATUS_UNAVAILABLE, "server is shutting down");
    count_reply(s, st.code);
    server_metrics_reject(s, NULL, st.code);
    *reply = rpc_error_frame(&pk.request_id, &st, reply_len);
    return *reply != NULL ? STATUS_OK : STATUS_RESOURCE_EXHAUSTED;
  }
  out_frame o = {.use_nng = false};
  if (!server_process(s, frame, len, now, &o)) {
    free(o.heap);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *reply = o.heap;
  *reply_len = o.len;
  return STATUS_OK;
}

/* ---- receivers and workers ----------------------------------------------------- */

static void slot_recv(rpc_slot *sl) {
  rpc_server *s = sl->srv;
  pthread_rwlock_rdlock(&s->life);
  if (atomic_load(&s->stopping)) {
    sl->state = SLOT_IDLE;
  } else {
    sl->state = SLOT_RECV;
    nng_ctx_recv(sl->ctx, sl->aio);
  }
  pthread_rwlock_unlock(&s->life);
}

/* Sends msg on the slot's context; frees it when the server is stopping. */
static void slot_send(rpc_slot *sl, nng_msg *msg, int state) {
  rpc_server *s = sl->srv;
  pthread_rwlock_rdlock(&s->life);
  if (atomic_load(&s->stopping)) {
    nng_msg_free(msg);
    sl->state = SLOT_IDLE;
  } else {
    sl->state = state;
    nng_aio_set_msg(sl->aio, msg);
    nng_ctx_send(sl->ctx, sl->aio);
  }
  pthread_rwlock_unlock(&s->life);
}

/* Answers from the callback, without a worker: only for the cheap
 * rejections (draining, spent budget, queue full). */
static void slot_reject(rpc_slot *sl, nng_msg *msg, const rpc_peek *pk, status_code code,
                        const char *text, int64_t retry_ms) {
  rpc_server *s = sl->srv;
  rpc_status st;
  rpc_status_clear(&st);
  rpc_status_set(&st, code, "%s", text);
  st.retry_delay_ms = retry_ms;
  size_t n = 0;
  uint8_t *buf = rpc_error_frame(pk ? &pk->request_id : NULL, &st, &n);
  nng_msg_clear(msg);
  if (buf == NULL || nng_msg_append(msg, buf, n) != 0) {
    free(buf);
    nng_msg_free(msg);
    slot_recv(sl);
    return;
  }
  free(buf);
  count_reply(s, code);
  server_metrics_reject(s, pk != NULL ? &pk->method : NULL, code);
  slot_send(sl, msg, SLOT_SEND_REJECT);
}

static void slot_accept(rpc_slot *sl, nng_msg *msg) {
  rpc_server *s = sl->srv;
  rpc_peek pk;
  bool ok = rpc_wire_peek(nng_msg_body(msg), nng_msg_len(msg), &pk);
  if (atomic_load(&s->draining) && !(ok && is_health_check(&pk.method))) {
    slot_reject(sl, msg, ok ? &pk : NULL, STATUS_UNAVAILABLE, "server is shutting down", -1);
    return;
  }
  if (ok && pk.timeout_ms < 0) {
    slot_reject(sl, msg, &pk, STATUS_DEADLINE_EXCEEDED, "deadline exceeded on arrival", -1);
    return;
  }
  pthread_mutex_lock(&s->mu);
  if (s->qlen >= (size_t)s->o.queue_size) {
    pthread_mutex_unlock(&s->mu);
    atomic_fetch_add(&s->st_rejected, 1);
    slot_reject(sl, msg, ok ? &pk : NULL, STATUS_RESOURCE_EXHAUSTED, "server queue is full",
                QUEUE_FULL_RETRY_MS);
    return;
  }
  sl->req = msg;
  sl->state = SLOT_QUEUED;
  sl->next = NULL;
  if (s->qt != NULL)
    s->qt->next = sl;
  else
    s->qh = sl;
  s->qt = sl;
  s->qlen++;
  rpc_worker *w = s->idle;
  if (w != NULL) {
    s->idle = w->next_idle;
    w->woken = true;
    pthread_cond_signal(&w->cv);
  }
  pthread_mutex_unlock(&s->mu);
}

static void slot_cb(void *arg) {
  rpc_slot *sl = arg;
  rpc_server *s = sl->srv;
  int rv = nng_aio_result(sl->aio);
  switch (sl->state) {
  case SLOT_RECV:
    if (rv != 0) {
      if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        sl->state = SLOT_IDLE;
      else
        slot_recv(sl);
      return;
    }
    sl->recv_ms = rpc_now_ms();
    nng_msg *msg = nng_aio_get_msg(sl->aio);
    nng_aio_set_msg(sl->aio, NULL);
    slot_accept(sl, msg);
    return;
  case SLOT_SEND_REPLY:
  case SLOT_SEND_REJECT:
    if (rv != 0) {
      nng_msg_free(nng_aio_get_msg(sl->aio));
      nng_aio_set_msg(sl->aio, NULL);
    }
    if (sl->state == SLOT_SEND_REPLY) atomic_fetch_sub(&s->pending, 1);
    slot_recv(sl);
    return;
  default:
    return;
  }
}

static void *worker_main(void *arg) {
  rpc_worker *w = arg;
  rpc_server *s = w->srv;
  sigset_t all;
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, NULL);
  for (;;) {
    pthread_mutex_lock(&s->mu);
    while (!s->workers_stop && s->qh == NULL) {
      w->woken = false;
      w->next_idle = s->idle;
      s->idle = w;
      while (!w->woken && !s->workers_stop) pthread_cond_wait(&w->cv, &s->mu);
    }
    if (s->workers_stop) {
      pthread_mutex_unlock(&s->mu);
      return NULL;
    }
    rpc_slot *sl = s->qh;
    s->qh = sl->next;
    if (s->qh == NULL) s->qt = NULL;
    s->qlen--;
    atomic_fetch_add(&s->pending, 1);
    pthread_mutex_unlock(&s->mu);

    nng_msg *req = sl->req;
    sl->req = NULL;
    out_frame o = {.use_nng = true};
    bool ok = server_process(s, nng_msg_body(req), nng_msg_len(req), sl->recv_ms, &o);
    nng_msg_free(req);

    if (!ok) {
      atomic_fetch_sub(&s->pending, 1);
      /* Out of memory for the reply: the client's deadline answers. */
      if (o.msg != NULL) nng_msg_free(o.msg);
      log_error(NULL, "rpc: out of memory for a reply");
      slot_recv(sl);
      continue;
    }
    /* The socket is still open: destroy joins the workers before it
     * closes the socket. */
    sl->state = SLOT_SEND_REPLY;
    nng_aio_set_msg(sl->aio, o.msg);
    nng_ctx_send(sl->ctx, sl->aio);
  }
}

/* ---- built-in services ---------------------------------------------------------- */

static void health_check(Grpc__Health__V1__Health_Service *svc,
                         const Grpc__Health__V1__HealthCheckRequest *in,
                         Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data) {
  rpc_call *c = data;
  rpc_server *s = rpc_call_service_ctx(c);
  if (in->service[0] != '\0' && find_service(s, in->service, strlen(in->service)) == NULL) {
    rpc_call_set_status(c, STATUS_NOT_FOUND, "unknown service %s", in->service);
    return;
  }
  Grpc__Health__V1__HealthCheckResponse r = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
  r.status = atomic_load(&s->draining)
                 ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING
                 : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
  closure(&r, data);
}

static void health_watch(Grpc__Health__V1__Health_Service *svc,
                         const Grpc__Health__V1__HealthCheckRequest *in,
                         Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data) {
  rpc_call_set_status(data, STATUS_UNIMPLEMENTED,
                      "Watch is a streaming method; poll Check instead");
}

static void reflection_get_descriptor_set(Shop__Rpc__V1__ServerReflectionService_Service *svc,
                                          const Shop__Rpc__V1__GetDescriptorSetRequest *in,
                                          Shop__Rpc__V1__GetDescriptorSetResponse_Closure closure,
                                          void *data) {
  rpc_call *c = data;
  rpc_server *s = rpc_call_service_ctx(c);
  char **names = calloc(s->n_svcs > 0 ? s->n_svcs : 1, sizeof *names);
  if (names == NULL) {
    rpc_call_set_status(c, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return;
  }
  for (size_t i = 0; i < s->n_svcs; i++) names[i] = (char *)s->svcs[i].svc->descriptor->name;
  Shop__Rpc__V1__GetDescriptorSetResponse r = SHOP__RPC__V1__GET_DESCRIPTOR_SET_RESPONSE__INIT;
  r.file_descriptor_set.data = (uint8_t *)shop_descriptor_set;
  r.file_descriptor_set.len = shop_descriptor_set_len;
  r.n_services = s->n_svcs;
  r.services = names;
  closure(&r, data);
  free(names);
}

/* ---- lifecycle ------------------------------------------------------------------ */

static status_code map_nng(int rv) {
  switch (rv) {
  case 0:
    return STATUS_OK;
  case NNG_ENOMEM:
    return STATUS_RESOURCE_EXHAUSTED;
  case NNG_EADDRINUSE:
  case NNG_ECONNREFUSED:
  case NNG_ECONNSHUT:
  case NNG_ECLOSED:
  case NNG_ECONNRESET:
  case NNG_EUNREACHABLE:
    return STATUS_UNAVAILABLE;
  case NNG_EADDRINVAL:
  case NNG_EINVAL:
  case NNG_ENOTSUP:
    return STATUS_INVALID_ARGUMENT;
  case NNG_ETIMEDOUT:
    return STATUS_DEADLINE_EXCEEDED;
  default:
    return STATUS_INTERNAL;
  }
}

void rpc_server_opts_from_cfg(rpc_server_opts *o, const shop_cfg *cfg, const char *name) {
  memset(o, 0, sizeof *o);
  o->name = name;
  o->workers = cfg->rpc.workers;
  o->queue_size = cfg->rpc.queue_size;
  o->max_message_bytes = cfg->rpc.max_message_bytes;
  o->default_timeout_ms = cfg->rpc.default_timeout_ms;
  o->max_timeout_ms = cfg->rpc.max_timeout_ms;
  o->drain_grace_ms = cfg->rpc.drain_grace_ms;
}

static status_code register_entry(rpc_server *s, ProtobufCService *svc, const rpc_service_opts *o,
                                  char *errbuf, size_t errlen) {
  const ProtobufCServiceDescriptor *d = svc != NULL ? svc->descriptor : NULL;
  if (d == NULL || d->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC) {
    rpc_seterr(errbuf, errlen, "rpc: not a protoc-c service");
    return STATUS_INVALID_ARGUMENT;
  }
  if (find_service(s, d->name, strlen(d->name)) != NULL) {
    rpc_seterr(errbuf, errlen, "rpc: service %s registered twice", d->name);
    return STATUS_INVALID_ARGUMENT;
  }
  unsigned def = o != NULL ? o->default_policy : RPC_AUTHENTICATED;
  unsigned *pol = malloc((d->n_methods > 0 ? d->n_methods : 1) * sizeof *pol);
  if (pol == NULL) goto oom;
  for (unsigned i = 0; i < d->n_methods; i++) pol[i] = def;
  for (size_t i = 0; o != NULL && i < o->n_policies; i++) {
    const ProtobufCMethodDescriptor *m =
        o->policies[i].method != NULL
            ? protobuf_c_service_descriptor_get_method_by_name(d, o->policies[i].method)
            : NULL;
    if (m == NULL) {
      rpc_seterr(errbuf, errlen, "rpc: policy names method %s, which %s does not have",
                 o->policies[i].method ? o->policies[i].method : "(null)", d->name);
      free(pol);
      return STATUS_INVALID_ARGUMENT;
    }
    pol[m - d->methods] = o->policies[i].flags;
  }
  rpc_service_entry *n = realloc(s->svcs, (s->n_svcs + 1) * sizeof *n);
  if (n == NULL) goto oom;
  s->svcs = n;
  s->svcs[s->n_svcs++] = (rpc_service_entry){.svc = svc, .policy = pol, .ctx = o ? o->ctx : NULL};
  return STATUS_OK;
oom:
  free(pol);
  rpc_seterr(errbuf, errlen, "rpc: out of memory");
  return STATUS_RESOURCE_EXHAUSTED;
}

status_code rpc_server_register(rpc_server *s, ProtobufCService *svc, const rpc_service_opts *o,
                                char *errbuf, size_t errlen) {
  if (s->started) {
    rpc_seterr(errbuf, errlen, "rpc: register services before rpc_server_start");
    return STATUS_FAILED_PRECONDITION;
  }
  return register_entry(s, svc, o, errbuf, errlen);
}

status_code rpc_server_add_interceptor(rpc_server *s, const rpc_server_interceptor *ic,
                                       char *errbuf, size_t errlen) {
  if (s->started || ic == NULL || ic->fn == NULL) {
    rpc_seterr(errbuf, errlen, "rpc: add interceptors (with a function) before rpc_server_start");
    return STATUS_FAILED_PRECONDITION;
  }
  rpc_server_interceptor *n = realloc(s->ics, (s->n_ics + 1) * sizeof *n);
  if (n == NULL) {
    rpc_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  s->ics = n;
  s->ics[s->n_ics++] = *ic;
  return STATUS_OK;
}

static bool opts_valid(const rpc_server_opts *o, char *errbuf, size_t errlen) {
  if (o->workers < 1 || o->queue_size < 1 || o->max_message_bytes < 1024 ||
      o->default_timeout_ms < 1 || o->max_timeout_ms < 1 || o->drain_grace_ms < 0) {
    rpc_seterr(errbuf, errlen,
               "rpc: server options out of range (workers, queue_size >= 1; "
               "max_message_bytes >= 1024; timeouts >= 1 ms)");
    return false;
  }
  return true;
}

status_code rpc_server_create(rpc_server **out, const rpc_server_opts *o, char *errbuf,
                              size_t errlen) {
  *out = NULL;
  if (o == NULL || !opts_valid(o, errbuf, errlen)) return STATUS_INVALID_ARGUMENT;
  rpc_server *s = calloc(1, sizeof *s);
  if (s == NULL) {
    rpc_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  s->o = *o;
  s->name = strdup(o->name != NULL ? o->name : "shop");
  s->o.name = s->name;
  s->pm = rpc_metrics_create(o->metrics, false);
  pthread_mutex_init(&s->mu, NULL);
  pthread_rwlock_init(&s->life, NULL);
  status_code rc = STATUS_RESOURCE_EXHAUSTED;
  if (s->name == NULL) goto fail;

  static const rpc_server_interceptor builtins[] = {
      {"logging", ic_logging, NULL},   {"metrics", ic_metrics, NULL},
      {"deadline", ic_deadline, NULL}, {"authentication", ic_auth, NULL},
      {"recover", ic_recover, NULL},
  };
  s->ics = malloc(sizeof builtins);
  if (s->ics == NULL) goto fail;
  memcpy(s->ics, builtins, sizeof builtins);
  s->n_ics = sizeof builtins / sizeof builtins[0];

  s->health = (Grpc__Health__V1__Health_Service)GRPC__HEALTH__V1__HEALTH__INIT(health_);
  s->reflection = (Shop__Rpc__V1__ServerReflectionService_Service)
      SHOP__RPC__V1__SERVER_REFLECTION_SERVICE__INIT(reflection_);
  rpc_service_opts pub = {.default_policy = RPC_PUBLIC, .ctx = s};
  if ((rc = register_entry(s, &s->health.base, &pub, errbuf, errlen)) != STATUS_OK) goto fail;
  if ((rc = register_entry(s, &s->reflection.base, &pub, errbuf, errlen)) != STATUS_OK) goto fail;

  int rv = nng_rep0_open(&s->sock);
  if (rv != 0) {
    rc = map_nng(rv);
    rpc_seterr(errbuf, errlen, "rpc: opening the REP socket: %s", nng_strerror(rv));
    goto fail;
  }
  s->sock_open = true;
  if ((rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, (size_t)o->max_message_bytes)) != 0) {
    rc = map_nng(rv);
    rpc_seterr(errbuf, errlen, "rpc: setting recv-size-max: %s", nng_strerror(rv));
    goto fail;
  }
  *out = s;
  return STATUS_OK;
fail:
  if (rc == STATUS_RESOURCE_EXHAUSTED) rpc_seterr(errbuf, errlen, "rpc: out of memory");
  rpc_server_destroy(s);
  return rc;
}

status_code rpc_server_listen(rpc_server *s, const char *url, char *errbuf, size_t errlen) {
  nng_listener l;
  int rv = nng_listen(s->sock, url, &l, 0);
  if (rv != 0) {
    rpc_seterr(errbuf, errlen, "rpc: listen on %s: %s", url, nng_strerror(rv));
    return map_nng(rv);
  }
  int port = 0;
  if (strncmp(url, "tcp", 3) == 0 && nng_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port) == 0)
    s->port = port;
  return STATUS_OK;
}

int rpc_server_port(const rpc_server *s) { return s->port; }

status_code rpc_server_start(rpc_server *s, char *errbuf, size_t errlen) {
  if (s->started) {
    rpc_seterr(errbuf, errlen, "rpc: server already started");
    return STATUS_FAILED_PRECONDITION;
  }
  for (size_t i = 0; s->pm != NULL && i < s->n_svcs; i++) {
    const ProtobufCServiceDescriptor *d = s->svcs[i].svc->descriptor;
    for (unsigned m = 0; m < d->n_methods; m++)
      rpc_metrics_init_method(s->pm, d->name, d->methods[m].name);
  }
  size_t spare = (size_t)s->o.workers > SPARE_SLOTS_MIN ? (size_t)s->o.workers : SPARE_SLOTS_MIN;
  size_t n = (size_t)s->o.workers + (size_t)s->o.queue_size + spare;
  s->slots = calloc(n, sizeof *s->slots);
  s->workers = calloc((size_t)s->o.workers, sizeof *s->workers);
  if (s->slots == NULL || s->workers == NULL) {
    rpc_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  s->started = true; /* from here rpc_server_destroy undoes what follows */
  for (size_t i = 0; i < n; i++) {
    rpc_slot *sl = &s->slots[i];
    sl->srv = s;
    int rv = nng_aio_alloc(&sl->aio, slot_cb, sl);
    if (rv == 0) {
      rv = nng_ctx_open(&sl->ctx, s->sock);
      sl->ctx_open = rv == 0;
    }
    if (rv != 0) {
      rpc_seterr(errbuf, errlen, "rpc: opening receiver %zu: %s", i, nng_strerror(rv));
      s->n_slots = i + 1;
      return map_nng(rv);
    }
  }
  s->n_slots = n;
  for (int i = 0; i < s->o.workers; i++) {
    rpc_worker *w = &s->workers[i];
    w->srv = s;
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, worker_main, w) != 0) {
      pthread_cond_destroy(&w->cv);
      rpc_seterr(errbuf, errlen, "rpc: cannot start worker thread %d", i);
      return STATUS_RESOURCE_EXHAUSTED;
    }
    s->n_workers++;
  }
  for (size_t i = 0; i < n; i++) slot_recv(&s->slots[i]);
  return STATUS_OK;
}

bool rpc_server_draining(const rpc_server *s) { return atomic_load(&s->draining); }

status_code rpc_server_drain(rpc_server *s, int grace_ms) {
  atomic_store(&s->draining, true);
  /* Polling keeps the hot path free of wake-ups for a rare event. */
  int64_t until = rpc_now_ms() + grace_ms;
  for (;;) {
    pthread_mutex_lock(&s->mu);
    size_t queued = s->qlen;
    pthread_mutex_unlock(&s->mu);
    if (queued == 0 && atomic_load(&s->pending) == 0) return STATUS_OK;
    if (rpc_now_ms() >= until) break;
    rpc_sleep_ms(1);
  }
  atomic_store(&s->abandoned, true);
  return STATUS_DEADLINE_EXCEEDED;
}

void rpc_server_stats_get(const rpc_server *s, rpc_server_stats *out) {
  rpc_server *m = (rpc_server *)s;
  memset(out, 0, sizeof *out);
  out->calls = atomic_load(&m->st_calls);
  for (int i = 0; i < 17; i++) out->by_code[i] = atomic_load(&m->st_by_code[i]);
  out->rejected_queue_full = atomic_load(&m->st_rejected);
  out->running = atomic_load(&m->st_running);
  out->peak_running = atomic_load(&m->st_peak);
  pthread_mutex_lock(&m->mu);
  out->queued = m->qlen;
  pthread_mutex_unlock(&m->mu);
}

void rpc_server_destroy(rpc_server *s) {
  if (s == NULL) return;
  pthread_rwlock_wrlock(&s->life);
  atomic_store(&s->stopping, true);
  pthread_rwlock_unlock(&s->life);
  atomic_store(&s->abandoned, true);
  /* Workers first: one may still be sending its reply on the open socket. */
  pthread_mutex_lock(&s->mu);
  s->workers_stop = true;
  for (size_t i = 0; i < s->n_workers; i++) pthread_cond_signal(&s->workers[i].cv);
  pthread_mutex_unlock(&s->mu);
  for (size_t i = 0; i < s->n_workers; i++) {
    pthread_join(s->workers[i].thread, NULL);
    pthread_cond_destroy(&s->workers[i].cv);
  }
  if (s->sock_open) nng_close(s->sock);
  for (size_t i = 0; i < s->n_slots; i++) {
    rpc_slot *sl = &s->slots[i];
    /* Stopping waits for a running callback; a failed send's callback has
     * already freed its message, so none is left on the aio. */
    if (sl->aio != NULL) {
      nng_aio_stop(sl->aio);
      nng_aio_free(sl->aio);
    }
    if (sl->req != NULL) nng_msg_free(sl->req);
    if (sl->ctx_open) nng_ctx_close(sl->ctx);
  }
  for (size_t i = 0; i < s->n_svcs; i++) free(s->svcs[i].policy);
  free(s->svcs);
  free(s->ics);
  free(s->slots);
  free(s->workers);
  free(s->name);
  rpc_metrics_destroy(s->pm);
  pthread_mutex_destroy(&s->mu);
  pthread_rwlock_destroy(&s->life);
  free(s);
}

/* ---- signals ------------------------------------------------------------------- */

static void term_set(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGTERM);
  sigaddset(set, SIGINT);
}

void rpc_signals_block(void) {
  sigset_t set;
  term_set(&set);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
}

status_code rpc_server_run_until_signal(rpc_server *s) {
  sigset_t set;
  term_set(&set);
  int sig = 0;
  while (sigwait(&set, &sig) != 0) {
  }
  log_info(NULL, "rpc: %s received, draining for up to %d ms",
           sig == SIGTERM ? "SIGTERM" : "SIGINT", s->o.drain_grace_ms);
  status_code rc = rpc_server_drain(s, s->o.drain_grace_ms);
  if (rc == STATUS_OK)
    log_info(NULL, "rpc: drained");
  else
    log_warn(NULL, "rpc: drain grace period ran out with calls still running");
  return rc;
}

/* ---- Prometheus labels ---------------------------------------------------------- */

/* The descriptor's own names for a served method (strings that live as
 * long as the server); RPC_METRICS_UNKNOWN for what is not served, so
 * that made-up paths all land in one series. */
static void server_metrics_labels(const rpc_server *s, const char *path, size_t len,
                                  const char **service, const char **method) {
  *service = RPC_METRICS_UNKNOWN;
  *method = RPC_METRICS_UNKNOWN;
  char buf[256];
  if (path == NULL || len >= sizeof buf) return;
  memcpy(buf, path, len);
  buf[len] = '\0';
  const char *sp, *mp;
  size_t sn, mn;
  if (!rpc_method_path_split(buf, &sp, &sn, &mp, &mn)) return;
  const rpc_service_entry *e = find_service(s, sp, sn);
  if (e == NULL) return;
  *service = e->svc->descriptor->name;
  const ProtobufCMethodDescriptor *m =
      protobuf_c_service_descriptor_get_method_by_name(e->svc->descriptor, mp);
  if (m != NULL) *method = m->name;
}

/* A reply the layer sent without running the chain (undecodable
 * envelope, draining, spent budget, full queue): started and handled at
 * once. */
static void server_metrics_reject(rpc_server *s, const rpc_str *method, status_code code) {
  if (s->pm == NULL) return;
  const char *svc, *m;
  server_metrics_labels(s, method != NULL ? method->p : NULL, method != NULL ? method->n : 0, &svc,
                        &m);
  rpc_metrics_started(s->pm, svc, m);
  rpc_metrics_handled(s->pm, svc, m, code, 0);
}
