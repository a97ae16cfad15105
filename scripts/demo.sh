#!/usr/bin/env bash
# Quick start, first command: install what is needed, then run the demo - two hosts in network
# namespaces talking over host IDs. Run as root. Everything the demo creates is removed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
exec npx tsx scripts/demo.ts "$@"
