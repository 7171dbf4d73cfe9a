#!/usr/bin/env bash
# Hangar boot agent: turns a freshly booted runner instance into exactly one GitHub Actions job,
# then removes the instance. Installed as /usr/local/bin/hangar-boot-agent and started once per
# boot by hangar-boot-agent.service. The sequence (see ami/README.md):
#   1. IMDSv2 token -> own instance id and region;
#   2. poll SSM for /hangar/jit/<instance-id> (SecureString written by the scaler right after
#      launch) with exponential backoff until a deadline;
#   3. delete the parameter as soon as it is read (it is a one-use credential);
#   4. run `run.sh --jitconfig <config>` as the unprivileged runner user, while a watcher polls
#      spot/instance-action and tags the instance hangar:interrupted when a notice appears;
#   5. terminate the instance (ec2:TerminateInstances on itself; `poweroff` as the fallback,
#      which terminates because the launch template sets instance-initiated shutdown = terminate).
# The JIT config is a credential: it is never printed, logged or written to disk here, and
# `set -x` must never be enabled in this script.
#
# Settings (environment; the unit reads optional overrides from /etc/hangar/boot-agent.env):
#   HANGAR_IMDS_ENDPOINT              IMDS base URL                   [http://169.254.169.254]
#   HANGAR_JIT_PARAMETER_PREFIX       SSM name prefix                 [/hangar/jit]
#   HANGAR_JIT_DEADLINE_SECONDS       give up waiting after this      [600]
#   HANGAR_POLL_MAX_INTERVAL_SECONDS  backoff cap between reads       [5]
#   HANGAR_SPOT_POLL_SECONDS          spot notice polling period      [5]
#   HANGAR_RUNNER_DIR                 actions runner directory        [/opt/actions-runner]
#   HANGAR_RUNNER_USER                user that runs the job          [runner]
#   HANGAR_SKIP_USER_SWITCH           1 = run run.sh as the current user. For tests that cannot
#                                     switch users only; the AMI never sets it.   [0]
#   HANGAR_POWEROFF_COMMAND           fallback when TerminateInstances fails [systemctl poweroff]
# The AWS CLI finds credentials, and its region, the usual way; AWS_ENDPOINT_URL and
# AWS_EC2_METADATA_SERVICE_ENDPOINT let tests point it at a local cloud.
set -euo pipefail
umask 077

