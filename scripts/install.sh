#!/usr/bin/env bash
# Installs realmnet on this host (docs/operations.md, "Install"):
#
#   sudo bash scripts/install.sh                          # from this checkout
#   sudo bash scripts/install.sh --from realmnet-0.1.0.tgz  # from `npm pack` output
#   DESTDIR=/tmp/root bash scripts/install.sh             # under another root (tests; no root needed)
#
# Where things go:
#   /opt/realmnet/releases/VERSION-STAMP/   the package; `npm ci --omit=dev` there builds the native
#                                           addon from source on this host (g++, make, python3)
#   /opt/realmnet/current                   symlink to the release in use, switched atomically
#   /usr/local/bin/realmnet                 symlink to current/bin/realmnet.js (relative, so it works
#                                           under DESTDIR too)
#   /etc/realmnet/            0700          config; agent.yaml.example and rm.yaml.example (0600)
#   /var/lib/realmnet/        0700          state: keys, host.state, the RM store
#   /etc/systemd/system/realmnet-{agent,rm}.service
#
# Why a release directory and `npm ci`, not `npm install -g` or a .deb: the addon has to be
# compiled on the target anyway, `npm ci` installs exactly the dependency versions of the lockfile
# the test suite ran with (a global install resolves them afresh), and side-by-side releases make an
# upgrade an atomic symlink switch and a rollback the same switch back. An existing config is never
# touched; the last three releases are kept. Running it twice is harmless.
set -euo pipefail

usage() {
  sed -n '2,6p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "install: $*" >&2
  exit 1
}

FROM=""
while (($# > 0)); do
  case "$1" in
    --from)
      [[ $# -ge 2 ]] || die "--from needs a file: the .tgz that \`npm pack\` made"
      FROM="$2"
      shift 2
      ;;
    -h | --help)
      usage
      exit 0
      ;;
    *) die "unknown argument \"$1\" (see --help)" ;;
  esac
done

CHECKOUT="$(cd "$(dirname "$0")/.." && pwd)"
ROOT="${DESTDIR:-}"
ROOT="${ROOT%/}"
if [[ -z "$ROOT" && $(id -u) -ne 0 ]]; then
  die "run as root (it writes /opt, /etc and /usr/local/bin), or set DESTDIR to install under another root"
fi

command -v node >/dev/null || die "node is missing: install Node.js 20 (https://nodejs.org or Debian's nodejs)"
command -v npm >/dev/null || die "npm is missing: install it with Node.js 20"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 20 ]] || die "Node.js $(node --version) is too old: realmnet needs 20 or newer"
missing=()
for t in g++ make python3; do command -v "$t" >/dev/null || missing+=("$t"); done
if ((${#missing[@]} > 0)); then
  die "the native addon is built on this host and needs ${missing[*]}: apt-get install g++ make python3"
fi
command -v ip >/dev/null || echo "install: warning: \`ip\` (iproute2) is missing; the agent needs it: apt-get install iproute2" >&2

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

if [[ -n "$FROM" ]]; then
  [[ -f "$FROM" ]] || die "--from $FROM: no such file"
  tgz="$(cd "$(dirname "$FROM")" && pwd)/$(basename "$FROM")"
  lock=""
else
  echo "install: packing $CHECKOUT"
  (cd "$CHECKOUT" && npm pack --silent --pack-destination "$work" >/dev/null) || die "npm pack failed in $CHECKOUT"
  tgz="$(ls "$work"/*.tgz)"
  # npm pack leaves the lockfile out; it is what pins the dependencies.
  lock="$CHECKOUT/package-lock.json"
fi

mkdir -p "$work/pkg"
tar -xzf "$tgz" -C "$work/pkg" --strip-components=1 || die "$tgz is not an npm pack tarball"
[[ -f "$work/pkg/package.json" && -f "$work/pkg/bin/realmnet.js" ]] || die "$tgz does not hold realmnet (no package.json or bin/realmnet.js)"
version="$(node -p "require('$work/pkg/package.json').version")"
name="$version-$(date -u +%Y%m%dT%H%M%SZ)"
releases="$ROOT/opt/realmnet/releases"
release="$releases/$name"
mkdir -p "$releases"
mv "$work/pkg" "$release"

echo "install: installing dependencies and building the native addon in $release"
if [[ -n "$lock" && -f "$lock" ]]; then
  cp "$lock" "$release/package-lock.json"
  (cd "$release" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) || die "npm ci failed in $release (its output above says why)"
else
  (cd "$release" && npm install --omit=dev --no-audit --no-fund --loglevel=error) || die "npm install failed in $release (its output above says why)"
fi
node "$release/bin/realmnet.js" --version >/dev/null || die "the installed realmnet does not run: node $release/bin/realmnet.js --version"

# Switch current atomically: a new symlink renamed over the old one.
ln -sfn "releases/$name" "$ROOT/opt/realmnet/current.tmp"
mv -T "$ROOT/opt/realmnet/current.tmp" "$ROOT/opt/realmnet/current"
mkdir -p "$ROOT/usr/local/bin"
ln -sfn ../../../opt/realmnet/current/bin/realmnet.js "$ROOT/usr/local/bin/realmnet"

# Keep the three newest releases (the current one always).
mapfile -t old < <(ls -1t "$releases" | tail -n +4)
for r in "${old[@]}"; do
  [[ "$r" == "$name" ]] || rm -rf "${releases:?}/$r"
done

install -d -m 0700 "$ROOT/etc/realmnet" "$ROOT/var/lib/realmnet"
chmod 0700 "$ROOT/etc/realmnet" "$ROOT/var/lib/realmnet"
install -m 0600 "$release/packaging/agent.yaml" "$ROOT/etc/realmnet/agent.yaml.example"
install -m 0600 "$release/packaging/rm.yaml" "$ROOT/etc/realmnet/rm.yaml.example"
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$release/packaging/systemd/realmnet-agent.service" "$release/packaging/systemd/realmnet-rm.service" "$ROOT/etc/systemd/system/"
if [[ -z "$ROOT" && -d /run/systemd/system ]]; then
  systemctl daemon-reload
fi

echo "install: realmnet $version installed in $release (current)"
if [[ ! -f "$ROOT/etc/realmnet/agent.yaml" && ! -f "$ROOT/etc/realmnet/rm.yaml" ]]; then
  cat <<EOF
Next, on a host:
  realmnet keygen --out /var/lib/realmnet/host.key
  cp /etc/realmnet/agent.yaml.example /etc/realmnet/agent.yaml    # edit uplinks and rm.servers
  systemctl enable --now realmnet-agent && realmnet status
on the Realm Manager's VM:
  cp /etc/realmnet/rm.yaml.example /etc/realmnet/rm.yaml          # edit realm, prefix, policy
  systemctl enable --now realmnet-rm
EOF
else
  cat <<EOF
Running services keep the old version until you hand over or restart:
  systemctl kill --signal=SIGUSR2 --kill-whom=main realmnet-agent   # upgrade in place (docs/operations.md)
  systemctl restart realmnet-rm
EOF
fi
