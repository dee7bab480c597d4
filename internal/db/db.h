/*
 * db: the MariaDB layer. Prepared statements only, transactions, reconnect,
 * numbered migrations.
 *
 * A db_conn is one connection with its own cache of prepared statements,
 * keyed by SQL text: db_exec()/db_query() prepare a statement the first time
 * and reuse it afterwards. When the server goes away the connection is
 * re-opened and its statements re-prepared on the next call outside a
 * transaction; inside a transaction the call fails with STATUS_UNAVAILABLE
 * and the caller retries the whole transaction (db_tx_run does).
 *
 * Errors are translated once, here: duplicate key -> ALREADY_EXISTS,
 * deadlock or lock wait timeout -> ABORTED, lost or refused connection ->
 * UNAVAILABLE, anything else -> INTERNAL; the server's message goes to
 * errbuf.
 *
 * Not thread-safe: one db_conn per thread (libmariadb's rule). db_pool hands
 * connections to threads.
 */
#ifndef SHOP_DB_H
#define SHOP_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "status/status.h"

typedef struct db_params {
  const char *host; /* "127.0.0.1" uses TCP */
  int port;
  /* A Unix socket path of a server on this host: the connection goes
   * through it instead of host:port (NULL or "": TCP). Cheaper per round
   * trip than loopback TCP (make bench: bench-mariadb +36 %, median of 3). */
  const char *socket;
  const char *user;
  const char *password;
  const char *database; /* may be NULL */
  int connect_timeout_ms;
  int connect_retry_ms; /* db_connect keeps retrying this long; 0: once */
} db_params;

typedef enum db_type {
  DB_T_NULL = 0,
  DB_T_I64,
  DB_T_STR, /* text: p/len; len (size_t)-1 means strlen(p) */
  DB_T_BLOB,
} db_type;

/* One bound parameter. Borrowed for the duration of the call. */
typedef struct db_value {
  db_type type;
  int64_t i;
  const void *p;
  size_t len;
} db_value;

#define DB_NULLV ((db_value){.type = DB_T_NULL})
#define DB_I64(v) ((db_value){.type = DB_T_I64, .i = (int64_t)(v)})
#define DB_STR(s) ((db_value){.type = DB_T_STR, .p = (s), .len = (size_t)-1})
#define DB_STRN(s, n) ((db_value){.type = DB_T_STR, .p = (s), .len = (n)})
#define DB_BLOB(b, n) ((db_value){.type = DB_T_BLOB, .p = (b), .len = (n)})

/* An owned copy of db_params, for whoever keeps params past the call
 * that gave them (a pool, a relay, a consumer): p's strings point into
 * it. db_params_dup fills it (false: out of memory, nothing kept);
 * db_params_copy_free frees it and wipes the password. A zeroed copy is
 * empty and may be freed. */
typedef struct db_params_copy {
  db_params p;
  char *host, *user, *password, *database, *socket;
} db_params_copy;
bool db_params_dup(db_params_copy *out, const db_params *in);
void db_params_copy_free(db_params_copy *c);

typedef struct db_conn db_conn;
typedef struct db_rows db_rows;

/* Connects, retrying with backoff for p->connect_retry_ms. The params are
 * copied. On success *out owns the connection (close with db_close). */
status_code db_connect(db_conn **out, const db_params *p, char *errbuf, size_t errlen);

/* Closes the connection and its statements; NULL is fine. */
void db_close(db_conn *c);

/* Parameters one statement may bind at most (the protocol's limit). */
#define DB_MAX_PARAMS 65535

/* Runs a statement that returns no rows. affected and last_id may be NULL. */
status_code db_exec(db_conn *c, const char *sql, const db_value *params, size_t nparams,
                    uint64_t *affected, uint64_t *last_id, char *errbuf, size_t errlen);

/* Runs a query; on success *out owns the result set, fully buffered (free
 * with db_rows_free). */
status_code db_query(db_conn *c, const char *sql, const db_value *params, size_t nparams,
                     db_rows **out, char *errbuf, size_t errlen);

/* Moves to the next row: true if there is one. */
bool db_rows_next(db_rows *r);
size_t db_rows_count(const db_rows *r);
bool db_rows_is_null(const db_rows *r, unsigned col);
int64_t db_rows_i64(const db_rows *r, unsigned col);
/* Text or bytes of a column of the current row, borrowed until the next
 * db_rows_next or db_rows_free; "" for NULL. len may be NULL. Text values
 * are NUL-terminated. */
const char *db_rows_str(const db_rows *r, unsigned col, size_t *len);
void db_rows_free(db_rows *r);

/* Convenience: runs a query expected to return at most one row with one
 * integer column. Returns NOT_FOUND when there is no row. */
