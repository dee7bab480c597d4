/*
 * projection: read models that end in the same state whatever order and
 * however many times events arrive (DESIGN.md: duplicates and replays change
 * nothing).
 *
 * Every (projection, key) has a last applied version in the table
 * projection_versions (0 when nothing was applied). A handler calls one of
 * these inside the consumer's transaction, passing the code that changes
 * the read model as a callback:
 *
 *   projection_apply_state  for events that carry the state they set
 *     (PriceChanged carries the new price): applied when the version is
 *     newer than the row's, ignored when older or equal. Gaps are fine.
 *
 *   projection_apply_delta  for events that carry a change (StockAdjusted
 *     by +5): the versions must be 1, 2, 3, ... per key. The next version
 *     is applied; an older or equal one is ignored; one ahead of a missing
 *     version is held in projection_pending and the key waits: later
 *     versions are held too, and when the missing one arrives (late, or
 *     replayed from the dead letters) it is applied and then every held
 *     version that follows it, in order, in the same transaction. Nothing
 *     is skipped; projection_pending_count() shows what is waiting.
 *
 * One projection name per part of a row that events set independently:
 * if ProductUpdated (details) and PriceChanged (price) shared one version,
 * an older PriceChanged arriving after a newer ProductUpdated would be
 * ignored and the price lost. Use "product.details" and "product.price"
 * (both keyed by the product id, versioned by the aggregate's sequence).
 *
 * The version row is read with SELECT ... FOR UPDATE, so two consumers
 * applying to one key serialise; a race creating the same new key returns
 * ABORTED, which the consumer retries.
 *
 * Thread: the thread that owns the connection. Names: projection up to 64
 * ASCII characters, key up to 191 characters (INVALID_ARGUMENT otherwise).
 */
#ifndef SHOP_EVENTS_PROJECTION_H
#define SHOP_EVENTS_PROJECTION_H

#include <stdint.h>

#include "db/db.h"
#include "events/events.h"
#include "status/status.h"

typedef enum projection_outcome {
  PROJECTION_APPLIED = 1, /* applied (a delta: with any held versions after it) */
  PROJECTION_IGNORED = 2, /* not newer than the row: nothing changed */
  PROJECTION_HELD = 3,    /* a delta ahead of a gap: kept in projection_pending */
} projection_outcome;

/* Changes the read model for ev at version, inside tx. For a held delta
 * applied later, ev is the stored copy of the event. */
typedef status_code (*projection_apply_cb)(db_conn *tx, const events_envelope *ev, int64_t version,
                                           void *arg, char *errbuf, size_t errlen);

/* The last applied version of (projection, key); 0 when none. Any
 * connection (the query side reads it for "read your own writes"). */
status_code projection_version(db_conn *c, const char *projection, const char *key,
                               int64_t *version, char *errbuf, size_t errlen);

/* Applies a state-carrying event when version is newer than the row's.
 * *out (may be NULL) says what happened. Errors: the callback's status, or
 * the database's. */
status_code projection_apply_state(db_conn *tx, const char *projection, const char *key,
                                   int64_t version, const events_envelope *ev,
                                   projection_apply_cb cb, void *arg, projection_outcome *out,
                                   char *errbuf, size_t errlen);

/* Applies a delta event in version order, holding it on a gap (above).
 * version must be >= 1. */
status_code projection_apply_delta(db_conn *tx, const char *projection, const char *key,
                                   int64_t version, const events_envelope *ev,
                                   projection_apply_cb cb, void *arg, projection_outcome *out,
                                   char *errbuf, size_t errlen);

/* Sets the row's version to version if that is newer: the starting point
 * of a delta stream that does not begin at 1 (a snapshot event carrying
 * the state up to that version; the caller applies the snapshot itself).
 * Held deltas that now follow on are applied with cb (required). */
status_code projection_seed(db_conn *tx, const char *projection, const char *key, int64_t version,
                            projection_apply_cb cb, void *arg, char *errbuf, size_t errlen);

/* Deltas of projection held behind a gap (all keys). */
status_code projection_pending_count(db_conn *c, const char *projection, int64_t *count,
                                     char *errbuf, size_t errlen);

#endif
