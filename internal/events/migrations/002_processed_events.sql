-- The consumer's inbox: the id of every event a consumer group applied,
-- inserted in the same transaction as the handler's changes, so a
-- redelivered event is recognised and skipped. Purged after the retention.
CREATE TABLE processed_events (
  consumer_group VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  processed_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (consumer_group, event_id),
  KEY processed_events_at (processed_at)
) ENGINE=InnoDB;
