#!/usr/bin/env bash
# Installs realmnet on this host (docs/operations.md, "Install"):
#
#   sudo bash scripts/install.sh                            # from the checkout this script is in
#   sudo bash scripts/install.sh --from realmnet-0.1.0.tgz  # from the output of `npm pack`
#   DESTDIR=/tmp/root bash scripts/install.sh               # under another root (tests; no root needed)
#
# Upgrade: run it again (from the new checkout or tarball), then `systemctl restart realmnet-agent`
# (or hand over in place, docs/operations.md "Upgrade"). Rollback: point /opt/realmnet/current back
# at the previous release in /opt/realmnet/releases/ and restart.
#
# Where things go (all under $DESTDIR when it is set):
#   /opt/realmnet/releases/VERSION-STAMP/   the package, its production dependencies and the native
#                                           addon compiled on this host; the last 3 are kept
#   /opt/realmnet/current                   symlink to the release in use, switched atomically
#   /usr/local/bin/realmnet                 relative symlink to current/bin/realmnet.js
#   /etc/realmnet/              0700        config; agent.yaml.example, rm.yaml.example (0600) while
#                                           agent.yaml / rm.yaml do not exist; a config is never touched
#   /var/lib/realmnet/          0700        state: keys, host.state, the RM store (files 0600)
#   /etc/systemd/system/realmnet-{agent,rm}.service
#
# Why a release directory plus `npm ci`, not `npm install -g` and not a .deb:
#  - the native addon (TUN, UDP, AEAD, sd_notify) must be compiled on the target anyway, against
#    the Node it runs under; `npm ci --omit=dev` does it through package.json's "install" script;
#  - `npm ci` against the checkout's lockfile installs exactly the dependency versions the test
#    suite ran with, where `npm install -g tarball` resolves them afresh (npm pack leaves the
#    lockfile out, so it is copied in beside the package; a bare tarball falls back to
#    `npm install --omit=dev`);
#  - side-by-side releases make an upgrade one atomic rename of the `current` symlink (`ln -sfn` to a
#    temporary name, then `mv -T`, which is rename(2)), and a rollback the same rename back; a
#    half-built release is never visible (it is built under a hidden name and removed on failure);
#  - a .deb would add packaging machinery for no gain on hosts that already have Node 20.
# Running it twice is harmless: each run adds a release and switches to it.
set -euo pipefail

usage() {
  sed -n '2,10p' "$0" | sed 's/^# \{0,1\}//'
}

die() {
  echo "install: error: $*" >&2
  exit 1
}

