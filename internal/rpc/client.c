/* The RPC client: a REQ socket, a pool of nng_ctx for concurrent calls, the
 * client interceptor chain, stubs whose invoke is a call, and synchronous
 * helpers. */
#include <errno.h>
#include <inttypes.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "rpc/rpc_internal.h"

#define BACKOFF_CAP_MS 10000
#define AUTH_HEADER_MAX (AUTH_TOKEN_MAX + 16)

/* A pooled REQ context. in_flight and aborted let the pipe callback fail
 * the operations waiting on NNG when the last server goes away, without a
 * lock on the call path (see wait_op). */
typedef struct cl_ctx {
  nng_ctx ctx;
  nng_aio *aio;
  atomic_bool in_flight;
  atomic_bool aborted;
  struct cl_ctx *next_free;
  struct cl_ctx *next_all; /* set before the node is published */
} cl_ctx;

struct rpc_client {
  rpc_client_opts o;
  char *caller;
  nng_socket sock;
  bool sock_open;

  pthread_mutex_t mu; /* the free list */
  cl_ctx *free_ctx;
  cl_ctx *_Atomic all_ctx; /* append-only, read by pipe_cb without the lock */
  atomic_int pipes;

  rpc_client_interceptor *ics; /* built-ins first, then added ones */
  size_t n_ics;
  atomic_bool called;

  _Atomic uint64_t rand;
  _Atomic uint64_t st_calls, st_attempts, st_retries;
  _Atomic uint64_t st_by_code[17];
  rpc_metrics *pm; /* grpc_client_* in opts.metrics; NULL: none */
};

typedef struct md_entry {
  char *key;
  char *value;
} md_entry;

struct rpc_client_req {
  rpc_client *c;
  const char *method;
  const void *payload;
  size_t payload_len;
  const rpc_call_opts *opts;
  rpc_status *st;

  int64_t deadline_ms;
  int attempt;
  char request_id[72];
  char traceparent[64];
  char authorization[AUTH_HEADER_MAX];
  md_entry *md;
  size_t n_md;

  uint8_t *resp; /* reply payload on OK (malloc) */
  size_t resp_len;
  size_t pos;
};

static const rpc_call_opts no_opts;

/* ---- pipes ---------------------------------------------------------------- */

static void pipe_cb(nng_pipe p, nng_pipe_ev ev, void *arg) {
  rpc_client *c = arg;
  if (ev == NNG_PIPE_EV_ADD_POST) {
    atomic_fetch_add(&c->pipes, 1);
    return;
  }
  if (ev != NNG_PIPE_EV_REM_POST) return;
  int n = atomic_load(&c->pipes);
  while (n > 0 && !atomic_compare_exchange_weak(&c->pipes, &n, n - 1)) {
  }
  if (n != 1) return;
  /* No server left: fail the operations waiting on NNG now rather than let
   * NNG hold them until their deadline. */
  for (cl_ctx *x = atomic_load(&c->all_ctx); x != NULL; x = x->next_all) {
    if (atomic_load(&x->in_flight)) {
      atomic_store(&x->aborted, true);
      nng_aio_abort(x->aio, NNG_ECONNSHUT);
    }
  }
}

int rpc_client_pipes(const rpc_client *c) { return atomic_load(&((rpc_client *)c)->pipes); }

bool rpc_client_wait_connected(rpc_client *c, int timeout_ms) {
  int64_t until = rpc_now_ms() + timeout_ms;
  for (;;) {
    if (rpc_client_pipes(c) > 0) return true;
    if (rpc_now_ms() >= until) return false;
    rpc_sleep_ms(2);
  }
}

/* ---- ctx pool --------------------------------------------------------------- */

static cl_ctx *ctx_get(rpc_client *c) {
  pthread_mutex_lock(&c->mu);
  cl_ctx *x = c->free_ctx;
  if (x != NULL) c->free_ctx = x->next_free;
  pthread_mutex_unlock(&c->mu);
  if (x != NULL) return x;
  x = calloc(1, sizeof *x);
  if (x == NULL) return NULL;
  if (nng_aio_alloc(&x->aio, NULL, NULL) != 0) {
    free(x);
    return NULL;
  }
  if (nng_ctx_open(&x->ctx, c->sock) != 0) {
    nng_aio_free(x->aio);
    free(x);
    return NULL;
  }
  pthread_mutex_lock(&c->mu);
  x->next_all = atomic_load(&c->all_ctx);
  atomic_store(&c->all_ctx, x);
  pthread_mutex_unlock(&c->mu);
  return x;
}

