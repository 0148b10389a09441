#!/usr/bin/env bash
# Builds the tools that check the deployment files, once, into .cache/tools/bin (kept between runs
# like the Maven jars of scripts/test-services.sh; rebuilt only when a version or a checker's source
# changes):
#   kustomize          sigs.k8s.io/kustomize/kustomize/v5 (renders deploy/kubernetes overlays)
#   actionlint         github.com/rhysd/actionlint (checks .github/workflows)
#   k8s-check          scripts/tools/k8s-check: strict decoding of manifests into k8s.io/api types
#   dockerfile-check   scripts/tools/dockerfile-check: BuildKit's Dockerfile parser, as JSON
#   compose-check      scripts/tools/compose-check: `docker compose config` with compose-go, the
#                      library Docker Compose loads files with (the docker CLI here has no compose plugin)
#   jaeger             github.com/jaegertracing/jaeger/cmd/jaeger (all-in-one: OTLP in, query API
#                      out) for the tracing test (services/scheduler/test/e2e/tracing-jaeger.test.ts);
#                      about 4.5 minutes the first time with the module downloads
# Needs Go (1.26) and the Go module proxy. The tests (deploy/test) use these binaries: under CI=true
# they fail when one is missing, locally they skip.
#
#   scripts/build-tools.sh          build what is missing or stale
#   scripts/build-tools.sh --print  print the bin folder
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="$ROOT/.cache/tools"
BIN="$CACHE/bin"
# kustomize v5.8.2 is the CLI release built on kustomize/api v0.21.2, the newest that Go 1.26
# builds (v5.8.3 and api v0.21.3 need Go 1.27).
KUSTOMIZE_VERSION="${KUSTOMIZE_VERSION:-v5.8.2}"
ACTIONLINT_VERSION="${ACTIONLINT_VERSION:-v1.7.12}"
JAEGER_VERSION="${JAEGER_VERSION:-v1.75.0}"

if [[ "${1:-}" == "--print" ]]; then
  echo "$BIN"
  exit 0
fi

log() { echo "build-tools: $*" >&2; }
command -v go >/dev/null || {
  log "go not found (Go 1.26 is needed to build kustomize, actionlint and the checkers)"
  exit 1
}
mkdir -p "$BIN"

# install NAME STAMP COMMAND...: runs COMMAND unless BIN/NAME exists with the same stamp.
install() {
  local name="$1" stamp="$2"
  shift 2
  if [[ -x "$BIN/$name" && -f "$BIN/.$name.stamp" && "$(cat "$BIN/.$name.stamp")" == "$stamp" ]]; then
    return 0
  fi
  log "building $name ($stamp)"
  "$@"
  echo "$stamp" >"$BIN/.$name.stamp"
}

install kustomize "$KUSTOMIZE_VERSION" \
  env GOBIN="$BIN" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION"
install actionlint "$ACTIONLINT_VERSION" \
  env GOBIN="$BIN" go install "github.com/rhysd/actionlint/cmd/actionlint@$ACTIONLINT_VERSION"

# Jaeger's go.mod has replace directives, which `go install module@version` refuses: build it in
# its downloaded module, where they apply.
build_jaeger() {
  local dir
  dir="$(go mod download -json "github.com/jaegertracing/jaeger@$JAEGER_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  go build -C "$dir" -o "$BIN/jaeger" ./cmd/jaeger
}
install jaeger "$JAEGER_VERSION" build_jaeger

checkers_stamp="$(cd "$ROOT/scripts/tools" && cat go.mod go.sum ./*/*.go | sha256sum | cut -c1-16)"
install k8s-check "$checkers_stamp" go build -C "$ROOT/scripts/tools" -o "$BIN/" ./k8s-check
install dockerfile-check "$checkers_stamp" go build -C "$ROOT/scripts/tools" -o "$BIN/" ./dockerfile-check
install compose-check "$checkers_stamp" go build -C "$ROOT/scripts/tools" -o "$BIN/" ./compose-check
log "tools ready in ${BIN#"$ROOT"/}: $(cd "$BIN" && ls | tr '\n' ' ')"
