#!/usr/bin/env bash
# Entrypoint of genesis-local/postgres:15, a drop-in for the official
# postgres:15-alpine image built from Debian packages. It keeps that image's
# contract: POSTGRES_USER (default postgres), POSTGRES_PASSWORD,
# POSTGRES_DB (default: the user), POSTGRES_INITDB_ARGS,
# POSTGRES_INITDB_WALDIR, POSTGRES_HOST_AUTH_METHOD, the *_FILE variants,
# PGDATA, /docker-entrypoint-initdb.d, initialisation on first start only,
# and `postgres -c ...` / `-c ...` as the command.
set -Eeo pipefail

# VAR_FILE names a file holding VAR's value (Docker secrets).
file_env() {
    local var=$1 file_var="${1}_FILE" default=${2:-}
    if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
        echo >&2 "error: both $var and $file_var are set (but are exclusive)"
        exit 1
    fi
    local value=$default
    if [ -n "${!var:-}" ]; then
        value=${!var}
    elif [ -n "${!file_var:-}" ]; then
        value=$(<"${!file_var}")
    fi
    export "$var"="$value"
    unset "$file_var"
}

# Arguments that make postgres print something and exit need no data dir.
wants_help() {
    local arg
    for arg; do
        case $arg in
            -'?' | --help | --describe-config | -V | --version) return 0 ;;
        esac
    done
    return 1
}

# psql as the superuser over the Unix socket of the temporary server.
run_sql() {
    local cmd=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ -n "$POSTGRES_DB" ]; then
        cmd+=(--dbname "$POSTGRES_DB")
    fi
    PGHOST= PGHOSTADDR= "${cmd[@]}" "$@"
}

# The cluster initdb made when the image was built (Dockerfile), as one tar
# file: superuser `postgres` without a password.
SEED=/usr/lib/genesis/pgdata-seed.tar

# The second build-time cluster (Dockerfile): the test environment's public
# role, password and database, set already, with the host line; and what it
# was made for: user, database, SHA-256 of the password, one per line.
TEST_SEED=/usr/lib/genesis/pgdata-test.tar
TEST_SEED_ID=/usr/lib/genesis/pgdata-test.id

require_password() {
    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        {
            echo 'Error: Database is uninitialized and superuser password is not specified.'
            echo '       You must specify POSTGRES_PASSWORD to a non-empty value for the'
            echo '       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".'
            echo '       You may also use "POSTGRES_HOST_AUTH_METHOD=trust" to allow all'
            echo '       connections without a password. This is *not* recommended.'
        } >&2
        exit 1
    fi
}

# Local (socket) connections keep initdb's `trust`; every TCP connection from
# anywhere needs the password, hashed as password_encryption says
# (scram-sha-256 on PostgreSQL 15).
allow_host_connections() {
    : "${POSTGRES_HOST_AUTH_METHOD:=$(postgres -C password_encryption "$@")}"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"
}

# Whether the build-time cluster can stand in for initdb: it exists, nothing
# asks initdb for other options, no value holds a newline (which would end a
# single-user command), and PGDATA is empty (initdb refuses anything else, and
# so must we).
can_seed() {
    [ -s "$SEED" ] &&
        [ -z "${POSTGRES_INITDB_ARGS:-}" ] &&
        [ -z "${POSTGRES_INITDB_WALDIR:-}" ] &&
        [[ "$POSTGRES_USER$POSTGRES_PASSWORD$POSTGRES_DB" != *$'\n'* ]] &&
        [ -z "$(ls -A "$PGDATA")" ]
}

# Whether the test cluster is exactly what the official first start would
# make: the first seed could be used, the values are the ones it was made for,
# the host line would be the one it has (no POSTGRES_HOST_AUTH_METHOD, no
# argument touching password_encryption or the configuration files), and no
# init script waits for a temporary server.
can_seed_test() {
    [ -s "$TEST_SEED" ] && [ -s "$TEST_SEED_ID" ] && can_seed &&
        [ -z "$POSTGRES_HOST_AUTH_METHOD" ] &&
        [ -z "$(ls -A /docker-entrypoint-initdb.d/ 2>/dev/null)" ] || return 1
    local arg
    for arg; do
        case $arg in
            *password_encryption* | *config_file* | *hba_file*) return 1 ;;
        esac
    done
    local sum
    sum=$(printf '%s' "$POSTGRES_PASSWORD" | sha256sum)
    [ "$(printf '%s\n%s\n%s' "$POSTGRES_USER" "$POSTGRES_DB" "${sum%% *}")" = "$(<"$TEST_SEED_ID")" ]
}

# $1 as an SQL string literal (standard_conforming_strings is on).
sql_literal() {
    printf "'%s'" "${1//\'/\'\'}"
}

# $1 as an SQL identifier.
sql_ident() {
    printf '"%s"' "${1//\"/\"\"}"
}

