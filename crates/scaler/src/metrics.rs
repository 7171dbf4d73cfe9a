//! Where metric records go: EMF lines on stdout in Lambda (no CloudWatch API call), or a
//! buffer that tests and benchmarks read back.

use chrono::{DateTime, Utc};
use hangar_core::emf;
use hangar_core::metrics::MetricRecord;
use serde_json::Value;
use std::io::Write;
use std::sync::Mutex;

enum Sink {
    Stdout,
    Memory(Mutex<Vec<String>>),
}

pub struct Metrics {
    namespace: String,
    sink: Sink,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").field("namespace", &self.namespace).finish()
    }
}

impl Metrics {
    /// EMF lines on stdout, for the Lambda log agent.
    pub fn stdout(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), sink: Sink::Stdout }
    }

    /// Lines kept in memory (tests, benchmarks).
    pub fn in_memory(namespace: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), sink: Sink::Memory(Mutex::default()) }
    }

    pub fn emit(&self, records: &[MetricRecord], now: DateTime<Utc>) {
        if records.is_empty() {
            return;
        }
        let ts = now.timestamp_millis();
        match &self.sink {
            Sink::Stdout => {
                let mut out = std::io::stdout().lock();
                for r in records {
                    let _ = writeln!(out, "{}", emf::render(&self.namespace, r, ts));
                }
            }
            Sink::Memory(lines) => {
                let mut lines = lines.lock().unwrap_or_else(|e| e.into_inner());
                lines.extend(records.iter().map(|r| emf::render(&self.namespace, r, ts)));
            }
        }
    }

    /// The EMF lines recorded so far (empty for stdout).
    pub fn lines(&self) -> Vec<String> {
        match &self.sink {
            Sink::Stdout => Vec::new(),
            Sink::Memory(lines) => lines.lock().unwrap_or_else(|e| e.into_inner()).clone(),
        }
    }

    pub fn clear(&self) {
        if let Sink::Memory(lines) = &self.sink {
            lines.lock().unwrap_or_else(|e| e.into_inner()).clear();
        }
    }

    /// Sum of metric `name` over the recorded lines, optionally only where dimension `key`
    /// equals `value`. Read back from the rendered EMF, so it checks what CloudWatch would get.
    pub fn total(&self, name: &str, dimension: Option<(&str, &str)>) -> f64 {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| dimension.is_none_or(|(k, want)| v.get(k).and_then(Value::as_str) == Some(want)))
            .filter_map(|v| v.get(name).and_then(Value::as_f64))
            .sum()
    }

    /// The last value of gauge `name` for `pool`.
    pub fn last(&self, name: &str, pool: &str) -> Option<f64> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("Pool").and_then(Value::as_str) == Some(pool))
            .filter_map(|v| v.get(name).and_then(Value::as_f64))
            .next_back()
    }
}
