//! MLflow 3's logged models: a model logged from training code (`mlflow.<flavor>.log_model`)
//! before, and independently of, any registration. Each has an id (`m-` and 32 hex digits),
//! an artifact location under its experiment's (`<experiment location>/models/<id>/artifacts`),
//! a status (pending while its files upload, then ready or failed), its own params, tags and
//! metrics (each metric naming the run and dataset it was measured on), and, once finalized
//! as ready, the content digest of its artifacts. Runs record which models they produced
//! (outputs, at a step) and read (inputs): see [`crate::RunModel`].

use crate::backend::{Tx, Value};
use crate::store::{insert_metrics, metric, new_run_id};
use crate::{MetaError, Metric, ModelDirection, Result, Store, now_ms};

/// Where a logged model is in its life (MLflow's `LoggedModelStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoggedModelStatus {
    /// Created; its artifacts are being uploaded.
    Pending,
    /// Its artifacts are complete.
    Ready,
    /// The upload failed.
    UploadFailed,
}

impl LoggedModelStatus {
    /// MLflow's name without its `LOGGED_MODEL_` prefix: `PENDING`, `READY`, `UPLOAD_FAILED`.
    pub fn as_str(self) -> &'static str {
        match self {
            LoggedModelStatus::Pending => "PENDING",
            LoggedModelStatus::Ready => "READY",
            LoggedModelStatus::UploadFailed => "UPLOAD_FAILED",
        }
    }

    /// Reads MLflow's names with or without the `LOGGED_MODEL_` prefix, and the enum's numbers.
    pub fn parse(text: &str) -> Option<LoggedModelStatus> {
        let bare = text.strip_prefix("LOGGED_MODEL_").unwrap_or(text);
        Some(match bare {
            "PENDING" | "1" => LoggedModelStatus::Pending,
            "READY" | "2" => LoggedModelStatus::Ready,
            "UPLOAD_FAILED" | "3" => LoggedModelStatus::UploadFailed,
            _ => return None,
        })
    }
}

/// A metric point of a logged model, with the run and dataset it was measured on.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelMetric {
    pub metric: Metric,
    pub run_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

