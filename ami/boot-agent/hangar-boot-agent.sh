#!/usr/bin/env bash
# Hangar boot agent: turns a freshly booted runner instance into exactly one GitHub Actions job,
# then removes the instance. Installed as /usr/local/bin/hangar-boot-agent and started once per
# boot by hangar-boot-agent.service. The sequence (see ami/README.md):
#   1. IMDSv2 token -> own instance id and region;
#   2. poll SSM for /hangar/jit/<instance-id> (SecureString written by the scaler right after
#      launch) with exponential backoff until a deadline;
#   3. delete the parameter as soon as it is read (it is a one-use credential);
#   4. close IMDS to every user but root and the CloudWatch agent (an iptables owner match), then
#      run `run.sh --jitconfig <config>` as the unprivileged runner user with umask 022, while a
#      watcher polls spot/instance-action and tags the instance hangar:interrupted=true when a
#      notice appears;
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
#   HANGAR_IPTABLES                   iptables binary for the IMDS rule; tests point it at a fake
#                                     so they never touch the host's firewall  [iptables]
#   HANGAR_IMDS_EXEMPT_USERS          users besides root that may reach IMDS, if they exist  [cwagent]
# The AWS CLI finds credentials, and its region, the usual way; AWS_ENDPOINT_URL and
# AWS_EC2_METADATA_SERVICE_ENDPOINT let tests point it at a local cloud.
set -euo pipefail
umask 077

log() {
  printf '%s hangar-boot-agent: %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2
}

# The instance exists for one job only: whatever ends this script also ends the instance, so a
# failure never leaves a paid instance idling until reconcile finds it. The trap comes first, so
# that a bad setting or an unreachable IMDS (before the instance id is known) ends it too.
INSTANCE_ID=""
errfile=""
watcher=""
terminated=0
POWEROFF_COMMAND=${HANGAR_POWEROFF_COMMAND:-systemctl poweroff}

poweroff_self() {
  log "falling back to: $POWEROFF_COMMAND"
  # Word splitting is wanted: the setting is a command line.
  # shellcheck disable=SC2086
  $POWEROFF_COMMAND
}

# shellcheck disable=SC2329 # invoked by the EXIT trap below
finish() {
  local rc=$?
  if [[ -n $errfile ]]; then
    rm -f "$errfile"
  fi
  if [[ -n $watcher ]]; then
    kill "$watcher" 2>/dev/null || true
  fi
  if ((!terminated)); then
    if [[ -n $INSTANCE_ID ]]; then
      terminate_self "boot agent exited with status $rc"
    else
      log "boot agent exited with status $rc before it knew its instance id"
      poweroff_self
    fi
  fi
}
trap finish EXIT

IMDS=${HANGAR_IMDS_ENDPOINT:-http://169.254.169.254}
PREFIX=${HANGAR_JIT_PARAMETER_PREFIX:-/hangar/jit}
DEADLINE_SECONDS=${HANGAR_JIT_DEADLINE_SECONDS:-600}
POLL_MAX=${HANGAR_POLL_MAX_INTERVAL_SECONDS:-5}
SPOT_POLL=${HANGAR_SPOT_POLL_SECONDS:-5}
RUNNER_DIR=${HANGAR_RUNNER_DIR:-/opt/actions-runner}
RUNNER_USER=${HANGAR_RUNNER_USER:-runner}
SKIP_USER_SWITCH=${HANGAR_SKIP_USER_SWITCH:-0}
IPTABLES=${HANGAR_IPTABLES:-iptables}
IMDS_EXEMPT_USERS=${HANGAR_IMDS_EXEMPT_USERS:-cwagent}

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
  log "TerminateInstances failed ($(aws_error_code "$err"))"
  poweroff_self
}

# IMDS for root (this agent, the SSM and CloudWatch agents) and the exempt users only. The job
# runs as the runner user, and its containers (rootless docker: slirp4netns and the container
# processes run as the runner user or its subordinate ids) send from non-root uids, so the
# owner match rejects them all; hop limit 1 alone stops only bridged containers of a root
# docker. A failure here stops the agent before the job starts (the trap ends the instance).
install_imds_firewall() {
  local chain=HANGAR-IMDS user uid
  "$IPTABLES" -w -N "$chain" 2>/dev/null || "$IPTABLES" -w -F "$chain"
  "$IPTABLES" -w -A "$chain" -m owner --uid-owner 0 -j RETURN
  for user in $IMDS_EXEMPT_USERS; do
    if uid=$(id -u "$user" 2>/dev/null); then
      "$IPTABLES" -w -A "$chain" -m owner --uid-owner "$uid" -j RETURN
    fi
  done
  "$IPTABLES" -w -A "$chain" -p tcp -j REJECT --reject-with tcp-reset
  "$IPTABLES" -w -A "$chain" -j REJECT
  if ! "$IPTABLES" -w -C OUTPUT -d 169.254.169.254/32 -j "$chain" 2>/dev/null; then
    "$IPTABLES" -w -I OUTPUT 1 -d 169.254.169.254/32 -j "$chain"
  fi
  log "IMDS closed to every user but root and: ${IMDS_EXEMPT_USERS:-nobody}"
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
        --tags "Key=hangar:interrupted,Value=true" 2>&1 >/dev/null); then
        log "tagged $INSTANCE_ID hangar:interrupted"
        return 0
      fi
      log "CreateTags failed ($(aws_error_code "$err")); retrying"
    fi
  done
}

install_imds_firewall

TOKEN=$(imds_token) || { log "no IMDSv2 token from $IMDS"; exit 1; }
INSTANCE_ID=$(imds_get instance-id) || { log "cannot read instance-id from IMDS"; exit 1; }
if [[ -z ${AWS_DEFAULT_REGION:-} && -z ${AWS_REGION:-} ]]; then
  AWS_DEFAULT_REGION=$(imds_get placement/region) || { log "cannot read region from IMDS"; exit 1; }
  export AWS_DEFAULT_REGION
fi
PARAMETER="$PREFIX/$INSTANCE_ID"
log "instance $INSTANCE_ID; waiting up to ${DEADLINE_SECONDS}s for parameter $PARAMETER"

errfile=$(mktemp)

# Microseconds from EPOCHREALTIME, not $SECONDS: $SECONDS counts whole seconds from the shell's
# start, so a deadline measured with it could pass up to a second early.
now_us() { echo "${EPOCHREALTIME/./}"; }
give_up_at=$(($(now_us) + DEADLINE_SECONDS * 1000000))
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
  if (($(now_us) >= give_up_at)); then
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
# The agent's own files stay private (umask 077 above), but the job's must not: container
# steps running as a non-root user (a subordinate uid under rootless docker) need to read the
# workspace the runner creates.
umask 022
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
