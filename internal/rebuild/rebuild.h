/*
 * rebuild: a read model rebuilt from the audit log alone and compared with
 * the live one. It links both sides it joins (the audit log's replay and
 * the order domain's projection), so neither knows the other: audit stays
 * generic, order knows no audit log. audit-worker's main wires it in as
 * the audit_ctx's rebuild hook (AuditQueryService.RebuildOrderProjection).
 *
 * RebuildOrderProjection: replays the log's rows of the topics order-query
 * reads (its consumer spec's) through order-query's projection
 * (order_projection_consumer) into shop_scratch (as account shop_scratch;
 * its tables are dropped and re-made first), serves the result with
 * order-query's handlers on an inproc:// server, reads both it and the
 * live order-query (endpoints.order_query) with ListOrdersByStatus for
 * every status, and answers with the differences, field by field (the
 * proto path in shop.order.v1.Order, down into singular messages:
 * "total.units"; values in the proto3 JSON mapping, "" where absent; field
 * "order" for an order one side lacks). One rebuild at a time (GET_LOCK 'shop.audit.rebuild'; a
 * second one is ABORTED).
 *
 * Thread-safety: the hook runs on an RPC worker thread; the options are
 * read only.
 */
#ifndef SHOP_REBUILD_H
#define SHOP_REBUILD_H

#include "audit/audit.h"
#include "auth/auth.h"
#include "config/config.h"
#include "db/db.h"

/* What the rebuild needs besides the audit context; all borrowed, to
 * outlive the server: the config (secrets dir, order-query endpoint), the
 * JWT keys (the in-process server and the admin token it calls with) and
 * the audit account's connection parameters (host, port). */
typedef struct rebuild_order_opts {
  const shop_cfg *cfg;
  const auth_keys *auth;
  const db_params *dbp;
} rebuild_order_opts;

/* An audit_rebuild_cb; self is a rebuild_order_opts *. */
void rebuild_order_projection_cb(void *self, rpc_call *call, audit_ctx *ctx, int max_differences,
                                 Shop__Audit__V1__RebuildOrderProjectionResponse_Closure closure,
                                 void *data);

#endif
