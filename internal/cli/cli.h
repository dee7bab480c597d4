/*
 * cli: shopctl's logic: the commands themselves. JSON <-> protobuf and the
 * registry of every generated descriptor are pbjson's (pbjson/pbjson.h),
 * which the HTTP gateway shares.
 *
 */
#ifndef SHOP_CLI_H
#define SHOP_CLI_H

#include <jansson.h>
#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdio.h>

#include "config/config.h"
#include "pbjson/pbjson.h"
#include "status/status.h"

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
