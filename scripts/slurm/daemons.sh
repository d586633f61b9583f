# Shared by slurm_up.sh and slurm_down.sh (sourced, not run): safe daemon stop by pidfile.

# running PID NAME: the process exists, is not a zombie, and its command name is NAME.
# (A pidfile may be stale and its PID reused by another program: never trust the number alone.)
running() {
    local state comm
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [ -n "$state" ] && [ "${state:0:1}" != Z ] || return 1
    comm=$(ps -o comm= -p "$1" 2>/dev/null)
    [ "$comm" = "$2" ]
}

# stop_pidfile FILE NAME: stop the daemon named in FILE (TERM, then KILL after 5 s), remove FILE.
stop_pidfile() {
    local pid
    if [ -s "$1" ]; then
        pid=$(cat "$1")
        if running "$pid" "$2"; then
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 50); do running "$pid" "$2" || break; sleep 0.1; done
            if running "$pid" "$2"; then kill -9 "$pid" 2>/dev/null || true; fi
        fi
    fi
    rm -f "$1"
}
