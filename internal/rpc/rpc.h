/*
 * rpc: gRPC-style calls over NNG REQ/REP, with protoc-c's service
 * descriptors as the only method tables.
 *
 * Wire: one REQ/REP exchange per call. The request frame is a packed
 * shop.rpc.v1.RequestEnvelope, the reply a packed ResponseEnvelope (see
 * proto/shop/rpc/v1/rpc.proto). Status codes are Shop's status_code, which
 * are the gRPC canonical numbers.
 *
 * Server. rpc_server_create() opens a REP socket; rpc_server_register() adds
 * a protoc-c service (`static X_Service svc = X__INIT(prefix_)`) with its
 * per-method policy; rpc_server_listen() and rpc_server_start() put it on
 * the wire. A pool of nng_ctx + nng_aio receivers hands each request to a
 * bounded queue served by `workers` threads of ours: handlers never run in
 * NNG's callbacks and may block. A handler has the generated signature
 *   void h(X_Service *svc, const Req *in, Resp_Closure closure, void *closure_data)
 * where closure_data is the rpc_call (the per-call context below). It
 * either calls closure(&reply, closure_data) once (the layer packs the
 * reply before the closure returns, so the reply may live on the stack), or
 * sets a non-OK status with rpc_call_set_status() and returns (calling
 * closure(NULL, closure_data) as well is fine).
 *
 * The layer answers for itself:
 *   undecodable envelope          INVALID_ARGUMENT (no request id)
 *   unknown method                UNIMPLEMENTED
 *   undecodable payload           INVALID_ARGUMENT
 *   command without a key         INVALID_ARGUMENT, violation "idempotency_key"
 *   spent budget                  DEADLINE_EXCEEDED (on receipt and again when
 *                                 a worker picks the call up)
 *   missing or bad token          UNAUTHENTICATED
 *   role not allowed              PERMISSION_DENIED
 *   queue full                    RESOURCE_EXHAUSTED, with retry info
 *   draining or stopped           UNAVAILABLE (health checks still answer)
 *   handler left no reply         INTERNAL "handler returned no reply"
 *   handler set an invalid code   INTERNAL
 *   reply over max_message_bytes  RESOURCE_EXHAUSTED
 * Every server also serves /grpc.health.v1.Health/Check (SERVING;
 * NOT_SERVING while draining; NOT_FOUND for a service it does not serve;
 * Watch is UNIMPLEMENTED) and /shop.rpc.v1.ServerReflectionService/
 * GetDescriptorSet (Shop's compiled FileDescriptorSet plus the full names of
 * the services served). Both are public.
 *
 * Tracing: while a call runs (interceptors and handler), it is its
 * thread's current log scope (log.h): request_id and the envelope's
 * traceparent. A client call sends a child of the parent call's
 * traceparent, or else of the current scope's (same trace id, new span
 * id), or else starts a new trace.
 *
 * Server interceptor chain, outermost first: logging, metrics, deadline,
 * authentication, recover, then the interceptors added with
 * rpc_server_add_interceptor(), then dispatch (command key check, payload
 * decode, handler). Logging and metrics come first so that they see every
 * outcome, rejections included; recover sits right around the handler so
 * that the INTERNAL it substitutes is what logging and metrics record. C
 * cannot catch a crash: "recover" means that a handler that leaves no reply
 * or an invalid status is answered with INTERNAL and logged.
 *
 * Client. rpc_client_create() dials a REQ socket (several URLs may be
 * dialled; NNG spreads requests over the connected servers). rpc_stub_create()
 * gives a ProtobufCService for a service descriptor, so the generated
 *   shop__x__v1__y_service__method(stub, &req, closure, &call_data)
 * functions are the client; closure_data is an rpc_client_call carrying the
 * per-call options in and the status out. rpc_client_call_sync() and
 * rpc_client_call_raw() are synchronous helpers. Client chain: deadline,
 * metadata, retry, metrics, then the added interceptors, then the transport.
 * Retries happen on UNAVAILABLE only, with jittered exponential backoff,
 * never past the deadline; the attempt number travels in the envelope.
 * NNG's own resend (NNG_OPT_REQ_RESENDTIME) is set past max_timeout_ms. With
 * no server connected a call fails at once with UNAVAILABLE (the client
 * watches its pipes); calls in flight when the last pipe drops fail with
 * UNAVAILABLE too. A request frame over max_message_bytes is refused with
 * RESOURCE_EXHAUSTED before it is sent.
 *
 * Idempotency. Commands (every method of a *CommandService) must carry an
 * idempotency key; the layer refuses a command without one. What the key
 * means (one stored reply per key, scoped to the caller and the method,
 * kept in the command's own transaction) is internal/command's: the
 * transport knows no database.
 *
 * Threads: rpc_server_* set-up calls (register, add_interceptor, listen,
 * start) come from one thread before rpc_server_start(); afterwards
 * rpc_server_drain(), rpc_server_stats_get(), rpc_server_draining() and
 * rpc_server_handle_frame() are thread-safe. An rpc_call belongs to the
 * thread running its handler and dies when the handler returns. An
 * rpc_client and its stubs are thread-safe: any number of threads may call
 * at once (each call blocks its thread; calls run concurrently).
 */
