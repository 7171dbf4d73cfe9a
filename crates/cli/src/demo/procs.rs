//! Child processes the demo starts (moto, `cargo lambda watch`, the Lambda binaries), each with
//! its output in a log file and a watchdog that kills it if the demo itself dies, so nothing
//! outlives a run. Everything is stopped by PID.

use anyhow::Context;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

pub struct Proc {
    pub name: String,
    child: tokio::process::Child,
    watchdog: Option<std::process::Child>,
    pub log: PathBuf,
}

pub struct Spec<'a> {
    pub name: String,
    pub program: &'a Path,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub cwd: &'a Path,
    pub log_dir: &'a Path,
}

impl Proc {
    pub fn spawn(spec: Spec<'_>) -> anyhow::Result<Self> {
        let log = spec.log_dir.join(format!("{}.log", spec.name));
        let out = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let err = out.try_clone()?;
        let mut cmd = tokio::process::Command::new(spec.program);
        cmd.args(&spec.args)
            .current_dir(spec.cwd)
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        for (k, v) in &spec.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().with_context(|| format!("starting {}", spec.program.display()))?;
        let pid = child.id().context("child has no pid")?;
        // Kills the child if this process goes away without stopping it (SIGKILL, a panic in a
        // test): `kill_on_drop` covers only orderly drops.
        let me = std::process::id();
        let script = format!(
            "while kill -0 {me} 2>/dev/null && kill -0 {pid} 2>/dev/null; do sleep 0.5; done; kill -TERM {pid} 2>/dev/null; sleep 2; kill -KILL {pid} 2>/dev/null; exit 0"
        );
        let watchdog = std::process::Command::new("bash")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok();
        Ok(Proc { name: spec.name, child, watchdog, log })
    }

    pub fn exited(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(Some(_)))
    }

    /// SIGKILL, no grace: a Lambda execution environment that dies mid-invocation.
    pub async fn kill_hard(&mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
        self.reap_watchdog();
    }

    /// SIGTERM, then SIGKILL after a grace period.
    pub async fn stop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = tokio::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status().await;
            if tokio::time::timeout(Duration::from_secs(3), self.child.wait()).await.is_err() {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
            }
        }
        self.reap_watchdog();
    }

    fn reap_watchdog(&mut self) {
        if let Some(mut w) = self.watchdog.take() {
            // The watchdog ends by itself within half a second of its child; do not block on it.
            if !matches!(w.try_wait(), Ok(Some(_))) {
                let _ = std::process::Command::new("kill").args(["-TERM", &w.id().to_string()]).status();
                let _ = w.wait();
            }
        }
    }
}

/// A free port on 127.0.0.1 (the listener is closed before returning).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Waits until something accepts TCP connections on the port, or the process exits.
pub async fn wait_port(p: &mut Proc, port: u16, timeout: Duration) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if p.exited() {
            anyhow::bail!("{} exited during start-up; see {}", p.name, p.log.display());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("{} did not listen on 127.0.0.1:{port} within {timeout:?}; see {}", p.name, p.log.display())
}
