/*
 * domtest: what the order, inventory and payment domain tests share: the
 * shop_test database with a domain's migrations, and an outbox_sink that
 * writes events into a table of that database in the caller's transaction
 * (so a rolled-back attempt leaves none behind, and nothing reaches the
 * real outbox or Kafka).
 *
 * Every helper fails the current test (Criterion) on error. Tests make
 * their own ids (domtest_id), so they never see each other's rows.
 */
#ifndef SHOP_TESTS_DOMTEST_H
#define SHOP_TESTS_DOMTEST_H

#include <protobuf-c/protobuf-c.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"
#include "events/consumer.h"
#include "events/events.h"
#include "events/outbox.h"

/* Applies the events migrations and the component's to shop_test (as
 * shop_migrate), once per process and component, and returns a new
 * connection as shop_test (db_close it). */
db_conn *domtest_db(const char *component, const db_migration *migs, size_t n);

/* A sink whose append inserts the envelope into domtest_events in the
 * same transaction; committed_cb does nothing. */
outbox_sink domtest_sink(void);

/* Events of aggregate key (and of type, the protobuf full name, unless
 * NULL) committed so far. */
int domtest_count(db_conn *c, const char *key, const char *type);

/* The last committed event of key and type, decoded with desc (free with
 * protobuf_c_message_free_unpacked); NULL when none. *sequence (may be
 * NULL) gets its envelope sequence. */
ProtobufCMessage *domtest_last(db_conn *c, const char *key, const ProtobufCMessageDescriptor *desc,
                               int64_t *sequence);

/* A fresh UUIDv7. */
void domtest_id(char out[EVENTS_ID_SIZE]);

/* Runs fn in a transaction (db_tx_run, retrying deadlocks); fails the test
 * unless it returns OK. */
void domtest_tx(db_conn *c, db_tx_fn fn, void *arg);

/* An event as a consumer hands it over (for consumer_spec_apply): an
 * envelope with a fresh id, m's full name as type and m packed as data. */
typedef struct domtest_event {
  events_envelope env;
  uint8_t data[1024];
  char id[EVENTS_ID_SIZE];
} domtest_event;
void domtest_event_make(domtest_event *e, const ProtobufCMessage *m);

/* Applies the n events through spec's consumer path (prepare, the
 * table, before_commit) in one transaction of c, with arg. */
void domtest_consume(db_conn *c, const consumer_spec *spec, domtest_event *events, size_t n,
                     void *arg);

#endif
