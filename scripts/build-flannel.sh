#!/usr/bin/env bash
# Builds flanneld (github.com/flannel-io/flannel, root package) at the pinned release into
# .tools/bin/flanneld, the binary the lab runs inside its nodes. Skipped when the stamp says
# it is current.
#
# Not a plain `go install`: flannel's main.go imports its tencent-vpc backend
# unconditionally, and that backend's SDK module
# (github.com/tencentcloud/tencentcloud-sdk-go/tencentcloud/vpc) is refused by the Go module
# proxy here. tools/flannel is a wrapper module that requires flannel at the pinned release
# and replaces only that module with a local one whose every call fails with "not in this
# build" (tools/flannel/tencent-vpc-unavailable/). Everything else is upstream, unchanged.
# `--regen` rewrites the wrapper's requirements after FLANNEL_VERSION changes.
# flannel needs cgo on amd64 (its UDP backend), as its Makefile builds it.
set -euo pipefail

FLANNEL_VERSION=v0.28.10

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
mod="$root/tools/flannel"
mkdir -p "$bin"

command -v go >/dev/null || { echo "build-flannel: go is not installed" >&2; exit 1; }
command -v gcc >/dev/null || { echo "build-flannel: gcc is not installed (flanneld needs cgo)" >&2; exit 1; }

if [ "${1:-}" = "--regen" ]; then
  (cd "$mod" && go get "github.com/flannel-io/flannel@$FLANNEL_VERSION" \
      && go get -tool "github.com/flannel-io/flannel@$FLANNEL_VERSION" && go mod tidy)
fi

ldflags="-X github.com/flannel-io/flannel/pkg/version.Version=$FLANNEL_VERSION"
stub_sum=$(cat "$mod"/tencent-vpc-unavailable/go.mod "$mod"/tencent-vpc-unavailable/v20170312/*.go | sha256sum | cut -c1-16)
want="github.com/flannel-io/flannel@$FLANNEL_VERSION $(sha256sum "$mod/go.sum" | cut -c1-16) $stub_sum"
stamp="$bin/.flanneld.version"
if [ -x "$bin/flanneld" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$want" ]; then
  echo "build-flannel: flanneld up to date ($FLANNEL_VERSION)"
  exit 0
fi
echo "build-flannel: building flanneld $FLANNEL_VERSION"
start=$SECONDS
tmp="$bin/.flanneld.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$mod" && CGO_ENABLED=1 go build -trimpath -ldflags "$ldflags" -o "$tmp" github.com/flannel-io/flannel)
mv "$tmp" "$bin/flanneld"
echo "$want" > "$stamp"
echo "build-flannel: flanneld built in $((SECONDS - start)) s"
