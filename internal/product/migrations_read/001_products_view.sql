-- product-query's read model (database shop_product_read), built only from
-- product events and StockLevelChanged. Part versions live in
-- projection_versions ("product.details", "product.price", "product.rule",
-- "product.stock"); version is the highest product version applied, which
-- consistency tokens are compared with. created_ms = 0 marks a row some
-- event reached before its ProductCreated: not shown.
CREATE TABLE products_view (
  product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  sku VARCHAR(64) NOT NULL DEFAULT '',
  name VARCHAR(200) NOT NULL DEFAULT '',
  description TEXT NOT NULL DEFAULT '',
  category VARCHAR(64) CHARACTER SET ascii COLLATE ascii_bin NOT NULL DEFAULT '',
  price_units BIGINT NOT NULL DEFAULT 0,
  currency CHAR(3) NOT NULL DEFAULT '',
  low_stock_threshold BIGINT NOT NULL DEFAULT 0,
  max_quantity_per_order INT NOT NULL DEFAULT 0,
  initial_stock BIGINT NOT NULL DEFAULT 0,
  archived TINYINT NOT NULL DEFAULT 0,
  created_ms BIGINT NOT NULL DEFAULT 0,
  updated_ms BIGINT NOT NULL DEFAULT 0,
  version BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (product_id),
  KEY products_view_name (archived, name, product_id),
  KEY products_view_price (archived, price_units, product_id),
  KEY products_view_category (category, archived, name, product_id)
) ENGINE=InnoDB;

-- Stock as the inventory worker last reported it (StockLevelChanged),
-- apart from the product rows: it may arrive first.
CREATE TABLE product_stock (
  product_id CHAR(36) CHARACTER SET ascii COLLATE ascii_bin NOT NULL,
  available BIGINT NOT NULL,
  reserved BIGINT NOT NULL,
  shipped BIGINT NOT NULL,
  received BIGINT NOT NULL,
  version BIGINT NOT NULL,
  PRIMARY KEY (product_id)
) ENGINE=InnoDB;
