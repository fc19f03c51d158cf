//! `cairn.yaml`: the schema, parsing with line numbers, templating and stage generation.
//!
//! ```yaml
//! vars:                        # optional values for ${...}, besides params.yaml
//!   data: data/raw
//! stages:
//!   prepare:
//!     cmd: python prepare.py ${data} data/prepared      # a string, or a list run in order
//!     wdir: .                                           # paths below are relative to it
//!     deps: [prepare.py, "${data}"]                     # files and directories
//!     params: [prepare.split, seed]                     # keys of params.yaml ...
//!     #  - config/train.toml: [lr]                      # ... or of another YAML/JSON/TOML file
//!     outs:
//!       - data/prepared                                 # cached, ignored by Git
//!       - logs/: {cache: false, persist: true}
//!     metrics: [metrics.json]                           # outputs kept in Git (cache: false)
//!     plots: [plots/loss.csv]
//!     env: {OMP_NUM_THREADS: "1"}
//!     resources: {cpus: 2, gpus: 0, memory: 4GiB}
//!     retries: 1
//!     timeout: 10m
//!     checks:
//!       - cmd: python validate.py data/prepared
//!       - file: data/prepared/train.csv
//!         rows: {min: 100}
//!         columns: [age, plan]
//!         max_null_fraction: 0.01
//!   train:
//!     foreach: [0.1, 0.01]           # train@0.1, train@0.01; ${item} (and ${key} for a map)
//!     # matrix: {lr: [0.1, 0.01], depth: [3, 5]}   # train@lr-0.1-depth-3 ...; ${item.lr}
//!     # foreach: {glob: "data/images/*"}           # incremental datums: ${item}, ${out}
//!     cmd: python train.py --lr ${item}
//! ```
//!
//! `${name}` looks in the foreach/matrix item, then `vars`, then the root `params.yaml`;
//! dotted names walk into maps (`${train.lr}`). Every `${}` yields text; `$${` writes `${`.
//! Every path is relative to the stage's `wdir` (itself relative to the repository root) and
//! must stay inside the repository. `cairn pipeline schema` prints the JSON Schema.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use indexmap::IndexMap;
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::Value;
use serde_saphyr::Spanned;

use crate::PipelineError;
use crate::template::{self, Context};

/// The file name of the pipeline definition.
pub const PIPELINE_FILE: &str = "cairn.yaml";
/// The params file used when a stage names keys without a file.
pub const DEFAULT_PARAMS: &str = "params.yaml";

/// `cairn.yaml` as written.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(
    title = "cairn.yaml",
    description = "A Cairn pipeline: stages with their commands, inputs and outputs."
)]
pub struct RawFile {
    /// Values for `${name}` templating, besides the keys of `params.yaml`.
    #[serde(default)]
    pub vars: IndexMap<String, Value>,
    /// The stages, by name.
    #[serde(default)]
    #[schemars(with = "IndexMap<String, RawStage>")]
    pub stages: IndexMap<String, Spanned<RawStage>>,
}

