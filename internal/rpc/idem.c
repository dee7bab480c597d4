/* Idempotent commands: records keyed by (scope, method, key) in the
 * service's own database, written in the command's transaction. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "rpc/rpc_internal.h"

#define SCOPE_MAX 200

static void scope_of(const rpc_call *call, char *buf, size_t len) {
  if (rpc_call_authenticated(call))
    snprintf(buf, len, "%s", rpc_call_user_id(call));
  else
    snprintf(buf, len, "caller:%s", rpc_call_caller(call));
}

_Static_assert(AUTH_DIGEST_BYTES == crypto_hash_sha256_BYTES, "one column holds both digests");

/* The stored digest of the request. Requests carry secrets (RegisterUser
 * and ChangePassword carry passwords), so it is keyed with a subkey of the
 * server's token key: a leaked table is no fast hash to crack. A server
 * without keys (only public methods, tests) falls back to plain SHA-256. */
static void request_hash(const rpc_call *call, unsigned char out[crypto_hash_sha256_BYTES]) {
  size_t n;
  const void *p = rpc_call_payload(call, &n);
  if (p == NULL) p = "";
  const auth_keys *keys = rpc_call_auth_keys(call);
  if (keys != NULL) {
    auth_keys_digest(keys, "shop.rpc.idempotency", p, n, out);
  } else {
    crypto_hash_sha256(out, p, n);
  }
}

status_code rpc_idem_begin(rpc_call *call, db_conn *db, bool *replayed, char *errbuf,
                           size_t errlen) {
  *replayed = false;
  const char *key = rpc_call_idempotency_key(call);
  if (key[0] == '\0') {
    rpc_call_set_status(call, STATUS_INVALID_ARGUMENT, "%s needs an idempotency key",
                        rpc_call_method(call));
    rpc_call_add_field_violation(call, "idempotency_key", "required");
    status_seterr(errbuf, errlen, "no idempotency key");
    return STATUS_INVALID_ARGUMENT;
  }
  if (sodium_init() < 0) {
    status_seterr(errbuf, errlen, "libsodium failed to initialise");
    return STATUS_INTERNAL;
  }
  char scope[SCOPE_MAX + 1];
  scope_of(call, scope, sizeof scope);
  unsigned char hash[crypto_hash_sha256_BYTES];
  request_hash(call, hash);
  const char *method = rpc_call_method(call);

  db_value ins[4] = {DB_STR(scope), DB_STR(method), DB_STR(key), DB_BLOB(hash, sizeof hash)};
  /* The placeholder's row lock makes a concurrent duplicate wait here until
   * this transaction ends; it then sees the stored reply (or, after a
   * rollback, inserts its own placeholder). */
  status_code rc = db_exec(db,
                           "INSERT INTO rpc_idempotency (scope, method, idem_key, request_hash, "
                           "status_code) VALUES (?, ?, ?, ?, -1)",
                           ins, 4, NULL, NULL, errbuf, errlen);
  if (rc == STATUS_OK) return STATUS_OK;
  if (rc != STATUS_ALREADY_EXISTS) return rc;

  db_rows *r = NULL;
  /* A locking read sees the latest committed row whatever the
   * transaction's snapshot. */
  rc = db_query(db,
                "SELECT request_hash, status_code, status_message, reply FROM rpc_idempotency "
                "WHERE scope = ? AND method = ? AND idem_key = ? LOCK IN SHARE MODE",
                ins, 3, &r, errbuf, errlen);
  if (rc != STATUS_OK) return rc;
  if (!db_rows_next(r)) {
    /* Purged between the two statements: try the transaction again. */
    db_rows_free(r);
    status_seterr(errbuf, errlen, "idempotency record vanished");
    return STATUS_ABORTED;
  }
  size_t hlen = 0, mlen = 0, plen = 0;
  const char *h = db_rows_str(r, 0, &hlen);
  int64_t code = db_rows_i64(r, 1);
  const char *msg = db_rows_str(r, 2, &mlen);
  const char *reply = db_rows_str(r, 3, &plen);
  if (hlen != sizeof hash || memcmp(h, hash, sizeof hash) != 0) {
    db_rows_free(r);
    rpc_call_set_status(call, STATUS_FAILED_PRECONDITION,
                        "idempotency key reused with a different request");
    rpc_call_add_field_violation(call, "idempotency_key",
                                 "already used for a different request to %s", method);
    status_seterr(errbuf, errlen, "idempotency key reused with a different request");
    return STATUS_FAILED_PRECONDITION;
  }
  if (code < 0 || !status_is_valid((int)code)) {
    db_rows_free(r);
    rpc_call_set_status(call, STATUS_INTERNAL, "the earlier run of this command stored no reply");
    status_seterr(errbuf, errlen, "idempotency record without a reply");
    return STATUS_INTERNAL;
  }
  char text[RPC_MESSAGE_MAX];
  rpc_strlcpy(text, sizeof text, msg, mlen);
  rpc_call_put_stored_reply(call, (status_code)code, text, reply, plen);
  db_rows_free(r);
  *replayed = true;
  return STATUS_OK;
}

status_code rpc_idem_record(rpc_call *call, db_conn *db, const ProtobufCMessage *reply,
                            char *errbuf, size_t errlen) {
  char scope[SCOPE_MAX + 1];
  scope_of(call, scope, sizeof scope);
  uint8_t stackbuf[1024];
  uint8_t *buf = NULL;
  size_t n = 0;
  if (reply != NULL) {
    n = protobuf_c_message_get_packed_size(reply);
    buf = n <= sizeof stackbuf ? stackbuf : malloc(n);
    if (buf == NULL) {
      status_seterr(errbuf, errlen, "out of memory");
      return STATUS_RESOURCE_EXHAUSTED;
    }
    protobuf_c_message_pack(reply, buf);
  }
  status_code code = rpc_call_status(call);
  db_value p[6] = {DB_I64((int64_t)code),
                   DB_STR(rpc_call_status_message(call)),
                   reply != NULL ? DB_BLOB(buf, n) : DB_NULLV,
                   DB_STR(scope),
                   DB_STR(rpc_call_method(call)),
                   DB_STR(rpc_call_idempotency_key(call))};
  uint64_t affected = 0;
  status_code rc = db_exec(db,
                           "UPDATE rpc_idempotency SET status_code = ?, status_message = ?, "
                           "reply = ? WHERE scope = ? AND method = ? AND idem_key = ?",
                           p, 6, &affected, NULL, errbuf, errlen);
  if (buf != stackbuf) free(buf);
  if (rc == STATUS_OK && affected != 1) {
    status_seterr(errbuf, errlen, "rpc_idem_record without rpc_idem_begin in this transaction");
    rc = STATUS_FAILED_PRECONDITION;
  }
  return rc;
}

status_code rpc_idem_purge(db_conn *db, int retention_s, int batch, uint64_t *deleted, char *errbuf,
                           size_t errlen) {
  if (deleted != NULL) *deleted = 0;
  if (batch <= 0) batch = 1000;
  for (;;) {
    db_value p[2] = {DB_I64(retention_s), DB_I64(batch)};
    uint64_t n = 0;
    status_code rc = db_exec(db,
                             "DELETE FROM rpc_idempotency WHERE created_at < "
                             "NOW(6) - INTERVAL ? SECOND LIMIT ?",
                             p, 2, &n, NULL, errbuf, errlen);
    if (rc != STATUS_OK) return rc;
    if (deleted != NULL) *deleted += n;
    if (n < (uint64_t)batch) return STATUS_OK;
  }
}
