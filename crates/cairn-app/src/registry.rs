//! The model registry. A version is immutable and named by content: the model file or
//! directory is stored in the cache and the version records its digest, its signature (read
//! from the ONNX graph, an MLflow `MLmodel`, or `cairn-model.yaml`) and its lineage (the run
//! that produced it, that run's commit, params, metrics and input digests). Aliases point at
//! versions; every move is recorded with who, when and why; a policy can require approvals
//! and metric thresholds before an alias may point at a version; rolling back is pointing
//! the alias at the older version again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use cairn_meta::Store;
use cairn_meta::registry::{ModelVersion, NewVersion, Policy, VersionKind};
use serde::Serialize;
use serde_json::{Value, json};

use crate::{Error, Result, Workspace};

/// Model names and aliases follow the rules of remote names: letters, digits, `-`, `_`, `.`,
/// not starting with `.` or `-`.
fn check_name(name: &str) -> Result<()> {
    cairn_repo::config::check_remote_name(name).map_err(|_| {
        Error::Usage(format!("invalid model name `{name}`: use letters, digits, `-`, `_` and `.`"))
    })
}

fn no_model(name: &str) -> Error {
    Error::refused(format!("no model named `{name}`"), Some("list models with `cairn model list`"))
}

/// `NAME@VERSION` or `NAME@ALIAS` (or `NAME`: its latest version) → (name, version).
pub fn resolve(store: &Store, reference: &str) -> Result<(String, i64)> {
    let (name, at) = match reference.split_once('@') {
        Some((name, at)) => (name, Some(at)),
        None => (reference, None),
    };
    let model = store.model(name)?.ok_or_else(|| no_model(name))?;
    let version = match at {
        None => model
            .latest_version
            .ok_or_else(|| Error::refused(format!("model `{name}` has no versions"), None))?,
        Some(text) => match text.parse::<i64>() {
            Ok(v) => v,
            Err(_) => store.resolve_alias(name, text)?.ok_or_else(|| {
                Error::refused(
                    format!("model `{name}` has no version {text} and no alias `{text}`"),
                    Some("list its versions and aliases with `cairn model show NAME`"),
                )
            })?,
        },
    };
    store.model_version(name, version)?.ok_or_else(|| {
        Error::refused(
            format!("model `{name}` has no version {version}"),
            Some("see `cairn model versions NAME`"),
        )
    })?;
    Ok((name.to_owned(), version))
}

/// What to register.
pub struct Register {
    pub name: String,
    /// The model file or directory (absolute, or relative to the repository root).
    pub path: PathBuf,
    /// The run that made it (an id prefix or a name); default: the run that output it.
    pub run: Option<String>,
    /// Training data to profile for monitoring (CSV, TSV or Parquet).
    pub training_data: Option<PathBuf>,
    /// The columns of a one-tensor model's input.
    pub feature_names: Vec<String>,
    pub description: String,
}

/// A registered version (`model register --json`).
#[derive(Debug, Serialize)]
pub struct Registered {
    pub name: String,
    pub version: i64,
    /// False when the model already had a version with this content.
    pub created: bool,
    pub digest: cairn_hash::Digest,
    pub run_id: Option<String>,
    pub signature: cairn_model::Signature,
    /// The training data's profile (a cache object), when one was given.
    pub profile: Option<cairn_hash::Digest>,
}

/// Names the columns of a model that takes one `[N, k]` tensor (most scikit-learn models
/// exported with skl2onnx take `X`): from `explicit`, or else by position from the training
/// data's columns when there are k of them. A count that does not match is an error:
/// monitoring would compare the wrong columns.
fn name_columns(
    signature: &mut cairn_model::Signature,
    explicit: &[String],
    training: Option<&[String]>,
) -> Result<()> {
    let [input] = signature.inputs.as_mut_slice() else {
        if explicit.is_empty() {
            return Ok(());
        }
        return Err(Error::refused(
            format!(
                "--feature-names names the columns of a model with one input; this one has {} (its inputs are named already)",
                signature.inputs.len()
            ),
            Some("drop --feature-names"),
        ));
    };
    let width = input.row_width();
    let two_dimensional = input.shape.as_ref().is_some_and(|s| s.len() == 2);
    let (names, from) = match (explicit.is_empty(), training) {
        (false, _) => (explicit.to_vec(), "--feature-names"),
        (true, Some(columns)) if two_dimensional && width.is_some_and(|w| w > 1) => {
            (columns.to_vec(), "the training data")
        }
        _ => return Ok(()),
    };
    match width {
        Some(k) if two_dimensional && k == names.len() => {
            input.columns = Some(names);
            Ok(())
        }
        Some(k) if two_dimensional => Err(Error::refused(
            format!(
                "input `{}` takes {k} columns, but {from} has {} ({})",
                input.name,
                names.len(),
                names.join(", ")
            ),
            Some(
                "give the training data's feature columns only (no label column), or name the columns with --feature-names a,b,c",
            ),
        )),
        _ => Err(Error::refused(
            format!(
                "input `{}` is not a [N, k] tensor with a fixed k, so its columns cannot be named",
                input.name
            ),
            Some("drop --feature-names"),
        )),
    }
}

