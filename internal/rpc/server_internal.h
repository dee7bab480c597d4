/*
 * The RPC server's state, shared by its three files: server.c (services,
 * lifecycle, signals, metric labels), server_call.c (the rpc_call
 * accessors, dispatch and the built-in interceptors) and server_io.c (one
 * frame to its reply, the receivers and the worker threads). Not part of
 * the module's contract (that is rpc.h); nothing outside internal/rpc
 * includes this file.
 */
#ifndef SHOP_RPC_SERVER_INTERNAL_H
#define SHOP_RPC_SERVER_INTERNAL_H

#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "grpc/health/v1/health.pb-c.h"
#include "log/log.h"
#include "rpc/rpc_internal.h"

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
  /* The caller's traceparent, or a trace this server started for a call
   * that came without a valid one (README: "sent by the caller, or
   * started by the server"). */
  char traceparent[LOG_TRACEPARENT_SIZE];
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

/* ---- server.c ----------------------------------------------------------------- */

/* Counts a reply by code in the server's stats. */
void rpc_server_count_reply(rpc_server *s, status_code code);
/* The registered service of that name (n bytes), or NULL. */
const rpc_service_entry *rpc_server_find_service(const rpc_server *s, const char *name, size_t n);
/* The Prometheus labels of a method path (see server.c). */
void rpc_server_metrics_labels(const rpc_server *s, const char *path, size_t len,
                               const char **service, const char **method);
/* A reply sent without running the chain: started and handled at once. */
void rpc_server_metrics_reject(rpc_server *s, const rpc_str *method, status_code code);

/* ---- server_call.c: the built-in interceptors, in the order they run ---------- */

void rpc_server_ic_logging_cb(rpc_call *c, void *arg);
void rpc_server_ic_metrics_cb(rpc_call *c, void *arg);
void rpc_server_ic_deadline_cb(rpc_call *c, void *arg);
void rpc_server_ic_auth_cb(rpc_call *c, void *arg);
void rpc_server_ic_recover_cb(rpc_call *c, void *arg);

/* ---- server_io.c: receivers and workers --------------------------------------- */

/* Arms the slot's receive, unless the server is stopping. */
void rpc_slot_recv(rpc_slot *sl);
/* The slot's aio callback (NNG's threads). */
void rpc_slot_cb(void *arg);
/* A worker thread's body; arg is its rpc_worker. */
void *rpc_worker_main(void *arg);

#endif
