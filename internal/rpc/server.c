/* The RPC server: a REP socket, a pool of nng_ctx receivers, a bounded queue
 * and worker threads of ours that run the interceptor chain and the
 * handlers. This file holds the built-in services, the lifecycle, signals
 * and metric labels; server_call.c the calls and interceptors; server_io.c
 * the frames, receivers and workers. */
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

#include "log/log.h"
#include "rpc/server_internal.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

void rpc_server_count_reply(rpc_server *s, status_code code) {
  atomic_fetch_add_explicit(&s->st_calls, 1, memory_order_relaxed);
  int i = status_is_valid(code) ? (int)code : STATUS_UNKNOWN;
  atomic_fetch_add_explicit(&s->st_by_code[i], 1, memory_order_relaxed);
}

const rpc_service_entry *rpc_server_find_service(const rpc_server *s, const char *name, size_t n) {
  for (size_t i = 0; i < s->n_svcs; i++) {
    const char *sn = s->svcs[i].svc->descriptor->name;
    if (strlen(sn) == n && memcmp(sn, name, n) == 0) return &s->svcs[i];
  }
  return NULL;
}

/* ---- built-in services ---------------------------------------------------------- */

static void health_check(Grpc__Health__V1__Health_Service *svc,
                         const Grpc__Health__V1__HealthCheckRequest *in,
                         Grpc__Health__V1__HealthCheckResponse_Closure closure, void *data) {
  rpc_call *c = data;
  rpc_server *s = rpc_call_service_ctx(c);
  if (in->service[0] != '\0' &&
      rpc_server_find_service(s, in->service, strlen(in->service)) == NULL) {
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

bool rpc_service_name_is_command(const char *name) {
  static const char suffix[] = "CommandService";
  size_t n = strlen(name), k = sizeof suffix - 1;
  return n >= k && strcmp(name + n - k, suffix) == 0;
}

bool rpc_service_is_command(const ProtobufCServiceDescriptor *d) {
  return rpc_service_name_is_command(d->name);
}

static status_code register_entry(rpc_server *s, ProtobufCService *svc, const rpc_service_opts *o,
                                  char *errbuf, size_t errlen) {
  const ProtobufCServiceDescriptor *d = svc != NULL ? svc->descriptor : NULL;
  if (d == NULL || d->magic != PROTOBUF_C__SERVICE_DESCRIPTOR_MAGIC) {
    status_seterr(errbuf, errlen, "rpc: not a protoc-c service");
    return STATUS_INVALID_ARGUMENT;
  }
  if (rpc_server_find_service(s, d->name, strlen(d->name)) != NULL) {
    status_seterr(errbuf, errlen, "rpc: service %s registered twice", d->name);
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
      status_seterr(errbuf, errlen, "rpc: policy names method %s, which %s does not have",
                    o->policies[i].method ? o->policies[i].method : "(null)", d->name);
      free(pol);
      return STATUS_INVALID_ARGUMENT;
    }
    pol[m - d->methods] = o->policies[i].flags;
  }
  /* Every method of a <Domain>CommandService is a command (proto/README.md):
   * the name says so, so no policy row has to. */
  if (rpc_service_is_command(d))
    for (unsigned i = 0; i < d->n_methods; i++) pol[i] |= RPC_COMMAND;
  rpc_service_entry *n = realloc(s->svcs, (s->n_svcs + 1) * sizeof *n);
  if (n == NULL) goto oom;
  s->svcs = n;
  s->svcs[s->n_svcs++] = (rpc_service_entry){.svc = svc, .policy = pol, .ctx = o ? o->ctx : NULL};
  return STATUS_OK;
oom:
  free(pol);
  status_seterr(errbuf, errlen, "rpc: out of memory");
  return STATUS_RESOURCE_EXHAUSTED;
}

status_code rpc_server_register(rpc_server *s, ProtobufCService *svc, const rpc_service_opts *o,
                                char *errbuf, size_t errlen) {
  if (s->started) {
    status_seterr(errbuf, errlen, "rpc: register services before rpc_server_start");
    return STATUS_FAILED_PRECONDITION;
  }
  return register_entry(s, svc, o, errbuf, errlen);
}

status_code rpc_server_add_interceptor(rpc_server *s, const rpc_server_interceptor *ic,
                                       char *errbuf, size_t errlen) {
  if (s->started || ic == NULL || ic->fn == NULL) {
    status_seterr(errbuf, errlen,
                  "rpc: add interceptors (with a function) before rpc_server_start");
    return STATUS_FAILED_PRECONDITION;
  }
  rpc_server_interceptor *n = realloc(s->ics, (s->n_ics + 1) * sizeof *n);
  if (n == NULL) {
    status_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  s->ics = n;
  s->ics[s->n_ics++] = *ic;
  return STATUS_OK;
}

static bool opts_valid(const rpc_server_opts *o, char *errbuf, size_t errlen) {
  if (o->workers < 1 || o->queue_size < 1 || o->max_message_bytes < 1024 ||
      o->default_timeout_ms < 1 || o->max_timeout_ms < 1 || o->drain_grace_ms < 0) {
    status_seterr(errbuf, errlen,
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
    status_seterr(errbuf, errlen, "rpc: out of memory");
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
      {"logging", rpc_server_ic_logging_cb, NULL},
      {"metrics", rpc_server_ic_metrics_cb, NULL},
      {"deadline", rpc_server_ic_deadline_cb, NULL},
      {"authentication", rpc_server_ic_auth_cb, NULL},
      {"recover", rpc_server_ic_recover_cb, NULL},
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
    status_seterr(errbuf, errlen, "rpc: opening the REP socket: %s", nng_strerror(rv));
    goto fail;
  }
  s->sock_open = true;
  if ((rv = nng_socket_set_size(s->sock, NNG_OPT_RECVMAXSZ, (size_t)o->max_message_bytes)) != 0) {
    rc = map_nng(rv);
    status_seterr(errbuf, errlen, "rpc: setting recv-size-max: %s", nng_strerror(rv));
    goto fail;
  }
  *out = s;
  return STATUS_OK;
fail:
  if (rc == STATUS_RESOURCE_EXHAUSTED) status_seterr(errbuf, errlen, "rpc: out of memory");
  rpc_server_destroy(s);
  return rc;
}

status_code rpc_server_listen(rpc_server *s, const char *url, char *errbuf, size_t errlen) {
  nng_listener l;
  int rv = nng_listen(s->sock, url, &l, 0);
  if (rv != 0) {
    status_seterr(errbuf, errlen, "rpc: listen on %s: %s", url, nng_strerror(rv));
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
    status_seterr(errbuf, errlen, "rpc: server already started");
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
    status_seterr(errbuf, errlen, "rpc: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  s->started = true; /* from here rpc_server_destroy undoes what follows */
  for (size_t i = 0; i < n; i++) {
    rpc_slot *sl = &s->slots[i];
    sl->srv = s;
    int rv = nng_aio_alloc(&sl->aio, rpc_slot_cb, sl);
    if (rv == 0) {
      rv = nng_ctx_open(&sl->ctx, s->sock);
      sl->ctx_open = rv == 0;
    }
    if (rv != 0) {
      status_seterr(errbuf, errlen, "rpc: opening receiver %zu: %s", i, nng_strerror(rv));
      s->n_slots = i + 1;
      return map_nng(rv);
    }
  }
  s->n_slots = n;
  for (int i = 0; i < s->o.workers; i++) {
    rpc_worker *w = &s->workers[i];
    w->srv = s;
    pthread_cond_init(&w->cv, NULL);
    if (pthread_create(&w->thread, NULL, rpc_worker_main, w) != 0) {
      pthread_cond_destroy(&w->cv);
      status_seterr(errbuf, errlen, "rpc: cannot start worker thread %d", i);
      return STATUS_RESOURCE_EXHAUSTED;
    }
    s->n_workers++;
  }
  for (size_t i = 0; i < n; i++) rpc_slot_recv(&s->slots[i]);
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
void rpc_server_metrics_labels(const rpc_server *s, const char *path, size_t len,
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
  const rpc_service_entry *e = rpc_server_find_service(s, sp, sn);
  if (e == NULL) return;
  *service = e->svc->descriptor->name;
  const ProtobufCMethodDescriptor *m =
      protobuf_c_service_descriptor_get_method_by_name(e->svc->descriptor, mp);
  if (m != NULL) *method = m->name;
}

/* A reply the layer sent without running the chain (undecodable
 * envelope, draining, spent budget, full queue): started and handled at
 * once. */
void rpc_server_metrics_reject(rpc_server *s, const rpc_str *method, status_code code) {
  if (s->pm == NULL) return;
  const char *svc, *m;
  rpc_server_metrics_labels(s, method != NULL ? method->p : NULL, method != NULL ? method->n : 0,
                            &svc, &m);
  rpc_metrics_started(s->pm, svc, m);
  rpc_metrics_handled(s->pm, svc, m, code, 0);
}
