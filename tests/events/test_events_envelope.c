/* Unit tests of the envelope <-> record mapping, event ids and ce_time
 * (no broker, no database). */
#include <criterion/criterion.h>
#include <string.h>
#include <time.h>

#include "events/events.h"

static char err[512];

static events_envelope sample(events_timestamp *ts) {
  events_envelope ev = SHOP__EVENTS__V1__EVENT_ENVELOPE__INIT;
  shop__common__v1__timestamp__init(ts);
  ts->seconds = 1795593600; /* 2026-11-25T08:00:00Z */
  ts->nanos = 123456789;
  static uint8_t data[] = {0x0a, 0x03, 'a', 0x00, 'b', 0xff};
  ev.id = "0193a5c2-1111-7000-8000-000000000002";
  ev.source = "/shop/order-command";
  ev.type = "shop.order.v1.OrderCreated";
  ev.subject = "order-1";
  ev.time = ts;
  ev.sequence = 7;
  ev.correlation_id = "corr-1";
  ev.actor = "u-1";
  ev.traceparent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
  ev.topic = "shop.order.events.v1";
  ev.key = "order-1";
  ev.data.data = data;
  ev.data.len = sizeof data;
  return ev;
}

static const char *hval(const events_ce_headers *h, const char *name) {
  static char buf[256];
  for (size_t i = 0; i < h->count; i++) {
    if (strcmp(h->h[i].name, name) == 0) {
      memcpy(buf, h->h[i].value, h->h[i].len);
      buf[h->h[i].len] = '\0';
      return buf;
    }
  }
  return NULL;
}

static events_record record_of(const events_envelope *ev, const events_ce_headers *h) {
  return (events_record){.topic = ev->topic,
                         .partition = 2,
                         .offset = 41,
                         .key = ev->key,
                         .key_len = strlen(ev->key),
                         .value = ev->data.data,
                         .value_len = ev->data.len,
                         .headers = h->h,
                         .header_count = h->count};
}

Test(events_id, an_event_id_is_a_canonical_uuid_v7) {
  char id[EVENTS_ID_SIZE];
  events_uuid_v7(id);
  cr_assert_eq(strlen(id), 36);
  for (int i = 0; i < 36; i++) {
    if (i == 8 || i == 13 || i == 18 || i == 23) {
      cr_assert_eq(id[i], '-', "%s", id);
    } else {
      cr_assert(strchr("0123456789abcdef", id[i]) != NULL, "%s", id);
    }
  }
  cr_assert_eq(id[14], '7', "version nibble in %s", id);
  cr_assert(strchr("89ab", id[19]) != NULL, "variant in %s", id);
  /* The first 48 bits are the Unix time in ms. */
  char hex[13];
  memcpy(hex, id, 8);
  memcpy(hex + 8, id + 9, 4);
  hex[12] = '\0';
  long long ms = strtoll(hex, NULL, 16);
  struct timespec now;
  clock_gettime(CLOCK_REALTIME, &now);
  long long now_ms = (long long)now.tv_sec * 1000 + now.tv_nsec / 1000000;
  cr_assert(ms <= now_ms + 1 && ms > now_ms - 2000, "time %lld vs %lld", ms, now_ms);
}

Test(events_id, ids_made_by_one_thread_strictly_increase_even_within_a_millisecond) {
  char prev[EVENTS_ID_SIZE], id[EVENTS_ID_SIZE];
  events_uuid_v7(prev);
  for (int i = 0; i < 20000; i++) {
    events_uuid_v7(id);
    cr_assert_gt(strcmp(id, prev), 0, "%s after %s", id, prev);
    memcpy(prev, id, sizeof id);
  }
}