static void ctx_put(rpc_client *c, cl_ctx *x) {
  pthread_mutex_lock(&c->mu);
  x->next_free = c->free_ctx;
  c->free_ctx = x;
  pthread_mutex_unlock(&c->mu);
}

/* ---- transport -------------------------------------------------------------- */

static status_code map_nng(int rv, rpc_status *st) {
  switch (rv) {
  case NNG_ETIMEDOUT:
    rpc_status_set(st, STATUS_DEADLINE_EXCEEDED, "no reply within the deadline");
    break;
  case NNG_ENOMEM:
    rpc_status_set(st, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    break;
  default:
    rpc_status_set(st, STATUS_UNAVAILABLE, "connection to the server lost (%s)", nng_strerror(rv));
    break;
  }
  return st->code;
}

/* Sends or receives on x and waits; fails fast when the last pipe drops.
 * in_flight is published before pipes is read, and pipe_cb drops pipes
 * before it reads in_flight (both sequentially consistent), so either
 * this call sees no pipe, or pipe_cb sees the call and aborts it; an abort
 * that came before the operation started is caught by the check of
 * `aborted` after starting it. */
static int wait_op(rpc_client *c, cl_ctx *x, bool send, int64_t timeout_ms) {
  atomic_store(&x->aborted, false);
  atomic_store(&x->in_flight, true);
  if (atomic_load(&c->pipes) == 0) {
    atomic_store(&x->in_flight, false);
    return NNG_ECONNREFUSED;
  }
  nng_aio_set_timeout(x->aio, (nng_duration)(timeout_ms > 0 ? timeout_ms : 1));
  if (send)
    nng_ctx_send(x->ctx, x->aio);
  else
    nng_ctx_recv(x->ctx, x->aio);
  if (atomic_load(&x->aborted)) nng_aio_abort(x->aio, NNG_ECONNSHUT);
  nng_aio_wait(x->aio);
  atomic_store(&x->in_flight, false);
  return nng_aio_result(x->aio);
}

static status_code transport(rpc_client_req *r) {
  rpc_client *c = r->c;
  rpc_status *st = r->st;
  rpc_status_clear(st);
  int64_t remaining = r->deadline_ms - rpc_now_ms();
  if (remaining <= 0) {
    rpc_status_set(st, STATUS_DEADLINE_EXCEEDED, "deadline exceeded before sending");
    return st->code;
  }

  Shop__Rpc__V1__RequestEnvelope env = SHOP__RPC__V1__REQUEST_ENVELOPE__INIT;
  Shop__Rpc__V1__RequestEnvelope__MetadataEntry mde[16];
  Shop__Rpc__V1__RequestEnvelope__MetadataEntry *mdp_stack[16];
  Shop__Rpc__V1__RequestEnvelope__MetadataEntry *mde_heap = NULL, **mdp_heap = NULL;
  Shop__Rpc__V1__RequestEnvelope__MetadataEntry *e = mde, **ep = mdp_stack;
  if (r->n_md > 16) {
    mde_heap = malloc(r->n_md * sizeof *mde_heap);
    mdp_heap = malloc(r->n_md * sizeof *mdp_heap);
    if (mde_heap == NULL || mdp_heap == NULL) {
      free(mde_heap);
      free(mdp_heap);
      rpc_status_set(st, STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return st->code;
    }
    e = mde_heap;
    ep = mdp_heap;
  }
  for (size_t i = 0; i < r->n_md; i++) {
    shop__rpc__v1__request_envelope__metadata_entry__init(&e[i]);
    e[i].key = r->md[i].key;
    e[i].value = r->md[i].value;
    ep[i] = &e[i];
  }
  env.method = (char *)r->method;
  env.request_id = r->request_id;
  env.timeout_ms = remaining;
  env.authorization = r->authorization;
  env.traceparent = r->traceparent;
  env.idempotency_key = (char *)(r->opts->idempotency_key ? r->opts->idempotency_key : "");
  env.attempt = r->attempt;
  env.caller = c->caller;
  env.n_metadata = r->n_md;
  env.metadata = r->n_md > 0 ? ep : NULL;
  env.payload.data = (uint8_t *)r->payload;
  env.payload.len = r->payload_len;

  status_code rc = STATUS_OK;
  cl_ctx *x = NULL;
  nng_msg *m = NULL;
  Shop__Rpc__V1__ResponseEnvelope *resp = NULL;
  size_t n = shop__rpc__v1__request_envelope__get_packed_size(&env);
  if (n > (size_t)c->o.max_message_bytes) {
    rc = STATUS_RESOURCE_EXHAUSTED;
    rpc_status_set(st, rc, "request of %zu bytes exceeds the %d-byte message limit", n,
                   c->o.max_message_bytes);
    goto out;
  }
  if ((x = ctx_get(c)) == NULL || nng_msg_alloc(&m, n) != 0) {
    rc = STATUS_RESOURCE_EXHAUSTED;
    rpc_status_set(st, rc, "out of memory");
    goto out;
  }
  shop__rpc__v1__request_envelope__pack(&env, nng_msg_body(m));

  nng_aio_set_msg(x->aio, m);
  int rv = wait_op(c, x, true, remaining);
  if (rv != 0) {
    /* The message is ours again when the send did not happen. */
    nng_msg *back = nng_aio_get_msg(x->aio);
    if (back != NULL) nng_msg_free(back);
    nng_aio_set_msg(x->aio, NULL);
    if (rv == NNG_ECONNREFUSED)
      rpc_status_set(st, STATUS_UNAVAILABLE, "no server connected");
    else
      map_nng(rv, st);
    rc = st->code;
    goto out;
  }
  m = NULL;
  rv = wait_op(c, x, false, r->deadline_ms - rpc_now_ms());
  if (rv != 0) {
    rc = rv == NNG_ECONNREFUSED
             ? (rpc_status_set(st, STATUS_UNAVAILABLE, "no server connected"), st->code)
             : map_nng(rv, st);
    goto out;
  }
  m = nng_aio_get_msg(x->aio);
  nng_aio_set_msg(x->aio, NULL);
  resp = shop__rpc__v1__response_envelope__unpack(NULL, nng_msg_len(m), nng_msg_body(m));
  if (resp == NULL) {
    rc = STATUS_INTERNAL;
    rpc_status_set(st, rc, "undecodable response envelope");
    goto out;
  }
  if (resp->request_id[0] != '\0' && strcmp(resp->request_id, r->request_id) != 0) {
    rc = STATUS_INTERNAL;
    rpc_status_set(st, rc, "response for request %s, expected %s", resp->request_id, r->request_id);
    goto out;
  }
  rpc_status_from_pb(st, resp->status);
  rc = st->code;
  if (rc == STATUS_OK) {
    /* Take the payload buffer over: protobuf-c allocated it with malloc. */
    r->resp = resp->payload.data;
    r->resp_len = resp->payload.len;
    resp->payload.data = NULL;
    resp->payload.len = 0;
  }
out:
  if (resp != NULL) shop__rpc__v1__response_envelope__free_unpacked(resp, NULL);
  if (m != NULL) nng_msg_free(m);
  if (x != NULL) ctx_put(c, x);
  free(mde_heap);
  free(mdp_heap);
  return rc;
}

/* ---- chain -------------------------------------------------------------------- */

status_code rpc_client_req_proceed(rpc_client_req *r) {
  size_t my = r->pos;
  status_code rc;
  r->pos = my + 1;
  if (my < r->c->n_ics) {
    const rpc_client_interceptor *ic = &r->c->ics[my];
    rc = ic->fn(r, ic->arg);
  } else {
    rc = transport(r);
  }
  r->pos = my; /* so that retry can proceed again */
  return rc;
}

const char *rpc_client_req_method(const rpc_client_req *r) { return r->method; }
int rpc_client_req_attempt(const rpc_client_req *r) { return r->attempt; }
const rpc_status *rpc_client_req_status(const rpc_client_req *r) { return r->st; }

static status_code md_add(rpc_client_req *r, const char *k, const char *v) {
  md_entry *n = realloc(r->md, (r->n_md + 1) * sizeof *n);
  if (n == NULL) return STATUS_RESOURCE_EXHAUSTED;
  r->md = n;
  n[r->n_md].key = strdup(k);
  n[r->n_md].value = strdup(v);
  if (n[r->n_md].key == NULL || n[r->n_md].value == NULL) {
    free(n[r->n_md].key);
    free(n[r->n_md].value);
    return STATUS_RESOURCE_EXHAUSTED;
  }
  r->n_md++;
  return STATUS_OK;
}

static status_code ic_deadline_cb(rpc_client_req *r, void *arg) {
  rpc_client *c = r->c;
  int64_t now = rpc_now_ms();
  int64_t t = r->opts->timeout_ms > 0 ? r->opts->timeout_ms : c->o.default_timeout_ms;
  if (t > c->o.max_timeout_ms) t = c->o.max_timeout_ms; /* the server cuts it there anyway */
  r->deadline_ms = now + t;
  if (r->opts->parent != NULL) {
    int64_t pd = rpc_call_deadline_ms(r->opts->parent);
    if (pd < r->deadline_ms) r->deadline_ms = pd;
  }
  if (r->deadline_ms <= now) {
    rpc_status_set(r->st, STATUS_DEADLINE_EXCEEDED, "no budget left for the call");
    return r->st->code;
  }
  return rpc_client_req_proceed(r);
}

static status_code ic_metadata_cb(rpc_client_req *r, void *arg) {
  rpc_client *c = r->c;
  const rpc_call_opts *o = r->opts;
  if (o->request_id != NULL && o->request_id[0] != '\0')
    rpc_strlcpy(r->request_id, sizeof r->request_id, o->request_id, strlen(o->request_id));
  else
    snprintf(r->request_id, sizeof r->request_id, "%016" PRIx64 "%016" PRIx64, rpc_rand64(&c->rand),
             rpc_rand64(&c->rand));

  /* W3C traceparent: a child of the parent call's, or of the thread's
   * current scope (a consumer handling an event, say): same trace id, new
   * span id. Outside both, a new trace. */
  log_traceparent_child(
      o->parent != NULL ? rpc_call_traceparent(o->parent) : log_current_traceparent(),
      r->traceparent);

  r->authorization[0] = '\0';
  if (o->token != NULL && o->token[0] != '\0') {
    int n = snprintf(r->authorization, sizeof r->authorization, "Bearer %s", o->token);
    if (n < 0 || (size_t)n >= sizeof r->authorization) {
      rpc_status_set(r->st, STATUS_INVALID_ARGUMENT, "token longer than %d bytes", AUTH_TOKEN_MAX);
      return r->st->code;
    }
  } else if (o->parent != NULL) {
    const char *a = rpc_call_authorization(o->parent);
    rpc_strlcpy(r->authorization, sizeof r->authorization, a, strlen(a));
  }

  for (size_t i = 0; i + 1 < 2 * o->n_metadata + 1 && i / 2 < o->n_metadata; i += 2) {
    const char *k = o->metadata[i], *v = o->metadata[i + 1];
    if (k == NULL || v == NULL) continue;
    if (md_add(r, k, v) != STATUS_OK) {
      rpc_status_set(r->st, STATUS_RESOURCE_EXHAUSTED, "out of memory");
      return r->st->code;
    }
  }
  return rpc_client_req_proceed(r);
}

static status_code ic_retry_cb(rpc_client_req *r, void *arg) {
  rpc_client *c = r->c;
  int max = r->opts->no_retry ? 0 : c->o.retry_max;
  int64_t backoff = c->o.retry_backoff_ms;
  for (int attempt = 1;; attempt++) {
    r->attempt = attempt;
    status_code rc = rpc_client_req_proceed(r);
    if (rc != STATUS_UNAVAILABLE || attempt > max) return rc;
    /* Full jitter over the upper half: [backoff/2, backoff]. */
    int64_t wait = backoff / 2 + (int64_t)(rpc_rand64(&c->rand) % (uint64_t)(backoff / 2 + 1));
    if (r->st->retry_delay_ms > wait) wait = r->st->retry_delay_ms;
    if (rpc_now_ms() + wait >= r->deadline_ms) return rc;
    rpc_sleep_ms(wait);
    atomic_fetch_add_explicit(&c->st_retries, 1, memory_order_relaxed);
    backoff = backoff * 2 > BACKOFF_CAP_MS ? BACKOFF_CAP_MS : backoff * 2;
  }
}

static status_code ic_metrics_cb(rpc_client_req *r, void *arg) {
  atomic_fetch_add_explicit(&r->c->st_attempts, 1, memory_order_relaxed);
  return rpc_client_req_proceed(r);
}

status_code rpc_client_add_interceptor(rpc_client *c, const rpc_client_interceptor *ic,
                                       char *errbuf, size_t errlen) {
  if (atomic_load(&c->called) || ic == NULL || ic->fn == NULL) {
    status_seterr(errbuf, errlen, "rpc: add interceptors (with a function) before the first call");
    return STATUS_FAILED_PRECONDITION;
  }
  rpc_client_interceptor *n = realloc(c->ics, (c->n_ics + 1) * sizeof *n);
  if (n == NULL) {
    status_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  c->ics = n;
  c->ics[c->n_ics++] = *ic;
  return STATUS_OK;
}

static void client_metrics_labels(const char *path, char *svc, size_t svc_len, char *method,
                                  size_t method_len);

/* Runs the chain for one call. On OK *resp owns the reply payload. */
static status_code run_call(rpc_client *c, const char *method, const void *payload, size_t len,
                            uint8_t **resp, size_t *resp_len, const rpc_call_opts *opts,
                            rpc_status *st) {
  atomic_store(&c->called, true);
  char msvc[256] = "", mname[128] = "";
  if (c->pm != NULL) client_metrics_labels(method, msvc, sizeof msvc, mname, sizeof mname);
  rpc_metrics_started(c->pm, msvc, mname);
  int64_t t0 = rpc_now_us();
  rpc_client_req r;
  memset(&r, 0, sizeof r);
  r.c = c;
  r.method = method;
  r.payload = payload;
  r.payload_len = len;
  r.opts = opts != NULL ? opts : &no_opts;
  r.st = st;
  rpc_status_clear(st);
  status_code rc = rpc_client_req_proceed(&r);
  if (rc != st->code) {
    /* An interceptor returned a code without setting the status. */
    if (st->code == STATUS_OK) rpc_status_set(st, rc, NULL);
    st->code = rc;
  }
  for (size_t i = 0; i < r.n_md; i++) {
    free(r.md[i].key);
    free(r.md[i].value);
  }
  free(r.md);
  if (rc == STATUS_OK) {
    *resp = r.resp;
    *resp_len = r.resp_len;
  } else {
    free(r.resp);
    *resp = NULL;
    *resp_len = 0;
  }
  atomic_fetch_add_explicit(&c->st_calls, 1, memory_order_relaxed);
  atomic_fetch_add_explicit(&c->st_by_code[status_is_valid(rc) ? rc : STATUS_UNKNOWN], 1,
                            memory_order_relaxed);
  rpc_metrics_handled(c->pm, msvc, mname, rc, (double)(rpc_now_us() - t0) / 1e6);
  return rc;
}

status_code rpc_client_call_raw(rpc_client *c, const char *method_path, const void *req,
                                size_t req_len, uint8_t **resp, size_t *resp_len,
                                const rpc_call_opts *opts, rpc_status *st) {
  rpc_status local;
  if (st == NULL) st = &local;
  if (method_path == NULL || (req == NULL && req_len > 0)) {
    *resp = NULL;
    *resp_len = 0;
    rpc_status_clear(st);
    rpc_status_set(st, STATUS_INVALID_ARGUMENT, "no method path or request bytes");
    return st->code;
  }
  return run_call(c, method_path, req, req_len, resp, resp_len, opts, st);
}

static status_code call_message(rpc_client *c, const ProtobufCServiceDescriptor *d,
                                const ProtobufCMethodDescriptor *m, const ProtobufCMessage *in,
                                ProtobufCMessage **out, const rpc_call_opts *opts, rpc_status *st) {
  *out = NULL;
  rpc_status_clear(st);
  if (in == NULL || in->descriptor != m->input) {
    rpc_status_set(st, STATUS_INVALID_ARGUMENT, "request is not a %s", m->input->name);
    return st->code;
  }
  char path[512];
  int pn = snprintf(path, sizeof path, "/%s/%s", d->name, m->name);
  if (pn < 0 || (size_t)pn >= sizeof path) {
    rpc_status_set(st, STATUS_INVALID_ARGUMENT, "method path too long");
    return st->code;
  }
  uint8_t stackbuf[1024];
  size_t n = protobuf_c_message_get_packed_size(in);
  uint8_t *buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
  if (buf == NULL) {
    rpc_status_set(st, STATUS_RESOURCE_EXHAUSTED, "out of memory");
    return st->code;
  }
  protobuf_c_message_pack(in, buf);
  uint8_t *resp = NULL;
  size_t resp_len = 0;
  status_code rc = run_call(c, path, buf, n, &resp, &resp_len, opts, st);
  if (buf != stackbuf) free(buf);
  if (rc != STATUS_OK) return rc;
  *out = protobuf_c_message_unpack(m->output, NULL, resp_len, resp);
  free(resp);
  if (*out == NULL) {
    rpc_status_set(st, STATUS_INTERNAL, "undecodable reply: not a %s", m->output->name);
    return st->code;
  }
  return STATUS_OK;
}

status_code rpc_client_call_sync(rpc_client *c, const ProtobufCServiceDescriptor *d,
                                 const char *method, const ProtobufCMessage *in,
                                 ProtobufCMessage **out, const rpc_call_opts *opts,
                                 rpc_status *st) {
  rpc_status local;
  if (st == NULL) st = &local;
  ProtobufCMessage *discard = NULL;
  ProtobufCMessage **reply = out != NULL ? out : &discard;
  const ProtobufCMethodDescriptor *m =
      method != NULL ? protobuf_c_service_descriptor_get_method_by_name(d, method) : NULL;
  if (m == NULL) {
    *reply = NULL;
    rpc_status_clear(st);
    rpc_status_set(st, STATUS_UNIMPLEMENTED, "%s has no method %s", d->name,
                   method ? method : "(null)");
    return st->code;
  }
  status_code code = call_message(c, d, m, in, reply, opts, st);
  if (discard != NULL) protobuf_c_message_free_unpacked(discard, NULL);
  return code;
}

/* ---- stubs -------------------------------------------------------------------- */

typedef struct rpc_stub {
  ProtobufCService base;
  rpc_client *c;
} rpc_stub;

static void stub_invoke(ProtobufCService *svc, unsigned idx, const ProtobufCMessage *in,
                        ProtobufCClosure closure, void *data) {
  rpc_stub *sb = (rpc_stub *)svc;
  rpc_client_call *cc = data;
  rpc_status local;
  rpc_status *st = cc != NULL ? &cc->status : &local;
  ProtobufCMessage *out = NULL;
  const ProtobufCServiceDescriptor *d = svc->descriptor;
  if (idx >= d->n_methods) {
    rpc_status_clear(st);
    rpc_status_set(st, STATUS_UNIMPLEMENTED, "method index %u out of range", idx);
  } else {
    call_message(sb->c, d, &d->methods[idx], in, &out, cc != NULL ? cc->opts : NULL, st);
  }
  if (closure != NULL) closure(out, data);
  if (out != NULL) protobuf_c_message_free_unpacked(out, NULL);
}

static void stub_free(ProtobufCService *svc) { free(svc); }

status_code rpc_stub_create(ProtobufCService **out, rpc_client *c,
                            const ProtobufCServiceDescriptor *desc, char *errbuf, size_t errlen) {
  *out = NULL;
  if (desc == NULL || desc->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC) {
    status_seterr(errbuf, errlen, "rpc: not a protoc-c service descriptor");
    return STATUS_INVALID_ARGUMENT;
  }
  rpc_stub *sb = calloc(1, sizeof *sb);
  if (sb == NULL) {
    status_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  sb->base.descriptor = desc;
  sb->base.invoke = stub_invoke;
  sb->base.destroy = stub_free;
  sb->c = c;
  *out = &sb->base;
  return STATUS_OK;
}

void rpc_stub_destroy(ProtobufCService *stub) {
  if (stub != NULL) stub->destroy(stub);
}

/* ---- lifecycle ------------------------------------------------------------------ */

void rpc_client_opts_from_cfg(rpc_client_opts *o, const shop_cfg *cfg, const char *url,
                              const char *caller) {
  memset(o, 0, sizeof *o);
  o->url = url;
  o->caller = caller;
  o->max_message_bytes = cfg->rpc.max_message_bytes;
  o->default_timeout_ms = cfg->rpc.default_timeout_ms;
  o->max_timeout_ms = cfg->rpc.max_timeout_ms;
  o->retry_max = cfg->rpc.retry_max;
  o->retry_backoff_ms = cfg->rpc.retry_backoff_ms;
}

status_code rpc_client_dial(rpc_client *c, const char *url, char *errbuf, size_t errlen) {
  int rv = nng_dial(c->sock, url, NULL, NNG_FLAG_NONBLOCK);
  if (rv != 0) {
    status_seterr(errbuf, errlen, "rpc: dial %s: %s", url, nng_strerror(rv));
    return rv == NNG_EADDRINVAL || rv == NNG_ENOTSUP || rv == NNG_EINVAL ? STATUS_INVALID_ARGUMENT
                                                                         : STATUS_UNAVAILABLE;
  }
  return STATUS_OK;
}

/* Dials each URL of a comma-separated list (a config endpoint naming
 * several instances of one service); blanks around a URL are ignored. */
static status_code dial_list(rpc_client *c, const char *list, char *errbuf, size_t errlen) {
  const char *p = list;
  do {
    const char *end = strchr(p, ',');
    size_t len = end != NULL ? (size_t)(end - p) : strlen(p);
    while (len > 0 && (*p == ' ' || *p == '\t')) p++, len--;
    while (len > 0 && (p[len - 1] == ' ' || p[len - 1] == '\t')) len--;
    char url[512];
    if (len == 0 || len >= sizeof url) {
      status_seterr(errbuf, errlen, "rpc: bad endpoint list \"%.200s\"", list);
      return STATUS_INVALID_ARGUMENT;
    }
    memcpy(url, p, len);
    url[len] = '\0';
    status_code st = rpc_client_dial(c, url, errbuf, errlen);
    if (st != STATUS_OK) return st;
    p = end != NULL ? end + 1 : NULL;
  } while (p != NULL);
  return STATUS_OK;
}

status_code rpc_client_create(rpc_client **out, const rpc_client_opts *o, char *errbuf,
                              size_t errlen) {
  *out = NULL;
  if (o == NULL || o->max_message_bytes < 1024 || o->default_timeout_ms < 1 ||
      o->max_timeout_ms < 1 || o->retry_max < 0 || o->retry_backoff_ms < 1) {
    status_seterr(errbuf, errlen,
                  "rpc: client options out of range (max_message_bytes >= 1024, timeouts and "
                  "backoff >= 1 ms, retry_max >= 0)");
    return STATUS_INVALID_ARGUMENT;
  }
  rpc_client *c = calloc(1, sizeof *c);
  if (c == NULL) {
    status_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  c->o = *o;
  c->o.url = NULL;
  c->pm = rpc_metrics_create(o->metrics, true);
  pthread_mutex_init(&c->mu, NULL);
  atomic_store(&c->rand, rpc_rand_seed());
  c->caller = strdup(o->caller != NULL ? o->caller : "");
  static const rpc_client_interceptor builtins[] = {
      {"deadline", ic_deadline_cb, NULL},
      {"metadata", ic_metadata_cb, NULL},
      {"retry", ic_retry_cb, NULL},
      {"metrics", ic_metrics_cb, NULL},
  };
  c->ics = malloc(sizeof builtins);
  status_code rc = STATUS_RESOURCE_EXHAUSTED;
  if (c->caller == NULL || c->ics == NULL) {
    status_seterr(errbuf, errlen, "rpc: out of memory");
    goto fail;
  }
  memcpy(c->ics, builtins, sizeof builtins);
  c->n_ics = sizeof builtins / sizeof builtins[0];

  int rv = nng_req0_open(&c->sock);
  if (rv != 0) {
    rc = STATUS_INTERNAL;
    status_seterr(errbuf, errlen, "rpc: opening the REQ socket: %s", nng_strerror(rv));
    goto fail;
  }
  c->sock_open = true;
  int64_t resend =
      o->resend_ms > 0 ? o->resend_ms : (int64_t)o->max_timeout_ms + RPC_RESEND_MARGIN_MS;
  if ((rv = nng_socket_set_size(c->sock, NNG_OPT_RECVMAXSZ, (size_t)o->max_message_bytes)) != 0 ||
      (rv = nng_socket_set_ms(c->sock, NNG_OPT_REQ_RESENDTIME, (nng_duration)resend)) != 0 ||
      (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMINT,
                              o->reconnect_min_ms > 0 ? o->reconnect_min_ms : 10)) != 0 ||
      (rv = nng_socket_set_ms(c->sock, NNG_OPT_RECONNMAXT,
                              o->reconnect_max_ms > 0 ? o->reconnect_max_ms : 1000)) != 0 ||
      (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_ADD_POST, pipe_cb, c)) != 0 ||
      (rv = nng_pipe_notify(c->sock, NNG_PIPE_EV_REM_POST, pipe_cb, c)) != 0) {
    rc = STATUS_INTERNAL;
    status_seterr(errbuf, errlen, "rpc: setting up the REQ socket: %s", nng_strerror(rv));
    goto fail;
  }
  if (o->url != NULL && (rc = dial_list(c, o->url, errbuf, errlen)) != STATUS_OK) goto fail;
  *out = c;
  return STATUS_OK;
fail:
  rpc_client_destroy(c);
  return rc;
}

void rpc_client_destroy(rpc_client *c) {
  if (c == NULL) return;
  /* No call runs (the contract). Closing the socket first lets the pipe
   * callbacks it triggers still find the contexts. */
  if (c->sock_open) nng_close(c->sock);
  cl_ctx *x = atomic_load(&c->all_ctx);
  while (x != NULL) {
    cl_ctx *next = x->next_all;
    nng_aio_free(x->aio);
    free(x);
    x = next;
  }
  free(c->ics);
  free(c->caller);
  rpc_metrics_destroy(c->pm);
  pthread_mutex_destroy(&c->mu);
  free(c);
}

void rpc_client_stats_get(const rpc_client *c, rpc_client_stats *out) {
  rpc_client *m = (rpc_client *)c;
  memset(out, 0, sizeof *out);
  out->calls = atomic_load(&m->st_calls);
  out->attempts = atomic_load(&m->st_attempts);
  out->retries = atomic_load(&m->st_retries);
  for (int i = 0; i < 17; i++) out->by_code[i] = atomic_load(&m->st_by_code[i]);
}

/* ---- Prometheus labels ---------------------------------------------------------- */

/* "/pkg.Service/Method" -> service and method; RPC_METRICS_UNKNOWN for a
 * path of another shape. The caller's own code names the methods, so the
 * label set stays as small as its call sites. */
static void client_metrics_labels(const char *path, char *svc, size_t svc_len, char *method,
                                  size_t method_len) {
  const char *sp, *mp;
  size_t sn, mn;
  if (path == NULL || !rpc_method_path_split(path, &sp, &sn, &mp, &mn) || sn >= svc_len ||
      mn >= method_len) {
    snprintf(svc, svc_len, "%s", RPC_METRICS_UNKNOWN);
    snprintf(method, method_len, "%s", RPC_METRICS_UNKNOWN);
    return;
  }
  rpc_strlcpy(svc, svc_len, sp, sn);
  rpc_strlcpy(method, method_len, mp, mn);
}
