//! The operator checks of `hangar config validate` (`config::lint`, `config::check_document`):
//! each one fires on the problem it names, at the right field path, and stays quiet otherwise.

use chrono::{Duration, TimeZone, Utc};
use hangar_core::config::{
    check_document, lint, warm_target, Config, ConfigProblem, DocumentCheck, WarmPoolConfig, WarmWindow,
    BOOT_AGENT_JIT_DEADLINE_SECS, MAX_CONFIG_BYTES,
};
use hangar_testsupport::{fixtures_dir, workspace_root};
use proptest::prelude::*;

const BASE: &str = r#"
organization: octo-org
github:
  app_id: 42
pools:
  - name: linux
    labels: [self-hosted, linux]
    instance_types: [m7i.large, m6i.large]
    subnets: [subnet-a, subnet-b]
    max_runners: 5
"#;

/// BASE with `from` replaced by `to` (which must occur).
fn with(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from}");
    BASE.replacen(from, to, 1)
}

/// The lint problems of a document that fits the schema (validated or not).
fn lint_of(yaml: &str) -> Vec<ConfigProblem> {
    lint(&Config::parse(yaml).expect("fits the schema"))
}

fn fields(problems: &[ConfigProblem]) -> Vec<&str> {
    problems.iter().map(|p| p.field.as_str()).collect()
}

fn schedule(windows: &str) -> String {
    with(
        "max_runners: 5",
        &format!("max_runners: 5\n    warm_pool:\n      size: 1\n      schedule: {windows}"),
    )
}

#[test]
fn the_base_document_is_clean() {
    assert_eq!(lint_of(BASE), vec![]);
    assert_eq!(check_document(BASE), DocumentCheck::Checked { pools: Some(1), problems: vec![] });
}

#[test]
fn shipped_example_configs_are_clean() {
    let files = [
        fixtures_dir().join("config/examples.yaml"),
        fixtures_dir().join("config/pools.example.yaml"),
        workspace_root().join("traces/pools.yaml"),
    ];
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        match check_document(&text) {
            DocumentCheck::Checked { pools: Some(n), problems } if problems.is_empty() => assert!(n > 0),
            other => panic!("{}: {other:?}", f.display()),
        }
    }
}

#[test]
fn a_subnet_named_twice_is_reported_at_its_second_mention() {
    let p = lint_of(&with(
        "subnets: [subnet-a, subnet-b]",
        "subnets: [subnet-a, subnet-b, subnet-c, ' subnet-a']",
    ));
    assert_eq!(fields(&p), ["pools[0].subnets[3]"]);
    assert!(p[0].message.contains("`subnet-a` is already listed as subnets[0]"), "{}", p[0].message);
    // The same subnet in two pools is normal.
    let two_pools =
        format!("{BASE}{}", &BASE[BASE.find("  - name").unwrap()..].replace("linux\n", "linux2\n"));
    assert_eq!(lint_of(&two_pools), vec![]);
}

#[test]
fn an_instance_type_named_twice_is_reported_at_each_repeat() {
    let p = lint_of(&with(
        "instance_types: [m7i.large, m6i.large]",
        "instance_types: [m7i.large, m6i.large, m7i.large, m6i.large, m5.large]",
    ));
    assert_eq!(fields(&p), ["pools[0].instance_types[2]", "pools[0].instance_types[3]"]);
    assert!(p[1].message.contains("`m6i.large` is already listed as instance_types[1]"), "{}", p[1].message);
    assert_eq!(
        lint_of(&with("instance_types: [m7i.large, m6i.large]", "instance_types: [m7i.large, m7i.xlarge]")),
        []
    );
}

#[test]
fn a_boot_timeout_above_the_agents_deadline_is_reported() {
    let over = BOOT_AGENT_JIT_DEADLINE_SECS + 1;
    let p = lint_of(&with("max_runners: 5", &format!("max_runners: 5\n    boot_timeout_secs: {over}")));
    assert_eq!(fields(&p), ["pools[0].boot_timeout_secs"]);
    assert!(p[0].message.contains(&format!("{over} s is above the boot agent's JIT deadline (600 s)")));
    let at = with(
        "max_runners: 5",
        &format!("max_runners: 5\n    boot_timeout_secs: {BOOT_AGENT_JIT_DEADLINE_SECS}"),
    );
    assert_eq!(lint_of(&at), []);
}