Test(events_time, ce_time_is_rfc3339_utc_with_milliseconds) {
  char t[EVENTS_TIME_SIZE];
  cr_assert(events_time_format(0, 0, t));
  cr_assert_str_eq(t, "1970-01-01T00:00:00.000Z");
  cr_assert(events_time_format(1795593600, 123456789, t));
  cr_assert_str_eq(t, "2026-11-25T08:00:00.123Z");
  cr_assert(events_time_format(951782400, 999999999, t)); /* a leap day */
  cr_assert_str_eq(t, "2000-02-29T00:00:00.999Z");
  cr_assert(events_time_format(-1, 0, t));
  cr_assert_str_eq(t, "1969-12-31T23:59:59.000Z");
  cr_assert_not(events_time_format(253402300800LL, 0, t), "year 10000");
}

Test(events_time, ce_time_parses_back_with_offsets_and_fractions) {
  int64_t s;
  int32_t ns;
  const char *a = "2026-11-25T08:00:00.123Z";
  cr_assert(events_time_parse(a, strlen(a), &s, &ns));
  cr_assert_eq(s, 1795593600);
  cr_assert_eq(ns, 123000000);
  const char *b = "2026-11-25T10:00:00.5+02:00";
  cr_assert(events_time_parse(b, strlen(b), &s, &ns));
  cr_assert_eq(s, 1795593600);
  cr_assert_eq(ns, 500000000);
  const char *c = "2026-11-25T08:00:00Z";
  cr_assert(events_time_parse(c, strlen(c), &s, &ns));
  cr_assert_eq(ns, 0);
  const char *bad[] = {"2026-11-25",
                       "2026-02-29T00:00:00Z",
                       "2026-11-25T08:00:00",
                       "2026-13-01T00:00:00Z",
                       "2026-11-25T08:00:00.Z",
                       "2026-11-25T08:00:00Zjunk",
                       ""};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    cr_assert_not(events_time_parse(bad[i], strlen(bad[i]), &s, &ns), "%s", bad[i]);
  }
}

Test(events_mapping, an_envelope_becomes_the_cloudevents_headers) {
  events_timestamp ts;
  events_envelope ev = sample(&ts);
  cr_assert_eq(events_envelope_validate(&ev, err, sizeof err), STATUS_OK, "%s", err);
  events_ce_headers h;
  events_ce_headers_build(&h, &ev);
  cr_assert_eq(h.count, 11);
  cr_assert_str_eq(hval(&h, "ce_specversion"), "1.0");
  cr_assert_str_eq(hval(&h, "ce_id"), ev.id);
  cr_assert_str_eq(hval(&h, "ce_source"), "/shop/order-command");
  cr_assert_str_eq(hval(&h, "ce_type"), "shop.order.v1.OrderCreated");
  cr_assert_str_eq(hval(&h, "ce_subject"), "order-1");
  cr_assert_str_eq(hval(&h, "ce_time"), "2026-11-25T08:00:00.123Z");
  cr_assert_str_eq(hval(&h, "ce_sequence"), "7");
  cr_assert_str_eq(hval(&h, "ce_correlationid"), "corr-1");
  cr_assert_str_eq(hval(&h, "ce_actor"), "u-1");
  cr_assert_str_eq(hval(&h, "content-type"), "application/protobuf");
  cr_assert_str_eq(hval(&h, "traceparent"), ev.traceparent);
}

