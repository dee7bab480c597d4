/*
 * The db module's own parts, shared by its files (db.c: connections,
 * statements and transactions; db_defer.c: deferred inserts; db_pool.c;
 * db_migrate.c). Not for other modules.
 */
#ifndef SHOP_DB_INTERNAL_H
#define SHOP_DB_INTERNAL_H

#include <mysql.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "db/db.h"

/* One prepared statement of a connection, in a bucket of its cache. */
typedef struct stmt_entry {
  char *sql;
  uint64_t hash;
  MYSQL_STMT *stmt;
  struct stmt_entry *next;
} stmt_entry;

#define DB_STMT_BUCKETS 256

/* The rows queued by db_insert_later in the open transaction (db_defer.c). */
typedef struct db_defer db_defer;

struct db_conn {
  MYSQL *my;
  db_params_copy pc; /* pc.p: the params, owned */
  stmt_entry *stmts[DB_STMT_BUCKETS];
  bool in_tx;
  bool broken; /* the link died; reopen before the next statement */
  /* The last COMMIT was COMMIT AND CHAIN: the server holds an empty
   * transaction (no snapshot, no lock until a statement runs in it) that
   * the next db_begin takes over without a round trip of its own, when
   * it comes within DB_CHAIN_FRESH_MS; a statement outside a transaction
   * ends it first (db_unchain). */
  bool chained;
  int64_t chained_ms; /* CLOCK_MONOTONIC */
  uint64_t reconnects;
  db_defer *defer; /* NULL until the first deferred row */
  db_pool *home;   /* the pool it belongs to (db_pool_put gives it back there) */
};

/* Records a failure of the link or the statement and returns its status. */
status_code db_fail_with(db_conn *c, unsigned e, const char *msg, const char *sql, char *errbuf,
                         size_t errlen);

/* Runs a statement without parameters outside the prepared-statement cache
 * (transaction control and migrations: no input travels in these). */
status_code db_plain(db_conn *c, const char *sql, char *errbuf, size_t errlen);

/* Reopens a connection whose link died (nothing to do when it is alive).
 * Only outside a transaction. */
status_code db_revive(db_conn *c, char *errbuf, size_t errlen);

/* db_defer.c: sends the queued rows (before COMMIT); forgets them (after
 * COMMIT or ROLLBACK); frees the queue (db_close). */
status_code db_defer_flush(db_conn *c, char *errbuf, size_t errlen);
void db_defer_reset(db_conn *c);
void db_defer_free(db_conn *c);

#endif