/// The training data's profile, stored in the cache: (its digest, its column names).
fn profile(ws: &Workspace, data: &Path) -> Result<(cairn_hash::Digest, Option<Vec<String>>)> {
    let repo = ws.repo();
    let source = repo
        .rel_path(data)
        .map_or_else(|_| data.display().to_string(), |rel| String::from_utf8_lossy(&rel).into_owned());
    let document = cairn_model::profile::profile_file(data, &source).map_err(|e| {
        Error::refused(e.to_string(), Some("give a CSV or TSV file with a header row, or a Parquet file"))
    })?;
    let columns = document["columns"]
        .as_array()
        .map(|columns| columns.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect());
    let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
    Ok((repo.store().put_bytes(&bytes)?, columns))
}

/// `model register NAME PATH`: stores the model in the cache and records a version (or finds
/// the version that already holds this content).
pub fn register(
    ws: &Workspace,
    request: &Register,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<Registered> {
    check_name(&request.name)?;
    let repo = ws.repo();
    let path = repo.root().join(&request.path);
    let mut info = cairn_model::inspect(&path).map_err(|e| {
        Error::refused(
            e.to_string(),
            Some(
                "register an .onnx file, a directory with cairn-model.yaml naming its runtime and model file, or an MLflow model directory (MLmodel with a python_function flavor and a signature)",
            ),
        )
    })?;
    let rel = repo.rel_path(&path)?;
    let pointer = repo
        .store_outputs(std::slice::from_ref(&rel), reporter)?
        .pop()
        .ok_or_else(|| Error::refused(format!("`{}` could not be stored", request.path.display()), None))?;
    let digest = pointer.digest;
    let store = ws.meta()?;
    let run_id = match &request.run {
        Some(prefix) => Some(crate::experiments::find(&store, prefix)?.info.run_id),
        None => store.run_with_output(&digest.to_string())?,
    };
    let lineage = match &run_id {
        Some(id) => store.run_lineage(id)?.unwrap_or_else(|| json!({})),
        None => json!({}),
    };
    let kind = match pointer.kind {
        cairn_repo::pointer::PointerKind::Directory { .. } => VersionKind::Directory,
        cairn_repo::pointer::PointerKind::File { .. } => VersionKind::File,
    };
    let (profile, training_columns) = match &request.training_data {
        Some(data) => {
            let (digest, columns) = profile(ws, &repo.root().join(data))?;
            (Some(digest), columns)
        }
        None => (None, None),
    };
    name_columns(&mut info.signature, &request.feature_names, training_columns.as_deref())?;
    let version = NewVersion {
        digest,
        size: pointer.size as i64,
        kind,
        model_file: info.model_file.clone(),
        runtime: info.runtime.clone(),
        source: String::from_utf8_lossy(&rel).into_owned(),
        run_id: run_id.clone(),
        signature: serde_json::to_string(&info.signature).unwrap_or_default(),
        lineage: lineage.to_string(),
        profile,
        description: request.description.clone(),
        user: ws.user(),
    };
    let (number, created) = store.register_version(&request.name, &version)?;
    Ok(Registered {
        name: request.name.clone(),
        version: number,
        created,
        digest,
        run_id,
        signature: info.signature,
        profile,
    })
}

/// An approval of a version.
#[derive(Debug, Serialize)]
pub struct ApprovalDocument {
    pub user: String,
    pub comment: String,
    pub time: i64,
}

/// A version as `model show --json` and `model versions --json` print it.
#[derive(Debug, Serialize)]
pub struct VersionDocument {
    pub name: String,
    pub version: i64,
    pub digest: cairn_hash::Digest,
    pub size: i64,
    pub kind: VersionKind,
    pub model_file: String,
    pub runtime: String,
    pub source: String,
    pub run_id: Option<String>,
    pub signature: Value,
    pub lineage: Value,
    pub profile: Option<cairn_hash::Digest>,
    pub description: String,
    pub user: String,
    pub creation_time: i64,
    pub aliases: Vec<String>,
    pub approvals: Vec<ApprovalDocument>,
}

fn document(v: ModelVersion, store: &Store) -> Result<VersionDocument> {
    let approvals = store
        .approvals(&v.name, v.version)?
        .into_iter()
        .map(|a| ApprovalDocument { user: a.user, comment: a.comment, time: a.time })
        .collect();
    Ok(VersionDocument {
        signature: serde_json::from_str(&v.signature).unwrap_or(Value::Null),
        lineage: serde_json::from_str(&v.lineage).unwrap_or(Value::Null),
        name: v.name,
        version: v.version,
        digest: v.digest,
        size: v.size,
        kind: v.kind,
        model_file: v.model_file,
        runtime: v.runtime,
        source: v.source,
        run_id: v.run_id,
        profile: v.profile,
        description: v.description,
        user: v.user,
        creation_time: v.creation_time,
        aliases: v.aliases,
        approvals,
    })
}

/// A registered model (`model list --json`).
#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub name: String,
    pub latest_version: Option<i64>,
    pub description: String,
    pub aliases: BTreeMap<String, i64>,
}

