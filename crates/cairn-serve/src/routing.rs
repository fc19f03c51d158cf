//! What the server serves and where each request goes.
//!
//! The server is started with targets (`churn@production`, `fraud@3`, `churn`). A target
//! names a model and a reference: an alias (followed live), a version (fixed) or nothing (the
//! latest version, followed live). The registry decides the rest: the version an alias points
//! at, and its rollout ([`cairn_meta::registry::Rollout`]): a canary version with a share of
//! the traffic, and shadow versions that get a copy of it.
//!
//! A watcher reads the registry's routing snapshot every [`POLL`] and, when it changed,
//! loads what is new and swaps in a new [`Table`]. Requests hold the versions they started
//! with, so a swap drops nothing and a rollback is in effect within a second.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use cairn_hash::{Digest, Manifest};
use cairn_meta::registry::{ModelVersion, RoutingSnapshot, VersionKind};
use cairn_model::TensorSpec;

use crate::batch::{BatchConfig, Batcher};
use crate::runtime::{Model, ModelFiles, Runtime};
use crate::tensor::{DType, InputSpec, Tensor};

/// How often the registry is read for alias and rollout changes.
pub const POLL: Duration = Duration::from_millis(200);

/// One served model and how it is referenced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub model: String,
    pub reference: Reference,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reference {
    Alias(String),
    Version(i64),
    Latest,
}

impl FromStr for Target {
    type Err = String;

    /// `NAME`, `NAME@ALIAS` or `NAME@VERSION`.
    fn from_str(text: &str) -> Result<Self, String> {
        let (model, reference) = match text.split_once('@') {
            None => (text, Reference::Latest),
            Some((model, at)) if !at.is_empty() => (
                model,
                at.parse::<i64>().map_or_else(|_| Reference::Alias(at.to_owned()), Reference::Version),
            ),
            Some(_) => return Err(format!("`{text}`: give NAME, NAME@ALIAS or NAME@VERSION")),
        };
        if model.is_empty() {
            return Err(format!("`{text}`: the model name is missing"));
        }
        Ok(Self { model: model.to_owned(), reference })
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.reference {
            Reference::Alias(a) => write!(f, "{}@{a}", self.model),
            Reference::Version(v) => write!(f, "{}@{v}", self.model),
            Reference::Latest => write!(f, "{}", self.model),
        }
    }
}

/// One registered model version as the server holds it: loaded, or failed with the reason.
pub struct Version {
    pub name: String,
    pub version: i64,
    /// The model's content; `None` when its registry record could not be read.
    pub digest: Option<Digest>,
    pub run_id: Option<String>,
    /// The runtime that runs it (`onnx`, `mlflow`).
    pub runtime: String,
    /// Set when this server can never run it (no such runtime, a model it cannot serve):
    /// `cairn serve` refuses to start with such a target rather than answer 503s.
    pub refused: bool,
    pub inputs: Vec<InputSpec>,
    /// Per input, the names of its columns when the registry has them (a `[N, k]` input).
    pub columns: Vec<Option<Vec<String>>>,
    pub outputs: Vec<TensorSpec>,
    pub model: Result<Arc<dyn Model>, String>,
    pub batcher: Option<Batcher>,
}

impl Version {
    /// The inputs as the prediction log and the profiles see them: an input whose columns
    /// have names becomes one `[N]` input per column, under those names, so drift, rules,
    /// exports and drill-downs speak of `age` rather than `X[0]`.
    pub fn logged_inputs(&self, inputs: &Arc<Vec<(String, Tensor)>>) -> Arc<Vec<(String, Tensor)>> {
        if self.columns.iter().all(Option::is_none) {
            return inputs.clone();
        }
        let mut out = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs.iter() {
            let names = self
                .inputs
                .iter()
                .position(|spec| &spec.name == name)
                .and_then(|i| self.columns.get(i))
                .and_then(Option::as_ref)
                .filter(|names| names.len() == tensor.width() && tensor.shape.len() == 2);
            match names {
                Some(names) => {
                    out.extend(names.iter().enumerate().map(|(j, column)| (column.clone(), tensor.column(j))))
                }
                None => out.push((name.clone(), tensor.clone())),
            }
        }
        Arc::new(out)
    }

