//! MLflow 3's logged-model endpoints (`/logged-models...`), over [`cairn_meta::logged_models`].
//!
//! `mlflow.<flavor>.log_model` creates a pending model, uploads its files through the artifact
//! proxy under `<experiment>/models/<model id>/artifacts/`, links the run's metrics to it and
//! records it as the run's output; finalizing it as ready records the digest of those files,
//! so a registered version made from `models:/<model id>` is named by its content and carries
//! the lineage of its source run. Search takes MLflow's filter syntax over the attributes
//! `model_id`, `name`, `status`, `model_type`, `source_run_id`, `creation_timestamp`,
//! `last_updated_timestamp` and over `metrics.`, `params.` and `tags.`, with `datasets` limiting
//! which metric points count; `order_by` takes attributes and `metrics.<key>`.

use std::cmp::Ordering;
use std::collections::HashMap;

use cairn_meta::{LoggedModel, LoggedModelStatus, Metric, ModelMetric, NewLoggedModel, Run, RunInfo};
use serde_json::{Value, json};

use crate::search::{Filter, Searched};
use crate::wire::{Request, double_json};
use crate::{ApiError, State};

const DEFAULT_MAX_RESULTS: i64 = 100;

/// MLflow's rule for a logged model's name.
fn check_name(name: &str) -> Result<(), ApiError> {
    const BAD: [char; 6] = ['/', ':', '.', '%', '"', '\''];
    if name.chars().any(|c| BAD.contains(&c)) || name.len() > 500 {
        return Err(ApiError::invalid(format!(
            "Invalid model name ('{name}') provided. Model name must be a non-empty string of at most 500 characters and cannot contain the following characters: / : . % \" '"
        )));
    }
    Ok(())
}

fn not_found(model_id: &str) -> ApiError {
    ApiError::not_found(format!("Logged model with ID '{model_id}' not found."))
}

/// An active logged model.
pub(crate) fn find(state: &State, model_id: &str) -> Result<LoggedModel, ApiError> {
    state
        .meta
        .logged_model(model_id)?
        .filter(|m| m.lifecycle_stage == "active")
        .ok_or_else(|| not_found(model_id))
}

