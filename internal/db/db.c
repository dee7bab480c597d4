#include "db/db.h"

#include "db/db_internal.h"

#include <errmsg.h>
#include <errno.h>
#include <mysql.h>
#include <mysqld_error.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

typedef struct db_cell {
  bool null;
  int64_t i;
  char *s; /* NUL-terminated copy, or NULL for integers */
  size_t len;
} db_cell;

struct db_rows {
  unsigned ncols;
  size_t nrows;
  size_t cur;     /* 1-based after the first db_rows_next */
  db_cell *cells; /* nrows * ncols */
};

static bool is_link_error(unsigned e) {
  switch (e) {
  case CR_CONNECTION_ERROR:
  case CR_CONN_HOST_ERROR:
  case CR_SERVER_GONE_ERROR:
  case CR_SERVER_LOST:
  case CR_SERVER_LOST_EXTENDED:
  case ER_CONNECTION_KILLED:
  case ER_SERVER_SHUTDOWN:
  case 4031: /* ER_CLIENT_INTERACTION_TIMEOUT */
    return true;
  default:
    return false;
  }
}

/* The one translation of MariaDB error numbers into Shop's status codes. */
static status_code map_error(unsigned e) {
  if (is_link_error(e)) return STATUS_UNAVAILABLE;
  switch (e) {
  case ER_DUP_ENTRY:
  case ER_DUP_ENTRY_WITH_KEY_NAME:
    return STATUS_ALREADY_EXISTS;
  case ER_LOCK_DEADLOCK:
  case ER_LOCK_WAIT_TIMEOUT:
    return STATUS_ABORTED;
  case ER_CON_COUNT_ERROR:
  case ER_TOO_MANY_USER_CONNECTIONS:
    return STATUS_UNAVAILABLE;
  case ER_TABLEACCESS_DENIED_ERROR:
  case ER_COLUMNACCESS_DENIED_ERROR:
  case ER_DBACCESS_DENIED_ERROR:
  case ER_ACCESS_DENIED_ERROR:
    return STATUS_PERMISSION_DENIED;
  case ER_NO_REFERENCED_ROW_2:
  case ER_ROW_IS_REFERENCED_2:
    return STATUS_FAILED_PRECONDITION;
  case ER_DATA_TOO_LONG:
  case ER_TRUNCATED_WRONG_VALUE_FOR_FIELD:
  case ER_WARN_DATA_OUT_OF_RANGE:
    return STATUS_INVALID_ARGUMENT;
  default:
    return STATUS_INTERNAL;
  }
}

static void stmts_clear(db_conn *c) {
  for (size_t b = 0; b < DB_STMT_BUCKETS; b++) {
    stmt_entry *e = c->stmts[b];
    while (e != NULL) {
      stmt_entry *next = e->next;
      if (e->stmt != NULL) mysql_stmt_close(e->stmt);
      free(e->sql);
      free(e);
      e = next;
    }
    c->stmts[b] = NULL;
  }
}

static status_code open_once(db_conn *c, char *errbuf, size_t errlen) {
  MYSQL *my = mysql_init(NULL);
  if (my == NULL) {
    status_seterr(errbuf, errlen, "mysql_init: out of memory");
    return STATUS_INTERNAL;
  }
  unsigned int timeout_s = (unsigned)((c->pc.p.connect_timeout_ms + 999) / 1000);
  if (timeout_s == 0) timeout_s = 5;
  mysql_options(my, MYSQL_OPT_CONNECT_TIMEOUT, &timeout_s);
  mysql_options(my, MYSQL_SET_CHARSET_NAME, "utf8mb4");
  my_bool off = 0;
  mysql_options(my, MYSQL_OPT_RECONNECT, &off);
  const db_params *p = &c->pc.p;
  const char *sock = p->socket != NULL && p->socket[0] != '\0' ? p->socket : NULL;
  if (mysql_real_connect(my, sock != NULL ? "localhost" : p->host, p->user, p->password,
                         p->database, (unsigned)p->port, sock, CLIENT_MULTI_STATEMENTS) == NULL) {
    unsigned e = mysql_errno(my);
    if (sock != NULL)
      status_seterr(errbuf, errlen, "connect to %s as %s: %s", sock, p->user, mysql_error(my));
    else
      status_seterr(errbuf, errlen, "connect to %s:%d as %s: %s", p->host, p->port, p->user,
                    mysql_error(my));
    mysql_close(my);
    return is_link_error(e) ? STATUS_UNAVAILABLE : map_error(e);
  }
  c->my = my;
  c->broken = false;
  c->in_tx = false;
  c->chained = false;
  return STATUS_OK;
}

