//! `cairn model`: the registry. A version is immutable and named by content: the model file
//! or directory is stored in the cache and the version records its digest, its signature
//! (read from the ONNX graph, or given in `cairn-model.yaml`) and its lineage (the run that
//! produced it, that run's commit, params, metrics and input digests). Aliases point at
//! versions; every move is recorded with who, when and why; a policy can require approvals
//! and metric thresholds before an alias may point at a version; rolling back is pointing
//! the alias at the older version again.

use std::path::Path;

use cairn_meta::Store;
use cairn_meta::registry::{ModelVersion, NewVersion, Policy};
use cairn_repo::Repo;
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::output::out;
use crate::runs::open_store;

fn meta(e: cairn_meta::MetaError) -> Failure {
    Failure::user(e.to_string(), None)
}

/// Model names and aliases follow the rules of remote names: letters, digits, `-`, `_`, `.`,
/// not starting with `.` or `-`.
fn check_name(name: &str) -> Result<(), Failure> {
    cairn_repo::config::check_remote_name(name).map_err(|_| {
        Failure::usage(format!("invalid model name `{name}`: use letters, digits, `-`, `_` and `.`"))
    })
}

/// `NAME@VERSION` or `NAME@ALIAS` (or `NAME`: its latest version) → (name, version).
pub fn resolve(store: &Store, reference: &str) -> Result<(String, i64), Failure> {
    let (name, at) = match reference.split_once('@') {
        Some((name, at)) => (name, Some(at)),
        None => (reference, None),
    };
    let model = store.model(name).map_err(meta)?.ok_or_else(|| {
        Failure::user(format!("no model named `{name}`"), Some("list models with `cairn model list`"))
    })?;
    let version = match at {
        None => model
            .latest_version
            .ok_or_else(|| Failure::user(format!("model `{name}` has no versions"), None))?,
        Some(text) => match text.parse::<i64>() {
            Ok(v) => v,
            Err(_) => store.resolve_alias(name, text).map_err(meta)?.ok_or_else(|| {
                Failure::user(
                    format!("model `{name}` has no version {text} and no alias `{text}`"),
                    Some("list its versions and aliases with `cairn model show NAME`"),
                )
            })?,
        },
    };
    store.model_version(name, version).map_err(meta)?.ok_or_else(|| {
        Failure::user(
            format!("model `{name}` has no version {version}"),
            Some("see `cairn model versions NAME`"),
        )
    })?;
    Ok((name.to_owned(), version))
}

pub struct Register<'a> {
    pub name: &'a str,
    pub path: &'a Path,
    pub run: Option<&'a str>,
    pub training_data: Option<&'a Path>,
    /// `--feature-names`: the columns of a one-tensor model's input.
    pub feature_names: &'a [String],
    pub description: &'a str,
    pub json: bool,
}