fn pairs_json(pairs: &[(String, String)]) -> Value {
    Value::Array(pairs.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
}

fn metric_json(model_id: &str, m: &ModelMetric) -> Value {
    let mut out = json!({
        "key": m.metric.key,
        "value": double_json(m.metric.value),
        "timestamp": m.metric.timestamp,
        "step": m.metric.step,
        "model_id": model_id,
    });
    for (field, value) in
        [("run_id", &m.run_id), ("dataset_name", &m.dataset_name), ("dataset_digest", &m.dataset_digest)]
    {
        if let Some(value) = value {
            out[field] = json!(value);
        }
    }
    out
}

/// The registered versions made from each logged model: `model id → [(name, version)]`.
fn registrations(state: &State) -> Result<HashMap<String, Vec<(String, i64)>>, ApiError> {
    let mut out: HashMap<String, Vec<(String, i64)>> = HashMap::new();
    for model in state.meta.models()? {
        for version in state.meta.model_versions(&model.name)? {
            if let Some(id) = cairn_meta::logged_models::model_id_of(&version.source) {
                out.entry(id.to_owned()).or_default().push((version.name.clone(), version.version));
            }
        }
    }
    Ok(out)
}

pub(crate) fn model_json(model: &LoggedModel, registered: &[(String, i64)]) -> Value {
    let mut info = json!({
        "model_id": model.model_id,
        "experiment_id": model.experiment_id.to_string(),
        "name": model.name,
        "creation_timestamp_ms": model.creation_time,
        "last_updated_timestamp_ms": model.last_update_time,
        "artifact_uri": model.artifact_uri,
        "status": format!("LOGGED_MODEL_{}", model.status.as_str()),
        "model_type": model.model_type,
        "status_message": model.status_message,
        "tags": pairs_json(&model.tags),
        "registrations": registered
            .iter()
            .map(|(name, version)| json!({"name": name, "version": version.to_string()}))
            .collect::<Vec<_>>(),
    });
    if let Some(run) = &model.source_run_id {
        info["source_run_id"] = json!(run);
    }
    json!({
        "info": info,
        "data": {
            "params": pairs_json(&model.params),
            "metrics": model.metrics.iter().map(|m| metric_json(&model.model_id, m)).collect::<Vec<_>>(),
        },
    })
}

fn answer(state: &State, model: &LoggedModel) -> Result<Value, ApiError> {
    let registered = registrations(state)?.remove(&model.model_id).unwrap_or_default();
    Ok(json!({"model": model_json(model, &registered)}))
}

fn checked_pairs(
    request: &Request,
    field: &str,
    what: &str,
    limit: usize,
) -> Result<Vec<(String, String)>, ApiError> {
    let pairs = request.pairs(field)?;
    for (key, value) in &pairs {
        crate::api::check_key(what, key)?;
        crate::api::check_value(what, key, value, limit)?;
    }
    Ok(pairs)
}

/// `POST /logged-models`.
pub(crate) fn create(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let experiment = request.required("experiment_id")?;
    let experiment_id = experiment.parse().map_err(|_| {
        ApiError::not_found(format!("no experiment with id `{experiment}` (ids are whole numbers)"))
    })?;
    let name = request.string("name")?.unwrap_or_default();
    if request.get("name").is_some() {
        if name.is_empty() {
            return Err(ApiError::invalid("a logged model's name must not be empty"));
        }
        check_name(&name)?;
    }
    let new = NewLoggedModel {
        experiment_id,
        name,
        model_type: request.string("model_type")?.unwrap_or_default(),
        source_run_id: request.string("source_run_id")?.filter(|r| !r.is_empty()),
        user: String::new(),
        params: checked_pairs(request, "params", "param", 6000)?,
        tags: checked_pairs(request, "tags", "tag", 8000)?,
    };
    let model = state.meta.create_logged_model(&new)?;
    Ok(json!({"model": model_json(&model, &[])}))
}

/// `GET /logged-models/{model_id}`.
pub(crate) fn get(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    answer(state, &find(state, &request.required("model_id")?)?)
}

/// `PATCH /logged-models/{model_id}`: the model's files are complete (or failed to upload).
pub(crate) fn finalize(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find(state, &request.required("model_id")?)?;
    let text = request.get("status").map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned));
    let status = text.as_deref().and_then(LoggedModelStatus::parse).ok_or_else(|| {
        ApiError::invalid(format!(
            "status must be LOGGED_MODEL_READY, LOGGED_MODEL_UPLOAD_FAILED or LOGGED_MODEL_PENDING, not {}",
            text.as_deref().unwrap_or("nothing")
        ))
    })?;
    let digest = match status {
        LoggedModelStatus::Ready => crate::artifacts::tree_path(&model.artifact_uri)
            .map(|tree| crate::artifacts::tree_digest(state, &tree))
            .transpose()?
            .flatten()
            .map(|(digest, _)| digest),
        _ => None,
    };
    let model = state.meta.finalize_logged_model(&model.model_id, status, digest)?;
    answer(state, &model)
}

/// `DELETE /logged-models/{model_id}`: the model leaves searches; its files and any versions
/// registered from it stay.
pub(crate) fn delete(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find(state, &request.required("model_id")?)?;
    state.meta.delete_logged_model(&model.model_id)?;
    Ok(json!({}))
}

/// `PATCH /logged-models/{model_id}/tags`.
pub(crate) fn set_tags(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find(state, &request.required("model_id")?)?;
    let tags = checked_pairs(request, "tags", "tag", 8000)?;
    state.meta.set_logged_model_tags(&model.model_id, &tags)?;
    Ok(json!({}))
}

/// `DELETE /logged-models/{model_id}/tags/{tag_key}`.
pub(crate) fn delete_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find(state, &request.required("model_id")?)?;
    let key = request.required("tag_key")?;
    if !state.meta.delete_logged_model_tag(&model.model_id, &key)? {
        return Err(ApiError::not_found(format!(
            "No tag with key '{key}' found for model with ID '{}'.",
            model.model_id
        )));
    }
    Ok(json!({}))
}

/// `POST /logged-models/{model_id}/params`.
pub(crate) fn log_params(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find(state, &request.required("model_id")?)?;
    let params = checked_pairs(request, "params", "param", 6000)?;
    state.meta.log_logged_model_params(&model.model_id, &params)?;
    Ok(json!({}))
}

