/* Statements over a set of text keys, a chunk of DB_KEYS_CHUNK keys each,
 * so that one prepared text serves every batch size (see db.h). */
#include "db/db.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

size_t db_keys_chunk(db_value *params, const char *const *keys, size_t n, size_t from) {
  size_t take = n - from < DB_KEYS_CHUNK ? n - from : DB_KEYS_CHUNK;
  for (size_t j = 0; j < DB_KEYS_CHUNK; j++) params[j] = DB_STR(keys[from + (j < take ? j : 0)]);
  return take;
}

status_code db_query_keys(db_conn *tx, const char *sql, const char *const *keys, size_t n,
                          db_row_cb each_cb, void *arg, char *errbuf, size_t errlen) {
  for (size_t from = 0; from < n;) {
    db_value p[DB_KEYS_CHUNK];
    from += db_keys_chunk(p, keys, n, from);
    db_rows *r = NULL;
    status_code st = db_query(tx, sql, p, DB_KEYS_CHUNK, &r, errbuf, errlen);
    if (st != STATUS_OK) return st;
    bool more = true;
    while (more && db_rows_next(r)) more = each_cb(r, arg);
    db_rows_free(r);
    if (!more) break;
  }
  return STATUS_OK;
}

#define WHEN4 "WHEN ? THEN ? WHEN ? THEN ? WHEN ? THEN ? WHEN ? THEN ? "
#define WHEN16 WHEN4 WHEN4 WHEN4 WHEN4
_Static_assert(DB_KEYS_CHUNK == 32, "the CASE text holds 32 rows");

status_code db_update_keys(db_conn *tx, const char *table, const char *key, const char *const *cols,
                           size_t ncols, const char *const *keys, size_t n, db_column_cb value_cb,
                           void *arg, int64_t updated_ms, char *errbuf, size_t errlen) {
  if (n == 0) return STATUS_OK;
  if (ncols == 0 || ncols > DB_UPDATE_MAX_COLUMNS) {
    snprintf(errbuf, errlen, "db_update_keys: %zu columns (1..%d)", ncols, DB_UPDATE_MAX_COLUMNS);
    return STATUS_INVALID_ARGUMENT;
  }
  char sql[DB_UPDATE_MAX_COLUMNS * (sizeof(WHEN16) * 2 + 160) + 512];
  int o = snprintf(sql, sizeof sql, "UPDATE %s SET ", table);
  for (size_t c = 0; c < ncols && o > 0 && (size_t)o < sizeof sql; c++)
    o += snprintf(sql + o, sizeof sql - (size_t)o, "%s = CASE %s " WHEN16 WHEN16 "END, ", cols[c],
                  key);
  if (o > 0 && (size_t)o < sizeof sql)
    o += snprintf(sql + o, sizeof sql - (size_t)o,
                  "updated_ms = ? WHERE %s IN (" DB_KEYS_PLACEHOLDERS ")", key);
  if (o <= 0 || (size_t)o >= sizeof sql) {
    snprintf(errbuf, errlen, "db_update_keys: names too long for %s", table);
    return STATUS_INVALID_ARGUMENT;
  }
  enum { MAX_PARAMS = DB_UPDATE_MAX_COLUMNS * 2 * DB_KEYS_CHUNK + 1 + DB_KEYS_CHUNK };
  db_value *p = malloc(MAX_PARAMS * sizeof *p);
  if (p == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  status_code st = STATUS_OK;
  for (size_t from = 0; from < n && st == STATUS_OK; from += DB_KEYS_CHUNK) {
    size_t k = 0;
    for (size_t c = 0; c < ncols; c++)
      for (size_t j = 0; j < DB_KEYS_CHUNK; j++) {
        size_t i = from + j < n ? from + j : from;
        p[k++] = DB_STR(keys[i]);
        p[k++] = value_cb(i, c, arg);
      }
    p[k++] = DB_I64(updated_ms);
    db_keys_chunk(p + k, keys, n, from);
    k += DB_KEYS_CHUNK;
    st = db_exec(tx, sql, p, k, NULL, NULL, errbuf, errlen);
  }
  free(p);
  return st;
}
