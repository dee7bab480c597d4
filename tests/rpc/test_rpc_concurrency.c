/* Concurrency and lifecycle of the server and client, in one process. */
#include <criterion/criterion.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"

static int health_status(rpc_client *c) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  if (rpc_client_call_sync(c, &grpc__health__v1__health__descriptor, "Check", &req.base, &out, NULL,
                           NULL) != STATUS_OK)
    return -1;
  int s = (int)((Grpc__Health__V1__HealthCheckResponse *)out)->status;
  protobuf_c_message_free_unpacked(out, NULL);
  return s;
}

#define WORKERS 8
#define CALLS 64

Test(rpc_concurrency, sixty_four_blocked_calls_run_pool_size_handlers_at_once) {
  th_server *srv = th_server_start(
      &(th_opts){.url = "tcp://127.0.0.1:0", .workers = WORKERS, .queue_size = CALLS});
  srv->ctx.block = true;
  rpc_client *c = th_client(srv->url, 0, 0);
  cr_assert(rpc_client_wait_connected(c, 5000));
  th_sleep_call s[CALLS];
  for (int i = 0; i < CALLS; i++) {
    s[i] = (th_sleep_call){.c = c};
    th_sleep_start(&s[i]);
  }
  cr_assert(th_wait_peak(&srv->ctx, WORKERS, 10000), "the pool fills up");
  /* Every other call waits in the queue; none runs beyond the pool. */
  rpc_server_stats ss = {0};
  WAIT_UNTIL((rpc_server_stats_get(srv->srv, &ss), ss.queued == CALLS - WORKERS), 10000,
             "%d calls queued (%llu)", CALLS - WORKERS, (unsigned long long)ss.queued);
  pthread_mutex_lock(&srv->ctx.mu);
  int running = srv->ctx.running;
  pthread_mutex_unlock(&srv->ctx.mu);
  cr_assert_eq(running, WORKERS);
  th_release(&srv->ctx);
  for (int i = 0; i < CALLS; i++) {
    pthread_join(s[i].t, NULL);
    cr_assert_eq(s[i].rc, STATUS_OK, "call %d: %s", i, status_name(s[i].rc));
  }
  cr_assert_eq(srv->ctx.peak, WORKERS, "peak concurrent handlers equals the pool size");
  cr_assert_eq(atomic_load(&srv->ctx.sleep_calls), CALLS);
  rpc_server_stats_get(srv->srv, &ss);
  cr_assert_eq(ss.peak_running, WORKERS);
  rpc_client_destroy(c);
  th_server_stop(srv);
}

Test(rpc_concurrency, a_server_restart_gives_unavailable_then_the_client_recovers) {
  th_server *a = th_server_start(&(th_opts){.url = "tcp://127.0.0.1:0"});
  char url[128];
  snprintf(url, sizeof url, "%s", a->url);
  rpc_client *c = th_client(url, 0, 0);
  cr_assert(rpc_client_wait_connected(c, 5000));
  rpc_status st;
  cr_assert_eq(th_echo(c, "one", &(rpc_call_opts){.timeout_ms = 5000}, NULL, 0, &st), STATUS_OK,
               "%s", st.message);
  th_server_stop(a);
  cr_assert_eq(
      th_echo(c, "two", &(rpc_call_opts){.timeout_ms = 5000, .no_retry = true}, NULL, 0, &st),
      STATUS_UNAVAILABLE, "%s: %s", status_name(st.code), st.message);
  th_server *b = th_server_start(&(th_opts){.url = url});
  status_code rc = STATUS_UNAVAILABLE;
  WAIT_UNTIL((rc = th_echo(c, "three", &(rpc_call_opts){.timeout_ms = 1000, .no_retry = true}, NULL,
                           0, &st)) == STATUS_OK,
             10000, "the client recovered (last: %s %s)", status_name(rc), st.message);
  /* And with the client's own retries, a call just works. */
  rpc_client_destroy(c);
  th_server_stop(b);
}

typedef struct drainer {
  rpc_server *s;
  int grace;
  status_code rc;
  pthread_t t;
} drainer;

static void *do_drain(void *arg) {
  drainer *d = arg;
  d->rc = rpc_server_drain(d->s, d->grace);
  return NULL;
}

Test(rpc_concurrency, draining_refuses_new_calls_and_finishes_running_ones) {
  th_server *srv = th_server_start(&(th_opts){0});
  srv->ctx.block = true;
  rpc_client *c = th_client(srv->url, 0, 0);
  cr_assert_eq(health_status(c), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING);
  th_sleep_call running = {.c = c};
  th_sleep_start(&running);
  cr_assert(th_wait_peak(&srv->ctx, 1, 5000));
  drainer d = {.s = srv->srv, .grace = 10000};
  pthread_create(&d.t, NULL, do_drain, &d);
  WAIT_UNTIL(rpc_server_draining(srv->srv), 5000, "the server draining");
  cr_assert_eq(health_status(c),
               GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
  rpc_status st;
  cr_assert_eq(th_echo(c, "late", &(rpc_call_opts){.no_retry = true}, NULL, 0, &st),
               STATUS_UNAVAILABLE);
  th_release(&srv->ctx);
  pthread_join(running.t, NULL);
  pthread_join(d.t, NULL);
  cr_assert_eq(running.rc, STATUS_OK, "the running call finished");
  cr_assert_eq(d.rc, STATUS_OK, "drained within the grace period");
  cr_assert_eq(atomic_load(&srv->ctx.echo_calls), 0);
  rpc_client_destroy(c);
  th_server_stop(srv);
}

Test(rpc_concurrency, drain_grace_running_out_cancels_the_running_calls) {
  th_server *srv = th_server_start(&(th_opts){0});
  rpc_client *c = th_client(srv->url, 0, 0);
  th_sleep_call ls = {.c = c, .duration_ms = 20000};
  th_sleep_start(&ls);
  WAIT_UNTIL(atomic_load(&srv->ctx.sleep_calls) > 0, 5000, "the Sleep handler running");
  cr_assert_eq(rpc_server_drain(srv->srv, 100), STATUS_DEADLINE_EXCEEDED);
  pthread_join(ls.t, NULL);
  cr_assert_eq(ls.rc, STATUS_OK, "the cancelled handler still replied");
  cr_assert_lt(ls.slept, 20000, "it stopped early: slept %d ms", ls.slept);
  rpc_client_destroy(c);
  th_server_stop(srv);
}