/// Every place that sets the boot agent's JIT deadline: the script's default
/// (`${HANGAR_JIT_DEADLINE_SECONDS:-N}`, also in the copies the image components and the stack
/// embed) and the launch template's user data (`HANGAR_JIT_DEADLINE_SECONDS=N`).
fn deadline_settings(text: &str) -> Vec<u64> {
    let mut out = Vec::new();
    for marker in ["HANGAR_JIT_DEADLINE_SECONDS:-", "HANGAR_JIT_DEADLINE_SECONDS="] {
        for (at, _) in text.match_indices(marker) {
            let digits: String = text[at + marker.len()..].chars().take_while(char::is_ascii_digit).collect();
            out.push(digits.parse().unwrap_or_else(|_| panic!("{marker} is not followed by a number")));
        }
    }
    out
}

#[test]
fn the_deadline_constant_is_the_boot_agents() {
    let root = workspace_root();
    let script = std::fs::read_to_string(root.join("ami/boot-agent/hangar-boot-agent.sh")).unwrap();
    let in_script = deadline_settings(&script);
    assert_eq!(in_script, [BOOT_AGENT_JIT_DEADLINE_SECS], "the script's default deadline");
    // Wherever else the deadline is set, it must be the same value.
    let mut files = vec![root.join("infra/template.yaml")];
    for entry in std::fs::read_dir(root.join("ami/components")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        for v in deadline_settings(&text) {
            assert_eq!(v, BOOT_AGENT_JIT_DEADLINE_SECS, "{}", f.display());
        }
    }
}

#[test]
fn a_warm_pool_above_max_runners_is_reported_for_every_size() {
    // The load check refuses this too, but stops at its first error; lint names every size.
    let p = lint_of(&with(
        "max_runners: 5",
        "max_runners: 5\n    warm_pool:\n      size: 6\n      schedule:\n        - { from: '08:00', to: '12:00', size: 9 }\n        - { from: '12:00', to: '18:00', size: 7 }",
    ));
    assert_eq!(
        fields(&p),
        [
            "pools[0].warm_pool.size",
            "pools[0].warm_pool.schedule[0].size",
            "pools[0].warm_pool.schedule[1].size"
        ]
    );
    assert!(p[1].message.starts_with("9 is above max_runners (5)"), "{}", p[1].message);
    let at_max = with(
        "max_runners: 5",
        "max_runners: 5\n    warm_pool:\n      size: 5\n      schedule: [{ from: '08:00', to: '18:00', size: 5 }]",
    );
    assert_eq!(lint_of(&at_max), []);
}

#[test]
fn a_window_holding_no_time_never_applies() {
    let cases: &[(&str, &str, &str)] = &[
        ("[{ from: '09:00', to: '09:00', size: 2 }]", "pools[0].warm_pool.schedule[0].to", "holds no time"),
        (
            "[{ from: '18:00', to: '08:00', size: 2 }]",
            "pools[0].warm_pool.schedule[0].to",
            "18:00-24:00 and 00:00-08:00",
        ),
        ("[{ from: '9:00', to: '10:00', size: 2 }]", "pools[0].warm_pool.schedule[0].from", "not HH:MM"),
        ("[{ from: '09:00', to: '25:00', size: 2 }]", "pools[0].warm_pool.schedule[0].to", "not HH:MM"),
        (
            "[{ days: [Mon, funday], from: '09:00', to: '10:00', size: 2 }]",
            "pools[0].warm_pool.schedule[0].days",
            "names no weekday",
        ),
    ];
    for (windows, field, says) in cases {
        let p = lint_of(&schedule(windows));
        assert_eq!(fields(&p), [*field], "{windows}");
        assert!(p[0].message.contains(says), "{windows}: {}", p[0].message);
    }
    // Empty `days` means every day (as warm_target reads it), and 24:00 ends a day.
    assert_eq!(lint_of(&schedule("[{ days: [], from: '00:00', to: '24:00', size: 2 }]")), []);
    assert_eq!(lint_of(&schedule("[{ days: [sat, funday], from: '09:00', to: '10:00', size: 2 }]")), []);
}

