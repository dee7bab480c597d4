#include "harness.h"

#include <criterion/criterion.h>
#include <nng/nng.h>
#include <nng/protocol/reqrep0/req.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "command/command.h"
#include "log/log.h"
#include "shop/rpc/v1/rpc.pb-c.h"

static void *sleep_call_main(void *arg) {
  th_sleep_call *s = arg;
  Shop__Testing__V1__SleepRequest req = SHOP__TESTING__V1__SLEEP_REQUEST__INIT;
  req.duration_ms = s->duration_ms;
  ProtobufCMessage *out = NULL;
  rpc_call_opts o = {.timeout_ms = s->timeout_ms > 0 ? s->timeout_ms : 30000, .no_retry = true};
  int64_t t0 = wait_now_ms();
  s->rc = rpc_client_call_sync(s->c, &shop__testing__v1__echo_service__descriptor, "Sleep",
                               &req.base, &out, &o, NULL);
  s->took_ms = wait_now_ms() - t0;
  if (out != NULL) {
    s->slept = ((Shop__Testing__V1__SleepResponse *)out)->slept_ms;
    protobuf_c_message_free_unpacked(out, NULL);
  }
  return NULL;
}

void th_sleep_start(th_sleep_call *s) {
  cr_assert_eq(pthread_create(&s->t, NULL, sleep_call_main, s), 0);
}

/* ---- handlers ------------------------------------------------------------------ */

static void thh_echo(Shop__Testing__V1__EchoService_Service *svc,
                     const Shop__Testing__V1__EchoRequest *in,
                     Shop__Testing__V1__EchoResponse_Closure closure, void *data) {
  rpc_call *call = data;
  th_ctx *ctx = rpc_call_service_ctx(call);
  atomic_fetch_add(&ctx->echo_calls, 1);
  atomic_store(&ctx->last_attempt, rpc_call_attempt(call));
  atomic_store(&ctx->last_remaining_ms, (long long)rpc_call_remaining_ms(call));
  pthread_mutex_lock(&ctx->mu);
  snprintf(ctx->last_trace, sizeof ctx->last_trace, "%s", rpc_call_trace_id(call));
  snprintf(ctx->last_traceparent, sizeof ctx->last_traceparent, "%s", rpc_call_traceparent(call));
  snprintf(ctx->scope_traceparent, sizeof ctx->scope_traceparent, "%s", log_current_traceparent());
  const char *md = rpc_call_metadata(call, "x-test");
  snprintf(ctx->last_metadata, sizeof ctx->last_metadata, "%s", md ? md : "");
  pthread_mutex_unlock(&ctx->mu);

  const char *m = in->message;
  Shop__Testing__V1__EchoResponse r = SHOP__TESTING__V1__ECHO_RESPONSE__INIT;
  if (m[0] == '\0') {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "message is required");
    rpc_call_add_field_violation(call, "message", "must not be empty");
    return;
  }
  if (strcmp(m, "no-reply") == 0) return;
  if (strcmp(m, "bad-status") == 0) {
    rpc_call_set_status(call, (status_code)99, "bogus");
    return;
  }
  if (strcmp(m, "wrong-type") == 0) {
    Shop__Testing__V1__SleepResponse w = SHOP__TESTING__V1__SLEEP_RESPONSE__INIT;
    closure((const Shop__Testing__V1__EchoResponse *)(const void *)&w, data);
    return;
  }
  if (strncmp(m, "big:", 4) == 0) {
    size_t n = (size_t)atol(m + 4);
    uint8_t *blob = calloc(n ? n : 1, 1);
    r.message = (char *)m;
    r.blob.data = blob;
    r.blob.len = n;
    closure(&r, data);
    free(blob);
    return;
  }
  /* "forward" names its parent; "forward-scope" leaves the trace to the
   * thread's current log scope, which the server sets around the call. */
  if (strcmp(m, "forward") == 0 || strcmp(m, "forward-scope") == 0) {
    rpc_call_opts o = {.parent = strcmp(m, "forward") == 0 ? call : NULL};
    char got[64];
    rpc_status st;
    status_code rc = th_echo(ctx->downstream, "hello", &o, got, sizeof got, &st);
    if (rc != STATUS_OK) {
      rpc_call_set_status(call, rc, "downstream: %s", st.message);
      return;
    }
    r.message = got;
    closure(&r, data);
    return;
  }
  r.message = (char *)m;
  r.blob = in->blob;
  r.user_id = (char *)rpc_call_user_id(call);
  r.role = (char *)auth_role_name(rpc_call_role(call));
  closure(&r, data);
}

