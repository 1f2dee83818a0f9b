-- Issue 14, the organizers' page: an event's sales (GET /api/events/{id}/sales) are aggregated in
-- SQL over this index: the event's orders of one status, in the order they were paid, so the
-- totals, the revenue by section and the sales-over-time buckets read only the event's paid
-- orders (a range of the index), never every order. Paying moves an order from 'pending' to
-- 'paid' with its paid_at: one more secondary-index entry changed in the pay transaction, no
-- extra round trip.
CREATE INDEX IF NOT EXISTS orders_event_sales ON orders (event_id, status, paid_at);
