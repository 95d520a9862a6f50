CREATE TABLE IF NOT EXISTS apipool_events (
  id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY,
  event_time_ms BIGINT NOT NULL,
  event_id VARCHAR(36) NOT NULL,
  key_id VARCHAR(255) NOT NULL,
  key_fingerprint VARCHAR(1024) NOT NULL,
  status_id SMALLINT NOT NULL,
  status VARCHAR(64) NOT NULL,
  http_status INTEGER NOT NULL,
  latency_us BIGINT NOT NULL,
  latency_bin SMALLINT NOT NULL,
  attempt INTEGER NOT NULL,
  method VARCHAR(1024) NOT NULL,
  host VARCHAR(1024) NOT NULL,
  operation VARCHAR(1024) NOT NULL,
  request_bytes BIGINT NOT NULL,
  response_bytes BIGINT NOT NULL,
  trace_id VARCHAR(32) NOT NULL,
  span_id VARCHAR(16) NOT NULL,
  error_type VARCHAR(1024) NOT NULL,
  INDEX apipool_events_time (event_time_ms, key_id, status_id, latency_bin),
  INDEX apipool_events_key_time (key_id, event_time_ms),
  INDEX apipool_events_status_time (status_id, event_time_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS apipool_events_1m (
  minute_ms BIGINT NOT NULL,
  key_id VARCHAR(255) NOT NULL,
  status_id SMALLINT NOT NULL,
  latency_bin SMALLINT NOT NULL,
  events BIGINT NOT NULL,
  latency_us_sum BIGINT NOT NULL,
  PRIMARY KEY (minute_ms, key_id, status_id, latency_bin),
  INDEX apipool_events_1m_key (key_id, minute_ms)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

INSERT INTO apipool_events_1m (minute_ms, key_id, status_id, latency_bin, events, latency_us_sum)
SELECT (event_time_ms DIV 60000) * 60000, key_id, status_id, latency_bin, COUNT(*), SUM(latency_us)
FROM apipool_events GROUP BY (event_time_ms DIV 60000) * 60000, key_id, status_id, latency_bin;

CREATE TABLE IF NOT EXISTS apipool_batches (
  batch_id VARCHAR(36) NOT NULL PRIMARY KEY,
  written_ms BIGINT NOT NULL,
  events INTEGER NOT NULL
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

CREATE TABLE IF NOT EXISTS apipool_counts_1m (
  minute_ms BIGINT NOT NULL,
  key_id VARCHAR(255) NOT NULL,
  status_id SMALLINT NOT NULL,
  events BIGINT NOT NULL,
  PRIMARY KEY (minute_ms, key_id, status_id)
) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_nopad_bin;

INSERT INTO apipool_counts_1m (minute_ms, key_id, status_id, events)
SELECT minute_ms, key_id, status_id, SUM(events)
FROM apipool_events_1m GROUP BY minute_ms, key_id, status_id;

DROP INDEX apipool_events_key_time ON apipool_events;

DROP INDEX apipool_events_status_time ON apipool_events;
