CREATE TABLE IF NOT EXISTS `default`.`old_events_local` ON CLUSTER `old_cluster`
(
    event_time       DateTime('UTC'),
    event_ms         UInt16,
    event_id         UUID,
    key_id           String,
    key_fingerprint  String,
    status_id        UInt8,
    status           String,
    http_status      UInt16,
    latency_us       UInt32,
    attempt          UInt16,
    method           String,
    host             String,
    operation        String,
    request_bytes    Int64,
    response_bytes   Int64,
    trace_id         String,
    span_id          String,
    error_type       String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/default.old_events_local', '{replica}')
PARTITION BY toYYYYMM(event_time)
ORDER BY (key_id, event_time)
SETTINGS index_granularity = 8192, replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS `default`.`old_events` ON CLUSTER `old_cluster` AS `default`.`old_events_local`
ENGINE = Distributed('old_cluster', 'default', 'old_events_local', cityHash64(toString(event_id)));

CREATE TABLE IF NOT EXISTS `default`.`old_events_1m_local` ON CLUSTER `old_cluster`
(
    minute         DateTime('UTC'),
    key_id         String,
    status_id      UInt8,
    events         AggregateFunction(count),
    latency        AggregateFunction(quantiles(0.5, 0.9, 0.99), UInt32),
    req_bytes      AggregateFunction(sum, Int64),
    resp_bytes     AggregateFunction(sum, Int64)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/default.old_events_1m_local', '{replica}')
PARTITION BY toYYYYMM(minute)
ORDER BY (key_id, minute, status_id)
SETTINGS index_granularity = 8192;

CREATE MATERIALIZED VIEW IF NOT EXISTS `default`.`old_events_1m_mv` ON CLUSTER `old_cluster` TO `default`.`old_events_1m_local`
AS SELECT
    toStartOfMinute(toDateTime(event_time)) AS minute,
    key_id,
    status_id,
    countState() AS events,
    quantilesState(0.5, 0.9, 0.99)(latency_us) AS latency,
    sumState(if(request_bytes > 0, request_bytes, toInt64(0))) AS req_bytes,
    sumState(if(response_bytes > 0, response_bytes, toInt64(0))) AS resp_bytes
FROM `default`.`old_events_local`
GROUP BY minute, key_id, status_id;

CREATE TABLE IF NOT EXISTS `default`.`old_events_1m` ON CLUSTER `old_cluster` AS `default`.`old_events_1m_local`
ENGINE = Distributed('old_cluster', 'default', 'old_events_1m_local');
