//! MLflow's model registry endpoints (`registered-models/*`, `model-versions/*`,
//! `registered-models/alias`) over Cairn's registry, so `MlflowClient` registry calls work.
//!
//! Differences a client can see, all deliberate: versions are immutable, so
//! `model-versions/delete` is refused (move aliases instead) and registering content that is
//! already a version returns that version; stages, which MLflow deprecated for aliases, are
//! aliases here: `transition-stage` to `Staging` or `Production` moves the alias `staging` or
//! `production` to the version (so the previous holder is archived, as with
//! `archive_existing_versions`), `None` and `Archived` take those aliases off it, and a
//! version's `current_stage` is read back from its aliases; an alias move must satisfy the
//! alias's policy (`cairn model policy`), else it is refused with the reasons. A version
//! created here from an artifact `source` is named by the digests of the artifacts under it,
//! when the artifacts are in this server's tree.

use cairn_meta::registry::{ModelVersion, NewVersion, RegisteredModel, VersionKind};
use serde_json::{Value, json};

use crate::search::{Filter, record};
use crate::wire::Request;
use crate::{ApiError, State};

fn tags_json(state: &State, name: &str, version: i64) -> Result<Value, ApiError> {
    let tags = state.meta.model_tags(name, version)?;
    Ok(Value::Array(tags.into_iter().map(|(k, v)| json!({"key": k, "value": v})).collect()))
}

fn version_json(state: &State, v: &ModelVersion) -> Result<Value, ApiError> {
    Ok(json!({
        "name": v.name,
        "version": v.version.to_string(),
        "creation_timestamp": v.creation_time,
        "last_updated_timestamp": v.creation_time,
        "current_stage": stage_of(&v.aliases),
        "description": v.description,
        "user_id": v.user,
        "source": v.source,
        "run_id": v.run_id.clone().unwrap_or_default(),
        "status": "READY",
        "tags": tags_json(state, &v.name, v.version)?,
        "aliases": v.aliases,
        "model_id": cairn_meta::logged_models::model_id_of(&v.source).unwrap_or_default(),
    }))
}

/// The stages MLflow knows, as the aliases that stand for them here.
const STAGES: [(&str, &str); 2] = [("Production", "production"), ("Staging", "staging")];

/// A version's MLflow stage, from its aliases (`production` outranks `staging`).
fn stage_of(aliases: &[String]) -> &'static str {
    STAGES.iter().find(|(_, alias)| aliases.iter().any(|a| a == alias)).map_or("None", |(stage, _)| stage)
}

/// `model-versions/transition-stage`: a stage is an alias (see the module docs).
pub(crate) fn transition_stage(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let version = version_number(request)?;
    let stage = request.required("stage")?;
    let current = find_version(state, &name, version)?;
    match STAGES.iter().find(|(s, _)| s.eq_ignore_ascii_case(&stage)) {
        Some((_, alias)) => {
            move_alias(state, &name, alias, version, &format!("stage {stage} through the REST API"))?
        }
        None if stage.eq_ignore_ascii_case("none") || stage.eq_ignore_ascii_case("archived") => {
            for (_, alias) in STAGES.iter().filter(|(_, a)| current.aliases.iter().any(|x| x == a)) {
                state.meta.move_alias(
                    &name,
                    alias,
                    None,
                    "",
                    &format!("stage {stage} through the REST API"),
                )?;
            }
        }
        None => {
            return Err(ApiError::invalid(format!(
                "unknown stage `{stage}`; use None, Staging, Production or Archived"
            )));
        }
    }
    Ok(json!({"model_version": version_json(state, &find_version(state, &name, version)?)?}))
}

