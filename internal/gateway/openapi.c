/* The OpenAPI 3.1 document of the gateway's routes, from the descriptor set
 * (with source info, the proto comments become descriptions). Run at build
 * time by shop-openapi-gen; see gateway.h. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"
#include "google/protobuf/descriptor.pb-c.h"
#include "pbjson/pbjson.h"

typedef Google__Protobuf__FileDescriptorProto file_proto;
typedef Google__Protobuf__DescriptorProto msg_proto;
typedef Google__Protobuf__EnumDescriptorProto enum_proto;
typedef Google__Protobuf__FieldDescriptorProto field_proto;

#define OA_MAX_PATH 8
#define OA_QUERY_DEPTH 4

/* A message or enum of the set, with where its comments are. */
typedef struct oa_type {
  char name[256]; /* full name, no leading dot */
  const msg_proto *msg;
  const enum_proto *en;
  const file_proto *file;
  int32_t path[OA_MAX_PATH]; /* SourceCodeInfo path */
  size_t n_path;
} oa_type;

typedef struct oa {
  const Google__Protobuf__FileDescriptorSet *set;
  oa_type *types;
  size_t n_types, cap;
  json_t *schemas;
  char *errbuf;
  size_t errlen;
} oa;

static bool add_type(oa *o, const oa_type *t) {
  if (o->n_types == o->cap) {
    size_t cap = o->cap ? o->cap * 2 : 256;
    oa_type *nt = realloc(o->types, cap * sizeof *nt);
    if (nt == NULL) return false;
    o->types = nt;
    o->cap = cap;
  }
  o->types[o->n_types++] = *t;
  return true;
}

/* Names t scope.name and places it at path; false when the name is too
 * long. */
static bool type_place(oa_type *t, const file_proto *f, const char *scope, const char *name,
                       const int32_t *path, size_t n_path) {
  t->file = f;
  t->n_path = n_path;
  memcpy(t->path, path, n_path * sizeof *path);
  return snprintf(t->name, sizeof t->name, "%s%s%s", scope, scope[0] ? "." : "", name) <
         (int)sizeof t->name;
}

static bool index_enum(oa *o, const file_proto *f, const char *scope, const enum_proto *e,
                       const int32_t *path, size_t n_path) {
  oa_type t = {.en = e};
  return type_place(&t, f, scope, e->name, path, n_path) && add_type(o, &t);
}

static bool index_msg(oa *o, const file_proto *f, const char *scope, const msg_proto *m,
                      const int32_t *path, size_t n_path) {
  oa_type t = {.msg = m};
  if (!type_place(&t, f, scope, m->name, path, n_path) || !add_type(o, &t)) return false;
  if (n_path + 2 > OA_MAX_PATH) return true;
  int32_t sub[OA_MAX_PATH];
  memcpy(sub, path, n_path * sizeof *path);
  char name[256];
  snprintf(name, sizeof name, "%s", t.name);
  for (size_t i = 0; i < m->n_nested_type; i++) {
    sub[n_path] = 3, sub[n_path + 1] = (int32_t)i;
    if (!index_msg(o, f, name, m->nested_type[i], sub, n_path + 2)) return false;
  }
  for (size_t i = 0; i < m->n_enum_type; i++) {
    sub[n_path] = 4, sub[n_path + 1] = (int32_t)i;
    if (!index_enum(o, f, name, m->enum_type[i], sub, n_path + 2)) return false;
  }
  return true;
}

static const oa_type *type_find(const oa *o, const char *name) {
  if (name != NULL && name[0] == '.') name++;
  for (size_t i = 0; i < o->n_types; i++)
    if (strcmp(o->types[i].name, name) == 0) return &o->types[i];
  return NULL;
}

/* The leading comment at path in f, tidied (one space of indent removed
 * per line, ends trimmed), or NULL. */
static json_t *comment_at(const file_proto *f, const int32_t *path, size_t n_path) {
  const Google__Protobuf__SourceCodeInfo *sci = f->source_code_info;
  if (sci == NULL) return NULL;
  for (size_t i = 0; i < sci->n_location; i++) {
    const Google__Protobuf__SourceCodeInfo__Location *l = sci->location[i];
    if (l->n_path != n_path || memcmp(l->path, path, n_path * sizeof *path) != 0) continue;
    const char *c = l->leading_comments;
    if (c == NULL || c[0] == '\0') return NULL;
    size_t n = strlen(c);
    char *buf = malloc(n + 1);
    if (buf == NULL) return NULL;
    size_t o = 0;
    bool bol = true;
    for (size_t k = 0; k < n; k++) {
      if (bol && c[k] == ' ') {
        bol = false;
        continue;
      }
      bol = c[k] == '\n';
      buf[o++] = c[k];
    }
    while (o > 0 && (buf[o - 1] == '\n' || buf[o - 1] == ' ')) o--;
    json_t *j = json_stringn(buf, o);
    free(buf);
    return j;
  }
  return NULL;
}

