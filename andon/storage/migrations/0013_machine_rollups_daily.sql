-- 0013 a stored day grain of the rollups: per machine, local day (the site's time zone), calendar kind and
-- shift, the sums of that day's rollup periods (machine_rollups). rollups.refresh rewrites the day rows
-- of every local day whose periods it rewrites, in the same transaction, so the two always agree; a day
-- row covers [period_start, period_end) of its periods, period_s seconds of them (periods of one group
-- need not be contiguous: a break inside a shift). queries.periods(grain="day") reads whole local days
-- from here and only the window's edges from machine_rollups or the raw events: a year of a line is a
-- few rows per machine-day instead of a group-by over every hour.
create table machine_rollups_daily (
    machine          integer not null,
    day              date not null,
    calendar_kind    text not null,
    shift_key        text,
    period_start     timestamptz not null,
    period_end       timestamptz not null,
    period_s         double precision not null,
    s_running        double precision not null default 0,
    s_idle           double precision not null default 0,
    s_starved        double precision not null default 0,
    s_blocked        double precision not null default 0,
    s_planned_stop   double precision not null default 0,
    s_setup          double precision not null default 0,
    s_unplanned_stop double precision not null default 0,
    s_offline        double precision not null default 0,
    total_count      bigint not null default 0,
    reject_count     bigint not null default 0,
    startup_rejects  bigint not null default 0,
    ideal_time_s     double precision not null default 0,
    s_stop_planned   double precision not null default 0,
    s_stop_small     double precision not null default 0,
    s_stop_breakdown double precision not null default 0,
    -- The row's numbers in their binary wire form (network byte order), machine first, then the times as
    -- microseconds since 2000-01-01, the sums in the column order above, period_s last: a year of rows
    -- reads as one string_agg of these instead of a send call per number (queries.periods, day grain).
    packed           bytea generated always as (
        int4send(machine) || timestamptz_send(period_start) || timestamptz_send(period_end)
        || float8send(s_running) || float8send(s_idle) || float8send(s_starved) || float8send(s_blocked)
        || float8send(s_planned_stop) || float8send(s_setup) || float8send(s_unplanned_stop)
        || float8send(s_offline) || int8send(total_count) || int8send(reject_count) || int8send(startup_rejects)
        || float8send(ideal_time_s) || float8send(s_stop_planned) || float8send(s_stop_small)
        || float8send(s_stop_breakdown) || float8send(period_s)
    ) stored,
    check (period_end > period_start)
);
create unique index machine_rollups_daily_key
    on machine_rollups_daily (machine, day, calendar_kind, coalesce(shift_key, ''));

-- The day rows of the rollups stored so far (the same grouping as rollups.refresh_daily).
insert into machine_rollups_daily (
    machine, day, calendar_kind, shift_key, period_start, period_end, period_s,
    s_running, s_idle, s_starved, s_blocked, s_planned_stop, s_setup, s_unplanned_stop, s_offline,
    total_count, reject_count, startup_rejects, ideal_time_s, s_stop_planned, s_stop_small, s_stop_breakdown)
select r.machine, (r.period_start at time zone s.timezone)::date, r.calendar_kind, r.shift_key,
       min(r.period_start), max(r.period_end), sum(extract(epoch from r.period_end - r.period_start))::float8,
       sum(r.s_running), sum(r.s_idle), sum(r.s_starved), sum(r.s_blocked), sum(r.s_planned_stop),
       sum(r.s_setup), sum(r.s_unplanned_stop), sum(r.s_offline), sum(r.total_count), sum(r.reject_count),
       sum(r.startup_rejects), sum(r.ideal_time_s), sum(r.s_stop_planned), sum(r.s_stop_small),
       sum(r.s_stop_breakdown)
from machine_rollups r
join machines m on m.num = r.machine
join lines l on l.id = m.line_id
join sites s on s.id = l.site_id
group by r.machine, (r.period_start at time zone s.timezone)::date, r.calendar_kind, r.shift_key;
