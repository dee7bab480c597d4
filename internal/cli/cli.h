/*
 * cli: shopctl's logic. JSON <-> protobuf through protoc-c's descriptors
 * (the proto3 JSON mapping for the types Shop uses), the registry of every
 * generated descriptor, and the commands themselves.
 *
 * JSON mapping (https://protobuf.dev/programming-guides/proto3/#json):
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
 *    INVALID_ARGUMENT, with its path ("lines[1].quantity: ...") in errbuf.
 *
 * Not thread-safe in the sense that nothing here is shared: every function
 * works on its arguments only and may run on any thread.
 */
#ifndef SHOP_CLI_H
#define SHOP_CLI_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h"
#include "status/status.h"

/* Every message and service descriptor that protoc-c generated for Shop,
 * NULL-terminated (written at build time by registry.cmake). */
extern const ProtobufCMessageDescriptor *const cli_message_registry[];
extern const ProtobufCServiceDescriptor *const cli_service_registry[];

/* The message type with this full name ("shop.order.v1.CreateOrderRequest",
 * a leading dot allowed), or NULL. */
const ProtobufCMessageDescriptor *cli_message_find(const char *full_name);

/* Converts m to a new JSON object. On success the caller owns *out
 * (json_decref). Errors: RESOURCE_EXHAUSTED (memory). */
status_code cli_json_from_message(json_t **out, const ProtobufCMessage *m, char *errbuf,
                                  size_t errlen);

/* Builds a new message of type desc from a JSON object. On success the
 * caller owns *out (protobuf_c_message_free_unpacked(*out, NULL)); on error
 * *out is NULL and errbuf names the path. */
status_code cli_json_to_message(ProtobufCMessage **out, const ProtobufCMessageDescriptor *desc,
                                const json_t *j, char *errbuf, size_t errlen);

/* The same from and to bytes: unpacks data as desc and converts it, or
 * converts j and packs it (*out malloc'd, free()). */
status_code cli_json_from_bytes(json_t **out, const ProtobufCMessageDescriptor *desc,
                                const void *data, size_t len, char *errbuf, size_t errlen);
status_code cli_json_to_bytes(uint8_t **out, size_t *out_len,
                              const ProtobufCMessageDescriptor *desc, const json_t *j, char *errbuf,
                              size_t errlen);

/* Standard base64 with padding of n bytes into a new NUL-terminated string
 * (free()); NULL when memory runs out. */
char *cli_base64_encode(const void *data, size_t n);
/* Decodes standard or URL-safe base64, padding optional. On success *out is
 * malloc'd (free(); may be NULL when *out_len is 0). False on bad input. */
bool cli_base64_decode(const char *s, uint8_t **out, size_t *out_len);

/* Reads the services of a serialized google.protobuf.FileDescriptorSet (what
 * the reflection method returns) into a new JSON object (json_decref):
 *   {"pkg.Service": [{"name": "M", "input": "pkg.In", "output": "pkg.Out"}]}
 * NULL when the bytes are not a descriptor set. */
json_t *cli_descriptor_set_services(const void *data, size_t len);

/* shopctl seed: the demo data of `make run` through the ordinary command
 * path: logs in as the config's first admin (auth.admin_email,
 * auth.admin_password), registers the customer email/password, and creates
 * a small catalog (SKUs DEMO-*, after sku_prefix, which may be NULL) with
 * stock and low-stock thresholds. Idempotent: what exists is kept and
 * reported. Prints one line per item to out:
 *   customer <email> <user id>|already-registered
 *   product <sku> <id> "<name>" <price> <currency>, stock N, ...
 * Returns the exit code (0, or the failing call's status_exit_code). */
int cli_seed(const shop_cfg *cfg, const char *email, const char *password, const char *sku_prefix,
             FILE *out);

/* shopctl: runs one command line (argv[0] is the program name) and returns
 * the process exit code. Writes results to stdout, errors to stderr. */
int cli_main(int argc, char **argv);

#endif
