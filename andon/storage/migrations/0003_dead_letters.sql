-- 0003 dead letters: input that could not become an event, kept for inspection, never silently dropped.
create table dead_letters (
    id           bigint generated always as identity primary key,
    received_at  timestamptz not null,
    source_id    text not null,
    topic        text,
    reason       text not null,
    payload      bytea
);
create index dead_letters_received on dead_letters (received_at);
