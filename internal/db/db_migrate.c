/* Numbered migrations and account passwords (db.h). */
#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>

#include "db/db_internal.h"

static void sha256_hex(const char *text, char out[65]) {
  unsigned char h[crypto_hash_sha256_BYTES];
  crypto_hash_sha256(h, (const unsigned char *)text, strlen(text));
  sodium_bin2hex(out, 65, h, sizeof h);
}

status_code db_migrate(db_conn *c, const char *component, const db_migration *migs, size_t n,
                       int *applied, char *errbuf, size_t errlen) {
  if (applied != NULL) *applied = 0;
  if (sodium_init() < 0) {
    status_seterr(errbuf, errlen, "libsodium failed to initialise");
    return STATUS_INTERNAL;
  }
  status_code st = db_plain(c,
                            "CREATE TABLE IF NOT EXISTS schema_migrations ("
                            " component VARCHAR(64) NOT NULL,"
                            " version INT NOT NULL,"
                            " name VARCHAR(255) NOT NULL,"
                            " checksum CHAR(64) NOT NULL,"
                            " applied_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),"
                            " PRIMARY KEY (component, version))",
                            errbuf, errlen);
  if (st != STATUS_OK) return st;
  char lock[128];
  snprintf(lock, sizeof lock, "shop.migrate.%s", c->pc.database != NULL ? c->pc.database : "");
  bool got = false;
  st = db_lock_try(c, lock, 60, &got, errbuf, errlen);
  if (st != STATUS_OK) return st;
  if (!got) {
    status_seterr(errbuf, errlen, "timed out waiting for the migration lock %s", lock);
    return STATUS_UNAVAILABLE;
  }
  int prev = 0;
  for (size_t i = 0; i < n; i++) {
    const db_migration *m = &migs[i];
    if (m->version <= prev) {
      status_seterr(errbuf, errlen, "migration %s: versions must increase", m->name);
      st = STATUS_FAILED_PRECONDITION;
      goto out;
    }
    prev = m->version;
    char sum[65];
    sha256_hex(m->sql, sum);
    db_value key[2] = {DB_STR(component), DB_I64(m->version)};
    db_rows *r;
    st = db_query(c, "SELECT checksum FROM schema_migrations WHERE component = ? AND version = ?",
                  key, 2, &r, errbuf, errlen);
    if (st != STATUS_OK) goto out;
    bool have = db_rows_next(r);
    bool same = have && strcmp(db_rows_str(r, 0, NULL), sum) == 0;
    db_rows_free(r);
    if (have && !same) {
      status_seterr(errbuf, errlen, "migration %s/%s was changed after it was applied", component,
                    m->name);
      st = STATUS_FAILED_PRECONDITION;
      goto out;
    }
    if (have) continue;
    st = db_plain(c, m->sql, errbuf, errlen);
    if (st != STATUS_OK) {
      char detail[512];
      snprintf(detail, sizeof detail, "%s", errbuf != NULL ? errbuf : "");
      status_seterr(errbuf, errlen, "migration %s/%s failed: %s", component, m->name, detail);
      goto out;
    }
    db_value rec[4] = {DB_STR(component), DB_I64(m->version), DB_STR(m->name), DB_STR(sum)};
    st = db_exec(c,
                 "INSERT INTO schema_migrations (component, version, name, checksum)"
                 " VALUES (?, ?, ?, ?)",
                 rec, 4, NULL, NULL, errbuf, errlen);
    if (st != STATUS_OK) goto out;
    if (applied != NULL) (*applied)++;
  }
  st = STATUS_OK;
out:
  db_lock_release(c, lock, NULL, 0);
  return st;
}

bool db_password_from_dir(const char *secrets_dir, const char *account, char *buf, size_t len,
                          char *errbuf, size_t errlen) {
  char path[1024];
  snprintf(path, sizeof path, "%s/%s", secrets_dir, account);
  FILE *f = fopen(path, "rb");
  if (f == NULL) {
    status_seterr(errbuf, errlen, "cannot read the password of %s from %s: %s", account, path,
                  strerror(errno));
    return false;
  }
  size_t n = fread(buf, 1, len - 1, f);
  fclose(f);
  buf[n] = '\0';
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r')) buf[--n] = '\0';
  return true;
}
