-- 0008 telemetry_hourly everywhere: where 0007 made a continuous aggregate it stays; on the Apache
-- edition a plain view with the same columns computes the same figures on the fly.
do $$
begin
    if to_regclass('telemetry_hourly') is null then
        execute $v$
            create view telemetry_hourly as
            select time_bucket('1 hour', ts) as bucket, machine, metric, count(*) as n, avg(value) as mean,
                   min(value) as min, max(value) as max, stddev_samp(value) as stddev
            from telemetry group by 1, 2, 3
        $v$;
    end if;
end $$;
