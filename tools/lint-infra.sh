#!/usr/bin/env bash
# Lints the deployable stack and the runner image with the pinned linters that
# tools/setup-linters.sh installs:
#   - infra/sync-ami.py --check: the template's inline component documents match ami/
#   - cfn-lint: no errors
#   - sam validate --lint (region us-east-1)
#   - checkov on the template: no failed checks (skips live in the template, with reasons)
#   - shellcheck on every shell script in ami/, infra/ and tools/
set -euo pipefail
cd "$(dirname "$0")/.."

for venv in .venv-lint .venv-sam .venv-checkov; do
  if [ ! -d "$venv" ]; then
    echo "lint-infra: $venv missing; run bash tools/setup-linters.sh (make setup-lint)" >&2
    exit 1
  fi
done

# Linters must not reach for a developer's real AWS account or its settings.
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
export AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
export SAM_CLI_TELEMETRY=0 BC_SKIP_MAPPING=TRUE CHECKOV_RUN_SCA_PACKAGE_SCAN_V2=false

step() { printf 'lint-infra: %s\n' "$*"; }

step "component documents in sync with ami/"
.venv-lint/bin/python infra/sync-ami.py --check

step "cfn-lint infra/template.yaml"
.venv-lint/bin/cfn-lint --format parseable infra/template.yaml

step "sam validate --lint"
.venv-sam/bin/sam validate --lint --region us-east-1 --template-file infra/template.yaml

step "checkov infra/template.yaml"
.venv-checkov/bin/checkov --quiet --compact --skip-download --framework cloudformation \
  --file infra/template.yaml

step "shellcheck"
mapfile -t scripts < <(
  {
    find ami infra -type f \( -name '*.sh' -o -name '*.bash' \)
    find ami infra -type f ! -name '*.*' -exec grep -lE '^#!.*\b(ba)?sh\b' {} +
    find tools -maxdepth 1 -type f -name '*.sh'
  } 2>/dev/null | sort -u
)
if [ "${#scripts[@]}" -eq 0 ]; then
  echo "lint-infra: no shell scripts found, which cannot be right" >&2
  exit 1
fi
.venv-lint/bin/shellcheck --severity=style "${scripts[@]}"
step "ok (${#scripts[@]} scripts: ${scripts[*]})"