/// Names the columns of a model that takes one `[N, k]` tensor (most scikit-learn models
/// exported with skl2onnx take `X`): from `--feature-names`, or else by position from the
/// training data's columns when there are k of them. A count that does not match is an
/// error: monitoring would compare the wrong columns.
fn name_columns(
    signature: &mut cairn_model::Signature,
    explicit: &[String],
    training: Option<&[String]>,
) -> Result<(), Failure> {
    let [input] = signature.inputs.as_mut_slice() else {
        if explicit.is_empty() {
            return Ok(());
        }
        return Err(Failure::user(
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
        Some(k) if two_dimensional => Err(Failure::user(
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
        _ => Err(Failure::user(
            format!(
                "input `{}` is not a [N, k] tensor with a fixed k, so its columns cannot be named",
                input.name
            ),
            Some("drop --feature-names"),
        )),
    }
}

/// `cairn model register NAME PATH`.
pub fn register(
    repo: &Repo,
    cwd: &Path,
    request: &Register,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    check_name(request.name)?;
    let path = cwd.join(request.path);
    let mut info = cairn_model::inspect(&path).map_err(|e| {
        Failure::user(
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
        .ok_or_else(|| Failure::user(format!("`{}` could not be stored", request.path.display()), None))?;
    let digest = pointer.digest.to_string();
    let store = open_store(repo)?;
    let run_id = match request.run {
        Some(prefix) => Some(cairn_app::experiments::find(&store, prefix)?.info.run_id),
        None => store.run_with_output(&digest).map_err(meta)?,
    };
    let lineage = match &run_id {
        Some(id) => store.run_lineage(id).map_err(meta)?.unwrap_or_else(|| json!({})),
        None => json!({}),
    };
    let kind = match pointer.kind {
        cairn_repo::pointer::PointerKind::Directory { .. } => "directory",
        cairn_repo::pointer::PointerKind::File { .. } => "file",
    };
    // The training data's profile, kept in the cache for monitoring.
    let mut training_columns: Option<Vec<String>> = None;
    let profile = match request.training_data {
        Some(data) => {
            let data_path = cwd.join(data);
            let source = repo.rel_path(&data_path).map_or_else(
                |_| data_path.display().to_string(),
                |rel| String::from_utf8_lossy(&rel).into_owned(),
            );
            let document = cairn_model::profile::profile_file(&data_path, &source).map_err(|e| {
                Failure::user(
                    e.to_string(),
                    Some("give a CSV or TSV file with a header row, or a Parquet file"),
                )
            })?;
            training_columns = document["columns"].as_array().map(|columns| {
                columns.iter().filter_map(|c| c["name"].as_str().map(str::to_owned)).collect()
            });
            let bytes = serde_json::to_vec_pretty(&document).unwrap_or_default();
            Some(repo.store().put_bytes(&bytes).map_err(cairn_repo::RepoError::from)?.to_string())
        }
        None => None,
    };
    name_columns(&mut info.signature, request.feature_names, training_columns.as_deref())?;
    let version = NewVersion {
        digest: digest.clone(),
        size: pointer.size as i64,
        kind: kind.into(),
        model_file: info.model_file.clone(),
        runtime: info.runtime.clone(),
        source: String::from_utf8_lossy(&rel).into_owned(),
        run_id: run_id.clone(),
        signature: serde_json::to_string(&info.signature).unwrap_or_default(),
        lineage: lineage.to_string(),
        profile: profile.clone(),
        description: request.description.to_owned(),
        user: crate::env::user_name(),
    };
    let (number, created) = store.register_version(request.name, &version).map_err(meta)?;
    if request.json {
        return crate::output::json(&json!({
            "name": request.name, "version": number, "created": created, "digest": digest,
            "run_id": run_id, "signature": info.signature, "profile": profile,
        }));
    }
    if created {
        out(format!("registered {}@{number} ({digest})", request.name))?;
    } else {
        out(format!("{}@{number} already holds this content ({digest}); no new version", request.name))?;
    }
    let describe = |specs: &[cairn_model::TensorSpec]| {
        specs.iter().map(|s| format!("{}: {}", s.name, s.dtype)).collect::<Vec<_>>().join(", ")
    };
    out(format!("  inputs:  {}", describe(&info.signature.inputs)))?;
    out(format!("  outputs: {}", describe(&info.signature.outputs)))?;
    match &run_id {
        Some(id) => out(format!("  lineage: run {}", &id[..8.min(id.len())])),
        None => out("  lineage: no recorded run produced this content (give --run ID to name one)"),
    }
}

fn version_json(v: &ModelVersion, store: &Store) -> Result<Value, Failure> {
    let approvals: Vec<Value> = store
        .approvals(&v.name, v.version)
        .map_err(meta)?
        .into_iter()
        .map(|a| json!({"user": a.user, "comment": a.comment, "time": a.time}))
        .collect();
    Ok(json!({
        "name": v.name,
        "version": v.version,
        "digest": v.digest,
        "size": v.size,
        "kind": v.kind,
        "model_file": v.model_file,
        "runtime": v.runtime,
        "source": v.source,
        "run_id": v.run_id,
        "signature": serde_json::from_str::<Value>(&v.signature).unwrap_or(Value::Null),
        "lineage": serde_json::from_str::<Value>(&v.lineage).unwrap_or(Value::Null),
        "profile": v.profile,
        "description": v.description,
        "user": v.user,
        "creation_time": v.creation_time,
        "aliases": v.aliases,
        "approvals": approvals,
    }))
}

/// `cairn model list`.
pub fn list(repo: &Repo, as_json: bool) -> Result<(), Failure> {
    let store = open_store(repo)?;
    let models = store.models().map_err(meta)?;
    if as_json {
        let list: Vec<Value> = models
            .iter()
            .map(|m| {
                json!({"name": m.name, "latest_version": m.latest_version, "description": m.description,
                       "aliases": m.aliases.iter().map(|(a, v)| (a.clone(), *v)).collect::<std::collections::BTreeMap<_, _>>()})
            })
            .collect();
        return crate::output::json(&list);
    }
    if models.is_empty() {
        return out("no models registered (cairn model register NAME PATH)");
    }
    for m in models {
        let aliases: Vec<String> = m.aliases.iter().map(|(a, v)| format!("{a}→{v}")).collect();
        out(format!(
            "{:<24} latest {:<4} {}",
            m.name,
            m.latest_version.map_or("-".into(), |v| v.to_string()),
            aliases.join(" ")
        ))?;
    }
    Ok(())
}

/// `cairn model versions NAME`.
pub fn versions(repo: &Repo, name: &str, as_json: bool) -> Result<(), Failure> {
    let store = open_store(repo)?;
    if store.model(name).map_err(meta)?.is_none() {
        return Err(Failure::user(
            format!("no model named `{name}`"),
            Some("list models with `cairn model list`"),
        ));
    }
    let versions = store.model_versions(name).map_err(meta)?;
    if as_json {
        let list: Vec<Value> = versions.iter().map(|v| version_json(v, &store)).collect::<Result<_, _>>()?;
        return crate::output::json(&list);
    }
    for v in versions {
        out(format!(
            "{}@{:<4} {}  {}  run {}  {}",
            v.name,
            v.version,
            &v.digest[..v.digest.len().min(19)],
            crate::progress::human_bytes(v.size as u64),
            v.run_id.as_deref().map_or("-", |r| &r[..8.min(r.len())]),
            v.aliases.join(",")
        ))?;
    }
    Ok(())
}

/// `cairn model show NAME[@VERSION|@ALIAS]`.
pub fn show(repo: &Repo, reference: &str, as_json: bool) -> Result<(), Failure> {
    let store = open_store(repo)?;
    let (name, version) = resolve(&store, reference)?;
    let v =
        store.model_version(&name, version).map_err(meta)?.ok_or_else(|| Failure::user("vanished", None))?;
    let value = version_json(&v, &store)?;
    if as_json {
        return crate::output::json(&value);
    }
    out(format!("{name}@{version}  {}", v.digest))?;
    out(format!("  registered by {} from {} ({} runtime)", v.user, v.source, v.runtime))?;
    if !v.aliases.is_empty() {
        out(format!("  aliases: {}", v.aliases.join(", ")))?;
    }
    for (title, key) in [("inputs", "inputs"), ("outputs", "outputs")] {
        let specs = value["signature"][key].as_array().cloned().unwrap_or_default();
        let text: Vec<String> = specs
            .iter()
            .map(|s| {
                format!(
                    "{}: {} {}",
                    s["name"].as_str().unwrap_or(""),
                    s["dtype"].as_str().unwrap_or(""),
                    s["shape"]
                )
            })
            .collect();
        out(format!("  {title}: {}", text.join("; ")))?;
    }
    let lineage = &value["lineage"];
    if let Some(run) = lineage["run_id"].as_str() {
        out(format!("  run {run} at commit {}", lineage["commit"].as_str().unwrap_or("-")))?;
        if let Some(metrics) = lineage["metrics"].as_object() {
            let text: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out(format!("  metrics: {}", text.join(" ")))?;
        }
    }
    for a in value["approvals"].as_array().cloned().unwrap_or_default() {
        out(format!(
            "  approved by {}: {}",
            a["user"].as_str().unwrap_or(""),
            a["comment"].as_str().unwrap_or("")
        ))?;
    }
    Ok(())
}

/// Checks a policy condition's syntax.
fn parse_condition(text: &str) -> Result<(), Failure> {
    cairn_meta::registry::parse_condition(text).map(drop).ok_or_else(|| {
        Failure::usage(format!("invalid condition `{text}`: write METRIC OP NUMBER, e.g. `accuracy >= 0.9`"))
    })
}

/// `cairn model alias NAME@VERSION ALIAS [--reason ...]` (also how to roll back).
pub fn alias(repo: &Repo, reference: &str, alias: &str, reason: &str) -> Result<(), Failure> {
    check_name(alias)?;
    if alias.parse::<i64>().is_ok() {
        return Err(Failure::usage(format!("alias `{alias}` is a number; it would read as a version")));
    }
    let store = open_store(repo)?;
    let (name, version) = resolve(&store, reference)?;
    let problems = store.policy_violations(&name, alias, version).map_err(meta)?;
    if !problems.is_empty() {
        return Err(Failure::user(
            format!("{name}@{version} may not become `{alias}`:\n  {}", problems.join("\n  ")),
            Some("the alias did not move; see the policy with `cairn model policy NAME ALIAS`"),
        ));
    }
    let previous =
        store.move_alias(&name, alias, Some(version), &crate::env::user_name(), reason).map_err(meta)?;
    // Promoting the canary ends its rollout share (shadows stay).
    if let Some(mut rollout) = store.rollout(&name, alias).map_err(meta)?
        && rollout.canary == Some(version)
    {
        rollout.canary = None;
        rollout.weight = 0;
        rollout.shadows.retain(|&s| s != version);
        let keep = !rollout.shadows.is_empty();
        store.set_rollout(&name, alias, keep.then_some(&rollout)).map_err(meta)?;
    }
    match previous {
        Some(p) if p == version => out(format!("{name}@{alias} already is version {version}")),
        Some(p) => out(format!("{name}@{alias}: {p} → {version}")),
        None => out(format!("{name}@{alias} → {version}")),
    }
}

/// `cairn model unalias NAME ALIAS`.
pub fn unalias(repo: &Repo, name: &str, alias: &str, reason: &str) -> Result<(), Failure> {
    let store = open_store(repo)?;
    match store.move_alias(name, alias, None, &crate::env::user_name(), reason).map_err(meta)? {
        Some(p) => out(format!("removed {name}@{alias} (was version {p})")),
        None => Err(Failure::user(format!("model `{name}` has no alias `{alias}`"), None)),
    }
}

/// `cairn model history NAME [ALIAS]`.
pub fn history(repo: &Repo, name: &str, alias: Option<&str>, as_json: bool) -> Result<(), Failure> {
    let store = open_store(repo)?;
    let moves = store.alias_history(name, alias).map_err(meta)?;
    if as_json {
        let list: Vec<Value> = moves
            .iter()
            .map(|m| {
                json!({
                    "alias": m.alias,
                    "version": m.version,
                    "previous": m.previous,
                    "user": m.user,
                    "time": crate::output::iso_time(m.time),
                    "time_ms": m.time,
                    "reason": m.reason,
                })
            })
            .collect();
        return crate::output::json(&list);
    }
    for m in moves {
        let show = |v: Option<i64>| v.map_or("-".to_owned(), |v| v.to_string());
        out(format!(
            "{}  {:<12} {} → {}  by {}{}",
            crate::output::format_time(m.time),
            m.alias,
            show(m.previous),
            show(m.version),
            m.user,
            if m.reason.is_empty() { String::new() } else { format!(": {}", m.reason) }
        ))?;
    }
    Ok(())
}

/// `cairn model approve NAME@VERSION --comment ...`.
pub fn approve(repo: &Repo, reference: &str, comment: &str) -> Result<(), Failure> {
    if comment.trim().is_empty() {
        return Err(Failure::usage("an approval needs --comment saying what was checked"));
    }
    let store = open_store(repo)?;
    let (name, version) = resolve(&store, reference)?;
    store.approve(&name, version, &crate::env::user_name(), comment).map_err(meta)?;
    out(format!("approved {name}@{version}"))
}

/// `cairn model policy NAME ALIAS [--approvals N] [--require 'METRIC OP N']... [--clear]`.
pub fn policy(
    repo: &Repo,
    name: &str,
    alias: &str,
    approvals: Option<i64>,
    require: &[String],
    allow_delete: Option<bool>,
    clear: bool,
) -> Result<(), Failure> {
    let store = open_store(repo)?;
    if store.model(name).map_err(meta)?.is_none() {
        return Err(Failure::user(
            format!("no model named `{name}`"),
            Some("list models with `cairn model list`"),
        ));
    }
    if clear {
        store.set_policy(name, alias, None).map_err(meta)?;
        return out(format!("{name}@{alias} has no policy"));
    }
    if approvals.is_some() || !require.is_empty() || allow_delete.is_some() {
        for condition in require {
            parse_condition(condition)?;
        }
        // Unnamed parts of an existing policy are kept.
        let current = store.policy(name, alias).map_err(meta)?.unwrap_or_default();
        let policy = Policy {
            approvals: approvals.map(|a| a.max(0)).unwrap_or(current.approvals),
            conditions: if require.is_empty() { current.conditions } else { require.to_vec() },
            allow_delete: allow_delete.unwrap_or(current.allow_delete),
        };
        store.set_policy(name, alias, Some(&policy)).map_err(meta)?;
    }
    match store.policy(name, alias).map_err(meta)? {
        Some(p) => out(format!("{name}@{alias}: {}", p.describe())),
        None => out(format!("{name}@{alias} has no policy: any version may take it")),
    }
}
