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

init_cluster() {
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

    local waldir=()
    if [ -n "${POSTGRES_INITDB_WALDIR:-}" ]; then
        waldir=(--waldir "$POSTGRES_INITDB_WALDIR")
    fi
    # POSTGRES_INITDB_ARGS is a shell-quoted string in the official image,
    # hence eval. --pwfile rejects an empty file, hence the newline.
    eval 'initdb --username="$POSTGRES_USER" --pwfile=<(printf "%s\n" "$POSTGRES_PASSWORD") '"${POSTGRES_INITDB_ARGS:-}"' "${waldir[@]}"'

    # Local (socket) connections keep initdb's `trust`; every TCP connection
    # from anywhere needs the password, hashed as password_encryption says
    # (scram-sha-256 on PostgreSQL 15).
    local args=("$@")
    [ "${args[0]}" = postgres ] && args=("${args[@]:1}")
    : "${POSTGRES_HOST_AUTH_METHOD:=$(postgres -C password_encryption "${args[@]}")}"
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

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