/// What a new logged model starts with.
#[derive(Debug, Clone, Default)]
pub struct NewLoggedModel {
    pub experiment_id: i64,
    /// Empty: a name is made up, as MLflow does.
    pub name: String,
    pub model_type: String,
    pub source_run_id: Option<String>,
    pub user: String,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct LoggedModel {
    pub model_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub artifact_uri: String,
    pub status: LoggedModelStatus,
    pub status_message: String,
    pub model_type: String,
    pub source_run_id: Option<String>,
    pub user: String,
    /// `active` or `deleted`.
    pub lifecycle_stage: String,
    /// The digest of its artifacts (paths and contents), recorded when it became ready.
    pub digest: Option<cairn_hash::Digest>,
    /// Milliseconds since the Unix epoch.
    pub creation_time: i64,
    pub last_update_time: i64,
    pub params: Vec<(String, String)>,
    pub tags: Vec<(String, String)>,
    /// Every metric point, oldest first.
    pub metrics: Vec<ModelMetric>,
}

const COLUMNS: &str = "model_id, experiment_id, name, artifact_uri, status, status_message, model_type, \
     source_run_id, user_id, lifecycle_stage, digest, creation_time, last_update_time";

fn from_row(row: &[Value]) -> Result<LoggedModel> {
    Ok(LoggedModel {
        model_id: row[0].text(),
        experiment_id: row[1].int(),
        name: row[2].text(),
        artifact_uri: row[3].text(),
        status: LoggedModelStatus::parse(&row[4].text()).unwrap_or(LoggedModelStatus::Pending),
        status_message: row[5].text(),
        model_type: row[6].text(),
        source_run_id: row[7].opt_text(),
        user: row[8].text(),
        lifecycle_stage: row[9].text(),
        digest: row[10].opt_digest()?,
        creation_time: row[11].int(),
        last_update_time: row[12].int(),
        params: Vec::new(),
        tags: Vec::new(),
        metrics: Vec::new(),
    })
}

/// A made-up name for a model logged without one, as MLflow's `adjective-noun-number`.
fn made_up_name(id: &str) -> String {
    const ADJECTIVES: [&str; 8] = ["amber", "brisk", "calm", "deft", "eager", "fleet", "keen", "lucid"];
    const NOUNS: [&str; 8] = ["cairn", "crest", "delta", "fjord", "grove", "heron", "ridge", "tarn"];
    let bytes = id.as_bytes();
    let pick = |i: usize| bytes.get(2 + i).copied().unwrap_or(0) as usize % 8;
    let number =
        u32::from_str_radix(id.get(id.len().saturating_sub(3)..).unwrap_or("0"), 16).unwrap_or(0) % 1000;
    format!("{}-{}-{number}", ADJECTIVES[pick(0)], NOUNS[pick(1)])
}

fn find(tx: &mut dyn Tx, model_id: &str) -> Result<LoggedModel> {
    let rows =
        tx.query(&format!("SELECT {COLUMNS} FROM logged_models WHERE model_id = $1"), &[model_id.into()])?;
    rows.first().map(|row| from_row(row)).ok_or_else(|| MetaError::NoLoggedModel(model_id.to_owned()))?
}

/// Fills in the params, tags and metrics of `models` (one query per table).
fn complete(
    tx: &mut dyn Tx,
    mut models: Vec<LoggedModel>,
    clause: &str,
    params: &[Value],
) -> Result<Vec<LoggedModel>> {
    if models.is_empty() {
        return Ok(models);
    }
    let index: std::collections::HashMap<String, usize> =
        models.iter().enumerate().map(|(i, m)| (m.model_id.clone(), i)).collect();
    let select = |columns: &str, table: &str, order: &str| {
        format!(
            "SELECT t.model_id, {columns} FROM {table} t JOIN logged_models m ON m.model_id = t.model_id \
             WHERE {clause} ORDER BY t.model_id, {order}"
        )
    };
    for row in tx.query(&select("t.key, t.value", "logged_model_params", "t.key"), params)? {
        if let Some(&i) = index.get(&row[0].text()) {
            models[i].params.push((row[1].text(), row[2].text()));
        }
    }
    for row in tx.query(&select("t.key, t.value", "logged_model_tags", "t.key"), params)? {
        if let Some(&i) = index.get(&row[0].text()) {
            models[i].tags.push((row[1].text(), row[2].text()));
        }
    }
    let columns = "t.key, t.value, t.timestamp, t.step, t.is_nan, t.run_id, t.dataset_name, t.dataset_digest";
    for row in tx.query(&select(columns, "logged_model_metrics", "t.timestamp, t.step, t.key"), params)? {
        if let Some(&i) = index.get(&row[0].text()) {
            models[i].metrics.push(ModelMetric {
                metric: metric(&row[1..6]),
                run_id: row[6].opt_text(),
                dataset_name: row[7].opt_text(),
                dataset_digest: row[8].opt_text(),
            });
        }
    }
    Ok(models)
}

fn insert_params(tx: &mut dyn Tx, model_id: &str, params: &[(String, String)]) -> Result<()> {
    for (key, value) in params {
        let inserted = tx.execute(
            "INSERT INTO logged_model_params (model_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (model_id, key) DO NOTHING",
            &[model_id.into(), key.as_str().into(), value.as_str().into()],
        )?;
        if inserted == 0 {
            let old = tx.query(
                "SELECT value FROM logged_model_params WHERE model_id = $1 AND key = $2",
                &[model_id.into(), key.as_str().into()],
            )?;
            let old = old.first().map(|r| r[0].text()).unwrap_or_default();
            if old != *value {
                return Err(MetaError::ModelParamChanged {
                    model: model_id.to_owned(),
                    key: key.clone(),
                    old,
                    new: value.clone(),
                });
            }
        }
    }
    Ok(())
}

fn insert_tags(tx: &mut dyn Tx, model_id: &str, tags: &[(String, String)]) -> Result<()> {
    for (key, value) in tags {
        tx.execute(
            "INSERT INTO logged_model_tags (model_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value",
            &[model_id.into(), key.as_str().into(), value.as_str().into()],
        )?;
    }
    Ok(())
}

fn touch(tx: &mut dyn Tx, model_id: &str) -> Result<()> {
    tx.execute(
        "UPDATE logged_models SET last_update_time = $1 WHERE model_id = $2",
        &[now_ms().into(), model_id.into()],
    )
    .map(drop)
}

/// The logged model a registry `source` names (`models:/m-…`), if it names one.
pub fn model_id_of(source: &str) -> Option<&str> {
    let id = source.strip_prefix("models:/")?.trim_end_matches('/');
    (id.starts_with("m-") && !id.contains('/')).then_some(id)
}

impl Store {
    /// Where a registered version's files are: for a `models:/<model id>` source the logged
    /// model's artifact location (`None` when that model is not here), else the source itself.
    pub fn version_location(&self, source: &str) -> Result<Option<String>> {
        match model_id_of(source) {
            Some(id) => Ok(self.logged_model(id)?.map(|m| m.artifact_uri)),
            None => Ok(Some(source.to_owned())),
        }
    }

