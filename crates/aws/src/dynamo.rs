//! The job ledger on DynamoDB ([`DynamoLedger`]).
//!
//! # Key design
//! - **Table:** partition key `pk` (string) = `<job id>#<run attempt>`, no sort key. Every event
//!   names its job attempt, so each transition is one conditional write on one item, with no
//!   read first; a re-run attempt is a new item.
//! - **Index `open-by-pool`:** a global secondary index with partition key `open_pool` and
//!   sort key `created_ms`, keys only. `open_pool` is written while the entry is open, as
//!   [`open_pool`] says (a queued job under its own pool, a started one under its runner's),
//!   and removed by the write that ends it, so the index is *sparse*: it holds the open jobs
//!   and nothing else, and a pool's queue and running jobs are one query, oldest first, whose
//!   cost follows the pool's queue and its runners, not its history. (Keying the table by pool
//!   instead would put every job of the pool in one partition and make each query read the
//!   day's history.) The started jobs are in it so that a plan sees a runner busy as soon as
//!   the webhook recorded its job's start, not only once the pool's own batch reaches the
//!   start and tags the instance: between the two the job is no longer queued, and a runner
//!   still counted free would hold back a launch (a stall).
//! - **Consistency:** a GSI is only eventually consistent, so a job that just started or ended
//!   could still be listed as it was, and planning on that would launch for a job that no longer
//!   waits. So [`JobLedger::open`] takes the keys from the index and reads the items themselves
//!   with a consistent `BatchGetItem`, keeping only those still open under the pool. A job queued a moment ago may
//!   be missing from the index; the batch that recorded it plans on its own writes too (the
//!   scaler merges them), and every later plan sees it.
//! - **Hot keys:** one pool's open jobs share an index partition. A partition takes 1,000
//!   writes a second; a pool's webhooks come nowhere near that.
//! - **TTL** on `expires_at` (epoch seconds), [`ENTRY_TTL_HOURS`] after the last change.
//!
//! IAM: `dynamodb:PutItem`, `dynamodb:UpdateItem`, `dynamodb:GetItem`, `dynamodb:BatchGetItem`
//! on the table; `dynamodb:Query` on `table/<name>/index/open-by-pool`.
//!
//! [`ENTRY_TTL_HOURS`]: hangar_core::ledger::ENTRY_TTL_HOURS

use crate::error::classify;
use async_trait::async_trait;
use aws_sdk_dynamodb::types::{
    AttributeValue, KeysAndAttributes, ReturnValue, ReturnValuesOnConditionCheckFailure,
};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use chrono::{DateTime, SecondsFormat, Utc};
use hangar_core::ids::{InstallationId, PoolName, RunId, RunnerName};
use hangar_core::ledger::{
    expires_at, open_pool, sort_oldest_first, transition, Applied, JobChange, JobEvent, JobKey, JobLedger,
    JobStatus, LedgerError, LedgerJob,
};
use hangar_core::ports::PortError;
use std::collections::HashMap;
use std::time::Duration;

/// DynamoDB's answers a retry can mend (throttling, a server error), by each operation's typed
/// `is_*()` methods: the same three for every item operation the ledger and the launch log make.
pub(crate) trait Throttled {
    fn throttled(&self) -> bool;
}

macro_rules! throttled {
    ($($op:ty),*) => {$(
        impl Throttled for $op {
            fn throttled(&self) -> bool {
                self.is_provisioned_throughput_exceeded_exception()
                    || self.is_request_limit_exceeded()
                    || self.is_internal_server_error()
            }
        }
    )*};
}

throttled!(
    aws_sdk_dynamodb::operation::put_item::PutItemError,
    aws_sdk_dynamodb::operation::update_item::UpdateItemError,
    aws_sdk_dynamodb::operation::get_item::GetItemError,
    aws_sdk_dynamodb::operation::batch_get_item::BatchGetItemError,
    aws_sdk_dynamodb::operation::query::QueryError
);

/// [`classify`] for an item operation: retryable exactly when [`Throttled`].
pub(crate) fn item_error<E>(operation: &'static str, err: SdkError<E, HttpResponse>) -> PortError
where
    E: Throttled + ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    classify(operation, err, |se| Some(se.throttled()))
}

