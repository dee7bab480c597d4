-- product-command's own table (database shop_product). Times are Unix
-- milliseconds; ids are UUIDv7 text; money is integer minor units.
CREATE TABLE products (
  product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  -- Unique regardless of letter case (ascii_general_ci).
  sku VARCHAR(64) CHARACTER SET ascii COLLATE ascii_general_ci NOT NULL,
  name VARCHAR(200) NOT NULL,
  description TEXT NOT NULL,
  category VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  price_units BIGINT NOT NULL,
  currency CHAR(3) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  initial_stock BIGINT NOT NULL,
  low_stock_threshold BIGINT NOT NULL,
  max_quantity_per_order INT NOT NULL,
  archived TINYINT NOT NULL,
  -- Restocks so far (StockAdjusted.restock_sequence of the last one) and
  -- the units they added.
  restock_seq BIGINT NOT NULL,
  total_restocked BIGINT NOT NULL,
  -- The aggregate's version: 1 at creation, +1 per event.
  version BIGINT NOT NULL,
  created_ms BIGINT NOT NULL,
  updated_ms BIGINT NOT NULL,
  PRIMARY KEY (product_id),
  UNIQUE KEY products_sku (sku)
) ENGINE=InnoDB;
