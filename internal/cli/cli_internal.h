/*
 * What the files of shopctl's commands share: commands.c (options, helpers,
 * call, health, main), commands_auth.c (credentials, login, logout),
 * commands_describe.c (list, describe), commands_events.c (events tail,
 * dlt) and commands_books.c (reconcile, rebuild-projection, seed). Not
 * part of the module's contract (that is cli.h); nothing outside
 * internal/cli includes this file.
 */
#ifndef SHOP_CLI_INTERNAL_H
#define SHOP_CLI_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

#include "cli/cli.h"
#include "config/config.h"
#include "events/events.h"
#include "rpc/rpc.h"

#define MAX_HEADERS 32

typedef struct cli_opts {
  const char *server;
  const char *config_path;
  const char *brokers;
  const char *profile;
  const char *idempotency_key;
  const char *event_id;
  const char *password_file;
  int64_t timeout_ms;
  bool password_stdin;
  bool print_config;     /* --print-config [KEY] */
  const char *print_key; /* its KEY, or NULL */
  bool from_beginning;
  bool json;
  long max;
  int64_t settle_ms;
  const char *since;
  const char *sku_prefix;
  const char *database;
  const char *md[2 * MAX_HEADERS];
  size_t n_md;
  char *md_buf[MAX_HEADERS];
  const char *args[8];
  int n_args;
  shop_cfg *cfg;
} cli_opts;

/* ---- helpers (commands.c) ------------------------------------------------ */

void cli_usage(FILE *f);
void cli_print_status(const rpc_status *st, const char *what);
int cli_fail_code(status_code code, const char *fmt, const char *a, const char *b);
void cli_print_json(const json_t *j);
const ProtobufCServiceDescriptor *cli_service_find(const char *name, size_t len);
/* Accepts "/pkg.Service/Method", "pkg.Service/Method", "Service.Method"
 * and "pkg.Service.Method". */
bool cli_method_resolve(const char *text, const ProtobufCServiceDescriptor **svc,
                        const ProtobufCMethodDescriptor **m);
/* The configured endpoint of a service, or NULL. */
const char *cli_service_endpoint(const shop_cfg *cfg, const char *service);
status_code cli_client_open(rpc_client **cli, const cli_opts *o, const char *url);
/* Calls method_path with a typed request; on OK *out owns the decoded
 * reply. */
status_code cli_call_typed(rpc_client *cli, const cli_opts *o, const char *path,
                           const ProtobufCMessage *in, const ProtobufCMessageDescriptor *out_d,
                           ProtobufCMessage **out, const char *token, const char *idem,
                           rpc_status *st);
void cli_idem_key_new(char out[EVENTS_ID_SIZE]);

/* ---- credentials (commands_auth.c) ---------------------------------------- */

/* The access token of the profile, refreshed first when it expires within
 * REFRESH_MARGIN_S. *token is malloc'd (free()); NULL when not logged in. */
void cli_creds_token(const cli_opts *o, char **token);
bool cli_read_password(const cli_opts *o, char *out, size_t len);

/* ---- the commands, each returning shopctl's exit status -------------------- */

int cli_cmd_login(cli_opts *o);
int cli_cmd_logout(cli_opts *o);
int cli_cmd_list(cli_opts *o);
int cli_cmd_describe(cli_opts *o);
int cli_cmd_events_tail(cli_opts *o);
int cli_cmd_dlt(cli_opts *o);
int cli_cmd_reconcile(cli_opts *o);
int cli_cmd_rebuild_projection(cli_opts *o);
int cli_cmd_seed(cli_opts *o);
int cli_cmd_mail(cli_opts *o);

#endif
