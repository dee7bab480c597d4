/*
 * handler: what every RPC handler, command or query, does with its call:
 * field violations on the call, and a connection of the service's pool or
 * a clear UNAVAILABLE / INTERNAL with the failure logged once.
 *
 * Thread-safety: any thread (a call belongs to the worker serving it).
 */
#ifndef SHOP_HANDLER_H
#define SHOP_HANDLER_H

#include <stdbool.h>
#include <stddef.h>

#include "check/check.h"
#include "db/db.h"
#include "rpc/rpc.h"
#include "status/status.h"

/* Adds a field violation for field when why is not NULL; the first one
 * also sets INVALID_ARGUMENT ("invalid <field>: <why>") on the call.
 * *count counts the violations added. */
void handler_violation(rpc_call *call, int *count, const char *field, const char *why);

/* Puts l's violations on the call as handler_violation would have (the
 * first sets INVALID_ARGUMENT); returns l->n, so a handler does
 * `if (handler_violations_apply(call, &l) > 0) return;`. */
size_t handler_violations_apply(rpc_call *call, const check_violations *l);

/* Logs a database failure of a handler once and sets UNAVAILABLE (the
 * database is unreachable) or INTERNAL (anything else) on the call. */
void handler_db_failed(rpc_call *call, status_code st, const char *what, const char *err);

/* A connection of pool for a handler (return it with db_pool_put). False
 * when there is none: the call's status is set as handler_db_failed sets
 * it. */
bool handler_db_get(rpc_call *call, db_pool *pool, db_conn **out);

#endif
