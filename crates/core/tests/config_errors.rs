//! Configuration errors are named precisely; hostile documents are refused without blowing up.

use hangar_core::config::{Config, ConfigError, MAX_CONFIG_BYTES};
use hangar_testsupport::fixtures_dir;

const BASE: &str = r#"
organization: octo-org
pools:
  - name: linux
    labels: [self-hosted, linux]
    instance_types: [m7i.large]
    subnets: [subnet-a]
    max_runners: 5
"#;

fn err(yaml: &str) -> ConfigError {
    Config::from_yaml(yaml).expect_err("must be refused")
}

fn field(e: ConfigError) -> String {
    match e {
        ConfigError::Invalid { field, .. } => field,
        other => panic!("expected Invalid, got {other:?}"),
    }
}

#[test]
fn shipped_examples_are_valid() {
    for f in ["config/examples.yaml", "config/pools.example.yaml"] {
        let text = std::fs::read_to_string(fixtures_dir().join(f)).unwrap();
        Config::from_yaml(&text).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn defaults_are_safe() {
    let c = Config::from_yaml(BASE).unwrap();
    let p = &c.pools[0];
    assert!(!p.allow_public_repositories, "public repositories are refused unless configured");
    assert_eq!(p.market.allocation_strategy, "price-capacity-optimized");
    assert_eq!(p.warm_pool.timezone, "UTC");
    assert_eq!(c.github.api_url, "https://api.github.com");
}

#[test]
fn each_invalid_field_is_named() {
    let cases: &[(&str, &str, &str)] = &[
        ("max_runners: 5", "max_runners: 0", "pools[0].max_runners"),
        ("labels: [self-hosted, linux]", "labels: []", "pools[0].labels"),
        ("subnets: [subnet-a]", "subnets: []", "pools[0].subnets"),
        ("instance_types: [m7i.large]", "instance_types: []", "pools[0].instance_types"),
        ("name: linux", "name: \"bad name!\"", "pools[0].name"),
        ("organization: octo-org", "organization: \"\"", "organization"),
        ("max_runners: 5", "max_runners: 5\n    warm_pool: {timezone: Mars/Olympus}", "pools[0].warm_pool.timezone"),
        ("max_runners: 5", "max_runners: 5\n    warm_pool: {size: 9}", "pools[0].warm_pool.size"),
        (
            "max_runners: 5",
            "max_runners: 5\n    warm_pool: {schedule: [{from: '18:00', to: '08:00', size: 1}]}",
            "pools[0].warm_pool.schedule[0].to",
        ),
        (
            "max_runners: 5",
            "max_runners: 5\n    warm_pool: {schedule: [{days: [funday], from: '08:00', to: '09:00', size: 1}]}",
            "pools[0].warm_pool.schedule[0].days",
        ),
        ("max_runners: 5", "max_runners: 5\n    repositories: [justaname]", "pools[0].repositories"),
    ];
    for (from, to, want) in cases {
        let yaml = BASE.replace(from, to);
        assert_eq!(field(err(&yaml)), *want, "{to}");
    }
    let dup = format!("{BASE}{}", &BASE[BASE.find("  - name").unwrap()..].replace("linux\n", "LINUX\n"));
    assert_eq!(field(err(&dup)), "pools[1].name");
    assert_eq!(field(err("organization: o\npools: []")), "pools");
}

#[test]
fn parse_errors_say_what_and_where() {
    let e = err(&BASE.replace("max_runners: 5", "max_runners: 5\n    max_runner: 9"));
    assert!(matches!(&e, ConfigError::Parse(m) if m.contains("max_runner")), "{e}");
    let e = err(&BASE.replace("max_runners: 5", "max_runners: many"));
    assert!(matches!(&e, ConfigError::Parse(_)), "{e}");
    assert!(matches!(err(""), ConfigError::Parse(_)));
    assert!(matches!(err("- just\n- a list"), ConfigError::Parse(_)));
    assert!(matches!(err("{\"organization\": 1"), ConfigError::Parse(_)));
}

#[test]
fn oversized_and_alias_bomb_documents_are_refused() {
    let big = format!("{BASE}\n#{}", "x".repeat(MAX_CONFIG_BYTES));
    assert!(matches!(err(&big), ConfigError::TooLarge(_)));
    // A "billion laughs" document: each level references the previous one nine times.
    let mut bomb = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    bomb.push_str(BASE);
    assert!(matches!(err(&bomb), ConfigError::Parse(_)));
}

#[test]
fn json_documents_are_accepted() {
    let json = r#"{"organization":"o","pools":[{"name":"p","labels":["self-hosted"],"instance_types":["t3.small"],"subnets":["s"],"max_runners":1}]}"#;
    assert_eq!(Config::from_yaml(json).unwrap().pools[0].name.as_str(), "p");
}
