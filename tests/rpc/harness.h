/*
 * Test harness for the rpc tests: an in-process EchoService server whose
 * handlers the tests steer through th_ctx, plus client helpers.
 *
 * Echo's message selects a behaviour:
 *   ""            INVALID_ARGUMENT with a violation on "message"
 *   "no-reply"    returns without calling the closure
 *   "bad-status"  sets status code 99 and returns
 *   "wrong-type"  replies with a SleepResponse
 *   "big:N"       replies with an N-byte blob
 *   "forward"     calls the downstream server's Echo("hello") as a child call
 *   anything else is echoed with the caller's identity
 * Sleep blocks until th_release() when ctx.block is set (counting the
 * handlers running at once), else sleeps duration_ms within its deadline.
 * Command counts executions, idempotently through the database when
 * ctx.db is set.
 */
#ifndef SHOP_TESTS_RPC_HARNESS_H
#define SHOP_TESTS_RPC_HARNESS_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>

#include "auth/auth.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "shop/testing/v1/echo.pb-c.h"
#include "support/wait.h"

#define TH_KEY "shop-test-signing-key-0123456789abcdef"
#define TH_ISSUER "shop-test"

typedef struct th_ctx {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool block; /* Sleep blocks until released */
  bool released;
  int running; /* Sleep handlers running now */
  int peak;    /* most Sleep handlers running at once */
  _Atomic int echo_calls;
  _Atomic int sleep_calls;
  _Atomic int command_runs; /* Command handler invocations */
  _Atomic int last_attempt;
  _Atomic long long last_remaining_ms;
  char last_trace[33];
  char last_traceparent[64];  /* rpc_call_traceparent of the last Echo */
  char scope_traceparent[64]; /* log_current_traceparent inside it */
  char last_metadata[64];
  rpc_client *downstream; /* for "forward" */
  db_pool *db;            /* Command's database, or NULL */
  int command_delay_ms;   /* Command sleeps this long inside its transaction */
} th_ctx;

typedef struct th_opts {
  const char *url;                   /* NULL: "inproc://th-<n>" */
  int workers;                       /* 0: 4 */
  int queue_size;                    /* 0: 64 */
  int max_message_bytes;             /* 0: 1 MiB */
  int default_timeout_ms;            /* 0: 5000 */
  const rpc_method_policy *policies; /* NULL: Echo/Sleep public, Command public|command */
  size_t n_policies;
  bool no_auth; /* no keys: nothing verifies */
} th_opts;

typedef struct th_server {
  rpc_server *srv;
  th_ctx ctx;
  Shop__Testing__V1__EchoService_Service svc;
  auth_keys *keys;
  char url[128];
} th_server;

/* Starts a server (cr_assert on failure). */
th_server *th_server_start(const th_opts *o);
void th_server_stop(th_server *s);
void th_release(th_ctx *ctx);
/* Waits (bounded) until pred(ctx) holds; false on timeout. */
bool th_wait_peak(th_ctx *ctx, int peak, int timeout_ms);

/* A client for url with test defaults, connected (cr_assert on failure);
 * th_client_nowait does not wait for the connection. */
rpc_client *th_client(const char *url, int max_message_bytes, int retry_max);
rpc_client *th_client_nowait(const char *url, int max_message_bytes, int retry_max);

/* A token signed with TH_KEY. */
void th_token(char *buf, size_t len, const char *sub, auth_role role, int64_t iat);

/* A Sleep call of duration_ms (0: until released when ctx.block is set)
 * made on a thread of its own, with timeout_ms (0: 30000) and no retry:
 * th_sleep_start starts it; join s->t, then read rc, slept (the handler's
 * answer) and took_ms. */
typedef struct th_sleep_call {
  rpc_client *c;
  int duration_ms;
  int64_t timeout_ms;
  status_code rc;
  int32_t slept;
  int64_t took_ms;
  pthread_t t;
} th_sleep_call;

void th_sleep_start(th_sleep_call *s);

/* Echo through the generated stub; returns the code, copies the reply's
 * message into out (may be NULL). */
status_code th_echo(rpc_client *c, const char *message, const rpc_call_opts *opts, char *out,
                    size_t outlen, rpc_status *st);

/* Sends raw bytes over a fresh REQ socket and waits for the reply frame
 * (malloc'd in *reply). Returns 0 or the NNG error. */
int th_raw_exchange(const char *url, const void *frame, size_t len, void **reply, size_t *reply_len,
                    int timeout_ms);

/* Packs a RequestEnvelope. */
size_t th_pack_envelope(const char *method, const char *request_id, int64_t timeout_ms,
                        const void *payload, size_t payload_len, uint8_t **out);

#endif
