#!/usr/bin/env bash
# Installs everything the tests and the demo need, into the work tree, pinned:
#   .venv/          moto_server (AWS emulator) and cargo-lambda
#   tools/npm/      GitHub's published webhook examples, webhook schemas and REST OpenAPI description
#   fixtures/octokit/  the workflow_job and ping examples, one file per example
# Idempotent: a second run only checks the stamps.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

PY=${PYTHON:-python3}
MOTO_VERSION=5.2.5
CARGO_LAMBDA_VERSION=1.9.2

stamp=".venv/.hangar-$MOTO_VERSION-$CARGO_LAMBDA_VERSION"
if [ ! -f "$stamp" ]; then
  echo "setup: creating .venv (moto[server]==$MOTO_VERSION, cargo-lambda==$CARGO_LAMBDA_VERSION)"
  rm -rf .venv
  "$PY" -m venv .venv
  .venv/bin/pip install --quiet --disable-pip-version-check --upgrade pip
  .venv/bin/pip install --quiet --disable-pip-version-check \
    "moto[server]==$MOTO_VERSION" "cargo-lambda==$CARGO_LAMBDA_VERSION"
  touch "$stamp"
fi

if [ ! -f tools/npm/node_modules/.hangar-stamp ] || [ tools/npm/package-lock.json -nt tools/npm/node_modules/.hangar-stamp ]; then
  echo "setup: npm ci (octokit fixtures)"
  (cd tools/npm && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error)
  touch tools/npm/node_modules/.hangar-stamp
fi

if [ ! -f fixtures/octokit/.stamp ] || [ tools/npm/node_modules/.hangar-stamp -nt fixtures/octokit/.stamp ]; then
  echo "setup: extracting workflow_job and ping examples into fixtures/octokit"
  "$PY" - "$root" <<'PYEOF'
import json, os, shutil, sys
root = sys.argv[1]
src = os.path.join(root, "tools/npm/node_modules/@octokit/webhooks-examples/api.github.com/index.json")
out = os.path.join(root, "fixtures/octokit")
shutil.rmtree(out, ignore_errors=True)
count = 0
for entry in json.load(open(src)):
    if entry["name"] not in ("workflow_job", "ping"):
        continue
    d = os.path.join(out, entry["name"])
    os.makedirs(d, exist_ok=True)
    for i, ex in enumerate(entry["examples"]):
        name = "%02d-%s.json" % (i, ex.get("action", "ping"))
        with open(os.path.join(d, name), "w") as f:
            json.dump(ex, f, indent=2)
        count += 1
lic = os.path.join(root, "tools/npm/node_modules/@octokit/webhooks-examples/package.json")
with open(os.path.join(out, "SOURCE.txt"), "w") as f:
    meta = json.load(open(lic))
    f.write("Extracted from npm %s@%s (licence: %s) by tools/setup.sh.\n" % (meta["name"], meta["version"], meta.get("license")))
open(os.path.join(out, ".stamp"), "w").close()
print("setup: %d examples extracted" % count)
PYEOF
fi
