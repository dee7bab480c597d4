/*
 * audit: audit-worker's domain (DESIGN.md, "audit-worker"): an append-only,
 * hash-chained log of every event on every domain topic, and the admin-only
 * shop.audit.v1.AuditQueryService over it.
 *
 * The log (table audit_log, migrations component "audit"): one row per
 * event id (unique), row ids 1, 2, 3, ... without gaps, each row holding the
 * event's attributes, its raw bytes, where it was read (topic, partition,
 * offset), when it was appended, and
 *
 *   hash = SHA-256(prev_hash || canonical content)
 *
 * where prev_hash is the previous row's hash (32 zero bytes for row 1) and
 * the canonical content is, for each field in this order, an 8-byte
 * big-endian length followed by the field's bytes (integers as decimal
 * text): row_id, event_id, topic, partition, offset, type, source, actor,
 * subject, sequence, event_time_ms, correlation_id, traceparent, key, data,
 * recorded_ms. (audit_row_hash computes it.)
 *
 * One writer at a time: the consumer takes GET_LOCK('shop.audit.chain')
 * on its own connection for each batch's transaction (read the head, queue
 * the rows, commit with the inbox rows, release when it ended), so two
 * audit-worker instances interleave whole batches and the chain stays
 * linear. The event id's unique key also makes an append idempotent
 * beyond the inbox: ids already in the log are skipped (one lookup per
 * batch), so a replay with an emptied inbox changes nothing.
 *
 * The runtime account (shop_audit) has SELECT and INSERT only. The consumer
 * framework's periodic purge of processed_events (a DELETE) is therefore
 * refused and logged as a warning: the inbox table grows by one row per
 * event, which the audit log does anyway. accounts.conf grants per database
 * only (one line per account, CREATE OR REPLACE USER per line), so a
 * table-level DELETE grant cannot be written there without changing
 * scripts/lib/mariadb.sh. The same holds for the RPC idempotency purge
 * (the audit service has no commands, so that table stays empty).
 *
 * Domain code: includes neither mysql.h nor nng.h.
 */
#ifndef SHOP_AUDIT_H
#define SHOP_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "check/check.h"
#include "consistency/consistency.h"
#include "db/db.h"
#include "events/consumer.h"
#include "rpc/rpc.h"
#include "shop/audit/v1/queries.pb-c.h"
#include "status/status.h"

extern const db_migration audit_migrations[];
extern const size_t audit_migrations_count;

#define AUDIT_HASH_SIZE 32
#define AUDIT_CHAIN_LOCK "shop.audit.chain"

/* One row of the log, as stored. Strings and data are borrowed. */
typedef struct audit_row {
  int64_t row_id;
  const char *event_id;
  const char *topic;
  int32_t partition;
  int64_t offset;
  const char *type;
  const char *source;
  const char *actor;
  const char *subject;
  int64_t sequence;
  int64_t event_time_ms;
  const char *correlation_id;
  const char *traceparent;
  const char *key;
  const uint8_t *data;
  size_t data_len;
  int64_t recorded_ms;
} audit_row;

/* hash = SHA-256(prev || canonical content of row). */
void audit_row_hash(const audit_row *row, const uint8_t prev[AUDIT_HASH_SIZE],
                    uint8_t out[AUDIT_HASH_SIZE]);

/* RebuildOrderProjection is served by whoever knows the order read model
 * (internal/rebuild; audit-worker's main wires it in): audit_ctx.rebuild
 * runs on the RPC worker thread, sets a status on the call or runs
 * closure. Without one the RPC answers UNIMPLEMENTED. */
typedef struct audit_ctx audit_ctx;
typedef void (*audit_rebuild_cb)(void *self, rpc_call *call, audit_ctx *ctx, int max_differences,
                                 Shop__Audit__V1__RebuildOrderProjectionResponse_Closure closure,
                                 void *data);

/* AuditQueryService's checks of a request on its own (no database):
 * violations go to v (see check_violations); the handler answers
 * INVALID_ARGUMENT with them when v->n > 0. Pure, so they are fuzzed
 * without a server (tests/fuzz). */
