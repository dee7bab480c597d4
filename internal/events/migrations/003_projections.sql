-- Read models: the last applied version of every (projection, key), and
-- delta events that arrived ahead of a missing version, held until it comes.
CREATE TABLE projection_versions (
  projection VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  entity_key VARCHAR(191) NOT NULL,
  version BIGINT NOT NULL,
  updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
  PRIMARY KEY (projection, entity_key)
) ENGINE=InnoDB;
CREATE TABLE projection_pending (
  projection VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  entity_key VARCHAR(191) NOT NULL,
  version BIGINT NOT NULL,
  envelope MEDIUMBLOB NOT NULL,
  received_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
  PRIMARY KEY (projection, entity_key, version)
) ENGINE=InnoDB;
