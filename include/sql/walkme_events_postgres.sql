-- Webhook payloads persisted in PostgreSQL: created_at TIMESTAMPTZ, payload JSONB.
-- Use with time_type: timestamptz. :window_start and :window_end are both required; they reach
-- the server as bind parameters.
SELECT id, created_at, payload
FROM walkme_events
WHERE created_at >= :window_start
  AND created_at < :window_end
  AND coalesce(payload ->> 'wm.env', '0') = '0'
ORDER BY created_at, id
