-- order-query's read model, built only from order, payment and inventory
-- events. version is the order's version (the last order event applied),
-- which consistency tokens are compared with; the payment and stock parts
-- have their own versions in projection_versions ("order.payment",
-- "order.stock"). created_ms = 0 marks a row that a payment or inventory
-- event reached before OrderCreated: not shown until it comes. details is
-- the packed OrderCreated without its payment token (lines, address,
-- total); rejected_lines the packed InventoryRejected.
CREATE TABLE orders_view (
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  customer_id VARCHAR(128) NOT NULL DEFAULT '',
  status TINYINT NOT NULL DEFAULT 0,
  total_units BIGINT NOT NULL DEFAULT 0,
  currency CHAR(3) NOT NULL DEFAULT '',
  details MEDIUMBLOB NULL,
  payment_status TINYINT NOT NULL DEFAULT 0,
  authorized_units BIGINT NULL,
  captured_units BIGINT NULL,
  refunded_units BIGINT NULL,
  authorization_id VARCHAR(64) NOT NULL DEFAULT '',
  payment_failure_reason TINYINT NOT NULL DEFAULT 0,
  payment_failure_text VARCHAR(500) NOT NULL DEFAULT '',
  stock_status TINYINT NOT NULL DEFAULT 0,
  rejected_lines MEDIUMBLOB NULL,
  cancel_reason TINYINT NOT NULL DEFAULT 0,
  cancel_reason_text VARCHAR(2000) NOT NULL DEFAULT '',
  carrier VARCHAR(400) NOT NULL DEFAULT '',
  tracking_number VARCHAR(400) NOT NULL DEFAULT '',
  created_ms BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL DEFAULT 0,
  deadline_ms BIGINT NOT NULL DEFAULT 0,
  version BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (order_id),
  KEY orders_view_customer (customer_id, created_ms, order_id),
  KEY orders_view_status (status, created_ms, order_id)
) ENGINE=InnoDB;