void audit_validate_list_audit_events(const Shop__Audit__V1__ListAuditEventsRequest *in,
                                      check_violations *v);
void audit_validate_get_order_timeline(const Shop__Audit__V1__GetOrderTimelineRequest *in,
                                       check_violations *v);
void audit_validate_verify_chain(const Shop__Audit__V1__VerifyChainRequest *in,
                                 check_violations *v);
void audit_validate_rebuild_order_projection(
    const Shop__Audit__V1__RebuildOrderProjectionRequest *in, check_violations *v);

/* The worker's context: the pool it appends with (its own connection per
 * batch) and the notifier the query side waits on. */
struct audit_ctx {
  db_pool *db;
  audit_rebuild_cb rebuild; /* RebuildOrderProjection; may be NULL */
  void *rebuild_self;
  consistency_notifier notifier;
  int lock_timeout_s; /* GET_LOCK wait; default 10 */
  int64_t appended;   /* rows appended by this process (stats) */
};

void audit_ctx_init(audit_ctx *ctx, db_pool *db);
void audit_ctx_destroy(audit_ctx *ctx);

/* Appends the events not yet in the log, in the order given, on connection
 * c (no transaction open on it): lock, one transaction, release. *added
 * (may be NULL) gets the number of rows inserted. UNAVAILABLE when the lock
 * could not be taken in time or the database is gone (transient). */
status_code audit_append(db_conn *c, const consumer_msg *msgs, size_t n, int lock_timeout_s,
                         int *added, char *errbuf, size_t errlen);

/* Appends the events of msgs not yet in the log (nor earlier in msgs), in
 * order, inside the open transaction on c; the caller holds the chain
 * lock. The rows go with the commit (db_insert_later). */
status_code audit_append_tx(db_conn *c, const consumer_msg *msgs, size_t n, int *added,
                            char *errbuf, size_t errlen);

/* The audit log's consumer (group "audit-worker", arg: audit_ctx *): every
 * event of every domain topic, undecoded (the log knows no domain), in the
 * consumer's own transaction under the chain lock. */
extern const consumer_spec audit_consumer;

/* The result of a chain check. */
typedef struct audit_verify_result {
  bool ok;
  int64_t rows_checked;
  int64_t last_row_id;
  uint8_t last_hash[AUDIT_HASH_SIZE];
  int64_t bad_row_id; /* when !ok */
  char bad_event_id[65];
  int fault; /* Shop__Audit__V1__ChainFault */
  char detail[300];
} audit_verify_result;

/* Recomputes the chain from from_row_id (0/1: the first row; a later row's
 * prev_hash is trusted) for at most max_rows rows (0: to the end). */
status_code audit_verify(db_conn *c, int64_t from_row_id, int64_t max_rows,
                         audit_verify_result *out, char *errbuf, size_t errlen);

/* The log read back as events, for a read model rebuilt from it: the rows
 * of the given topics (1..AUDIT_REPLAY_TOPICS_MAX), in chain order, each
 * as the envelope a consumer read (partition and offset as recorded),
 * handed to apply one by one inside transactions on tx of up to 500 rows
 * each (begun and committed here; a failure rolls the open one back and
 * is returned). log is a connection to the audit database, tx one to
 * where the model is rebuilt. *applied counts the rows handed over. */
#define AUDIT_REPLAY_TOPICS_MAX 16
typedef status_code (*audit_replay_cb)(void *self, const consumer_msg *m, db_conn *tx, char *errbuf,
                                       size_t errlen);
status_code audit_replay(db_conn *log, const char *const *topics, size_t n_topics, db_conn *tx,
                         audit_replay_cb apply, void *self, int64_t *applied, char *errbuf,
                         size_t errlen);

/* Registers AuditQueryService (every method admin only) on s, with ctx. */
status_code audit_query_register(rpc_server *s, audit_ctx *ctx, char *errbuf, size_t errlen);

#endif
