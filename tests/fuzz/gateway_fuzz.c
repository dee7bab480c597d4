/* Fuzz target: what shop-gateway does with untrusted HTTP input before any
 * RPC. Byte 0 picks a route of the embedded descriptor set; the rest is
 * split at the first NUL into a path and a body. The path goes through
 * gateway_routes_match (segments, verbs, percent-decoding), the body
 * through jansson and pbjson_to_message with the route's input type, the
 * proto3 JSON mapping shopctl and the gateway share; a message that
 * converts is packed and converted back. Also gateway_parse_timeout on the
 * body's first line. Any crash or sanitizer report is a bug. */
#include <jansson.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gateway/gateway.h"
#include "pbjson/pbjson.h"

extern const unsigned char shop_descriptor_set[];
extern const size_t shop_descriptor_set_len;

static gateway_routes *routes;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[256];
  if (gateway_routes_load(&routes, shop_descriptor_set, shop_descriptor_set_len, err, sizeof err) !=
      STATUS_OK)
    abort();
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (size < 1 || routes == NULL) return 0;
  const gateway_route *rt = gateway_routes_at(routes, data[0] % gateway_routes_count(routes));
  const char *rest = (const char *)data + 1;
  size_t n = size - 1;
  const char *nul = memchr(rest, '\0', n);
  size_t plen = nul ? (size_t)(nul - rest) : n;
  char *path = strndup(rest, plen);
  const char *body = nul ? nul + 1 : "";
  size_t blen = nul ? n - plen - 1 : 0;
  if (path == NULL) return 0;
  gateway_vars v;
  char allowed[64];
  gateway_routes_match(routes, rt->method, path, &v, allowed, sizeof allowed);
  free(path);

  char line[32];
  const char *nl = memchr(body, '\n', blen);
  size_t l = nl ? (size_t)(nl - body) : blen;
  if (l < sizeof line) {
    memcpy(line, body, l);
    line[l] = '\0';
    int64_t ms;
    gateway_parse_timeout(line, &ms);
  }

  const ProtobufCMessageDescriptor *d = pbjson_message_find(rt->input_type);
  if (d == NULL) abort(); /* every route's input type is linked in */
  json_t *j = json_loadb(body, blen, JSON_REJECT_DUPLICATES, NULL);
  if (j == NULL) return 0;
  ProtobufCMessage *m = NULL;
  char err[512];
  if (pbjson_to_message(&m, d, j, err, sizeof err) == STATUS_OK) {
    json_t *back = NULL;
    if (pbjson_from_message(&back, m, err, sizeof err) == STATUS_OK) json_decref(back);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  json_decref(j);
  return 0;
}
