#!/usr/bin/env bash
# Installs what kubemend's demo and tests need, skipping whatever is already in place:
#   - Debian packages: openssh-server (real sshd for tests and the demo), iproute2,
#     docker-compose (parses docker-compose.yml offline; no engine is needed), socat and
#     util-linux (the lab), systemd (systemd-machine-id-setup, run inside lab nodes);
#   - node_modules, at the versions package-lock.json pins, when the lockfile changed since
#     the last install;
#   - the Temporal binaries, built from pinned Go modules (scripts/build-tools.sh);
#   - the lab's Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager,
#     kube-scheduler, kwok) from pinned Go modules, and Debian's kubectl (scripts/build-k8s.sh);
#   - the CNI plugins the lab's nodes run (bridge, host-local, loopback) into .tools/cni/bin
#     (scripts/build-cni.sh);
#   - flanneld, which the lab runs inside its nodes (scripts/build-flannel.sh; it writes
#     its iptables rules in the node's network namespace, so iptables is needed);
#   - ping (iputils-ping): lab nodes run the host's binaries, and default-route pings the
#     gateway from the node.
# A second run takes about a second.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

need_pkgs=()
command -v /usr/sbin/sshd >/dev/null 2>&1 || need_pkgs+=(openssh-server)
command -v ssh-keygen >/dev/null 2>&1 || need_pkgs+=(openssh-client)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
command -v psql >/dev/null 2>&1 || need_pkgs+=(postgresql-client)
command -v socat >/dev/null 2>&1 || need_pkgs+=(socat)           # the lab's loopback forwarders
command -v nsenter >/dev/null 2>&1 || need_pkgs+=(util-linux)
command -v systemd-machine-id-setup >/dev/null 2>&1 || need_pkgs+=(systemd)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)               # the lab's CA and certificates
command -v iptables >/dev/null 2>&1 || need_pkgs+=(iptables)             # flanneld inside lab nodes
command -v ping >/dev/null 2>&1 || need_pkgs+=(iputils-ping)             # default-route pings the gateway from a lab node
if [ ${#need_pkgs[@]} -gt 0 ]; then
  echo "setup: installing Debian packages: ${need_pkgs[*]}"
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

lock_sum=$(sha256sum package-lock.json | cut -d' ' -f1)
if [ ! -d node_modules ] || [ "$(cat node_modules/.kubemend-lock.sha256 2>/dev/null)" != "$lock_sum" ]; then
  # Not `npm ci`: the registry reachable here serves no other platform's binaries (e.g.
  # @swc/core-darwin-arm64 is a 404), so the lockfile cannot list them and `npm ci` calls it
  # out of sync. `npm install --no-save` installs the locked versions and leaves the lock alone.
  echo "setup: npm install (locked versions)"
  npm install --no-save --no-audit --no-fund --loglevel=error
  echo "$lock_sum" > node_modules/.kubemend-lock.sha256
fi

# The Go builds overlap (module downloads and links interleave): on 2 cores with empty Go
# caches, 12 min 40 s together. Each is a no-op when its binaries are current.
bash scripts/build-tools.sh & tools_pid=$!
bash scripts/build-k8s.sh & k8s_pid=$!
bash scripts/build-cni.sh & cni_pid=$!
bash scripts/build-flannel.sh & flannel_pid=$!
tools_rc=0; k8s_rc=0; cni_rc=0; flannel_rc=0
wait "$tools_pid" || tools_rc=$?
wait "$k8s_pid" || k8s_rc=$?
wait "$cni_pid" || cni_rc=$?
wait "$flannel_pid" || flannel_rc=$?
if [ "$tools_rc" -ne 0 ] || [ "$k8s_rc" -ne 0 ] || [ "$cni_rc" -ne 0 ] || [ "$flannel_rc" -ne 0 ]; then
  echo "setup: building tools failed (build-tools.sh exit $tools_rc, build-k8s.sh exit $k8s_rc, build-cni.sh exit $cni_rc, build-flannel.sh exit $flannel_rc)" >&2
  exit 1
fi

# The integration tests need the machine's PostgreSQL (127.0.0.1:5432, user postgres, trust
# auth): start the local cluster if it is installed but stopped.
if command -v pg_isready >/dev/null 2>&1 && ! pg_isready -q -h 127.0.0.1 -p 5432; then
  if command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    echo "setup: starting the local PostgreSQL cluster"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | head -n1)" main start || true
  fi
fi
