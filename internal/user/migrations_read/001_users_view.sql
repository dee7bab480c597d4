-- user-query's read model (database shop_user_read), built only from user
-- events. Part versions live in projection_versions ("user.profile",
-- "user.role"); version here is the highest event version applied to the
-- row, which consistency tokens are compared with. registered_ms = 0 marks
-- a row some event reached before its UserRegistered: not shown.
CREATE TABLE users_view (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  email VARCHAR(254) NOT NULL DEFAULT '',
  role TINYINT NOT NULL DEFAULT 0,
  name VARCHAR(200) NOT NULL DEFAULT '',
  phone VARCHAR(16) NOT NULL DEFAULT '',
  notify_email TINYINT NOT NULL DEFAULT 0,
  notify_sms TINYINT NOT NULL DEFAULT 0,
  notify_push TINYINT NOT NULL DEFAULT 0,
  registered_ms BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL DEFAULT 0,
  version BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (user_id),
  KEY users_view_registered (registered_ms, user_id),
  KEY users_view_role (role, registered_ms, user_id)
) ENGINE=InnoDB;
