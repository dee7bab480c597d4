-- user-command's own tables (database shop_user). Times are Unix
-- milliseconds. Ids are UUIDv7 text. No table holds a password or a token:
-- password_hash is argon2id's encoded string, token_hash a SHA-256.
CREATE TABLE users (
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Normalised (trimmed, domain lower-cased), as in UserRegistered.
  email VARCHAR(254) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- The whole address lower-cased: uniqueness and login.
  email_key VARCHAR(254) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  password_hash VARCHAR(255) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- shop.user.v1.Role: 1 customer, 2 admin.
  role TINYINT NOT NULL,
  name VARCHAR(200) NOT NULL,
  phone VARCHAR(16) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  notify_email TINYINT NOT NULL,
  notify_sms TINYINT NOT NULL,
  notify_push TINYINT NOT NULL,
  -- The aggregate's version: 1 at registration, +1 per event.
  version BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (user_id),
  UNIQUE KEY users_email_key (email_key),
  KEY users_role (role)
) ENGINE=InnoDB;

-- Refresh tokens (sessions). The token is "rt1.<token_id>.<mac>"; only its
-- SHA-256 is kept. A rotation revokes the row and names its successor in
-- replaced_by; rows of one login share family_id. idem_key and
-- request_mac (an HMAC of the request, keyed with a server secret) make
-- Login and RefreshToken idempotent without storing their replies.
CREATE TABLE refresh_tokens (
  token_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  token_hash BINARY(32) NOT NULL,
  user_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  family_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- 1 Login, 2 RefreshToken.
  origin TINYINT NOT NULL,
  created_ms BIGINT NOT NULL,
  expires_ms BIGINT NOT NULL,
  revoked_ms BIGINT NULL,
  replaced_by CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NULL,
  idem_key VARBINARY(128) NULL,
  request_mac BINARY(32) NULL,
  PRIMARY KEY (token_id),
  UNIQUE KEY refresh_tokens_hash (token_hash),
  KEY refresh_tokens_user (user_id, idem_key),
  KEY refresh_tokens_family (family_id),
  KEY refresh_tokens_expires (expires_ms)
) ENGINE=InnoDB;

-- The login throttle, per email key (known account or not).
CREATE TABLE login_throttle (
  email_key VARCHAR(254) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Failures in a row since the last success or lock.
  failures INT NOT NULL,
  last_failure_ms BIGINT NOT NULL,
  locked_until_ms BIGINT NOT NULL,
  PRIMARY KEY (email_key)
) ENGINE=InnoDB;
