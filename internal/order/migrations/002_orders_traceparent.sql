-- The W3C traceparent the order was created under, so that what a timer
-- does to the order later (the deadline sweeper's cancellation) continues
-- the order's trace. '' for orders made before this column.
ALTER TABLE orders ADD COLUMN traceparent VARCHAR(55) CHARACTER SET ascii NOT NULL DEFAULT '';
