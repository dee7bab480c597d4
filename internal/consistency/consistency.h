/*
 * consistency: reading your own writes (DESIGN.md). A command's reply
 * carries a consistency token (aggregate id, version); a query given one
 * answers once its projection reached that version, waiting for the
 * projection's commit without polling the database, or FAILED_PRECONDITION
 * naming the version it has.
 *
 * Thread-safety: a notifier is shared by the threads of one process (the
 * consumer commits, RPC workers wait); every function may be called from
 * any thread.
 */
#ifndef SHOP_CONSISTENCY_H
#define SHOP_CONSISTENCY_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "events/consumer.h"
#include "rpc/rpc.h"
#include "shop/common/v1/common.pb-c.h"

/* Fills a ConsistencyToken that borrows id. */
void consistency_token_set(Shop__Common__V1__ConsistencyToken *t, const char *id, int64_t version);

/* What a query side's projection committed lately, for the queries that
 * wait on a consistency token: the newest version seen per aggregate, in a
 * fixed table (a later aggregate may take an older one's slot: a waiter
 * that finds its slot taken looks at the database again after a while),
 * and a condition variable the projection broadcasts on after each
 * commit. */
#define CONSISTENCY_SLOTS 4096
typedef struct consistency_slot {
  char id[65];
  int64_t version;
} consistency_slot;
typedef struct consistency_notifier {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  uint64_t generation;
  consistency_slot *slots; /* CONSISTENCY_SLOTS */
} consistency_notifier;

void consistency_notifier_init(consistency_notifier *n);
void consistency_notifier_destroy(consistency_notifier *n);
/* Call after a projection transaction committed: records (ce_subject,
 * ce_sequence) of each event of msgs whose topic is topic (NULL: every
 * event) as its aggregate's version, then wakes the waiters. */
void consistency_notifier_committed(consistency_notifier *n, const consumer_msg *msgs, size_t count,
                                    const char *topic);
/* The newest version of id the notifier holds (0: none, or its slot was
 * taken by another aggregate since). */
int64_t consistency_notifier_version(consistency_notifier *n, const char *id);

/* Reads the projected version of one aggregate (0 when it has none yet). */
typedef status_code (*consistency_version_cb)(db_conn *c, const char *aggregate_id,
                                              int64_t *version, char *errbuf, size_t errlen);

/*
 * Honours a query's ReadConsistency (may be NULL): without a token, true
 * at once. With one, checks the token (INVALID_ARGUMENT on the call for a
 * malformed id or a version < 1), then reads the projected version with
 * version_fn; while it is short of the token's, waits on the notifier
 * until the projection commits the version (read once more from the
 * database to answer), for at most wait_ms, or the call's remaining
 * budget when wait_ms is 0, whichever ends first. The wait holds no
 * database connection, and the database is read again only when the
 * notifier has the version, when the aggregate's slot was taken by
 * another one (every CONSISTENCY_RECHECK_MS), or at the end. When the
 * notifier has the version and the database does not (db reads a replica
 * that is behind: app_db_read), the database is read again every few
 * milliseconds until it has it or the wait ends.
 * True when the projection is there; false with FAILED_PRECONDITION on
 * the call ("projection of <id> is at version N, token asks for M", a
 * violation on consistency.token.version and Status.projection naming the
 * version it has) or a database error.
 */
bool consistency_wait(rpc_call *call, db_pool *db, consistency_notifier *n,
                      const Shop__Common__V1__ReadConsistency *rc,
                      consistency_version_cb version_fn);

#endif
