/* Deferred multi-row inserts (db_insert_later in db.h). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "db/db_internal.h"

/* Rows per statement at the most: big enough that a busy transaction's
 * outbox rows go in one or two round trips, small enough for the packet
 * limit with kilobyte-sized envelopes. */
#define DEFER_ROWS_MAX 128

/* A queued value: text and bytes live in the connection's arena (an
 * offset, as the arena may move while it grows). */
typedef struct defer_value {
  db_type type;
  int64_t i;
  size_t off, len;
} defer_value;

typedef struct defer_table {
  char *head; /* "INSERT INTO t (a, b)" */
  char *tail; /* "ON DUPLICATE KEY UPDATE ...", or NULL */
  size_t ncols;
  size_t rows;
  defer_value *vals; /* rows * ncols */
  size_t cap_vals;
} defer_table;

struct db_defer {
  defer_table *tables;
  size_t ntables, cap_tables;
  char *arena;
  size_t used, cap;
  char *sql; /* statement text, reused */
  size_t sql_cap;
  db_value *params;
  size_t cap_params;
};

static bool grow(void **p, size_t *cap, size_t need, size_t size) {
  if (need <= *cap) return true;
  size_t c = *cap ? *cap : 16;
  while (c < need) c *= 2;
  void *q = realloc(*p, c * size);
  if (q == NULL) return false;
  *p = q;
  *cap = c;
  return true;
}

