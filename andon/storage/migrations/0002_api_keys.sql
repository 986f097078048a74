-- 0002 API keys with roles; only a hash of each secret is stored.
create table api_keys (
    id          integer generated always as identity primary key,
    name        text not null,
    role        text not null check (role in ('gateway', 'viewer', 'maintainer', 'admin')),
    prefix      text not null unique,
    secret_hash text not null,
    created_at  timestamptz not null default now(),
    revoked_at  timestamptz,
    last_used   timestamptz
);
