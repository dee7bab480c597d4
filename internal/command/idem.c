/* The idempotency records of commands: keyed by (scope, method, key) in
 * the service's own database, inserted in the command's transaction with
 * its reply. See command.h. */
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "command/command_internal.h"

#define SCOPE_MAX 200

_Static_assert(AUTH_DIGEST_BYTES == crypto_hash_sha256_BYTES, "one column holds both digests");

void command_idem_key_of(const rpc_call *call, command_idem_key *k) {
  if (rpc_call_authenticated(call))
    snprintf(k->scope, sizeof k->scope, "%s", rpc_call_user_id(call));
  else
    snprintf(k->scope, sizeof k->scope, "caller:%s", rpc_call_caller(call));
  /* The stored digest of the request. Requests carry secrets (RegisterUser
   * and ChangePassword carry passwords), so it is keyed with a subkey of
   * the server's token key: a leaked table is no fast hash to crack. A
   * server without keys (only public methods, tests) falls back to plain
   * SHA-256. (The subkey's label predates this module; records keep
   * comparing.) */
  size_t n;
  const void *p = rpc_call_payload(call, &n);
  if (p == NULL) p = "";
  const auth_keys *keys = rpc_call_auth_keys(call);
  if (keys != NULL)
    auth_keys_digest(keys, "shop.rpc.idempotency", p, n, k->hash);
  else
    crypto_hash_sha256(k->hash, p, n);
}

status_code command_idem_insert(db_conn *tx, rpc_call *call, const command_idem_key *k,
                                const ProtobufCMessage *reply, char *errbuf, size_t errlen) {
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
  db_value p[7] = {DB_STR(k->scope),
                   DB_STR(rpc_call_method(call)),
                   DB_STR(rpc_call_idempotency_key(call)),
                   DB_BLOB(k->hash, sizeof k->hash),
                   DB_I64((int64_t)rpc_call_status(call)),
                   DB_STR(rpc_call_status_message(call)),
                   reply != NULL ? DB_BLOB(buf, n) : DB_NULLV};
  status_code st = db_exec(tx,
                           "INSERT INTO rpc_idempotency (scope, method, idem_key, request_hash,"
                           " status_code, status_message, reply) VALUES (?, ?, ?, ?, ?, ?, ?)",
                           p, 7, NULL, NULL, errbuf, errlen);
  if (buf != stackbuf) free(buf);
  return st;
}

command_idem_found command_idem_replay(db_conn *c, rpc_call *call, const command_idem_key *k,
                                       char *errbuf, size_t errlen) {
  db_value p[3] = {DB_STR(k->scope), DB_STR(rpc_call_method(call)),
                   DB_STR(rpc_call_idempotency_key(call))};
  db_rows *r = NULL;
  if (db_query(c,
               "SELECT request_hash, status_code, status_message, reply FROM rpc_idempotency"
               " WHERE scope = ? AND method = ? AND idem_key = ?",
               p, 3, &r, errbuf, errlen) != STATUS_OK)
    return COMMAND_IDEM_UNREADABLE;
  if (!db_rows_next(r)) {
    db_rows_free(r);
    return COMMAND_IDEM_NONE;
  }
  size_t hlen = 0, mlen = 0, plen = 0;
  const char *h = db_rows_str(r, 0, &hlen);
  int64_t code = db_rows_i64(r, 1);
  const char *msg = db_rows_str(r, 2, &mlen);
  const char *reply = db_rows_str(r, 3, &plen);
  command_idem_found found = COMMAND_IDEM_REPLAYED;
  if (hlen != sizeof k->hash || memcmp(h, k->hash, sizeof k->hash) != 0) {
    rpc_call_set_status(call, STATUS_FAILED_PRECONDITION,
                        "idempotency key reused with a different request");
    rpc_call_add_field_violation(call, "idempotency_key",
                                 "already used for a different request to %s",
                                 rpc_call_method(call));
    found = COMMAND_IDEM_REFUSED;
  } else if (code < 0 || !status_is_valid((int)code)) {
    /* A placeholder of the layer before this one that never got its
     * reply (its transaction committed without one: a bug then). */
    rpc_call_set_status(call, STATUS_INTERNAL, "the earlier run of this command stored no reply");
    found = COMMAND_IDEM_REFUSED;
  } else {
    char text[RPC_MESSAGE_MAX];
    size_t m = mlen < sizeof text - 1 ? mlen : sizeof text - 1;
    memcpy(text, msg, m);
    text[m] = '\0';
    rpc_call_put_stored_reply(call, (status_code)code, text, reply, plen);
  }
  db_rows_free(r);
  return found;
}

status_code command_idem_purge(db_conn *db, int retention_s, int batch, uint64_t *deleted,
                               char *errbuf, size_t errlen) {
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
