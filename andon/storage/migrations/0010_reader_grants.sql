-- 0010 read-only access for reporting tools (Grafana) where a role named grafana_reader exists
-- (docker/primary-init.sql creates it): SELECT on every table and view, now and later.
do $$
begin
    if exists (select 1 from pg_roles where rolname = 'grafana_reader') then
        execute 'grant usage on schema public to grafana_reader';
        execute 'grant select on all tables in schema public to grafana_reader';
        execute 'alter default privileges in schema public grant select on tables to grafana_reader';
    end if;
end $$;