/// The index that lists each pool's open jobs.
pub const OPEN_INDEX: &str = "open-by-pool";
/// `BatchGetItem` takes at most 100 keys per call.
const BATCH_GET_MAX: usize = 100;
/// Unprocessed keys (DynamoDB's answer under load) are asked for again this many times.
const BATCH_GET_ROUNDS: u32 = 5;

mod attr {
    pub const PK: &str = "pk";
    pub const POOL: &str = "pool";
    pub const STATUS: &str = "status";
    pub const RUN_ID: &str = "run_id";
    pub const REPOSITORY: &str = "repository";
    pub const INSTALLATION_ID: &str = "installation_id";
    pub const LABELS: &str = "labels";
    pub const CREATED_AT: &str = "created_at";
    pub const CREATED_MS: &str = "created_ms";
    pub const STARTED_AT: &str = "started_at";
    pub const COMPLETED_AT: &str = "completed_at";
    pub const RUNNER_NAME: &str = "runner_name";
    pub const CONCLUSION: &str = "conclusion";
    pub const EXPIRES_AT: &str = "expires_at";
    pub const OPEN_POOL: &str = "open_pool";
}

/// [`JobLedger`] on one DynamoDB table (see the module docs for the keys).
#[derive(Debug, Clone)]
pub struct DynamoLedger {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

impl DynamoLedger {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        Self { client, table: table.into() }
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    /// `Ok(None)`: created. `Ok(Some(status))`: an entry existed, with that status.
    async fn put_queued(&self, event: &JobEvent, job: &LedgerJob) -> Result<Option<JobStatus>, PortError> {
        let mut item = to_item(job);
        item.insert(attr::OPEN_POOL.into(), s(job.pool.as_str()));
        let res = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(#pk)")
            .expression_attribute_names("#pk", attr::PK)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(_) => Ok(None),
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                Ok(Some(self.refused_status(event.key, &e).await?))
            }
            Err(e) => {
                tracing::debug!(job = %event.key, "ledger put failed");
                Err(item_error("dynamodb:PutItem", e))
            }
        }
    }

    /// Moves an entry on (or creates it) with `UpdateItem`, conditional on the status it moves
    /// from. `Ok(Ok(old))`: written, over `old` (`None`: created). `Ok(Err(status))`: refused,
    /// the entry has that status.
    async fn update(
        &self,
        event: &JobEvent,
        now: DateTime<Utc>,
    ) -> Result<Result<Option<LedgerJob>, JobStatus>, PortError> {
        let Update { expression, condition, names, values } = update_for(event, now);
        let res = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(attr::PK, s(&event.key.to_string()))
            .update_expression(expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(names))
            .set_expression_attribute_values(Some(values))
            .return_values(ReturnValue::AllOld)
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match res {
            Ok(out) => match out.attributes {
                Some(old) if !old.is_empty() => Ok(Ok(Some(from_item(&old)?))),
                _ => Ok(Ok(None)),
            },
            Err(e) if e.as_service_error().is_some_and(|se| se.is_conditional_check_failed_exception()) => {
                Ok(Err(self.refused_status(event.key, &e).await?))
            }
            Err(e) => Err(classify("dynamodb:UpdateItem", e, |se| {
                Some(se.throttled() || se.is_transaction_conflict_exception())
            })),
        }
    }

    /// The status of an entry whose conditional write was refused: from the item DynamoDB
    /// returns with the refusal (`ReturnValuesOnConditionCheckFailure`), else read back.
    async fn refused_status<E>(
        &self,
        key: JobKey,
        err: &aws_sdk_dynamodb::error::SdkError<
            E,
            aws_smithy_runtime_api::client::orchestrator::HttpResponse,
        >,
    ) -> Result<JobStatus, PortError>
    where
        E: RefusedItem,
    {
        if let Some(item) = err.as_service_error().and_then(RefusedItem::refused_item) {
            if let Some(AttributeValue::S(status)) = item.get(attr::STATUS) {
                return Ok(JobStatus::parse(status)?);
            }
        }
        match self.get(key).await? {
            Some(j) => Ok(j.status),
            // Refused, then gone: only its TTL could have removed it, and an expired entry is
            // one GitHub gave up on. Report it as ended.
            None => Ok(JobStatus::Done),
        }
    }

