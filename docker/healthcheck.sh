#!/bin/sh
# HEALTHCHECK: the server answers PING. Over its unix socket (set in convcache.conf), so any
# --port or --bind works; a config of your own without the socket is asked on TCP port
# $VALKEY_PORT (default 6379). With a password, give it as VALKEYCLI_AUTH in the environment.
if [ -S /run/valkey/valkey.sock ]; then
    reply=$(valkey-cli -s /run/valkey/valkey.sock ping 2>&1)
else
    reply=$(valkey-cli -p "${VALKEY_PORT:-6379}" ping 2>&1)
fi
[ "$reply" = PONG ] && exit 0
echo "$reply"
exit 1
