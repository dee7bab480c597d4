/*
 * pbjson: protobuf <-> JSON through protoc-c's descriptors, in the proto3
 * The JSON mapping, for the types Shop uses; and the registry of every message
 * and service descriptor protoc-c generated for Shop. shopctl (cli) and the
 * HTTP gateway (gateway) both speak JSON through it.
 *
 * The JSON mapping (https://protobuf.dev/programming-guides/proto3/#json):
 *  - field names: lowerCamelCase on output; input accepts the camel name and
 *    the original name;
 *  - int64/uint64 (and fixed/sint variants) are strings on output; input
 *    accepts strings and numbers; 32-bit integers are numbers (strings
 *    accepted);
 *  - enums by value name on output (a number when the value is unknown);
 *    input accepts names and numbers;
 *  - bytes as standard base64 with padding; input accepts standard and
 *    URL-safe alphabets, padding optional;
 *  - nested messages as objects, repeated fields as arrays, map fields
 *    (repeated XxxEntry {key, value}) as objects;
 *  - proto3 fields equal to their default are left out on output; a member
 *    of a oneof that is set is always written, default or not; JSON null on
 *    input means "default";
 *  - an unknown field, a wrong type or an out-of-range number is
 *    INVALID_ARGUMENT, with its path first in errbuf: "lines[1].quantity:
 *    expected a 32-bit integer" ("(root)" for the message itself).
 *
 * Not thread-safe in the sense that nothing here is shared: every function
 * works on its arguments only and may run on any thread.
 */
#ifndef SHOP_PBJSON_H
#define SHOP_PBJSON_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

/* Every message and service descriptor that protoc-c generated for Shop,
 * NULL-terminated (written at build time by registry.cmake). */
extern const ProtobufCMessageDescriptor *const pbjson_message_registry[];
extern const ProtobufCServiceDescriptor *const pbjson_service_registry[];

/* The message type with this full name ("shop.order.v1.CreateOrderRequest",
 * a leading dot allowed), or NULL. */
const ProtobufCMessageDescriptor *pbjson_message_find(const char *full_name);
/* The service with this full name ("shop.order.v1.OrderQueryService"), or
 * NULL. */
const ProtobufCServiceDescriptor *pbjson_service_find(const char *full_name);

/* lowerCamelCase of a proto field name, as protoc's json_name:
 * underscores dropped, the letter after one upper-cased. */
void pbjson_camel_name(const char *name, char *out, size_t len);

/* The field of d named key, by its proto name or its JSON (camel) name; NULL
 * if none. */
const ProtobufCFieldDescriptor *pbjson_field_find(const ProtobufCMessageDescriptor *d,
                                                  const char *key);

/* Converts m to a new JSON object. On success the caller owns *out
 * (json_decref). Errors: RESOURCE_EXHAUSTED (memory). */
status_code pbjson_from_message(json_t **out, const ProtobufCMessage *m, char *errbuf,
                                size_t errlen);

/* Builds a new message of type desc from a JSON object. On success the
 * caller owns *out (protobuf_c_message_free_unpacked(*out, NULL)); on error
 * *out is NULL and errbuf names the path. */
status_code pbjson_to_message(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                              const json_t *j, char *errbuf, size_t errlen);

/* The same from and to bytes: unpacks data as desc and converts it, or
 * converts j and packs it (*out malloc'd, free()). */
status_code pbjson_from_bytes(json_t **out, const ProtobufCMessageDescriptor *desc,
                              const void *data, size_t len, char *errbuf, size_t errlen);
status_code pbjson_to_bytes(uint8_t **out, size_t *out_len, const ProtobufCMessageDescriptor *desc,
                            const json_t *j, char *errbuf, size_t errlen);

/* Standard base64 with padding of n bytes into a new NUL-terminated string
 * (free()); NULL when memory runs out. */
char *pbjson_base64_encode(const void *data, size_t n);
/* Decodes standard or URL-safe base64, padding optional. On success *out is
 * malloc'd (free(); may be NULL when *out_len is 0). False on bad input. */
bool pbjson_base64_decode(const char *s, uint8_t **out, size_t *out_len);

#endif
