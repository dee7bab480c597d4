/* JSON <-> protobuf through protoc-c descriptors (the proto3 JSON mapping). */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pbjson/pbjson.h"

#define PATH_MAX_LEN 512

#define MEMBER(m, off, type) (*(type *)((char *)(m) + (off)))

const ProtobufCMessageDescriptor *pbjson_message_find(const char *full_name) {
  if (full_name == NULL) return NULL;
  if (full_name[0] == '.') full_name++;
  for (size_t i = 0; pbjson_message_registry[i] != NULL; i++)
    if (strcmp(pbjson_message_registry[i]->name, full_name) == 0) return pbjson_message_registry[i];
  return NULL;
}

const ProtobufCServiceDescriptor *pbjson_service_find(const char *full_name) {
  if (full_name == NULL) return NULL;
  if (full_name[0] == '.') full_name++;
  for (size_t i = 0; pbjson_service_registry[i] != NULL; i++)
    if (strcmp(pbjson_service_registry[i]->name, full_name) == 0) return pbjson_service_registry[i];
  return NULL;
}

/* ---- base64 ----------------------------------------------------------- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *pbjson_base64_encode(const void *data, size_t n) {
  const uint8_t *p = data;
  char *out = malloc(4 * ((n + 2) / 3) + 1);
  if (out == NULL) return NULL;
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)p[i] << 16;
    if (i + 1 < n) v |= (uint32_t)p[i + 1] << 8;
    if (i + 2 < n) v |= p[i + 2];
    out[o++] = b64[(v >> 18) & 63];
    out[o++] = b64[(v >> 12) & 63];
    out[o++] = i + 1 < n ? b64[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? b64[v & 63] : '=';
  }
  out[o] = '\0';
  return out;
}

static int b64_value(char c) {
  if (c >= 'A' && c <= 'Z') return c - 'A';
  if (c >= 'a' && c <= 'z') return c - 'a' + 26;
  if (c >= '0' && c <= '9') return c - '0' + 52;
  if (c == '+' || c == '-') return 62;
  if (c == '/' || c == '_') return 63;
  return -1;
}

bool pbjson_base64_decode(const char *s, uint8_t **out, size_t *out_len) {
  size_t n = strlen(s);
  while (n > 0 && s[n - 1] == '=') n--;
  if (n % 4 == 1) return false;
  uint8_t *buf = n ? malloc(n * 3 / 4 + 3) : NULL;
  if (n && buf == NULL) return false;
  size_t o = 0;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    int v = b64_value(s[i]);
    if (v < 0) {
      free(buf);
      return false;
    }
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      buf[o++] = (uint8_t)(acc >> bits);
    }
  }
  *out = buf;
  *out_len = o;
  return true;
}

/* ---- names ------------------------------------------------------------ */

void pbjson_camel_name(const char *name, char *out, size_t len) {
  size_t o = 0;
  bool up = false;
  for (const char *p = name; *p && o + 1 < len; p++) {
    if (*p == '_') {
      up = true;
      continue;
    }
    out[o++] = up && *p >= 'a' && *p <= 'z' ? (char)(*p - 'a' + 'A') : *p;
    up = false;
  }
  out[o] = '\0';
}

const ProtobufCFieldDescriptor *pbjson_field_find(const ProtobufCMessageDescriptor *d,
                                                  const char *key) {
  const ProtobufCFieldDescriptor *f = protobuf_c_message_descriptor_get_field_by_name(d, key);
  if (f != NULL) return f;
  char camel[128];
  for (unsigned i = 0; i < d->n_fields; i++) {
    pbjson_camel_name(d->fields[i].name, camel, sizeof camel);
    if (strcmp(camel, key) == 0) return &d->fields[i];
  }
  return NULL;
}

/* A map field: repeated XxxEntry with fields key (1) and value (2). */
static bool is_map_entry(const ProtobufCFieldDescriptor *f) {
  if (f->label != PROTOBUF_C_LABEL_REPEATED || f->type != PROTOBUF_C_TYPE_MESSAGE) return false;
  const ProtobufCMessageDescriptor *d = f->descriptor;
  size_t n = strlen(d->short_name);
  return n > 5 && strcmp(d->short_name + n - 5, "Entry") == 0 && d->n_fields == 2 &&
         strcmp(d->fields[0].name, "key") == 0 && strcmp(d->fields[1].name, "value") == 0;
}