#ifndef SHOP_RPC_H
#define SHOP_RPC_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "auth/auth.h"
#include "config/config.h"
#include "metrics/metrics.h"
#include "status/status.h"

/* ---- Status with details ------------------------------------------------ */

#define RPC_MESSAGE_MAX 512
#define RPC_MAX_VIOLATIONS 8
#define RPC_FIELD_MAX 128
#define RPC_DESCRIPTION_MAX 256
/* NNG's own resend is set this far past max_timeout_ms. */
#define RPC_RESEND_MARGIN_MS 5000
/* Largest idempotency key accepted; longer ones are INVALID_ARGUMENT. */
#define RPC_IDEMPOTENCY_KEY_MAX 128

typedef struct rpc_field_violation {
  char field[RPC_FIELD_MAX];
  char description[RPC_DESCRIPTION_MAX];
} rpc_field_violation;

/* A status as it crosses the wire (google.rpc.Status with BadRequest field
 * violations and RetryInfo). Plain data, caller-owned; texts are truncated
 * to fit. */
typedef struct rpc_status {
  status_code code;
  char message[RPC_MESSAGE_MAX];
  size_t n_violations;
  rpc_field_violation violations[RPC_MAX_VIOLATIONS];
  int64_t retry_delay_ms; /* -1: no RetryInfo */
  /* A query's FAILED_PRECONDITION for a consistency token it could not
   * reach: the aggregate and the version the projection has ("" and 0:
   * none). */
  char projection_id[RPC_FIELD_MAX];
  int64_t projection_version;
} rpc_status;

/* Sets OK, no message, no details. */
void rpc_status_clear(rpc_status *st);

/* Parses "/package.Service/Method" into its service ("package.Service") and
 * method ("Method") parts, borrowed from path as pointer and length. False
 * if the path is not of that form. */
bool rpc_method_path_split(const char *path, const char **svc, size_t *svc_len, const char **method,
                           size_t *method_len);

/* ---- Per-call context on the server -------------------------------------- */

typedef struct rpc_call rpc_call;

/* Access policy of a method. The zero value is RPC_AUTHENTICATED, so a
 * forgotten policy is never public. RPC_COMMAND may be or-ed onto any;
 * every method of a service named *CommandService gets it at
 * registration, whatever its row says (rpc_service_is_command). */
enum {
  RPC_AUTHENTICATED = 0, /* a valid token is required */
  RPC_PUBLIC = 1,        /* no token needed; a valid token still sets the identity,
                            a bad one is ignored (the caller is anonymous) */
  RPC_ADMIN = 2,         /* a valid token with role admin */
  RPC_ACCESS_MASK = 3,
  RPC_COMMAND = 0x10, /* an idempotency key is required */
};

/* What the request said, borrowed from the call (valid until the handler
 * returns). Strings are never NULL: "" when absent. */