# The official image's first start, in one single-user backend instead of
# initdb, a temporary server and its restart: the build-time cluster copied
# in, its bootstrap superuser renamed to POSTGRES_USER and given
# POSTGRES_PASSWORD, and its placeholder database renamed to POSTGRES_DB.
# The SQL goes through stdin, never argv. ALTER ROLE refuses to rename the
# session user, hence the catalog update; the role keeps OID 10, as the one
# initdb names does.
seed_cluster() {
    # Run as postgres: the files are the postgres user's, with the archive's modes.
    tar -C "$PGDATA" --preserve-permissions -xf "$SEED"
    {
        if [ "$POSTGRES_USER" != postgres ]; then
            printf 'UPDATE pg_authid SET rolname = %s WHERE oid = 10;\n\n' "$(sql_literal "$POSTGRES_USER")"
        fi
        if [ -n "$POSTGRES_PASSWORD" ]; then
            printf 'ALTER ROLE %s PASSWORD %s;\n\n' "$(sql_ident "$POSTGRES_USER")" "$(sql_literal "$POSTGRES_PASSWORD")"
        fi
        # The build-time database becomes POSTGRES_DB; none is made for `postgres`,
        # which initdb made already.
        if [ "$POSTGRES_DB" != postgres ]; then
            printf 'ALTER DATABASE genesis_seed_db RENAME TO %s;\n\n' "$(sql_ident "$POSTGRES_DB")"
        else
            printf 'DROP DATABASE genesis_seed_db;\n\n'
        fi
    } | postgres --single -j -D "$PGDATA" "$@" postgres >/dev/null
}

init_cluster() {
    require_password
    local args=("$@")
    [ "${args[0]}" = postgres ] && args=("${args[@]:1}")

    if can_seed_test "${args[@]}"; then
        tar -C "$PGDATA" --preserve-permissions -xf "$TEST_SEED"
        echo
        echo 'PostgreSQL init process complete (from the build-time test cluster); ready for start up.'
        echo
        return
    fi

    local seeded=
    if can_seed; then
        seed_cluster "${args[@]}"
        seeded=1
    else
        local waldir=()
        if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
            waldir=(--waldir "$POSTGRES_INITDB_WALDIR")
        fi
        # POSTGRES_INITDB_ARGS is a shell-quoted string in the official image,
        # hence eval. --pwfile rejects an empty file, hence the newline.
        eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"${POSTGRES_INITDB_ARGS:-}"' "${waldir[@]}"'
    fi
    allow_host_connections "${args[@]}"

    # A seeded cluster has its database already; a temporary server is needed
    # only for the init scripts.
    if [ -n "$seeded" ] && [ -z "$(ls -A /docker-entrypoint-initdb.d/ 2>/dev/null)" ]; then
        echo
        echo 'PostgreSQL init process complete (from the build-time cluster); ready for start up.'
        echo
        return
    fi

    # A socket-only server for creating the database and running init scripts.
    export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
    PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" \
        -o "$(printf '%q ' "${args[@]}" -c listen_addresses='' -p "${PGPORT:-5432}")" \
        -w start

    if [ -z "$(POSTGRES_DB= run_sql --dbname postgres --set db="$POSTGRES_DB" --tuples-only \
        <<<"SELECT 1 FROM pg_database WHERE datname = :'db';")" ]; then
        POSTGRES_DB= run_sql --dbname postgres --set db="$POSTGRES_DB" \
            <<<'CREATE DATABASE :"db";'
    fi

    local f
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case $f in
            *.sh)
                # Executable scripts run, the others are sourced (they may use
                # run_sql), as in the official image.
                if [ -x "$f" ]; then
                    echo "$0: running $f"
                    "$f"
                else
                    echo "$0: sourcing $f"
                    . "$f"
                fi
                ;;
            *.sql) echo "$0: running $f"; run_sql -f "$f" ;;
            *.sql.gz) echo "$0: running $f"; gunzip -c "$f" | run_sql ;;
            *.sql.xz) echo "$0: running $f"; xzcat "$f" | run_sql ;;
            *.sql.zst) echo "$0: running $f"; zstd -dc "$f" | run_sql ;;
            *) echo "$0: ignoring $f" ;;
        esac
    done

    PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
    unset PGPASSWORD
    echo
    echo 'PostgreSQL init process complete; ready for start up.'
    echo
}

main() {
    # `docker run IMAGE -c fsync=off` means `postgres -c fsync=off`.
    if [ "${1:0:1}" = - ]; then
        set -- postgres "$@"
    fi

    if [ "$1" = postgres ] && ! wants_help "$@"; then
        file_env POSTGRES_PASSWORD
        file_env POSTGRES_USER postgres
        file_env POSTGRES_DB "$POSTGRES_USER"
        file_env POSTGRES_INITDB_ARGS
        : "${POSTGRES_HOST_AUTH_METHOD:=}"

        if [ "$(id -u)" = 0 ]; then
            # As root: make the data directory (possibly a fresh tmpfs or
            # volume owned by root) the postgres user's, then run this
            # script again as that user. setpriv execs, so postgres ends up
            # as PID 1 and gets `docker stop`'s signal directly.
            mkdir -p "$PGDATA" /var/run/postgresql
            chmod 00700 "$PGDATA" || :
            chmod 03775 /var/run/postgresql
            find "$PGDATA" /var/run/postgresql \! -user postgres -exec chown postgres: '{}' +
            if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
                mkdir -p "$POSTGRES_INITDB_WALDIR"
                find "$POSTGRES_INITDB_WALDIR" \! -user postgres -exec chown postgres: '{}' +
                chmod 700 "$POSTGRES_INITDB_WALDIR"
            fi
            exec setpriv --reuid=postgres --regid=postgres --init-groups \
                env HOME=/var/lib/postgresql "$BASH_SOURCE" "$@"
        fi
        mkdir -p "$PGDATA"
        chmod 00700 "$PGDATA" || :

        # PG_VERSION is the marker of an initialised cluster: a volume that
        # already holds one is started as is.
        if [ -s "$PGDATA/PG_VERSION" ]; then
            echo
            echo 'PostgreSQL Database directory appears to contain a database; Skipping initialization'
            echo
        else
            init_cluster "$@"
        fi
    fi

    exec "$@"
}

main "$@"