/// `model list`.
pub fn list(ws: &Workspace) -> Result<Vec<ModelSummary>> {
    Ok(ws
        .meta()?
        .models()?
        .into_iter()
        .map(|m| ModelSummary {
            name: m.name,
            latest_version: m.latest_version,
            description: m.description,
            aliases: m.aliases.into_iter().collect(),
        })
        .collect())
}

/// `model versions NAME`.
pub fn versions(ws: &Workspace, name: &str) -> Result<Vec<VersionDocument>> {
    let store = ws.meta()?;
    if store.model(name)?.is_none() {
        return Err(no_model(name));
    }
    store.model_versions(name)?.into_iter().map(|v| document(v, &store)).collect()
}

/// `model show NAME[@VERSION|@ALIAS]`.
pub fn show(ws: &Workspace, reference: &str) -> Result<VersionDocument> {
    let store = ws.meta()?;
    let (name, version) = resolve(&store, reference)?;
    let v = store
        .model_version(&name, version)?
        .ok_or_else(|| Error::refused(format!("model `{name}` has no version {version}"), None))?;
    document(v, &store)
}

/// An alias moved (or not: `previous == Some(version)`).
#[derive(Debug, Serialize)]
pub struct AliasMoved {
    pub name: String,
    pub alias: String,
    pub version: i64,
    pub previous: Option<i64>,
}

/// `model alias NAME@VERSION ALIAS`: points the alias at the version (also how to roll
/// back), if its policy allows. Promoting a rollout's canary ends its share.
pub fn alias(ws: &Workspace, reference: &str, alias: &str, reason: &str) -> Result<AliasMoved> {
    check_name(alias)?;
    if alias.parse::<i64>().is_ok() {
        return Err(Error::Usage(format!("alias `{alias}` is a number; it would read as a version")));
    }
    let store = ws.meta()?;
    let (name, version) = resolve(&store, reference)?;
    let problems = store.policy_violations(&name, alias, version)?;
    if !problems.is_empty() {
        return Err(Error::refused(
            format!("{name}@{version} may not become `{alias}`:\n  {}", problems.join("\n  ")),
            Some("the alias did not move; see the policy with `cairn model policy NAME ALIAS`"),
        ));
    }
    let previous = store.move_alias(&name, alias, Some(version), &ws.user(), reason)?;
    if let Some(mut rollout) = store.rollout(&name, alias)?
        && rollout.canary == Some(version)
    {
        rollout.canary = None;
        rollout.weight = 0;
        rollout.shadows.retain(|&s| s != version);
        let keep = !rollout.shadows.is_empty();
        store.set_rollout(&name, alias, keep.then_some(&rollout))?;
    }
    Ok(AliasMoved { name, alias: alias.to_owned(), version, previous })
}

/// `model unalias NAME ALIAS`: returns the version it pointed at.
pub fn unalias(ws: &Workspace, name: &str, alias: &str, reason: &str) -> Result<i64> {
    ws.meta()?
        .move_alias(name, alias, None, &ws.user(), reason)?
        .ok_or_else(|| Error::refused(format!("model `{name}` has no alias `{alias}`"), None))
}