const char *rpc_call_method(const rpc_call *c); /* "/package.Service/Method" */
const char *rpc_call_request_id(const rpc_call *c);
const char *rpc_call_traceparent(const rpc_call *c);
const char *rpc_call_trace_id(const rpc_call *c); /* 32 hex digits or "" */
const char *rpc_call_idempotency_key(const rpc_call *c);
const char *rpc_call_caller(const rpc_call *c);
int rpc_call_attempt(const rpc_call *c);
/* The metadata value for key, or NULL. */
const char *rpc_call_metadata(const rpc_call *c, const char *key);
/* The typed request's bytes as received. */
const void *rpc_call_payload(const rpc_call *c, size_t *len);
/* The server's token keys (NULL when it has none), for the command
 * layer's keyed request digest (internal/command). */
const auth_keys *rpc_call_auth_keys(const rpc_call *c);
/* The message of the call's current status. */
const char *rpc_call_status_message(const rpc_call *c);
/* Puts a stored reply (the packed response) and its status on the call,
 * as the handler's own answer: the command layer's replay of a repeated
 * request. */
void rpc_call_put_stored_reply(rpc_call *c, status_code code, const char *message,
                               const void *reply, size_t len);
/* The policy flags of the method (RPC_PUBLIC ... | RPC_COMMAND). */
unsigned rpc_call_policy(const rpc_call *c);
/* The ctx given with the service at registration. */
void *rpc_call_service_ctx(const rpc_call *c);

/* Identity set by the authentication interceptor: "" and AUTH_ROLE_NONE
 * for an anonymous caller. */
const char *rpc_call_user_id(const rpc_call *c);
auth_role rpc_call_role(const rpc_call *c);
bool rpc_call_authenticated(const rpc_call *c);

/* Deadline on CLOCK_MONOTONIC in milliseconds, and what is left of it
 * (<= 0 when spent). */
int64_t rpc_call_deadline_ms(const rpc_call *c);
int64_t rpc_call_remaining_ms(const rpc_call *c);
/* True once the deadline is spent or the server gave up on the call (the
 * drain grace period ran out): a handler that loops or waits should stop. */
bool rpc_call_cancelled(const rpc_call *c);

/* Sets the status to return (message printf-style; NULL fmt uses the
 * code's default text). Setting a non-OK status means the reply payload is
 * dropped. */
