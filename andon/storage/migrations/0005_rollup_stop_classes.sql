-- 0005 stop classes in the rollups: every second of a stop state (idle, planned stop, setup, unplanned
-- stop) is a planned stop, a small stop (the stop's full duration below the plant's threshold) or a
-- breakdown, by the stop's effective reason and duration. With these a year of six big losses reads
-- from the rollups alone, without touching the stops.
alter table machine_rollups
    add column s_stop_planned   double precision not null default 0,
    add column s_stop_small     double precision not null default 0,
    add column s_stop_breakdown double precision not null default 0;
-- Recompute every rollup with the new columns.
insert into rollup_dirty (machine, from_ts, to_ts)
select num, 'epoch'::timestamptz, '9999-12-31'::timestamptz from machines where not retired;
