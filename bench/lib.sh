# shellcheck shell=bash
# bench/lib.sh: helpers shared by bench/run, bench/proxy-vs-squid and bench/lb-vs-haproxy.
#
# Source it after setting BENCH_NAME (the prefix of every log line). The noise guard at the end
# (wait_quiet, attempt, spoilt) also needs, from the script: WORK (a scratch directory),
# QUIET_MAX, QUIET_WAIT, NOISE_RETRIES, CLK_TCK, and a function `ours_ticks` that prints the CPU
# ticks of every long-lived process the benchmark itself runs (daemons, origins).

log() { printf '[%s] %s\n' "${BENCH_NAME:-bench}" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# need_packages CMD:PACKAGE...: installs with apt-get the packages whose command is missing.
# Installing squid, nginx or haproxy must not start their system services (a Debian squid
# would take port 3128 on every address): a policy-rc.d that forbids it is put in place for
# the install unless one exists, and removed after.
need_packages() {
    local pair cmd pkg policy=/usr/sbin/policy-rc.d created_policy=0 rc=0
    local -a missing=()
    for pair in "$@"; do
        cmd=${pair%%:*} pkg=${pair#*:}
        command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || die "missing: ${missing[*]}; install them (apt-get install -y ${missing[*]}) or run as root"
    log "installing ${missing[*]}"
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    { apt-get update >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}" >&2; } || rc=$?
    if ((created_policy)); then rm -f "$policy"; fi
    ((rc == 0)) || die "apt-get install ${missing[*]} failed"
}

# build_proxyfleet [PACKAGE...]: sets PF_BIN. Uses $PF_BIN when the caller set it, else builds
# `cargo build --release -p proxyfleet` in ROOT. Extra packages are built in the same run.
build_proxyfleet() {
    local -a pkgs=()
    local p
    for p in "$@"; do pkgs+=(-p "$p"); done
    if [[ -n ${PF_BIN:-} ]]; then
        log "using PF_BIN=$PF_BIN (not building proxyfleet)"
        if ((${#pkgs[@]})); then
            (cd "$ROOT" && cargo build --release "${pkgs[@]}" >&2) || die "cargo build --release ${pkgs[*]} failed"
        fi
    else
        log "building proxyfleet (release)"
        (cd "$ROOT" && cargo build --release -p proxyfleet "${pkgs[@]}" >&2) ||
            die "cargo build --release -p proxyfleet ${pkgs[*]} failed"
        PF_BIN=$ROOT/target/release/proxyfleet
    fi
    [[ -x $PF_BIN ]] || die "$PF_BIN is not an executable"
}

# --- measuring -------------------------------------------------------------------------------

# CPU ticks (utime+stime, all threads) of a process; 0 if it is gone.
cpu_ticks() {
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || {
        echo 0
        return
    }
    # Fields after "(comm) ": state is 1st, utime 12th, stime 13th.
    awk '{ print $12 + $13 }' <<<"${stat##*) }"
}
# Busy CPU ticks of the whole machine (all CPUs; idle and iowait excluded).
machine_busy_ticks() {
    awk '$1 == "cpu" { print $2 + $3 + $4 + $7 + $8; exit }' /proc/stat
}
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo 0; }
# Proportional set size (KiB): shared pages (the binary, libraries) split between the processes
# sharing them, so summing it over processes counts each page once.
pss_kib() { awk '/^Pss:/ { print $2; exit }' "/proc/$1/smaps_rollup" 2>/dev/null || echo 0; }
now_us() { echo $(($(date +%s%N) / 1000)); }
# TCP sockets in TIME_WAIT on the machine (/proc/net/sockstat).
tw_count() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "tw") print $(i + 1) }' /proc/net/sockstat; }

# field NAME LINE: the value of NAME=... in a RESULT line (bench.lua's output).
field() { sed -n "s/.*[[:space:]]$1=\([0-9.]*\).*/\1/p" <<<"$2"; }
bc_div() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f", (b == 0 ? 0 : a / b) }'; }
# median: of the numbers on stdin, one per line ("nan" if none).
median() {
    sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "nan"; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ms() { awk -v us="$1" 'BEGIN { printf "%.2f", us / 1000 }'; }

# --- a shared machine: the noise guard -------------------------------------------------------
# Another program busy on the machine (a build, say) skews every figure: "other" CPU is the
# machine's busy time minus the benchmark's own daemons' (ours_ticks) and its load generators'
# (this shell's reaped children, `times`). It also holds interrupt time the kernel charges to
# no process, so it is not 0 on an idle machine -- unless the script sets NOISE_IRQ=0: then
# interrupt and softirq time are left out, as on loopback they are mostly the benchmark's own
# traffic (bulk transfers spend ~20 % of their CPU there), charged to no process.
noise_busy_ticks() {
    if [[ ${NOISE_IRQ:-1} == 0 ]]; then
        awk '$1 == "cpu" { print $2 + $3 + $4; exit }' /proc/stat
    else
        machine_busy_ticks
    fi
}

# CPU seconds (user+sys) of this shell's reaped children so far: the load generators (wrk,
# curl, ...) and their wrappers. `times` runs in this shell, never in a $(...) subshell.
CHILD_CPU=0
children_cpu() {
    times >"$WORK/times.out"
    CHILD_CPU=$(awk 'NR == 2 { s = 0; for (i = 1; i <= 2; i++) { split($i, a, "m"); s += a[1] * 60 + a[2] }
        printf "%.3f", s }' "$WORK/times.out")
}
# noise_begin / noise_end: around one measurement; noise_end sets OTHER_S (CPU-s).
noise_begin() {
    children_cpu
    NOISE0=("$(noise_busy_ticks)" "$(ours_ticks)" "$CHILD_CPU")
}
noise_end() {
    local m1 o1
    children_cpu
    m1=$(noise_busy_ticks) o1=$(ours_ticks)
    OTHER_S=$(awk -v m=$((m1 - NOISE0[0])) -v o=$((o1 - NOISE0[1])) -v c0="${NOISE0[2]}" \
        -v c1="$CHILD_CPU" -v hz="$CLK_TCK" 'BEGIN { v = (m - o) / hz - (c1 - c0); printf "%.2f", (v < 0 ? 0 : v) }')
}
# noisy CPU_S WALL_US: true when other programs used more than QUIET_MAX cores.
noisy() {
    awk -v o="$1" -v w="$2" -v q="$QUIET_MAX" 'BEGIN { exit !(q > 0 && w > 0 && o / (w / 1e6) > q) }'
}
# wait_quiet: until other programs use fewer than QUIET_MAX cores (1 s samples of the machine's
# load), or QUIET_WAIT seconds pass.
wait_quiet() {
    awk -v q="$QUIET_MAX" 'BEGIN { exit !(q > 0) }' || return 0
    local deadline=$((SECONDS + QUIET_WAIT)) said=0 t0
    while :; do
        t0=$(now_us)
        noise_begin
        sleep 1 # the length of one load sample (a measurement, not a synchronization)
        noise_end
        if ! noisy "$OTHER_S" $(($(now_us) - t0)); then
            if ((said)); then log "machine quiet again"; fi
            return 0
        fi
        if ((SECONDS >= deadline)); then
            log "warning: other programs still use ${OTHER_S} cores after ${QUIET_WAIT}s; measuring anyway"
            return 0
        fi
        if ((!said)); then
            log "machine busy: other programs use ${OTHER_S} cores (> $QUIET_MAX); waiting up to ${QUIET_WAIT}s"
            said=1
        fi
    done
}
# attempt CMD...: runs a measurement on a quiet machine; the measurement sets DISCARDED=1 (and
# records nothing) when other load spoilt it, and is then redone, at most NOISE_RETRIES times.
DISCARDED=0
LAST_TRY=1
REDONE=0
attempt() {
    local try=0
    while :; do
        wait_quiet
        LAST_TRY=$((try >= NOISE_RETRIES))
        DISCARDED=0
        "$@"
        if ((!DISCARDED)); then return 0; fi
        REDONE=$((REDONE + 1))
        try=$((try + 1))
    done
}
# spoilt WHAT WALL_US: true (after logging) when this measurement must be redone.
spoilt() {
    noisy "$OTHER_S" "$2" || return 1
    if ((LAST_TRY)); then
        log "warning: $1: other programs used ${OTHER_S} CPU-s; kept (no retries left)"
        return 1
    fi
    log "$1: other programs used ${OTHER_S} CPU-s (> $QUIET_MAX cores); redoing it"
    DISCARDED=1
    return 0
}
