#!/usr/bin/env bash
# Builds the Temporal binaries kubemend runs against, from pinned Go modules, into
# .tools/bin (git-ignored). Nothing is downloaded at run time: the Temporal CLI's own
# auto-download and the Java test server cannot reach the internet here.
#
# A binary is rebuilt only when its version stamp differs, so a second run costs ~0 s;
# the Go module and build caches (GOMODCACHE, GOCACHE) make a rebuild after a version
# bump cheap too.
set -euo pipefail

TEMPORAL_CLI_VERSION=v1.5.1       # last CLI tag whose go.mod has no replace line
TEMPORAL_SERVER_VERSION=v1.29.1   # the server the CLI above embeds: shares the Go cache

root=$(cd "$(dirname "$0")/.." && pwd)
bin="$root/.tools/bin"
mkdir -p "$bin"

build() { # name module@version
  local name=$1 pkg=$2
  local stamp="$bin/.$name.version"
  if [ -x "$bin/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$pkg" ]; then
    echo "build-tools: $name up to date ($pkg)"
    return
  fi
  echo "build-tools: building $name from $pkg"
  local start=$SECONDS tmp
  tmp=$(mktemp -d)
  GOBIN="$tmp" go install "$pkg"
  mv "$tmp"/* "$bin/$name"
  rmdir "$tmp"
  echo "$pkg" > "$stamp"
  echo "build-tools: $name built in $((SECONDS - start)) s"
}

command -v go >/dev/null || { echo "build-tools: go is not installed" >&2; exit 1; }

build temporal            "github.com/temporalio/cli/cmd/temporal@$TEMPORAL_CLI_VERSION"
build temporal-server     "go.temporal.io/server/cmd/server@$TEMPORAL_SERVER_VERSION"
build temporal-sql-tool   "go.temporal.io/server/cmd/tools/sql@$TEMPORAL_SERVER_VERSION"

# The PostgreSQL schema ships in the server module, which go install left in the module cache.
schema="$(go env GOMODCACHE)/go.temporal.io/server@$TEMPORAL_SERVER_VERSION/schema/postgresql/v12"
[ -d "$schema" ] || { echo "build-tools: schema not found at $schema" >&2; exit 1; }
rm -rf "$root/.tools/schema"
mkdir -p "$root/.tools/schema"
cp -r "$schema" "$root/.tools/schema/postgresql"
chmod -R u+w "$root/.tools/schema"