    async fn batch_get(&self, keys: Vec<JobKey>) -> Result<Vec<LedgerJob>, PortError> {
        let mut out = Vec::with_capacity(keys.len());
        for chunk in keys.chunks(BATCH_GET_MAX) {
            let mut pending = Some(
                KeysAndAttributes::builder()
                    .set_keys(Some(
                        chunk
                            .iter()
                            .map(|k| HashMap::from([(attr::PK.to_owned(), s(&k.to_string()))]))
                            .collect(),
                    ))
                    .consistent_read(true)
                    .build()
                    .map_err(|e| PortError::permanent("dynamodb:BatchGetItem", None, e.to_string()))?,
            );
            let mut round = 0;
            while let Some(req) = pending.take() {
                let res = self
                    .client
                    .batch_get_item()
                    .request_items(&self.table, req)
                    .send()
                    .await
                    .map_err(|e| item_error("dynamodb:BatchGetItem", e))?;
                for item in res.responses.and_then(|mut r| r.remove(&self.table)).unwrap_or_default() {
                    out.push(from_item(&item)?);
                }
                let unprocessed = res.unprocessed_keys.and_then(|mut u| u.remove(&self.table));
                if let Some(u) = unprocessed.filter(|u| !u.keys.is_empty()) {
                    round += 1;
                    if round > BATCH_GET_ROUNDS {
                        return Err(PortError::retryable(
                            "dynamodb:BatchGetItem",
                            Some("UnprocessedKeys".into()),
                            format!(
                                "{} keys still unprocessed after {BATCH_GET_ROUNDS} rounds",
                                u.keys.len()
                            ),
                        ));
                    }
                    // DynamoDB asks for exponential backoff before asking again for unprocessed keys.
                    tokio::time::sleep(Duration::from_millis(25 << round)).await;
                    pending = Some(u);
                }
            }
        }
        Ok(out)
    }
}

/// The item a conditional write's refusal carries, for both operations' error types.
trait RefusedItem {
    fn refused_item(&self) -> Option<&HashMap<String, AttributeValue>>;
}

impl RefusedItem for aws_sdk_dynamodb::operation::put_item::PutItemError {
    fn refused_item(&self) -> Option<&HashMap<String, AttributeValue>> {
        match self {
            Self::ConditionalCheckFailedException(e) => e.item(),
            _ => None,
        }
    }
}

impl RefusedItem for aws_sdk_dynamodb::operation::update_item::UpdateItemError {
    fn refused_item(&self) -> Option<&HashMap<String, AttributeValue>> {
        match self {
            Self::ConditionalCheckFailedException(e) => e.item(),
            _ => None,
        }
    }
}

#[async_trait]
impl JobLedger for DynamoLedger {
    async fn apply(&self, event: &JobEvent, now: DateTime<Utc>) -> Result<Applied, PortError> {
        event.validate()?;
        if let JobChange::Queued { .. } = event.change {
            let Applied::Recorded { job, from } = transition(None, event, now) else {
                unreachable!("a queued event on no entry always records")
            };
            return match self.put_queued(event, job.as_ref()).await? {
                None => Ok(Applied::Recorded { from, job }),
                Some(existing) => Ok(Applied::Unchanged { existing }),
            };
        }
        match self.update(event, now).await? {
            // What was written is `transition` of what was there: the update expression is that
            // function written for DynamoDB (the moto tests compare the two item by item).
            Ok(old) => Ok(transition(old.as_ref(), event, now)),
            Err(existing) => Ok(Applied::Unchanged { existing }),
        }
    }