static void set_description(json_t *obj, json_t *desc) {
  if (desc != NULL) json_object_set_new(obj, "description", desc);
}

static json_t *ref_to(const char *full) {
  char ref[300];
  snprintf(ref, sizeof ref, "#/components/schemas/%s", full[0] == '.' ? full + 1 : full);
  return json_pack("{s:s}", "$ref", ref);
}

static bool schema_add(oa *o, const oa_type *t);

/* The schema of one value of field f (not the repetition). */
static json_t *value_schema(oa *o, const field_proto *f) {
  switch (f->type) {
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT32:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT32:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED32:
    return json_pack("{s:s,s:s}", "type", "integer", "format", "int32");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT32:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED32:
    return json_pack("{s:s,s:s,s:i}", "type", "integer", "format", "int64", "minimum", 0);
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_INT64:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SINT64:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_SFIXED64:
    /* proto3 JSON writes 64-bit integers as strings, and reads both. */
    return json_pack("{s:[s,s],s:s,s:s}", "type", "string", "integer", "format", "int64", "pattern",
                     "^-?[0-9]+$");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_UINT64:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FIXED64:
    return json_pack("{s:[s,s],s:s,s:s}", "type", "string", "integer", "format", "uint64",
                     "pattern", "^[0-9]+$");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_DOUBLE:
    return json_pack("{s:s,s:s}", "type", "number", "format", "double");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_FLOAT:
    return json_pack("{s:s,s:s}", "type", "number", "format", "float");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BOOL:
    return json_pack("{s:s}", "type", "boolean");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_STRING:
    return json_pack("{s:s}", "type", "string");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_BYTES:
    return json_pack("{s:s,s:s}", "type", "string", "contentEncoding", "base64");
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_ENUM:
  case GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE: {
    const oa_type *t = type_find(o, f->type_name);
    if (t == NULL || !schema_add(o, t)) return NULL;
    return ref_to(t->name);
  }
  default:
    return json_object();
  }
}

static const msg_proto *map_entry(const oa *o, const field_proto *f) {
  if (f->label != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED ||
      f->type != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE)
    return NULL;
  const oa_type *t = type_find(o, f->type_name);
  if (t == NULL || t->msg == NULL || t->msg->options == NULL || !t->msg->options->map_entry)
    return NULL;
  return t->msg->n_field == 2 ? t->msg : NULL;
}

static json_t *field_schema(oa *o, const field_proto *f) {
  const msg_proto *entry = map_entry(o, f);
  if (entry != NULL) {
    json_t *v = value_schema(o, entry->field[1]);
    return v ? json_pack("{s:s,s:o}", "type", "object", "additionalProperties", v) : NULL;
  }
  json_t *v = value_schema(o, f);
  if (v == NULL || f->label != GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED)
    return v;
  return json_pack("{s:s,s:o}", "type", "array", "items", v);
}

/* Adds t (and what it uses) to components.schemas, once. */
static bool schema_add(oa *o, const oa_type *t) {
  if (json_object_get(o->schemas, t->name) != NULL) return true;
  json_t *s = json_object();
  if (s == NULL || json_object_set_new(o->schemas, t->name, s) != 0) return false;
  set_description(s, comment_at(t->file, t->path, t->n_path));
  if (t->en != NULL) {
    json_t *names = json_array();
    for (size_t i = 0; i < t->en->n_value; i++)
      json_array_append_new(names, json_string(t->en->value[i]->name));
    json_object_set_new(s, "type", json_string("string"));
    json_object_set_new(s, "enum", names);
    return true;
  }
  json_t *props = json_object();
  json_object_set_new(s, "type", json_string("object"));
  json_object_set_new(s, "properties", props);
  json_object_set_new(s, "additionalProperties", json_false());
  int32_t path[OA_MAX_PATH + 2];
  memcpy(path, t->path, t->n_path * sizeof *path);
  for (size_t i = 0; i < t->msg->n_field; i++) {
    const field_proto *f = t->msg->field[i];
    json_t *fs = field_schema(o, f);
    if (fs == NULL) return false;
    path[t->n_path] = 2, path[t->n_path + 1] = (int32_t)i;
    json_t *desc = comment_at(t->file, path, t->n_path + 2);
    /* OpenAPI 3.1 (JSON Schema 2020-12) allows siblings beside $ref. */
    set_description(fs, desc);
    char camel[128];
    pbjson_camel_name(f->name, camel, sizeof camel);
    json_object_set_new(props, camel, fs);
  }
  return true;
}

