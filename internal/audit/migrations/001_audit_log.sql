-- The append-only, hash-chained audit log (DESIGN.md, "Storage"). The
-- runtime account may only SELECT and INSERT. row_id is assigned by the
-- writer under GET_LOCK('shop.audit.chain') as the previous row_id + 1, so
-- the chain has no gaps (AUTO_INCREMENT would leave gaps on rollback).
-- hash = SHA-256(prev_hash || canonical content), see internal/audit/audit.h.
CREATE TABLE audit_log (
  row_id BIGINT NOT NULL,
  event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(255) NOT NULL,
  kpartition INT NOT NULL,
  koffset BIGINT NOT NULL,
  type VARCHAR(255) NOT NULL,
  source VARCHAR(255) NOT NULL,
  actor VARCHAR(255) NOT NULL,
  subject VARCHAR(255) NOT NULL,
  sequence BIGINT NOT NULL,
  event_time_ms BIGINT NOT NULL,
  correlation_id VARCHAR(255) NOT NULL,
  traceparent VARCHAR(255) NOT NULL,
  ev_key VARCHAR(255) NOT NULL,
  data LONGBLOB NOT NULL,
  recorded_ms BIGINT NOT NULL,
  prev_hash BINARY(32) NOT NULL,
  hash BINARY(32) NOT NULL,
  PRIMARY KEY (row_id),
  UNIQUE KEY audit_log_event (event_id),
  KEY audit_log_subject (subject, row_id),
  KEY audit_log_key (ev_key, row_id),
  KEY audit_log_type (type, row_id),
  KEY audit_log_time (event_time_ms, row_id)
) ENGINE=InnoDB;
