/*
 * Proves that Debian's librdkafka 2.0.2 works with the pinned Kafka 4.1
 * broker: an idempotent producer sends a protobuf event with CloudEvents
 * headers, with and without compression, and a consumer in a group (short
 * session timeout) receives it with the same key, headers and bytes.
 */
#include <criterion/criterion.h>
#include <librdkafka/rdkafka.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "shop/order/v1/events.pb-c.h"
#include "support/wait.h"
#include "testenv.h"

static char errstr[512];

static void set(rd_kafka_conf_t *conf, const char *k, const char *v) {
  cr_assert_eq(rd_kafka_conf_set(conf, k, v, errstr, sizeof errstr), RD_KAFKA_CONF_OK, "%s=%s: %s",
               k, v, errstr);
}

static void create_topic(const char *topic) {
  rd_kafka_conf_t *conf = rd_kafka_conf_new();
  set(conf, "bootstrap.servers", testenv_kafka_brokers());
  rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof errstr);
  cr_assert_not_null(rk, "%s", errstr);
  rd_kafka_NewTopic_t *nt = rd_kafka_NewTopic_new(topic, 3, 1, errstr, sizeof errstr);
  cr_assert_not_null(nt, "%s", errstr);
  rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
  rd_kafka_CreateTopics(rk, &nt, 1, NULL, q);
  rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 30000);
  cr_assert_not_null(ev, "CreateTopics timed out");
  const rd_kafka_CreateTopics_result_t *res = rd_kafka_event_CreateTopics_result(ev);
  size_t n;
  const rd_kafka_topic_result_t **tr = rd_kafka_CreateTopics_result_topics(res, &n);
  cr_assert_eq(n, 1);
  rd_kafka_resp_err_t e = rd_kafka_topic_result_error(tr[0]);
  cr_assert(e == RD_KAFKA_RESP_ERR_NO_ERROR || e == RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS, "%s",
            rd_kafka_err2str(e));
  rd_kafka_event_destroy(ev);
  rd_kafka_queue_destroy(q);
  rd_kafka_NewTopic_destroy(nt);
  rd_kafka_destroy(rk);
}

typedef struct {
  int delivered;
  rd_kafka_resp_err_t err;
} dr_state;

static void dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
  dr_state *s = opaque;
  s->delivered++;
  s->err = m->err;
}

static size_t pack_event(uint8_t **out) {
  Shop__Common__V1__Money total = SHOP__COMMON__V1__MONEY__INIT;
  total.units = 2599;
  total.currency = "EUR";
  Shop__Order__V1__OrderCreated ev = SHOP__ORDER__V1__ORDER_CREATED__INIT;
  ev.order_id = "0193a5c2-0000-7000-8000-000000000001";
  ev.customer_id = "u-1";
  ev.total = &total;
  ev.payment_token = "tok_ok";
  ev.idempotency_key = "k-1";
  size_t len = shop__order__v1__order_created__get_packed_size(&ev);
  *out = malloc(len);
  shop__order__v1__order_created__pack(&ev, *out);
  return len;
}

static const char *const ce_headers[][2] = {
    {"ce_specversion", "1.0"},
    {"ce_id", "0193a5c2-1111-7000-8000-000000000002"},
    {"ce_source", "/shop/order-command"},
    {"ce_type", "shop.order.v1.OrderCreated"},
    {"ce_subject", "0193a5c2-0000-7000-8000-000000000001"},
    {"ce_time", "2026-11-25T12:00:00.000Z"},
    {"ce_sequence", "1"},
    {"ce_correlationid", "0193a5c2-0000-7000-8000-000000000001"},
    {"ce_actor", "u-1"},
    {"content-type", "application/protobuf"},
    {"traceparent", "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"},
};
#define NHEADERS (sizeof ce_headers / sizeof ce_headers[0])

/* Polls once (500 ms at most): true when a record came; fails the test on
 * a consumer error other than the end of a partition. */
static bool next_record(rd_kafka_t *c, rd_kafka_message_t **m) {
  *m = rd_kafka_consumer_poll(c, 500);
  if (*m == NULL) return false;
  if ((*m)->err == RD_KAFKA_RESP_ERR_NO_ERROR) return true;
  cr_assert((*m)->err == RD_KAFKA_RESP_ERR__PARTITION_EOF, "consumer error: %s",
            rd_kafka_message_errstr(*m));
  rd_kafka_message_destroy(*m);
  *m = NULL;
  return false;
}