/* The field of m named by a dotted path, or NULL. */
static const field_proto *field_by_path(const oa *o, const msg_proto *m, const char *path) {
  char buf[256];
  snprintf(buf, sizeof buf, "%s", path);
  char *save = NULL;
  const field_proto *f = NULL;
  for (char *tok = strtok_r(buf, ".", &save); tok != NULL; tok = strtok_r(NULL, ".", &save)) {
    if (m == NULL) return NULL;
    f = NULL;
    for (size_t i = 0; i < m->n_field; i++)
      if (strcmp(m->field[i]->name, tok) == 0) f = m->field[i];
    if (f == NULL) return NULL;
    const oa_type *t = f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE
                           ? type_find(o, f->type_name)
                           : NULL;
    m = t != NULL ? t->msg : NULL;
  }
  return f;
}

static bool bound(const gateway_route *rt, const char *proto_path) {
  for (size_t i = 0; i < rt->n_segments; i++)
    if (rt->segments[i].field != NULL && strcmp(rt->segments[i].field, proto_path) == 0)
      return true;
  return rt->body != NULL && strcmp(rt->body, proto_path) == 0;
}

/* Query parameters for every scalar field of m not bound by the path or
 * the body, nested messages flattened with dots (JSON names). */
static bool query_params(oa *o, const gateway_route *rt, const oa_type *t, const char *proto_prefix,
                         const char *json_prefix, int depth, json_t *params) {
  if (depth > OA_QUERY_DEPTH) return true;
  int32_t path[OA_MAX_PATH + 2];
  memcpy(path, t->path, t->n_path * sizeof *path);
  for (size_t i = 0; i < t->msg->n_field; i++) {
    const field_proto *f = t->msg->field[i];
    char pp[256], jp[256], camel[128];
    pbjson_camel_name(f->name, camel, sizeof camel);
    snprintf(pp, sizeof pp, "%s%s%s", proto_prefix, proto_prefix[0] ? "." : "", f->name);
    snprintf(jp, sizeof jp, "%s%s%s", json_prefix, json_prefix[0] ? "." : "", camel);
    if (bound(rt, pp) || map_entry(o, f) != NULL) continue;
    bool repeated = f->label == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__LABEL__LABEL_REPEATED;
    if (f->type == GOOGLE__PROTOBUF__FIELD_DESCRIPTOR_PROTO__TYPE__TYPE_MESSAGE) {
      const oa_type *sub = type_find(o, f->type_name);
      if (repeated || sub == NULL || sub->msg == NULL) continue;
      if (!query_params(o, rt, sub, pp, jp, depth + 1, params)) return false;
      continue;
    }
    json_t *schema = field_schema(o, f);
    if (schema == NULL) return false;
    json_t *p =
        json_pack("{s:s,s:s,s:b,s:o}", "name", jp, "in", "query", "required", 0, "schema", schema);
    path[t->n_path] = 2, path[t->n_path + 1] = (int32_t)i;
    set_description(p, comment_at(t->file, path, t->n_path + 2));
    if (repeated) json_object_set_new(p, "explode", json_true());
    json_array_append_new(params, p);
  }
  return true;
}

static json_t *param_ref(const char *name) {
  char ref[128];
  snprintf(ref, sizeof ref, "#/components/parameters/%s", name);
  return json_pack("{s:s}", "$ref", ref);
}

static bool is_command_service(const char *svc) {
  size_t n = strlen(svc), k = strlen("CommandService");
  return n > k && strcmp(svc + n - k, "CommandService") == 0;
}