    /// Creates a pending logged model in an active experiment; its artifact location is under
    /// the experiment's.
    pub fn create_logged_model(&self, new: &NewLoggedModel) -> Result<LoggedModel> {
        self.tx(|tx| {
            let experiment = tx.query(
                "SELECT artifact_location, lifecycle_stage FROM experiments WHERE experiment_id = $1",
                &[new.experiment_id.into()],
            )?;
            let Some(experiment) = experiment.first() else {
                return Err(MetaError::NoExperiment(new.experiment_id.to_string()));
            };
            if experiment[1].text() != "active" {
                return Err(MetaError::ExperimentNotActive(new.experiment_id.to_string()));
            }
            if let Some(run) = &new.source_run_id
                && tx.query("SELECT 1 FROM runs WHERE run_id = $1", &[run.as_str().into()])?.is_empty()
            {
                return Err(MetaError::NoRun(run.clone()));
            }
            let id = format!("m-{}", new_run_id());
            let location = experiment[0].text();
            let artifact_uri = format!("{}/models/{id}/artifacts", location.trim_end_matches('/'));
            let name = if new.name.is_empty() { made_up_name(&id) } else { new.name.clone() };
            let now = now_ms();
            tx.execute(
                &format!(
                    "INSERT INTO logged_models ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, '', $6, $7, $8, 'active', NULL, $9, $9)"
                ),
                &[
                    id.as_str().into(),
                    new.experiment_id.into(),
                    name.into(),
                    artifact_uri.into(),
                    LoggedModelStatus::Pending.as_str().into(),
                    new.model_type.as_str().into(),
                    new.source_run_id.clone().into(),
                    new.user.as_str().into(),
                    now.into(),
                ],
            )?;
            insert_params(tx, &id, &new.params)?;
            insert_tags(tx, &id, &new.tags)?;
            let model = find(tx, &id)?;
            Ok(complete(tx, vec![model], "m.model_id = $1", &[id.as_str().into()])?.remove(0))
        })
    }