status_code db_query_i64(db_conn *c, const char *sql, const db_value *params, size_t nparams,
                         int64_t *out, char *errbuf, size_t errlen);

/* db_commit commits with COMMIT AND CHAIN (as durable as COMMIT), which
 * opens the connection's next transaction in the same round trip; a
 * db_begin within DB_CHAIN_FRESH_MS (1 s) takes that one over and sends
 * nothing, a later one sends START TRANSACTION (which ends it, and reopens
 * a link that died meanwhile, as outside a transaction). The chained
 * transaction holds no snapshot and no lock until a statement runs in it
 * (READ COMMITTED; a snapshot begins at the first read in any case), and a
 * statement outside a transaction ends it first (one COMMIT round trip),
 * so it runs on its own as always. */
status_code db_begin(db_conn *c, char *errbuf, size_t errlen);
status_code db_commit(db_conn *c, char *errbuf, size_t errlen);
/* Rolls back; safe to call when no transaction is open or the link died. */
void db_rollback(db_conn *c);
bool db_in_tx(const db_conn *c);
/* Whether the link died (the open transaction with it): the next
 * statement outside a transaction reopens it. */
bool db_link_lost(const db_conn *c);

/*
 * Queues one row for a multi-row INSERT sent at the commit of the open
 * transaction on tx: insert_into is the statement's head without VALUES
 * ("INSERT INTO outbox (event_id, topic, envelope)", the same text for
 * every row of a table) and row its n values (copied). db_commit sends the
 * queued rows first, in the order they were queued, each table's rows in as
 * few statements as the parameter limit allows (tables in the order of
 * their first row), then commits; a rollback, a lost link or the next
 * db_begin drops them. A queued row is not visible to the transaction's
 * own statements before the commit, and its insert cannot fail a check the
 * caller needs to see at once: use it for rows nothing in the transaction
 * reads back (outbox rows, log rows). An error sending them fails the
 * commit with the database's status (the transaction is rolled back).
 * FAILED_PRECONDITION outside a transaction; UNAVAILABLE when the link
 * died with the transaction (retry the whole transaction).
 */
status_code db_insert_later(db_conn *tx, const char *insert_into, const db_value *row, size_t n,
                            char *errbuf, size_t errlen);

/* The same with a clause after the VALUES ("ON DUPLICATE KEY UPDATE
 * version = IF(VALUES(version) > version, ...)"), for guarded writes of a
 * read model: rows with the same head and clause go in one multi-row
 * statement, in the order queued (a later row of the same key sees the
 * earlier one's effect); statements of different heads run in the order
 * of their first row, so use it where the writes of different heads
 * commute (each guarded by its own version). */
status_code db_upsert_later(db_conn *tx, const char *insert_into, const char *on_duplicate,
                            const db_value *row, size_t n, char *errbuf, size_t errlen);

/* Sends the rows queued so far now, inside the open transaction (a step
 * that must read them back, or read what an earlier step of the same
 * transaction deferred). */
status_code db_insert_flush(db_conn *tx, char *errbuf, size_t errlen);

/* Statements over a set of text keys ("WHERE order_id IN (...)") use one
 * text with DB_KEYS_CHUNK placeholders, so one prepared statement serves
 * every size: "... IN (" DB_KEYS_PLACEHOLDERS ")". db_keys_chunk fills
 * params[0..DB_KEYS_CHUNK) with keys[from..n) (borrowed), repeating
 * keys[from] where fewer are left (a repeated key changes nothing in an IN
 * list or a CASE), and returns how many keys it took. */
#define DB_KEYS_CHUNK 32
#define DB_KEYS_P4 "?, ?, ?, ?"
#define DB_KEYS_P16 DB_KEYS_P4 ", " DB_KEYS_P4 ", " DB_KEYS_P4 ", " DB_KEYS_P4
#define DB_KEYS_PLACEHOLDERS DB_KEYS_P16 ", " DB_KEYS_P16
size_t db_keys_chunk(db_value *params, const char *const *keys, size_t n, size_t from);

/* Runs sql, whose only parameters are one DB_KEYS_PLACEHOLDERS list, over
 * keys[0..n) (borrowed), DB_KEYS_CHUNK keys a statement, and calls each_cb
 * on every row it returns (with arg); each_cb returning false stops the
 * reading (and the result is STATUS_OK: the caller knows why it stopped). */
typedef bool (*db_row_cb)(db_rows *r, void *arg);
status_code db_query_keys(db_conn *tx, const char *sql, const char *const *keys, size_t n,
                          db_row_cb each_cb, void *arg, char *errbuf, size_t errlen);