FROM=""
while (($# > 0)); do
  case "$1" in
    --from)
      [[ $# -ge 2 && -n "$2" ]] || die "--from needs a file: the .tgz that \`npm pack\` made"
      FROM="$2"
      shift 2
      ;;
    --from=*)
      FROM="${1#--from=}"
      shift
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
if [[ -n "$ROOT" ]]; then
  [[ "$ROOT" == /* ]] || die "DESTDIR must be an absolute path (it is \"$ROOT\")"
elif [[ $(id -u) -ne 0 ]]; then
  die "run as root (it writes /opt, /etc, /var/lib and /usr/local/bin), or set DESTDIR to install under another root"
fi

# From here on, a command that fails unexpectedly still ends in one line saying which.
trap 'die "\"$BASH_COMMAND\" failed (line $LINENO)"' ERR

# --- What the build needs -----------------------------------------------------------------------
command -v node >/dev/null || die "node is missing: install Node.js 20 or newer (e.g. Debian's nodejs, or NodeSource)"
command -v npm >/dev/null || die "npm is missing: install it with Node.js"
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[[ "$node_major" -ge 20 ]] || die "Node.js $(node --version) is too old: realmnet needs 20 or newer"
missing=()
# node-gyp compiles the addon (and better-sqlite3 without a prebuilt binary): a C++ compiler, make,
# and python3 for gyp itself. Tool and Debian package have the same name here.
for t in g++ make python3 tar flock; do
  command -v "$t" >/dev/null || missing+=("$t")
done
if ((${#missing[@]} > 0)); then
  pkgs="${missing[*]}"
  pkgs="${pkgs/flock/util-linux}"
  die "missing ${missing[*]} (the native addon is compiled on this host): apt-get install ${pkgs}"
fi
command -v ip >/dev/null || echo "install: warning: \`ip\` (iproute2) is missing; the agent runs it: apt-get install iproute2" >&2

# node-gyp downloads Node's headers from nodejs.org unless told where they are. Most Node builds
# (Debian's, NodeSource's, the official tarballs) ship them beside the binary: use those, so the
# build needs no network beyond the npm registry. An explicit npm `nodedir` setting wins.
node_prefix="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"
if [[ -z "${npm_config_nodedir:-}" && -f "$node_prefix/include/node/common.gypi" ]]; then
  nodedir="$(npm config get nodedir 2>/dev/null || true)"
  if [[ -z "$nodedir" || "$nodedir" == "undefined" || "$nodedir" == "null" ]]; then
    export npm_config_nodedir="$node_prefix"
  fi
fi

# node-gyp compiles with one job unless told otherwise; the build is most of an install's time.
export JOBS="${JOBS:-max}"

# --- One install at a time ----------------------------------------------------------------------
base="$ROOT/opt/realmnet"
releases="$base/releases"
mkdir -p "$releases"
exec 9>"$base/.install.lock"
flock -n 9 || die "another install is running (it holds $base/.install.lock)"
# Holding the lock, any partial build left is from an install that was killed: not a release.
rm -rf "$releases"/.*.partial

work="$(mktemp -d)"
partial=""
cleanup() {
  rm -rf "$work"
  if [[ -n "$partial" ]]; then rm -rf "$partial"; fi
}
trap cleanup EXIT

# --- The package --------------------------------------------------------------------------------
if [[ -n "$FROM" ]]; then
  [[ -f "$FROM" ]] || die "--from $FROM: no such file"
  tgz="$(cd "$(dirname "$FROM")" && pwd)/$(basename "$FROM")"
  lock=""
else
  [[ -f "$CHECKOUT/package.json" ]] || die "$CHECKOUT is not a realmnet checkout (no package.json); use --from TARBALL"
  echo "install: packing $CHECKOUT"
  (cd "$CHECKOUT" && npm pack --silent --pack-destination "$work" >/dev/null) || die "npm pack failed in $CHECKOUT"
  tgz="$(ls "$work"/*.tgz)"
  # npm pack leaves the lockfile out; it is what pins the dependencies.
  lock="$CHECKOUT/package-lock.json"
  [[ -f "$lock" ]] || die "$lock is missing: \`npm install\` in the checkout writes it"
fi

mkdir -p "$work/pkg"
tar -xzf "$tgz" -C "$work/pkg" --strip-components=1 --no-same-owner 2>/dev/null || die "$tgz is not a tarball made by \`npm pack\`"
[[ -f "$work/pkg/package.json" && -f "$work/pkg/bin/realmnet.js" ]] || die "$tgz does not hold realmnet (no package.json or bin/realmnet.js)"
version="$(node -p 'require(process.argv[1]).version' "$work/pkg/package.json")"
[[ "$version" =~ ^[0-9A-Za-z.+-]+$ ]] || die "$tgz: unexpected version \"$version\" in package.json"
name="$version-$(date -u +%Y%m%dT%H%M%SZ)"
release="$releases/$name"
[[ ! -e "$release" ]] || die "$release already exists (two installs within one second?): run it again"

# Built under a hidden name in the same file system, then renamed: `releases/` only ever holds
# complete releases, and a failed build is removed (cleanup).
partial="$releases/.$name.partial"
mv "$work/pkg" "$partial"
chmod 0755 "$partial" "$partial/bin/realmnet.js"

if [[ -n "$lock" ]]; then
  cp "$lock" "$partial/package-lock.json"
fi
# The same lockfile and the same Node as the current release: its node_modules (built on this host,
# better-sqlite3 included) are copied instead of compiled again, and only realmnet's own addon is
# built from source. An upgrade that changes no dependency then takes seconds, not minutes.
prev="$base/current"
stamp="node $(node --version) $(node -p 'process.versions.modules')"
if [[ -f "$partial/package-lock.json" && -f "$prev/package-lock.json" && -d "$prev/node_modules" && -f "$prev/.node-abi" ]] \
  && cmp -s "$partial/package-lock.json" "$prev/package-lock.json" && [[ "$(cat "$prev/.node-abi")" == "$stamp" ]]; then
  echo "install: dependencies unchanged since $(readlink "$prev"): reusing them, compiling realmnet's addon in $release"
  cp -a "$prev/node_modules" "$partial/node_modules"
  (cd "$partial" && npm run --silent install) || die "building the native addon failed in $release (its output above says why)"
elif [[ -f "$partial/package-lock.json" || -f "$partial/npm-shrinkwrap.json" ]]; then
  echo "install: installing dependencies and compiling the native addon in $release (about 1-2 minutes)"
  (cd "$partial" && npm ci --omit=dev --no-audit --no-fund --loglevel=error) || die "npm ci --omit=dev failed in $release (its output above says why)"
else
  echo "install: $tgz has no lockfile: dependency versions are resolved afresh (npm install --omit=dev)"
  (cd "$partial" && npm install --omit=dev --no-audit --no-fund --loglevel=error) || die "npm install --omit=dev failed in $release (its output above says why)"
fi
echo "$stamp" >"$partial/.node-abi"
[[ -f "$partial/build/Release/realmnet_tun.node" ]] || die "the native addon was not built in $release (build/Release/realmnet_tun.node is missing)"
node "$partial/bin/realmnet.js" --version >/dev/null || die "the installed realmnet does not run: node $release/bin/realmnet.js --version"
mv -T "$partial" "$release"
partial=""

# --- Switch ------------------------------------------------------------------------------------
# Atomic: a new symlink under a temporary name, renamed over the old one (rename(2) replaces it).
switch_link() {
  ln -sfn "$1" "$2.tmp"
  mv -T "$2.tmp" "$2"
}
switch_link "releases/$name" "$base/current"
mkdir -p "$ROOT/usr/local/bin"
# Relative, so that the same tree works under DESTDIR (and if /opt is mounted elsewhere).
switch_link ../../../opt/realmnet/current/bin/realmnet.js "$ROOT/usr/local/bin/realmnet"

# Keep the three newest releases, by their UTC stamp (the name's last field; a version may itself
# contain "-"). The one just installed is the newest; hidden (partial) ones are not releases.
mapfile -t old < <(
  for r in "$releases"/*; do
    [[ -d "$r" ]] || continue
    r="${r##*/}"
    printf '%s %s\n' "${r##*-}" "$r"
  done | sort -r | tail -n +4 | cut -d' ' -f2-
)
for r in "${old[@]}"; do
  [[ "$r" == "$name" ]] || rm -rf "${releases:?}/$r"
done

# --- Config, state, units -----------------------------------------------------------------------
install -d -m 0700 "$ROOT/etc/realmnet" "$ROOT/var/lib/realmnet"
# install -d leaves an existing directory's mode alone.
chmod 0700 "$ROOT/etc/realmnet" "$ROOT/var/lib/realmnet"
for c in agent rm; do
  if [[ ! -e "$ROOT/etc/realmnet/$c.yaml" ]]; then
    install -m 0600 "$release/packaging/$c.yaml" "$ROOT/etc/realmnet/$c.yaml.example"
  fi
done
install -d -m 0755 "$ROOT/etc/systemd/system"
install -m 0644 "$release/packaging/systemd/realmnet-agent.service" "$release/packaging/systemd/realmnet-rm.service" "$ROOT/etc/systemd/system/"
# Only when systemd runs this host (PID 1); never for a DESTDIR tree.
if [[ -z "$ROOT" && -d /run/systemd/system ]]; then
  systemctl daemon-reload || die "systemctl daemon-reload failed"
fi

echo "install: realmnet $version installed in $release, now current"
if [[ ! -e "$ROOT/etc/realmnet/agent.yaml" && ! -e "$ROOT/etc/realmnet/rm.yaml" ]]; then
  cat <<EOF
Next, on a host (the agent):
  cp /etc/realmnet/agent.yaml.example /etc/realmnet/agent.yaml   # edit: uplinks, rm.servers, identity.prefix
  realmnet keygen --out /var/lib/realmnet/host.key
  systemctl enable --now realmnet-agent && realmnet status
on the Realm Manager's VM:
  cp /etc/realmnet/rm.yaml.example /etc/realmnet/rm.yaml         # edit: realm, prefix, policy
  systemctl enable --now realmnet-rm
EOF
else
  cat <<EOF
Running services keep the old version until restarted (the config was left as it is):
  systemctl restart realmnet-agent    # or hand over in place: docs/operations.md, "Upgrade"
  systemctl restart realmnet-rm
Rollback: ln -sfn releases/OLD /opt/realmnet/current.tmp && mv -T /opt/realmnet/current.tmp /opt/realmnet/current
EOF
fi
