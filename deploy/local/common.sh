# Helpers shared by the local service scripts (kafka.sh, registry.sh). Sourced, not run.
#
# What lives here is what the scripts must do identically: where downloads are cached, how Maven
# is invoked, how a Java of the right version is found, how a started process is waited for and
# stopped. Each script sets LOG_PREFIX before sourcing.

CACHE="${EVALSTREAM_CACHE:-$HOME/.cache/evalstream}"
# Maven's local repository under the evalstream cache, not ~/.m2: every download our scripts make
# is then in one place that CI keeps between runs (.ci/run) and that one `rm -rf` resets.
MAVEN_REPO="${EVALSTREAM_MAVEN_REPO:-$CACHE/m2}"
# Pinned so that a fresh machine resolves the same plugin as ours (Maven 3.8's default, 2.8,
# unpacks tar.gz files with PAX headers wrongly).
DEPENDENCY_PLUGIN="org.apache.maven.plugins:maven-dependency-plugin:3.8.1"

log() { printf '%s: %s\n' "${LOG_PREFIX:-local}" "$*" >&2; }
die() { log "$*"; exit 1; }

# Maven in batch mode against the cached local repository. Its output goes to a log file that is
# shown only when it fails (quiet Maven 3.8 still prints terminal escape codes).
es_mvn() {
    command -v mvn >/dev/null || die "mvn not found (Debian/Ubuntu: apt-get install maven)"
    mkdir -p "$CACHE/run"
    local out="$CACHE/run/mvn-$$.log"
    if ! mvn -q -B -Dmaven.repo.local="$MAVEN_REPO" "$@" >"$out" 2>&1; then
        tail -n 40 "$out" >&2
        rm -f "$out"
        die "mvn $* failed"
    fi
    rm -f "$out"
}

# Major version of a java binary (8 for 1.8.x, 17 for 17.0.x), or 0 when it does not run.
es_java_major() {
    local line
    line=$("$1" -version 2>&1 | head -n1) || { echo 0; return; }
    line=${line#*\"}
    line=${line%%\"*}
    [[ $line == 1.* ]] && line=${line#1.}
    echo "${line%%[.+-]*}"
}

# Prints a java binary of at least major version $1: $JAVA_HOME, then `java` on PATH, then the
# newest JDK under /usr/lib/jvm (where Debian's packages and Temurin install). Fails with a
# message naming what was found.
es_find_java() {
    local min=$1 candidate found=()
    local candidates=()
    [[ -n "${JAVA_HOME:-}" ]] && candidates+=("$JAVA_HOME/bin/java")
    command -v java >/dev/null && candidates+=("$(command -v java)")
    while IFS= read -r candidate; do candidates+=("$candidate"); done < <(
        ls -d /usr/lib/jvm/*/bin/java 2>/dev/null | sort -rV)
    for candidate in "${candidates[@]}"; do
        [[ -x "$candidate" ]] || continue
        local major; major=$(es_java_major "$candidate")
        if ((major >= min)); then echo "$candidate"; return 0; fi
        found+=("$candidate ($major)")
    done
    die "need Java >= $min; found: ${found[*]:-none}. Set JAVA_HOME to a JDK $min+."
}

# Resident set size of a process in MiB (empty when it is gone).
es_rss_mib() {
    local kb
    kb=$(ps -o rss= -p "$1" 2>/dev/null | tr -d ' ') || true
    [[ -n "$kb" ]] && echo $((kb / 1024))
}

# Whether process $1 exists and is not a zombie (a killed process whose parent has not reaped it
# yet still answers kill -0).
es_alive() {
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n "$state" && "$state" != Z* ]]
}

# The pid in $1 when that process is alive, else nothing (and a stale file is removed).
es_live_pid() {
    local file=$1 pid
    [[ -f "$file" ]] || return 1
    pid=$(cat "$file")
    if [[ -n "$pid" ]] && es_alive "$pid"; then echo "$pid"; return 0; fi
    rm -f "$file"
    return 1
}

# es_wait_ready NAME PID TIMEOUT_S LOGFILE CHECK...: polls CHECK (a command) every 200 ms until it
# succeeds; fails early, showing the log's tail, when PID exits. Prints the seconds it took.
es_wait_ready() {
    local name=$1 pid=$2 timeout=$3 logfile=$4
    shift 4
    local start now
    start=$(date +%s%N)
    while true; do
        if "$@" >/dev/null 2>&1; then
            now=$(date +%s%N)
            printf '%d.%02d' $(((now - start) / 1000000000)) $((((now - start) / 10000000) % 100))
            return 0
        fi
        if ! es_alive "$pid"; then
            log "$name exited during start-up; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        now=$(date +%s%N)
        if (((now - start) / 1000000000 >= timeout)); then
            log "$name did not become ready within ${timeout} s; last lines of $logfile:"
            tail -n 30 "$logfile" >&2 || true
            return 1
        fi
        sleep 0.2
    done
}

# es_stop NAME PIDFILE TIMEOUT_S: SIGCONT (a paused process cannot act on SIGTERM), SIGTERM, wait
# for the exit, SIGKILL after TIMEOUT_S. Idempotent.
es_stop() {
    local name=$1 file=$2 timeout=$3 pid
    pid=$(es_live_pid "$file") || { log "$name is not running (no live pid in $file)"; return 0; }
    kill -CONT "$pid" 2>/dev/null || true
    kill -TERM "$pid" 2>/dev/null || true
    local waited=0
    while es_alive "$pid"; do
        if ((waited >= timeout * 10)); then
            log "$name (pid $pid) did not exit within ${timeout} s of SIGTERM; sending SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            break
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    rm -f "$file"
    log "stopped $name (pid $pid)"
}