IMDS=${HANGAR_IMDS_ENDPOINT:-http://169.254.169.254}
PREFIX=${HANGAR_JIT_PARAMETER_PREFIX:-/hangar/jit}
DEADLINE_SECONDS=${HANGAR_JIT_DEADLINE_SECONDS:-600}
POLL_MAX=${HANGAR_POLL_MAX_INTERVAL_SECONDS:-5}
SPOT_POLL=${HANGAR_SPOT_POLL_SECONDS:-5}
RUNNER_DIR=${HANGAR_RUNNER_DIR:-/opt/actions-runner}
RUNNER_USER=${HANGAR_RUNNER_USER:-runner}
SKIP_USER_SWITCH=${HANGAR_SKIP_USER_SWITCH:-0}
POWEROFF_COMMAND=${HANGAR_POWEROFF_COMMAND:-systemctl poweroff}

log() {
  printf '%s hangar-boot-agent: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

die_config() {
  log "configuration error: $*"
  exit 2
}

[[ $DEADLINE_SECONDS =~ ^[0-9]+$ ]] || die_config "HANGAR_JIT_DEADLINE_SECONDS must be whole seconds"
[[ $POLL_MAX =~ ^[0-9]+([.][0-9]+)?$ ]] || die_config "HANGAR_POLL_MAX_INTERVAL_SECONDS must be a number"
[[ $SPOT_POLL =~ ^[0-9]+([.][0-9]+)?$ ]] || die_config "HANGAR_SPOT_POLL_SECONDS must be a number"
[[ $PREFIX == /* && $PREFIX != */ ]] || die_config "HANGAR_JIT_PARAMETER_PREFIX must start with / and not end with /"

# imds_token: a fresh IMDSv2 session token (six hours is the maximum EC2 allows).
imds_token() {
  curl -sf --connect-timeout 2 --max-time 5 -X PUT "$IMDS/latest/api/token" \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 21600'
}

# imds_get PATH: one metadata value; non-zero status on 404 or any other failure.
imds_get() {
  curl -sf --connect-timeout 2 --max-time 5 -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/latest/meta-data/$1"
}

# aws_error_code STDERR_TEXT: the AWS error code in the CLI's "An error occurred (Code)" line.
aws_error_code() {
  local code
  code=$(grep -o 'An error occurred ([A-Za-z.]*)' <<<"$1" | head -n1 | sed 's/.*(\(.*\))/\1/') || true
  printf '%s' "${code:-unknown}"
}

terminate_self() {
  local reason=$1 err
  log "terminating instance $INSTANCE_ID ($reason)"
  if err=$(aws ec2 terminate-instances --instance-ids "$INSTANCE_ID" --output text 2>&1 >/dev/null); then
    return 0
  fi
  log "TerminateInstances failed ($(aws_error_code "$err")); falling back to: $POWEROFF_COMMAND"
  # Word splitting is wanted: the setting is a command line.
  # shellcheck disable=SC2086
  $POWEROFF_COMMAND
}

# Spot watcher: polls spot/instance-action, and on the first notice tags the instance so the
# scaler can tell an interrupted job from a failed one even if the EventBridge warning is late.
# It only reports; EC2 itself stops the instance when the notice's time comes.
watch_spot() {
  local notice tok err
  while sleep "$SPOT_POLL"; do
    tok=$(imds_token) || continue
    if notice=$(curl -sf --connect-timeout 2 --max-time 5 -H "X-aws-ec2-metadata-token: $tok" \
      "$IMDS/latest/meta-data/spot/instance-action"); then
      log "spot interruption notice: $notice"
      if err=$(aws ec2 create-tags --resources "$INSTANCE_ID" \
        --tags "Key=hangar:interrupted,Value=$(date -u +%Y-%m-%dT%H:%M:%SZ)" 2>&1 >/dev/null); then
        log "tagged $INSTANCE_ID hangar:interrupted"
        return 0
      fi
      log "CreateTags failed ($(aws_error_code "$err")); retrying"
    fi
  done
}

TOKEN=$(imds_token) || { log "no IMDSv2 token from $IMDS"; exit 1; }
INSTANCE_ID=$(imds_get instance-id) || { log "cannot read instance-id from IMDS"; exit 1; }
if [[ -z ${AWS_DEFAULT_REGION:-} && -z ${AWS_REGION:-} ]]; then
  AWS_DEFAULT_REGION=$(imds_get placement/region) || { log "cannot read region from IMDS"; exit 1; }
  export AWS_DEFAULT_REGION
fi
PARAMETER="$PREFIX/$INSTANCE_ID"
log "instance $INSTANCE_ID; waiting up to ${DEADLINE_SECONDS}s for parameter $PARAMETER"

# From here on the instance exists for one job only: whatever ends this script also ends the
# instance, so a failure never leaves a paid instance idling until reconcile finds it.
errfile=$(mktemp)
watcher=""
terminated=0
# shellcheck disable=SC2329 # invoked by the EXIT trap below
finish() {
  local rc=$?
  rm -f "$errfile"
  if [[ -n $watcher ]]; then
    kill "$watcher" 2>/dev/null || true
  fi
  if ((!terminated)); then
    terminate_self "boot agent exited with status $rc"
  fi
}
trap finish EXIT

start=$SECONDS
delay=0.5
jit=""
while :; do
  # Not-yet-written parameters read as ParameterNotFound, or as AccessDenied because the IAM
  # condition on the parameter's tag cannot match a parameter that does not exist: both mean wait.
  if jit=$(aws ssm get-parameter --name "$PARAMETER" --with-decryption \
    --query Parameter.Value --output text 2>"$errfile") && [[ -n $jit ]]; then
    break
  fi
  code=$(aws_error_code "$(cat "$errfile")")
  if ((SECONDS - start >= DEADLINE_SECONDS)); then
    log "gave up: no JIT parameter after ${DEADLINE_SECONDS}s (last error: $code)"
    terminated=1
    terminate_self "JIT deadline passed"
    exit 3
  fi
  log "parameter not readable yet ($code); retrying in ${delay}s"
  sleep "$delay"
  delay=$(awk -v d="$delay" -v m="$POLL_MAX" 'BEGIN { d *= 2; if (d > m) d = m; print d }')
done
log "read $PARAMETER (${#jit} characters)"

# One use only: delete before the job starts, so nothing the job runs can read it again.
deleted=0
for attempt in 1 2 3; do
  if err=$(aws ssm delete-parameter --name "$PARAMETER" 2>&1 >/dev/null); then
    deleted=1
    break
  fi
  log "DeleteParameter attempt $attempt failed ($(aws_error_code "$err"))"
  sleep 1
done
if ((deleted)); then
  log "deleted $PARAMETER"
else
  # The job still runs: the scaler's reconcile deletes parameters whose instance is gone.
  log "could not delete $PARAMETER; leaving it to reconcile"
fi

watch_spot &
watcher=$!

cd "$RUNNER_DIR"
status=0
if [[ $SKIP_USER_SWITCH == 1 ]]; then
  log "starting runner as $(id -un) (HANGAR_SKIP_USER_SWITCH=1)"
  ./run.sh --jitconfig "$jit" || status=$?
else
  log "starting runner as $RUNNER_USER"
  runuser -u "$RUNNER_USER" -- ./run.sh --jitconfig "$jit" || status=$?
fi
jit=""
log "runner exited with status $status"

kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
watcher=""

terminated=1
terminate_self "runner exited"
exit 0
