#!/usr/bin/env bash
# Quick start, second command: install what the project needs, then run the whole test suite
# (type check, unit, integration and end-to-end tests in network namespaces). Run as root.
# CI runs exactly this (.ci/run); with CI=true a test that lacks root or a tool fails, never skips.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
echo "== type check"
npm run --silent typecheck
echo "== tests"
mkdir -p .tmp
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json=.tmp/vitest.json "$@" || status=$?
# One closing line in the plain form every CI reader understands.
node -e '
  const r = JSON.parse(require("fs").readFileSync(".tmp/vitest.json", "utf8"));
  const skipped = r.numPendingTests + r.numTodoTests;
  console.log(`tests: ${r.numPassedTests} passed, ${r.numFailedTests} failed` + (skipped ? `, ${skipped} skipped` : ""));
  if (r.numTotalTests === 0) process.exit(1);
' || status=1
exit $status