/// One move of an alias (`model history --json`).
#[derive(Debug, Serialize)]
pub struct AliasEvent {
    pub alias: String,
    /// `None`: the alias was removed.
    pub version: Option<i64>,
    pub previous: Option<i64>,
    pub user: String,
    #[serde(serialize_with = "crate::time::serialize_iso")]
    pub time: i64,
    pub time_ms: i64,
    pub reason: String,
}

/// `model history NAME [ALIAS]`.
pub fn history(ws: &Workspace, name: &str, alias: Option<&str>) -> Result<Vec<AliasEvent>> {
    Ok(ws
        .meta()?
        .alias_history(name, alias)?
        .into_iter()
        .map(|m| AliasEvent {
            alias: m.alias,
            version: m.version,
            previous: m.previous,
            user: m.user,
            time: m.time,
            time_ms: m.time,
            reason: m.reason,
        })
        .collect())
}

/// `model approve NAME@VERSION`: returns (name, version) approved.
pub fn approve(ws: &Workspace, reference: &str, comment: &str) -> Result<(String, i64)> {
    if comment.trim().is_empty() {
        return Err(Error::Usage("an approval needs --comment saying what was checked".into()));
    }
    let store = ws.meta()?;
    let (name, version) = resolve(&store, reference)?;
    store.approve(&name, version, &ws.user(), comment)?;
    Ok((name, version))
}

/// How to change an alias's policy; parts left `None` (or empty) are kept.
#[derive(Debug, Default)]
pub struct PolicyChange {
    pub approvals: Option<i64>,
    /// Conditions such as `accuracy >= 0.9`.
    pub require: Vec<String>,
    pub allow_delete: Option<bool>,
    /// Remove the policy.
    pub clear: bool,
}

/// `model policy NAME ALIAS`: changes (or only reads) the alias's policy; returns it.
pub fn policy(ws: &Workspace, name: &str, alias: &str, change: &PolicyChange) -> Result<Option<Policy>> {
    let store = ws.meta()?;
    if store.model(name)?.is_none() {
        return Err(no_model(name));
    }
    if change.clear {
        store.set_policy(name, alias, None)?;
        return Ok(None);
    }
    if change.approvals.is_some() || !change.require.is_empty() || change.allow_delete.is_some() {
        for condition in &change.require {
            if cairn_meta::registry::parse_condition(condition).is_none() {
                return Err(Error::Usage(format!(
                    "invalid condition `{condition}`: write METRIC OP NUMBER, e.g. `accuracy >= 0.9`"
                )));
            }
        }
        let current = store.policy(name, alias)?.unwrap_or_default();
        let policy = Policy {
            approvals: change.approvals.map(|a| a.max(0)).unwrap_or(current.approvals),
            conditions: if change.require.is_empty() { current.conditions } else { change.require.clone() },
            allow_delete: change.allow_delete.unwrap_or(current.allow_delete),
        };
        store.set_policy(name, alias, Some(&policy))?;
    }
    Ok(store.policy(name, alias)?)
}

/// One alias of a model: where it points, what moving it requires, and its live traffic.
#[derive(Debug, Serialize)]
pub struct AliasState {
    pub alias: String,
    pub version: i64,
    pub policy: Option<PolicyDocument>,
    /// A canary version answering `weight` percent of the alias's requests.
    pub canary: Option<i64>,
    pub weight: i64,
    /// Versions that get a copy of every request (answers logged only).
    pub shadows: Vec<i64>,
}

/// An alias's policy as documents show it.
#[derive(Debug, Serialize)]
pub struct PolicyDocument {
    pub approvals: i64,
    pub require: Vec<String>,
    pub allow_delete: bool,
}

/// Every alias of model `name` with its policy and rollout.
pub fn aliases(ws: &Workspace, name: &str) -> Result<Vec<AliasState>> {
    let store = ws.meta()?;
    let model = store.model(name)?.ok_or_else(|| no_model(name))?;
    model
        .aliases
        .into_iter()
        .map(|(alias, version)| {
            let policy = store.policy(name, &alias)?.map(|p| PolicyDocument {
                approvals: p.approvals,
                require: p.conditions,
                allow_delete: p.allow_delete,
            });
            let rollout = store.rollout(name, &alias)?.unwrap_or_default();
            Ok(AliasState {
                alias,
                version,
                policy,
                canary: rollout.canary,
                weight: rollout.weight,
                shadows: rollout.shadows,
            })
        })
        .collect()
}
