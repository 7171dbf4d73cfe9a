//! Helpers shared by the benchmarks.

use std::path::PathBuf;

/// `fixtures/` at the workspace root (extracted by `tools/setup.sh`).
pub fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fixtures")
}
