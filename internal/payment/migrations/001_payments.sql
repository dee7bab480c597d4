-- The money side of each order payment-worker has seen. status is a
-- shop.payment.v1.PaymentStatus; version counts the payment's events.
-- gateway_key is the base of the gateway's idempotency keys
-- ("<order idempotency key>/<order id>", "/<operation>" appended).
CREATE TABLE payments (
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  customer_id VARCHAR(128) NOT NULL,
  status TINYINT NOT NULL,
  version BIGINT NOT NULL DEFAULT 0,
  amount_units BIGINT NOT NULL,
  currency CHAR(3) NOT NULL,
  gateway_key VARCHAR(300) NOT NULL,
  authorization_id VARCHAR(64) NOT NULL DEFAULT '',
  capture_id VARCHAR(64) NOT NULL DEFAULT '',
  refund_id VARCHAR(64) NOT NULL DEFAULT '',
  failure_reason TINYINT NOT NULL DEFAULT 0,
  failure_text VARCHAR(500) NOT NULL DEFAULT '',
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (order_id)
) ENGINE=InnoDB;
-- Every call to the gateway, transient failures included. outcome: 1
-- approved, 2 declined, 3 transient. operation: PaymentOperation.
CREATE TABLE payment_attempts (
  id BIGINT NOT NULL AUTO_INCREMENT,
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  operation TINYINT NOT NULL,
  attempt INT NOT NULL,
  gateway_key VARCHAR(400) NOT NULL,
  amount_units BIGINT NOT NULL,
  outcome TINYINT NOT NULL,
  reason TINYINT NOT NULL DEFAULT 0,
  reference VARCHAR(64) NOT NULL DEFAULT '',
  message VARCHAR(256) NOT NULL DEFAULT '',
  latency_ms INT NOT NULL,
  created_ms BIGINT NOT NULL,
  PRIMARY KEY (id),
  KEY payment_attempts_order (order_id, operation)
) ENGINE=InnoDB;
