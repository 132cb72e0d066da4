-- Webhook payloads persisted in SQLite (see scripts/sample_warehouse.py): created_at is epoch ms.
-- The window bounds arrive as bind parameters: :window_start and :window_end are both required.
SELECT id, created_at, payload
FROM walkme_events
WHERE created_at >= :window_start
  AND created_at < :window_end
ORDER BY created_at, id
