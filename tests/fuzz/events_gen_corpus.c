/* Writes the seed corpus of events_fuzz into DIR: for every (consumer,
 * type) pair a well-formed event of that type (every field set: ids are
 * UUIDs, other strings short words, numbers small and positive, one
 * element in each repeated field), and a few records in the raw header
 * form. Run by hand once (the seeds are committed):
 *
 *   build/tests/events_gen_corpus tests/fuzz/corpus/events
 *
 * The pairs are numbered as events_fuzz numbers them: the consumers'
 * tables in the order of consumers_all (consumers.h). */
#include <protobuf-c/protobuf-c.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "consumers/consumers.h"
#include "events/consumer.h"

#define ID "0190c3c2-7e4a-7b3c-8f00-1234567890ab"

static char *str_for(const ProtobufCFieldDescriptor *f) {
  const char *n = f->name;
  size_t l = strlen(n);
  if (l >= 3 && strcmp(n + l - 3, "_id") == 0) return strdup(ID);
  if (strcmp(n, "currency") == 0) return strdup("EUR");
  if (strcmp(n, "email") == 0) return strdup("ada@example.com");
  return strdup("seed");
}

/* Sets every field of m (depth-limited for recursive types). */
static void fill(ProtobufCMessage *m, int depth) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    char *at = (char *)m + f->offset;
    bool rep = f->label == PROTOBUF_C_LABEL_REPEATED;
    if (rep) {
      if (f->type != PROTOBUF_C_TYPE_MESSAGE || depth > 3) continue;
      const ProtobufCMessageDescriptor *sd = f->descriptor;
      ProtobufCMessage **arr = malloc(sizeof *arr);
      arr[0] = calloc(1, sd->sizeof_message);
      protobuf_c_message_init(sd, arr[0]);
      fill(arr[0], depth + 1);
      *(size_t *)((char *)m + f->quantifier_offset) = 1;
      *(ProtobufCMessage ***)at = arr;
      continue;
    }
    if (f->quantifier_offset != 0 && (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF)) {
      /* Only the first member of a oneof. */
      uint32_t *which = (uint32_t *)((char *)m + f->quantifier_offset);
      if (*which != 0) continue;
      *which = f->id;
    }
    switch (f->type) {
    case PROTOBUF_C_TYPE_STRING:
      *(char **)at = str_for(f);
      break;
    case PROTOBUF_C_TYPE_MESSAGE:
      if (depth <= 3) {
        ProtobufCMessage *sub =
            calloc(1, ((const ProtobufCMessageDescriptor *)f->descriptor)->sizeof_message);
        protobuf_c_message_init(f->descriptor, sub);
        fill(sub, depth + 1);
        *(ProtobufCMessage **)at = sub;
      }
      break;
    case PROTOBUF_C_TYPE_INT32:
    case PROTOBUF_C_TYPE_SINT32:
    case PROTOBUF_C_TYPE_SFIXED32:
    case PROTOBUF_C_TYPE_UINT32:
    case PROTOBUF_C_TYPE_FIXED32:
    case PROTOBUF_C_TYPE_ENUM:
      *(int32_t *)at = 1;
      break;
    case PROTOBUF_C_TYPE_INT64:
    case PROTOBUF_C_TYPE_SINT64:
    case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64:
    case PROTOBUF_C_TYPE_FIXED64:
      *(int64_t *)at = 3;
      break;
    case PROTOBUF_C_TYPE_BOOL:
      *(protobuf_c_boolean *)at = 1;
      break;
    default:
      break;
    }
  }
}

static void write_file(const char *dir, const char *name, const uint8_t *b, size_t n) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", dir, name);
  FILE *f = fopen(path, "wb");
  if (f == NULL || fwrite(b, 1, n, f) != n) {
    perror(path);
    exit(1);
  }
  fclose(f);
}

static size_t put_header(uint8_t *b, const char *name, const char *value) {
  size_t nl = strlen(name), vl = strlen(value);
  b[0] = (uint8_t)nl;
  memcpy(b + 1, name, nl);
  b[1 + nl] = (uint8_t)vl;
  memcpy(b + 2 + nl, value, vl);
  return 2 + nl + vl;
}

int main(int argc, char **argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  mkdir(argv[1], 0755);
  unsigned pair = 0;
  static uint8_t buf[65536];
  for (size_t c = 0; c < consumers_all_count; c++) {
    for (size_t k = 0; k < consumers_all[c]->n_types; k++, pair++) {
      const ProtobufCMessageDescriptor *d = consumers_all[c]->types[k].desc;
      ProtobufCMessage *m = calloc(1, d->sizeof_message);
      protobuf_c_message_init(d, m);
      fill(m, 0);
      buf[0] = (uint8_t)pair;
      buf[1] = 3; /* ce_sequence */
      size_t n = protobuf_c_message_pack(m, buf + 2);
      char name[160];
      snprintf(name, sizeof name, "%02u_%s", pair, d->name);
      write_file(argv[1], name, buf, n + 2);
      protobuf_c_message_free_unpacked(m, NULL);
      if (c == 0 && k == 0) {
        /* The same event in the raw header form. */
        uint8_t raw[1024];
        size_t r = 0;
        raw[r++] = 0x80;
        r += put_header(raw + r, "ce_specversion", "1.0");
        r += put_header(raw + r, "ce_id", ID);
        r += put_header(raw + r, "ce_source", "user-command");
        r += put_header(raw + r, "ce_type", d->name);
        r += put_header(raw + r, "ce_time", "2026-11-25T12:00:00.123Z");
        r += put_header(raw + r, "ce_sequence", "7");
        r += put_header(raw + r, "ce_subject", ID);
        r += put_header(raw + r, "ce_correlationid", "req-1");
        r += put_header(raw + r, "ce_actor", ID);
        r += put_header(raw + r, "content-type", "application/protobuf");
        r += put_header(raw + r, "traceparent",
                        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
        raw[r++] = 0;
        memcpy(raw + r, buf + 2, n);
        write_file(argv[1], "raw_headers", raw, r + n);
      }
    }
  }
  return 0;
}