/// One stage as written (before templating and generation).
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawStage {
    /// The command: a shell command line, or a list of them run in order.
    pub cmd: Cmd,
    /// The directory the command runs in and paths are relative to (default: the root).
    #[serde(default)]
    pub wdir: Option<String>,
    /// Files and directories the stage reads.
    #[serde(default)]
    pub deps: Vec<String>,
    /// Parameter keys the stage reads: `key` (from params.yaml) or `{file: [keys]}`.
    #[serde(default)]
    pub params: Vec<ParamsEntry>,
    /// Outputs: cached by default and ignored by Git.
    #[serde(default)]
    pub outs: Vec<OutEntry>,
    /// Metrics files (JSON, YAML or CSV): outputs kept in Git unless `cache: true`.
    #[serde(default)]
    pub metrics: Vec<OutEntry>,
    /// Plot data files: outputs kept in Git unless `cache: true`.
    #[serde(default)]
    pub plots: Vec<OutEntry>,
    /// Environment variables set for the command; part of the fingerprint.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// What the stage needs while it runs; the scheduler never oversubscribes.
    #[serde(default)]
    pub resources: Resources,
    /// How many times to run the command again after a failure.
    #[serde(default)]
    pub retries: u32,
    /// Kill the command after this long: seconds, or `90s`, `10m`, `2h`.
    #[serde(default)]
    pub timeout: Option<Amount>,
    /// Checks on the outputs; a failed check fails the stage and blocks its dependents.
    #[serde(default)]
    pub checks: Vec<CheckSpec>,
    /// Generate one stage per item (`name@item`), or with `{glob: ...}` run one datum per
    /// matching path.
    #[serde(default)]
    pub foreach: Option<Foreach>,
    /// Generate one stage per combination of values (`name@k1-v1-k2-v2`).
    #[serde(default)]
    pub matrix: Option<IndexMap<String, Vec<Value>>>,
    /// Run once per partition key: dimensions of static keys, time windows or dynamic keys
    /// (`${partition}`, `${partition.NAME}`, and `${out}` for the partition's files).
    #[serde(default)]
    pub partitions: Option<IndexMap<String, crate::partitions::RawDimension>>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Cmd {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum ParamsEntry {
    /// A key of params.yaml (dotted for nested keys).
    Key(String),
    /// Keys of another file: `{config/train.toml: [lr, depth]}`.
    File(IndexMap<String, Vec<String>>),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum OutEntry {
    Path(String),
    WithOptions(IndexMap<String, OutOptions>),
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct OutOptions {
    /// Store in the cache and ignore in Git (default true for outs, false for metrics/plots).
    #[serde(default)]
    pub cache: Option<bool>,
    /// Keep the output between runs instead of deleting it before the command runs.
    #[serde(default)]
    pub persist: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// CPU cores (default 1).
    #[serde(default)]
    pub cpus: Option<u32>,
    /// GPUs (default 0); the stage gets `CUDA_VISIBLE_DEVICES` naming the ones it holds.
    #[serde(default)]
    pub gpus: Option<u32>,
    /// Memory: bytes, or `512MiB`, `4GiB`, `2GB`.
    #[serde(default)]
    pub memory: Option<Amount>,
}

/// A number, or a number with a unit.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Amount {
    Number(f64),
    Text(String),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Foreach {
    /// Incremental datums: one run per path matching the glob (relative to wdir).
    Glob {
        glob: String,
    },
    List(Vec<Value>),
    Map(IndexMap<String, Value>),
}

/// A check on a stage's outputs.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum CheckSpec {
    /// A command that must exit 0.
    Command {
        cmd: String,
        #[serde(default)]
        name: Option<String>,
    },
    /// Built-in checks of a CSV or Parquet file.
    Table(TableCheck),
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TableCheck {
    /// The CSV or Parquet file (by extension: `.parquet`/`.pq` is Parquet).
    pub file: String,
    #[serde(default)]
    pub name: Option<String>,
    /// Bounds on the number of data rows.
    #[serde(default)]
    pub rows: Option<RowBounds>,
    /// Columns that must be present.
    #[serde(default)]
    pub columns: Vec<String>,
    /// The largest share of empty values allowed in any column (0 to 1).
    #[serde(default)]
    pub max_null_fraction: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RowBounds {
    #[serde(default)]
    pub min: Option<u64>,
    #[serde(default)]
    pub max: Option<u64>,
}

/// Where a param value comes from.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ParamKey {
    /// Repository-relative params file.
    pub file: String,
    /// Dotted key.
    pub key: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutKind {
    Out,
    Metric,
    Plot,
}

#[derive(Debug, Clone)]
pub struct Out {
    /// Repository-relative path.
    pub path: String,
    pub kind: OutKind,
    pub cache: bool,
    pub persist: bool,
}

#[derive(Debug, Clone)]
pub enum Check {
    Command { name: String, cmd: String },
    Table { name: String, file: String, spec: TableCheck },
}

/// A stage ready to plan: templates resolved, paths repository-relative.
#[derive(Debug, Clone)]
pub struct Stage {
    pub name: String,
    /// Line of the stage's definition in cairn.yaml.
    pub line: u64,
    pub cmd: Vec<String>,
    /// Repository-relative working directory ("" for the root).
    pub wdir: String,
    pub deps: Vec<String>,
    pub params: Vec<ParamKey>,
    pub outs: Vec<Out>,
    pub env: BTreeMap<String, String>,
    pub cpus: u32,
    pub gpus: u32,
    pub memory: u64,
    pub retries: u32,
    pub timeout: Option<Duration>,
    pub checks: Vec<Check>,
    /// For a datum stage: the glob (repository-relative) whose matches are the datums; `cmd`
    /// still holds `${item}` and `${out}`.
    pub datums: Option<String>,
    /// For a partitioned stage: its dimensions; `cmd`, `deps` and `env` may still hold
    /// `${partition...}` and `${out}`.
    pub partitions: Option<crate::partitions::Dimensions>,
}

impl Stage {
    /// Datum and partitioned stages run in parts, each writing into the one output directory.
    pub fn has_parts(&self) -> bool {
        self.datums.is_some() || self.partitions.is_some()
    }
}

/// The parsed, expanded pipeline.
#[derive(Debug, Clone, Default)]
pub struct Pipeline {
    pub stages: Vec<Stage>,
}

impl Pipeline {
    pub fn stage(&self, name: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// Parses `cairn.yaml` text. `params` holds the root `params.yaml` (for templating).
pub fn parse(text: &str, file: &Path, root_params: &Value) -> Result<Pipeline, PipelineError> {
    let raw: RawFile = serde_saphyr::from_str(text).map_err(|e| {
        let message = e.to_string();
        PipelineError::Syntax {
            file: file.to_path_buf(),
            message: with_suggestion(message.strip_prefix("error: ").unwrap_or(&message)),
        }
    })?;
    let mut stages = Vec::new();
    for (name, spanned) in &raw.stages {
        let line = spanned.referenced.line();
        let invalid = |message: String| PipelineError::Invalid {
            file: file.to_path_buf(),
            line,
            stage: name.clone(),
            message,
        };
        check_stage_name(name).map_err(invalid)?;
        let stage = &spanned.value;
        if stage.foreach.is_some() && stage.matrix.is_some() {
            return Err(invalid("`foreach` and `matrix` cannot be used together".into()));
        }
        let base = Context { vars: &raw.vars, params: root_params, item: Vec::new(), keep: &[] };
        if let Some(raw_dims) = &stage.partitions {
            if stage.foreach.is_some() || stage.matrix.is_some() {
                return Err(invalid("`partitions` cannot be combined with `foreach` or `matrix`".into()));
            }
            let keep = ["partition", "out"];
            let context = Context { keep: &keep, ..base };
            let mut built = build(name, line, stage, &context).map_err(invalid)?;
            built.partitions = Some(crate::partitions::parse_dimensions(raw_dims).map_err(invalid)?);
            validate_parts_stage(&built, "partitions").map_err(invalid)?;
            stages.push(built);
            continue;
        }
        match (&stage.foreach, &stage.matrix) {
            (None, None) => stages.push(build(name, line, stage, &base).map_err(invalid)?),
            (Some(Foreach::Glob { glob }), _) => {
                let keep = ["item", "out"];
                let context = Context { keep: &keep, ..base };
                let mut built = build(name, line, stage, &context).map_err(invalid)?;
                let glob = template::render(glob, &context).map_err(invalid)?;
                built.datums = Some(repo_path(&built.wdir, &glob).map_err(invalid)?);
                validate_parts_stage(&built, "foreach: {glob: ...}").map_err(invalid)?;
                stages.push(built);
            }
            (Some(Foreach::List(items)), _) => {
                for (index, item) in items.iter().enumerate() {
                    let suffix = match item {
                        Value::Object(_) | Value::Array(_) => index.to_string(),
                        other => template::scalar_text(other),
                    };
                    let context = Context { item: vec![("item".into(), item.clone())], ..base.clone() };
                    stages.push(build(&format!("{name}@{suffix}"), line, stage, &context).map_err(invalid)?);
                }
            }
            (Some(Foreach::Map(items)), _) => {
                for (key, item) in items {
                    let context = Context {
                        item: vec![("item".into(), item.clone()), ("key".into(), Value::String(key.clone()))],
                        ..base.clone()
                    };
                    stages.push(build(&format!("{name}@{key}"), line, stage, &context).map_err(invalid)?);
                }
            }
            (None, Some(matrix)) => {
                for combination in combinations(matrix) {
                    let suffix: Vec<String> = combination
                        .iter()
                        .map(|(k, v)| format!("{k}-{}", template::scalar_text(v)))
                        .collect();
                    let item = Value::Object(combination.into_iter().collect());
                    let context = Context { item: vec![("item".into(), item)], ..base.clone() };
                    let stage_name = format!("{name}@{}", suffix.join("-"));
                    stages.push(build(&stage_name, line, stage, &context).map_err(invalid)?);
                }
            }
        }
    }
    let mut seen = std::collections::HashMap::new();
    for stage in &stages {
        if let Some(first) = seen.insert(stage.name.clone(), stage.line) {
            return Err(PipelineError::Invalid {
                file: file.to_path_buf(),
                line: stage.line,
                stage: stage.name.clone(),
                message: format!(
                    "two stages are named `{}` (the other is generated at line {first}); give foreach items distinct names",
                    stage.name
                ),
            });
        }
    }
    Ok(Pipeline { stages })
}

fn check_stage_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !name.starts_with(['.', '-']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{name}` is not a valid stage name: use letters, digits, `_`, `-` and `.` (`@` is added by foreach and matrix)"
        ))
    }
}

fn validate_parts_stage(stage: &Stage, what: &str) -> Result<(), String> {
    let outs: Vec<&Out> = stage.outs.iter().filter(|o| o.kind == OutKind::Out).collect();
    if outs.len() != 1 || !stage.outs.iter().all(|o| o.kind == OutKind::Out) {
        return Err(format!(
            "a `{what}` stage must have exactly one output, the directory its parts write into, and no metrics or plots"
        ));
    }
    if !stage.cmd.iter().any(|c| c.contains("${out}")) {
        return Err(format!(
            "a `{what}` stage's cmd must write into `${{out}}` (each part gets its own directory, merged into the output afterwards)"
        ));
    }
    Ok(())
}

/// Every combination of the matrix values, in the order written (last key varies fastest).
fn combinations(matrix: &IndexMap<String, Vec<Value>>) -> Vec<Vec<(String, Value)>> {
    let mut out: Vec<Vec<(String, Value)>> = vec![Vec::new()];
    for (key, values) in matrix {
        out = out
            .into_iter()
            .flat_map(|prefix| {
                values.iter().map(move |v| {
                    let mut next = prefix.clone();
                    next.push((key.clone(), v.clone()));
                    next
                })
            })
            .collect();
    }
    out
}

fn build(name: &str, line: u64, raw: &RawStage, context: &Context<'_>) -> Result<Stage, String> {
    let render = |text: &str| template::render(text, context);
    let wdir_text = match &raw.wdir {
        Some(w) => render(w)?,
        None => String::new(),
    };
    let wdir = repo_path("", &wdir_text)?;
    let cmd = match &raw.cmd {
        Cmd::One(c) => vec![render(c)?],
        Cmd::Many(list) => list.iter().map(|c| render(c)).collect::<Result<_, _>>()?,
    };
    if cmd.is_empty() || cmd.iter().all(|c| c.trim().is_empty()) {
        return Err("`cmd` is empty".into());
    }
    let deps = raw.deps.iter().map(|d| repo_path(&wdir, &render(d)?)).collect::<Result<Vec<_>, _>>()?;
    let params = params(raw, &wdir, &render)?;
    let outs = outputs(raw, &wdir, &render)?;
    let env = raw.env.iter().map(|(k, v)| Ok((k.clone(), render(v)?))).collect::<Result<_, String>>()?;
    let memory = match &raw.resources.memory {
        None => 0,
        Some(amount) => parse_bytes(amount)?,
    };
    let timeout = raw.timeout.as_ref().map(parse_duration).transpose()?;
    let checks = checks(raw, &wdir, &render)?;
    Ok(Stage {
        name: name.to_owned(),
        line,
        cmd,
        wdir,
        deps,
        params,
        outs,
        env,
        cpus: raw.resources.cpus.unwrap_or(1),
        gpus: raw.resources.gpus.unwrap_or(0),
        memory,
        retries: raw.retries,
        timeout,
        checks,
        datums: None,
        partitions: None,
    })
}

/// Renders a stage's text with the pipeline's variables.
type Render<'a> = dyn Fn(&str) -> Result<String, String> + 'a;

/// A stage's params, each a key in a file (`params.yaml` unless named), sorted.
fn params(raw: &RawStage, wdir: &str, render: &Render) -> Result<Vec<ParamKey>, String> {
    let mut params = Vec::new();
    for entry in &raw.params {
        match entry {
            ParamsEntry::Key(key) => {
                params.push(ParamKey { file: repo_path(wdir, DEFAULT_PARAMS)?, key: render(key)? })
            }
            ParamsEntry::File(files) => {
                for (file, keys) in files {
                    let file = repo_path(wdir, &render(file)?)?;
                    for key in keys {
                        params.push(ParamKey { file: file.clone(), key: render(key)? });
                    }
                }
            }
        }
    }
    params.sort();
    params.dedup();
    Ok(params)
}

/// A stage's `outs`, `metrics` and `plots`, with their options.
fn outputs(raw: &RawStage, wdir: &str, render: &Render) -> Result<Vec<Out>, String> {
    let mut outs = Vec::new();
    for (entries, kind) in
        [(&raw.outs, OutKind::Out), (&raw.metrics, OutKind::Metric), (&raw.plots, OutKind::Plot)]
    {
        for entry in entries {
            let (path, options) = match entry {
                OutEntry::Path(p) => (p.clone(), OutOptions::default()),
                OutEntry::WithOptions(map) => {
                    let mut iter = map.iter();
                    match (iter.next(), iter.next()) {
                        (Some((p, o)), None) => (p.clone(), o.clone()),
                        _ => {
                            return Err(
                                "each output with options is a one-key map: `- path: {cache: false}`".into(),
                            );
                        }
                    }
                }
            };
            let path = repo_path(wdir, &render(&path)?)?;
            check_output_path(&path)?;
            outs.push(Out {
                path,
                kind,
                cache: options.cache.unwrap_or(kind == OutKind::Out),
                persist: options.persist.unwrap_or(false),
            });
        }
    }
    Ok(outs)
}

/// A stage's checks: commands, and table checks on an output.
fn checks(raw: &RawStage, wdir: &str, render: &Render) -> Result<Vec<Check>, String> {
    let mut checks = Vec::new();
    for (index, check) in raw.checks.iter().enumerate() {
        checks.push(match check {
            CheckSpec::Command { cmd, name } => Check::Command {
                name: name.clone().unwrap_or_else(|| format!("check {}", index + 1)),
                cmd: render(cmd)?,
            },
            CheckSpec::Table(spec) => {
                let file = repo_path(wdir, &render(&spec.file)?)?;
                if let Some(f) = spec.max_null_fraction
                    && !(0.0..=1.0).contains(&f)
                {
                    return Err(format!("`max_null_fraction` must be between 0 and 1, not {f}"));
                }
                Check::Table {
                    name: spec.name.clone().unwrap_or_else(|| format!("check {}", index + 1)),
                    file,
                    spec: spec.clone(),
                }
            }
        });
    }
    Ok(checks)
}

/// Refuses outputs that are Cairn's or Git's own files: a stage's outputs are deleted before
/// it runs, so `outs: [.git]` would delete the repository. Reserved: the repository root,
/// `.git` and `.cairn` and anything inside them, `cairn.yaml`, `cairn.lock` and pointer
/// files (`*.cairn`).
pub fn check_output_path(path: &str) -> Result<(), String> {
    let first = path.split('/').next().unwrap_or_default();
    let name = path.rsplit('/').next().unwrap_or_default();
    let reason = if path.is_empty() {
        Some("is the repository root".to_owned())
    } else if first == ".git" || first == cairn_repo::DOT_DIR {
        Some(format!(
            "is inside `{first}`, which belongs to {}",
            if first == ".git" { "Git" } else { "Cairn" }
        ))
    } else if path == PIPELINE_FILE || path == crate::lock::LOCK_FILE {
        Some("is the pipeline's own file".to_owned())
    } else if name.ends_with(".cairn") {
        Some("is a pointer file's name (`*.cairn`); pointer files are Cairn's".to_owned())
    } else {
        None
    };
    match reason {
        Some(reason) => Err(format!(
            "output `{path}` {reason}: outputs are deleted before a stage runs, so it cannot be one; write the output somewhere else"
        )),
        None => Ok(()),
    }
}

/// Joins `path` to the repository-relative `wdir` and normalizes it lexically; a path that
/// leaves the repository is an error.
pub fn repo_path(wdir: &str, path: &str) -> Result<String, String> {
    if path.starts_with('/') {
        return Err(format!("`{path}` is absolute; paths in cairn.yaml are relative to the stage's wdir"));
    }
    let mut parts: Vec<&str> = wdir.split('/').filter(|p| !p.is_empty()).collect();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(format!(
                        "`{path}` is outside the repository; deps and outs must stay inside it"
                    ));
                }
            }
            other => parts.push(other),
        }
    }
    Ok(parts.join("/"))
}

fn parse_bytes(amount: &Amount) -> Result<u64, String> {
    match amount {
        Amount::Number(n) if *n >= 0.0 => Ok(*n as u64),
        Amount::Number(n) => Err(format!("memory cannot be negative ({n})")),
        Amount::Text(t) => parse_size(t),
    }
}

/// An amount of bytes such as `4GiB`, `500MB` or `1048576` (see `cairn_units`).
pub use cairn_units::parse_size;

fn parse_duration(amount: &Amount) -> Result<Duration, String> {
    let parsed = match amount {
        Amount::Number(n) => cairn_units::Duration::from_secs_f64(*n),
        Amount::Text(t) => t.parse::<cairn_units::Duration>(),
    };
    parsed.map(cairn_units::Duration::get).map_err(|e| format!("timeout: {e}"))
}

/// Adds "did you mean" to serde's "unknown field `x`, expected one of `a`, `b`" messages.
fn with_suggestion(message: &str) -> String {
    let Some(start) = message.find("unknown field `") else { return message.to_owned() };
    let rest = &message[start + "unknown field `".len()..];
    let Some(end) = rest.find('`') else { return message.to_owned() };
    let unknown = &rest[..end];
    let Some(list) = rest[end..].split("expected one of ").nth(1) else { return message.to_owned() };
    let list = list.lines().next().unwrap_or_default();
    let expected: Vec<&str> = list.split(", ").map(|w| w.trim().trim_matches('`')).collect();
    match crate::closest(unknown, expected.iter().copied()) {
        Some(best) => format!("{message}\nhint: did you mean `{best}`?"),
        None => message.to_owned(),
    }
}

/// The JSON Schema of `cairn.yaml`, for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(RawFile);
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_normalized_and_kept_inside() {
        assert_eq!(repo_path("", "./data/../data/raw/").unwrap(), "data/raw");
        assert_eq!(repo_path("src", "../data").unwrap(), "data");
        assert!(repo_path("", "../outside").is_err());
        assert!(repo_path("", "/etc/passwd").is_err());
    }

    #[test]
    fn amounts() {
        assert_eq!(parse_bytes(&Amount::Text("4GiB".into())).unwrap(), 4 << 30);
        assert_eq!(parse_bytes(&Amount::Text("512 MB".into())).unwrap(), 512_000_000);
        assert!(parse_bytes(&Amount::Text("4 lots".into())).is_err());
        assert_eq!(parse_duration(&Amount::Text("1h30m".into())).unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration(&Amount::Number(2.5)).unwrap(), Duration::from_millis(2500));
        assert!(parse_duration(&Amount::Text("5 fortnights".into())).is_err());
        // Found by fuzzing: more hours than a Duration holds is an error, not a panic.
        let huge = parse_duration(&Amount::Text("2222222222222222222222222h".into())).unwrap_err();
        assert!(huge.contains("longer than any duration can be"), "{huge}");
        assert!(parse_duration(&Amount::Number(f64::MAX)).is_err());
    }
}
