//! Recorded launches on DynamoDB ([`DynamoLaunchLog`]), in the job ledger's table.
//!
//! # Key design
//! One item per pool, `pk` = `launches#<pool>` (job keys are `<job id>#<attempt>`, digits only,
//! so none can collide with it), with one number attribute per
//! launch, named `l_<instance id>`, holding the launch time in epoch milliseconds. Each batch
//! that launches adds its instances and drops the stale entries in one `UpdateItem`; each plan
//! reads the item back with one consistent `GetItem`. The item has no `open_pool`, so the
//! open-jobs index never lists it, and its `expires_at` (an hour after the last launch) lets
//! DynamoDB's TTL remove a quiet pool's item.
//!
//! Size: an entry is about 40 bytes and lives [`RECORDED_LAUNCH_TTL_SECS`] before the next
//! launch drops it, so even 1,000 launches in that window stay far under DynamoDB's 400 KB item
//! limit. An update expression may be at most 4 KB, so one write drops at most
//! [`MAX_DROPS_PER_WRITE`] stale entries (the rest go with the next launch).
//!
//! IAM: `dynamodb:UpdateItem`, `dynamodb:GetItem` on the table.
//!
//! [`RECORDED_LAUNCH_TTL_SECS`]: hangar_core::plan::RECORDED_LAUNCH_TTL_SECS

use crate::dynamo::item_error;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::AttributeValue;
use chrono::{DateTime, Utc};
use hangar_core::ids::{InstanceId, PoolName};
use hangar_core::plan::RecordedLaunch;
use hangar_core::ports::{LaunchLog, PortError};
use std::collections::HashMap;

/// Stale entries one write drops at most (see the module docs).
pub const MAX_DROPS_PER_WRITE: usize = 100;
/// A pool's item expires this long after its last launch.
const ITEM_TTL_SECS: i64 = 3600;
const PREFIX: &str = "l_";

/// [`LaunchLog`] on the job ledger's table.
#[derive(Debug, Clone)]
pub struct DynamoLaunchLog {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLaunchLog {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }
}

fn pk(pool: &PoolName) -> AttributeValue {
    AttributeValue::S(format!("launches#{pool}"))
}

/// The update: `SET` each launch and the TTL, `REMOVE` up to [`MAX_DROPS_PER_WRITE`] stale ones
/// (never one this write sets). Attribute names go through placeholders: instance ids hold `-`.
fn update_for(
    launched: &[RecordedLaunch],
    stale: &[InstanceId],
    now: DateTime<Utc>,
) -> (String, HashMap<String, String>, HashMap<String, AttributeValue>) {
    let mut names = HashMap::new();
    let mut values = HashMap::new();
    let mut sets = Vec::new();
    for (i, l) in launched.iter().enumerate() {
        names.insert(format!("#l{i}"), format!("{PREFIX}{}", l.id));
        values.insert(format!(":l{i}"), AttributeValue::N(l.launched_at.timestamp_millis().to_string()));
        sets.push(format!("#l{i} = :l{i}"));
    }
    names.insert("#exp".into(), "expires_at".into());
    values.insert(":exp".into(), AttributeValue::N((now.timestamp() + ITEM_TTL_SECS).to_string()));
    sets.push("#exp = :exp".into());
    let mut expression = format!("SET {}", sets.join(", "));
    let drops: Vec<String> = stale
        .iter()
        .filter(|id| !launched.iter().any(|l| &l.id == *id))
        .take(MAX_DROPS_PER_WRITE)
        .enumerate()
        .map(|(i, id)| {
            names.insert(format!("#d{i}"), format!("{PREFIX}{id}"));
            format!("#d{i}")
        })
        .collect();
    if !drops.is_empty() {
        expression.push_str(&format!(" REMOVE {}", drops.join(", ")));
    }
    (expression, names, values)
}

#[async_trait]
impl LaunchLog for DynamoLaunchLog {
    async fn record(
        &self,
        pool: &PoolName,
        launched: &[RecordedLaunch],
        stale: &[InstanceId],
    ) -> Result<(), PortError> {
        if launched.is_empty() && stale.is_empty() {
            return Ok(());
        }
        let (expression, names, values) = update_for(launched, stale, Utc::now());
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk(pool))
            .update_expression(expression)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .send()
            .await
            .map_err(|e| item_error("dynamodb:UpdateItem", e))?;
        Ok(())
    }

    async fn recent(&self, pool: &PoolName) -> Result<Vec<RecordedLaunch>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", pk(pool))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| item_error("dynamodb:GetItem", e))?;
        let mut launches: Vec<RecordedLaunch> = out
            .item
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(name, v)| {
                let id = name.strip_prefix(PREFIX)?;
                let ms: i64 = v.as_n().ok()?.parse().ok()?;
                Some(RecordedLaunch {
                    id: InstanceId::from(id),
                    launched_at: DateTime::from_timestamp_millis(ms)?,
                })
            })
            .collect();
        launches.sort_by(|a, b| (a.launched_at, &a.id).cmp(&(b.launched_at, &b.id)));
        Ok(launches)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(ms).unwrap()
    }

    #[test]
    fn one_write_sets_the_launches_and_drops_at_most_a_hundred_stale_ones_never_a_new_one() {
        let launched = vec![RecordedLaunch { id: "i-0a".into(), launched_at: at(5_000) }];
        let stale: Vec<InstanceId> = std::iter::once(InstanceId::from("i-0a"))
            .chain((0..150).map(|i| format!("i-{i:x}").into()))
            .collect();
        let (expr, names, values) = update_for(&launched, &stale, at(10_000));
        assert!(expr.starts_with("SET #l0 = :l0, #exp = :exp REMOVE #d0, "), "{expr}");
        assert_eq!(names["#l0"], "l_i-0a");
        assert_eq!(values[":l0"], AttributeValue::N("5000".into()));
        assert_eq!(values[":exp"], AttributeValue::N("3610".into()));
        let drops = names.keys().filter(|k| k.starts_with("#d")).count();
        assert_eq!(drops, MAX_DROPS_PER_WRITE);
        assert!(
            !names.iter().any(|(k, v)| k.starts_with("#d") && v == "l_i-0a"),
            "a new launch is never dropped"
        );
        assert!(expr.len() < 4096, "DynamoDB's expression limit: {}", expr.len());
    }
}
