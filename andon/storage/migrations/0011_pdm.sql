-- 0011 predictive maintenance: model versions, risk score history, alerts with their dedup state.

-- A trained model: its evaluation, its training window and the serialized pipelines (joblib/pickle of
-- analytics.pdm.engine.PdmModel). Only one version is promoted at a time; a model that evaluated worse
-- than the promoted one is kept as 'rejected' with the reason, for the record.
create table pdm_models (
    version       integer generated always as identity primary key,
    created_at    timestamptz not null default now(),
    scope         text not null,                       -- 'line:<id>', 'site:<id>' or 'plant'
    train_start   timestamptz not null,
    train_end     timestamptz not null,
    horizon_h     double precision not null check (horizon_h > 0),
    status        text not null check (status in ('promoted', 'rejected', 'retired')),
    status_reason text not null default '',
    metrics       jsonb not null,
    params        jsonb not null default '{}'::jsonb,
    pipeline      bytea not null,
    sha256        text not null,
    check (train_end > train_start)
);
create unique index pdm_models_one_promoted on pdm_models (scope) where status = 'promoted';

-- Every scoring run's result per machine (history for charts and for auditing an alert).
create table pdm_risk_scores (
    machine        integer not null,
    ts             timestamptz not null,
    model_version  integer references pdm_models (version),
    probability    double precision not null check (probability >= 0 and probability <= 1),
    level          text not null check (level in ('ok', 'watch', 'act')),
    health         double precision,
    lead_time_h    double precision,
    rul_running_h  double precision,
    drivers        jsonb not null default '[]'::jsonb,
    data_quality   jsonb not null default '[]'::jsonb,
    scored_at      timestamptz not null default now(),
    primary key (machine, ts)
);

-- An alert: opened when a machine crosses into 'act', closed when its probability falls below the
-- release threshold. At most one open alert per machine (the partial unique index is the dedup: a
-- second crossing while one is open inserts nothing, so the webhook is not called again).
create table pdm_alerts (
    id                bigint generated always as identity primary key,
    machine           integer not null,
    opened_at         timestamptz not null,
    closed_at         timestamptz,
    model_version     integer references pdm_models (version),
    probability       double precision not null,
    lead_time_h       double precision,
    drivers           jsonb not null default '[]'::jsonb,
    webhook_status    text not null default 'pending'
                      check (webhook_status in ('pending', 'sending', 'delivered', 'failed', 'none')),
    webhook_attempts  integer not null default 0,
    webhook_error     text,
    delivered_at      timestamptz
);
create unique index pdm_alerts_one_open on pdm_alerts (machine) where closed_at is null;
create index pdm_alerts_machine_opened on pdm_alerts (machine, opened_at desc);
