/* Wire helpers shared by the server and the client: a non-allocating peek
 * into request envelopes, status conversions, time and randomness. */
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "rpc/rpc_internal.h"

void rpc_strlcpy(char *dst, size_t dstlen, const char *s, size_t n) {
  if (dstlen == 0) return;
  if (s == NULL) n = 0;
  if (n >= dstlen) n = dstlen - 1;
  if (n > 0) memcpy(dst, s, n);
  dst[n] = '\0';
}

int64_t rpc_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t rpc_now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

void rpc_sleep_ms(int64_t ms) {
  if (ms <= 0) return;
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

uint64_t rpc_rand_seed(void) {
  uint64_t seed = 0;
  if (getrandom(&seed, sizeof seed, 0) != (ssize_t)sizeof seed)
    seed = (uint64_t)rpc_now_us() ^ ((uint64_t)getpid() << 32);
  return seed;
}

uint64_t rpc_rand64(_Atomic uint64_t *state) {
  uint64_t z = atomic_fetch_add(state, 0x9e3779b97f4a7c15ULL) + 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

/* ---- peek ------------------------------------------------------------------ */

static bool varint(const uint8_t **p, const uint8_t *end, uint64_t *out) {
  uint64_t v = 0;
  for (int shift = 0; shift < 64; shift += 7) {
    if (*p >= end) return false;
    uint8_t b = *(*p)++;
    v |= (uint64_t)(b & 0x7f) << shift;
    if ((b & 0x80) == 0) {
      *out = v;
      return true;
    }
  }
  return false;
}

bool rpc_wire_peek(const uint8_t *buf, size_t len, rpc_peek *out) {
  memset(out, 0, sizeof *out);
  const uint8_t *p = buf, *end = buf + len;
  while (p < end) {
    uint64_t key, v;
    if (!varint(&p, end, &key)) return false;
    uint64_t field = key >> 3;
    if (field == 0) return false;
    switch (key & 7) {
    case 0:
      if (!varint(&p, end, &v)) return false;
      if (field == 3) out->timeout_ms = (int64_t)v;
      break;
    case 1:
      if ((size_t)(end - p) < 8) return false;
      p += 8;
      break;
    case 2:
      if (!varint(&p, end, &v) || v > (uint64_t)(end - p)) return false;
      if (field == 1) out->method = (rpc_str){(const char *)p, (size_t)v};
      if (field == 2) out->request_id = (rpc_str){(const char *)p, (size_t)v};
      p += v;
      break;
    case 5:
      if ((size_t)(end - p) < 4) return false;
      p += 4;
      break;
    default: /* groups (3, 4) and reserved wire types */
      return false;
    }
  }
  return true;
}

/* ---- status ---------------------------------------------------------------- */

void rpc_status_clear(rpc_status *st) {
  st->code = STATUS_OK;
  st->message[0] = '\0';
  st->n_violations = 0;
  st->retry_delay_ms = -1;
  st->projection_id[0] = '\0';
  st->projection_version = 0;
}

void rpc_status_setv(rpc_status *st, status_code code, const char *fmt, va_list ap) {
  st->code = code;
  if (fmt == NULL)
    rpc_strlcpy(st->message, sizeof st->message, status_text(code), strlen(status_text(code)));
  else
    vsnprintf(st->message, sizeof st->message, fmt, ap);
}

void rpc_status_set(rpc_status *st, status_code code, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  rpc_status_setv(st, code, fmt, ap);
  va_end(ap);
}

void rpc_status_add_violation(rpc_status *st, const char *field, const char *fmt, va_list ap) {
  if (st->n_violations >= RPC_MAX_VIOLATIONS) return;
  rpc_field_violation *v = &st->violations[st->n_violations++];
  rpc_strlcpy(v->field, sizeof v->field, field, field != NULL ? strlen(field) : 0);
  if (fmt == NULL)
    v->description[0] = '\0';
  else
    vsnprintf(v->description, sizeof v->description, fmt, ap);
}

void rpc_status_from_pb(rpc_status *st, const Shop__Rpc__V1__Status *pb) {
  rpc_status_clear(st);
  if (pb == NULL) return;
  st->code = status_is_valid(pb->code) ? (status_code)pb->code : STATUS_UNKNOWN;
  if (pb->message != NULL)
    rpc_strlcpy(st->message, sizeof st->message, pb->message, strlen(pb->message));
  for (size_t i = 0; i < pb->n_field_violations && st->n_violations < RPC_MAX_VIOLATIONS; i++) {
    const Shop__Rpc__V1__FieldViolation *f = pb->field_violations[i];
    if (f == NULL) continue;
    rpc_field_violation *v = &st->violations[st->n_violations++];
    rpc_strlcpy(v->field, sizeof v->field, f->field, f->field ? strlen(f->field) : 0);
    rpc_strlcpy(v->description, sizeof v->description, f->description,
                f->description ? strlen(f->description) : 0);
  }
  if (pb->retry_info != NULL) st->retry_delay_ms = pb->retry_info->retry_delay_ms;
  if (pb->projection != NULL) {
    const char *id = pb->projection->aggregate_id;
    rpc_strlcpy(st->projection_id, sizeof st->projection_id, id, id != NULL ? strlen(id) : 0);
    st->projection_version = pb->projection->version;
  }
}

void rpc_status_to_pb(rpc_status_pb *out, const rpc_status *st) {
  shop__rpc__v1__status__init(&out->status);
  out->status.code = (int32_t)st->code;
  out->status.message = (char *)st->message;
  size_t n = st->n_violations < RPC_MAX_VIOLATIONS ? st->n_violations : RPC_MAX_VIOLATIONS;
  for (size_t i = 0; i < n; i++) {
    shop__rpc__v1__field_violation__init(&out->fv[i]);
    out->fv[i].field = (char *)st->violations[i].field;
    out->fv[i].description = (char *)st->violations[i].description;
    out->fvp[i] = &out->fv[i];
  }
  out->status.n_field_violations = n;
  out->status.field_violations = n > 0 ? out->fvp : NULL;
  if (st->retry_delay_ms >= 0) {
    shop__rpc__v1__retry_info__init(&out->retry);
    out->retry.retry_delay_ms = st->retry_delay_ms;
    out->status.retry_info = &out->retry;
  }
  if (st->projection_id[0] != '\0' || st->projection_version != 0) {
    shop__common__v1__consistency_token__init(&out->projection);
    out->projection.aggregate_id = (char *)st->projection_id;
    out->projection.version = st->projection_version;
    out->status.projection = &out->projection;
  }
}

uint8_t *rpc_error_frame(const rpc_str *request_id, const rpc_status *st, size_t *len) {
  char rid[256];
  rpc_strlcpy(rid, sizeof rid, request_id ? request_id->p : NULL, request_id ? request_id->n : 0);
  rpc_status_pb spb;
  rpc_status_to_pb(&spb, st);
  Shop__Rpc__V1__ResponseEnvelope env = SHOP__RPC__V1__RESPONSE_ENVELOPE__INIT;
  env.request_id = rid;
  env.status = &spb.status;
  size_t n = shop__rpc__v1__response_envelope__get_packed_size(&env);
  uint8_t *buf = malloc(n > 0 ? n : 1);
  if (buf == NULL) return NULL;
  *len = shop__rpc__v1__response_envelope__pack(&env, buf);
  return buf;
}

bool rpc_method_path_split(const char *path, const char **svc, size_t *svc_len, const char **method,
                           size_t *method_len) {
  if (path == NULL || path[0] != '/') return false;
  const char *slash = strchr(path + 1, '/');
  if (slash == NULL || slash == path + 1 || slash[1] == '\0' || strchr(slash + 1, '/') != NULL)
    return false;
  *svc = path + 1;
  *svc_len = (size_t)(slash - path - 1);
  *method = slash + 1;
  *method_len = strlen(slash + 1);
  return true;
}