void rpc_call_set_status(rpc_call *c, status_code code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds a field violation (google.rpc.BadRequest); past RPC_MAX_VIOLATIONS
 * they are dropped. */
void rpc_call_add_field_violation(rpc_call *c, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* Adds RetryInfo: the client may retry after ms. */
void rpc_call_set_retry_delay(rpc_call *c, int64_t ms);
/* Names the version a projection has reached for an aggregate (Status.
 * projection), with a query's FAILED_PRECONDITION for a consistency token
 * it did not reach in time. */
void rpc_call_set_projection(rpc_call *c, const char *aggregate_id, int64_t version);
status_code rpc_call_status(const rpc_call *c);
/* True once the handler called its closure with a reply (or the
 * idempotency layer put a stored reply on the call). */
bool rpc_call_replied(const rpc_call *c);

/* ---- Server ----------------------------------------------------------------- */

typedef struct rpc_server rpc_server;

typedef struct rpc_server_opts {
  const char *name;          /* program name, for logs (copied) */
  int workers;               /* handler threads: the most calls running at once */
  int queue_size;            /* calls waiting for a worker before RESOURCE_EXHAUSTED */
  int max_message_bytes;     /* NNG_OPT_RECVMAXSZ, and the largest reply */
  int default_timeout_ms;    /* budget of a request that names none */
  int max_timeout_ms;        /* larger budgets are cut to this */
  int drain_grace_ms;        /* rpc_server_run_until_signal's grace period */
  const auth_keys *auth;     /* borrowed, must outlive the server; NULL: no
                                token verifies, so only public methods work */
  metrics_registry *metrics; /* borrowed, must outlive the server; NULL: none.
                                The grpc_server_* metrics of go-grpc-prometheus
                                (names, labels, grpc_code "OK", "InvalidArgument",
                                ...): every reply is counted, the layer's own
                                rejections included; a method or service not
                                served is labelled "unknown". */
} rpc_server_opts;

/* Fills opts from cfg->rpc (auth stays NULL: the caller creates the keys). */
void rpc_server_opts_from_cfg(rpc_server_opts *opts, const shop_cfg *cfg, const char *name);

/* One row of a service's policy table: the method's short name ("Echo") and
 * its flags. */
typedef struct rpc_method_policy {
  const char *method;
  unsigned flags;
} rpc_method_policy;

/* True for a service whose name ends in "CommandService": all its methods
 * are commands (RPC_COMMAND). */
bool rpc_service_is_command(const ProtobufCServiceDescriptor *d);
/* The same from a service's name, full ("shop.user.v1.UserCommandService")
 * or short. */
bool rpc_service_name_is_command(const char *name);

typedef struct rpc_service_opts {
  unsigned default_policy;           /* for methods not in the table */
  const rpc_method_policy *policies; /* borrowed, must outlive the server */
  size_t n_policies;
  void *ctx; /* handed to handlers: rpc_call_service_ctx */
} rpc_service_opts;

/* A server interceptor runs around the rest of the chain: it calls
 * rpc_call_proceed(call) to go on, or sets a status and returns to stop. */
typedef void (*rpc_server_interceptor_cb)(rpc_call *call, void *arg);
typedef struct rpc_server_interceptor {
  const char *name;
  rpc_server_interceptor_cb fn;
  void *arg;
} rpc_server_interceptor;

/* Runs the next interceptor, or the handler. Call at most once. */
void rpc_call_proceed(rpc_call *call);

typedef struct rpc_server_stats {
  uint64_t calls;               /* replies sent (all codes) */
  uint64_t by_code[17];         /* replies by status code */
  uint64_t rejected_queue_full; /* RESOURCE_EXHAUSTED because the queue was full */
  uint64_t running;             /* handlers running now */
  uint64_t peak_running;        /* most handlers ever running at once */
  uint64_t queued;              /* calls waiting for a worker now */
} rpc_server_stats;

/* Opens the REP socket (no listener yet). On success *out owns the server.
 * Errors: INVALID_ARGUMENT (bad opts), INTERNAL/RESOURCE_EXHAUSTED (NNG). */
status_code rpc_server_create(rpc_server **out, const rpc_server_opts *opts, char *errbuf,
                              size_t errlen);

/* Drains nothing: closes the socket, waits for running handlers to return,
 * stops the workers and frees the server. NULL is fine. Call
 * rpc_server_drain() first for a graceful stop. */
void rpc_server_destroy(rpc_server *s);

/* Adds a service. svc is borrowed and must outlive the server; opts may be
 * NULL (every method RPC_AUTHENTICATED). A policy row naming a method the
 * service does not have, or a second service of the same name, is
 * INVALID_ARGUMENT. Before rpc_server_start() only. */
status_code rpc_server_register(rpc_server *s, ProtobufCService *svc, const rpc_service_opts *opts,
                                char *errbuf, size_t errlen);

/* Appends an interceptor (copied) to the chain, inside the built-in ones.
 * Before rpc_server_start() only. */
status_code rpc_server_add_interceptor(rpc_server *s, const rpc_server_interceptor *ic,
                                       char *errbuf, size_t errlen);

/* Listens on url ("tcp://127.0.0.1:0" picks a free port; see
 * rpc_server_port()). May be called several times. Errors: UNAVAILABLE
 * (address in use), INVALID_ARGUMENT (bad url). */
status_code rpc_server_listen(rpc_server *s, const char *url, char *errbuf, size_t errlen);

/* The TCP port of the latest tcp:// listener, 0 if none. */
int rpc_server_port(const rpc_server *s);

/* Starts the workers and the receivers. */
status_code rpc_server_start(rpc_server *s, char *errbuf, size_t errlen);

/* Health turns NOT_SERVING and new calls are answered UNAVAILABLE; waits up
 * to grace_ms for queued and running calls to finish. OK when they all
 * did; DEADLINE_EXCEEDED when some were still running (they are marked
 * cancelled: rpc_call_cancelled() turns true). Thread-safe; idempotent. */
status_code rpc_server_drain(rpc_server *s, int grace_ms);
bool rpc_server_draining(const rpc_server *s);

void rpc_server_stats_get(const rpc_server *s, rpc_server_stats *out);

/* Processes one request frame on the calling thread, without a socket:
 * decode, interceptors, handler, encode, exactly as a worker does. On
 * success *reply holds the packed ResponseEnvelope (free() it). Returns
 * RESOURCE_EXHAUSTED only when memory runs out. For tests and the fuzzer;
 * works whether or not the server was started. Thread-safe. */
status_code rpc_server_handle_frame(rpc_server *s, const void *frame, size_t len, uint8_t **reply,
                                    size_t *reply_len);

/* Blocks SIGTERM and SIGINT in the calling thread, so that every thread
 * created afterwards (NNG's and ours) inherits the mask. Call first thing
 * in main(), before anything starts a thread, when using
 * rpc_server_run_until_signal(). */
void rpc_signals_block(void);

/* Waits for SIGTERM or SIGINT (blocked with rpc_signals_block()), then
 * drains for opts.drain_grace_ms. Returns what rpc_server_drain()
 * returned; the caller then destroys the server and exits 0. */
status_code rpc_server_run_until_signal(rpc_server *s);

/* ---- Client ----------------------------------------------------------------- */

typedef struct rpc_client rpc_client;

typedef struct rpc_client_opts {
  const char *url;           /* dialled at creation; NULL: dial later. A comma-
                                separated list dials every instance named
                                ("tcp://h:1,tcp://h:2"): NNG spreads the calls
                                over the connected ones */
  const char *caller;        /* program name put in envelopes (copied) */
  int max_message_bytes;     /* largest request frame; also NNG_OPT_RECVMAXSZ */
  int default_timeout_ms;    /* budget of a call that names none */
  int max_timeout_ms;        /* the longest budget; NNG resends only past it */
  int retry_max;             /* retries on UNAVAILABLE after the first attempt */
  int retry_backoff_ms;      /* first backoff; doubles per retry, jittered */
  int resend_ms;             /* 0: max_timeout_ms + RPC_RESEND_MARGIN_MS (tests
                                shorten it to provoke NNG resends) */
  int reconnect_min_ms;      /* 0: 10 ms */
  int reconnect_max_ms;      /* 0: 1000 ms */
  metrics_registry *metrics; /* borrowed, must outlive the client; NULL: none.
                                grpc_client_started_total, _handled_total,
                                _msg_sent_total, _msg_received_total and
                                _handling_seconds, per call (retries
                                included), as go-grpc-prometheus names them */
} rpc_client_opts;

/* Fills opts from cfg->rpc with url and caller (both borrowed). */
void rpc_client_opts_from_cfg(rpc_client_opts *opts, const shop_cfg *cfg, const char *url,
                              const char *caller);

/* Opens the REQ socket and dials opts->url without waiting for the
 * server (NNG keeps redialling). A call made before the first connection
 * is up fails UNAVAILABLE and is retried like any other (retry_max);
 * rpc_client_wait_connected() waits for it instead. On success *out owns
 * the client. */
status_code rpc_client_create(rpc_client **out, const rpc_client_opts *opts, char *errbuf,
                              size_t errlen);

/* Closes the socket and frees the client; no call may be running. NULL is
 * fine. Stubs must be destroyed first. */
void rpc_client_destroy(rpc_client *c);

/* Dials one more server instance (non-blocking). */
status_code rpc_client_dial(rpc_client *c, const char *url, char *errbuf, size_t errlen);

/* Connected servers now. */
int rpc_client_pipes(const rpc_client *c);

/* Waits up to timeout_ms for at least one connection. */
bool rpc_client_wait_connected(rpc_client *c, int timeout_ms);

/* Per-call options. Everything is borrowed for the duration of the call;
 * zero/NULL means "default". */
typedef struct rpc_call_opts {
  int64_t timeout_ms;          /* 0: the client's default; cut to max_timeout_ms */
  const char *token;           /* bearer token; NULL: the parent's, if any */
  const char *idempotency_key; /* required by commands */
  const char *request_id;      /* NULL: a fresh one */
  const char *const *metadata; /* n_metadata pairs {key, value, ...} */
  size_t n_metadata;
  const rpc_call *parent; /* a handler calling on: its remaining budget
                             caps the timeout, its trace and token
                             travel on. NULL: the trace is the thread's
                             current log scope's (log.h), if any */
  bool no_retry;          /* one attempt only */
} rpc_call_opts;

/* closure_data of a call made through a stub. The stub fills status before
 * it runs the closure, on the calling thread, before the generated method
 * function returns. The closure's message is NULL unless status.code is OK;
 * it is borrowed and freed after the closure returns. */
typedef struct rpc_client_call {
  const rpc_call_opts *opts; /* in; may be NULL */
  void *user;                /* in: anything the closure needs */
  rpc_status status;         /* out */
} rpc_client_call;

/* A ProtobufCService whose invoke calls over this client. The generated
 * functions for desc take it as their service argument; their closure_data
 * must be an rpc_client_call. The stub borrows the client. */
status_code rpc_stub_create(ProtobufCService **out, rpc_client *c,
                            const ProtobufCServiceDescriptor *desc, char *errbuf, size_t errlen);
void rpc_stub_destroy(ProtobufCService *stub);

/* Calls method (short name, "Echo") of the service and waits. On OK *out
 * owns the reply (free with protobuf_c_message_free_unpacked(*out, NULL));
 * otherwise *out is NULL. out may be NULL when the reply is not wanted.
 * Returns st->code; st may be NULL. */
status_code rpc_client_call_sync(rpc_client *c, const ProtobufCServiceDescriptor *desc,
                                 const char *method, const ProtobufCMessage *in,
                                 ProtobufCMessage **out, const rpc_call_opts *opts, rpc_status *st);

/* Calls method_path ("/package.Service/Method") with the request's bytes.
 * On OK *resp owns the reply's bytes (free()); otherwise NULL. For generic
 * clients (shopctl) and tests. st may be NULL. */
status_code rpc_client_call_raw(rpc_client *c, const char *method_path, const void *req,
                                size_t req_len, uint8_t **resp, size_t *resp_len,
                                const rpc_call_opts *opts, rpc_status *st);

/* Client interceptors run around the rest of the chain; one calls
 * rpc_client_req_proceed() (possibly several times, as retry does) and
 * returns its status, or returns a status without proceeding. */
typedef struct rpc_client_req rpc_client_req;
typedef status_code (*rpc_client_interceptor_cb)(rpc_client_req *req, void *arg);
typedef struct rpc_client_interceptor {
  const char *name;
  rpc_client_interceptor_cb fn;
  void *arg;
} rpc_client_interceptor;

status_code rpc_client_req_proceed(rpc_client_req *req);
const char *rpc_client_req_method(const rpc_client_req *req);
int rpc_client_req_attempt(const rpc_client_req *req);
const rpc_status *rpc_client_req_status(const rpc_client_req *req);

/* Appends an interceptor (copied) inside the built-in ones. Before the
 * first call only. */
status_code rpc_client_add_interceptor(rpc_client *c, const rpc_client_interceptor *ic,
                                       char *errbuf, size_t errlen);

typedef struct rpc_client_stats {
  uint64_t calls;       /* calls made */
  uint64_t attempts;    /* attempts sent or tried (>= calls) */
  uint64_t retries;     /* attempts after the first */
  uint64_t by_code[17]; /* final outcome of calls by status code */
} rpc_client_stats;
void rpc_client_stats_get(const rpc_client *c, rpc_client_stats *out);

#endif
