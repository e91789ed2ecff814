#!/bin/sh
# The convcache image's entrypoint.
#   (no arguments)            valkey-server /etc/valkey/convcache.conf
#   --name value ...          valkey-server /etc/valkey/convcache.conf --name value ...
#   other.conf [--name v]     valkey-server other.conf [--name v]
#   any other command         run as given (valkey-cli, sh, ...)
# Started as root (the default), it hands /data to the valkey user and runs the server as
# valkey; started with --user, it runs as that user and needs a writable /data.
set -e
conf=/etc/valkey/convcache.conf

case "$1" in
    -*) set -- valkey-server "$conf" "$@" ;;
    *.conf) set -- valkey-server "$@" ;;
esac

if [ "$1" = valkey-server ]; then
    if [ "$(id -u)" = 0 ]; then
        # A fresh volume, or one written by another uid: the server must own what it writes to.
        find /data \! -user valkey -exec chown valkey:valkey '{}' +
        exec setpriv --reuid=valkey --regid=valkey --clear-groups -- "$0" "$@"
    fi
    if [ ! -w /data ]; then
        echo >&2 "convcache: /data is not writable by uid $(id -u): run as root (the default) or fix the volume's owner"
        exit 1
    fi
    # Archives and snapshots readable by the server's user only.
    [ "$(umask)" = 0022 ] && umask 0077
    # VALKEY_EXTRA_FLAGS, as the valkey image reads it: more server arguments.
    # shellcheck disable=SC2086
    exec "$@" $VALKEY_EXTRA_FLAGS
fi
exec "$@"
