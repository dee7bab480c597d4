/* The shop-echo program as a real process: readiness, SIGTERM drain, a
 * killed server, and flat memory under oversized frames. */
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "grpc/health/v1/health.pb-c.h"
#include "harness.h"
#include "shop/rpc/v1/rpc.pb-c.h"
#include "support/proc.h"
#include "support/wait.h"

static char dir[256];
static char cfg_path[512];
static char log_path[512];
static char url[64];
static proc *child;

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f, "%s", path);
  fputs(text, f);
  fclose(f);
}

static void start_echo(const char *max_message_bytes) {
  snprintf(dir, sizeof dir, "/tmp/shop-rpc-lifecycle-XXXXXX");
  cr_assert_not_null(mkdtemp(dir));
  snprintf(cfg_path, sizeof cfg_path, "%s/echo.yaml", dir);
  snprintf(log_path, sizeof log_path, "%s/echo.log", dir);
  write_file(cfg_path,
             "log:\n  level: info\n"
             "rpc:\n  workers: 4\n  queue_size: 64\n  drain_grace_ms: 5000\n"
             "auth:\n  issuer: shop-test\n");
  int port = proc_free_tcp_port();
  cr_assert_gt(port, 0);
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  char maxenv[96];
  snprintf(maxenv, sizeof maxenv, "SHOP_RPC__MAX_MESSAGE_BYTES=%s", max_message_bytes);
  const char *args[] = {"--config", cfg_path, "--listen", url, NULL};
  const char *env[] = {"SHOP_AUTH__JWT_KEY=" TH_KEY, maxenv, NULL};
  proc_opts o = {
      .path = SHOP_ECHO_BIN, .argv = args, .env = env, .probe_url = url, .log_path = log_path};
  char err[512];
  cr_assert_eq(proc_start(&child, &o, err, sizeof err), STATUS_OK, "%s", err);
}

static void start_default(void) { start_echo("4194304"); }

static void stop_echo(void) {
  proc_destroy(child);
  child = NULL;
  if (getenv("RPC_TEST_KEEP_LOGS") != NULL) return;
  unlink(cfg_path);
  unlink(log_path);
  rmdir(dir);
}