    pub fn ready(&self) -> bool {
        self.problem().is_none()
    }

    /// Why it cannot answer now: it failed to load, or its runtime is still starting it or
    /// lost it.
    pub fn problem(&self) -> Option<String> {
        match &self.model {
            Err(reason) => Some(reason.clone()),
            Ok(model) => model.status().err(),
        }
    }

    pub fn label(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }
}

/// Where one endpoint's requests go now.
#[derive(Clone)]
pub struct Route {
    pub target: Target,
    /// The version answering (the alias's, the fixed one, or the latest); `None` with
    /// `error` when the reference resolves to nothing.
    pub primary: Option<Arc<Version>>,
    /// A canary version and the percent of requests it answers.
    pub canary: Option<(Arc<Version>, u32)>,
    /// Versions that get a copy of every request; their answers are logged, never returned.
    pub shadows: Vec<Arc<Version>>,
    pub error: Option<String>,
}

impl Route {
    /// The version that answers one request: the canary for its share, else the primary.
    pub fn pick(&self) -> Option<&Arc<Version>> {
        if let Some((canary, weight)) = &self.canary
            && fastrand::u32(0..100) < *weight
        {
            return Some(canary);
        }
        self.primary.as_ref()
    }

    /// Every version this route may answer with or copy to.
    pub fn versions(&self) -> impl Iterator<Item = &Arc<Version>> {
        self.primary.iter().chain(self.canary.iter().map(|(v, _)| v)).chain(self.shadows.iter())
    }

    /// A specific version of this endpoint, when it is being served.
    pub fn version(&self, number: i64) -> Option<&Arc<Version>> {
        self.versions().find(|v| v.version == number)
    }

    pub fn ready(&self) -> bool {
        self.primary.as_ref().is_some_and(|v| v.ready())
            && self.canary.as_ref().is_none_or(|(v, _)| v.ready())
    }

    /// Why this endpoint is not ready.
    pub fn reason(&self) -> Option<String> {
        if let Some(error) = &self.error {
            return Some(error.clone());
        }
        for v in self.primary.iter().chain(self.canary.iter().map(|(v, _)| v)) {
            if let Some(e) = v.problem() {
                return Some(format!("{}: {e}", v.label()));
            }
        }
        None
    }
}

/// Every endpoint, by model name.
#[derive(Clone, Default)]
pub struct Table {
    pub routes: BTreeMap<String, Route>,
}

impl Table {
    /// A version this server can never run ([`Version::refused`]), if any route holds one.
    pub fn refused(&self) -> Option<&Arc<Version>> {
        self.routes.values().flat_map(Route::versions).find(|v| v.refused)
    }
}

/// Loads model versions from the registry and the cache, once each.
pub struct Catalog {
    meta: Arc<cairn_meta::Store>,
    objects: cairn_store::Store,
    runtimes: Vec<Arc<dyn Runtime>>,
    /// Where model directories are laid out for runtimes that read files.
    scratch: std::path::PathBuf,
    batching: Option<BatchConfig>,
    loaded: Mutex<HashMap<(String, i64), Arc<Version>>>,
}

impl Catalog {
    /// `runtimes` by name (a version runs on the one named in the registry); model
    /// directories are laid out under `scratch`.
    pub fn new(
        meta: Arc<cairn_meta::Store>,
        objects: cairn_store::Store,
        runtimes: Vec<Arc<dyn Runtime>>,
        scratch: std::path::PathBuf,
        batching: Option<BatchConfig>,
    ) -> Self {
        Self { meta, objects, runtimes, scratch, batching, loaded: Mutex::new(HashMap::new()) }
    }

    pub fn meta(&self) -> &cairn_meta::Store {
        &self.meta
    }

