-- The transactional outbox: rows written in the caller's transaction by
-- outbox_append(), published by the relay in id order, marked sent only
-- from the producer's delivery report, purged after the retention period.
-- state: 0 unsent, 1 sent, 2 parked (a permanent error, kept in `error`).
CREATE TABLE outbox (
  id BIGINT NOT NULL AUTO_INCREMENT,
  event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  envelope MEDIUMBLOB NOT NULL,
  state TINYINT NOT NULL DEFAULT 0,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  sent_at TIMESTAMP(6) NULL,
  error VARCHAR(1024) NULL,
  PRIMARY KEY (id),
  KEY outbox_state_id (state, id),
  KEY outbox_sent_at (sent_at)
) ENGINE=InnoDB;
