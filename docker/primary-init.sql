-- Run once by the TimescaleDB image on first start: a replication role for the read replica and a
-- read-only role for Grafana.
do $$ begin
  if not exists (select 1 from pg_roles where rolname = 'replicator') then
    create role replicator with replication login password 'replicator';
  end if;
  if not exists (select 1 from pg_roles where rolname = 'grafana_reader') then
    create role grafana_reader with login password 'grafana_reader';
  end if;
end $$;
