-- Users' documents: free-form JSONB metadata and full-text search over title and body.

create table documents (
    id bigint generated always as identity primary key,
    owner_id bigint references users (id) on delete cascade,
    title text not null,
    body text not null default '',
    metadata jsonb not null default '{}'::jsonb,
    -- Bumped by every update; concurrent writers lock the row first.
    revision integer not null default 1,
    -- Title words weigh more than body words in the ranking.
    search tsvector generated always as (
        setweight(to_tsvector('english', title), 'A')
        || setweight(to_tsvector('english', body), 'B')
    ) stored,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint documents_title_length check (char_length(title) between 1 and 200),
    constraint documents_metadata_object check (jsonb_typeof(metadata) = 'object'),
    constraint documents_revision_positive check (revision > 0)
);

create index documents_owner_id_idx on documents (owner_id);
create index documents_search_idx on documents using gin (search);
create index documents_metadata_idx on documents using gin (metadata jsonb_path_ops);
