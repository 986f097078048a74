-- andon:license=timescale
-- andon:no-transaction
-- 0007 (Timescale-licensed servers only): hourly telemetry statistics as a continuous aggregate.
-- On the Apache edition migration 0008 provides a plain view of the same name and columns.
drop view if exists telemetry_hourly;
create materialized view telemetry_hourly with (timescaledb.continuous) as
select time_bucket('1 hour', ts) as bucket, machine, metric, count(*) as n, avg(value) as mean,
       min(value) as min, max(value) as max, stddev_samp(value) as stddev
from telemetry group by 1, 2, 3 with no data;
select add_continuous_aggregate_policy('telemetry_hourly', start_offset => interval '3 days',
       end_offset => interval '1 hour', schedule_interval => interval '15 minutes', if_not_exists => true);
