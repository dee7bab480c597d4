/*
 * Shared by the .c files of the gateway module; not part of its contract
 * (gateway.h).
 */
#ifndef SHOP_GATEWAY_INTERNAL_H
#define SHOP_GATEWAY_INTERNAL_H

#include <jansson.h>
#include <microhttpd.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>

#include "gateway/gateway.h"
#include "rpc/rpc.h"

/* Why a request could not be bound: the field and what is wrong with it
 * (an INVALID_ARGUMENT field violation). */
typedef struct gateway_bind_err {
  char field[RPC_FIELD_MAX];
  char msg[RPC_DESCRIPTION_MAX];
} gateway_bind_err;

/* Sets the field at the dotted path key of message d inside root (the
 * request's JSON being built) to the text value, as the field's JSON type.
 * Query parameters (overwrite false) append to repeated fields and refuse
 * a field given twice; path variables overwrite. False with e filled when
 * it cannot. */
bool gateway_bind_text(json_t *root, const ProtobufCMessageDescriptor *d, const char *key,
                       const char *value, bool overwrite, gateway_bind_err *e);

/* MHD_get_connection_values' callback over the query string: binds each
 * parameter into root (stops at the first that cannot, ok false, e set). */
typedef struct gateway_query_ctx {
  const gateway_route *rt;
  const ProtobufCMessageDescriptor *d;
  json_t *root;
  gateway_bind_err *e;
  bool ok;
} gateway_query_ctx;
enum MHD_Result gateway_query_cb(void *cls, enum MHD_ValueKind kind, const char *key,
                                 const char *value);

/* Percent-decodes n bytes of s into out (NUL-terminated); '+' becomes a
 * space when plus_space (query strings). False on a bad escape, an encoded
 * NUL, or when out is too small. */
bool gateway_percent_decode(const char *s, size_t n, bool plus_space, char *out, size_t outlen);

/* Files embedded at build time (cmake/shop.cmake's shop_embed_files): the
 * OpenAPI document and the storefront page. */
extern const unsigned char gateway_openapi_json[];
extern const size_t gateway_openapi_json_len;
extern const unsigned char gateway_index_html[];
extern const size_t gateway_index_html_len;
extern const unsigned char gateway_app_js[];
extern const size_t gateway_app_js_len;
extern const unsigned char gateway_style_css[];
extern const size_t gateway_style_css_len;

#endif