    /// The version, loaded (or failed) once and kept while a table uses it.
    pub fn version(&self, name: &str, number: i64) -> Arc<Version> {
        let key = (name.to_owned(), number);
        if let Some(v) = self.loaded.lock().unwrap_or_else(PoisonError::into_inner).get(&key) {
            return v.clone();
        }
        let version = Arc::new(self.load(name, number));
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner).insert(key, version.clone());
        version
    }

    /// Forgets versions no table uses any more (their memory goes when the last request
    /// holding them ends).
    fn retain(&self, table: &Table) {
        let keep: std::collections::HashSet<(String, i64)> = table
            .routes
            .values()
            .flat_map(|r| r.versions().map(|v| (v.name.clone(), v.version)).collect::<Vec<_>>())
            .collect();
        self.loaded.lock().unwrap_or_else(PoisonError::into_inner).retain(|k, _| keep.contains(k));
    }

    fn load(&self, name: &str, number: i64) -> Version {
        let record = match self.meta.model_version(name, number) {
            Ok(Some(v)) => v,
            Ok(None) => return failed(name, number, format!("the registry has no {name}@{number}")),
            Err(e) => return failed(name, number, format!("cannot read the registry: {e}")),
        };
        let signature: cairn_model::Signature = serde_json::from_str(&record.signature).unwrap_or_default();
        let mut inputs = Vec::new();
        let mut problems = Vec::new();
        for spec in &signature.inputs {
            match DType::from_name(&spec.dtype) {
                Some(dtype) => inputs.push(InputSpec {
                    name: spec.name.clone(),
                    dtype,
                    row_shape: spec
                        .shape
                        .as_ref()
                        .map(|s| s.iter().skip(1).map(|d| d.and_then(|d| usize::try_from(d).ok())).collect())
                        .unwrap_or_default(),
                }),
                None => problems
                    .push(format!("input `{}` has type {}, which Cairn cannot send", spec.name, spec.dtype)),
            }
        }
        let runtime = self.runtimes.iter().find(|r| r.name() == record.runtime);
        let mut refused = false;
        let model = if !problems.is_empty() {
            refused = true;
            Err(problems.join("; "))
        } else if let Some(runtime) = runtime {
            self.load_with(runtime.as_ref(), &record, &mut refused)
        } else {
            refused = true;
            let names: Vec<&str> = self.runtimes.iter().map(|r| r.name()).collect();
            Err(format!(
                "runtime `{}` is not available (this server runs: {})",
                record.runtime,
                names.join(", ")
            ))
        };
        let batcher = match (&model, &self.batching) {
            (Ok(m), Some(config)) => {
                Some(Batcher::start(m.clone(), config.clone(), &format!("{name}@{number}")))
            }
            _ => None,
        };
        Version {
            name: name.to_owned(),
            version: number,
            digest: Some(record.digest),
            run_id: record.run_id.clone(),
            runtime: record.runtime.clone(),
            refused,
            columns: signature.inputs.iter().map(|spec| spec.columns.clone()).collect(),
            inputs,
            outputs: signature.outputs,
            model,
            batcher,
        }
    }

    /// Loads `record` on `runtime`: a file's bytes, or a directory laid out from the cache.
    /// An MLflow model this server cannot serve sets `refused`.
    fn load_with(
        &self,
        runtime: &dyn Runtime,
        record: &ModelVersion,
        refused: &mut bool,
    ) -> Result<Arc<dyn Model>, String> {
        if record.runtime != "mlflow" {
            let bytes = self.bytes(record)?;
            return runtime.load(ModelFiles::Bytes(&bytes)).map_err(|e| e.to_string());
        }
        let dir = self.directory(record)?;
        let mlmodel = std::fs::read_to_string(dir.join(cairn_model::mlflow::MLMODEL))
            .map_err(|e| format!("the model has no readable MLmodel file: {e}"));
        let unservable =
            mlmodel.and_then(|text| cairn_model::mlflow::read_mlmodel(&text)).map(|m| m.unservable());
        match unservable {
            Ok(None) => runtime.load(ModelFiles::Directory(&dir)).map_err(|e| e.to_string()),
            Ok(Some(reason)) | Err(reason) => {
                *refused = true;
                Err(reason)
            }
        }
    }

    /// The files of a directory model, laid out under the scratch directory by content
    /// (once; every object read is verified): a registered directory's manifest, or the
    /// artifacts a version registered through the tracking server names.
    fn directory(&self, record: &ModelVersion) -> Result<std::path::PathBuf, String> {
        let entries: Vec<(String, Digest)> = match record.kind {
            VersionKind::Directory => {
                let bytes = self.read(&record.digest)?;
                let manifest =
                    Manifest::decode(&bytes).map_err(|e| format!("bad directory manifest: {e}"))?;
                manifest
                    .entries()
                    .iter()
                    .map(|e| (String::from_utf8_lossy(&e.path).into_owned(), e.digest))
                    .collect()
            }
            VersionKind::Artifacts => {
                let location = self
                    .meta
                    .version_location(&record.source)
                    .map_err(|e| format!("cannot read the registry: {e}"))?
                    .ok_or_else(|| {
                        format!(
                            "the logged model `{}` this version was registered from is gone",
                            record.source
                        )
                    })?;
                let tree = cairn_meta::artifact_tree_path(&location).ok_or_else(|| {
                    format!("the model's files at `{location}` are not in this repository's artifact tree")
                })?;
                let files = self.meta.artifacts_under(&tree).map_err(|e| e.to_string())?;
                let mut entries = Vec::with_capacity(files.len());
                for f in files {
                    entries.push((f.path[tree.len()..].trim_start_matches('/').to_owned(), f.digest));
                }
                entries
            }
            other @ (VersionKind::File | VersionKind::External) => {
                return Err(format!("a {other} model is not a directory of files; an MLflow model must be"));
            }
        };
        if entries.is_empty() {
            return Err("the model's directory holds no files".into());
        }
        let hex = record.digest.hex();
        let dir = self.scratch.join(&hex);
        if dir.join(LAID_OUT).is_file() {
            return Ok(dir);
        }
        let partial = self.scratch.join(format!(".partial-{hex}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&partial);
        let written = (|| -> Result<(), String> {
            for (path, digest) in &entries {
                let target = partial.join(safe_relative(path)?);
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent)
                        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
                }
                std::fs::write(&target, self.read(digest)?)
                    .map_err(|e| format!("cannot write {}: {e}", target.display()))?;
            }
            std::fs::write(partial.join(LAID_OUT), b"").map_err(|e| e.to_string())
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_dir_all(&partial);
            return Err(e);
        }
        if std::fs::rename(&partial, &dir).is_err() {
            // Laid out meanwhile by another server.
            let _ = std::fs::remove_dir_all(&partial);
        }
        if dir.join(LAID_OUT).is_file() {
            Ok(dir)
        } else {
            Err(format!("cannot lay out the model at {}", dir.display()))
        }
    }

    /// A cache object, verified; a missing one says how to get it.
    fn read(&self, digest: &Digest) -> Result<Vec<u8>, String> {
        self.objects.read_verified(digest).map_err(|e| match e {
            cairn_store::StoreError::MissingObject { .. } => format!(
                "the model file ({digest}) is not in the cache at {}; run `cairn pull` or `cairn fetch` to get it",
                self.objects.root().display()
            ),
            other => other.to_string(),
        })
    }

    /// The model file's bytes from the cache, verified.
    fn bytes(&self, record: &ModelVersion) -> Result<Vec<u8>, String> {
        let digest = record.digest;
        if record.kind != VersionKind::Directory {
            return self.read(&digest);
        }
        let manifest =
            Manifest::decode(&self.read(&digest)?).map_err(|e| format!("bad directory manifest: {e}"))?;
        let entry = manifest
            .entries()
            .iter()
            .find(|e| e.path == record.model_file.as_bytes())
            .ok_or_else(|| format!("the model directory has no `{}`", record.model_file))?;
        self.read(&entry.digest)
    }

    /// The table for `targets` under `snapshot`.
    pub fn table(&self, targets: &[Target], snapshot: &RoutingSnapshot) -> Table {
        let mut table = Table::default();
        for target in targets {
            let key = |alias: &str| (target.model.clone(), alias.to_owned());
            let (number, rollout) = match &target.reference {
                Reference::Version(v) => (Some(*v), None),
                Reference::Latest => (snapshot.latest.get(&target.model).copied(), None),
                Reference::Alias(alias) => {
                    (snapshot.aliases.get(&key(alias)).copied(), snapshot.rollouts.get(&key(alias)))
                }
            };
            let error = match (number, &target.reference) {
                (Some(_), _) => None,
                (None, Reference::Alias(alias)) => Some(format!(
                    "alias `{alias}` of `{}` points at no version; set it with `cairn model alias {}@VERSION {alias}`",
                    target.model, target.model
                )),
                (None, _) => Some(format!("the registry has no versions of `{}`", target.model)),
            };
            let primary = number.map(|n| self.version(&target.model, n));
            let canary = rollout.and_then(|r| {
                let v = r.canary?;
                (Some(v) != number && r.weight > 0)
                    .then(|| (self.version(&target.model, v), r.weight.clamp(0, 100) as u32))
            });
            let shadows = rollout
                .map(|r| {
                    r.shadows
                        .iter()
                        .filter(|&&v| Some(v) != number)
                        .map(|&v| self.version(&target.model, v))
                        .collect()
                })
                .unwrap_or_default();
            table.routes.insert(
                target.model.clone(),
                Route { target: target.clone(), primary, canary, shadows, error },
            );
        }
        self.retain(&table);
        table
    }
}