fn model_json(state: &State, m: &RegisteredModel) -> Result<Value, ApiError> {
    let latest: Vec<Value> = match m.latest_version {
        Some(v) => state
            .meta
            .model_version(&m.name, v)?
            .iter()
            .map(|v| version_json(state, v))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    Ok(json!({
        "name": m.name,
        "creation_timestamp": m.creation_time,
        "last_updated_timestamp": m.last_update_time,
        "description": m.description,
        "latest_versions": latest,
        "tags": tags_json(state, &m.name, 0)?,
        "aliases": m.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect::<Vec<_>>(),
    }))
}

fn find_model(state: &State, name: &str) -> Result<RegisteredModel, ApiError> {
    state
        .meta
        .model(name)?
        .ok_or_else(|| ApiError::not_found(format!("Registered Model with name={name} not found")))
}

fn version_number(request: &Request) -> Result<i64, ApiError> {
    let text = request.required("version")?;
    text.parse().map_err(|_| ApiError::invalid(format!("version `{text}` is not a whole number")))
}

fn find_version(state: &State, name: &str, version: i64) -> Result<ModelVersion, ApiError> {
    state.meta.model_version(name, version)?.ok_or_else(|| {
        ApiError::not_found(format!("Model Version (name={name}, version={version}) not found"))
    })
}

pub(crate) fn create_model(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    if name.trim().is_empty() {
        return Err(ApiError::invalid("a registered model needs a name"));
    }
    // Tags are checked before anything is written, so bad ones leave no model behind.
    let tags = request.pairs("tags")?;
    if let Some((key, _)) = tags.iter().find(|(k, _)| k.is_empty() || k.len() > 250) {
        return Err(ApiError::invalid(format!("tag key `{key}` must have 1 to 250 characters")));
    }
    if !state.meta.create_model(&name, &request.string("description")?.unwrap_or_default())? {
        return Err(ApiError::exists(format!("Registered Model (name={name}) already exists")));
    }
    for (key, value) in &tags {
        state.meta.set_model_tag(&name, 0, key, value)?;
    }
    Ok(json!({"registered_model": model_json(state, &find_model(state, &name)?)?}))
}

pub(crate) fn get_model(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find_model(state, &request.required("name")?)?;
    Ok(json!({"registered_model": model_json(state, &model)?}))
}

pub(crate) fn rename_model(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let new_name = request.required("new_name")?;
    find_model(state, &name)?;
    state.meta.rename_model(&name, &new_name)?;
    Ok(json!({"registered_model": model_json(state, &find_model(state, &new_name)?)?}))
}

pub(crate) fn update_model(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    find_model(state, &name)?;
    if let Some(description) = request.string("description")? {
        state.meta.describe_model(&name, &description)?;
    }
    Ok(json!({"registered_model": model_json(state, &find_model(state, &name)?)?}))
}

pub(crate) fn delete_model(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    find_model(state, &name)?;
    state.meta.delete_model(&name)?;
    Ok(json!({}))
}

fn paged(items: Vec<Value>, request: &Request, key: &str) -> Result<Value, ApiError> {
    let max = request.int("max_results")?.unwrap_or(100).clamp(1, 50_000) as usize;
    let offset: usize = match request.string("page_token")? {
        Some(t) if !t.is_empty() => {
            t.parse().map_err(|_| ApiError::invalid(format!("invalid page_token `{t}`")))?
        }
        _ => 0,
    };
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(offset).take(max).collect();
    let mut out = json!({ key: page });
    if offset + max < total {
        out["next_page_token"] = json!((offset + max).to_string());
    }
    Ok(out)
}

pub(crate) fn search_models(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let filter = Filter::parse(&request.string("filter")?.unwrap_or_default())
        .map_err(|e| ApiError::invalid(format!("invalid filter: {e}")))?;
    let models: Vec<Value> = state
        .meta
        .models()?
        .iter()
        .filter(|m| filter.matches_absent_as_unequal(&record(&m.name, &m.name, m.creation_time, Vec::new())))
        .map(|m| model_json(state, m))
        .collect::<Result<_, _>>()?;
    paged(models, request, "registered_models")
}

pub(crate) fn latest_versions(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let model = find_model(state, &request.required("name")?)?;
    let versions: Vec<Value> = match model.latest_version {
        Some(v) => vec![version_json(state, &find_version(state, &model.name, v)?)?],
        None => Vec::new(),
    };
    Ok(json!({"model_versions": versions}))
}

/// The content a version's storage location names: the digest of the artifacts under it
/// (see [`crate::artifacts::tree_digest`]), or for a location this server does not hold, of
/// the location itself.
fn source_digest(state: &State, location: &str) -> Result<(cairn_hash::Digest, i64, VersionKind), ApiError> {
    if let Some(tree) = crate::artifacts::tree_path(location)
        && let Some((digest, size)) = crate::artifacts::tree_digest(state, &tree)?
    {
        return Ok((digest, size, VersionKind::Artifacts));
    }
    Ok((cairn_hash::hash_bytes(location.as_bytes()), 0, VersionKind::External))
}

/// `model-versions/create`. The source may be an artifact location, or a logged model
/// (`models:/<model id>`, or `model_id` given) whose files and source run are then used. As in
/// MLflow, a run this server does not know is accepted: the version then records no lineage.
pub(crate) fn create_version(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let source = request.required("source")?;
    let mut run_id = request.string("run_id")?.filter(|r| !r.is_empty());
    let tags = request.pairs("tags")?;
    if let Some((key, _)) = tags.iter().find(|(k, _)| k.is_empty() || k.len() > 250) {
        return Err(ApiError::invalid(format!("tag key `{key}` must have 1 to 250 characters")));
    }
    let model_id = request
        .string("model_id")?
        .filter(|m| !m.is_empty())
        .or_else(|| cairn_meta::logged_models::model_id_of(&source).map(str::to_owned));
    let logged = match &model_id {
        Some(id) => Some(state.meta.logged_model(id)?.ok_or_else(|| {
            ApiError::not_found(format!(
                "Unable to fetch model from model URI source artifact location '{source}': Logged model with ID '{id}' not found."
            ))
        })?),
        None => None,
    };
    let location = match &logged {
        Some(model) => {
            run_id = run_id.or_else(|| model.source_run_id.clone());
            model.artifact_uri.clone()
        }
        None => source.clone(),
    };
    let mut lineage = match &run_id {
        Some(id) => state.meta.run_lineage(id)?.unwrap_or_else(|| json!({"run_id": id, "unknown_run": true})),
        None => json!({}),
    };
    let (mut digest, size, kind) = source_digest(state, &location)?;
    if let Some(model) = &logged {
        digest = model.digest.unwrap_or(digest);
        lineage["logged_model"] = json!({
            "model_id": model.model_id,
            "digest": digest,
            "params": model.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "metrics": model.metrics.iter().map(|m| (m.metric.key.clone(), m.metric.value)).collect::<std::collections::BTreeMap<_, _>>(),
        });
    }
    // An MLflow model's signature, from its MLmodel file, so `cairn serve` can type requests.
    let signature = mlmodel(state, &location)?
        .and_then(|m| m.signature)
        .map_or_else(|| "{}".to_owned(), |s| serde_json::to_string(&s).unwrap_or_else(|_| "{}".into()));
    let version = NewVersion {
        digest,
        size,
        kind,
        model_file: cairn_model::mlflow::MLMODEL.into(),
        runtime: "mlflow".into(),
        source,
        run_id,
        signature,
        lineage: lineage.to_string(),
        profile: None,
        description: request.string("description")?.unwrap_or_default(),
        user: String::new(),
    };
    let (number, _) = state.meta.register_version(&name, &version)?;
    for (key, value) in &tags {
        state.meta.set_model_tag(&name, number, key, value)?;
    }
    Ok(json!({"model_version": version_json(state, &find_version(state, &name, number)?)?}))
}

/// The MLmodel file under `location`, read, when the location is in this server's tree and
/// has a readable one.
fn mlmodel(state: &State, location: &str) -> Result<Option<cairn_model::mlflow::MlflowModel>, ApiError> {
    let Some(tree) = crate::artifacts::tree_path(location) else { return Ok(None) };
    let path = format!("{tree}/{}", cairn_model::mlflow::MLMODEL);
    let Some(artifact) = state.meta.artifact(&path)? else { return Ok(None) };
    let Ok(bytes) = state.objects.read_verified(&artifact.digest) else { return Ok(None) };
    Ok(cairn_model::mlflow::read_mlmodel(&String::from_utf8_lossy(&bytes)).ok())
}

pub(crate) fn get_version(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    Ok(json!({"model_version": version_json(state, &find_version(state, &name, version_number(request)?)?)?}))
}

pub(crate) fn update_version(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let version = find_version(state, &name, version_number(request)?)?;
    if request.get("description").is_some() {
        return Err(ApiError::invalid(
            "model versions are immutable in Cairn, their descriptions included; describe the model instead",
        ));
    }
    Ok(json!({"model_version": version_json(state, &version)?}))
}

pub(crate) fn delete_version(_: &State, _: &Request, _: usize) -> Result<Value, ApiError> {
    Err(ApiError::invalid(
        "model versions are immutable in Cairn and are not deleted; point aliases elsewhere (registered-models/alias)",
    ))
}

pub(crate) fn search_versions(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    // `name = 'churn'` / `name LIKE ...`, `run_id = '...'`.
    let filter = Filter::parse(&request.string("filter")?.unwrap_or_default())
        .map_err(|e| ApiError::invalid(format!("invalid filter: {e}")))?;
    let mut versions = Vec::new();
    for model in state.meta.models()? {
        for v in state.meta.model_versions(&model.name)? {
            let searched =
                record(v.run_id.as_deref().unwrap_or_default(), &v.name, v.creation_time, Vec::new());
            if filter.matches_absent_as_unequal(&searched) {
                versions.push(version_json(state, &v)?);
            }
        }
    }
    paged(versions, request, "model_versions")
}

pub(crate) fn download_uri(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let version = find_version(state, &name, version_number(request)?)?;
    let location = state.meta.version_location(&version.source)?.unwrap_or(version.source);
    Ok(json!({"artifact_uri": location}))
}

pub(crate) fn set_alias(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let alias = request.required("alias")?;
    let version = version_number(request)?;
    find_version(state, &name, version)?;
    if alias.parse::<i64>().is_ok() || alias.is_empty() {
        return Err(ApiError::invalid(format!("alias `{alias}` must be a name, not a number")));
    }
    move_alias(state, &name, &alias, version, "set through the REST API")?;
    Ok(json!({}))
}

/// Moves `alias` to `version` if the alias's policy allows it, else refuses with the reasons.
fn move_alias(state: &State, name: &str, alias: &str, version: i64, reason: &str) -> Result<(), ApiError> {
    let problems = state.meta.policy_violations(name, alias, version)?;
    if !problems.is_empty() {
        return Err(ApiError::invalid(format!(
            "{name}@{version} may not become `{alias}`: {}",
            problems.join("; ")
        )));
    }
    state.meta.move_alias(name, alias, Some(version), "", reason)?;
    Ok(())
}

pub(crate) fn delete_alias(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let alias = request.required("alias")?;
    if state.meta.move_alias(&name, &alias, None, "", "removed through the REST API")?.is_none() {
        return Err(ApiError::not_found(format!("Registered model alias {alias} not found")));
    }
    Ok(json!({}))
}

pub(crate) fn get_by_alias(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let name = request.required("name")?;
    let alias = request.required("alias")?;
    let version = state
        .meta
        .resolve_alias(&name, &alias)?
        .ok_or_else(|| ApiError::not_found(format!("Registered model alias {alias} not found")))?;
    Ok(json!({"model_version": version_json(state, &find_version(state, &name, version)?)?}))
}

fn tag_target(state: &State, request: &Request) -> Result<(String, i64), ApiError> {
    let name = request.required("name")?;
    match request.string("version")? {
        Some(_) => {
            let version = version_number(request)?;
            find_version(state, &name, version)?;
            Ok((name, version))
        }
        None => {
            find_model(state, &name)?;
            Ok((name, 0))
        }
    }
}

/// `registered-models/set-tag` and `model-versions/set-tag`.
pub(crate) fn set_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let (name, version) = tag_target(state, request)?;
    let key = request.required("key")?;
    if key.is_empty() || key.len() > 250 {
        return Err(ApiError::invalid("a tag key must have 1 to 250 characters"));
    }
    let value = request.string("value")?.unwrap_or_default();
    if value.len() > 100_000 {
        return Err(ApiError::invalid(format!(
            "tag `{key}` has a value of {} characters; the limit is 100000",
            value.len()
        )));
    }
    state.meta.set_model_tag(&name, version, &key, &value)?;
    Ok(json!({}))
}

/// `registered-models/delete-tag` and `model-versions/delete-tag`.
pub(crate) fn delete_tag(state: &State, request: &Request, _: usize) -> Result<Value, ApiError> {
    let (name, version) = tag_target(state, request)?;
    state.meta.delete_model_tag(&name, version, &request.required("key")?)?;
    Ok(json!({}))
}