Test(events_mapping, a_record_decodes_back_into_the_same_envelope) {
  events_timestamp ts;
  events_envelope ev = sample(&ts);
  events_ce_headers h;
  events_ce_headers_build(&h, &ev);
  events_record rec = record_of(&ev, &h);
  events_envelope *back = NULL;
  cr_assert_eq(events_envelope_decode(&back, &rec, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_str_eq(back->id, ev.id);
  cr_assert_str_eq(back->source, ev.source);
  cr_assert_str_eq(back->type, ev.type);
  cr_assert_str_eq(back->subject, ev.subject);
  cr_assert_eq(back->time->seconds, ts.seconds);
  cr_assert_eq(back->time->nanos, 123000000, "ce_time keeps milliseconds");
  cr_assert_eq(back->sequence, 7);
  cr_assert_str_eq(back->correlation_id, ev.correlation_id);
  cr_assert_str_eq(back->actor, ev.actor);
  cr_assert_str_eq(back->traceparent, ev.traceparent);
  cr_assert_str_eq(back->topic, ev.topic);
  cr_assert_str_eq(back->key, ev.key);
  cr_assert_eq(back->data.len, ev.data.len);
  cr_assert_arr_eq(back->data.data, ev.data.data, ev.data.len);
  events_envelope_free(back);
}

Test(events_mapping, optional_attributes_are_left_out_when_empty_and_read_as_empty) {
  events_timestamp ts;
  events_envelope ev = sample(&ts);
  ev.subject = "";
  ev.correlation_id = "";
  ev.actor = "";
  ev.traceparent = "";
  ev.sequence = 0;
  ev.time = NULL;
  events_ce_headers h;
  events_ce_headers_build(&h, &ev);
  cr_assert_eq(h.count, 5, "specversion, id, source, type, content-type");
  cr_assert_null(hval(&h, "ce_subject"));
  cr_assert_null(hval(&h, "ce_time"));
  events_record rec = record_of(&ev, &h);
  events_envelope *back = NULL;
  cr_assert_eq(events_envelope_decode(&back, &rec, err, sizeof err), STATUS_OK, "%s", err);
  cr_assert_str_eq(back->subject, "");
  cr_assert_null(back->time);
  cr_assert_eq(back->sequence, 0);
  events_envelope_free(back);
}

/* Decodes ev's headers with one header changed (value NULL: removed). */
static status_code decode_with(const char *name, const char *value) {
  events_timestamp ts;
  events_envelope ev = sample(&ts);
  events_ce_headers h;
  events_ce_headers_build(&h, &ev);
  events_header hs[EVENTS_CE_HEADERS_MAX];
  size_t n = 0;
  for (size_t i = 0; i < h.count; i++) {
    if (strcmp(h.h[i].name, name) != 0) {
      hs[n++] = h.h[i];
    } else if (value != NULL) {
      hs[n++] = (events_header){name, value, strlen(value)};
    }
  }
  events_record rec = record_of(&ev, &h);
  rec.headers = hs;
  rec.header_count = n;
  events_envelope *back = NULL;
  status_code st = events_envelope_decode(&back, &rec, err, sizeof err);
  events_envelope_free(back);
  return st;
}

Test(events_mapping, a_record_without_ce_id_or_ce_type_is_poison) {
  cr_assert_eq(decode_with("ce_id", NULL), STATUS_INVALID_ARGUMENT);
  cr_assert(strstr(err, "ce_id") != NULL, "%s", err);
  cr_assert_eq(decode_with("ce_type", NULL), STATUS_INVALID_ARGUMENT);
  cr_assert(strstr(err, "ce_type") != NULL, "%s", err);
  cr_assert_eq(decode_with("ce_id", ""), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(decode_with("ce_specversion", "0.3"), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(decode_with("ce_time", "yesterday"), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(decode_with("ce_sequence", "-3"), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(decode_with("content-type", "application/json"), STATUS_INVALID_ARGUMENT);
  cr_assert_eq(decode_with("ce_subject", NULL), STATUS_OK, "ce_subject is optional");
}

Test(events_mapping, an_envelope_without_topic_key_or_type_cannot_be_published) {
  events_timestamp ts;
  events_envelope ev = sample(&ts);
  ev.topic = "";
  cr_assert_eq(events_envelope_validate(&ev, err, sizeof err), STATUS_INVALID_ARGUMENT);
  ev = sample(&ts);
  ev.key = "";
  cr_assert_eq(events_envelope_validate(&ev, err, sizeof err), STATUS_INVALID_ARGUMENT);
  ev = sample(&ts);
  ev.type = "";
  cr_assert_eq(events_envelope_validate(&ev, err, sizeof err), STATUS_INVALID_ARGUMENT);
  ev = sample(&ts);
  ev.topic = "bad topic!";
  cr_assert_eq(events_envelope_validate(&ev, err, sizeof err), STATUS_INVALID_ARGUMENT);
}
