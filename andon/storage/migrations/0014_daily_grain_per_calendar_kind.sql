-- 0014 the stored day grain per machine, local day and calendar kind, no longer per shift as well: what
-- reads it (day and week buckets, window totals) never looks at the shift, and a shift cuts most days into
-- two or three more rows (night shifts across midnight, breaks in every shift). A year of a 20-machine line
-- reads about 16 000 rows instead of 40 000. Shift buckets read the periods grouped per shift, as before.
-- The rows are regrouped from the periods (machine_rollups), the way rollups.refresh_daily writes them.
truncate machine_rollups_daily;
drop index machine_rollups_daily_key;
alter table machine_rollups_daily drop column shift_key;
create unique index machine_rollups_daily_key on machine_rollups_daily (machine, day, calendar_kind);

insert into machine_rollups_daily (
    machine, day, calendar_kind, period_start, period_end, period_s,
    s_running, s_idle, s_starved, s_blocked, s_planned_stop, s_setup, s_unplanned_stop, s_offline,
    total_count, reject_count, startup_rejects, ideal_time_s, s_stop_planned, s_stop_small, s_stop_breakdown)
select r.machine, (r.period_start at time zone s.timezone)::date, r.calendar_kind,
       min(r.period_start), max(r.period_end), sum(extract(epoch from r.period_end - r.period_start))::float8,
       sum(r.s_running), sum(r.s_idle), sum(r.s_starved), sum(r.s_blocked), sum(r.s_planned_stop),
       sum(r.s_setup), sum(r.s_unplanned_stop), sum(r.s_offline), sum(r.total_count), sum(r.reject_count),
       sum(r.startup_rejects), sum(r.ideal_time_s), sum(r.s_stop_planned), sum(r.s_stop_small),
       sum(r.s_stop_breakdown)
from machine_rollups r
join machines m on m.num = r.machine
join lines l on l.id = m.line_id
join sites s on s.id = l.site_id
group by r.machine, (r.period_start at time zone s.timezone)::date, r.calendar_kind;
