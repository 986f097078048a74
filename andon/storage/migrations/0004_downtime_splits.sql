-- 0004 manual splits of a stop into two causes: a split point survives re-derivation of the stops.
create table downtime_splits (
    machine  integer not null,
    at       timestamptz not null,
    by       text not null,
    created  timestamptz not null default now(),
    primary key (machine, at)
);