/* Writes rows back by key: "UPDATE table SET cols[c] = CASE key WHEN ?
 * THEN ? ... END, ..., updated_ms = ? WHERE key IN (...)", one statement
 * per DB_KEYS_CHUNK rows (a short chunk repeats its first row, which
 * writes the same values twice), so one prepared text serves every size.
 * value_cb gives row i's value of column c (borrowed until the call
 * returns). At most DB_UPDATE_MAX_COLUMNS columns. */
#define DB_UPDATE_MAX_COLUMNS 8
typedef db_value (*db_column_cb)(size_t row, size_t col, void *arg);
status_code db_update_keys(db_conn *tx, const char *table, const char *key, const char *const *cols,
                           size_t ncols, const char *const *keys, size_t n, db_column_cb value_cb,
                           void *arg, int64_t updated_ms, char *errbuf, size_t errlen);

/* Runs fn inside a transaction, committing when fn returns STATUS_OK and
 * rolling back otherwise. ABORTED (deadlock) and UNAVAILABLE (lost link) are
 * retried up to max_attempts with a short backoff; other codes are
 * returned as they are. */
typedef status_code (*db_tx_fn)(db_conn *c, void *arg, char *errbuf, size_t errlen);
status_code db_tx_run(db_conn *c, db_tx_fn fn, void *arg, int max_attempts, char *errbuf,
                      size_t errlen);

/* Advisory named lock (GET_LOCK) held by this connection until released or
 * until the connection closes. timeout_s 0 tries once. *got is true when
 * taken. */
status_code db_lock_try(db_conn *c, const char *name, int timeout_s, bool *got, char *errbuf,
                        size_t errlen);
status_code db_lock_release(db_conn *c, const char *name, char *errbuf, size_t errlen);

/* Number of times this connection was re-opened after a lost link. */
uint64_t db_reconnects(const db_conn *c);

/* A numbered migration: version 1, 2, ... in order; sql may hold several
 * statements separated by ';' at the end of a line. */
typedef struct db_migration {
  int version;
  const char *name;
  const char *sql;
} db_migration;

/* Applies the migrations of one component ("rpc", "events", "order", ...)
 * not yet recorded in the schema_migrations table of the connection's
 * database, in order, under a named lock so concurrent start-ups apply each
 * once. Versions are per component, so shared layers and a domain each
 * number their own files. An applied migration whose text changed is an
 * error (FAILED_PRECONDITION). applied may be NULL. Run it on a connection
 * of the migration account. */
status_code db_migrate(db_conn *c, const char *component, const db_migration *migs, size_t n,
                       int *applied, char *errbuf, size_t errlen);

/* Reads the password of a MariaDB account from <secrets_dir>/<account>
 * into buf. Returns false with a message in errbuf if it cannot. */
bool db_password_from_dir(const char *secrets_dir, const char *account, char *buf, size_t len,
                          char *errbuf, size_t errlen);

/* Writes the LIKE pattern "%text%" with '!' as the escape character (use
 * "LIKE ? ESCAPE '!'"), so '%' and '_' in text match themselves. out must
 * hold 2 * strlen(text) + 3 bytes; longer text is cut. */
void db_like_pattern(const char *text, char *out, size_t len);

/* A thread-safe pool of connections to one database. Connections are made
 * on demand up to size; db_pool_get blocks until one is free. */
typedef struct db_pool db_pool;
status_code db_pool_create(db_pool **out, const db_params *p, int size, char *errbuf,
                           size_t errlen);
void db_pool_destroy(db_pool *pool);
status_code db_pool_get(db_pool *pool, db_conn **out, char *errbuf, size_t errlen);
/* Gives c back to the pool it came from (pool, or its fallback). */
void db_pool_put(db_pool *pool, db_conn *c);

/*
 * A pool of read connections to a replica that falls back on another pool
 * (the primary's): db_pool_get hands out a fallback connection while the
 * replica does not answer, and tries the replica again DB_READ_RETRY_MS
 * later. The replica is taken as down when a connection to it cannot be
 * made, or when one comes back (db_pool_put) with its link lost, so the
 * one read that met the dead link fails UNAVAILABLE (the caller's retry
 * goes to the fallback) and the others go to the fallback at once. Unlike
 * db_pool_create, a replica that is down at creation is no error. fallback
 * is borrowed and must outlive the pool.
 */
#define DB_READ_RETRY_MS 1000
status_code db_pool_create_read(db_pool **out, const db_params *replica, int size,
                                db_pool *fallback, char *errbuf, size_t errlen);
/* How many connections the fallback has given in place of the replica's. */
uint64_t db_pool_fallbacks(const db_pool *pool);

#endif