static size_t type_size(ProtobufCType t) {
  switch (t) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_ENUM:
    return 4;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
  case PROTOBUF_C_TYPE_DOUBLE:
    return 8;
  case PROTOBUF_C_TYPE_BOOL:
    return sizeof(protobuf_c_boolean);
  case PROTOBUF_C_TYPE_STRING:
  case PROTOBUF_C_TYPE_MESSAGE:
    return sizeof(void *);
  case PROTOBUF_C_TYPE_BYTES:
    return sizeof(ProtobufCBinaryData);
  }
  return 0;
}

/* ---- protobuf -> JSON ------------------------------------------------- */

static json_t *message_to_json(const ProtobufCMessage *m);

static json_t *value_to_json(const ProtobufCFieldDescriptor *f, const void *v) {
  char num[32];
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    return json_integer(*(const int32_t *)v);
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    return json_integer(*(const uint32_t *)v);
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    snprintf(num, sizeof num, "%" PRId64, *(const int64_t *)v);
    return json_string(num);
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    snprintf(num, sizeof num, "%" PRIu64, *(const uint64_t *)v);
    return json_string(num);
  case PROTOBUF_C_TYPE_FLOAT:
    return json_real(*(const float *)v);
  case PROTOBUF_C_TYPE_DOUBLE:
    return json_real(*(const double *)v);
  case PROTOBUF_C_TYPE_BOOL:
    return json_boolean(*(const protobuf_c_boolean *)v);
  case PROTOBUF_C_TYPE_ENUM: {
    int value = *(const int *)v;
    const ProtobufCEnumValue *ev = protobuf_c_enum_descriptor_get_value(f->descriptor, value);
    return ev != NULL ? json_string(ev->name) : json_integer(value);
  }
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)v;
    return json_string(s != NULL ? s : "");
  }
  case PROTOBUF_C_TYPE_BYTES: {
    const ProtobufCBinaryData *b = v;
    char *s = pbjson_base64_encode(b->data, b->len);
    if (s == NULL) return NULL;
    json_t *j = json_string(s);
    free(s);
    return j;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    const ProtobufCMessage *sub = *(ProtobufCMessage *const *)v;
    return sub != NULL ? message_to_json(sub) : json_object();
  }
  }
  return NULL;
}

static bool value_is_default(const ProtobufCFieldDescriptor *f, const void *v) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_STRING: {
    const char *s = *(char *const *)v;
    return s == NULL || s[0] == '\0';
  }
  case PROTOBUF_C_TYPE_BYTES:
    return ((const ProtobufCBinaryData *)v)->len == 0;
  case PROTOBUF_C_TYPE_MESSAGE:
    return *(void *const *)v == NULL;
  default: {
    static const uint8_t zero[8];
    return memcmp(v, zero, type_size(f->type)) == 0;
  }
  }
}

static json_t *message_to_json(const ProtobufCMessage *m) {
  const ProtobufCMessageDescriptor *d = m->descriptor;
  json_t *obj = json_object();
  if (obj == NULL) return NULL;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    const void *v = (const char *)m + f->offset;
    char name[128];
    pbjson_camel_name(f->name, name, sizeof name);
    json_t *j = NULL;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = MEMBER(m, f->quantifier_offset, size_t);
      if (n == 0) continue;
      const char *arr = *(char *const *)v;
      size_t sz = type_size(f->type);
      if (is_map_entry(f)) {
        j = json_object();
        for (size_t k = 0; j != NULL && k < n; k++) {
          const ProtobufCMessage *e = *(ProtobufCMessage *const *)(arr + k * sz);
          const ProtobufCFieldDescriptor *kf = &e->descriptor->fields[0];
          const ProtobufCFieldDescriptor *vf = &e->descriptor->fields[1];
          json_t *kj = value_to_json(kf, (const char *)e + kf->offset);
          json_t *vj = value_to_json(vf, (const char *)e + vf->offset);
          char kbuf[32];
          const char *ks = kbuf;
          if (json_is_string(kj))
            ks = json_string_value(kj);
          else if (json_is_integer(kj))
            snprintf(kbuf, sizeof kbuf, "%" JSON_INTEGER_FORMAT, json_integer_value(kj));
          else
            snprintf(kbuf, sizeof kbuf, "%s", json_is_true(kj) ? "true" : "false");
          if (vj == NULL || json_object_set_new(j, ks, vj) != 0) {
            json_decref(j);
            j = NULL;
          }
          json_decref(kj);
        }
      } else {
        j = json_array();
        for (size_t k = 0; j != NULL && k < n; k++) {
          json_t *e = value_to_json(f, arr + k * sz);
          if (e == NULL || json_array_append_new(j, e) != 0) {
            json_decref(j);
            j = NULL;
          }
        }
      }
    } else {
      if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
        if (MEMBER(m, f->quantifier_offset, uint32_t) != f->id) continue;
      } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
                 f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
        if (!MEMBER(m, f->quantifier_offset, protobuf_c_boolean)) continue;
      } else if (f->label != PROTOBUF_C_LABEL_REQUIRED && value_is_default(f, v)) {
        continue;
      }
      j = value_to_json(f, v);
    }
    if (j == NULL || json_object_set_new(obj, name, j) != 0) {
      json_decref(obj);
      return NULL;
    }
  }
  return obj;
}