static void thh_sleep(Shop__Testing__V1__EchoService_Service *svc,
                      const Shop__Testing__V1__SleepRequest *in,
                      Shop__Testing__V1__SleepResponse_Closure closure, void *data) {
  rpc_call *call = data;
  th_ctx *ctx = rpc_call_service_ctx(call);
  atomic_fetch_add(&ctx->sleep_calls, 1);
  Shop__Testing__V1__SleepResponse r = SHOP__TESTING__V1__SLEEP_RESPONSE__INIT;
  int64_t t0 = wait_now_ms();
  if (ctx->block) {
    pthread_mutex_lock(&ctx->mu);
    ctx->running++;
    if (ctx->running > ctx->peak) ctx->peak = ctx->running;
    pthread_cond_broadcast(&ctx->cv);
    /* Bounded: a test that forgets to release still ends. */
    struct timespec until = wait_abstime(20000);
    while (!ctx->released)
      if (pthread_cond_timedwait(&ctx->cv, &ctx->mu, &until) != 0) break;
    ctx->running--;
    pthread_mutex_unlock(&ctx->mu);
  } else {
    while (wait_now_ms() - t0 < in->duration_ms && !rpc_call_cancelled(call)) wait_sleep_ms(2);
  }
  r.slept_ms = (int32_t)(wait_now_ms() - t0);
  closure(&r, data);
}

typedef struct cmd_job {
  const Shop__Testing__V1__CommandRequest *in;
  th_ctx *ctx;
  Shop__Testing__V1__CommandResponse *reply;
} cmd_job;

/* The command: counts its executions in a table, in command_run's
 * transaction with the idempotency record. */
static status_code cmd_apply_cb(db_conn *db, void *arg, command_outcome *out, char *errbuf,
                                size_t errlen) {
  cmd_job *j = arg;
  db_value p[2] = {DB_STR(j->in->name), DB_I64(j->in->amount)};
  status_code rc =
      db_exec(db,
              "INSERT INTO rpc_test_counter (name, total, executions) VALUES (?, ?, 1) "
              "ON DUPLICATE KEY UPDATE total = total + VALUES(total), executions = "
              "executions + 1",
              p, 2, NULL, NULL, errbuf, errlen);
  if (rc != STATUS_OK) return rc;
  if (j->ctx->command_delay_ms > 0) wait_sleep_ms(j->ctx->command_delay_ms);
  int64_t n = 0;
  rc = db_query_i64(db, "SELECT executions FROM rpc_test_counter WHERE name = ?", p, 1, &n, errbuf,
                    errlen);
  if (rc != STATUS_OK) return rc;
  j->reply->executions = n;
  return STATUS_OK;
}

static void thh_command(Shop__Testing__V1__EchoService_Service *svc,
                        const Shop__Testing__V1__CommandRequest *in,
                        Shop__Testing__V1__CommandResponse_Closure closure, void *data) {
  rpc_call *call = data;
  th_ctx *ctx = rpc_call_service_ctx(call);
  int runs = atomic_fetch_add(&ctx->command_runs, 1) + 1;
  Shop__Testing__V1__CommandResponse r = SHOP__TESTING__V1__COMMAND_RESPONSE__INIT;
  r.name = in->name;
  if (ctx->db == NULL) {
    r.executions = runs;
    closure(&r, data);
    return;
  }
  cmd_job j = {.in = in, .ctx = ctx, .reply = &r};
  command_tx cmd = {.call = call,
                    .db = ctx->db,
                    .apply = cmd_apply_cb,
                    .arg = &j,
                    .reply = &r.base,
                    .idempotent = true};
  if (command_run(&cmd)) closure(&r, data);
}

