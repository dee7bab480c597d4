-- The mail queue (issue 19, notification.h): a message is queued in the
-- consumer's transaction with its rendered text and the source event
-- (its envelope and where the group read it, for the dead letter when it
-- is given up), and sent by the channel's sender when next_ms is due.
-- status: 1 sent, 2 failed (permanent), 3 pending (queued: waiting for
-- next_ms), 4 expired (given up after notify.give_up_s; a replay of its
-- dead letter queues it again). queued_ms = 0 marks a row of the first
-- schema, pending until its event comes again.
ALTER TABLE notifications
  ADD COLUMN subject TEXT NULL,
  ADD COLUMN body MEDIUMTEXT NULL,
  ADD COLUMN source MEDIUMBLOB NULL,
  ADD COLUMN source_topic VARCHAR(249) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  ADD COLUMN source_partition INT NOT NULL DEFAULT -1,
  ADD COLUMN source_offset BIGINT NOT NULL DEFAULT -1,
  ADD COLUMN queued_ms BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN next_ms BIGINT NOT NULL DEFAULT 0,
  ADD KEY notifications_due (status, channel, next_ms);
