//! CloudWatch Embedded Metric Format. One JSON line per record on stdout; the Lambda log agent
//! turns it into a metric. Each record declares the dimension sets `[["Pool", extra?], []]` so
//! that alarms can watch the pool-less aggregate series as well as each pool.

use crate::metrics::MetricRecord;
use std::fmt::Write;

/// Renders one record as an EMF line. `timestamp_ms` is the event time in Unix milliseconds.
///
/// Written by hand rather than through `serde_json::Value`: this runs on every webhook, and the
/// map-building version cost several times the rest of the metric work. Every string that is not
/// a fixed metric or dimension name goes through `serde_json` for escaping.
pub fn render(namespace: &str, record: &MetricRecord, timestamp_ms: i64) -> String {
    let mut out = String::with_capacity(256);
    let mut dims: Vec<&str> = Vec::with_capacity(2);
    out.push('{');
    if let Some(pool) = &record.pool {
        dims.push("Pool");
        out.push_str("\"Pool\":");
        push_json_str(&mut out, pool.as_str());
        out.push(',');
    }
    if let Some((k, v)) = &record.extra {
        dims.push(k);
        push_json_str(&mut out, k);
        out.push(':');
        push_json_str(&mut out, v);
        out.push(',');
    }
    let _ = write!(out, "\"_aws\":{{\"Timestamp\":{timestamp_ms},\"CloudWatchMetrics\":[{{\"Namespace\":");
    push_json_str(&mut out, namespace);
    out.push_str(",\"Dimensions\":[");
    if !dims.is_empty() {
        out.push('[');
        for (i, d) in dims.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            push_json_str(&mut out, d);
        }
        out.push_str("],");
    }
    out.push_str("[]],\"Metrics\":[{\"Name\":");
    push_json_str(&mut out, record.name);
    let _ = write!(out, ",\"Unit\":\"{}\"}}]}}]}},", record.unit.as_str());
    push_json_str(&mut out, record.name);
    out.push(':');
    // EMF values must be numbers; JSON has no NaN or infinity.
    let value = if record.value.is_finite() { record.value } else { 0.0 };
    let _ = write!(out, "{value}");
    out.push('}');
    out
}

fn push_json_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\' && b < 0x7f) {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&serde_json::to_string(s).expect("strings serialise"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names;
    use serde_json::{json, Value};

    #[test]
    fn line_is_valid_emf_with_pool_and_aggregate_dimension_sets() {
        let r = MetricRecord::count(names::LAUNCHES, Some(&"linux".into()), 3.0).with("CapacityType", "spot");
        let line = render("Hangar", &r, 1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["Launches"], 3.0);
        assert_eq!(v.as_object().unwrap().len(), 4, "{line}");
        assert_eq!(v["Pool"], "linux");
        assert_eq!(v["CapacityType"], "spot");
        let cwm = &v["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(cwm["Namespace"], "Hangar");
        assert_eq!(cwm["Dimensions"], json!([["Pool", "CapacityType"], []]));
        assert_eq!(cwm["Metrics"][0], json!({"Name": "Launches", "Unit": "Count"}));
        assert_eq!(v["_aws"]["Timestamp"], 1_700_000_000_000i64);
        // Every dimension named is present as a top-level string member, as EMF requires.
        for d in cwm["Dimensions"][0].as_array().unwrap() {
            assert!(v[d.as_str().unwrap()].is_string());
        }
    }

    #[test]
    fn pool_less_record_has_one_empty_dimension_set() {
        let r = MetricRecord::count(names::WEBHOOK_REJECTED, None, 1.0);
        let v: Value = serde_json::from_str(&render("NS", &r, 0)).unwrap();
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Dimensions"], json!([[]]));
        assert!(v.get("Pool").is_none());
    }

    #[test]
    fn hostile_strings_are_escaped_and_non_finite_values_stay_json() {
        let r = MetricRecord {
            value: f64::NAN,
            ..MetricRecord::count(names::JOBS_COMPLETED, Some(&"p".into()), 1.0)
        }
        .with("Conclusion", "a\"b\\c\n\u{1}é");
        let v: Value = serde_json::from_str(&render("N\"S", &r, 5)).unwrap();
        assert_eq!(v["Conclusion"], "a\"b\\c\n\u{1}é");
        assert_eq!(v["_aws"]["CloudWatchMetrics"][0]["Namespace"], "N\"S");
        assert_eq!(v["JobsCompleted"], 0.0);
    }
}