/* ---- server and client ------------------------------------------------------------ */

static const rpc_method_policy th_default_policies[] = {
    {"Echo", RPC_PUBLIC},
    {"Sleep", RPC_PUBLIC},
    {"Command", RPC_PUBLIC | RPC_COMMAND},
};

th_server *th_server_start(const th_opts *o) {
  static _Atomic int seq;
  th_server *s = calloc(1, sizeof *s);
  cr_assert_not_null(s);
  pthread_mutex_init(&s->ctx.mu, NULL);
  pthread_cond_init(&s->ctx.cv, NULL);
  s->svc = (Shop__Testing__V1__EchoService_Service)SHOP__TESTING__V1__ECHO_SERVICE__INIT(thh_);
  char err[256];
  if (!o->no_auth)
    cr_assert_eq(
        auth_keys_create(&s->keys, TH_KEY, strlen(TH_KEY), TH_ISSUER, 900, err, sizeof err),
        STATUS_OK, "%s", err);
  rpc_server_opts so = {
      .name = "rpc-test",
      .workers = o->workers > 0 ? o->workers : 4,
      .queue_size = o->queue_size > 0 ? o->queue_size : 64,
      .max_message_bytes = o->max_message_bytes > 0 ? o->max_message_bytes : 1 << 20,
      .default_timeout_ms = o->default_timeout_ms > 0 ? o->default_timeout_ms : 5000,
      .max_timeout_ms = 60000,
      .drain_grace_ms = 5000,
      .auth = s->keys};
  rpc_service_opts svo = {
      .default_policy = RPC_AUTHENTICATED,
      .policies = o->policies ? o->policies : th_default_policies,
      .n_policies =
          o->policies ? o->n_policies : sizeof th_default_policies / sizeof th_default_policies[0],
      .ctx = &s->ctx};
  if (o->url != NULL)
    snprintf(s->url, sizeof s->url, "%s", o->url);
  else
    snprintf(s->url, sizeof s->url, "inproc://th-%d", atomic_fetch_add(&seq, 1));
  cr_assert_eq(rpc_server_create(&s->srv, &so, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_eq(rpc_server_register(s->srv, &s->svc.base, &svo, err, sizeof err), STATUS_OK, "%s",
               err);
  cr_assert_eq(rpc_server_listen(s->srv, s->url, err, sizeof err), STATUS_OK, "%s", err);
  if (strncmp(s->url, "tcp://", 6) == 0 && strstr(s->url, ":0") != NULL)
    snprintf(s->url, sizeof s->url, "tcp://127.0.0.1:%d", rpc_server_port(s->srv));
  cr_assert_eq(rpc_server_start(s->srv, err, sizeof err), STATUS_OK, "%s", err);
  return s;
}

void th_release(th_ctx *ctx) {
  pthread_mutex_lock(&ctx->mu);
  ctx->released = true;
  pthread_cond_broadcast(&ctx->cv);
  pthread_mutex_unlock(&ctx->mu);
}

bool th_wait_peak(th_ctx *ctx, int peak, int timeout_ms) {
  struct timespec until = wait_abstime(timeout_ms);
  pthread_mutex_lock(&ctx->mu);
  while (ctx->peak < peak)
    if (pthread_cond_timedwait(&ctx->cv, &ctx->mu, &until) != 0) break;
  bool ok = ctx->peak >= peak;
  pthread_mutex_unlock(&ctx->mu);
  return ok;
}

void th_server_stop(th_server *s) {
  if (s == NULL) return;
  th_release(&s->ctx);
  rpc_server_destroy(s->srv);
  auth_keys_destroy(s->keys);
  pthread_cond_destroy(&s->ctx.cv);
  pthread_mutex_destroy(&s->ctx.mu);
  free(s);
}

rpc_client *th_client(const char *url, int max_message_bytes, int retry_max) {
  rpc_client *c = th_client_nowait(url, max_message_bytes, retry_max);
  cr_assert(rpc_client_wait_connected(c, 5000), "connected to %s", url);
  return c;
}

rpc_client *th_client_nowait(const char *url, int max_message_bytes, int retry_max) {
  rpc_client_opts co = {.url = url,
                        .caller = "rpc-test",
                        .max_message_bytes = max_message_bytes > 0 ? max_message_bytes : 1 << 20,
                        .default_timeout_ms = 5000,
                        .max_timeout_ms = 60000,
                        .retry_max = retry_max,
                        .retry_backoff_ms = 20};
  rpc_client *c = NULL;
  char err[256];
  cr_assert_eq(rpc_client_create(&c, &co, err, sizeof err), STATUS_OK, "%s", err);
  return c;
}

void th_token(char *buf, size_t len, const char *sub, auth_role role, int64_t iat) {
  auth_keys *k = NULL;
  char err[256];
  cr_assert_eq(auth_keys_create(&k, TH_KEY, strlen(TH_KEY), TH_ISSUER, 900, err, sizeof err),
               STATUS_OK);
  cr_assert_eq(auth_token_sign(k, sub, role, iat, buf, len, err, sizeof err), STATUS_OK, "%s", err);
  auth_keys_destroy(k);
}

typedef struct echo_out {
  char *buf;
  size_t len;
} echo_out;

static void echo_closure(const Shop__Testing__V1__EchoResponse *r, void *data) {
  rpc_client_call *cc = data;
  echo_out *o = cc->user;
  if (r != NULL && o->buf != NULL) snprintf(o->buf, o->len, "%s", r->message);
}

status_code th_echo(rpc_client *c, const char *message, const rpc_call_opts *opts, char *out,
                    size_t outlen, rpc_status *st) {
  ProtobufCService *stub = NULL;
  char err[256];
  cr_assert_eq(
      rpc_stub_create(&stub, c, &shop__testing__v1__echo_service__descriptor, err, sizeof err),
      STATUS_OK);
  Shop__Testing__V1__EchoRequest req = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  req.message = (char *)message;
  echo_out o = {out, outlen};
  if (out != NULL && outlen > 0) out[0] = '\0';
  rpc_client_call cc = {.opts = opts, .user = &o};
  shop__testing__v1__echo_service__echo(stub, &req, echo_closure, &cc);
  rpc_stub_destroy(stub);
  if (st != NULL) *st = cc.status;
  return cc.status.code;
}

int th_raw_exchange(const char *url, const void *frame, size_t len, void **reply, size_t *reply_len,
                    int timeout_ms) {
  nng_socket s;
  int rv = nng_req0_open(&s);
  if (rv != 0) return rv;
  nng_socket_set_ms(s, NNG_OPT_RECVTIMEO, timeout_ms);
  nng_socket_set_ms(s, NNG_OPT_SENDTIMEO, timeout_ms);
  if ((rv = nng_dial(s, url, NULL, 0)) == 0 && (rv = nng_send(s, (void *)frame, len, 0)) == 0) {
    char *buf = NULL;
    size_t n = 0;
    if ((rv = nng_recv(s, &buf, &n, NNG_FLAG_ALLOC)) == 0) {
      *reply = malloc(n ? n : 1);
      memcpy(*reply, buf, n);
      *reply_len = n;
      nng_free(buf, n);
    }
  }
  nng_close(s);
  return rv;
}

size_t th_pack_envelope(const char *method, const char *request_id, int64_t timeout_ms,
                        const void *payload, size_t payload_len, uint8_t **out) {
  Shop__Rpc__V1__RequestEnvelope e = SHOP__RPC__V1__REQUEST_ENVELOPE__INIT;
  e.method = (char *)method;
  e.request_id = (char *)request_id;
  e.timeout_ms = timeout_ms;
  e.attempt = 1;
  e.caller = "rpc-test";
  e.payload.data = (uint8_t *)payload;
  e.payload.len = payload_len;
  size_t n = shop__rpc__v1__request_envelope__get_packed_size(&e);
  *out = malloc(n ? n : 1);
  shop__rpc__v1__request_envelope__pack(&e, *out);
  return n;
}
