/* Version-checked read-model updates. See projection.h. */
#include "events/projection.h"

#include <stdlib.h>
#include <string.h>

#include "events/events_internal.h"

static status_code check_names(const char *projection, const char *key, char *errbuf,
                               size_t errlen) {
  if (projection == NULL || projection[0] == '\0' || strlen(projection) > 64 || key == NULL ||
      key[0] == '\0' || strlen(key) > 191) {
    status_seterr(errbuf, errlen, "projection: need a name of 1-64 and a key of 1-191 characters");
    return STATUS_INVALID_ARGUMENT;
  }
  return STATUS_OK;
}

/* Reads and locks the version row. *exists is false when there is none. */
static status_code lock_version(db_conn *tx, const char *projection, const char *key,
                                int64_t *version, bool *exists, char *errbuf, size_t errlen) {
  db_value p[2] = {DB_STR(projection), DB_STR(key)};
  db_rows *r;
  status_code st = db_query(tx,
                            "SELECT version FROM projection_versions WHERE projection = ? AND"
                            " entity_key = ? FOR UPDATE",
                            p, 2, &r, errbuf, errlen);
  if (st != STATUS_OK) return st;
  *exists = db_rows_next(r);
  *version = *exists ? db_rows_i64(r, 0) : 0;
  db_rows_free(r);
  return STATUS_OK;
}

static status_code store_version(db_conn *tx, const char *projection, const char *key,
                                 int64_t version, bool exists, char *errbuf, size_t errlen) {
  db_value p[3] = {DB_I64(version), DB_STR(projection), DB_STR(key)};
  if (exists) {
    return db_exec(tx,
                   "UPDATE projection_versions SET version = ? WHERE projection = ? AND"
                   " entity_key = ?",
                   p, 3, NULL, NULL, errbuf, errlen);
  }
  status_code st = db_exec(tx,
                           "INSERT INTO projection_versions (version, projection, entity_key)"
                           " VALUES (?, ?, ?)",
                           p, 3, NULL, NULL, errbuf, errlen);
  /* Another consumer created the row first: retry the transaction. */
  return st == STATUS_ALREADY_EXISTS ? STATUS_ABORTED : st;
}

status_code projection_version(db_conn *c, const char *projection, const char *key,
                               int64_t *version, char *errbuf, size_t errlen) {
  status_code st = check_names(projection, key, errbuf, errlen);
  if (st != STATUS_OK) return st;
  db_value p[2] = {DB_STR(projection), DB_STR(key)};
  st = db_query_i64(c,
                    "SELECT version FROM projection_versions WHERE projection = ? AND"
                    " entity_key = ?",
                    p, 2, version, errbuf, errlen);
  if (st == STATUS_NOT_FOUND) {
    *version = 0;
    return STATUS_OK;
  }
  return st;
}

