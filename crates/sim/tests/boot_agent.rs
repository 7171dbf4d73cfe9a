//! Runs the real boot agent (`ami/boot-agent/hangar-boot-agent.sh`, bash) against the local
//! cloud: the IMDSv2 simulator serves the instance's identity and role credentials, moto_server
//! serves SSM and EC2, and the pinned AWS CLI from `.venv-awscli/` (tools/setup-linters.sh) makes
//! the calls, exactly as on an instance. `run.sh` is a fake that records how it was started.

use std::path::PathBuf;
use std::process::Output;
use std::time::{Duration, Instant};

use aws_sdk_ec2::types::InstanceStateName;
use hangar_sim::imds::{ImdsServer, InstanceIdentity, SpotAction};
use hangar_testsupport::{aws_config_for, moto, workspace_root};

struct Cloud {
    ssm: aws_sdk_ssm::Client,
    ec2: aws_sdk_ec2::Client,
    endpoint: String,
}

async fn cloud() -> Cloud {
    let endpoint = moto().endpoint();
    let config = aws_config_for(&endpoint).await;
    Cloud { ssm: aws_sdk_ssm::Client::new(&config), ec2: aws_sdk_ec2::Client::new(&config), endpoint }
}

/// A running instance in moto: the one the agent will terminate.
async fn launch_instance(cloud: &Cloud) -> String {
    let images = cloud.ec2.describe_images().owners("amazon").send().await.expect("DescribeImages");
    let image = images.images().first().and_then(|i| i.image_id()).expect("moto ships AMIs").to_string();
    let out = cloud
        .ec2
        .run_instances()
        .image_id(image)
        .instance_type(aws_sdk_ec2::types::InstanceType::M7gLarge)
        .min_count(1)
        .max_count(1)
        .send()
        .await
        .expect("RunInstances");
    out.instances()[0].instance_id().unwrap().to_string()
}

async fn instance_state(cloud: &Cloud, id: &str) -> InstanceStateName {
    let out = cloud.ec2.describe_instances().instance_ids(id).send().await.expect("DescribeInstances");
    out.reservations()[0].instances()[0].state().unwrap().name().unwrap().clone()
}

async fn instance_tag(cloud: &Cloud, id: &str, key: &str) -> Option<String> {
    let out = cloud.ec2.describe_instances().instance_ids(id).send().await.expect("DescribeInstances");
    out.reservations()[0].instances()[0]
        .tags()
        .iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
        .map(str::to_string)
}

async fn put_jit(cloud: &Cloud, instance_id: &str, value: &str) {
    cloud
        .ssm
        .put_parameter()
        .name(format!("/hangar/jit/{instance_id}"))
        .r#type(aws_sdk_ssm::types::ParameterType::SecureString)
        .value(value)
        .tags(
            aws_sdk_ssm::types::Tag::builder().key("hangar:instance-id").value(instance_id).build().unwrap(),
        )
        .tags(aws_sdk_ssm::types::Tag::builder().key("hangar:pool").value("linux-arm64").build().unwrap())
        .send()
        .await
        .expect("PutParameter");
}

async fn jit_exists(cloud: &Cloud, instance_id: &str) -> bool {
    match cloud.ssm.get_parameter().name(format!("/hangar/jit/{instance_id}")).send().await {
        Ok(_) => true,
        Err(e) if e.as_service_error().is_some_and(|e| e.is_parameter_not_found()) => false,
        Err(e) => panic!("GetParameter: {e:?}"),
    }
}

/// A JIT config looks like base64 of a JSON document; this one is unique per test.
fn fake_jit_config() -> String {
    use base64::Engine as _;
    let doc = format!("{{\".runner\":\"hangar-test-{}\"}}", uuid::Uuid::new_v4());
    base64::engine::general_purpose::STANDARD.encode(doc)
}

fn awscli_dir() -> PathBuf {
    let dir = workspace_root().join(".venv-awscli/bin");
    assert!(
        dir.join("aws").exists(),
        "{} missing; run `bash tools/setup-linters.sh` (make test does)",
        dir.join("aws").display()
    );
    dir
}

