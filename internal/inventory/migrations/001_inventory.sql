-- Stock per product, from ProductCreated and StockAdjusted, moved by
-- reservations. version is the product's stock version (StockLevel.version):
-- 1 at ProductCreated, +1 per change. The CHECKs make a negative level or a
-- broken sum impossible to commit, whatever the code does.
CREATE TABLE stock_levels (
  product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  sku VARCHAR(64) NOT NULL DEFAULT '',
  available BIGINT NOT NULL,
  reserved BIGINT NOT NULL DEFAULT 0,
  shipped BIGINT NOT NULL DEFAULT 0,
  received BIGINT NOT NULL,
  version BIGINT NOT NULL,
  low_stock_threshold BIGINT NOT NULL DEFAULT 0,
  max_quantity_per_order INT NOT NULL DEFAULT 0,
  rule_version BIGINT NOT NULL DEFAULT 0,
  archived TINYINT NOT NULL DEFAULT 0,
  restock_seq BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (product_id),
  CONSTRAINT stock_levels_not_negative CHECK (available >= 0 AND reserved >= 0 AND shipped >= 0),
  CONSTRAINT stock_levels_sum CHECK (available + reserved + shipped = received)
) ENGINE=InnoDB;
-- One row per order seen: status is a shop.inventory.v1.ReservationStatus
-- (1 PENDING: waiting for an unknown product) or 100 (cancelled before
-- anything was reserved); version counts the reservation's events.
CREATE TABLE reservations (
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  status TINYINT NOT NULL,
  version BIGINT NOT NULL DEFAULT 0,
  waiting_since_ms BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (order_id),
  KEY reservations_waiting (status, waiting_since_ms)
) ENGINE=InnoDB;
CREATE TABLE reservation_lines (
  order_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  quantity BIGINT NOT NULL,
  PRIMARY KEY (order_id, product_id),
  KEY reservation_lines_product (product_id)
) ENGINE=InnoDB;