/// The file that marks a model directory laid out completely.
const LAID_OUT: &str = ".cairn-laid-out";

/// A path from a manifest or the artifact tree as a relative path that stays inside the
/// directory it is joined to: only normal components.
fn safe_relative(path: &str) -> Result<std::path::PathBuf, String> {
    let relative = std::path::Path::new(path);
    let normal = relative.components().all(|c| matches!(c, std::path::Component::Normal(_)));
    if path.is_empty() || !normal {
        return Err(format!("the model's file list holds `{path}`, which is not a relative path inside it"));
    }
    Ok(relative.to_path_buf())
}

fn failed(name: &str, number: i64, reason: String) -> Version {
    Version {
        name: name.to_owned(),
        version: number,
        digest: None,
        run_id: None,
        runtime: String::new(),
        refused: false,
        inputs: Vec::new(),
        columns: Vec::new(),
        outputs: Vec::new(),
        model: Err(reason),
        batcher: None,
    }
}

/// The current table, swapped whole.
pub struct Routes {
    current: RwLock<Arc<Table>>,
}

impl Routes {
    pub fn new(table: Table) -> Self {
        Self { current: RwLock::new(Arc::new(table)) }
    }

    pub fn get(&self) -> Arc<Table> {
        self.current.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    pub fn set(&self, table: Table) {
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Arc::new(table);
    }
}

/// Follows the registry: every [`POLL`], reads the routing snapshot and swaps in a new table
/// when it changed. Runs until `stop` fires.
pub async fn watch(
    catalog: Arc<Catalog>,
    routes: Arc<Routes>,
    targets: Vec<Target>,
    mut last: RoutingSnapshot,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.changed() => return,
        }
        let reader = catalog.clone();
        let Ok(Ok(snapshot)) = tokio::task::spawn_blocking(move || reader.meta().routing_snapshot()).await
        else {
            // The registry is unreachable for now: keep serving what is loaded.
            continue;
        };
        if snapshot == last {
            continue;
        }
        let builder = catalog.clone();
        let (wanted, seen) = (targets.clone(), snapshot.clone());
        if let Ok(table) = tokio::task::spawn_blocking(move || builder.table(&wanted, &seen)).await {
            routes.set(table);
            last = snapshot;
        }
    }
}
