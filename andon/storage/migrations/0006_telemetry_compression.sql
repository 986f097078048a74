-- andon:license=timescale
-- 0006 (Timescale-licensed servers only): compress telemetry chunks older than 7 days, segmented by
-- machine and metric, which is how telemetry is read. Skipped on the Apache edition.
alter table telemetry set (timescaledb.compress, timescaledb.compress_segmentby = 'machine, metric',
                           timescaledb.compress_orderby = 'ts');
select add_compression_policy('telemetry', interval '7 days', if_not_exists => true);