    async fn open(&self, pool: &PoolName) -> Result<Vec<LedgerJob>, PortError> {
        let pages = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(OPEN_INDEX)
            .key_condition_expression("#op = :pool")
            .expression_attribute_names("#op", attr::OPEN_POOL)
            .expression_attribute_values(":pool", s(pool.as_str()))
            .into_paginator()
            .items()
            .send()
            .collect::<Vec<_>>()
            .await;
        let mut keys = Vec::with_capacity(pages.len());
        for item in pages {
            let item = item.map_err(|e| item_error("dynamodb:Query", e))?;
            keys.push(get_s(&item, attr::PK)?.parse::<JobKey>()?);
        }
        let mut jobs: Vec<_> =
            self.batch_get(keys).await?.into_iter().filter(|j| open_pool(j).as_ref() == Some(pool)).collect();
        sort_oldest_first(&mut jobs);
        Ok(jobs)
    }

    async fn get(&self, key: JobKey) -> Result<Option<LedgerJob>, PortError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(attr::PK, s(&key.to_string()))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| item_error("dynamodb:GetItem", e))?;
        out.item.map(|i| from_item(&i)).transpose().map_err(Into::into)
    }
}

/// An `UpdateItem` for a `started` or `completed` event: [`transition`]'s rules as DynamoDB
/// expressions.
struct Update {
    expression: String,
    condition: &'static str,
    names: HashMap<String, String>,
    values: HashMap<String, AttributeValue>,
}

fn update_for(event: &JobEvent, now: DateTime<Utc>) -> Update {
    let mut set = vec![
        "#status = :to",
        "#pool = if_not_exists(#pool, :pool)",
        "#run_id = if_not_exists(#run_id, :run_id)",
        "#repository = if_not_exists(#repository, :repository)",
        "#labels = if_not_exists(#labels, :no_labels)",
        "#created_at = if_not_exists(#created_at, :at)",
        "#created_ms = if_not_exists(#created_ms, :at_ms)",
        "#expires_at = :expires_at",
    ];
    let mut remove: Vec<&str> = Vec::new();
    let mut names: HashMap<String, String> = [
        attr::PK,
        attr::STATUS,
        attr::POOL,
        attr::RUN_ID,
        attr::REPOSITORY,
        attr::LABELS,
        attr::CREATED_AT,
        attr::CREATED_MS,
        attr::EXPIRES_AT,
        attr::OPEN_POOL,
    ]
    .iter()
    .map(|a| (format!("#{a}"), (*a).to_owned()))
    .collect();
    let mut values: HashMap<String, AttributeValue> = HashMap::new();
    let expires = expires_at(now);
    values.insert(":pool".into(), s(event.pool.as_str()));
    values.insert(":run_id".into(), n(event.run_id.0));
    values.insert(":repository".into(), s(event.repository.as_str()));
    values.insert(":no_labels".into(), AttributeValue::L(Vec::new()));
    values.insert(":expires_at".into(), AttributeValue::N(expires.timestamp().to_string()));
    if let Some(inst) = event.installation_id {
        set.push("#installation_id = if_not_exists(#installation_id, :installation_id)");
        names.insert("#installation_id".into(), attr::INSTALLATION_ID.into());
        values.insert(":installation_id".into(), n(inst.0));
    }
    let (at, runner, condition) = match &event.change {
        JobChange::Queued { .. } => unreachable!("queued events are puts"),
        JobChange::Started { runner_name, started_at } => {
            let at = started_at.unwrap_or(now);
            set.push("#started_at = :at");
            names.insert("#started_at".into(), attr::STARTED_AT.into());
            // Listed under its runner's pool while it runs ([`open_pool`]).
            match runner_name.as_ref().and_then(RunnerName::pool) {
                Some(p) => {
                    set.push("#open_pool = :runner_pool");
                    values.insert(":runner_pool".into(), s(p.as_str()));
                }
                None => set.push("#open_pool = if_not_exists(#pool, :pool)"),
            }
            values.insert(":from".into(), s(JobStatus::Queued.as_str()));
            (at, runner_name, "attribute_not_exists(#pk) OR #status = :from")
        }
        JobChange::Completed { runner_name, conclusion, completed_at } => {
            let at = completed_at.unwrap_or(now);
            set.push("#completed_at = :at");
            names.insert("#completed_at".into(), attr::COMPLETED_AT.into());
            remove.push("#open_pool");
            names.insert("#conclusion".into(), attr::CONCLUSION.into());
            match conclusion {
                Some(c) => {
                    set.push("#conclusion = :conclusion");
                    values.insert(":conclusion".into(), s(c));
                }
                None => remove.push("#conclusion"),
            }
            values.insert(":from".into(), s(JobStatus::Done.as_str()));
            (at, runner_name, "attribute_not_exists(#pk) OR #status <> :from")
        }
    };
    if let Some(r) = runner {
        set.push("#runner_name = :runner_name");
        names.insert("#runner_name".into(), attr::RUNNER_NAME.into());
        values.insert(":runner_name".into(), s(r.as_str()));
    }
    values.insert(":to".into(), s(event.change.status().as_str()));
    values.insert(":at".into(), s(&fmt_time(at)));
    values.insert(":at_ms".into(), AttributeValue::N(at.timestamp_millis().to_string()));
    let mut expression = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
    }
    Update { expression, condition, names, values }
}