static void round_trip(const char *compression) {
  char topic[96], group[96];
  testenv_unique(topic, sizeof topic, "test.roundtrip.");
  testenv_unique(group, sizeof group, "test-group-");
  create_topic(topic);

  /* Producer: idempotent, acks=all, murmur2_random, as the outbox relay. */
  rd_kafka_conf_t *pc = rd_kafka_conf_new();
  set(pc, "bootstrap.servers", testenv_kafka_brokers());
  set(pc, "enable.idempotence", "true");
  set(pc, "acks", "all");
  set(pc, "partitioner", "murmur2_random");
  set(pc, "compression.codec", compression);
  dr_state dr = {0};
  rd_kafka_conf_set_dr_msg_cb(pc, dr_cb);
  rd_kafka_conf_set_opaque(pc, &dr);
  rd_kafka_t *p = rd_kafka_new(RD_KAFKA_PRODUCER, pc, errstr, sizeof errstr);
  cr_assert_not_null(p, "%s", errstr);

  uint8_t *value;
  size_t vlen = pack_event(&value);
  const char *key = "0193a5c2-0000-7000-8000-000000000001";
  rd_kafka_headers_t *hdrs = rd_kafka_headers_new(NHEADERS);
  for (size_t i = 0; i < NHEADERS; i++) {
    rd_kafka_header_add(hdrs, ce_headers[i][0], -1, ce_headers[i][1], -1);
  }
  rd_kafka_resp_err_t e = rd_kafka_producev(
      p, RD_KAFKA_V_TOPIC(topic), RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE(value, vlen),
      RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_HEADERS(hdrs), RD_KAFKA_V_END);
  cr_assert_eq(e, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(e));
  cr_assert_eq(rd_kafka_flush(p, 30000), RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(dr.delivered, 1);
  cr_assert_eq(dr.err, RD_KAFKA_RESP_ERR_NO_ERROR, "%s", rd_kafka_err2str(dr.err));

  /* Consumer in a group, short session timeout, manual offset store. */
  rd_kafka_conf_t *cc = rd_kafka_conf_new();
  set(cc, "bootstrap.servers", testenv_kafka_brokers());
  set(cc, "group.id", group);
  set(cc, "session.timeout.ms", "6000");
  set(cc, "heartbeat.interval.ms", "1000");
  set(cc, "auto.offset.reset", "earliest");
  set(cc, "enable.auto.offset.store", "false");
  rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, cc, errstr, sizeof errstr);
  cr_assert_not_null(c, "%s", errstr);
  rd_kafka_poll_set_consumer(c);
  rd_kafka_topic_partition_list_t *subs = rd_kafka_topic_partition_list_new(1);
  rd_kafka_topic_partition_list_add(subs, topic, RD_KAFKA_PARTITION_UA);
  cr_assert_eq(rd_kafka_subscribe(c, subs), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_topic_partition_list_destroy(subs);

  rd_kafka_message_t *m = NULL;
  WAIT_UNTIL(next_record(c, &m), 60000, "a record through the consumer group");
  cr_assert_eq(m->key_len, strlen(key));
  cr_assert_arr_eq(m->key, key, m->key_len);
  cr_assert_eq(m->len, vlen);
  cr_assert_arr_eq(m->payload, value, vlen);

  rd_kafka_headers_t *got;
  cr_assert_eq(rd_kafka_message_headers(m, &got), RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(rd_kafka_header_cnt(got), NHEADERS);
  for (size_t i = 0; i < NHEADERS; i++) {
    const void *v;
    size_t vl;
    cr_assert_eq(rd_kafka_header_get_last(got, ce_headers[i][0], &v, &vl),
                 RD_KAFKA_RESP_ERR_NO_ERROR, "header %s missing", ce_headers[i][0]);
    cr_assert_eq(vl, strlen(ce_headers[i][1]), "header %s", ce_headers[i][0]);
    cr_assert_arr_eq(v, ce_headers[i][1], vl, "header %s", ce_headers[i][0]);
  }
  Shop__Order__V1__OrderCreated *back =
      shop__order__v1__order_created__unpack(NULL, m->len, m->payload);
  cr_assert_not_null(back);
  cr_assert_str_eq(back->order_id, "0193a5c2-0000-7000-8000-000000000001");
  cr_assert_eq(back->total->units, 2599);
  shop__order__v1__order_created__free_unpacked(back, NULL);

  /* Store and commit the offset as the consumer framework will. */
  cr_assert_eq(rd_kafka_offset_store(m->rkt, m->partition, m->offset), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_message_destroy(m);
  cr_assert_eq(rd_kafka_commit(c, NULL, 0), RD_KAFKA_RESP_ERR_NO_ERROR);
  cr_assert_eq(rd_kafka_consumer_close(c), RD_KAFKA_RESP_ERR_NO_ERROR);
  rd_kafka_destroy(c);
  rd_kafka_destroy(p);
  free(value);
}

Test(kafka, an_uncompressed_event_makes_the_round_trip_through_a_group) { round_trip("none"); }
Test(kafka, an_lz4_compressed_event_makes_the_round_trip_through_a_group) { round_trip("lz4"); }
Test(kafka, a_gzip_compressed_event_makes_the_round_trip_through_a_group) { round_trip("gzip"); }
Test(kafka, a_zstd_compressed_event_makes_the_round_trip_through_a_group) { round_trip("zstd"); }
Test(kafka, a_snappy_compressed_event_makes_the_round_trip_through_a_group) {
  round_trip("snappy");
}
