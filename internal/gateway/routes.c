/* The route table: every rpc's google.api.http option, out of the
 * descriptor set, and matching a request against it. See gateway.h.
 *
 * protoc-c knows nothing of custom options: a MethodOptions decoded with
 * descriptor.proto's generated code keeps the google.api.http extension
 * (field 72295728) as an unknown length-delimited field, whose bytes are a
 * google.api.HttpRule. */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "gateway/gateway_internal.h"
#include "google/api/http.pb-c.h"
#include "google/protobuf/descriptor.pb-c.h"

#define GATEWAY_HTTP_EXTENSION 72295728u

struct gateway_routes {
  size_t n, cap;
  gateway_route *r;
};

static void route_clear(gateway_route *rt) {
  free(rt->pattern);
  free(rt->verb);
  free(rt->body);
  free(rt->service);
  free(rt->rpc);
  free(rt->input_type);
  free(rt->output_type);
  for (size_t i = 0; i < rt->n_segments; i++) {
    free(rt->segments[i].literal);
    free(rt->segments[i].field);
  }
}

void gateway_routes_free(gateway_routes *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->n; i++) route_clear(&r->r[i]);
  free(r->r);
  free(r);
}

size_t gateway_routes_count(const gateway_routes *r) { return r != NULL ? r->n : 0; }

const gateway_route *gateway_routes_at(const gateway_routes *r, size_t i) {
  return r != NULL && i < r->n ? &r->r[i] : NULL;
}

static char *dup_type(const char *t) { return strdup(t != NULL && t[0] == '.' ? t + 1 : t); }

/* A field path: identifiers separated by dots. */
static bool field_path_ok(const char *s, size_t n) {
  if (n == 0) return false;
  bool start = true;
  for (size_t i = 0; i < n; i++) {
    char c = s[i];
    if (c == '.') {
      if (start) return false;
      start = true;
      continue;
    }
    if (!(isalnum((unsigned char)c) || c == '_') || (start && isdigit((unsigned char)c)))
      return false;
    start = false;
  }
  return !start;
}

/* Splits a template into segments and a verb. */
static bool template_parse(gateway_route *rt, const char *tpl, char *errbuf, size_t errlen) {
  if (tpl == NULL || tpl[0] != '/') {
    snprintf(errbuf, errlen, "path template \"%s\" must start with /", tpl ? tpl : "");
    return false;
  }
  const char *p = tpl + 1;
  while (*p) {
    if (rt->n_segments == GATEWAY_MAX_SEGMENTS) {
      snprintf(errbuf, errlen, "path template \"%s\" has too many segments", tpl);
      return false;
    }
    gateway_segment *s = &rt->segments[rt->n_segments];
    if (*p == '{') {
      const char *close = strchr(p, '}');
      if (close == NULL) {
        snprintf(errbuf, errlen, "path template \"%s\": unclosed {", tpl);
        return false;
      }
      const char *eq = memchr(p, '=', (size_t)(close - p));
      size_t n = (size_t)((eq ? eq : close) - p - 1);
      if (!field_path_ok(p + 1, n) || (eq != NULL && !(close - eq == 2 && eq[1] == '*'))) {
        snprintf(errbuf, errlen,
                 "path template \"%s\": only {field} and {field=*} variables are supported", tpl);
        return false;
      }
      s->field = strndup(p + 1, n);
      if (s->field == NULL) goto oom;
      p = close + 1;
    } else {
      size_t n = strcspn(p, "/:{");
      if (n == 0) {
        snprintf(errbuf, errlen, "path template \"%s\": empty segment", tpl);
        return false;
      }
      s->literal = strndup(p, n);
      if (s->literal == NULL) goto oom;
      p += n;
    }
    rt->n_segments++;
    if (*p == ':') {
      if (p[1] == '\0' || strchr(p + 1, '/') != NULL || strchr(p + 1, '{') != NULL) {
        snprintf(errbuf, errlen, "path template \"%s\": a verb ends the template", tpl);
        return false;
      }
      rt->verb = strdup(p + 1);
      if (rt->verb == NULL) goto oom;
      break;
    }
    if (*p == '/') {
      p++;
      if (*p == '\0') {
        snprintf(errbuf, errlen, "path template \"%s\": trailing /", tpl);
        return false;
      }
    } else if (*p != '\0') {
      snprintf(errbuf, errlen, "path template \"%s\": a variable is a whole segment", tpl);
      return false;
    }
  }
  size_t vars = 0;
  for (size_t i = 0; i < rt->n_segments; i++) vars += rt->segments[i].field != NULL;
  if (vars > GATEWAY_MAX_VARS) {
    snprintf(errbuf, errlen, "path template \"%s\" has too many variables", tpl);
    return false;
  }
  return true;
oom:
  snprintf(errbuf, errlen, "out of memory");
  return false;
}