fn s(v: &str) -> AttributeValue {
    AttributeValue::S(v.to_owned())
}
fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}
/// Full precision, so what is read back equals what was written.
fn fmt_time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}
fn to_item(job: &LedgerJob) -> HashMap<String, AttributeValue> {
    let mut item = HashMap::from([
        (attr::PK.to_owned(), s(&job.key.to_string())),
        (attr::POOL.to_owned(), s(job.pool.as_str())),
        (attr::STATUS.to_owned(), s(job.status.as_str())),
        (attr::RUN_ID.to_owned(), n(job.run_id.0)),
        (attr::REPOSITORY.to_owned(), s(job.repository.as_str())),
        (attr::LABELS.to_owned(), AttributeValue::L(job.labels.iter().map(|l| s(l)).collect())),
        (attr::CREATED_AT.to_owned(), s(&fmt_time(job.created_at))),
        (attr::CREATED_MS.to_owned(), AttributeValue::N(job.created_at.timestamp_millis().to_string())),
        (attr::EXPIRES_AT.to_owned(), AttributeValue::N(job.expires_at.timestamp().to_string())),
    ]);
    if let Some(i) = job.installation_id {
        item.insert(attr::INSTALLATION_ID.into(), n(i.0));
    }
    if let Some(t) = job.started_at {
        item.insert(attr::STARTED_AT.into(), s(&fmt_time(t)));
    }
    if let Some(t) = job.completed_at {
        item.insert(attr::COMPLETED_AT.into(), s(&fmt_time(t)));
    }
    if let Some(r) = &job.runner_name {
        item.insert(attr::RUNNER_NAME.into(), s(r.as_str()));
    }
    if let Some(c) = &job.conclusion {
        item.insert(attr::CONCLUSION.into(), s(c));
    }
    item
}