    /// The logged model with its params, tags and metrics, deleted or not.
    pub fn logged_model(&self, model_id: &str) -> Result<Option<LoggedModel>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {COLUMNS} FROM logged_models WHERE model_id = $1"),
                &[model_id.into()],
            )?;
            let models = rows.iter().map(|r| from_row(r)).collect::<Result<_>>()?;
            Ok(complete(tx, models, "m.model_id = $1", &[model_id.into()])?.pop())
        })
    }

    /// The active logged models of the experiments (every experiment when empty), newest
    /// first, with their params, tags and metrics: a fixed number of queries.
    pub fn logged_models(&self, experiment_ids: &[i64]) -> Result<Vec<LoggedModel>> {
        self.tx(|tx| {
            let mut clause = "m.lifecycle_stage = 'active'".to_owned();
            let params: Vec<Value> = experiment_ids.iter().map(|&id| id.into()).collect();
            if !experiment_ids.is_empty() {
                let slots: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
                clause.push_str(&format!(" AND m.experiment_id IN ({})", slots.join(", ")));
            }
            let columns: Vec<String> = COLUMNS.split(", ").map(|c| format!("m.{c}")).collect();
            let rows = tx.query(
                &format!(
                    "SELECT {} FROM logged_models m WHERE {clause} ORDER BY m.creation_time DESC, m.model_id",
                    columns.join(", ")
                ),
                &params,
            )?;
            let models = rows.iter().map(|r| from_row(r)).collect::<Result<_>>()?;
            complete(tx, models, &clause, &params)
        })
    }

    /// Sets a logged model's status; `digest` (the content of its artifacts) is recorded with
    /// a ready status.
    pub fn finalize_logged_model(
        &self,
        model_id: &str,
        status: LoggedModelStatus,
        digest: Option<cairn_hash::Digest>,
    ) -> Result<LoggedModel> {
        self.tx(|tx| {
            find(tx, model_id)?;
            tx.execute(
                "UPDATE logged_models SET status = $1, digest = $2, last_update_time = $3 WHERE model_id = $4",
                &[status.as_str().into(), digest.map(|d| d.to_string()).into(), now_ms().into(), model_id.into()],
            )?;
            let model = find(tx, model_id)?;
            Ok(complete(tx, vec![model], "m.model_id = $1", &[model_id.into()])?.remove(0))
        })
    }

    /// Marks a logged model deleted (its artifacts and registered versions stay).
    pub fn delete_logged_model(&self, model_id: &str) -> Result<()> {
        self.tx(|tx| {
            find(tx, model_id)?;
            tx.execute(
                "UPDATE logged_models SET lifecycle_stage = 'deleted', last_update_time = $1 WHERE model_id = $2",
                &[now_ms().into(), model_id.into()],
            )
            .map(drop)
        })
    }

    pub fn set_logged_model_tags(&self, model_id: &str, tags: &[(String, String)]) -> Result<()> {
        self.tx(|tx| {
            find(tx, model_id)?;
            insert_tags(tx, model_id, tags)?;
            touch(tx, model_id)
        })
    }

    /// Removes a tag; `false` if the model had no such tag.
    pub fn delete_logged_model_tag(&self, model_id: &str, key: &str) -> Result<bool> {
        self.tx(|tx| {
            find(tx, model_id)?;
            let removed = tx.execute(
                "DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2",
                &[model_id.into(), key.into()],
            )?;
            touch(tx, model_id)?;
            Ok(removed > 0)
        })
    }

    /// Adds params; one that exists with another value is an error (all or nothing).
    pub fn log_logged_model_params(&self, model_id: &str, params: &[(String, String)]) -> Result<()> {
        self.tx(|tx| {
            find(tx, model_id)?;
            insert_params(tx, model_id, params)?;
            touch(tx, model_id)
        })
    }

    /// Links metric points to a logged model. When `run_id` is given, the points also join
    /// that run's history, once: a point the run already has (same key, value, timestamp and
    /// step, as when the client re-logs a run's metrics for a model) is not repeated there.
    pub fn log_model_metrics(
        &self,
        run_id: Option<&str>,
        model_id: &str,
        metrics: &[ModelMetric],
    ) -> Result<()> {
        self.tx(|tx| {
            find(tx, model_id)?;
            for m in metrics {
                let (value, is_nan) = if m.metric.value.is_nan() { (0.0, 1) } else { (m.metric.value, 0) };
                tx.execute(
                    "INSERT INTO logged_model_metrics (model_id, key, value, is_nan, timestamp, step, run_id, \
                     dataset_name, dataset_digest) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                    &[
                        model_id.into(),
                        m.metric.key.as_str().into(),
                        value.into(),
                        Value::Int(is_nan),
                        m.metric.timestamp.into(),
                        m.metric.step.into(),
                        m.run_id.clone().into(),
                        m.dataset_name.clone().into(),
                        m.dataset_digest.clone().into(),
                    ],
                )?;
            }
            if let Some(run_id) = run_id {
                let mut new = Vec::new();
                for m in metrics {
                    let (value, is_nan) = if m.metric.value.is_nan() { (0.0, 1) } else { (m.metric.value, 0) };
                    let existing = tx.query(
                        "SELECT 1 FROM metrics WHERE run_id = $1 AND key = $2 AND step = $3 AND timestamp = $4 \
                         AND value = $5 AND is_nan = $6",
                        &[
                            run_id.into(),
                            m.metric.key.as_str().into(),
                            m.metric.step.into(),
                            m.metric.timestamp.into(),
                            value.into(),
                            Value::Int(is_nan),
                        ],
                    )?;
                    if existing.is_empty() {
                        new.push(m.metric.clone());
                    }
                }
                insert_metrics(tx, run_id, &new)?;
            }
            touch(tx, model_id)
        })
    }

    /// Records models a run read or produced (`(model id, step)`); recording one again
    /// updates its step.
    pub fn log_run_models(
        &self,
        run_id: &str,
        direction: ModelDirection,
        models: &[(String, i64)],
    ) -> Result<()> {
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM runs WHERE run_id = $1", &[run_id.into()])?.is_empty() {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            for (model_id, step) in models {
                find(tx, model_id)?;
                tx.execute(
                    "INSERT INTO run_models (run_id, model_id, direction, step) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (run_id, model_id, direction) DO UPDATE SET step = excluded.step",
                    &[run_id.into(), model_id.as_str().into(), direction.as_str().into(), (*step).into()],
                )?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_mlflow_names_and_numbers() {
        for status in [LoggedModelStatus::Pending, LoggedModelStatus::Ready, LoggedModelStatus::UploadFailed]
        {
            assert_eq!(LoggedModelStatus::parse(status.as_str()), Some(status));
            assert_eq!(LoggedModelStatus::parse(&format!("LOGGED_MODEL_{}", status.as_str())), Some(status));
        }
        assert_eq!(LoggedModelStatus::parse("2"), Some(LoggedModelStatus::Ready));
        assert_eq!(LoggedModelStatus::parse("DONE"), None);
    }

    #[test]
    fn registry_sources_name_logged_models() {
        assert_eq!(model_id_of("models:/m-0123"), Some("m-0123"));
        assert_eq!(model_id_of("models:/churn/3"), None);
        assert_eq!(model_id_of("runs:/abc/model"), None);
    }

    #[test]
    fn made_up_names_are_stable_and_readable() {
        let name = made_up_name("m-0123456789abcdef0123456789abcdef");
        assert_eq!(name, made_up_name("m-0123456789abcdef0123456789abcdef"));
        assert_eq!(name.split('-').count(), 3, "{name}");
    }
}
