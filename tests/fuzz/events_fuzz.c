/* libFuzzer target for the consumers' event decode, without Kafka or a
 * database: a record goes through events_envelope_decode (the CloudEvents
 * headers, as the consumer decodes every record it polls), then through
 * consumer_event_decode with the table of the consumer that takes its
 * ce_type: the protobuf decode and the checks each handler runs before
 * the database. Every consumer's table is here: the user, product and
 * order projections, the order saga, the inventory, payment and
 * notification workers. (The audit worker decodes nothing: it stores the
 * record's bytes.)
 *
 * Input, first byte:
 *   < 0x80: a well-formed record of the (consumer, type) pair number
 *           data[0] (modulo their count), ce_sequence data[1] (0: none),
 *           value = the rest: mutations reach the typed decoders and the
 *           checks;
 *   >= 0x80: the rest is the record's headers, each a length byte for the
 *           name, the name, a length byte for the value, the value (0xff:
 *           a NULL value), until a zero name length; then the value. The
 *           type is looked up in every table.
 *
 * Invariants (abort on violation): the decoders answer OK or
 * INVALID_ARGUMENT, with a reason when they refuse; a decoded envelope
 * has an id, a source and a type; a decoded event is of the type its
 * ce_type names, and its check accepts it again. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "consumers/consumers.h"
#include "events/consumer.h"
#include "events/events.h"

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Every consumer that decodes (the audit log takes records undecoded). */
typedef consumer_spec fz_consumer;
/* Every (consumer, type) pair, for the first input byte. */
static struct {
  const fz_consumer *c;
  size_t k;
} fz_pairs[256];
static size_t fz_n_pairs;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  (void)argc;
  (void)argv;
  for (size_t i = 0; i < consumers_all_count; i++)
    for (size_t k = 0; k < consumers_all[i]->n_types; k++) {
      if (fz_n_pairs == sizeof fz_pairs / sizeof fz_pairs[0]) abort();
      fz_pairs[fz_n_pairs].c = consumers_all[i];
      fz_pairs[fz_n_pairs++].k = k;
    }
  return 0;
}

static void run_consumer(const fz_consumer *c, const events_envelope *ev) {
  ProtobufCMessage *m = NULL;
  size_t k = 0;
  char err[512] = "";
  status_code st = consumer_event_decode(ev, c->types, c->n_types, &m, &k, err, sizeof err);
  if (st == STATUS_INVALID_ARGUMENT) {
    if (m != NULL || err[0] == '\0') abort();
    return;
  }
  if (st != STATUS_OK) abort();
  if (m == NULL) return; /* a type this consumer does not take */
  if (k >= c->n_types || m->descriptor != c->types[k].desc ||
      strcmp(ev->type, m->descriptor->name) != 0)
    abort();
  if (c->types[k].check != NULL && c->types[k].check(m, ev) != NULL) abort();
  protobuf_c_message_free_unpacked(m, NULL);
}

static void run_record(const events_record *rec, const fz_consumer *only) {
  events_envelope *ev = NULL;
  char err[512] = "";
  status_code st = events_envelope_decode(&ev, rec, err, sizeof err);
  if (st == STATUS_INVALID_ARGUMENT) {
    if (ev != NULL || err[0] == '\0') abort();
    return;
  }
  if (st != STATUS_OK || ev == NULL) abort();
  if (ev->id == NULL || ev->id[0] == '\0' || ev->source == NULL || ev->source[0] == '\0' ||
      ev->type == NULL || ev->type[0] == '\0')
    abort();
  if (only != NULL) {
    run_consumer(only, ev);
  } else {
    for (size_t i = 0; i < consumers_all_count; i++)
      if (consumers_all[i]->types != NULL) run_consumer(consumers_all[i], ev);
  }
  events_envelope_free(ev);
}

#define FZ_MAX_HEADERS 32

static void run_raw(const uint8_t *p, size_t n) {
  events_header h[FZ_MAX_HEADERS];
  char names[FZ_MAX_HEADERS][256];
  size_t nh = 0;
  while (n > 0 && nh < FZ_MAX_HEADERS) {
    size_t nl = p[0];
    p++, n--;
    if (nl == 0 || nl > n) break;
    memcpy(names[nh], p, nl);
    names[nh][nl] = '\0';
    p += nl, n -= nl;
    if (n == 0) break;
    size_t vl = p[0];
    p++, n--;
    h[nh].name = names[nh];
    if (vl == 0xff) {
      h[nh].value = NULL;
      h[nh].len = 0;
    } else {
      if (vl > n) vl = n;
      h[nh].value = p;
      h[nh].len = vl;
      p += vl, n -= vl;
    }
    nh++;
  }
  events_record rec = {.topic = "shop.fuzz.events.v1",
                       .key = "k",
                       .key_len = 1,
                       .value = p,
                       .value_len = n,
                       .headers = h,
                       .header_count = nh};
  run_record(&rec, NULL);
}

static void run_typed(uint8_t pick, uint8_t sequence, const uint8_t *value, size_t n) {
  const fz_consumer *c = fz_pairs[pick % fz_n_pairs].c;
  const char *type = c->types[fz_pairs[pick % fz_n_pairs].k].desc->name;
  char seq[8];
  snprintf(seq, sizeof seq, "%u", (unsigned)sequence);
  events_header h[] = {
      {"ce_specversion", "1.0", 3},
      {"ce_id", "0190c3c2-7e4a-7b3c-8f00-1234567890ab", 36},
      {"ce_source", "fuzz", 4},
      {"ce_type", type, strlen(type)},
      {"ce_time", "2026-11-25T12:00:00.123Z", 24},
      {"content-type", "application/protobuf", 20},
      {"ce_sequence", seq, strlen(seq)},
  };
  events_record rec = {.topic = "shop.fuzz.events.v1",
                       .key = "k",
                       .key_len = 1,
                       .value = value,
                       .value_len = n,
                       .headers = h,
                       .header_count = sequence != 0 ? 7 : 6};
  run_record(&rec, c);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size == 0) return 0;
  /* An exact-size copy of the value, so that a read past it is caught. */
  uint8_t *copy = malloc(size);
  if (copy == NULL) return 0;
  memcpy(copy, data, size);
  if (copy[0] >= 0x80)
    run_raw(copy + 1, size - 1);
  else if (size >= 2)
    run_typed(copy[0], copy[1], copy + 2, size - 2);
  free(copy);
  return 0;
}