fn get_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Result<&'a str, LedgerError> {
    match item.get(name) {
        Some(AttributeValue::S(v)) => Ok(v),
        Some(_) => Err(LedgerError::Corrupt(format!("`{name}` is not a string"))),
        None => Err(LedgerError::Corrupt(format!("`{name}` is missing"))),
    }
}
fn opt_s<'a>(item: &'a HashMap<String, AttributeValue>, name: &str) -> Result<Option<&'a str>, LedgerError> {
    item.get(name).map(|_| get_s(item, name)).transpose()
}
fn opt_n(item: &HashMap<String, AttributeValue>, name: &str) -> Result<Option<u64>, LedgerError> {
    match item.get(name) {
        Some(AttributeValue::N(v)) => {
            v.parse().map(Some).map_err(|_| LedgerError::Corrupt(format!("`{name}` is not a u64")))
        }
        Some(_) => Err(LedgerError::Corrupt(format!("`{name}` is not a number"))),
        None => Ok(None),
    }
}
fn time(v: &str, name: &str) -> Result<DateTime<Utc>, LedgerError> {
    DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|_| LedgerError::Corrupt(format!("`{name}` is not an RFC 3339 time")))
}
fn opt_time(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<DateTime<Utc>>, LedgerError> {
    opt_s(item, name)?.map(|v| time(v, name)).transpose()
}

fn from_item(item: &HashMap<String, AttributeValue>) -> Result<LedgerJob, LedgerError> {
    let labels = match item.get(attr::LABELS) {
        Some(AttributeValue::L(l)) => l
            .iter()
            .map(|v| match v {
                AttributeValue::S(s) => Ok(s.clone()),
                _ => Err(LedgerError::Corrupt("a label is not a string".into())),
            })
            .collect::<Result<Vec<_>, _>>()?,
        Some(_) => return Err(LedgerError::Corrupt("`labels` is not a list".into())),
        None => Vec::new(),
    };
    let pool = get_s(item, attr::POOL)?;
    if pool.is_empty() {
        return Err(LedgerError::Corrupt("`pool` is empty".into()));
    }
    let expires = opt_n(item, attr::EXPIRES_AT)?
        .ok_or_else(|| LedgerError::Corrupt(format!("`{}` is missing", attr::EXPIRES_AT)))?;
    Ok(LedgerJob {
        key: get_s(item, attr::PK)?.parse()?,
        pool: PoolName::from(pool),
        status: JobStatus::parse(get_s(item, attr::STATUS)?)?,
        run_id: RunId(
            opt_n(item, attr::RUN_ID)?.ok_or_else(|| LedgerError::Corrupt("`run_id` is missing".into()))?,
        ),
        repository: get_s(item, attr::REPOSITORY)?.into(),
        installation_id: opt_n(item, attr::INSTALLATION_ID)?.map(InstallationId),
        labels,
        created_at: time(get_s(item, attr::CREATED_AT)?, attr::CREATED_AT)?,
        started_at: opt_time(item, attr::STARTED_AT)?,
        completed_at: opt_time(item, attr::COMPLETED_AT)?,
        runner_name: opt_s(item, attr::RUNNER_NAME)?.map(RunnerName::from),
        conclusion: opt_s(item, attr::CONCLUSION)?.map(str::to_owned),
        expires_at: i64::try_from(expires)
            .ok()
            .and_then(|secs| DateTime::from_timestamp(secs, 0))
            .ok_or_else(|| LedgerError::Corrupt("`expires_at` is out of range".into()))?,
    })
}

/// Creates the ledger table as `infra/template.yaml` does (on-demand billing, the sparse index,
/// keys only). For the local cloud and tests; in AWS the stack owns the table. IAM:
/// `dynamodb:CreateTable`, `dynamodb:UpdateTimeToLive`.
pub async fn create_table(client: &aws_sdk_dynamodb::Client, table: &str) -> Result<(), PortError> {
    use aws_sdk_dynamodb::types::{
        AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
        ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
    };
    let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
    let def = |name: &str, t| AttributeDefinition::builder().attribute_name(name).attribute_type(t).build();
    let built = |e: aws_sdk_dynamodb::error::BuildError| {
        PortError::permanent("dynamodb:CreateTable", None, e.to_string())
    };
    client
        .create_table()
        .table_name(table)
        .billing_mode(BillingMode::PayPerRequest)
        .key_schema(key(attr::PK, KeyType::Hash).map_err(built)?)
        .attribute_definitions(def(attr::PK, ScalarAttributeType::S).map_err(built)?)
        .attribute_definitions(def(attr::OPEN_POOL, ScalarAttributeType::S).map_err(built)?)
        .attribute_definitions(def(attr::CREATED_MS, ScalarAttributeType::N).map_err(built)?)
        .global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(OPEN_INDEX)
                .key_schema(key(attr::OPEN_POOL, KeyType::Hash).map_err(built)?)
                .key_schema(key(attr::CREATED_MS, KeyType::Range).map_err(built)?)
                .projection(Projection::builder().projection_type(ProjectionType::KeysOnly).build())
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map_err(|e| classify("dynamodb:CreateTable", e, |se| Some(se.is_limit_exceeded_exception())))?;
    client
        .update_time_to_live()
        .table_name(table)
        .time_to_live_specification(
            TimeToLiveSpecification::builder()
                .enabled(true)
                .attribute_name(attr::EXPIRES_AT)
                .build()
                .map_err(built)?,
        )
        .send()
        .await
        .map_err(|e| classify("dynamodb:UpdateTimeToLive", e, |se| Some(se.is_limit_exceeded_exception())))?;
    Ok(())
}