/* Whether the child's log holds needle now. */
static bool log_contains(const char *needle) {
  FILE *f = fopen(log_path, "r");
  if (f == NULL) return false;
  char line[2048];
  bool found = false;
  while (!found && fgets(line, sizeof line, f) != NULL) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

/* Waits (bounded) until the child's log holds needle. */
static bool log_has(const char *needle, int timeout_ms) {
  bool found;
  WAIT_FOR(found, log_contains(needle), timeout_ms);
  return found;
}

static int health(rpc_client *c) {
  Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
  ProtobufCMessage *out = NULL;
  rpc_call_opts o = {.no_retry = true};
  if (rpc_client_call_sync(c, &grpc__health__v1__health__descriptor, "Check", &req.base, &out, &o,
                           NULL) != STATUS_OK)
    return -1;
  int s = (int)((Grpc__Health__V1__HealthCheckResponse *)out)->status;
  protobuf_c_message_free_unpacked(out, NULL);
  return s;
}

Test(rpc_lifecycle, the_echo_program_serves_and_exits_zero_on_sigterm, .init = start_default,
     .fini = stop_echo) {
  rpc_client *c = th_client(url, 0, 3);
  char got[32];
  rpc_status st;
  cr_assert_eq(th_echo(c, "ping", NULL, got, sizeof got, &st), STATUS_OK, "%s", st.message);
  cr_assert_str_eq(got, "ping");
  char tok[AUTH_TOKEN_MAX];
  th_token(tok, sizeof tok, "user-3", AUTH_ROLE_ADMIN, 0);
  Shop__Testing__V1__EchoRequest req = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  req.message = "me";
  ProtobufCMessage *out = NULL;
  cr_assert_eq(rpc_client_call_sync(c, &shop__testing__v1__echo_service__descriptor, "Echo",
                                    &req.base, &out, &(rpc_call_opts){.token = tok}, NULL),
               STATUS_OK);
  cr_assert_str_eq(((Shop__Testing__V1__EchoResponse *)out)->role, "admin",
                   "the program verifies tokens with the configured key");
  protobuf_c_message_free_unpacked(out, NULL);
  rpc_client_destroy(c);
  int code = -1;
  cr_assert_eq(proc_stop(child, 10000, &code), STATUS_OK);
  cr_assert_eq(code, 0, "exit code %d; log in %s", code, log_path);
}

Test(rpc_lifecycle, sigterm_drains_in_flight_calls_and_refuses_new_ones, .init = start_default,
     .fini = stop_echo) {
  rpc_client *c = th_client(url, 0, 0);
  cr_assert(rpc_client_wait_connected(c, 5000));
  th_sleep_call b = {.c = c, .duration_ms = 1500};
  th_sleep_start(&b);
  cr_assert(log_has("sleep started", 10000), "the call reached the handler");
  cr_assert_eq(kill(proc_pid(child), SIGTERM), 0);
  cr_assert(log_has("draining", 10000));
  cr_assert_eq(health(c), GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING);
  rpc_status st;
  cr_assert_eq(th_echo(c, "late", &(rpc_call_opts){.no_retry = true}, NULL, 0, &st),
               STATUS_UNAVAILABLE);
  pthread_join(b.t, NULL);
  cr_assert_eq(b.rc, STATUS_OK, "the in-flight call completed: %s", status_name(b.rc));
  cr_assert_geq(b.slept, 1500, "and ran to its end");
  int code = -1;
  cr_assert_eq(proc_stop(child, 10000, &code), STATUS_OK);
  cr_assert_eq(code, 0, "exit code %d; log in %s", code, log_path);
  rpc_client_destroy(c);
}

Test(rpc_lifecycle, a_killed_server_fails_calls_in_flight_with_unavailable_promptly,
     .init = start_default, .fini = stop_echo) {
  rpc_client *c = th_client(url, 0, 0);
  cr_assert(rpc_client_wait_connected(c, 5000));
  th_sleep_call b = {.c = c, .duration_ms = 20000};
  th_sleep_start(&b);
  cr_assert(log_has("sleep started", 10000));
  cr_assert_eq(kill(proc_pid(child), SIGKILL), 0);
  pthread_join(b.t, NULL);
  cr_assert_eq(b.rc, STATUS_UNAVAILABLE, "%s", status_name(b.rc));
  cr_assert_lt(b.took_ms, 15000, "not a wait for the 30 s deadline");
  rpc_client_destroy(c);
}

/* Speaks NNG's SP-over-TCP framing by hand: the REQ handshake, then one
 * frame header declaring `declared` bytes, then up to `body` bytes of it.
 * Returns the bytes of body the server took before dropping the
 * connection. (An NNG REQ socket would redial and resend on its own.) */
/* A TCP connection to port that has done the SP handshake as a REQ peer,
 * with timeout_s for each send and receive. */
static int sp_connect(int port, int timeout_s) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  cr_assert_geq(fd, 0);
  struct timeval tv = {.tv_sec = timeout_s};
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0);
  const uint8_t hello[8] = {0, 'S', 'P', 0, 0x00, 0x30 /* req0 */, 0, 0};
  cr_assert_eq(send(fd, hello, sizeof hello, MSG_NOSIGNAL), 8);
  uint8_t peer[8];
  cr_assert_eq(recv(fd, peer, sizeof peer, MSG_WAITALL), 8, "the server's SP header");
  return fd;
}

/* Sends the 8-byte SP frame header declaring len bytes; true when sent. */
static bool sp_frame_header(int fd, uint64_t len) {
  uint8_t hdr[8];
  for (int i = 0; i < 8; i++) hdr[i] = (uint8_t)(len >> (56 - 8 * i));
  return send(fd, hdr, sizeof hdr, MSG_NOSIGNAL) == 8;
}