static bool same_tail(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

static defer_table *table_for(db_defer *d, const char *head, const char *tail, size_t n) {
  for (size_t i = 0; i < d->ntables; i++) {
    defer_table *t = &d->tables[i];
    if (t->ncols == n && strcmp(t->head, head) == 0 && same_tail(t->tail, tail)) return t;
  }
  if (!grow((void **)&d->tables, &d->cap_tables, d->ntables + 1, sizeof *d->tables)) return NULL;
  defer_table *t = &d->tables[d->ntables];
  memset(t, 0, sizeof *t);
  if ((t->head = strdup(head)) == NULL) return NULL;
  if (tail != NULL && (t->tail = strdup(tail)) == NULL) {
    free(t->head);
    return NULL;
  }
  t->ncols = n;
  d->ntables++;
  return t;
}

status_code db_insert_later(db_conn *tx, const char *insert_into, const db_value *row, size_t n,
                            char *errbuf, size_t errlen) {
  return db_upsert_later(tx, insert_into, NULL, row, n, errbuf, errlen);
}

status_code db_insert_flush(db_conn *tx, char *errbuf, size_t errlen) {
  if (!db_in_tx(tx)) {
    status_seterr(errbuf, errlen, "db_insert_flush needs an open transaction");
    return tx->broken ? STATUS_UNAVAILABLE : STATUS_FAILED_PRECONDITION;
  }
  status_code st = db_defer_flush(tx, errbuf, errlen);
  db_defer_reset(tx);
  return st;
}

status_code db_upsert_later(db_conn *tx, const char *insert_into, const char *on_duplicate,
                            const db_value *row, size_t n, char *errbuf, size_t errlen) {
  if (!db_in_tx(tx)) {
    if (tx->broken) {
      status_seterr(errbuf, errlen, "connection lost inside the transaction");
      return STATUS_UNAVAILABLE;
    }
    status_seterr(errbuf, errlen, "db_insert_later needs an open transaction");
    return STATUS_FAILED_PRECONDITION;
  }
  if (n == 0 || n > DB_MAX_PARAMS) {
    status_seterr(errbuf, errlen, "db_insert_later: %zu values in a row", n);
    return STATUS_INTERNAL;
  }
  if (tx->defer == NULL && (tx->defer = calloc(1, sizeof *tx->defer)) == NULL) goto oom;
  db_defer *d = tx->defer;
  defer_table *t = table_for(d, insert_into, on_duplicate, n);
  if (t == NULL || !grow((void **)&t->vals, &t->cap_vals, (t->rows + 1) * n, sizeof *t->vals))
    goto oom;
  defer_value *v = &t->vals[t->rows * n];
  for (size_t i = 0; i < n; i++) {
    v[i] = (defer_value){.type = row[i].type, .i = row[i].i};
    if (row[i].type != DB_T_STR && row[i].type != DB_T_BLOB) continue;
    const char *p = row[i].p != NULL ? row[i].p : "";
    size_t len = row[i].p == NULL ? 0 : row[i].len == (size_t)-1 ? strlen(p) : row[i].len;
    if (!grow((void **)&d->arena, &d->cap, d->used + len + 1, 1)) goto oom;
    memcpy(d->arena + d->used, p, len);
    d->arena[d->used + len] = '\0';
    v[i].off = d->used;
    v[i].len = len;
    d->used += len + 1;
  }
  t->rows++;
  return STATUS_OK;
oom:
  status_seterr(errbuf, errlen, "out of memory queueing a row");
  return STATUS_INTERNAL;
}

/* Largest power of two <= x (x >= 1): one statement text per size class,
 * so a few prepared statements serve every batch. */
static size_t pow2_floor(size_t x) {
  size_t p = 1;
  while (p * 2 <= x) p *= 2;
  return p;
}

static status_code send_rows(db_conn *c, defer_table *t, size_t from, size_t k, char *errbuf,
                             size_t errlen) {
  db_defer *d = c->defer;
  size_t tuple = 2 + 3 * t->ncols; /* "(?, ?, ?)" and ", " */
  size_t need = strlen(t->head) + 8 + k * tuple + 2 + (t->tail != NULL ? strlen(t->tail) : 0);
  if (!grow((void **)&d->sql, &d->sql_cap, need, 1) ||
      !grow((void **)&d->params, &d->cap_params, k * t->ncols, sizeof *d->params)) {
    status_seterr(errbuf, errlen, "out of memory sending queued rows");
    return STATUS_INTERNAL;
  }
  size_t o = (size_t)snprintf(d->sql, d->sql_cap, "%s VALUES ", t->head);
  for (size_t r = 0; r < k; r++) {
    d->sql[o++] = '(';
    for (size_t j = 0; j < t->ncols; j++) {
      if (j > 0) {
        d->sql[o++] = ',';
        d->sql[o++] = ' ';
      }
      d->sql[o++] = '?';
    }
    d->sql[o++] = ')';
    if (r + 1 < k) {
      d->sql[o++] = ',';
      d->sql[o++] = ' ';
    }
  }
  d->sql[o] = '\0';
  if (t->tail != NULL) snprintf(d->sql + o, d->sql_cap - o, " %s", t->tail);
  for (size_t r = 0; r < k; r++) {
    for (size_t j = 0; j < t->ncols; j++) {
      const defer_value *v = &t->vals[(from + r) * t->ncols + j];
      db_value *p = &d->params[r * t->ncols + j];
      *p = (db_value){.type = v->type, .i = v->i};
      if (v->type == DB_T_STR || v->type == DB_T_BLOB) {
        p->p = d->arena + v->off;
        p->len = v->len;
      }
    }
  }
  return db_exec(c, d->sql, d->params, k * t->ncols, NULL, NULL, errbuf, errlen);
}

status_code db_defer_flush(db_conn *c, char *errbuf, size_t errlen) {
  db_defer *d = c->defer;
  if (d == NULL) return STATUS_OK;
  for (size_t i = 0; i < d->ntables; i++) {
    defer_table *t = &d->tables[i];
    size_t cap = DB_MAX_PARAMS / t->ncols;
    if (cap > DEFER_ROWS_MAX) cap = DEFER_ROWS_MAX;
    cap = pow2_floor(cap);
    for (size_t from = 0; from < t->rows;) {
      size_t left = t->rows - from;
      size_t k = left >= cap ? cap : pow2_floor(left);
      status_code st = send_rows(c, t, from, k, errbuf, errlen);
      if (st != STATUS_OK) return st;
      from += k;
    }
  }
  return STATUS_OK;
}

void db_defer_reset(db_conn *c) {
  db_defer *d = c->defer;
  if (d == NULL) return;
  for (size_t i = 0; i < d->ntables; i++) d->tables[i].rows = 0;
  d->used = 0;
}

void db_defer_free(db_conn *c) {
  db_defer *d = c->defer;
  if (d == NULL) return;
  for (size_t i = 0; i < d->ntables; i++) {
    free(d->tables[i].head);
    free(d->tables[i].tail);
    free(d->tables[i].vals);
  }
  free(d->tables);
  free(d->arena);
  free(d->sql);
  free(d->params);
  free(d);
  c->defer = NULL;
}
