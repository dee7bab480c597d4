/* The RPC server's frames and threads: one request frame to its reply,
 * the nng_ctx receivers and the worker threads (server_internal.h). */
#include <nng/nng.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log/log.h"
#include "rpc/server_internal.h"

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

static void resolve_method(rpc_call *c) {
  const char *sp, *mp;
  size_t sn, mn;
  if (!rpc_method_path_split(c->env->method, &sp, &sn, &mp, &mn)) return;
  const rpc_service_entry *e = rpc_server_find_service(c->srv, sp, sn);
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
    rpc_server_count_reply(s, st.code);
    rpc_server_metrics_reject(s, NULL, st.code);
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
  if (log_trace_id(env->traceparent, c.trace_id)) {
    snprintf(c.traceparent, sizeof c.traceparent, "%s", env->traceparent);
  } else {
    log_traceparent_child(NULL, c.traceparent); /* a new trace, sampled */
    log_trace_id(c.traceparent, c.trace_id);
  }
  int64_t budget = env->timeout_ms;
  if (budget == 0) budget = s->o.default_timeout_ms;
  if (budget > s->o.max_timeout_ms) budget = s->o.max_timeout_ms;
  c.deadline_ms = recv_ms + budget;
  resolve_method(&c);

  /* The call is the thread's current log scope while it runs (log.h). */
  log_scope scope;
  log_scope_enter(&scope, env->request_id, c.traceparent, NULL);
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
    rpc_server_count_reply(s, c.st.code);
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
    rpc_server_count_reply(s, st.code);
    rpc_server_metrics_reject(s, NULL, st.code);
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

void rpc_slot_recv(rpc_slot *sl) {
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
    rpc_slot_recv(sl);
    return;
  }
  free(buf);
  rpc_server_count_reply(s, code);
  rpc_server_metrics_reject(s, pk != NULL ? &pk->method : NULL, code);
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

void rpc_slot_cb(void *arg) {
  rpc_slot *sl = arg;
  rpc_server *s = sl->srv;
  int rv = nng_aio_result(sl->aio);
  switch (sl->state) {
  case SLOT_RECV:
    if (rv != 0) {
      if (rv == NNG_ECLOSED || rv == NNG_ECANCELED)
        sl->state = SLOT_IDLE;
      else
        rpc_slot_recv(sl);
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
    rpc_slot_recv(sl);
    return;
  default:
    return;
  }
}

void *rpc_worker_main(void *arg) {
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
      rpc_slot_recv(sl);
      continue;
    }
    /* The socket is still open: destroy joins the workers before it
     * closes the socket. */
    sl->state = SLOT_SEND_REPLY;
    nng_aio_set_msg(sl->aio, o.msg);
    nng_ctx_send(sl->ctx, sl->aio);
  }
}
