-- 0009 reporting views for tools that read TimescaleDB directly (Grafana): the OEE time model of each
-- rollup period, by the same rules as the analytics core (analytics/ledger.py):
--   scheduled   = production periods, plus calendar planned stops when planned stops count against
--                 availability (plant setting; OEE.com default);
--   ppt_s       = scheduled seconds with data: running + starved + blocked + small stops + breakdowns
--                 (+ planned stops when they count against availability); "no data" is left out;
--   run_s       = running + small stops (small stops are a performance loss);
--   ideal_s     = ideal cycle time x parts; good = total - reject.
-- Sum these over any set of periods and derive A = run/ppt, P = ideal/run, Q = good/total.
create view machine_oee_periods as
with setting as (
    select coalesce((select (model -> 'settings' ->> 'planned_stops_count_against_availability')::boolean
                     from plant_model_versions order by version desc limit 1), true) as planned_count
)
select m.id as machine_id, m.line_id, r.period_start, r.period_end, r.calendar_kind, r.shift_key,
       case when sched then r.s_running + r.s_starved + r.s_blocked + r.s_stop_small + r.s_stop_breakdown
                            + case when s.planned_count then r.s_stop_planned else 0 end
            else 0 end as ppt_s,
       case when sched then r.s_running + r.s_stop_small else 0 end as run_s,
       case when sched then r.ideal_time_s else 0 end as ideal_s,
       case when sched then r.total_count else 0 end as total_count,
       case when sched then r.total_count - r.reject_count else 0 end as good_count,
       r.s_starved, r.s_blocked, r.s_stop_breakdown, r.s_stop_small, r.s_stop_planned, r.s_offline
from machine_rollups r
join machines m on m.num = r.machine
cross join setting s
cross join lateral (select r.calendar_kind = 'production'
                           or (r.calendar_kind = 'planned_stop' and s.planned_count) as sched) k;
