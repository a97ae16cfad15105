#!/usr/bin/env bash
# Installs what realmnet needs on a fresh Debian 12 machine, then the npm dependencies.
# Idempotent and quiet: Debian packages already present are skipped, and `apt-get update` runs only
# when something is missing. Run as root (the testbed needs root anyway).
#
#   bash scripts/install-deps.sh            # system packages, then npm ci (npm install without a lockfile)
#   bash scripts/install-deps.sh --no-npm   # system packages only
set -euo pipefail

cd "$(dirname "$0")/.."

# Why each package is here:
#   iproute2       ip netns / veth / routes / tc for the testbed
#   nftables       blackhole and random-loss faults in the testbed
#   iperf3         throughput and failover benchmarks
#   iputils-ping   reachability checks (testbed, readiness of overlays)
#   nebula         the reference overlay in the throughput benchmark (includes nebula-cert)
#   wireguard-go   userspace WireGuard, the other throughput reference (kernel WireGuard is not
#                  available on these machines; wireguard-go makes its own TUN via /dev/net/tun)
#   wireguard-tools  `wg` (genkey, pubkey, set) to configure wireguard-go
#   tshark         decoding captured overlay traffic (LISP-compatible data header)
#   mptcpd         the MPTCP reference in failover comparisons (path manager)
#   mptcpize       runs the failover bench's tools over MPTCP (mptcpd only recommends it, and we
#                  install without recommends: without it every MPTCP run fails)
#   procps         sysctl inside namespaces
#   curl           the slice-2 demo, test and benchmark download a file by data ID (--retry -C -)
#   coreutils      sha256sum (always there on Debian; named so a minimal image says what it lacks)
#   g++ make python3  node-gyp builds the native TUN addon from source at npm install
#   fonts-dejavu-core text in the PNG figures (eval:routing, failover plots) rendered by resvg
#   systemd        systemd-analyze, which checks the service units (test/e2e/install.test.ts); PID 1
#                  need not be systemd
PACKAGES=(iproute2 nftables iperf3 iputils-ping nebula wireguard-go wireguard-tools tshark mptcpd mptcpize procps curl coreutils g++ make python3 fonts-dejavu-core systemd)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: missing Debian packages: ${missing[*]} (run this script as root)" >&2
    exit 1
  fi
  echo "install-deps: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: Debian packages present"
fi

if [[ "${1:-}" == "--no-npm" ]]; then
  exit 0
fi

# node-gyp (our addons, better-sqlite3) compiles with one job unless told otherwise.
export JOBS="${JOBS:-max}"
if [[ -f package-lock.json ]]; then
  npm ci --no-audit --no-fund --loglevel=error
else
  npm install --no-audit --no-fund --loglevel=error
fi
