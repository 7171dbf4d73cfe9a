//! `hangar config validate` as an operator runs it: the real binary on real files.

use hangar_testsupport::workspace_root;
use std::path::Path;
use std::process::Command;

struct Run {
    code: i32,
    out: String,
    err: String,
}

fn hangar(args: &[&str]) -> Run {
    let out =
        Command::new(env!("CARGO_BIN_EXE_hangar")).args(args).current_dir(workspace_root()).output().unwrap();
    Run {
        code: out.status.code().unwrap_or(-1),
        out: String::from_utf8(out.stdout).unwrap(),
        err: String::from_utf8(out.stderr).unwrap(),
    }
}

fn validate(file: &Path) -> Run {
    hangar(&["config", "validate", file.to_str().unwrap()])
}

const BASE: &str = "\
organization: octo-org
github:
  app_id: 42
pools:
  - name: linux-x64
    labels: [self-hosted, linux, x64]
    instance_types: [m7i.large, m6i.large]
    subnets: [subnet-a, subnet-b]
    max_runners: 5
";

/// Writes BASE, with `from` replaced by `to`, into a file of the temporary directory.
fn file_with(dir: &tempfile::TempDir, name: &str, from: &str, to: &str) -> std::path::PathBuf {
    assert!(BASE.contains(from), "{from}");
    let path = dir.path().join(name);
    std::fs::write(&path, BASE.replacen(from, to, 1)).unwrap();
    path
}

#[test]
fn the_shipped_configs_are_clean() {
    for (f, pools) in [
        ("fixtures/config/examples.yaml", 2),
        ("fixtures/config/pools.example.yaml", 2),
        ("traces/pools.yaml", 3),
    ] {
        let r = hangar(&["config", "validate", f]);
        assert_eq!(
            (r.code, r.out.as_str(), r.err.as_str()),
            (0, format!("ok: {pools} pools\n").as_str(), ""),
            "{f}"
        );
    }
}

#[test]
fn a_clean_file_exits_0_yaml_or_json() {
    let dir = tempfile::tempdir().unwrap();
    let yaml = file_with(&dir, "pools.yaml", "max_runners: 5", "max_runners: 5");
    let r = validate(&yaml);
    assert_eq!((r.code, r.out.as_str()), (0, "ok: 1 pool\n"), "{}", r.err);
    let json = dir.path().join("pools.json");
    std::fs::write(
        &json,
        r#"{"organization": "o", "github": {"app_id": 7}, "pools": [{"name": "p", "labels": ["x"],
           "instance_types": ["m7i.large"], "subnets": ["subnet-a"], "max_runners": 1}]}"#,
    )
    .unwrap();
    let r = validate(&json);
    assert_eq!((r.code, r.out.as_str()), (0, "ok: 1 pool\n"), "{}", r.err);
}

#[test]
fn each_problem_is_one_line_with_its_field_and_exit_1() {
    let dir = tempfile::tempdir().unwrap();
    // (name, from, to, the line's field path and the start of its message)
    let cases: &[(&str, &str, &str, &str)] = &[
        (
            "dup-subnet",
            "subnets: [subnet-a, subnet-b]",
            "subnets: [subnet-a, subnet-b, subnet-a]",
            "pools[0].subnets[2]: `subnet-a` is already listed as subnets[0]",
        ),
        (
            "dup-type",
            "instance_types: [m7i.large, m6i.large]",
            "instance_types: [m6i.large, m6i.large]",
            "pools[0].instance_types[1]: `m6i.large` is already listed as instance_types[0]",
        ),
        (
            "boot-timeout",
            "max_runners: 5",
            "max_runners: 5\n    boot_timeout_secs: 601",
            "pools[0].boot_timeout_secs: 601 s is above the boot agent's JIT deadline (600 s)",
        ),
        (
            "warm-above-max",
            "max_runners: 5",
            "max_runners: 5\n    warm_pool: { size: 6 }",
            "pools[0].warm_pool.size: must not exceed max_runners",
        ),
        (
            "window-above-max",
            "max_runners: 5",
            "max_runners: 5\n    warm_pool: { schedule: [{ from: '08:00', to: '18:00', size: 8 }] }",
            "pools[0].warm_pool.schedule[0].size: must not exceed max_runners",
        ),
        (
            "window-empty",
            "max_runners: 5",
            "max_runners: 5\n    warm_pool: { schedule: [{ from: '08:00', to: '08:00', size: 2 }] }",
            "pools[0].warm_pool.schedule[0].to: must be after `from`",
        ),
        (
            "window-overridden",
            "max_runners: 5",
            "max_runners: 5\n    warm_pool: { schedule: [{ from: '08:00', to: '18:00', size: 3 }, \
             { days: [mon], from: '09:00', to: '10:00', size: 2 }] }",
            "pools[0].warm_pool.schedule[1]: never applies: wherever it holds, schedule[0] (size 3)",
        ),
        (
            "lambda-load-check",
            "labels: [self-hosted, linux, x64]",
            "labels: []",
            "pools[0].labels: at least one label",
        ),
        (
            "schema",
            "max_runners: 5",
            "max_runners: 5\n    max_runner: 9",
            "pools[0]: unknown field `max_runner`",
        ),
    ];
    for (name, from, to, want) in cases {
        let f = file_with(&dir, &format!("{name}.yaml"), from, to);
        let r = validate(&f);
        let lines: Vec<&str> = r.out.lines().collect();
        assert_eq!(r.code, 1, "{name}: {}{}", r.out, r.err);
        assert_eq!(lines.len(), 1, "{name}: {}", r.out);
        let prefix = format!("{}: {want}", f.display());
        assert!(lines[0].starts_with(&prefix), "{name}: {}\nwanted: {prefix}", lines[0]);
        assert_eq!(r.err, format!("{}: 1 problem\n", f.display()), "{name}");
    }
}

