/* Reads the services and methods out of a serialized FileDescriptorSet.
 * protobuf-c ships no C bindings for descriptor.proto, and shopctl needs
 * only three levels of it, so this walks the wire format by hand:
 *   FileDescriptorSet.file = 1 -> FileDescriptorProto
 *   FileDescriptorProto.package = 2, .service = 6 -> ServiceDescriptorProto
 *   ServiceDescriptorProto.name = 1, .method = 2 -> MethodDescriptorProto
 *   MethodDescriptorProto.name = 1, .input_type = 2, .output_type = 3 */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"

typedef struct wire {
  const uint8_t *p, *end;
} wire;

static bool varint(wire *w, uint64_t *v) {
  *v = 0;
  for (int shift = 0; shift < 64 && w->p < w->end; shift += 7) {
    uint8_t b = *w->p++;
    *v |= (uint64_t)(b & 0x7f) << shift;
    if (!(b & 0x80)) return true;
  }
  return false;
}

/* Next field: its number, and for a length-delimited one its bytes in
 * *sub. Other wire types are skipped (sub->p == NULL). False at the end or
 * on malformed input (*bad set). */
static bool next(wire *w, uint32_t *field, wire *sub, bool *bad) {
  if (w->p >= w->end) return false;
  uint64_t key, v;
  if (!varint(w, &key)) goto bad;
  *field = (uint32_t)(key >> 3);
  sub->p = sub->end = NULL;
  switch (key & 7) {
  case 0:
    if (!varint(w, &v)) goto bad;
    return true;
  case 1:
    if (w->end - w->p < 8) goto bad;
    w->p += 8;
    return true;
  case 5:
    if (w->end - w->p < 4) goto bad;
    w->p += 4;
    return true;
  case 2:
    if (!varint(w, &v) || v > (uint64_t)(w->end - w->p)) goto bad;
    sub->p = w->p;
    sub->end = w->p + v;
    w->p += v;
    return true;
  default:
    goto bad;
  }
bad:
  *bad = true;
  return false;
}

static json_t *str(const wire *w) {
  size_t n = (size_t)(w->end - w->p);
  if (n > 0 && w->p[0] == '.') return json_stringn((const char *)w->p + 1, n - 1);
  return json_stringn((const char *)w->p, n);
}

json_t *cli_descriptor_set_services(const void *data, size_t len) {
  json_t *out = json_object();
  wire set = {data, (const uint8_t *)data + len}, file, svc, meth, f;
  uint32_t n;
  bool bad = false;
  while (out != NULL && next(&set, &n, &file, &bad)) {
    if (n != 1 || file.p == NULL) continue;
    char pkg[256] = "";
    /* The package may come after the services: read it first. */
    wire scan = file;
    while (next(&scan, &n, &f, &bad))
      if (n == 2 && f.p != NULL)
        snprintf(pkg, sizeof pkg, "%.*s", (int)(f.end - f.p), (const char *)f.p);
    while (next(&file, &n, &svc, &bad)) {
      if (n != 6 || svc.p == NULL) continue;
      char name[512] = "";
      json_t *methods = json_array();
      while (next(&svc, &n, &meth, &bad)) {
        if (n == 1 && meth.p != NULL) {
          snprintf(name, sizeof name, "%s%s%.*s", pkg, pkg[0] ? "." : "", (int)(meth.end - meth.p),
                   (const char *)meth.p);
        } else if (n == 2 && meth.p != NULL) {
          json_t *m = json_object();
          while (next(&meth, &n, &f, &bad)) {
            if (f.p == NULL) continue;
            if (n == 1) json_object_set_new(m, "name", str(&f));
            if (n == 2) json_object_set_new(m, "input", str(&f));
            if (n == 3) json_object_set_new(m, "output", str(&f));
          }
          json_array_append_new(methods, m);
        }
      }
      json_object_set_new(out, name, methods);
    }
  }
  if (bad) {
    json_decref(out);
    return NULL;
  }
  return out;
}