static bool add_operation(oa *o, json_t *paths, const gateway_route *rt) {
  const oa_type *in = type_find(o, rt->input_type), *out = type_find(o, rt->output_type);
  if (in == NULL || in->msg == NULL || out == NULL || out->msg == NULL) {
    snprintf(o->errbuf, o->errlen, "%s/%s: message types not in the descriptor set", rt->service,
             rt->rpc);
    return false;
  }
  if (!schema_add(o, in) || !schema_add(o, out)) return false;
  json_t *item = json_object_get(paths, rt->pattern);
  if (item == NULL) {
    item = json_object();
    json_object_set_new(paths, rt->pattern, item);
  }
  const char *short_svc = strrchr(rt->service, '.');
  short_svc = short_svc ? short_svc + 1 : rt->service;
  char opid[256];
  snprintf(opid, sizeof opid, "%s_%s", short_svc, rt->rpc);
  json_t *op = json_object();
  json_object_set_new(op, "operationId", json_string(opid));
  json_object_set_new(op, "tags", json_pack("[s]", short_svc));
  json_object_set_new(op, "summary", json_sprintf("%s.%s", short_svc, rt->rpc));
  const Google__Protobuf__FileDescriptorSet *set = o->set;
  if (rt->file_index >= 0 && (size_t)rt->file_index < set->n_file) {
    int32_t mp[4] = {6, rt->service_index, 2, rt->method_index};
    set_description(op, comment_at(set->file[rt->file_index], mp, 4));
  }
  json_t *params = json_array();
  json_object_set_new(op, "parameters", params);
  for (size_t i = 0; i < rt->n_segments; i++) {
    if (rt->segments[i].field == NULL) continue;
    const field_proto *f = field_by_path(o, in->msg, rt->segments[i].field);
    if (f == NULL) {
      snprintf(o->errbuf, o->errlen, "%s/%s: path variable {%s} is not a field of %s", rt->service,
               rt->rpc, rt->segments[i].field, in->name);
      return false;
    }
    json_t *schema = field_schema(o, f);
    if (schema == NULL) return false;
    json_array_append_new(params, json_pack("{s:s,s:s,s:b,s:o}", "name", rt->segments[i].field,
                                            "in", "path", "required", 1, "schema", schema));
  }
  if (rt->body == NULL || strcmp(rt->body, "*") != 0)
    if (!query_params(o, rt, in, "", "", 0, params)) return false;
  if (is_command_service(rt->service)) json_array_append_new(params, param_ref("IdempotencyKey"));
  json_array_append_new(params, param_ref("RequestTimeout"));
  json_array_append_new(params, param_ref("Traceparent"));
  json_array_append_new(params, param_ref("RequestId"));
  if (rt->body != NULL) {
    json_t *schema;
    if (strcmp(rt->body, "*") == 0) {
      schema = ref_to(in->name);
    } else {
      const field_proto *f = field_by_path(o, in->msg, rt->body);
      if (f == NULL) {
        snprintf(o->errbuf, o->errlen, "%s/%s: body \"%s\" is not a field of %s", rt->service,
                 rt->rpc, rt->body, in->name);
        return false;
      }
      schema = field_schema(o, f);
    }
    json_object_set_new(op, "requestBody",
                        json_pack("{s:b,s:{s:{s:o}}}", "required", 1, "content", "application/json",
                                  "schema", schema));
  }
  json_object_set_new(op, "responses",
                      json_pack("{s:{s:s,s:{s:{s:o}}},s:{s:s}}", "200", "description", "OK",
                                "content", "application/json", "schema", ref_to(out->name),
                                "default", "$ref", "#/components/responses/Error"));
  char lower[8];
  size_t k = 0;
  for (; rt->method[k] && k + 1 < sizeof lower; k++) lower[k] = (char)(rt->method[k] | 0x20);
  lower[k] = '\0';
  json_object_set_new(item, lower, op);
  return true;
}

static json_t *header_param(const char *name, const char *desc, bool required) {
  return json_pack("{s:s,s:s,s:b,s:s,s:{s:s}}", "name", name, "in", "header", "required", required,
                   "description", desc, "schema", "type", "string");
}