#[test]
fn every_operator_problem_is_listed_not_only_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let f = file_with(
        &dir,
        "many.yaml",
        "instance_types: [m7i.large, m6i.large]\n    subnets: [subnet-a, subnet-b]\n    max_runners: 5",
        "instance_types: [m7i.large, m7i.large]\n    subnets: [subnet-b, subnet-b]\n    max_runners: 5\n    \
         boot_timeout_secs: 1200\n    warm_pool: { size: 2, schedule: [{ days: [sat], from: '10:00', to: '11:00', size: 1 }, \
         { days: [sat], from: '10:00', to: '11:00', size: 1 }] }",
    );
    let r = validate(&f);
    assert_eq!(r.code, 1, "{}", r.err);
    let fields: Vec<&str> = r
        .out
        .lines()
        .map(|l| l.strip_prefix(&format!("{}: ", f.display())).unwrap().split(": ").next().unwrap())
        .collect();
    assert_eq!(
        fields,
        [
            "pools[0].subnets[1]",
            "pools[0].instance_types[1]",
            "pools[0].boot_timeout_secs",
            "pools[0].warm_pool.schedule[1]"
        ]
    );
    assert_eq!(r.err, format!("{}: 4 problems\n", f.display()));
}

#[test]
fn malformed_yaml_exits_2_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("broken.yaml");
    std::fs::write(&f, "organization: octo-org\npools: [ { name: linux\n").unwrap();
    let r = validate(&f);
    assert_eq!(r.code, 2, "{}{}", r.out, r.err);
    assert_eq!(r.out, "");
    assert!(r.err.starts_with(&format!("hangar: error: {} is not YAML or JSON: ", f.display())), "{}", r.err);
    assert!(r.err.contains("line "), "the parser's position: {}", r.err);
}

#[test]
fn an_unreadable_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.yaml");
    let r = validate(&missing);
    assert_eq!((r.code, r.out.as_str()), (2, ""));
    assert!(r.err.contains(&format!("reading {}", missing.display())), "{}", r.err);
    // A directory is no file either.
    let r = validate(dir.path());
    assert_eq!(r.code, 2, "{}", r.err);
    let binary = dir.path().join("binary.yaml");
    std::fs::write(&binary, b"organization: \xff\xfe\n").unwrap();
    let r = validate(&binary);
    assert_eq!(r.code, 2, "{}", r.err);
    assert!(r.err.contains("is not UTF-8 text"), "{}", r.err);
}

#[test]
fn an_oversized_file_is_refused_as_the_lambdas_refuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("big.yaml");
    std::fs::write(&f, format!("{BASE}# {}\n", "x".repeat(256 * 1024))).unwrap();
    let r = validate(&f);
    assert_eq!(r.code, 1, "{}", r.err);
    let size = std::fs::metadata(&f).unwrap().len();
    assert_eq!(
        r.out,
        format!("{}: configuration is {size} bytes, over the 262144-byte limit\n", f.display())
    );
}

#[test]
fn the_help_says_what_each_exit_status_means() {
    let r = hangar(&["config", "validate", "--help"]);
    assert_eq!(r.code, 0);
    for line in ["0  no problem", "1  problems found", "2  the file cannot be read"] {
        assert!(r.out.contains(line), "{line}: {}", r.out);
    }
    let r = hangar(&["config", "validate"]);
    assert_eq!(r.code, 2, "a missing FILE is a usage error: {}", r.err);
}