/* How long a chained transaction may stay idle and still be taken over
 * by db_begin without a round trip. Longer, and START TRANSACTION is sent
 * (ending it): that round trip finds a link that died meanwhile while the
 * transaction is still empty, so it is reopened as it always was. */
#define DB_CHAIN_FRESH_MS 1000

static status_code plain_query(db_conn *c, const char *sql, char *errbuf, size_t errlen);
static status_code db_unchain(db_conn *c, char *errbuf, size_t errlen);

static int64_t now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms) {
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
  }
}

static status_code open_with_retry(db_conn *c, int retry_ms, char *errbuf, size_t errlen) {
  int64_t deadline = now_ms() + retry_ms;
  int64_t backoff = 50;
  for (;;) {
    status_code st = open_once(c, errbuf, errlen);
    if (st != STATUS_UNAVAILABLE || now_ms() + backoff > deadline) return st;
    sleep_ms(backoff);
    backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
  }
}

void db_params_copy_free(db_params_copy *c) {
  if (c == NULL) return;
  if (c->password != NULL) memset(c->password, 0, strlen(c->password));
  free(c->host);
  free(c->user);
  free(c->password);
  free(c->database);
  free(c->socket);
  memset(c, 0, sizeof *c);
}

bool db_params_dup(db_params_copy *out, const db_params *in) {
  memset(out, 0, sizeof *out);
  out->p = *in;
  /* A NULL string stays NULL; strdup failing on a set one is out of memory. */
  bool ok = (in->host == NULL || (out->host = strdup(in->host)) != NULL) &&
            (in->user == NULL || (out->user = strdup(in->user)) != NULL) &&
            (in->password == NULL || (out->password = strdup(in->password)) != NULL) &&
            (in->database == NULL || (out->database = strdup(in->database)) != NULL) &&
            (in->socket == NULL || (out->socket = strdup(in->socket)) != NULL);
  if (!ok) {
    db_params_copy_free(out);
    return false;
  }
  out->p.host = out->host;
  out->p.user = out->user;
  out->p.password = out->password;
  out->p.database = out->database;
  out->p.socket = out->socket;
  return true;
}

