#!/usr/bin/env bash
# Builds the containernetworking plugins the lab's nodes run (bridge, host-local, loopback)
# from the pinned Go module into .tools/cni/bin (git-ignored), the directory the lab passes
# as CNI_PATH. Skipped when the stamp says the binaries are current.
# v1.10.0's go.mod asks for Go 1.26.8; earlier tags lack the CNI GC verb.
set -euo pipefail

CNI_PLUGINS_VERSION=v1.10.0
PLUGINS=(main/bridge ipam/host-local main/loopback)

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/cni/bin"
stamp="$bin/.plugins.version"
want="github.com/containernetworking/plugins@$CNI_PLUGINS_VERSION ${PLUGINS[*]}"

command -v go >/dev/null || { echo "build-cni: go is not installed" >&2; exit 1; }
GO_NEEDED=1.26.8   # v1.10.0's go.mod
have=$(go env GOVERSION); have=${have#go}
if [ "$(printf '%s\n%s\n' "$GO_NEEDED" "$have" | sort -V | head -n1)" != "$GO_NEEDED" ]; then
  echo "build-cni: containernetworking/plugins $CNI_PLUGINS_VERSION needs Go $GO_NEEDED or later; go is $have" >&2
  exit 1
fi

current=1
for p in "${PLUGINS[@]}"; do [ -x "$bin/${p##*/}" ] || current=0; done
if [ "$current" = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "build-cni: CNI plugins up to date ($want)"
  exit 0
fi

echo "build-cni: building CNI plugins ($want)"
start=$SECONDS
mkdir -p "$bin"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
pkgs=()
for p in "${PLUGINS[@]}"; do pkgs+=("github.com/containernetworking/plugins/plugins/$p@$CNI_PLUGINS_VERSION"); done
GOBIN="$tmp" go install "${pkgs[@]}"
for p in "${PLUGINS[@]}"; do mv "$tmp/${p##*/}" "$bin/${p##*/}"; done
echo "$want" > "$stamp"
echo "build-cni: CNI plugins built in $((SECONDS - start)) s"