fn running_as_root() -> bool {
    let out = std::process::Command::new("id").arg("-u").output().expect("id -u");
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The runner directory and a world-writable record directory, so the fake `run.sh` can write
/// its record when the agent starts it as `nobody`.
struct RunnerFixture {
    _tmp: tempfile::TempDir,
    runner_dir: PathBuf,
    record_dir: PathBuf,
    poweroff_marker: PathBuf,
    /// A fake `iptables` (HANGAR_IPTABLES) that appends its arguments here, so no test touches
    /// the host's firewall.
    iptables_log: PathBuf,
    iptables: PathBuf,
}

fn runner_fixture(run_sh_body: &str) -> RunnerFixture {
    use std::os::unix::fs::PermissionsExt as _;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let runner_dir = root.join("actions-runner");
    let record_dir = root.join("record");
    std::fs::create_dir(&runner_dir).unwrap();
    std::fs::create_dir(&record_dir).unwrap();
    std::fs::set_permissions(&runner_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&record_dir, std::fs::Permissions::from_mode(0o777)).unwrap();
    // Besides its user and arguments, run.sh records its umask and whether the IMDS rule was
    // already in place when it started.
    let script = format!(
        "#!/bin/sh\nid -un > '{rec}/user'\numask > '{rec}/umask'\n\
         if grep -q -- '-I OUTPUT 1 -d 169.254.169.254/32 -j HANGAR-IMDS' '{root}/iptables.log' 2>/dev/null; \
         then touch '{rec}/imds-closed-before-job'; fi\n\
         printf '%s\\n' \"$@\" > '{rec}/args'\n{run_sh_body}\n",
        rec = record_dir.display(),
        root = root.display()
    );
    let run_sh = runner_dir.join("run.sh");
    std::fs::write(&run_sh, script).unwrap();
    std::fs::set_permissions(&run_sh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let poweroff_marker = root.join("poweroff-called");
    let iptables_log = root.join("iptables.log");
    let iptables = root.join("iptables");
    // `-C` (does the rule exist?) answers "no", as on a fresh instance; everything else succeeds.
    // Its log is readable by all, so run.sh (started as `nobody` under root) can read it.
    std::fs::write(
        &iptables,
        format!(
            "#!/bin/sh\numask 022\nprintf '%s\\n' \"$*\" >> '{}'\ncase \" $* \" in *' -C '*) exit 1;; esac\nexit 0\n",
            iptables_log.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&iptables, std::fs::Permissions::from_mode(0o755)).unwrap();
    RunnerFixture { _tmp: tmp, runner_dir, record_dir, poweroff_marker, iptables_log, iptables }
}

/// Starts the agent with a clean environment: no AWS credentials or config besides what the
/// IMDS simulator serves, endpoints pointed at the local cloud.
fn agent_command(
    cloud: &Cloud,
    imds: &ImdsServer,
    fx: &RunnerFixture,
    deadline_s: u32,
) -> tokio::process::Command {
    let script = workspace_root().join("ami/boot-agent/hangar-boot-agent.sh");
    let mut cmd = tokio::process::Command::new("bash");
    cmd.arg(script)
        .env_clear()
        .env("PATH", format!("{}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", awscli_dir().display()))
        .env("HOME", fx.record_dir.parent().unwrap())
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env("AWS_ENDPOINT_URL", &cloud.endpoint)
        .env("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.endpoint())
        .env("HANGAR_IMDS_ENDPOINT", imds.endpoint())
        .env("HANGAR_JIT_DEADLINE_SECONDS", deadline_s.to_string())
        .env("HANGAR_POLL_MAX_INTERVAL_SECONDS", "1")
        .env("HANGAR_SPOT_POLL_SECONDS", "0.3")
        .env("HANGAR_RUNNER_DIR", &fx.runner_dir)
        .env("HANGAR_POWEROFF_COMMAND", format!("touch {}", fx.poweroff_marker.display()))
        .env("HANGAR_IPTABLES", &fx.iptables)
        .env("HANGAR_IMDS_EXEMPT_USERS", "root hangar-no-such-user")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if running_as_root() {
        cmd.env("HANGAR_RUNNER_USER", "nobody");
    } else {
        // Only root can switch users; the override is documented in the script and ami/README.md.
        cmd.env("HANGAR_SKIP_USER_SWITCH", "1");
    }
    cmd
}

async fn finish(child: tokio::process::Child) -> Output {
    tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("boot agent did not finish within 60 s")
        .expect("boot agent output")
}

fn combined(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

async fn identity_for(instance_id: &str) -> ImdsServer {
    ImdsServer::start(InstanceIdentity::new(instance_id).unwrap()).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_deletes_its_parameter_runs_the_job_unprivileged_and_terminates() {
    let cloud = cloud().await;
    let instance_id = launch_instance(&cloud).await;
    let other_id = launch_instance(&cloud).await;
    let imds = identity_for(&instance_id).await;
    let fx = runner_fixture("exit 0");
    let jit = fake_jit_config();
    let other_jit = fake_jit_config();
    put_jit(&cloud, &other_id, &other_jit).await;

    let child = agent_command(&cloud, &imds, &fx, 30).spawn().expect("start boot agent");
    // The scaler writes the parameter right after launch, so it may appear after the agent's
    // first read: write it late to exercise the polling. Late means after the AWS CLI has
    // fetched its credentials for the first read (instance-id and region, then the role and
    // its credentials: four IMDS reads), so a slow, busy machine cannot make it early.
    wait_for(|| async { imds.stats().reads >= 4 }, "the agent's first SSM read").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    put_jit(&cloud, &instance_id, &jit).await;
    let out = finish(child).await;
    let log = combined(&out);

    assert!(out.status.success(), "agent failed: {:?}\n{log}", out.status);
    assert!(log.contains("not readable yet (ParameterNotFound)"), "no polling seen:\n{log}");
    let args = std::fs::read_to_string(fx.record_dir.join("args")).expect("run.sh was started");
    assert_eq!(args, format!("--jitconfig\n{jit}\n"));
    let user = std::fs::read_to_string(fx.record_dir.join("user")).unwrap();
    if running_as_root() {
        assert_eq!(user.trim(), "nobody", "run.sh must not run as root");
    }
    assert!(!log.contains(&jit), "the JIT config leaked into the agent's output:\n{log}");
    // The job gets umask 022 (the agent itself keeps 077), so non-root containers can read the
    // workspace.
    assert_eq!(std::fs::read_to_string(fx.record_dir.join("umask")).unwrap().trim(), "0022");
    // IMDS was closed to non-root users before the job started: root allowed, everyone else
    // rejected, the chain hooked into OUTPUT for the IMDS address.
    assert!(
        fx.record_dir.join("imds-closed-before-job").exists(),
        "run.sh started before the IMDS rule:\n{log}"
    );
    let rules = std::fs::read_to_string(&fx.iptables_log).unwrap();
    assert!(rules.contains("-w -A HANGAR-IMDS -m owner --uid-owner 0 -j RETURN"), "{rules}");
    assert!(rules.contains("-w -A HANGAR-IMDS -j REJECT"), "{rules}");
    let accepted = rules.lines().filter(|l| l.contains("-j RETURN")).count();
    assert_eq!(accepted, 2, "root twice (uid 0 and the exempt `root`); the unknown user skipped:\n{rules}");

    assert!(!jit_exists(&cloud, &instance_id).await, "the agent must delete its parameter");
    assert!(jit_exists(&cloud, &other_id).await, "another instance's parameter must be untouched");
    let state = instance_state(&cloud, &instance_id).await;
    assert!(
        matches!(state, InstanceStateName::ShuttingDown | InstanceStateName::Terminated),
        "instance is {state:?}"
    );
    assert_eq!(instance_state(&cloud, &other_id).await, InstanceStateName::Running);
    assert!(!fx.poweroff_marker.exists(), "TerminateInstances worked, so no fallback poweroff");

    // Every metadata read, the CLI's credential fetches included, used an IMDSv2 token.
    let stats = imds.stats();
    assert!(stats.tokens_issued >= 1 && stats.reads >= 2, "{stats:?}");
    assert_eq!(stats.unauthorized, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gives_up_at_the_deadline_and_terminates_without_running_the_job() {
    let cloud = cloud().await;
    let instance_id = launch_instance(&cloud).await;
    let imds = identity_for(&instance_id).await;
    let fx = runner_fixture("exit 0");

    let started = Instant::now();
    let out = finish(agent_command(&cloud, &imds, &fx, 2).spawn().unwrap()).await;
    let elapsed = started.elapsed();
    let log = combined(&out);

    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("gave up: no JIT parameter after 2s"), "{log}");
    assert!(elapsed >= Duration::from_secs(2), "gave up early: {elapsed:?}");
    assert!(!fx.record_dir.join("args").exists(), "run.sh must not start without a JIT config");
    let state = instance_state(&cloud, &instance_id).await;
    assert!(matches!(state, InstanceStateName::ShuttingDown | InstanceStateName::Terminated), "{state:?}");
    assert!(!fx.poweroff_marker.exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn falls_back_to_poweroff_when_it_cannot_terminate_itself() {
    let cloud = cloud().await;
    // An id moto has never seen: TerminateInstances fails with InvalidInstanceID.NotFound.
    let imds = identity_for("i-0000000000000dead").await;
    let fx = runner_fixture("exit 0");

    let out = finish(agent_command(&cloud, &imds, &fx, 0).spawn().unwrap()).await;
    let log = combined(&out);

    assert_eq!(out.status.code(), Some(3), "{log}");
    assert!(log.contains("TerminateInstances failed (InvalidInstanceID.NotFound)"), "{log}");
    assert!(fx.poweroff_marker.exists(), "fallback poweroff command not run:\n{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tags_the_instance_when_a_spot_interruption_notice_appears() {
    let cloud = cloud().await;
    let instance_id = launch_instance(&cloud).await;
    let imds = identity_for(&instance_id).await;
    // The job runs until the test releases it (bounded, so a broken test cannot hang).
    let fx = runner_fixture("");
    let release = fx.record_dir.join("release");
    let run_sh = fx.runner_dir.join("run.sh");
    let body = std::fs::read_to_string(&run_sh).unwrap();
    std::fs::write(
        &run_sh,
        format!(
            "{body}i=0\nwhile [ ! -e '{}' ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done\n",
            release.display()
        ),
    )
    .unwrap();
    put_jit(&cloud, &instance_id, &fake_jit_config()).await;

    let child = agent_command(&cloud, &imds, &fx, 30).spawn().unwrap();
    wait_for(|| async { fx.record_dir.join("args").exists() }, "run.sh to start").await;
    assert_eq!(instance_tag(&cloud, &instance_id, "hangar:interrupted").await, None);

    imds.set_spot_action(SpotAction { action: "terminate".into(), time: "2030-01-01T00:02:00Z".into() });
    wait_for(
        || async { instance_tag(&cloud, &instance_id, "hangar:interrupted").await.is_some() },
        "the hangar:interrupted tag",
    )
    .await;
    // Exactly the value the scaler writes and reads: a timestamp here once raced with the
    // scaler's "true", and whichever write landed last decided whether the job was re-run.
    assert_eq!(instance_tag(&cloud, &instance_id, "hangar:interrupted").await.as_deref(), Some("true"));
    std::fs::write(&release, "").unwrap();
    let out = finish(child).await;
    let log = combined(&out);
    assert!(out.status.success(), "{log}");
    assert!(log.contains("spot interruption notice"), "{log}");
    assert!(imds.stats().spot_action_reads >= 1);
}

/// A failure before the agent knows its instance id (here: no IMDS at all) still ends the
/// instance: the EXIT trap is the first thing the agent installs, and without an id it powers
/// off (instance-initiated shutdown terminates).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_early_failure_still_ends_the_instance() {
    let cloud = cloud().await;
    let fx = runner_fixture("exit 0");
    // A port nothing listens on, so the IMDS token request fails at once. Not a port the OS
    // handed out and this test let go: a server of a test running beside this one could be
    // given it next (CI saw this test fail), and answer. Port 1 is below every ephemeral range
    // and no part of the local cloud binds a fixed port.
    let dead_endpoint = "http://127.0.0.1:1".to_owned();
    let imds = identity_for("i-0000000000000beef").await;
    let mut cmd = agent_command(&cloud, &imds, &fx, 5);
    cmd.env("HANGAR_IMDS_ENDPOINT", &dead_endpoint);
    let out = finish(cmd.spawn().unwrap()).await;
    let log = combined(&out);

    assert_eq!(out.status.code(), Some(1), "{log}");
    assert!(log.contains("no IMDSv2 token"), "{log}");
    assert!(fx.poweroff_marker.exists(), "an early failure must still end the instance:\n{log}");
    assert!(!fx.record_dir.join("args").exists(), "run.sh must not start");
}

/// So does a bad setting, which is checked before anything else runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_error_still_ends_the_instance() {
    let cloud = cloud().await;
    let fx = runner_fixture("exit 0");
    let imds = identity_for("i-0000000000000beef").await;
    let mut cmd = agent_command(&cloud, &imds, &fx, 5);
    cmd.env("HANGAR_JIT_DEADLINE_SECONDS", "soon");
    let out = finish(cmd.spawn().unwrap()).await;
    let log = combined(&out);

    assert_eq!(out.status.code(), Some(2), "{log}");
    assert!(log.contains("configuration error"), "{log}");
    assert!(fx.poweroff_marker.exists(), "a configuration error must still end the instance:\n{log}");
}

async fn wait_for<F, Fut>(mut check: F, what: &str)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}