status_code pbjson_from_message(json_t **out, const ProtobufCMessage *m, char *errbuf,
                                size_t errlen) {
  *out = message_to_json(m);
  if (*out == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  return STATUS_OK;
}

status_code pbjson_from_bytes(json_t **out, const ProtobufCMessageDescriptor *desc,
                              const void *data, size_t len, char *errbuf, size_t errlen) {
  *out = NULL;
  ProtobufCMessage *m = protobuf_c_message_unpack(desc, NULL, len, data);
  if (m == NULL) {
    status_seterr(errbuf, errlen, "bytes do not decode as %s", desc->name);
    return STATUS_INVALID_ARGUMENT;
  }
  status_code rc = pbjson_from_message(out, m, errbuf, errlen);
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* ---- JSON -> protobuf ------------------------------------------------- */

typedef struct jctx {
  char path[PATH_MAX_LEN];
  char *errbuf;
  size_t errlen;
} jctx;

static status_code fail(jctx *c, const char *fmt, const char *detail) {
  char what[256];
  snprintf(what, sizeof what, fmt, detail);
  snprintf(c->errbuf, c->errlen, "%s: %s", c->path[0] ? c->path : "(root)", what);
  return STATUS_INVALID_ARGUMENT;
}

static status_code json_to_fields(jctx *c, ProtobufCMessage *m, const json_t *j);

static bool parse_int(const json_t *j, bool is_signed, int64_t *si, uint64_t *ui) {
  if (json_is_integer(j)) {
    json_int_t v = json_integer_value(j);
    if (!is_signed && v < 0) return false;
    *si = v;
    *ui = (uint64_t)v;
    return true;
  }
  if (json_is_real(j)) {
    double d = json_real_value(j);
    if (d != (double)(int64_t)d) return false;
    if (!is_signed && d < 0) return false;
    *si = (int64_t)d;
    *ui = (uint64_t)*si;
    return true;
  }
  if (!json_is_string(j)) return false;
  const char *s = json_string_value(j);
  if (*s == '\0') return false;
  char *end;
  errno = 0;
  if (is_signed) {
    long long v = strtoll(s, &end, 10);
    *si = v;
    *ui = (uint64_t)v;
  } else {
    if (*s == '-') return false;
    unsigned long long v = strtoull(s, &end, 10);
    *ui = v;
    *si = (int64_t)v;
  }
  return errno == 0 && *end == '\0';
}

/* Stores the JSON value j into v, a slot of field f's type (v zeroed or
 * holding a previous value that may be replaced). */
static status_code value_from_json(jctx *c, const ProtobufCFieldDescriptor *f, void *v,
                                   const json_t *j) {
  int64_t si = 0;
  uint64_t ui = 0;
  switch (f->type) {
  case PROTOBUF_C_TYPE_INT32:
  case PROTOBUF_C_TYPE_SINT32:
  case PROTOBUF_C_TYPE_SFIXED32:
    if (!parse_int(j, true, &si, &ui) || si < INT32_MIN || si > INT32_MAX)
      return fail(c, "%s", "expected a 32-bit integer");
    *(int32_t *)v = (int32_t)si;
    return STATUS_OK;
  case PROTOBUF_C_TYPE_UINT32:
  case PROTOBUF_C_TYPE_FIXED32:
    if (!parse_int(j, false, &si, &ui) || ui > UINT32_MAX)
      return fail(c, "%s", "expected an unsigned 32-bit integer");
    *(uint32_t *)v = (uint32_t)ui;
    return STATUS_OK;
  case PROTOBUF_C_TYPE_INT64:
  case PROTOBUF_C_TYPE_SINT64:
  case PROTOBUF_C_TYPE_SFIXED64:
    if (!parse_int(j, true, &si, &ui)) return fail(c, "%s", "expected a 64-bit integer");
    *(int64_t *)v = si;
    return STATUS_OK;
  case PROTOBUF_C_TYPE_UINT64:
  case PROTOBUF_C_TYPE_FIXED64:
    if (!parse_int(j, false, &si, &ui)) return fail(c, "%s", "expected an unsigned 64-bit integer");
    *(uint64_t *)v = ui;
    return STATUS_OK;
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    if (!json_is_number(j)) return fail(c, "%s", "expected a number");
    double d = json_number_value(j);
    if (f->type == PROTOBUF_C_TYPE_FLOAT)
      *(float *)v = (float)d;
    else
      *(double *)v = d;
    return STATUS_OK;
  }
  case PROTOBUF_C_TYPE_BOOL:
    if (!json_is_boolean(j)) return fail(c, "%s", "expected true or false");
    *(protobuf_c_boolean *)v = json_is_true(j);
    return STATUS_OK;
  case PROTOBUF_C_TYPE_ENUM: {
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    if (json_is_string(j)) {
      const ProtobufCEnumValue *ev =
          protobuf_c_enum_descriptor_get_value_by_name(ed, json_string_value(j));
      if (ev == NULL) return fail(c, "unknown value \"%s\"", json_string_value(j));
      *(int *)v = ev->value;
      return STATUS_OK;
    }
    if (json_is_integer(j) && json_integer_value(j) >= INT32_MIN &&
        json_integer_value(j) <= INT32_MAX) {
      *(int *)v = (int)json_integer_value(j);
      return STATUS_OK;
    }
    return fail(c, "expected a value name of %s", ed->name);
  }
  case PROTOBUF_C_TYPE_STRING: {
    if (!json_is_string(j)) return fail(c, "%s", "expected a string");
    char *s = strdup(json_string_value(j));
    if (s == NULL) return fail(c, "%s", "out of memory");
    char **slot = v;
    if (*slot != NULL && *slot != (char *)f->default_value && *slot != protobuf_c_empty_string)
      free(*slot);
    *slot = s;
    return STATUS_OK;
  }
  case PROTOBUF_C_TYPE_BYTES: {
    if (!json_is_string(j)) return fail(c, "%s", "expected a base64 string");
    ProtobufCBinaryData *b = v;
    uint8_t *data;
    size_t len;
    if (!pbjson_base64_decode(json_string_value(j), &data, &len))
      return fail(c, "%s", "not valid base64");
    free(b->data);
    b->data = data;
    b->len = len;
    return STATUS_OK;
  }
  case PROTOBUF_C_TYPE_MESSAGE: {
    if (!json_is_object(j)) return fail(c, "%s", "expected an object");
    const ProtobufCMessageDescriptor *sd = f->descriptor;
    ProtobufCMessage **slot = v;
    if (*slot == NULL) {
      ProtobufCMessage *sub = malloc(sd->sizeof_message);
      if (sub == NULL) return fail(c, "%s", "out of memory");
      protobuf_c_message_init(sd, sub);
      *slot = sub;
    }
    return json_to_fields(c, *slot, j);
  }
  }
  return fail(c, "%s", "unsupported field type");
}

static status_code field_from_json(jctx *c, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f,
                                   const json_t *j) {
  void *v = (char *)m + f->offset;
  if (f->label == PROTOBUF_C_LABEL_REPEATED) {
    bool map = is_map_entry(f);
    if (map ? !json_is_object(j) : !json_is_array(j))
      return fail(c, "%s", map ? "expected an object" : "expected an array");
    size_t n = map ? json_object_size(j) : json_array_size(j);
    size_t sz = type_size(f->type);
    size_t *count = (size_t *)((char *)m + f->quantifier_offset);
    if (*count != 0) return fail(c, "%s", "given twice");
    if (n == 0) return STATUS_OK;
    char *arr = calloc(n, sz);
    if (arr == NULL) return fail(c, "%s", "out of memory");
    *(char **)v = arr;
    *count = n;
    size_t base = strlen(c->path);
    status_code rc = STATUS_OK;
    if (map) {
      const ProtobufCMessageDescriptor *ed = f->descriptor;
      const char *key;
      json_t *val;
      size_t k = 0;
      json_object_foreach((json_t *)j, key, val) {
        snprintf(c->path + base, sizeof c->path - base, "[\"%s\"]", key);
        ProtobufCMessage *e = malloc(ed->sizeof_message);
        if (e == NULL) return fail(c, "%s", "out of memory");
        protobuf_c_message_init(ed, e);
        ((ProtobufCMessage **)arr)[k++] = e;
        json_t *kj = json_string(key);
        rc = value_from_json(c, &ed->fields[0], (char *)e + ed->fields[0].offset, kj);
        json_decref(kj);
        if (rc == STATUS_OK)
          rc = value_from_json(c, &ed->fields[1], (char *)e + ed->fields[1].offset, val);
        if (rc != STATUS_OK) return rc;
      }
    } else {
      for (size_t k = 0; k < n; k++) {
        snprintf(c->path + base, sizeof c->path - base, "[%zu]", k);
        rc = value_from_json(c, f, arr + k * sz, json_array_get(j, k));
        if (rc != STATUS_OK) return rc;
      }
    }
    c->path[base] = '\0';
    return STATUS_OK;
  }
  if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
    uint32_t *which = (uint32_t *)((char *)m + f->quantifier_offset);
    if (*which != 0) {
      if (*which == f->id) return fail(c, "%s", "given twice");
      return fail(c, "%s", "another member of its oneof is already set");
    }
    /* Members share storage: the slot is zero until the case is set. */
    memset(v, 0, type_size(f->type));
    *which = f->id;
  } else if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->quantifier_offset != 0 &&
             f->type != PROTOBUF_C_TYPE_MESSAGE && f->type != PROTOBUF_C_TYPE_STRING) {
    MEMBER(m, f->quantifier_offset, protobuf_c_boolean) = 1;
  }
  return value_from_json(c, f, v, j);
}

