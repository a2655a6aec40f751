#!/usr/bin/env bash
# start.sh DIR: Apache Traffic Server 9.2 (Debian `trafficserver`) as a plain forward proxy on
# 127.40.0.21:3128, in the foreground, with its runtime, log and config copies under DIR.
#
#   ATS_THREADS=N       event (ET_NET) threads, proxy.config.exec_thread.limit (default 1)
#   ATS_ACCESS_LOG=on   Squid-format access log DIR/log/squid.log (default); off = errors only
#   ATS_ADDR=A:P        listen address (default 127.40.0.21:3128)
#   ATS_USER=U          user traffic_server drops to (default trafficserver, from the package)
#
#   ATS_PROXY_PROTOCOL=on  the port takes a PROXY v1/v2 header first, from 127.0.0.0/8 only
#                       (behind HAProxy's send-proxy-v2, as the Squids in bench/run)
#
# traffic_server is exec'd, so this script's PID is traffic_server's (stop it with SIGTERM).
# The known-good peer set-up this comes from, with what it took to find: the team's shared
# peers directory (peers/ats/README.md there); its settings are explained in records.config.
# Nothing outside DIR is written; /etc/trafficserver is only read (error-page templates).
set -euo pipefail

DIR=${1:?usage: start.sh DIR   (runtime/log/config directory; created if missing)}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ATS_THREADS=${ATS_THREADS:-1}
ATS_ACCESS_LOG=${ATS_ACCESS_LOG:-on}
ATS_ADDR=${ATS_ADDR:-127.40.0.21:3128}
ATS_USER=${ATS_USER:-trafficserver}
ATS_PROXY_PROTOCOL=${ATS_PROXY_PROTOCOL:-off}

command -v traffic_server >/dev/null || {
    echo "start.sh: traffic_server not found (apt-get install trafficserver)" >&2
    exit 1
}
[[ $ATS_THREADS =~ ^[1-9][0-9]*$ ]] || { echo "start.sh: ATS_THREADS must be >= 1" >&2; exit 2; }
[[ $ATS_ADDR =~ ^([0-9.]+):([0-9]+)$ ]] || { echo "start.sh: ATS_ADDR must be IPv4:PORT" >&2; exit 2; }
LISTEN_IP=${BASH_REMATCH[1]} LISTEN_PORT=${BASH_REMATCH[2]}

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
mkdir -p "$DIR/etc" "$DIR/run" "$DIR/log" "$DIR/cache"

# The config files this directory provides, copied so ATS can never write into the shared copy.
for f in records.config remap.config ip_allow.yaml storage.config plugin.config logging.yaml; do
    cp "$HERE/$f" "$DIR/etc/$f"
done
# Files traffic_server 9.2 reads at start-up that this set-up leaves empty (absent ones only
# cause warnings, but empty ones keep diags.log clean): no parent proxies, no TLS termination,
# no SOCKS, no split DNS, no cache rules, one default volume, no hosting rules.
for f in parent.config ssl_multicert.config socks.config splitdns.config cache.config \
    hosting.config volume.config; do
    : >"$DIR/etc/$f"
done
printf 'sni: []\n' >"$DIR/etc/sni.yaml"
printf 'strategies: []\n' >"$DIR/etc/strategies.yaml"

# A runroot: binaries and plugins from the package, everything writable under DIR.
cat >"$DIR/runroot.yaml" <<EOF
prefix: /usr
exec_prefix: /usr
bindir: /usr/bin
sbindir: /usr/sbin
sysconfdir: $DIR/etc
datadir: $DIR/cache
includedir: /usr/include
libdir: /usr/lib/trafficserver
libexecdir: /usr/lib/trafficserver/modules
localstatedir: $DIR
runtimedir: $DIR/run
logdir: $DIR/log
cachedir: $DIR/cache
EOF

# traffic_server starts as root and drops to proxy.config.admin.user_id: it must own DIR.
if ((EUID == 0)); then
    chown -R "$ATS_USER:" "$DIR"
    # A DIR below a directory that user cannot search (e.g. /root, mode 700) fails later with
    # "Can't acquire lockfile .../run/server.lock (Permission denied)": say so now.
    if command -v runuser >/dev/null && ! runuser -u "$ATS_USER" -- test -w "$DIR/run"; then
        echo "start.sh: user $ATS_USER cannot write $DIR/run (is a parent directory not searchable by it? use a DIR under /tmp)" >&2
        exit 1
    fi
fi

# Per-run overrides: ATS 9 reads PROXY_CONFIG_<NAME> (dots as underscores, upper case) as the
# value of proxy.config.<name>, over records.config.
export PROXY_CONFIG_EXEC_THREAD_LIMIT=$ATS_THREADS
case $ATS_PROXY_PROTOCOL in
    on)
        export PROXY_CONFIG_HTTP_SERVER_PORTS="$LISTEN_PORT:ipv4:pp:ip-in=$LISTEN_IP"
        export PROXY_CONFIG_HTTP_PROXY_PROTOCOL_ALLOWLIST=127.0.0.0/8
        ;;
    off) export PROXY_CONFIG_HTTP_SERVER_PORTS="$LISTEN_PORT:ipv4:ip-in=$LISTEN_IP" ;;
    *) echo "start.sh: ATS_PROXY_PROTOCOL must be on or off" >&2; exit 2 ;;
esac
export PROXY_CONFIG_ADMIN_USER_ID=$ATS_USER
case $ATS_ACCESS_LOG in
    on) export PROXY_CONFIG_LOG_LOGGING_ENABLED=3 ;;
    off) export PROXY_CONFIG_LOG_LOGGING_ENABLED=1 ;;
    *) echo "start.sh: ATS_ACCESS_LOG must be on or off" >&2; exit 2 ;;
esac
export TS_RUNROOT=$DIR/runroot.yaml

exec traffic_server --run-root="$DIR/runroot.yaml"
