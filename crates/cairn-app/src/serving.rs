//! Serving's use cases outside the server itself: rollouts (canary weight and shadows behind
//! an alias) and tracing a logged prediction back to its model version, run, params,
//! metrics, training data and commit.

use std::path::PathBuf;

use cairn_meta::registry::Rollout;
use cairn_serve::predlog::{self, Entry};
use serde::Serialize;
use serde_json::Value;

use crate::{Error, Result, Workspace};

/// Where a server logs predictions, under the repository root.
pub const PREDICTIONS_DIR: &str = ".cairn/predictions";
/// Where servers ship prediction-log segments on a remote.
pub const REMOTE_PREDICTIONS: &str = "predictions-v1";

/// How to change an alias's rollout; nothing set only reads it.
#[derive(Debug, Default)]
pub struct RolloutChange {
    /// `NAME@ALIAS`.
    pub target: String,
    pub canary: Option<i64>,
    /// Percent of requests the canary answers.
    pub weight: Option<i64>,
    pub shadows: Vec<i64>,
    /// Start from no rollout.
    pub clear: bool,
}

/// An alias's traffic (`model rollout --json`).
#[derive(Debug, Serialize)]
pub struct RolloutState {
    pub name: String,
    pub alias: String,
    /// The version the alias points at.
    pub version: i64,
    pub canary: Option<i64>,
    pub weight: i64,
    pub shadows: Vec<i64>,
}

/// `model rollout NAME@ALIAS`: changes the rollout (a canary must meet the alias's policy)
/// and returns the alias's traffic.
pub fn rollout(ws: &Workspace, change: &RolloutChange) -> Result<RolloutState> {
    let target = &change.target;
    let Some((name, alias)) = target.split_once('@').filter(|(n, a)| !n.is_empty() && !a.is_empty()) else {
        return Err(Error::Usage(format!("`{target}`: give NAME@ALIAS, e.g. churn@production")));
    };
    let store = ws.meta()?;
    let Some(current) = store.resolve_alias(name, alias)? else {
        return Err(Error::refused(
            format!("`{name}` has no alias `{alias}`"),
            Some("point it at a version first: `cairn model alias NAME@VERSION ALIAS`"),
        ));
    };
    let changing =
        change.canary.is_some() || change.weight.is_some() || !change.shadows.is_empty() || change.clear;
    if changing {
        let mut rollout =
            if change.clear { Rollout::default() } else { store.rollout(name, alias)?.unwrap_or_default() };
        if let Some(v) = change.canary {
            if v == current {
                return Err(Error::Usage(format!(
                    "version {v} already is `{alias}`; a canary must be another version"
                )));
            }
            // The canary answers real traffic for the alias: it must meet the alias's policy.
            let problems = store.policy_violations(name, alias, v)?;
            if !problems.is_empty() {
                return Err(Error::refused(
                    format!("{name}@{v} may not take `{alias}` traffic:\n  {}", problems.join("\n  ")),
                    Some("the rollout did not change; see `cairn model policy NAME ALIAS`"),
                ));
            }
            rollout.canary = Some(v);
            if change.weight.is_none() && rollout.weight == 0 {
                rollout.weight = 10;
            }
        }
        if let Some(w) = change.weight {
            if !(0..=100).contains(&w) {
                return Err(Error::Usage(format!("--weight {w}: give a percentage from 0 to 100")));
            }
            if rollout.canary.is_none() {
                return Err(Error::Usage("--weight needs a canary: add --canary VERSION".into()));
            }
            rollout.weight = w;
        }
        for &s in &change.shadows {
            if !rollout.shadows.contains(&s) {
                rollout.shadows.push(s);
            }
        }
        rollout.user = ws.user();
        let empty = rollout.canary.is_none() && rollout.shadows.is_empty();
        store.set_rollout(name, alias, if empty { None } else { Some(&rollout) }).map_err(|e| match e {
            cairn_meta::MetaError::NoModelVersion(v) => {
                Error::refused(format!("no version {v}"), Some("see `cairn model versions NAME`"))
            }
            other => other.into(),
        })?;
    }
    let rollout = store.rollout(name, alias)?;
    Ok(RolloutState {
        name: name.to_owned(),
        alias: alias.to_owned(),
        version: current,
        canary: rollout.as_ref().and_then(|r| r.canary),
        weight: rollout.as_ref().map_or(0, |r| r.weight),
        shadows: rollout.map(|r| r.shadows).unwrap_or_default(),
    })
}

/// How recent a trace id may be for [`trace`] to wait for its log line (the server writes
/// within about a second; a little more allows for a loaded machine).
const RECENT_TRACE_MS: i64 = 10_000;

/// Where to look for a prediction.
#[derive(Debug, Default)]
pub struct TraceRequest {
    pub trace_id: String,
    /// The server's log directory (default: `.cairn/predictions`).
    pub log_dir: Option<PathBuf>,
    /// A remote servers ship their logs to, searched when the local log lacks the id.
    pub remote: Option<String>,
}

/// A shadow's answer to the same request.
#[derive(Debug, Serialize)]
pub struct ShadowAnswer {
    pub version: i64,
    pub status: i32,
    pub outputs: Value,
    pub error: Option<String>,
    #[serde(skip)]
    pub model: String,
    #[serde(skip)]
    pub raw_outputs: String,
}