/// `GET /logged-models/{model_id}/artifacts/directories`: the entries of one directory of the
/// model's files.
pub(crate) fn list_artifacts(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find(state, &request.required("model_id")?)?;
    let path = request.string("artifact_directory_path")?.unwrap_or_default();
    crate::artifacts::listing(state, &model.artifact_uri, &path)
}

/// The datasets a search limits metrics to: `(name, digest)`.
type Datasets = Vec<(String, Option<String>)>;

fn on_datasets(metric: &ModelMetric, datasets: &[(String, Option<String>)]) -> bool {
    datasets.is_empty()
        || datasets.iter().any(|(name, digest)| {
            metric.dataset_name.as_deref() == Some(name.as_str())
                && digest.as_ref().is_none_or(|d| metric.dataset_digest.as_deref() == Some(d.as_str()))
        })
}

/// The latest value of each metric key among the points on `datasets` (newest timestamp,
/// then highest step, as MLflow ranks them).
fn latest_metrics(model: &LoggedModel, datasets: &[(String, Option<String>)]) -> Vec<Metric> {
    let mut latest: Vec<Metric> = Vec::new();
    for point in model.metrics.iter().filter(|m| on_datasets(m, datasets)) {
        let m = &point.metric;
        match latest.iter_mut().find(|l| l.key == m.key) {
            Some(l) if (m.timestamp, m.step) >= (l.timestamp, l.step) => *l = m.clone(),
            Some(_) => {}
            None => latest.push(m.clone()),
        }
    }
    latest
}

/// A logged model as the run-shaped record the filter evaluates (see [`Searched`]).
fn record(model: &LoggedModel, datasets: &[(String, Option<String>)]) -> Run {
    Run {
        info: RunInfo {
            run_id: model.model_id.clone(),
            experiment_id: model.experiment_id,
            name: model.name.clone(),
            parent_run_id: model.source_run_id.clone(),
            status: cairn_meta::RunStatus::Finished,
            start_time: model.creation_time,
            end_time: Some(model.last_update_time),
            user: model.user.clone(),
            git_commit: None,
            git_dirty: false,
            source: model.model_type.clone(),
            artifact_uri: model.artifact_uri.clone(),
            lifecycle_stage: model.lifecycle_stage.clone(),
        },
        params: model.params.clone(),
        tags: model
            .tags
            .iter()
            .cloned()
            .chain([(cairn_meta::search::MODEL_STATUS_TAG.to_owned(), model.status.as_str().to_owned())])
            .collect(),
        metrics: latest_metrics(model, datasets),
        inputs: Vec::new(),
        models: Vec::new(),
    }
}

/// One `order_by` entry of a logged-model search.
struct Order {
    field: OrderField,
    ascending: bool,
    datasets: Datasets,
}