status_code projection_apply_state(db_conn *tx, const char *projection, const char *key,
                                   int64_t version, const events_envelope *ev,
                                   projection_apply_cb cb, void *arg, projection_outcome *out,
                                   char *errbuf, size_t errlen) {
  status_code st = check_names(projection, key, errbuf, errlen);
  if (st != STATUS_OK) return st;
  int64_t stored;
  bool exists;
  st = lock_version(tx, projection, key, &stored, &exists, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (version <= stored) {
    if (out != NULL) *out = PROJECTION_IGNORED;
    return STATUS_OK;
  }
  st = cb(tx, ev, version, arg, errbuf, errlen);
  if (st != STATUS_OK) return st;
  st = store_version(tx, projection, key, version, exists, errbuf, errlen);
  if (st == STATUS_OK && out != NULL) *out = PROJECTION_APPLIED;
  return st;
}

static status_code hold(db_conn *tx, const char *projection, const char *key, int64_t version,
                        const events_envelope *ev, char *errbuf, size_t errlen) {
  size_t len = shop__events__v1__event_envelope__get_packed_size(ev);
  uint8_t *buf = malloc(len > 0 ? len : 1);
  if (buf == NULL) {
    status_seterr(errbuf, errlen, "projection: out of memory");
    return STATUS_RESOURCE_EXHAUSTED;
  }
  shop__events__v1__event_envelope__pack(ev, buf);
  db_value p[4] = {DB_STR(projection), DB_STR(key), DB_I64(version), DB_BLOB(buf, len)};
  status_code st = db_exec(tx,
                           "INSERT INTO projection_pending (projection, entity_key, version,"
                           " envelope) VALUES (?, ?, ?, ?) ON DUPLICATE KEY UPDATE"
                           " version = version",
                           p, 4, NULL, NULL, errbuf, errlen);
  free(buf);
  return st;
}

/* Applies held versions after *version while they follow on. */
static status_code drain(db_conn *tx, const char *projection, const char *key, int64_t *version,
                         projection_apply_cb cb, void *arg, char *errbuf, size_t errlen) {
  for (;;) {
    int64_t next = *version + 1;
    db_value p[3] = {DB_STR(projection), DB_STR(key), DB_I64(next)};
    db_rows *r;
    status_code st = db_query(tx,
                              "SELECT envelope FROM projection_pending WHERE projection = ? AND"
                              " entity_key = ? AND version = ?",
                              p, 3, &r, errbuf, errlen);
    if (st != STATUS_OK) return st;
    if (!db_rows_next(r)) {
      db_rows_free(r);
      return STATUS_OK;
    }
    size_t len;
    const char *blob = db_rows_str(r, 0, &len);
    events_envelope *held =
        shop__events__v1__event_envelope__unpack(NULL, len, (const uint8_t *)blob);
    db_rows_free(r);
    if (held == NULL) {
      status_seterr(errbuf, errlen, "projection %s: held version %lld of %s does not decode",
                    projection, (long long)next, key);
      return STATUS_DATA_LOSS;
    }
    st = cb(tx, held, next, arg, errbuf, errlen);
    events_envelope_free(held);
    if (st != STATUS_OK) return st;
    st = db_exec(tx,
                 "DELETE FROM projection_pending WHERE projection = ? AND entity_key = ? AND"
                 " version = ?",
                 p, 3, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) return st;
    *version = next;
  }
}

status_code projection_apply_delta(db_conn *tx, const char *projection, const char *key,
                                   int64_t version, const events_envelope *ev,
                                   projection_apply_cb cb, void *arg, projection_outcome *out,
                                   char *errbuf, size_t errlen) {
  status_code st = check_names(projection, key, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (version < 1) {
    status_seterr(errbuf, errlen, "projection %s: delta versions start at 1", projection);
    return STATUS_INVALID_ARGUMENT;
  }
  int64_t stored;
  bool exists;
  st = lock_version(tx, projection, key, &stored, &exists, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (version <= stored) {
    if (out != NULL) *out = PROJECTION_IGNORED;
    return STATUS_OK;
  }
  if (version > stored + 1) {
    st = hold(tx, projection, key, version, ev, errbuf, errlen);
    if (st == STATUS_OK && out != NULL) *out = PROJECTION_HELD;
    return st;
  }
  st = cb(tx, ev, version, arg, errbuf, errlen);
  if (st != STATUS_OK) return st;
  int64_t v = version;
  st = drain(tx, projection, key, &v, cb, arg, errbuf, errlen);
  if (st != STATUS_OK) return st;
  st = store_version(tx, projection, key, v, exists, errbuf, errlen);
  if (st == STATUS_OK && out != NULL) *out = PROJECTION_APPLIED;
  return st;
}

status_code projection_seed(db_conn *tx, const char *projection, const char *key, int64_t version,
                            projection_apply_cb cb, void *arg, char *errbuf, size_t errlen) {
  status_code st = check_names(projection, key, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (cb == NULL) {
    status_seterr(errbuf, errlen, "projection_seed: cb is required");
    return STATUS_INVALID_ARGUMENT;
  }
  int64_t stored;
  bool exists;
  st = lock_version(tx, projection, key, &stored, &exists, errbuf, errlen);
  if (st != STATUS_OK || version <= stored) return st;
  /* Held deltas right after the seed can go now. */
  int64_t v = version;
  st = drain(tx, projection, key, &v, cb, arg, errbuf, errlen);
  if (st != STATUS_OK) return st;
  return store_version(tx, projection, key, v, exists, errbuf, errlen);
}

status_code projection_pending_count(db_conn *c, const char *projection, int64_t *count,
                                     char *errbuf, size_t errlen) {
  db_value p[1] = {DB_STR(projection)};
  return db_query_i64(c, "SELECT COUNT(*) FROM projection_pending WHERE projection = ?", p, 1,
                      count, errbuf, errlen);
}