typedef struct load_ctx {
  gateway_routes *r;
  const Google__Protobuf__FileDescriptorProto *file;
  const Google__Protobuf__ServiceDescriptorProto *svc;
  const Google__Protobuf__MethodDescriptorProto *m;
  int fi, si, mi;
  char *errbuf;
  size_t errlen;
} load_ctx;

static status_code add_rule(load_ctx *c, const Google__Api__HttpRule *rule, int depth) {
  const char *method = NULL, *tpl = NULL;
  switch (rule->pattern_case) {
  case GOOGLE__API__HTTP_RULE__PATTERN_GET:
    method = "GET", tpl = rule->get;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_PUT:
    method = "PUT", tpl = rule->put;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_POST:
    method = "POST", tpl = rule->post;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_DELETE:
    method = "DELETE", tpl = rule->delete_;
    break;
  case GOOGLE__API__HTTP_RULE__PATTERN_PATCH:
    method = "PATCH", tpl = rule->patch;
    break;
  default:
    snprintf(c->errbuf, c->errlen, "%s.%s/%s: google.api.http without get/put/post/delete/patch",
             c->file->package, c->svc->name, c->m->name);
    return STATUS_INVALID_ARGUMENT;
  }
  gateway_routes *r = c->r;
  if (r->n == r->cap) {
    size_t cap = r->cap ? r->cap * 2 : 32;
    gateway_route *nr = realloc(r->r, cap * sizeof *nr);
    if (nr == NULL) return STATUS_RESOURCE_EXHAUSTED;
    r->r = nr;
    r->cap = cap;
  }
  gateway_route *rt = &r->r[r->n];
  memset(rt, 0, sizeof *rt);
  snprintf(rt->method, sizeof rt->method, "%s", method);
  char svc[512];
  snprintf(svc, sizeof svc, "%s%s%s", c->file->package ? c->file->package : "",
           c->file->package && c->file->package[0] ? "." : "", c->svc->name);
  rt->pattern = strdup(tpl);
  rt->service = strdup(svc);
  rt->rpc = strdup(c->m->name);
  rt->input_type = dup_type(c->m->input_type);
  rt->output_type = dup_type(c->m->output_type);
  rt->body = rule->body != NULL && rule->body[0] ? strdup(rule->body) : NULL;
  rt->file_index = c->fi;
  rt->service_index = c->si;
  rt->method_index = c->mi;
  r->n++; /* owned by the table from here on, freed with it on error */
  if (!rt->pattern || !rt->service || !rt->rpc || !rt->input_type || !rt->output_type ||
      (rule->body != NULL && rule->body[0] && rt->body == NULL))
    return STATUS_RESOURCE_EXHAUSTED;
  char err[300];
  if (!template_parse(rt, tpl, err, sizeof err)) {
    snprintf(c->errbuf, c->errlen, "%s/%s: %s", svc, c->m->name, err);
    return STATUS_INVALID_ARGUMENT;
  }
  if (rt->body != NULL && strcmp(rt->body, "*") != 0 &&
      !field_path_ok(rt->body, strlen(rt->body))) {
    snprintf(c->errbuf, c->errlen, "%s/%s: body \"%s\" is not a field name", svc, c->m->name,
             rt->body);
    return STATUS_INVALID_ARGUMENT;
  }
  /* additional_bindings may not nest (google/api/http.proto). */
  for (size_t i = 0; depth == 0 && i < rule->n_additional_bindings; i++) {
    status_code st = add_rule(c, rule->additional_bindings[i], 1);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

/* The payload of a length-delimited unknown field: protobuf-c keeps the
 * length prefix with the bytes. */
static bool unknown_payload(const ProtobufCMessageUnknownField *u, const uint8_t **p, size_t *n) {
  uint64_t v = 0;
  size_t i = 0;
  for (int shift = 0; i < u->len && shift < 64; shift += 7) {
    uint8_t b = u->data[i++];
    v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) {
      if (v == u->len - i) {
        *p = u->data + i;
        *n = (size_t)v;
        return true;
      }
      break;
    }
  }
  *p = u->data;
  *n = u->len;
  return true;
}

static status_code method_rules(load_ctx *c) {
  const Google__Protobuf__MethodOptions *o = c->m->options;
  if (o == NULL) return STATUS_OK;
  for (unsigned i = 0; i < o->base.n_unknown_fields; i++) {
    const ProtobufCMessageUnknownField *u = &o->base.unknown_fields[i];
    if (u->tag != GATEWAY_HTTP_EXTENSION || u->wire_type != PROTOBUF_C_WIRE_TYPE_LENGTH_PREFIXED)
      continue;
    const uint8_t *p;
    size_t n;
    unknown_payload(u, &p, &n);
    Google__Api__HttpRule *rule = google__api__http_rule__unpack(NULL, n, p);
    if (rule == NULL) {
      snprintf(c->errbuf, c->errlen, "%s.%s/%s: google.api.http does not decode as HttpRule",
               c->file->package, c->svc->name, c->m->name);
      return STATUS_INVALID_ARGUMENT;
    }
    status_code st = add_rule(c, rule, 0);
    google__api__http_rule__free_unpacked(rule, NULL);
    if (st != STATUS_OK) return st;
  }
  return STATUS_OK;
}

status_code gateway_routes_load(gateway_routes **out, const void *fds, size_t len, char *errbuf,
                                size_t errlen) {
  *out = NULL;
  Google__Protobuf__FileDescriptorSet *set =
      google__protobuf__file_descriptor_set__unpack(NULL, len, fds);
  if (set == NULL) {
    snprintf(errbuf, errlen, "not a FileDescriptorSet");
    return STATUS_INVALID_ARGUMENT;
  }
  gateway_routes *r = calloc(1, sizeof *r);
  if (r == NULL) {
    google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  load_ctx c = {.r = r, .errbuf = errbuf, .errlen = errlen};
  status_code st = STATUS_OK;
  for (size_t f = 0; st == STATUS_OK && f < set->n_file; f++) {
    c.file = set->file[f];
    c.fi = (int)f;
    for (size_t s = 0; st == STATUS_OK && s < c.file->n_service; s++) {
      c.svc = c.file->service[s];
      c.si = (int)s;
      for (size_t m = 0; st == STATUS_OK && m < c.svc->n_method; m++) {
        c.m = c.svc->method[m];
        c.mi = (int)m;
        st = method_rules(&c);
      }
    }
  }
  google__protobuf__file_descriptor_set__free_unpacked(set, NULL);
  if (st != STATUS_OK) {
    if (st == STATUS_RESOURCE_EXHAUSTED) snprintf(errbuf, errlen, "out of memory");
    gateway_routes_free(r);
    return st;
  }
  *out = r;
  return STATUS_OK;
}

/* ---- matching ------------------------------------------------------------- */

static int hexval(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

bool gateway_percent_decode(const char *s, size_t n, bool plus_space, char *out, size_t outlen) {
  size_t o = 0;
  for (size_t i = 0; i < n; i++) {
    char ch = s[i];
    if (ch == '%') {
      if (i + 2 >= n) return false;
      int hi = hexval(s[i + 1]), lo = hexval(s[i + 2]);
      if (hi < 0 || lo < 0) return false;
      ch = (char)(hi * 16 + lo);
      if (ch == '\0') return false;
      i += 2;
    } else if (ch == '+' && plus_space) {
      ch = ' ';
    }
    if (o + 1 >= outlen) return false;
    out[o++] = ch;
  }
  out[o] = '\0';
  return true;
}

/* Matches one route: the number of literal segments matched (its rank), or
 * -1. */
static int match_one(const gateway_route *rt, const char *path, gateway_vars *vars) {
  if (path[0] != '/') return -1;
  const char *p = path + 1;
  size_t plen = strlen(p);
  /* The verb, if the template has one, ends the last segment. */
  if (rt->verb != NULL) {
    size_t vl = strlen(rt->verb);
    if (plen < vl + 1 || p[plen - vl - 1] != ':' || memcmp(p + plen - vl, rt->verb, vl) != 0)
      return -1;
    plen -= vl + 1;
  }
  int rank = 0;
  vars->n = 0;
  size_t i = 0;
  for (size_t seg = 0; seg < rt->n_segments; seg++) {
    if (i > plen) return -1; /* fewer segments than the template */
    const char *s = p + i;
    const char *slash = memchr(s, '/', plen - i);
    size_t n = slash ? (size_t)(slash - s) : plen - i;
    if (n == 0) return -1;
    const gateway_segment *g = &rt->segments[seg];
    if (g->literal != NULL) {
      if (strlen(g->literal) != n || memcmp(g->literal, s, n) != 0) return -1;
      rank++;
    } else {
      if (vars->n == GATEWAY_MAX_VARS ||
          !gateway_percent_decode(s, n, false, vars->value[vars->n], sizeof vars->value[0]))
        return -1;
      vars->field[vars->n++] = g->field;
    }
    i += n + 1; /* past the slash; plen + 1 once the path is used up */
  }
  return i == plen + 1 ? rank : -1;
}

const gateway_route *gateway_routes_match(const gateway_routes *r, const char *method,
                                          const char *path, gateway_vars *vars, char *allowed,
                                          size_t allowed_len) {
  const gateway_route *best = NULL;
  int best_rank = -1;
  gateway_vars tmp;
  if (allowed != NULL && allowed_len > 0) allowed[0] = '\0';
  /* Among the routes of this method, the one with the most literal
   * segments: /v1/users/me before /v1/users/{user_id}. */
  for (size_t i = 0; i < r->n; i++) {
    const gateway_route *rt = &r->r[i];
    if (strcmp(rt->method, method) != 0) continue;
    int k = match_one(rt, path, &tmp);
    if (k > best_rank) {
      best = rt;
      best_rank = k;
      *vars = tmp;
    }
  }
  if (best != NULL || allowed == NULL) return best;
  for (size_t i = 0; i < r->n; i++) {
    const gateway_route *rt = &r->r[i];
    if (strstr(allowed, rt->method) != NULL || match_one(rt, path, &tmp) < 0) continue;
    size_t n = strlen(allowed);
    snprintf(allowed + n, allowed_len - n, "%s%s", n ? ", " : "", rt->method);
  }
  return NULL;
}

/* ---- statuses --------------------------------------------------------------- */

int gateway_http_status(status_code code, const rpc_status *st) {
  switch (code) {
  case STATUS_OK:
    return 200;
  case STATUS_CANCELLED:
    return 499;
  case STATUS_INVALID_ARGUMENT:
  case STATUS_OUT_OF_RANGE:
    return 400;
  case STATUS_FAILED_PRECONDITION:
    return st != NULL && st->projection_id[0] != '\0' ? 412 : 400;
  case STATUS_DEADLINE_EXCEEDED:
    return 504;
  case STATUS_NOT_FOUND:
    return 404;
  case STATUS_ALREADY_EXISTS:
  case STATUS_ABORTED:
    return 409;
  case STATUS_PERMISSION_DENIED:
    return 403;
  case STATUS_UNAUTHENTICATED:
    return 401;
  case STATUS_RESOURCE_EXHAUSTED:
    return 429;
  case STATUS_UNIMPLEMENTED:
    return 501;
  case STATUS_UNAVAILABLE:
    return 503;
  default:
    return 500;
  }
}

bool gateway_parse_timeout(const char *text, int64_t *ms) {
  size_t n = strlen(text), d = 0;
  while (d < n && isdigit((unsigned char)text[d])) d++;
  if (d == 0 || d > 8 || n - d > 1) return false;
  int64_t v = 0;
  for (size_t i = 0; i < d; i++) v = v * 10 + (text[i] - '0');
  char unit = d < n ? text[d] : 'm';
  switch (unit) {
  case 'H':
    v *= 3600000;
    break;
  case 'M':
    v *= 60000;
    break;
  case 'S':
    v *= 1000;
    break;
  case 'm':
    break;
  case 'u':
    v = (v + 999) / 1000;
    break;
  case 'n':
    v = (v + 999999) / 1000000;
    break;
  default:
    return false;
  }
  if (v <= 0) return false;
  *ms = v;
  return true;
}