#[test]
fn a_window_always_overridden_never_applies() {
    // (windows, the ones reported)
    let cases: &[(&str, &[&str])] = &[
        // Inside a larger one, on its days only.
        (
            "[{ from: '08:00', to: '18:00', size: 4 }, { days: [mon], from: '09:00', to: '10:00', size: 2 }]",
            &["pools[0].warm_pool.schedule[1]"],
        ),
        // The same window twice: the second changes nothing.
        (
            "[{ days: [mon], from: '09:00', to: '10:00', size: 2 }, { days: [mon], from: '09:00', to: '10:00', size: 2 }]",
            &["pools[0].warm_pool.schedule[1]"],
        ),
        // Covered by two windows together, each larger.
        (
            "[{ from: '12:00', to: '13:00', size: 1 }, { from: '08:00', to: '12:30', size: 3 }, { from: '12:30', to: '18:00', size: 2 }]",
            &["pools[0].warm_pool.schedule[0]"],
        ),
        // Sticks out of the larger one by a minute: it applies.
        ("[{ from: '08:00', to: '18:00', size: 4 }, { from: '07:59', to: '10:00', size: 2 }]", &[]),
        // On a day the larger one does not hold: it applies.
        ("[{ days: [mon, tue], from: '08:00', to: '18:00', size: 4 }, { days: [tue, wed], from: '09:00', to: '10:00', size: 2 }]", &[]),
        // A larger window inside a smaller one: both apply.
        ("[{ from: '08:00', to: '18:00', size: 2 }, { from: '09:00', to: '10:00', size: 4 }]", &[]),
        // The same size, listed first, inside the later one: both set the size somewhere.
        ("[{ from: '09:00', to: '10:00', size: 2 }, { from: '08:00', to: '18:00', size: 2 }]", &[]),
    ];
    for (windows, want) in cases {
        let p = lint_of(&schedule(windows));
        assert_eq!(fields(&p), *want, "{windows}");
    }
    let p = lint_of(&schedule(cases[2].0));
    assert!(
        p[0].message.contains("schedule[1] (size 3), schedule[2] (size 2) sets the size instead"),
        "{}",
        p[0].message
    );
}

/// The week of warm targets `warm_target` (the planner's own evaluation) gives a schedule.
fn week_of_targets(schedule: &[WarmWindow]) -> Vec<u32> {
    let cfg = WarmPoolConfig { size: 100, timezone: "UTC".into(), schedule: schedule.to_vec() };
    let monday = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
    (0..7 * 24 * 60).map(|m| warm_target(&cfg, 1000, monday + Duration::minutes(m))).collect()
}

#[test]
fn never_applies_agrees_with_the_planners_warm_target() {
    // A window reported as never applying can be removed without changing the warm target at any
    // minute of the week; one not reported (sizes all distinct here) cannot.
    let schedules = [
        "[{ from: '08:00', to: '18:00', size: 4 }, { days: [mon], from: '09:00', to: '10:00', size: 2 }, { days: [sun], from: '00:00', to: '24:00', size: 0 }]",
        "[{ from: '12:00', to: '13:00', size: 1 }, { from: '08:00', to: '12:30', size: 3 }, { from: '12:30', to: '18:00', size: 2 }]",
        "[{ days: [mon, tue], from: '08:00', to: '18:00', size: 4 }, { days: [tue, wed], from: '09:00', to: '10:00', size: 2 }, { days: [wed], from: '09:30', to: '09:45', size: 1 }]",
        "[{ from: '18:00', to: '08:00', size: 5 }, { from: '07:00', to: '09:00', size: 3 }, { days: [fri], from: '08:00', to: '08:30', size: 6 }]",
    ];
    let mut reported_somewhere = 0;
    for s in schedules {
        let cfg = Config::parse(&schedule(s)).unwrap();
        let windows = &cfg.pools[0].warm_pool.schedule;
        let reported: Vec<usize> = lint(&cfg)
            .iter()
            .filter(|p| p.message.contains("never applies"))
            .filter_map(|p| {
                let rest = p.field.strip_prefix("pools[0].warm_pool.schedule[")?;
                rest[..rest.find(']')?].parse().ok()
            })
            .collect();
        let all = week_of_targets(windows);
        for j in 0..windows.len() {
            let mut without = windows.clone();
            without.remove(j);
            let same = week_of_targets(&without) == all;
            assert_eq!(same, reported.contains(&j), "{s}: window {j}");
        }
        reported_somewhere += reported.len();
    }
    assert!(reported_somewhere >= 3, "the schedules above hold windows that never apply");
}