static json_t *components(json_t *schemas) {
  json_t *c = json_object();
  json_object_set_new(c, "schemas", schemas);
  json_object_set_new(
      schemas, "Error",
      json_pack("{s:s,s:s,s:{s:{s:s,s:{s:{s:s,s:s},s:{s:s},s:{s:s},s:{s:s,s:{s:s}}}}}}", "type",
                "object", "description",
                "google.rpc.Status as Google's JSON APIs return it: code is the HTTP status, "
                "status the gRPC code's name; details hold google.rpc.BadRequest "
                "(fieldViolations) and google.rpc.RetryInfo (retryDelay).",
                "properties", "error", "type", "object", "properties", "code", "type", "integer",
                "format", "int32", "status", "type", "string", "message", "type", "string",
                "details", "type", "array", "items", "type", "object"));
  json_object_set_new(
      c, "responses",
      json_pack("{s:{s:s,s:{s:{s:{s:s}}}}}", "Error", "description",
                "An error (google.rpc's HTTP mapping of the gRPC status)", "content",
                "application/json", "schema", "$ref", "#/components/schemas/Error"));
  json_t *p = json_object();
  json_object_set_new(
      p, "IdempotencyKey",
      header_param("Idempotency-Key",
                   "Required on every command: a repeat with the same key and request returns "
                   "the first reply and changes nothing; the same key with another request is "
                   "refused (400).",
                   true));
  json_object_set_new(
      p, "RequestTimeout",
      header_param("X-Request-Timeout",
                   "The call's budget, in grpc-timeout syntax (digits and a unit H, M, S, m, u, n: "
                   "500m, 2S); bare digits are milliseconds. Past it: 504.",
                   false));
  json_object_set_new(p, "Traceparent",
                      header_param("traceparent",
                                   "W3C trace context: continued into every call and event the "
                                   "request causes; the gateway's span comes back in the reply's "
                                   "traceparent.",
                                   false));
  json_object_set_new(
      p, "RequestId",
      header_param("X-Request-Id", "Echoed in the reply; made when absent.", false));
  json_object_set_new(c, "parameters", p);
  json_object_set_new(c, "securitySchemes",
                      json_pack("{s:{s:s,s:s,s:s,s:s}}", "bearerAuth", "type", "http", "scheme",
                                "bearer", "bearerFormat", "JWT", "description",
                                "The access token of POST /v1/auth:login. Browsing the catalog "
                                "needs none; everything else does."));
  return c;
}

status_code gateway_openapi_build(json_t **out, const void *fds, size_t len, char *errbuf,
                                  size_t errlen) {
  *out = NULL;
  gateway_routes *routes = NULL;
  status_code st = gateway_routes_load(&routes, fds, len, errbuf, errlen);
  if (st != STATUS_OK) return st;
  Google__Protobuf__FileDescriptorSet *set =
      google__protobuf__file_descriptor_set__unpack(NULL, len, fds);
  oa o = {.set = set, .schemas = json_object(), .errbuf = errbuf, .errlen = errlen};
  json_t *doc = NULL;
  bool ok = set != NULL && o.schemas != NULL;
  for (size_t f = 0; ok && f < set->n_file; f++) {
    const file_proto *fp = set->file[f];
    const char *pkg = fp->package ? fp->package : "";
    for (size_t i = 0; ok && i < fp->n_message_type; i++) {
      int32_t path[2] = {4, (int32_t)i};
      ok = index_msg(&o, fp, pkg, fp->message_type[i], path, 2);
    }
    for (size_t i = 0; ok && i < fp->n_enum_type; i++) {
      int32_t path[2] = {5, (int32_t)i};
      ok = index_enum(&o, fp, pkg, fp->enum_type[i], path, 2);
    }
  }
  json_t *paths = json_object();
  for (size_t i = 0; ok && i < gateway_routes_count(routes); i++)
    ok = add_operation(&o, paths, gateway_routes_at(routes, i));
  if (ok) {
    doc = json_object();
    json_object_set_new(doc, "openapi", json_string("3.1.0"));
    json_object_set_new(
        doc, "info",
        json_pack("{s:s,s:s,s:s,s:{s:s,s:s}}", "title", "Shop HTTP/JSON API", "version", "v1",
                  "description",
                  "Shop's RPC services over HTTP/JSON (shop-gateway). Generated at build time from "
                  "the google.api.http options in proto/; the JSON is proto3's mapping "
                  "(lowerCamelCase names, 64-bit integers as strings, enums by name).",
                  "license", "name", "Apache-2.0", "identifier", "Apache-2.0"));
    json_object_set_new(doc, "servers", json_pack("[{s:s}]", "url", "/"));
    json_object_set_new(doc, "security", json_pack("[{s:[]},{}]", "bearerAuth"));
    json_object_set_new(doc, "paths", paths);
    paths = NULL;
    json_object_set_new(doc, "components", components(o.schemas));
    o.schemas = NULL;
  } else if (errbuf[0] == '\0') {
    snprintf(errbuf, errlen, "out of memory");
  }
  json_decref(paths);
  json_decref(o.schemas);
  free(o.types);
  if (set != NULL) google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
  gateway_routes_free(routes);
  if (doc == NULL)
    return errbuf[0] && strcmp(errbuf, "out of memory") ? STATUS_INVALID_ARGUMENT
                                                        : STATUS_RESOURCE_EXHAUSTED;
  *out = doc;
  return STATUS_OK;
}
