#!/usr/bin/env bash
# `make demo` (after tools/setup.sh): build the workspace once (the same profile and feature set
# as `make test`, so nothing is rebuilt twice), then replay a trace on the local cloud.
#   TRACE=traces/matrix-burst.yaml make demo     # any trace file
#   REPORT=out/report.json make demo             # report.json, report.svg and logs go there
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
TRACE=${TRACE:-traces/steady-trickle.yaml}
REPORT=${REPORT:-target/demo/report.json}
mkdir -p "$(dirname "$REPORT")"
"$CARGO" build --workspace --all-targets
exec target/debug/hangar demo --trace "$TRACE" --report "$REPORT" "$@"
