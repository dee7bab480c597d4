/* shopctl, the built binary, against a real shop-echo server and the test
 * Kafka broker. Every program is started through support/proc.h and
 * stopped in the same test. */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "events/events.h"
#include "shop/order/v1/events.pb-c.h"
#include "shopctl_run.h"
#include "support/proc.h"
#include "testenv.h"

#define KEY "shop-test-signing-key-0123456789abcdef"

static shopctl_dir d;
static char cfg_path[300], url[64];
static proc *echo;

static void write_file(const char *path, const char *text) {
  FILE *f = fopen(path, "w");
  cr_assert_not_null(f);
  fputs(text, f);
  fclose(f);
}

static void echo_start(void) {
  shopctl_dir_make(&d, "shopctl-test", SHOPCTL_BIN, NULL);
  snprintf(cfg_path, sizeof cfg_path, "%s/shop.yaml", d.path);
  write_file(cfg_path, "log:\n  level: warn\nauth:\n  issuer: shop-test\n");
  int port = proc_free_tcp_port();
  cr_assert_gt(port, 0);
  snprintf(url, sizeof url, "tcp://127.0.0.1:%d", port);
  char log_path[320];
  snprintf(log_path, sizeof log_path, "%s/echo.log", d.path);
  const char *args[] = {"--config", cfg_path, "--listen", url, NULL};
  const char *env[] = {"SHOP_AUTH__JWT_KEY=" KEY, NULL};
  proc_opts o = {
      .path = SHOP_ECHO_BIN, .argv = args, .env = env, .probe_url = url, .log_path = log_path};
  char err[256];
  cr_assert_eq(proc_start(&echo, &o, err, sizeof err), STATUS_OK, "%s", err);
}

static void echo_stop(void) {
  int code = -1;
  proc_stop(echo, 10000, &code);
  proc_destroy(echo);
  echo = NULL;
  cr_expect_eq(code, 0);
  shopctl_dir_remove(&d);
}

#define shopctl(out, outlen, ...) shopctl_run(&d, out, outlen, __VA_ARGS__)

static char out[65536];

Test(shopctl, list_shows_linked_services_and_what_a_server_serves, .init = echo_start,
     .fini = echo_stop) {
  cr_assert_eq(shopctl(out, sizeof out, "list", NULL), 0, "%s", out);
  cr_assert_not_null(strstr(out, "shop.order.v1.OrderCommandService\n"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "list", NULL), 0, "%s", out);
  cr_assert_not_null(strstr(out, "shop.testing.v1.EchoService\n"), "%s", out);
  cr_assert_null(strstr(out, "OrderCommandService"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "list", "OrderQueryService", NULL), 0, "%s", out);
  cr_assert_not_null(strstr(out, "shop.order.v1.OrderQueryService.GetOrder\n"), "%s", out);
}

Test(shopctl, describe_shows_methods_and_messages, .init = echo_start, .fini = echo_stop) {
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "describe", "EchoService.Echo", NULL), 0,
               "%s", out);
  cr_assert_not_null(strstr(out, "rpc Echo(shop.testing.v1.EchoRequest)"), "%s", out);
  cr_assert_not_null(strstr(out, "  bytes blob = 2;"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "describe", "EchoService", NULL), 0, "%s",
               out);
  cr_assert_not_null(strstr(out, "  rpc Command(shop.testing.v1.CommandRequest)"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "list", "EchoService", NULL), 0, "%s",
               out);
  cr_assert_not_null(strstr(out, "shop.testing.v1.EchoService.Sleep\n"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "describe",
                       "shop.order.v1.OrderCommandService", NULL),
               5, "%s", out);
  cr_assert_not_null(strstr(out, "NOT_FOUND"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "describe", "shop.order.v1.OrderCommandService", NULL), 0,
               "%s", out);
  cr_assert_not_null(strstr(out, "CreateOrder, command"), "%s", out);
}

Test(shopctl, call_converts_json_both_ways, .init = echo_start, .fini = echo_stop) {
  cr_assert_eq(
      shopctl(out, sizeof out, "--server", url, "call", "/shop.testing.v1.EchoService/Echo",
              "{\"message\":\"hi\",\"blob\":\"AAE=\"}", "-H", "x-test:1", "--timeout", "5s", NULL),
      0, "%s", out);
  cr_assert_not_null(strstr(out, "\"message\": \"hi\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"blob\": \"AAE=\""), "%s", out);
}