static status_code json_to_fields(jctx *c, ProtobufCMessage *m, const json_t *j) {
  const char *key;
  json_t *val;
  size_t base = strlen(c->path);
  json_object_foreach((json_t *)j, key, val) {
    snprintf(c->path + base, sizeof c->path - base, "%s%s", base ? "." : "", key);
    const ProtobufCFieldDescriptor *f = pbjson_field_find(m->descriptor, key);
    if (f == NULL) return fail(c, "unknown field of %s", m->descriptor->name);
    if (json_is_null(val)) continue;
    status_code rc = field_from_json(c, m, f, val);
    if (rc != STATUS_OK) return rc;
  }
  c->path[base] = '\0';
  return STATUS_OK;
}

status_code pbjson_to_message(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                              const json_t *j, char *errbuf, size_t errlen) {
  *out = NULL;
  jctx c = {.errbuf = errbuf, .errlen = errlen};
  if (!json_is_object(j)) {
    status_seterr(errbuf, errlen, "%s must be a JSON object", desc->name);
    return STATUS_INVALID_ARGUMENT;
  }
  ProtobufCMessage *m = malloc(desc->sizeof_message);
  if (m == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  protobuf_c_message_init(desc, m);
  status_code rc = json_to_fields(&c, m, j);
  if (rc != STATUS_OK) {
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
  }
  *out = m;
  return STATUS_OK;
}

status_code pbjson_to_bytes(uint8_t **out, size_t *out_len, const ProtobufCMessageDescriptor *desc,
                            const json_t *j, char *errbuf, size_t errlen) {
  ProtobufCMessage *m;
  status_code rc = pbjson_to_message(&m, desc, j, errbuf, errlen);
  if (rc != STATUS_OK) return rc;
  size_t n = protobuf_c_message_get_packed_size(m);
  *out = malloc(n ? n : 1);
  if (*out == NULL) {
    protobuf_c_message_free_unpacked(m, NULL);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  *out_len = protobuf_c_message_pack(m, *out);
  protobuf_c_message_free_unpacked(m, NULL);
  return STATUS_OK;
}