#[test]
fn a_missing_app_id_is_not_a_problem_the_stack_supplies_it() {
    // Deployed before the App exists, the scaler waits for the id without an error
    // (`hangar_scaler::without_app`), and the stack's `GitHubAppId` overrides the file's.
    let p = lint_of(&BASE.replace("github:\n  app_id: 42\n", ""));
    assert!(p.is_empty(), "{p:?}");
}

#[test]
fn every_problem_is_collected_and_the_load_error_comes_first() {
    let yaml = with(
        "subnets: [subnet-a, subnet-b]\n    max_runners: 5",
        "subnets: [subnet-a, subnet-a]\n    max_runners: 5\n    boot_timeout_secs: 900\n    warm_pool: { size: 7 }",
    );
    let DocumentCheck::Checked { pools: Some(1), problems } = check_document(&yaml) else { panic!() };
    // The load names the warm pool (its first error); lint's own report of that field is left out.
    assert_eq!(
        fields(&problems),
        ["pools[0].warm_pool.size", "pools[0].subnets[1]", "pools[0].boot_timeout_secs"]
    );
    assert_eq!(problems[0].message, "must not exceed max_runners");
    // A load error lint does not know of comes first as well, and lint still runs.
    let yaml = with("labels: [self-hosted, linux]", "labels: []\n    boot_timeout_secs: 900");
    let DocumentCheck::Checked { problems, .. } = check_document(&yaml) else { panic!() };
    assert_eq!(fields(&problems), ["pools[0].labels", "pools[0].boot_timeout_secs"]);
}

#[test]
fn schema_errors_name_their_path() {
    let yaml = with("max_runners: 5", "max_runners: 5\n    max_runner: 9");
    let DocumentCheck::Checked { pools: None, problems } = check_document(&yaml) else { panic!() };
    assert_eq!(fields(&problems), ["pools[0]"]);
    assert!(problems[0].message.starts_with("unknown field `max_runner`"), "{}", problems[0].message);
    let DocumentCheck::Checked { problems, .. } = check_document("organization: o\n") else { panic!() };
    assert_eq!(fields(&problems), [""]);
    assert!(problems[0].message.contains("missing field `pools`"), "{}", problems[0].message);
}

#[test]
fn a_document_that_is_not_yaml_is_told_apart() {
    for text in ["pools: [unclosed\n", "a: b: c\n", "organization: 'unterminated\n"] {
        assert!(matches!(check_document(text), DocumentCheck::NotYaml(_)), "{text}");
    }
    // JSON is YAML: a JSON document is checked like any other.
    let json = r#"{"organization": "o", "github": {"app_id": 1}, "pools": [{"name": "p", "labels": ["x"],
        "instance_types": ["t"], "subnets": ["s", "s"], "max_runners": 1}]}"#;
    let DocumentCheck::Checked { problems, .. } = check_document(json) else { panic!() };
    assert_eq!(fields(&problems), ["pools[0].subnets[1]"]);
}

#[test]
fn an_oversized_document_is_refused_as_the_lambdas_refuse_it() {
    let big = format!("{BASE}#{}\n", "x".repeat(MAX_CONFIG_BYTES));
    let DocumentCheck::Checked { pools: None, problems } = check_document(&big) else { panic!() };
    assert_eq!(fields(&problems), [""]);
    assert!(problems[0].message.contains("over the 262144-byte limit"), "{}", problems[0].message);
    let just_fits = format!("{BASE}#{}\n", "x".repeat(MAX_CONFIG_BYTES - BASE.len() - 2));
    assert_eq!(check_document(&just_fits), DocumentCheck::Checked { pools: Some(1), problems: vec![] });
}

