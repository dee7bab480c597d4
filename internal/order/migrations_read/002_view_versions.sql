-- Each part of an order's row keeps the version of the stream that sets
-- it in the row itself: version (the order's), payment_version (the
-- payment's), stock_version (the reservation's). An event is one statement
-- (INSERT ... ON DUPLICATE KEY UPDATE, each column guarded by its part's
-- version) instead of a read of projection_versions and two writes. The
-- versions already kept in projection_versions come over.
ALTER TABLE orders_view ADD COLUMN payment_version BIGINT NOT NULL DEFAULT 0,
  ADD COLUMN stock_version BIGINT NOT NULL DEFAULT 0;
UPDATE orders_view v JOIN projection_versions p ON p.projection = 'order.payment'
  AND p.entity_key = v.order_id SET v.payment_version = p.version;
UPDATE orders_view v JOIN projection_versions p ON p.projection = 'order.stock'
  AND p.entity_key = v.order_id SET v.stock_version = p.version;
UPDATE orders_view v JOIN projection_versions p ON p.projection = 'order'
  AND p.entity_key = v.order_id SET v.version = GREATEST(v.version, p.version);