static size_t send_oversized_frame(int port, uint64_t declared, size_t body) {
  int fd = sp_connect(port, 2);
  size_t sent = 0;
  if (sp_frame_header(fd, declared)) {
    static uint8_t chunk[65536];
    memset(chunk, 0xab, sizeof chunk);
    chunk[0] = 0x80; /* a request id with the high bit, as REQ sends */
    while (sent < body) {
      ssize_t n = send(fd, chunk, sizeof chunk, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += (size_t)n;
    }
  }
  close(fd);
  return sent;
}

Test(rpc_lifecycle, oversized_frames_leave_the_server_memory_flat) {
  start_echo("65536");
  rpc_client *c = th_client(url, 0, 3);
  /* Warm up the paths a frame takes, then measure. */
  for (int i = 0; i < 50; i++) cr_assert_eq(th_echo(c, "warm", NULL, NULL, 0, NULL), STATUS_OK);
  long before = proc_rss_kib(proc_pid(child));
  cr_assert_gt(before, 0);
  int port = atoi(strrchr(url, ':') + 1);
  size_t taken = 0;
  for (int i = 0; i < 20; i++) taken += send_oversized_frame(port, 64u << 20, 16u << 20);
  cr_assert_lt(taken, (size_t)20 * (16u << 20), "the server stopped reading oversized frames");
  char got[32];
  cr_assert_eq(th_echo(c, "after", NULL, got, sizeof got, NULL), STATUS_OK, "still serving");
  cr_assert_str_eq(got, "after");
  long after = proc_rss_kib(proc_pid(child));
  cr_assert_lt(after - before, 4 * 1024,
               "RSS grew by %ld KiB after 20 frames declaring 64 MiB (before %ld, after %ld)",
               after - before, before, after);
  rpc_client_destroy(c);
  stop_echo();
}

/* A real 100 MB request (an Echo whose envelope is 100,000,000 bytes,
 * framed as a REQ socket frames it) sent whole at a server with the
 * default 4 MiB limit: the server drops the connection at the frame
 * header, so neither its resident set nor its peak (VmHWM) grows by more
 * than a few MiB, and it goes on serving. */
Test(rpc_lifecycle, a_100_mb_frame_leaves_the_server_memory_flat) {
  start_default();
  rpc_client *c = th_client(url, 0, 3);
  for (int i = 0; i < 50; i++) cr_assert_eq(th_echo(c, "warm", NULL, NULL, 0, NULL), STATUS_OK);
  pid_t pid = proc_pid(child);
  long before = proc_rss_kib(pid), peak_before = proc_peak_rss_kib(pid);
  cr_assert_gt(before, 0);
  cr_assert_gt(peak_before, 0);

  /* The frame: REQ's 4-byte request id, then the packed envelope. */
  const size_t blob_len = 100u * 1000 * 1000;
  Shop__Testing__V1__EchoRequest echo = SHOP__TESTING__V1__ECHO_REQUEST__INIT;
  echo.message = "big";
  echo.blob.len = blob_len;
  echo.blob.data = malloc(blob_len);
  cr_assert_not_null(echo.blob.data);
  memset(echo.blob.data, 0x5a, blob_len);
  size_t payload_len = shop__testing__v1__echo_request__get_packed_size(&echo);
  uint8_t *payload = malloc(payload_len);
  cr_assert_not_null(payload);
  shop__testing__v1__echo_request__pack(&echo, payload);
  free(echo.blob.data);
  Shop__Rpc__V1__RequestEnvelope env = SHOP__RPC__V1__REQUEST_ENVELOPE__INIT;
  env.method = "/shop.testing.v1.EchoService/Echo";
  env.request_id = "big-frame";
  env.timeout_ms = 5000;
  env.payload.data = payload;
  env.payload.len = payload_len;
  size_t frame_len = 4 + shop__rpc__v1__request_envelope__get_packed_size(&env);
  uint8_t *frame = malloc(frame_len);
  cr_assert_not_null(frame);
  memcpy(frame, "\x80\x00\x00\x01", 4);
  shop__rpc__v1__request_envelope__pack(&env, frame + 4);
  free(payload);
  cr_assert_gt(frame_len, blob_len, "a frame of more than 100 MB");

  int port = atoi(strrchr(url, ':') + 1);
  for (int round = 0; round < 3; round++) {
    int fd = sp_connect(port, 5);
    cr_assert(sp_frame_header(fd, (uint64_t)frame_len));
    size_t sent = 0;
    while (sent < frame_len) {
      ssize_t n = send(fd, frame + sent, frame_len - sent, MSG_NOSIGNAL);
      if (n <= 0) break;
      sent += (size_t)n;
    }
    close(fd);
    cr_assert_lt(sent, frame_len, "the server read the whole 100 MB frame instead of dropping it");
  }
  free(frame);

  char got[32];
  cr_assert_eq(th_echo(c, "after", NULL, got, sizeof got, NULL), STATUS_OK, "still serving");
  cr_assert_str_eq(got, "after");
  long after = proc_rss_kib(pid), peak_after = proc_peak_rss_kib(pid);
  cr_assert_lt(after - before, 4 * 1024,
               "RSS grew by %ld KiB after three 100 MB frames (before %ld, after %ld)",
               after - before, before, after);
  cr_assert_lt(peak_after - peak_before, 8 * 1024,
               "peak RSS grew by %ld KiB after three 100 MB frames (before %ld, after %ld)",
               peak_after - peak_before, peak_before, peak_after);
  rpc_client_destroy(c);
  stop_echo();
}