/// A window on a half-hour grid, so that random windows overlap, meet and nest often.
fn arb_window() -> impl Strategy<Value = (Vec<&'static str>, String, String)> {
    let days = proptest::sample::subsequence(vec!["mon", "tue", "wed", "thu", "fri", "sat", "sun"], 0..=3);
    let hhmm = (0u32..=48).prop_map(|h| format!("{:02}:{:02}", h / 2, h % 2 * 30));
    (days, hhmm.clone(), hhmm)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// With distinct sizes, a window is reported as never applying exactly when removing it
    /// leaves the planner's warm target unchanged at every minute of the week.
    #[test]
    fn never_applies_is_exactly_the_windows_warm_target_ignores(
        windows in proptest::collection::vec(arb_window(), 1..=5),
        sizes in Just((1u32..=5).collect::<Vec<u32>>()).prop_shuffle(),
    ) {
        let schedule: Vec<WarmWindow> = windows
            .iter()
            .zip(&sizes)
            .map(|((days, from, to), size)| WarmWindow {
                days: days.iter().map(|d| d.to_string()).collect(),
                from: from.clone(),
                to: to.clone(),
                size: *size,
            })
            .collect();
        let mut cfg = Config::parse(BASE).unwrap();
        cfg.pools[0].max_runners = 1000;
        cfg.pools[0].warm_pool.schedule = schedule.clone();
        let reported: Vec<String> = lint(&cfg)
            .into_iter()
            .filter(|p| p.message.contains("never applies"))
            .map(|p| p.field)
            .collect();
        let all = week_of_targets(&schedule);
        for j in 0..schedule.len() {
            let mut without = schedule.clone();
            without.remove(j);
            let ignored = week_of_targets(&without) == all;
            let at = format!("pools[0].warm_pool.schedule[{j}]");
            let is_reported = reported.iter().any(|f| f == &at || f.starts_with(&format!("{at}.")));
            prop_assert_eq!(ignored, is_reported, "window {}: {:?}", j, schedule);
        }
    }
}

#[test]
fn warm_target_follows_schedule_windows_in_the_pool_timezone() {
    let window = |days: &[&str], from: &str, to: &str, size: u32| WarmWindow {
        days: days.iter().map(|d| d.to_string()).collect(),
        from: from.into(),
        to: to.into(),
        size,
    };
    let cfg = WarmPoolConfig {
        size: 1,
        timezone: "Europe/Berlin".into(),
        schedule: vec![
            window(&["mon", "tue", "wed", "thu", "fri"], "08:00", "18:00", 5),
            window(&[], "12:00", "13:00", 8),
        ],
    };
    let at = |y, mo, d, h, mi| Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap();
    // (case, UTC time, expected). Berlin is UTC+1 in winter, UTC+2 in summer.
    let cases = [
        ("Monday 06:59 UTC = 07:59 Berlin: before the window", at(2026, 1, 5, 6, 59), 1),
        ("Monday 07:00 UTC = 08:00 Berlin: from is inclusive", at(2026, 1, 5, 7, 0), 5),
        ("Monday 16:59 UTC = 17:59 Berlin", at(2026, 1, 5, 16, 59), 5),
        ("Monday 17:00 UTC = 18:00 Berlin: to is exclusive", at(2026, 1, 5, 17, 0), 1),
        ("overlapping windows: the largest wins", at(2026, 1, 5, 11, 30), 8),
        ("Saturday noon Berlin: only the every-day window", at(2026, 1, 10, 11, 15), 8),
        ("Saturday morning: default", at(2026, 1, 10, 8, 0), 1),
        ("summer time: 06:00 UTC = 08:00 Berlin", at(2026, 7, 6, 6, 0), 5),
        ("Sunday 23:30 UTC = Monday 00:30 Berlin: weekday is local", at(2026, 1, 4, 23, 30), 1),
    ];
    for (case, now, want) in cases {
        assert_eq!(warm_target(&cfg, 20, now), want, "{case}");
    }
    assert_eq!(warm_target(&cfg, 3, at(2026, 1, 5, 11, 30)), 3, "clamped to max_runners");
}
