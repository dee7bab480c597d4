/*
 * Shared by the .c files of the gateway module; not part of its contract
 * (gateway.h).
 */
#ifndef SHOP_GATEWAY_INTERNAL_H
#define SHOP_GATEWAY_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>

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
