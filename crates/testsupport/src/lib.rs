//! Real servers for tests, started on 127.0.0.1 and a free port, stopped (by PID) on drop.
//!
//! `MotoServer` runs `moto_server` from the virtualenv that `tools/setup.sh` creates
//! (`.venv/bin/moto_server`, or `$HANGAR_MOTO_SERVER`). One server per test binary is shared
//! through [`moto`]; tests isolate themselves by unique names and may call [`MotoServer::reset`].

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The workspace root, found from this crate's manifest directory.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).ancestors().nth(2).expect("workspace root").to_path_buf()
}

/// `fixtures/` under the workspace root.
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("fixtures")
}

/// GitHub's example payloads extracted by `tools/setup.sh`. Panics with the fix if missing.
pub fn octokit_examples(event: &str) -> Vec<(String, String)> {
    let dir = fixtures_dir().join("octokit").join(event);
    let mut out: Vec<(String, String)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}; run `bash tools/setup.sh` (make test does)", dir.display()))
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            (p.file_name().unwrap().to_string_lossy().into_owned(), std::fs::read_to_string(&p).unwrap())
        })
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no {event} examples in {}", dir.display());
    out
}

/// The pinned npm packages under `tools/npm/node_modules`.
pub fn npm_package_dir(name: &str) -> PathBuf {
    let d = workspace_root().join("tools/npm/node_modules").join(name);
    assert!(d.exists(), "{} missing; run `bash tools/setup.sh` (make test does)", d.display());
    d
}

/// A free TCP port on 127.0.0.1. The listener is dropped before returning, so another process
/// could take it in between; servers that can bind port 0 themselves should prefer that.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0").local_addr().unwrap().port()
}

pub struct MotoServer {
    child: Child,
    port: u16,
}

impl MotoServer {
    pub fn start() -> Self {
        let bin = std::env::var("HANGAR_MOTO_SERVER")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace_root().join(".venv/bin/moto_server"));
        assert!(bin.exists(), "{} missing; run `bash tools/setup.sh` (make test does)", bin.display());
        let mut last_err = String::new();
        for _ in 0..5 {
            let port = free_port();
            let child = spawn_with_watchdog(&format!(
                "{} -H 127.0.0.1 -p {port}",
                shell_quote(&bin.to_string_lossy())
            ));
            let mut server = MotoServer { child, port };
            if server.wait_ready(Duration::from_secs(30)) {
                return server;
            }
            last_err = format!("moto_server on port {port} did not become ready");
            server.stop();
        }
        panic!("{last_err}");
    }

    fn wait_ready(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return false;
            }
            if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Drop all state moto holds (`POST /moto-api/reset`).
    pub fn reset(&self) {
        let url = format!("{}/moto-api/reset", self.endpoint());
        let status = std::process::Command::new("curl")
            .args(["-sf", "-X", "POST", &url, "-o", "/dev/null"])
            .status()
            .expect("curl");
        assert!(status.success(), "moto reset failed");
    }

    fn stop(&mut self) {
        stop_watchdog(&mut self.child);
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One moto_server per test binary, started on first use. Statics are never dropped, so the
/// server runs under a watchdog shell that kills it when this test process exits.
pub fn moto() -> &'static MotoServer {
    static SERVER: OnceLock<MotoServer> = OnceLock::new();
    SERVER.get_or_init(MotoServer::start)
}

/// An SDK config pointed at an endpoint (moto, or the fault proxy in front of it), with fixed
/// test credentials and region, built the same way the Lambdas build theirs.
pub async fn aws_config_for(endpoint: &str) -> aws_config::SdkConfig {
    let creds = aws_credential_types::Credentials::new("testing", "testing", None, None, "hangar-tests");
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .load()
        .await
}

/// Runs `command` under a bash watchdog: the command is killed when the watchdog gets SIGTERM
/// or when the current (test) process exits, whichever comes first, so no server outlives the
/// test binary that started it, even one held in a `static`.
pub fn spawn_with_watchdog(command: &str) -> Child {
    let me = std::process::id();
    let script = format!(
        "{command} & c=$!; trap 'kill $c 2>/dev/null; wait $c 2>/dev/null; exit 0' TERM INT EXIT; \
         while kill -0 {me} 2>/dev/null && kill -0 $c 2>/dev/null; do sleep 0.3; done"
    );
    Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn bash watchdog")
}

/// Stops a child started by [`spawn_with_watchdog`]: SIGTERM so its trap kills the server.
pub fn stop_watchdog(child: &mut Child) {
    let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}