/// The registered version that answered.
#[derive(Debug, Serialize)]
pub struct TracedVersion {
    pub digest: String,
    pub source: String,
    pub run_id: Option<String>,
    pub creation_time: i64,
    pub profile: Option<String>,
    #[serde(skip)]
    pub kind: String,
}

/// A logged prediction walked back to where it came from (`trace --json`).
#[derive(Debug, Serialize)]
pub struct Trace {
    pub trace_id: String,
    pub time_ms: i64,
    pub endpoint: String,
    pub model: String,
    pub version: i64,
    pub role: String,
    pub protocol: String,
    pub status: i32,
    pub latency_us: i64,
    pub inputs: Value,
    pub outputs: Value,
    pub error: Option<String>,
    pub shadows: Vec<ShadowAnswer>,
    /// `None`: the version is no longer in the registry.
    pub model_version: Option<TracedVersion>,
    /// The version's lineage: run, params, metrics, inputs, commit.
    pub lineage: Value,
    /// The inputs and outputs as logged (JSON text).
    #[serde(skip)]
    pub raw: (String, String),
}

fn log_error(e: predlog::LogError) -> Error {
    Error::refused(e.to_string(), None)
}

/// Copies the remote's log segments whose time range covers `id` into the state directory;
/// returns that directory.
fn fetch_segments(ws: &Workspace, remote: &str, id: &str) -> Result<PathBuf> {
    let remote = ws.remote(Some(remote), None)?;
    let at = predlog::trace_time(id);
    let wanted: Vec<String> = remote
        .list_documents(REMOTE_PREDICTIONS)?
        .into_iter()
        .filter(|n| predlog::segment_range(n).is_some_and(|(a, b)| at.is_none_or(|t| a <= t && t <= b)))
        .collect();
    let fetched = ws.repo().root().join(".cairn/state/predictions-remote");
    std::fs::create_dir_all(&fetched).map_err(|e| Error::io("create", &fetched, e))?;
    for (name, bytes) in remote.get_documents(REMOTE_PREDICTIONS, &wanted)? {
        let path = fetched.join(&name);
        cairn_fs::write(&path, &bytes).map_err(|e| Error::io("write", &path, e))?;
    }
    Ok(fetched)
}

/// `trace ID`: a logged prediction, walked back to its model version, run, params, metrics,
/// training data and commit. A very recent id is waited for briefly (a server writes its log
/// within about a second).
pub fn trace(ws: &Workspace, request: &TraceRequest) -> Result<Trace> {
    let id = request.trace_id.trim();
    let dir = request.log_dir.clone().unwrap_or_else(|| ws.repo().root().join(PREDICTIONS_DIR));
    let mut entries = predlog::find(&dir, id).map_err(log_error)?;
    let recent = |id: &str| {
        predlog::trace_time(id).is_some_and(|t| (0..RECENT_TRACE_MS).contains(&(predlog::now_ms() - t)))
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while entries.is_empty() && recent(id) && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
        entries = predlog::find(&dir, id).map_err(log_error)?;
    }
    if entries.is_empty()
        && let Some(remote) = &request.remote
    {
        entries = predlog::find(&fetch_segments(ws, remote, id)?, id).map_err(log_error)?;
    }
    let Some(answer) = entries.iter().find(|e| e.role != "shadow").or(entries.first()).cloned() else {
        if recent(id) {
            return Err(Error::refused(
                format!("prediction `{id}` is not written to {} yet", dir.display()),
                Some("the server writes its log within a second or two of answering; retry in a second"),
            ));
        }
        return Err(Error::refused(
            format!("no prediction with trace id `{id}` in {}", dir.display()),
            Some(
                "trace ids come from the x-cairn-trace-id response header; a server started elsewhere logs under its own --log-dir",
            ),
        ));
    };
    let store = ws.meta()?;
    let version = store.model_version(&answer.model, answer.version)?;
    let lineage: Value =
        version.as_ref().and_then(|v| serde_json::from_str(&v.lineage).ok()).unwrap_or(Value::Null);
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let shadows = entries
        .iter()
        .filter(|e| e.role == "shadow")
        .map(|e: &Entry| ShadowAnswer {
            version: e.version,
            status: e.status,
            outputs: parse(&e.outputs),
            error: e.error.clone(),
            model: e.model.clone(),
            raw_outputs: e.outputs.clone(),
        })
        .collect();
    Ok(Trace {
        inputs: parse(&answer.inputs),
        outputs: parse(&answer.outputs),
        raw: (answer.inputs, answer.outputs),
        trace_id: answer.trace_id,
        time_ms: answer.time_ms,
        endpoint: answer.endpoint,
        model: answer.model,
        version: answer.version,
        role: answer.role,
        protocol: answer.protocol,
        status: answer.status,
        latency_us: answer.latency_us,
        error: answer.error,
        shadows,
        model_version: version.map(|v| TracedVersion {
            digest: v.digest,
            source: v.source,
            run_id: v.run_id,
            creation_time: v.creation_time,
            profile: v.profile,
            kind: v.kind,
        }),
        lineage,
    })
}