enum OrderField {
    Attribute(&'static str),
    Metric(String),
}

fn order(item: &Value) -> Result<Order, ApiError> {
    let field = item
        .get("field_name")
        .and_then(Value::as_str)
        .ok_or_else(|| ApiError::invalid("`field_name` in the `order_by` clause must be specified."))?;
    let field = match field.split_once('.') {
        Some(("metrics", key)) => OrderField::Metric(key.to_owned()),
        Some((entity, _)) => {
            return Err(ApiError::invalid(format!(
                "Invalid order by field name: {entity}, only `metrics.<name>` is allowed."
            )));
        }
        None => OrderField::Attribute(match field {
            "name" => "name",
            "model_id" => "model_id",
            "model_type" => "model_type",
            "status" => "status",
            "source_run_id" => "source_run_id",
            "creation_timestamp" | "creation_time" | "creation_timestamp_ms" => "creation",
            "last_updated_timestamp" | "last_updated_time" | "last_updated_timestamp_ms" => "updated",
            other => return Err(ApiError::invalid(format!("Invalid order by field name: {other}"))),
        }),
    };
    let text =
        |name: &str| item.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let datasets = match text("dataset_name") {
        Some(name) => vec![(name, text("dataset_digest"))],
        None => Vec::new(),
    };
    let ascending = item.get("ascending").and_then(Value::as_bool).unwrap_or(true);
    Ok(Order { field, ascending, datasets })
}

/// What a model sorts by for one clause: a number or text; `None` sorts last either way.
fn sort_key(model: &LoggedModel, order: &Order) -> Option<Result<f64, String>> {
    match &order.field {
        OrderField::Metric(key) => {
            latest_metrics(model, &order.datasets).into_iter().find(|m| &m.key == key).map(|m| Ok(m.value))
        }
        OrderField::Attribute("creation") => Some(Ok(model.creation_time as f64)),
        OrderField::Attribute("updated") => Some(Ok(model.last_update_time as f64)),
        OrderField::Attribute("name") => Some(Err(model.name.clone())),
        OrderField::Attribute("model_id") => Some(Err(model.model_id.clone())),
        OrderField::Attribute("model_type") => Some(Err(model.model_type.clone())),
        OrderField::Attribute("status") => Some(Err(model.status.as_str().to_owned())),
        OrderField::Attribute(_) => model.source_run_id.clone().map(Err),
    }
}

fn compare(a: &LoggedModel, b: &LoggedModel, orders: &[Order]) -> Ordering {
    for order in orders {
        let ordering = match (sort_key(a, order), sort_key(b, order)) {
            (None, None) => Ordering::Equal,
            (None, Some(_)) => Ordering::Greater,
            (Some(_), None) => Ordering::Less,
            (Some(x), Some(y)) => {
                let o = match (x, y) {
                    (Ok(x), Ok(y)) => x.total_cmp(&y),
                    (Err(x), Err(y)) => x.cmp(&y),
                    (Ok(_), Err(_)) => Ordering::Less,
                    (Err(_), Ok(_)) => Ordering::Greater,
                };
                if order.ascending { o } else { o.reverse() }
            }
        };
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    // Newest first, as MLflow appends when the order does not name the creation time.
    b.creation_time.cmp(&a.creation_time).then_with(|| a.model_id.cmp(&b.model_id))
}

/// `POST /logged-models/search`.
pub(crate) fn search(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let max = request.int("max_results")?.unwrap_or(DEFAULT_MAX_RESULTS);
    if !(1..=50_000).contains(&max) {
        return Err(ApiError::invalid(format!("max_results must be between 1 and 50000, not {max}")));
    }
    let offset: usize = match request.string("page_token")? {
        Some(t) if !t.is_empty() => {
            t.parse().map_err(|_| ApiError::invalid(format!("invalid page_token `{t}`")))?
        }
        _ => 0,
    };
    let mut experiments = Vec::new();
    for id in request.list("experiment_ids")? {
        let parsed = crate::wire::int64(&id)
            .ok_or_else(|| ApiError::invalid(format!("experiment id {id} is not a whole number")))?;
        experiments.push(parsed);
    }
    let mut datasets: Datasets = Vec::new();
    for dataset in request.list("datasets")? {
        let name =
            dataset.get("dataset_name").and_then(Value::as_str).filter(|n| !n.is_empty()).ok_or_else(
                || ApiError::invalid("`dataset_name` in the `datasets` clause must be specified."),
            )?;
        let digest = dataset.get("dataset_digest").and_then(Value::as_str).map(str::to_owned);
        datasets.push((name.to_owned(), digest));
    }
    let filter_text = request.string("filter")?.unwrap_or_default();
    let filter = Filter::parse_for(&filter_text, Searched::LoggedModels)
        .map_err(|e| ApiError::invalid(format!("invalid filter `{filter_text}`: {e}")))?;
    let filters_metrics = filter.0.iter().any(|c| matches!(c.entity, crate::search::Entity::Metric(_)));
    let orders: Vec<Order> = request.list("order_by")?.iter().map(order).collect::<Result<_, _>>()?;

    let mut models: Vec<LoggedModel> = state
        .meta
        .logged_models(&experiments)?
        .into_iter()
        .filter(|m| {
            // Datasets without a metric filter: the models with any metric on them.
            (filters_metrics || datasets.is_empty() || m.metrics.iter().any(|p| on_datasets(p, &datasets)))
                && filter.matches(&record(m, &datasets))
        })
        .collect();
    models.sort_by(|a, b| compare(a, b, &orders));
    let total = models.len();
    let max = max as usize;
    let mut registered = registrations(state)?;
    let page: Vec<Value> = models
        .iter()
        .skip(offset)
        .take(max)
        .map(|m| model_json(m, &registered.remove(&m.model_id).unwrap_or_default()))
        .collect();
    let mut out = json!({"models": page});
    if offset + max < total {
        out["next_page_token"] = json!((offset + max).to_string());
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_mlflow_rules() {
        assert!(check_name("model").is_ok());
        for bad in ["a/b", "a.b", "a:b", "50%", "it's"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