Test(shopctl, a_given_idempotency_key_is_sent, .init = echo_start, .fini = echo_stop) {
  /* EchoService is not a *CommandService, so shopctl generates no key for
   * it: the server's refusal shows the violation. */
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "call", "EchoService.Command",
                       "{\"name\":\"a\",\"amount\":\"5\"}", NULL),
               3, "%s", out);
  cr_assert_not_null(strstr(out, "  idempotency_key: required"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "--idempotency-key", "k-1", "call",
                       "shop.testing.v1.EchoService/Command", "{\"name\":\"b\"}", NULL),
               0, "%s", out);
  cr_assert_not_null(strstr(out, "\"name\": \"b\""), "%s", out);
}

Test(shopctl, errors_exit_with_the_status_code_and_print_violations, .init = echo_start,
     .fini = echo_stop) {
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "call", "EchoService.Echo",
                       "{\"message\":\"\"}", NULL),
               3, "%s", out);
  cr_assert_not_null(strstr(out, "ERROR: INVALID_ARGUMENT: message is required"), "%s", out);
  cr_assert_not_null(strstr(out, "  message: must not be empty"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "call", "EchoService.Echo",
                       "{\"mesage\":\"x\"}", NULL),
               3, "%s", out);
  cr_assert_not_null(strstr(out, "mesage: unknown field"), "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "call", "EchoService.Nope", "{}", NULL), 5,
               "%s", out);
  cr_assert_eq(shopctl(out, sizeof out, "--server", "tcp://127.0.0.1:1", "--timeout", "300", "call",
                       "EchoService.Echo", "{\"message\":\"x\"}", NULL),
               14, "%s", out);
}

Test(shopctl, health_reports_serving, .init = echo_start, .fini = echo_stop) {
  cr_assert_eq(shopctl(out, sizeof out, "--server", url, "health", NULL), 0, "%s", out);
  cr_assert_not_null(strstr(out, "\"status\":\"SERVING\""), "%s", out);
}

/* ---- events tail ------------------------------------------------------- */

/* Produces an OrderCreated of order_id to topic/partition with the
 * CloudEvents headers and the extra ones (name, value pairs, NULL-ended). */
static void produce(const char *brokers, const char *topic, int partition, const char *order_id,
                    const char *customer_id, const char *ce_id, const char *const *extra) {
  Shop__Order__V1__OrderCreated ev = SHOP__ORDER__V1__ORDER_CREATED__INIT;
  ev.order_id = (char *)order_id;
  if (customer_id != NULL) ev.customer_id = (char *)customer_id;
  uint8_t buf[256];
  size_t len = shop__order__v1__order_created__pack(&ev, buf);
  rd_kafka_headers_t *h = rd_kafka_headers_new(16);
  rd_kafka_header_add(h, "ce_specversion", -1, "1.0", 3);
  rd_kafka_header_add(h, "ce_id", -1, ce_id, -1);
  rd_kafka_header_add(h, "ce_type", -1, "shop.order.v1.OrderCreated", -1);
  for (size_t i = 0; extra != NULL && extra[i] != NULL; i += 2)
    rd_kafka_header_add(h, extra[i], -1, extra[i + 1], -1);
  char err[256];
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  rd_kafka_conf_set(conf, "bootstrap.servers", brokers, err, sizeof err);
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof err);
  cr_assert_not_null(rk, "%s", err);
  rd_kafka_resp_err_t e = rd_kafka_producev(
      rk, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_PARTITION(partition),
      RD_KAFKA_V_KEY(order_id, strlen(order_id)), RD_KAFKA_V_VALUE(buf, len), RD_KAFKA_V_HEADERS(h),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_END);
  if (e != RD_KAFKA_RESP_ERR_NO_ERROR) rd_kafka_headers_destroy(h);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(e));
  cr_assert_eq(rd_kafka_flush(rk, 20000), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(rk);
}

static void tmp_dir(void) { shopctl_dir_make(&d, "shopctl-test", SHOPCTL_BIN, NULL); }

static void tmp_dir_rm(void) { shopctl_dir_remove(&d); }

