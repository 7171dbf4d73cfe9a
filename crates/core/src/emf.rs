//! CloudWatch Embedded Metric Format. One JSON line per record on stdout; the Lambda log agent
//! turns it into a metric. Each record declares the dimension sets `[["Pool", extra?], []]` so
//! that alarms can watch the pool-less aggregate series as well as each pool.

use crate::metrics::MetricRecord;
use serde_json::{json, Map, Value};

/// Renders one record as an EMF line. `timestamp_ms` is the event time in Unix milliseconds.
pub fn render(namespace: &str, record: &MetricRecord, timestamp_ms: i64) -> String {
    let mut dims: Vec<&str> = Vec::with_capacity(2);
    let mut root = Map::with_capacity(6);
    if let Some(pool) = &record.pool {
        dims.push("Pool");
        root.insert("Pool".into(), Value::String(pool.to_string()));
    }
    if let Some((k, v)) = &record.extra {
        dims.push(k);
        root.insert((*k).into(), Value::String(v.clone()));
    }
    let dimension_sets: Vec<Vec<&str>> = if dims.is_empty() { vec![vec![]] } else { vec![dims, vec![]] };
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": dimension_sets,
                "Metrics": [{"Name": record.name, "Unit": record.unit.as_str()}],
            }],
        }),
    );
    root.insert(record.name.into(), json!(record.value));
    Value::Object(root).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::names;

    #[test]
    fn line_is_valid_emf_with_pool_and_aggregate_dimension_sets() {
        let r = MetricRecord::count(names::LAUNCHES, Some(&"linux".into()), 3.0).with("CapacityType", "spot");
        let line = render("Hangar", &r, 1_700_000_000_000);
        let v: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["Launches"], 3.0);
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
}
