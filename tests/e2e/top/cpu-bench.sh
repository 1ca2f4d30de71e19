#!/bin/sh
# CPU use of `zdctl top` at a 1 s interval while the watched service holds N established
# loopback connections (default 10000). Prints one line with the figure.
#
#   cargo build --workspace --bins        # or --release, then BIN=target/release
#   sh tests/e2e/top/cpu-bench.sh          # N=10000 DURATION=30 BIN=target/debug
#
# It starts `zdctl run` on the fixture service in a temp dir, opens N idle keep-alive
# connections to it from one python3 process, runs `zdctl top api` in a private tmux server
# (120x40) and reads top's utime+stime from /proc/PID/stat before and after DURATION seconds.
# Everything it started is killed on exit. Loopback only. To measure with the service alone
# in its network namespace (so that other programs' connections do not move the TCP counters
# that tell the inspector to re-read the connections):
#   unshare -rn sh -c 'ip link set lo up && exec sh tests/e2e/top/cpu-bench.sh'

set -eu
N=${N:-10000}
SECONDS_RUN=${DURATION:-30}
BIN=$(cd "${BIN:-target/debug}" && pwd)
dir=$(mktemp -d)
sock="zdtopbench-$$"
export ZDCTL_RUNTIME_DIR="$dir/run" ZDCTL_CONFIG_DIR="$dir/services.d"
mkdir -p "$ZDCTL_RUNTIME_DIR" "$ZDCTL_CONFIG_DIR"
sup=""
clients=""
cleanup() {
    tmux -L "$sock" kill-server 2>/dev/null || true
    [ -n "$clients" ] && kill "$clients" 2>/dev/null || true
    [ -n "$sup" ] && kill "$sup" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT INT TERM

printf 'command: ["%s"]\nlisten:\n  - http=127.0.0.1:0\n' "$BIN/zd-fixture" \
    >"$ZDCTL_CONFIG_DIR/api.yaml"
# The fixture needs an fd per connection.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
"$BIN/zdctl" run api >"$dir/run.log" 2>&1 &
sup=$!
addr=""
i=0
while [ -z "$addr" ] && [ $i -lt 300 ]; do
    addr=$("$BIN/zdctl" status api --json 2>/dev/null |
        python3 -c 'import json,sys; print(json.load(sys.stdin)["listeners"][0]["address"])' \
            2>/dev/null || true)
    i=$((i + 1))
    [ -z "$addr" ] && sleep 0.1
done
[ -n "$addr" ] || { echo "the service never answered"; cat "$dir/run.log"; exit 1; }

python3 - "$addr" "$N" "$dir/ready" <<'EOF' &
import resource, socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
n = int(sys.argv[2])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
# Each from its own source address in 127.0.5.0/24, so that other programs' TIME_WAIT
# sockets on 127.0.0.1 cannot use up the ephemeral ports.
conns = [
    socket.create_connection((host, int(port)), source_address=(f"127.0.5.{1 + i % 250}", 0))
    for i in range(n)
]
open(sys.argv[3], "w").close()
time.sleep(600)  # bounded: the script kills it long before
EOF
clients=$!
i=0
while [ ! -e "$dir/ready" ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i + 1)); done
[ -e "$dir/ready" ] || { echo "could not open $N connections"; exit 1; }

tmux -L "$sock" new-session -d -x 120 -y 40 \
    "exec env ZDCTL_RUNTIME_DIR='$ZDCTL_RUNTIME_DIR' '$BIN/zdctl' top api --interval 1s"
pid=$(tmux -L "$sock" display -p '#{pane_pid}')
# Wait until top shows every connection (the first snapshots read every fd table).
i=0
until tmux -L "$sock" capture-pane -p | grep -q "connections of generation 1: $N"; do
    i=$((i + 1))
    [ $i -lt 600 ] || { tmux -L "$sock" capture-pane -p; echo "top never showed $N"; exit 1; }
    sleep 0.1
done
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
sys_ticks() { awk '{print $15}' "/proc/$pid/stat"; }
hz=$(getconf CLK_TCK)
before=$(ticks)
sys_before=$(sys_ticks)
sleep "$SECONDS_RUN"
after=$(ticks)
sys_after=$(sys_ticks)
tmux -L "$sock" capture-pane -p >"$dir/screen.txt"
grep -q "connections of generation 1: $N" "$dir/screen.txt" || { cat "$dir/screen.txt"; exit 1; }
echo "zdctl top, $N connections, 1s interval, ${SECONDS_RUN}s: $((after - before)) ticks of 1/$hz s =" \
    "$(awk -v t=$((after - before)) -v hz="$hz" -v s="$SECONDS_RUN" \
        'BEGIN { printf "%.2f%% of one core", 100 * t / hz / s }')" \
    "($((sys_after - sys_before)) of them in the kernel)"
