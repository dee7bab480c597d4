/* What every RPC handler does with its call and the database. See
 * handler.h. */
#include "handler/handler.h"
#include "check/check.h"

#include <stdio.h>

#include "log/log.h"

_Static_assert(CHECK_MAX_VIOLATIONS == RPC_MAX_VIOLATIONS, "a call keeps what a check keeps");

void handler_violation(rpc_call *call, int *count, const char *field, const char *why) {
  if (why == NULL) return;
  if (*count == 0) rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "invalid %s: %s", field, why);
  rpc_call_add_field_violation(call, field, "%s", why);
  (*count)++;
}

size_t handler_violations_apply(rpc_call *call, const check_violations *l) {
  int count = 0;
  for (size_t i = 0; i < l->n && i < RPC_MAX_VIOLATIONS; i++)
    handler_violation(call, &count, l->v[i].field, l->v[i].why);
  return l->n;
}

void handler_db_failed(rpc_call *call, status_code st, const char *what, const char *err) {
  log_error(
      &(log_ctx){.request_id = rpc_call_request_id(call), .trace_id = rpc_call_trace_id(call)},
      "%s: %s: %s (%s)", rpc_call_method(call), what, status_name(st), err);
  if (st == STATUS_UNAVAILABLE)
    rpc_call_set_status(call, STATUS_UNAVAILABLE, "the database is unavailable; try again");
  else
    rpc_call_set_status(call, STATUS_INTERNAL, "internal error");
}

bool handler_db_get(rpc_call *call, db_pool *pool, db_conn **out) {
  char err[512];
  *out = NULL;
  status_code st = db_pool_get(pool, out, err, sizeof err);
  if (st == STATUS_OK) return true;
  handler_db_failed(call, st, "no database connection", err);
  return false;
}
