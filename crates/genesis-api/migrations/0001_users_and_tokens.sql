-- Accounts and the opaque bearer tokens issued to them.

create table users (
    id bigint generated always as identity primary key,
    -- Stored normalised (trimmed, lowercase) so that the unique index is case-insensitive.
    email text not null,
    -- A PHC string ($argon2id$...): never the password itself.
    password_hash text not null,
    created_at timestamptz not null default now(),
    constraint users_email_key unique (email),
    constraint users_email_normalised check (email = lower(btrim(email))),
    constraint users_email_shape check (email like '_%@_%' and length(email) <= 254),
    constraint users_password_hash_phc check (password_hash like '$argon2%')
);

create table auth_tokens (
    id bigint generated always as identity primary key,
    user_id bigint not null references users (id) on delete cascade,
    -- HMAC-SHA-256 of the token under TOKEN_SECRET: the token itself is never stored.
    token_hash bytea not null,
    created_at timestamptz not null default now(),
    expires_at timestamptz not null,
    revoked_at timestamptz,
    constraint auth_tokens_token_hash_key unique (token_hash),
    constraint auth_tokens_token_hash_len check (octet_length(token_hash) = 32),
    constraint auth_tokens_expiry_after_creation check (expires_at > created_at)
);

create index auth_tokens_user_id_idx on auth_tokens (user_id);
