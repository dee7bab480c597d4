-- Orders as order-command keeps them. status is a shop.order.v1.OrderStatus;
-- version counts the order's events. stock_state and payment_state are the
-- saga's record of the workers' answers (order.h: order_stock_state,
-- order_payment_state). shipping is the packed ShippingAddress.
CREATE TABLE orders (
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  customer_id VARCHAR(128) NOT NULL,
  status TINYINT NOT NULL,
  version BIGINT NOT NULL,
  total_units BIGINT NOT NULL,
  currency CHAR(3) NOT NULL,
  payment_token VARCHAR(256) NOT NULL,
  shipping BLOB NOT NULL,
  idempotency_key VARCHAR(128) NOT NULL,
  stock_state TINYINT NOT NULL DEFAULT 0,
  payment_state TINYINT NOT NULL DEFAULT 0,
  cancel_reason TINYINT NOT NULL DEFAULT 0,
  cancel_reason_text VARCHAR(2000) NOT NULL DEFAULT '',
  carrier VARCHAR(400) NOT NULL DEFAULT '',
  tracking_number VARCHAR(400) NOT NULL DEFAULT '',
  deadline_ms BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (order_id),
  KEY orders_deadline (status, deadline_ms),
  KEY orders_customer (customer_id, created_ms)
) ENGINE=InnoDB;
-- The priced lines, in the order the customer gave them.
CREATE TABLE order_lines (
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  line_no INT NOT NULL,
  product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  quantity INT NOT NULL,
  unit_price BIGINT NOT NULL,
  line_total BIGINT NOT NULL,
  sku VARCHAR(64) NOT NULL,
  product_name VARCHAR(200) NOT NULL,
  PRIMARY KEY (order_id, line_no)
) ENGINE=InnoDB;
