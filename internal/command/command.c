/* A command's transaction with its idempotency record. See command.h. */
#include "command/command.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "command/command_internal.h"
#include "crash/crash.h"
#include "handler/handler.h"
#include "log/log.h"

void command_fail(command_outcome *out, status_code code, const char *field, const char *fmt, ...) {
  out->code = code;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(out->message, sizeof out->message, fmt, ap);
  va_end(ap);
  snprintf(out->field, sizeof out->field, "%s", field != NULL ? field : "");
  snprintf(out->description, sizeof out->description, "%.*s", (int)sizeof out->description - 1,
           out->message);
}

outbox_cause command_cause(const rpc_call *call) {
  return (outbox_cause){.actor = rpc_call_authenticated(call) ? rpc_call_user_id(call) : NULL,
                        .correlation_id = rpc_call_request_id(call),
                        .traceparent = rpc_call_traceparent(call)};
}

/* Failures a repeat of the same request may not meet again: not recorded. */
static bool outcome_recordable(status_code c) {
  switch (c) {
  case STATUS_RESOURCE_EXHAUSTED:
  case STATUS_UNAVAILABLE:
  case STATUS_DEADLINE_EXCEEDED:
  case STATUS_INTERNAL:
  case STATUS_UNKNOWN:
  case STATUS_CANCELLED:
    return false;
  default:
    return true;
  }
}

static void outcome_details(rpc_call *call, const command_outcome *o) {
  if (o->field[0] != '\0') rpc_call_add_field_violation(call, o->field, "%s", o->description);
  if (o->retry_delay_ms >= 0) rpc_call_set_retry_delay(call, o->retry_delay_ms);
}

/* A command without a key is refused before anything runs. */
static bool key_present(rpc_call *call) {
  if (rpc_call_idempotency_key(call)[0] != '\0') return true;
  rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "%s needs an idempotency key",
                      rpc_call_method(call));
  rpc_call_add_field_violation(call, "idempotency_key", "required");
  return false;
}

bool command_replayed(rpc_call *call, db_pool *db) {
  if (!key_present(call)) return true;
  command_idem_key k;
  command_idem_key_of(call, &k);
  char err[STATUS_ERRBUF_SIZE];
  db_conn *c = NULL;
  if (db_pool_get(db, &c, err, sizeof err) != STATUS_OK) return false;
  command_idem_found f = command_idem_replay(c, call, &k, err, sizeof err);
  db_pool_put(db, c);
  return f == COMMAND_IDEM_REPLAYED || f == COMMAND_IDEM_REFUSED;
}

#define COMMAND_TX_ATTEMPTS 4

bool command_run(const command_tx *cmd) {
  rpc_call *call = cmd->call;
  if (cmd->idempotent && !key_present(call)) return false;
  command_idem_key k;
  if (cmd->idempotent) command_idem_key_of(call, &k);
  char err[STATUS_ERRBUF_SIZE] = "";
  db_conn *c = NULL;
  if (!handler_db_get(call, cmd->db, &c)) return false;
  status_code st;
  bool send = false;
  for (int attempt = 1;; attempt++) {
    command_outcome out = {.code = STATUS_OK, .retry_delay_ms = -1};
    bool repeat = false; /* the record's key met an earlier run's */
    st = db_begin(c, err, sizeof err);
    if (st == STATUS_OK) st = cmd->apply(c, cmd->arg, &out, err, sizeof err);
    if (st == STATUS_OK && (out.code == STATUS_OK || outcome_recordable(out.code))) {
      if (out.code == STATUS_OK)
        rpc_call_set_status(call, STATUS_OK, NULL);
      else
        rpc_call_set_status(call, out.code, "%s", out.message);
      /* Only code and message are stored with the record; the details are
       * added once the commit went through. */
      if (cmd->idempotent) {
        st = command_idem_insert(c, call, &k, out.code == STATUS_OK ? cmd->reply : NULL, err,
                                 sizeof err);
        repeat = st == STATUS_ALREADY_EXISTS;
      }
      if (st == STATUS_OK) st = db_commit(c, err, sizeof err);
      if (st == STATUS_OK) {
        /* Committed, not yet answered nor published: the caller's retry
         * with the same key must get the stored reply, and the relay of
         * the restarted process must publish the events. */
        crash_point("command.after_commit");
        outbox_relay_nudge(cmd->relay);
        if (out.code == STATUS_OK)
          send = true;
        else
          outcome_details(call, &out);
        break;
      }
    } else if (st == STATUS_OK) {
      /* A failure a repeat may not meet again: not recorded. A repeat of
       * an answered request gets its reply rather than this failure. */
      db_rollback(c);
      if (cmd->idempotent) {
        command_idem_found f = command_idem_replay(c, call, &k, err, sizeof err);
        if (f == COMMAND_IDEM_REPLAYED || f == COMMAND_IDEM_REFUSED) break;
      }
      rpc_call_set_status(call, out.code, "%s", out.message);
      outcome_details(call, &out);
      break;
    }
    db_rollback(c);
    if (repeat) {
      /* An earlier run of this request committed (or a concurrent one
       * just did, after we waited on its key): answer what it answered. */
      command_idem_found f = command_idem_replay(c, call, &k, err, sizeof err);
      if (f == COMMAND_IDEM_REPLAYED || f == COMMAND_IDEM_REFUSED) break;
      if (f == COMMAND_IDEM_NONE)
        st = STATUS_ABORTED; /* purged meanwhile: run it again */
      else
        st = STATUS_UNAVAILABLE;
    }
    bool again = (st == STATUS_ABORTED || st == STATUS_UNAVAILABLE) &&
                 attempt < COMMAND_TX_ATTEMPTS && !rpc_call_cancelled(call);
    if (!again) {
      handler_db_failed(call, st, "transaction failed", err);
      break;
    }
    struct timespec ts = {0, 5L * 1000000L * attempt};
    nanosleep(&ts, NULL);
  }
  db_pool_put(cmd->db, c);
  return send;
}