Test(shopctl, events_tail_prints_records_decoded_by_type, .init = tmp_dir, .fini = tmp_dir_rm) {
  const char *brokers = testenv_kafka_brokers();
  char topic[128], err[256];
  testenv_unique(topic, sizeof topic, "shopctl.tail");
  cr_assert_eq(events_topic_create(brokers, topic, 3, 30000, err, sizeof err), STATUS_OK, "%s",
               err);
  produce(brokers, topic, 2, "order-tail-1", "cust-1", "id-1", NULL);
  int code = shopctl(out, sizeof out, "--brokers", brokers, "events", "tail", topic,
                     "--from-beginning", "--max", "1", "--timeout", "30s", NULL);
  events_topic_delete(brokers, topic, 30000, NULL, 0);
  events_shutdown_wait(10000);
  cr_assert_eq(code, 0, "%s", out);
  cr_assert_not_null(strstr(out, "\"partition\":2,\"offset\":0"), "%s", out);
  cr_assert_not_null(strstr(out, "\"key\":\"order-tail-1\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"ce_id\":\"id-1\""), "%s", out);
  cr_assert_not_null(strstr(out, "\"type\":\"shop.order.v1.OrderCreated\""), "%s", out);
  cr_assert_not_null(
      strstr(out, "\"event\":{\"orderId\":\"order-tail-1\",\"customerId\":\"cust-1\"}"), "%s", out);
}

Test(shopctl, dlt_list_and_replay_send_a_dead_letter_back, .init = tmp_dir, .fini = tmp_dir_rm) {
  const char *brokers = testenv_kafka_brokers();
  char topic[128], dlt[160], err[256];
  testenv_unique(topic, sizeof topic, "shopctl.dlt");
  snprintf(dlt, sizeof dlt, "%s.g1.dlt", topic);
  cr_assert_eq(events_topic_create(brokers, topic, 2, 30000, err, sizeof err), STATUS_OK, "%s",
               err);
  cr_assert_eq(events_topic_create(brokers, dlt, 1, 30000, err, sizeof err), STATUS_OK, "%s", err);
  const char *const dlt_headers[] = {EVENTS_DLT_ORIGINAL_TOPIC,
                                     topic,
                                     EVENTS_DLT_ORIGINAL_PARTITION,
                                     "1",
                                     EVENTS_DLT_ORIGINAL_OFFSET,
                                     "7",
                                     EVENTS_DLT_GROUP,
                                     "g1",
                                     EVENTS_DLT_ERROR,
                                     "boom",
                                     EVENTS_DLT_ATTEMPTS,
                                     "3",
                                     NULL};
  produce(brokers, dlt, 0, "order-dlt-1", NULL, "dlt-id-1", dlt_headers);
  char listed[8192], replayed[1024];
  int c1 = shopctl(listed, sizeof listed, "--brokers", brokers, "dlt", "list", topic, "g1", NULL);
  int c2 =
      shopctl(replayed, sizeof replayed, "--brokers", brokers, "dlt", "replay", topic, "g1", NULL);
  int c3 = shopctl(out, sizeof out, "--brokers", brokers, "events", "tail", topic,
                   "--from-beginning", "--max", "1", "--timeout", "30s", NULL);
  events_topic_delete(brokers, dlt, 30000, NULL, 0);
  events_topic_delete(brokers, topic, 30000, NULL, 0);
  events_shutdown_wait(10000);
  cr_assert_eq(c1, 0, "%s", listed);
  cr_assert_not_null(strstr(listed, "\"eventId\":\"dlt-id-1\""), "%s", listed);
  cr_assert_not_null(strstr(listed, "\"error\":\"boom\""), "%s", listed);
  cr_assert_not_null(strstr(listed, "\"event\":{\"orderId\":\"order-dlt-1\"}"), "%s", listed);
  cr_assert_eq(c2, 0, "%s", replayed);
  cr_assert_not_null(strstr(replayed, "{\"replayed\":1}"), "%s", replayed);
  cr_assert_eq(c3, 0, "%s", out);
  cr_assert_not_null(strstr(out, "\"ce_id\":\"dlt-id-1\""), "%s", out);
  cr_assert_null(strstr(out, "dlt_error"), "%s", out);
}
