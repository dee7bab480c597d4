/*
 * crash: named crash points for fault tests.
 *
 * Code that must survive a crash at a precise moment marks that moment with
 * crash_point("relay.after_ack"). The points are compiled into every build
 * and do nothing unless the environment variable SHOP_CRASH_AT names one:
 *
 *   SHOP_CRASH_AT=<name>:<n>   abort() at the n-th pass (n >= 1) through
 *                              the point called <name>; ":<n>" may be left
 *                              out (n = 1).
 *
 * The variable is read once, at the first crash_point() call of the
 * process; changing it afterwards has no effect. The only state is that
 * write-once parsed spec and one atomic pass counter.
 *
 * Points in use (grep for crash_point / crash_fault to find them):
 *   relay.after_ack         outbox relay: a delivery report arrived, the row
 *                           is not yet marked sent
 *   consumer.mid_batch      consumer: the handler ran, the transaction is
 *                           not yet committed
 *   consumer.after_commit   consumer: the transaction committed, the Kafka
 *                           offset is not yet stored
 *   relay.fatal             (a fault, not an abort) outbox relay: after
 *                           producing a row, librdkafka is made to raise a
 *                           fatal error, as its idempotent producer does
 *                           after some long outages
 *   command.after_commit    a command (command_run, every command
 *                           service): the state change, its outbox rows
 *                           and the idempotency record committed, the
 *                           reply not yet sent and the relay not woken
 *   saga.after_commit       order-command's saga: a consumer transaction
 *                           of the saga committed (with the outbox rows of
 *                           the step it took), the relay not yet woken
 *
 * Every consumer (the four workers, the saga, the query projections) runs
 * through internal/events/consumer.c, so consumer.* reach them all. In
 * audit-worker the handler commits the audit rows on a connection of its
 * own before the inbox commits: consumer.mid_batch there is the crash
 * between those two commits. scripts/faults.sh drives every point.
 *
 * Thread-safe: may be called from any thread at any time.
 */
#ifndef SHOP_CRASH_H
#define SHOP_CRASH_H

#include <stdbool.h>

/* Aborts the process if name is the armed point and this is its n-th pass;
 * otherwise returns at once. name must not be NULL. */
void crash_point(const char *name);

/* For faults other than an abort: true exactly at the n-th pass through
 * the armed point called name (the caller then injects its fault), false
 * otherwise. Same SHOP_CRASH_AT spec and counter as crash_point. */
bool crash_fault(const char *name);

/* Whether SHOP_CRASH_AT arms the point called name (for logging at start). */
bool crash_armed(const char *name);

#endif
