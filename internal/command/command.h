/*
 * command: a command's transaction, the one place where a call, the
 * database and the outbox meet (DESIGN.md, "RPC over NNG": every command
 * is idempotent). A handler checks its request, then
 *
 *   command_tx cmd = {.call = call, .db = ctx->db, .relay = ctx->relay,
 *                     .apply = create_apply_cb, .arg = &job, .reply = &job.reply.base,
 *                     .idempotent = true};
 *   if (command_run(&cmd)) closure(&job.reply, data);
 *
 * and apply changes the aggregate and emits its events
 * (outbox_emit(&sink, tx, &cause, ...) with cause = command_cause(call))
 * inside the one transaction that also holds the idempotency record:
 *
 *   BEGIN; apply (state change, outbox rows); INSERT the record with the
 *   reply; COMMIT; nudge the relay.
 *
 * The record is keyed by (scope, method, key): scope the authenticated
 * user id, else "caller:" + the envelope's caller; it holds a keyed digest
 * of the request bytes, the status and the packed reply. A repeat of an
 * answered request (the same key and bytes) gets the stored reply and
 * changes nothing: its own run meets the record's unique key at the end
 * (a concurrent duplicate waits there for the first one's commit), rolls
 * back and replays what the first one answered. The same key with other
 * bytes is FAILED_PRECONDITION. Business failures (a failed precondition,
 * not found, ...) are recorded and answered the same to a repeat; failures
 * a repeat may not meet again (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL,
 * DEADLINE_EXCEEDED, UNKNOWN, CANCELLED) are not, and before answering one
 * the record is looked up, so a repeat of an answered request still gets
 * its reply when the answer would have been a transient failure.
 *
 * Thread-safety: any RPC worker thread; nothing is shared between calls.
 */
#ifndef SHOP_COMMAND_H
#define SHOP_COMMAND_H

#include <protobuf-c/protobuf-c.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "events/outbox.h"
#include "rpc/rpc.h"
#include "status/status.h"

/* The migrations of the idempotency records (component "command"); every
 * service that serves commands applies them. */
extern const db_migration command_migrations[];
extern const size_t command_migrations_count;

/* The business outcome of a command, decided inside its transaction. */
typedef struct command_outcome {
  status_code code;       /* OK: the reply is filled */
  char message[256];      /* for the caller; never a secret */
  char field[64];         /* a field violation's field, or "" */
  char description[160];  /* and its description */
  int64_t retry_delay_ms; /* RetryInfo, or -1 */
} command_outcome;

/* Sets a non-OK outcome; field may be NULL. printf-style message. */
void command_fail(command_outcome *out, status_code code, const char *field, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

/* The body of a command, run inside the transaction on tx. It returns the
 * database's status (ABORTED and UNAVAILABLE make the runner start the
 * whole transaction again: keep no state across attempts outside arg's
 * reply) and puts the business outcome in *out (zeroed with code OK
 * before each attempt). */
typedef status_code (*command_apply_cb)(db_conn *tx, void *arg, command_outcome *out, char *errbuf,
                                        size_t errlen);

typedef struct command_tx {
  rpc_call *call;
  db_pool *db;
  outbox_relay *relay; /* nudged after a commit; may be NULL */
  command_apply_cb apply;
  void *arg;
  /* The reply apply fills on an OK outcome; recorded for idempotency. */
  const ProtobufCMessage *reply;
  /* false: the command keeps its own idempotency (it must not store its
   * reply, e.g. because the reply holds tokens); no record is read or
   * written. */
  bool idempotent;
} command_tx;

/*
 * Runs one command as described above. Returns true when the call is
 * answered with cmd->reply: hand it to the closure. False when the call
 * already holds its answer (a failure, a refusal, or a repeat's stored
 * reply): return from the handler without calling the closure. Database
 * failures become UNAVAILABLE or INTERNAL on the call, logged here once.
 */
bool command_run(const command_tx *cmd);

/* Before a command does work outside the database (CreateOrder asks the
 * catalog): true when the request was answered before, and the call now
 * holds that reply (or the refusal of a key used for another request);
 * false with the call untouched otherwise (also when the record could not
 * be read: command_run reads it again). */
bool command_replayed(rpc_call *call, db_pool *db);

/* The cause of the events a call causes (outbox.h): the caller's user id
 * as actor (the program's when unauthenticated), the request id as
 * correlation id, the call's traceparent. Borrows from call. */
outbox_cause command_cause(const rpc_call *call);

/* Deletes records older than retention_s, up to batch per statement, until
 * none is left; *deleted (may be NULL) counts them. Outside any
 * transaction; services call it periodically. */
status_code command_idem_purge(db_conn *db, int retention_s, int batch, uint64_t *deleted,
                               char *errbuf, size_t errlen);

#endif