status_code db_connect(db_conn **out, const db_params *p, char *errbuf, size_t errlen) {
  db_conn *c = calloc(1, sizeof *c);
  if (c == NULL) {
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  db_params q = *p;
  if (q.host == NULL) q.host = "127.0.0.1";
  if (!db_params_dup(&c->pc, &q)) {
    free(c);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  status_code st = open_with_retry(c, p->connect_retry_ms, errbuf, errlen);
  if (st != STATUS_OK) {
    db_close(c);
    return st;
  }
  *out = c;
  return STATUS_OK;
}

void db_close(db_conn *c) {
  if (c == NULL) return;
  stmts_clear(c);
  db_defer_free(c);
  if (c->my != NULL) mysql_close(c->my);
  db_params_copy_free(&c->pc);
  free(c);
}

uint64_t db_reconnects(const db_conn *c) { return c->reconnects; }
bool db_in_tx(const db_conn *c) { return c->in_tx; }
bool db_link_lost(const db_conn *c) { return c->broken; }

/* Reopens a connection whose link died. Only outside a transaction: inside
 * one, the caller must retry the whole transaction. */
status_code db_revive(db_conn *c, char *errbuf, size_t errlen) {
  if (!c->broken && c->my != NULL) return STATUS_OK;
  stmts_clear(c);
  if (c->my != NULL) {
    mysql_close(c->my);
    c->my = NULL;
  }
  status_code st = open_once(c, errbuf, errlen);
  if (st == STATUS_OK) c->reconnects++;
  return st;
}

/* Records a failure of the link or the statement and returns its status. */
status_code db_fail_with(db_conn *c, unsigned e, const char *msg, const char *sql, char *errbuf,
                         size_t errlen) {
  status_seterr(errbuf, errlen, "mysql %u: %s [%.120s]", e, msg, sql);
  if (is_link_error(e)) {
    c->broken = true;
    c->in_tx = false;
    c->chained = false;
    db_defer_reset(c);
  }
  return map_error(e);
}

/* FNV-1a of the statement text: the cache's bucket. */
static uint64_t sql_hash(const char *sql) {
  uint64_t h = 1469598103934665603ULL;
  for (const unsigned char *p = (const unsigned char *)sql; *p != '\0'; p++) {
    h ^= *p;
    h *= 1099511628211ULL;
  }
  return h;
}

/* The connection's prepared statement for sql, prepared on first use. */
static status_code get_stmt(db_conn *c, const char *sql, MYSQL_STMT **out, char *errbuf,
                            size_t errlen) {
  uint64_t h = sql_hash(sql);
  stmt_entry **bucket = &c->stmts[h % DB_STMT_BUCKETS];
  for (stmt_entry *e = *bucket; e != NULL; e = e->next) {
    if (e->hash == h && strcmp(e->sql, sql) == 0) {
      *out = e->stmt;
      return STATUS_OK;
    }
  }
  MYSQL_STMT *stmt = mysql_stmt_init(c->my);
  if (stmt == NULL)
    return db_fail_with(c, mysql_errno(c->my), mysql_error(c->my), sql, errbuf, errlen);
  if (mysql_stmt_prepare(stmt, sql, (unsigned long)strlen(sql)) != 0) {
    status_code st =
        db_fail_with(c, mysql_stmt_errno(stmt), mysql_stmt_error(stmt), sql, errbuf, errlen);
    mysql_stmt_close(stmt);
    return st;
  }
  my_bool update_max = 1;
  mysql_stmt_attr_set(stmt, STMT_ATTR_UPDATE_MAX_LENGTH, &update_max);
  stmt_entry *e = calloc(1, sizeof *e);
  if (e == NULL || (e->sql = strdup(sql)) == NULL) {
    free(e);
    mysql_stmt_close(stmt);
    status_seterr(errbuf, errlen, "out of memory");
    return STATUS_INTERNAL;
  }
  e->hash = h;
  e->stmt = stmt;
  e->next = *bucket;
  *bucket = e;
  *out = stmt;
  return STATUS_OK;
}

/* After a lost link, may the statement run again? A read may. A write may
 * only if the server cannot have run it: the request never left (2006) or
 * the server says it killed the connection first. A write whose answer was
 * lost (2013) may have committed, so it is not repeated here. */
static bool retry_is_safe(unsigned e, const char *sql) {
  if (e == CR_SERVER_GONE_ERROR || e == ER_CONNECTION_KILLED || e == CR_CONNECTION_ERROR ||
      e == CR_CONN_HOST_ERROR) {
    return true;
  }
  while (*sql == ' ' || *sql == '\n' || *sql == '(') sql++;
  return strncasecmp(sql, "SELECT", 6) == 0;
}

static status_code run_bound(db_conn *c, const char *sql, const db_value *params, size_t n,
                             MYSQL_BIND *binds, unsigned long *lens, MYSQL_STMT **out, char *errbuf,
                             size_t errlen);

/* Prepares (or reuses) and executes sql with params. */
static status_code run_stmt(db_conn *c, const char *sql, const db_value *params, size_t n,
                            MYSQL_STMT **out, char *errbuf, size_t errlen) {
  MYSQL_BIND small_binds[64];
  unsigned long small_lens[64];
  MYSQL_BIND *binds = small_binds;
  unsigned long *lens = small_lens;
  if (n > DB_MAX_PARAMS) {
    status_seterr(errbuf, errlen, "too many parameters (%zu, at most %d)", n, DB_MAX_PARAMS);
    return STATUS_INTERNAL;
  }
  if (n > 64) {
    binds = malloc(n * sizeof *binds);
    lens = malloc(n * sizeof *lens);
    if (binds == NULL || lens == NULL) {
      free(binds);
      free(lens);
      status_seterr(errbuf, errlen, "out of memory binding %zu parameters", n);
      return STATUS_INTERNAL;
    }
  }
  status_code st = run_bound(c, sql, params, n, binds, lens, out, errbuf, errlen);
  if (binds != small_binds) {
    free(binds);
    free(lens);
  }
  return st;
}

/* run_stmt with the caller's bind arrays of n entries. */
static status_code run_bound(db_conn *c, const char *sql, const db_value *params, size_t n,
                             MYSQL_BIND *binds, unsigned long *lens, MYSQL_STMT **out, char *errbuf,
                             size_t errlen) {
  /* db_fail_with() clears in_tx when the link dies, so decide on retrying from
   * the state the call started in. */
  const bool in_tx = c->in_tx;
  for (int attempt = 0;; attempt++) {
    if (c->broken || c->my == NULL) {
      if (in_tx) {
        status_seterr(errbuf, errlen, "connection lost inside the transaction");
        return STATUS_UNAVAILABLE;
      }
      status_code st = db_revive(c, errbuf, errlen);
      if (st != STATUS_OK) return st;
    }
    if (!in_tx && c->chained) {
      status_code st = db_unchain(c, errbuf, errlen);
      if (st == STATUS_UNAVAILABLE && attempt == 0) continue;
      if (st != STATUS_OK) return st;
    }
    MYSQL_STMT *stmt = NULL;
    status_code st = get_stmt(c, sql, &stmt, errbuf, errlen);
    if (st == STATUS_UNAVAILABLE && !in_tx && attempt == 0) continue;
    if (st != STATUS_OK) return st;
    if (mysql_stmt_param_count(stmt) != n) {
      status_seterr(errbuf, errlen, "statement wants %lu parameters, got %zu [%.120s]",
                    mysql_stmt_param_count(stmt), n, sql);
      return STATUS_INTERNAL;
    }
    memset(binds, 0, sizeof(MYSQL_BIND) * (n > 0 ? n : 1));
    for (size_t i = 0; i < n; i++) {
      switch (params[i].type) {
      case DB_T_NULL:
        binds[i].buffer_type = MYSQL_TYPE_NULL;
        break;
      case DB_T_I64:
        binds[i].buffer_type = MYSQL_TYPE_LONGLONG;
        binds[i].buffer = (void *)&params[i].i;
        break;
      case DB_T_STR:
      case DB_T_BLOB:
        binds[i].buffer_type = params[i].type == DB_T_STR ? MYSQL_TYPE_STRING : MYSQL_TYPE_BLOB;
        binds[i].buffer = (void *)(params[i].p != NULL ? params[i].p : "");
        lens[i] = params[i].p == NULL           ? 0
                  : params[i].len == (size_t)-1 ? (unsigned long)strlen(params[i].p)
                                                : (unsigned long)params[i].len;
        binds[i].buffer_length = lens[i];
        binds[i].length = &lens[i];
        break;
      }
    }
    if ((n > 0 && mysql_stmt_bind_param(stmt, binds) != 0) || mysql_stmt_execute(stmt) != 0) {
      unsigned e = mysql_stmt_errno(stmt);
      st = db_fail_with(c, e, mysql_stmt_error(stmt), sql, errbuf, errlen);
      if (st == STATUS_UNAVAILABLE && !in_tx && attempt == 0 && retry_is_safe(e, sql)) {
        /* Outside a transaction, a read, or a statement that certainly never
         * ran: reopen and try once more. */
        continue;
      }
      mysql_stmt_reset(stmt);
      return st;
    }
    *out = stmt;
    return STATUS_OK;
  }
}

status_code db_exec(db_conn *c, const char *sql, const db_value *params, size_t nparams,
                    uint64_t *affected, uint64_t *last_id, char *errbuf, size_t errlen) {
  MYSQL_STMT *stmt = NULL;
  status_code st = run_stmt(c, sql, params, nparams, &stmt, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (affected != NULL) *affected = (uint64_t)mysql_stmt_affected_rows(stmt);
  if (last_id != NULL) *last_id = (uint64_t)mysql_stmt_insert_id(stmt);
  /* A statement that returns rows anyway is drained so the link stays usable. */
  if (mysql_stmt_field_count(stmt) > 0) mysql_stmt_free_result(stmt);
  return STATUS_OK;
}

static bool is_int_type(enum enum_field_types t) {
  return t == MYSQL_TYPE_TINY || t == MYSQL_TYPE_SHORT || t == MYSQL_TYPE_LONG ||
         t == MYSQL_TYPE_LONGLONG || t == MYSQL_TYPE_INT24 || t == MYSQL_TYPE_YEAR;
}

void db_rows_free(db_rows *r) {
  if (r == NULL) return;
  for (size_t i = 0; i < r->nrows * r->ncols; i++) free(r->cells[i].s);
  free(r->cells);
  free(r);
}

status_code db_query(db_conn *c, const char *sql, const db_value *params, size_t nparams,
                     db_rows **out, char *errbuf, size_t errlen) {
  MYSQL_STMT *stmt = NULL;
  status_code st = run_stmt(c, sql, params, nparams, &stmt, errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_rows *r = NULL;
  MYSQL_BIND *binds = NULL;
  struct colbuf {
    int64_t i;
    char *buf;
    unsigned long cap, len;
    my_bool null, err;
  } *cols = NULL;
  MYSQL_RES *meta = mysql_stmt_result_metadata(stmt);
  if (meta == NULL) {
    status_seterr(errbuf, errlen, "statement returns no rows [%.120s]", sql);
    st = STATUS_INTERNAL;
    goto out;
  }
  if (mysql_stmt_store_result(stmt) != 0) {
    st = db_fail_with(c, mysql_stmt_errno(stmt), mysql_stmt_error(stmt), sql, errbuf, errlen);
    goto out;
  }
  unsigned ncols = mysql_num_fields(meta);
  MYSQL_FIELD *fields = mysql_fetch_fields(meta);
  r = calloc(1, sizeof *r);
  binds = calloc(ncols ? ncols : 1, sizeof *binds);
  cols = calloc(ncols ? ncols : 1, sizeof *cols);
  size_t nrows = (size_t)mysql_stmt_num_rows(stmt);
  if (r == NULL || binds == NULL || cols == NULL) goto oom;
  r->ncols = ncols;
  r->cells = calloc((nrows * ncols) > 0 ? nrows * ncols : 1, sizeof *r->cells);
  if (r->cells == NULL) goto oom;
  for (unsigned j = 0; j < ncols; j++) {
    binds[j].is_null = &cols[j].null;
    binds[j].error = &cols[j].err;
    binds[j].length = &cols[j].len;
    if (is_int_type(fields[j].type)) {
      binds[j].buffer_type = MYSQL_TYPE_LONGLONG;
      binds[j].buffer = &cols[j].i;
      binds[j].is_unsigned = (fields[j].flags & UNSIGNED_FLAG) != 0;
    } else {
      cols[j].cap = fields[j].max_length + 1;
      cols[j].buf = malloc(cols[j].cap);
      if (cols[j].buf == NULL) goto oom;
      binds[j].buffer_type = MYSQL_TYPE_BLOB;
      binds[j].buffer = cols[j].buf;
      binds[j].buffer_length = cols[j].cap;
    }
  }
  if (ncols > 0 && mysql_stmt_bind_result(stmt, binds) != 0) {
    st = db_fail_with(c, mysql_stmt_errno(stmt), mysql_stmt_error(stmt), sql, errbuf, errlen);
    goto out;
  }
  size_t row = 0;
  for (;;) {
    int rc = mysql_stmt_fetch(stmt);
    if (rc == MYSQL_NO_DATA) break;
    if (rc == 1) {
      st = db_fail_with(c, mysql_stmt_errno(stmt), mysql_stmt_error(stmt), sql, errbuf, errlen);
      goto out;
    }
    if (row >= nrows) break;
    for (unsigned j = 0; j < ncols; j++) {
      db_cell *cell = &r->cells[row * ncols + j];
      cell->null = cols[j].null;
      if (cell->null) continue;
      if (binds[j].buffer_type == MYSQL_TYPE_LONGLONG) {
        cell->i = cols[j].i;
      } else {
        cell->len = cols[j].len;
        cell->s = malloc(cell->len + 1);
        if (cell->s == NULL) goto oom;
        memcpy(cell->s, cols[j].buf, cell->len);
        cell->s[cell->len] = '\0';
      }
    }
    row++;
  }
  r->nrows = row;
  *out = r;
  r = NULL;
  st = STATUS_OK;
  goto out;
oom:
  status_seterr(errbuf, errlen, "out of memory reading rows");
  st = STATUS_INTERNAL;
out:
  if (cols != NULL) {
    for (unsigned j = 0; meta != NULL && j < mysql_num_fields(meta); j++) free(cols[j].buf);
  }
  free(cols);
  free(binds);
  db_rows_free(r);
  if (meta != NULL) mysql_free_result(meta);
  mysql_stmt_free_result(stmt);
  /* A result that failed half-way (a deadlock's victim among its rows)
   * leaves the statement expecting more of it: without the reset its next
   * execute waits for rows the server never sends. */
  if (st != STATUS_OK && !c->broken) mysql_stmt_reset(stmt);
  return st;
}

bool db_rows_next(db_rows *r) {
  if (r->cur >= r->nrows) return false;
  r->cur++;
  return true;
}
size_t db_rows_count(const db_rows *r) { return r->nrows; }

static const db_cell *cell_at(const db_rows *r, unsigned col) {
  if (r->cur == 0 || col >= r->ncols) return NULL;
  return &r->cells[(r->cur - 1) * r->ncols + col];
}

bool db_rows_is_null(const db_rows *r, unsigned col) {
  const db_cell *c = cell_at(r, col);
  return c == NULL || c->null;
}

int64_t db_rows_i64(const db_rows *r, unsigned col) {
  const db_cell *c = cell_at(r, col);
  if (c == NULL || c->null) return 0;
  return c->s != NULL ? strtoll(c->s, NULL, 10) : c->i;
}

const char *db_rows_str(const db_rows *r, unsigned col, size_t *len) {
  const db_cell *c = cell_at(r, col);
  static const char empty[] = "";
  if (c == NULL || c->null || c->s == NULL) {
    if (len != NULL) *len = 0;
    return empty;
  }
  if (len != NULL) *len = c->len;
  return c->s;
}

status_code db_query_i64(db_conn *c, const char *sql, const db_value *params, size_t nparams,
                         int64_t *out, char *errbuf, size_t errlen) {
  db_rows *r;
  status_code st = db_query(c, sql, params, nparams, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    status_seterr(errbuf, errlen, "no row");
    return STATUS_NOT_FOUND;
  }
  *out = db_rows_i64(r, 0);
  db_rows_free(r);
  return STATUS_OK;
}

/* Runs a statement without parameters outside the prepared-statement cache
 * (transaction control and migrations: no input travels in these). */
status_code db_plain(db_conn *c, const char *sql, char *errbuf, size_t errlen) {
  if (!c->in_tx && c->chained) {
    status_code st = db_unchain(c, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  return plain_query(c, sql, errbuf, errlen);
}

/* Ends the empty transaction COMMIT AND CHAIN left open, so that what
 * comes next runs on its own (autocommit), as outside any transaction. */
static status_code db_unchain(db_conn *c, char *errbuf, size_t errlen) {
  c->chained = false;
  return plain_query(c, "COMMIT", errbuf, errlen);
}

static status_code plain_query(db_conn *c, const char *sql, char *errbuf, size_t errlen) {
  if (mysql_real_query(c->my, sql, (unsigned long)strlen(sql)) != 0) {
    return db_fail_with(c, mysql_errno(c->my), mysql_error(c->my), sql, errbuf, errlen);
  }
  /* Drain every result (multi-statement text in migrations). */
  for (;;) {
    MYSQL_RES *res = mysql_store_result(c->my);
    if (res != NULL) mysql_free_result(res);
    int more = mysql_next_result(c->my);
    if (more == -1) break;
    if (more > 0)
      return db_fail_with(c, mysql_errno(c->my), mysql_error(c->my), sql, errbuf, errlen);
  }
  return STATUS_OK;
}

status_code db_begin(db_conn *c, char *errbuf, size_t errlen) {
  if (c->chained && !c->broken && c->my != NULL && now_ms() - c->chained_ms < DB_CHAIN_FRESH_MS) {
    /* The transaction the last commit chained: it begins here. */
    c->chained = false;
    db_defer_reset(c);
    c->in_tx = true;
    return STATUS_OK;
  }
  /* START TRANSACTION also ends a chained one left idle longer (its link
   * may have died meanwhile: this round trip finds out and reopens). */
  c->chained = false;
  if (c->broken || c->my == NULL) {
    status_code st = db_revive(c, errbuf, errlen);
    if (st != STATUS_OK) return st;
  }
  status_code st = db_plain(c, "START TRANSACTION", errbuf, errlen);
  if (st == STATUS_UNAVAILABLE) {
    st = db_revive(c, errbuf, errlen);
    if (st == STATUS_OK) st = db_plain(c, "START TRANSACTION", errbuf, errlen);
  }
  if (st == STATUS_OK) {
    db_defer_reset(c);
    c->in_tx = true;
  }
  return st;
}

status_code db_commit(db_conn *c, char *errbuf, size_t errlen) {
  if (c->broken || c->my == NULL) {
    c->in_tx = false;
    db_defer_reset(c);
    status_seterr(errbuf, errlen, "connection lost inside the transaction");
    return STATUS_UNAVAILABLE;
  }
  status_code fst = db_defer_flush(c, errbuf, errlen);
  db_defer_reset(c);
  if (fst != STATUS_OK) {
    if (!c->broken && c->my != NULL) mysql_rollback(c->my);
    c->in_tx = false;
    return fst;
  }
  /* COMMIT AND CHAIN is as durable as COMMIT and opens the next
   * transaction in the same round trip. */
  status_code st = plain_query(c, "COMMIT AND CHAIN", errbuf, errlen);
  if (st != STATUS_OK) {
    if (!c->broken) plain_query(c, "ROLLBACK", NULL, 0);
    c->in_tx = false;
    c->chained = false;
    return st;
  }
  c->in_tx = false;
  c->chained = true;
  c->chained_ms = now_ms();
  return STATUS_OK;
}

void db_rollback(db_conn *c) {
  if (c->my != NULL && !c->broken) mysql_rollback(c->my);
  c->in_tx = false;
  c->chained = false;
  db_defer_reset(c);
}

status_code db_tx_run(db_conn *c, db_tx_fn fn, void *arg, int max_attempts, char *errbuf,
                      size_t errlen) {
  status_code st = STATUS_INTERNAL;
  int64_t backoff = 10;
  for (int attempt = 1; attempt <= (max_attempts > 0 ? max_attempts : 1); attempt++) {
    st = db_begin(c, errbuf, errlen);
    if (st == STATUS_OK) {
      st = fn(c, arg, errbuf, errlen);
      if (st == STATUS_OK) {
        st = db_commit(c, errbuf, errlen);
      } else {
        db_rollback(c);
      }
    }
    if (st != STATUS_ABORTED && st != STATUS_UNAVAILABLE) return st;
    if (attempt < max_attempts) {
      sleep_ms(backoff + (int64_t)randombytes_uniform((uint32_t)backoff));
      backoff = backoff * 2 > 1000 ? 1000 : backoff * 2;
    }
  }
  return st;
}

status_code db_lock_try(db_conn *c, const char *name, int timeout_s, bool *got, char *errbuf,
                        size_t errlen) {
  db_value p[2] = {DB_STR(name), DB_I64(timeout_s)};
  db_rows *r;
  *got = false;
  status_code st = db_query(c, "SELECT GET_LOCK(?, ?)", p, 2, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (db_rows_next(r) && !db_rows_is_null(r, 0)) *got = db_rows_i64(r, 0) == 1;
  db_rows_free(r);
  return STATUS_OK;
}

status_code db_lock_release(db_conn *c, const char *name, char *errbuf, size_t errlen) {
  db_value p[1] = {DB_STR(name)};
  int64_t ignored;
  status_code st = db_query_i64(c, "SELECT RELEASE_LOCK(?)", p, 1, &ignored, errbuf, errlen);
  return st == STATUS_NOT_FOUND ? STATUS_OK : st;
}

void db_like_pattern(const char *text, char *out, size_t len) {
  size_t o = 0;
  out[o++] = '%';
  for (const char *p = text; *p != '\0' && o + 3 < len; p++) {
    if (*p == '!' || *p == '%' || *p == '_') out[o++] = '!';
    out[o++] = *p;
  }
  out[o++] = '%';
  out[o] = '\0';
}
