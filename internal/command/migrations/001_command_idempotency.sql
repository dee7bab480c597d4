-- Idempotency records of commands (internal/command). One row per
-- (scope, method, key): scope is the authenticated user id, else
-- "caller:<program>"; inserted with the reply in the command's own
-- transaction. (The table was first made by the rpc layer's migration of
-- the same text: IF NOT EXISTS keeps such a database as it is.)
-- Binary columns: keys compare byte for byte, whatever the connection's
-- collation.
CREATE TABLE IF NOT EXISTS rpc_idempotency (
  scope VARBINARY(200) NOT NULL,
  method VARBINARY(255) NOT NULL,
  idem_key VARBINARY(128) NOT NULL,
  request_hash BINARY(32) NOT NULL,
  status_code INT NOT NULL,
  status_message VARBINARY(512) NOT NULL DEFAULT '',
  reply MEDIUMBLOB NULL,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (scope, method, idem_key),
  KEY rpc_idempotency_created (created_at)
) ENGINE=InnoDB;
