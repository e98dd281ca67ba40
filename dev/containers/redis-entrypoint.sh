#!/bin/sh
# The redis image's contract: `redis-server ARGS` without a config file listens on every interface
# (protected mode off, as the official image does), runs as user redis in /data.
set -eu
if [ "${1:-}" = redis-server ]; then
    shift
    case "${1:-}" in
        *.conf) ;;
        *) set -- --protected-mode no "$@" ;;
    esac
    exec setpriv --reuid=redis --regid=redis --init-groups redis-server "$@"
fi
exec "$@"
