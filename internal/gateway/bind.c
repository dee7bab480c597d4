/* The gateway's binding of an HTTP request's path variables and query
 * parameters to the fields of the RPC's request, as JSON that pbjson then
 * reads (grpc-gateway's rules; gateway_internal.h). */
#include <ctype.h>
#include <microhttpd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"
#include "pbjson/pbjson.h"

static bool bind_fail(gateway_bind_err *e, const char *field, const char *msg) {
  snprintf(e->field, sizeof e->field, "%.*s", (int)sizeof e->field - 1, field);
  snprintf(e->msg, sizeof e->msg, "%.*s", (int)sizeof e->msg - 1, msg);
  return false;
}

/* The member of obj for field f, under its proto or its JSON name. */
static json_t *member(json_t *obj, const ProtobufCFieldDescriptor *f, char *camel, size_t len) {
  pbjson_camel_name(f->name, camel, len);
  json_t *v = json_object_get(obj, f->name);
  return v != NULL ? v : json_object_get(obj, camel);
}

/* A text value (path segment or query parameter) as JSON for field f. */
static json_t *text_value(const ProtobufCFieldDescriptor *f, const char *v) {
  switch (f->type) {
  case PROTOBUF_C_TYPE_BOOL:
    if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0) return json_true();
    if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0) return json_false();
    return NULL;
  case PROTOBUF_C_TYPE_FLOAT:
  case PROTOBUF_C_TYPE_DOUBLE: {
    char *end;
    double d = strtod(v, &end);
    return *v && *end == '\0' ? json_real(d) : NULL;
  }
  case PROTOBUF_C_TYPE_ENUM: {
    const char *p = v + (*v == '-');
    bool digits = *p != '\0';
    for (; *p; p++) digits = digits && isdigit((unsigned char)*p);
    return digits ? json_integer(strtoll(v, NULL, 10)) : json_string(v);
  }
  default:
    /* Integers travel as strings, which pbjson parses and range-checks;
     * strings and base64 bytes as they are. */
    return json_string(v);
  }
}

bool gateway_bind_text(json_t *root, const ProtobufCMessageDescriptor *d, const char *key,
                       const char *value, bool overwrite, gateway_bind_err *e) {
  char buf[256];
  if (snprintf(buf, sizeof buf, "%s", key) >= (int)sizeof buf)
    return bind_fail(e, "query", "parameter name too long");
  json_t *obj = root;
  char *save = NULL, *seg = strtok_r(buf, ".", &save);
  while (seg != NULL) {
    const ProtobufCFieldDescriptor *f = d != NULL ? pbjson_field_find(d, seg) : NULL;
    if (f == NULL) {
      char m[200];
      snprintf(m, sizeof m, "unknown field \"%s\" of %s", seg, d ? d->name : "?");
      return bind_fail(e, key, m);
    }
    char *next = strtok_r(NULL, ".", &save);
    char camel[128];
    json_t *cur = member(obj, f, camel, sizeof camel);
    if (next != NULL) {
      if (f->type != PROTOBUF_C_TYPE_MESSAGE || f->label == PROTOBUF_C_LABEL_REPEATED)
        return bind_fail(e, key, "only a singular message field has sub-fields");
      if (cur == NULL) {
        cur = json_object();
        json_object_set_new(obj, f->name, cur);
      } else if (!json_is_object(cur)) {
        return bind_fail(e, key, "expected an object");
      }
      obj = cur;
      d = f->descriptor;
      seg = next;
      continue;
    }
    if (f->type == PROTOBUF_C_TYPE_MESSAGE)
      return bind_fail(e, key, "a message field cannot be set from text; set its fields");
    json_t *jv = text_value(f, value);
    if (jv == NULL) return bind_fail(e, key, "not a value of the field's type");
    if (f->label == PROTOBUF_C_LABEL_REPEATED && !overwrite) {
      if (cur == NULL) {
        cur = json_array();
        json_object_set_new(obj, f->name, cur);
      }
      if (!json_is_array(cur)) {
        json_decref(jv);
        return bind_fail(e, key, "given twice");
      }
      json_array_append_new(cur, jv);
      return true;
    }
    if (cur != NULL && !overwrite) {
      json_decref(jv);
      return bind_fail(e, key, "given twice");
    }
    json_object_del(obj, camel);
    json_object_set_new(obj, f->name, jv);
    return true;
  }
  return bind_fail(e, key, "empty parameter name");
}

/* A query parameter may not name a field the path or the body binds. */
static bool bound_elsewhere(const gateway_route *rt, const ProtobufCMessageDescriptor *d,
                            const char *key) {
  if (rt->body != NULL && strcmp(rt->body, "*") == 0) return true;
  /* Compare in proto names: translate key segment by segment. */
  char proto[256] = "", buf[256];
  snprintf(buf, sizeof buf, "%s", key);
  char *save = NULL;
  size_t n = 0;
  for (char *seg = strtok_r(buf, ".", &save); seg != NULL && d != NULL;
       seg = strtok_r(NULL, ".", &save)) {
    const ProtobufCFieldDescriptor *f = pbjson_field_find(d, seg);
    if (f == NULL) return false;
    n += (size_t)snprintf(proto + n, sizeof proto - n, "%s%s", n ? "." : "", f->name);
    if (n >= sizeof proto) return false;
    for (size_t i = 0; i < rt->n_segments; i++)
      if (rt->segments[i].field != NULL && strcmp(rt->segments[i].field, proto) == 0) return true;
    if (rt->body != NULL && strcmp(rt->body, proto) == 0) return true;
    d = f->type == PROTOBUF_C_TYPE_MESSAGE ? f->descriptor : NULL;
  }
  return false;
}

enum MHD_Result gateway_query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value) {
  gateway_query_ctx *q = cls;
  char k[256], v[4096];
  if (!gateway_percent_decode(key, strlen(key), true, k, sizeof k)) {
    q->ok = bind_fail(q->e, "query", "a parameter name is not valid percent-encoding");
    return MHD_NO;
  }
  if (!gateway_percent_decode(value ? value : "", value ? strlen(value) : 0, true, v, sizeof v)) {
    q->ok = bind_fail(q->e, k, "not valid percent-encoding, or too long");
    return MHD_NO;
  }
  if (bound_elsewhere(q->rt, q->d, k)) {
    q->ok = bind_fail(q->e, k,
                      q->rt->body != NULL && strcmp(q->rt->body, "*") == 0
                          ? "this route takes its fields from the body, not the query string"
                          : "bound by the path or the body, not the query string");
    return MHD_NO;
  }
  q->ok = gateway_bind_text(q->root, q->d, k, v, false, q->e);
  return q->ok ? MHD_YES : MHD_NO;
}
