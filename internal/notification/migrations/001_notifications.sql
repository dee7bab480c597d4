-- notification-worker's state: contact details and channel preferences
-- projected from user events, and one row per message sent (or tried) on
-- one channel about one source event.
CREATE TABLE contacts (
  user_id VARCHAR(128) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  email VARCHAR(320) NOT NULL DEFAULT '',
  phone VARCHAR(32) NOT NULL DEFAULT '',
  name VARCHAR(200) NOT NULL DEFAULT '',
  pref_email TINYINT NOT NULL DEFAULT 1,
  pref_sms TINYINT NOT NULL DEFAULT 0,
  pref_push TINYINT NOT NULL DEFAULT 0,
  version BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id)
) ENGINE=InnoDB;
-- status: 1 sent, 2 failed (permanent), 3 pending (a transient failure,
-- tried again when the event is redelivered).
CREATE TABLE notifications (
  notification_id VARCHAR(80) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event_id VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  event_type VARCHAR(255) NOT NULL,
  channel TINYINT NOT NULL,
  recipient VARCHAR(320) NOT NULL,
  user_id VARCHAR(128) NOT NULL DEFAULT '',
  status TINYINT NOT NULL,
  attempts INT NOT NULL DEFAULT 0,
  last_error VARCHAR(1000) NOT NULL DEFAULT '',
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (notification_id),
  KEY notifications_event (event_id)
) ENGINE=InnoDB;
