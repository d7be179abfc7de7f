#!/bin/sh
# Entrypoint of genesis-local/redis:7, a drop-in for the official
# redis:7-alpine image built from Debian packages: same command forms, runs
# as the redis user, and protected mode off by default.
set -e

# `docker run IMAGE --appendonly yes` or `... /path/redis.conf` mean
# `redis-server ...`.
if [ "${1#-}" != "$1" ] || [ "${1%.conf}" != "$1" ]; then
    set -- redis-server "$@"
fi

if [ "$1" = redis-server ] && [ "$(id -u)" = 0 ]; then
    # As root: hand the working directory (/data, maybe a fresh volume) to
    # redis, then run this script again as redis. setpriv execs, so
    # redis-server ends up as PID 1 and gets `docker stop`'s signal.
    find . \! -user redis -exec chown redis: '{}' +
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = redis-server ]; then
    # The official image compiles protected mode off: without it Redis
    # refuses clients from other containers when no password is set.
    # Debian's build defaults to on, so turn it off here unless a config file
    # sets it, since a config file's setting wins in the official image.
    # Options after the config file override it, so ours go right after it.
    shift
    case ${1:-} in
        -)
            # Configuration read from stdin: leave it alone.
            set -- redis-server "$@"
            ;;
        '' | -*)
            set -- redis-server --protected-mode no "$@"
            ;;
        *)
            conf=$1
            shift
            if grep -qsE '^[[:space:]]*protected-mode[[:space:]]' "$conf"; then
                set -- redis-server "$conf" "$@"
            else
                set -- redis-server "$conf" --protected-mode no "$@"
            fi
            ;;
    esac
fi

# Files Redis creates (dump.rdb, appendonly) are private, as in the official
# image, unless the caller chose a umask.
if [ "$(umask)" = 0022 ]; then
    umask 0077
fi

exec "$@"
