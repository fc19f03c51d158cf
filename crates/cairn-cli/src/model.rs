//! `cairn model`: the CLI's side of [`cairn_app::registry`] (what a version, an alias and a
//! policy are is documented there).

use std::path::Path;

use cairn_app::Workspace;
use cairn_app::registry::{self, PolicyChange};

use crate::failure::Failure;
use crate::output::{json, out};

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

/// `cairn model register NAME PATH`.
pub fn register(
    ws: &Workspace,
    cwd: &Path,
    request: &Register,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    let registered = registry::register(
        ws,
        &registry::Register {
            name: request.name.to_owned(),
            path: cwd.join(request.path),
            run: request.run.map(str::to_owned),
            training_data: request.training_data.map(|d| cwd.join(d)),
            feature_names: request.feature_names.to_vec(),
            description: request.description.to_owned(),
        },
        reporter,
    )?;
    if request.json {
        return json(&registered);
    }
    let (name, number, digest) = (&registered.name, registered.version, &registered.digest);
    if registered.created {
        out(format!("registered {name}@{number} ({digest})"))?;
    } else {
        out(format!("{name}@{number} already holds this content ({digest}); no new version"))?;
    }
    let describe = |specs: &[cairn_model::TensorSpec]| {
        specs.iter().map(|s| format!("{}: {}", s.name, s.dtype)).collect::<Vec<_>>().join(", ")
    };
    out(format!("  inputs:  {}", describe(&registered.signature.inputs)))?;
    out(format!("  outputs: {}", describe(&registered.signature.outputs)))?;
    match &registered.run_id {
        Some(id) => out(format!("  lineage: run {}", cairn_app::runs::short_id(id))),
        None => out("  lineage: no recorded run produced this content (give --run ID to name one)"),
    }
}

/// `cairn model list`.
pub fn list(ws: &Workspace, as_json: bool) -> Result<(), Failure> {
    let models = registry::list(ws)?;
    if as_json {
        return json(&models);
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
pub fn versions(ws: &Workspace, name: &str, as_json: bool) -> Result<(), Failure> {
    let versions = registry::versions(ws, name)?;
    if as_json {
        return json(&versions);
    }
    for v in versions {
        out(format!(
            "{}@{:<4} {}  {}  run {}  {}",
            v.name,
            v.version,
            &v.digest.to_string()[..19],
            crate::progress::human_bytes(v.size as u64),
            v.run_id.as_deref().map_or("-", cairn_app::runs::short_id),
            v.aliases.join(",")
        ))?;
    }
    Ok(())
}

/// `cairn model show NAME[@VERSION|@ALIAS]`.
pub fn show(ws: &Workspace, reference: &str, as_json: bool) -> Result<(), Failure> {
    let v = registry::show(ws, reference)?;
    if as_json {
        return json(&v);
    }
    out(format!("{}@{}  {}", v.name, v.version, v.digest))?;
    out(format!("  registered by {} from {} ({} runtime)", v.user, v.source, v.runtime))?;
    if !v.aliases.is_empty() {
        out(format!("  aliases: {}", v.aliases.join(", ")))?;
    }
    for (title, key) in [("inputs", "inputs"), ("outputs", "outputs")] {
        let specs = v.signature[key].as_array().cloned().unwrap_or_default();
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
    let lineage = &v.lineage;
    if let Some(run) = lineage["run_id"].as_str() {
        out(format!("  run {run} at commit {}", lineage["commit"].as_str().unwrap_or("-")))?;
        if let Some(metrics) = lineage["metrics"].as_object() {
            let text: Vec<String> = metrics.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out(format!("  metrics: {}", text.join(" ")))?;
        }
    }
    for a in &v.approvals {
        out(format!("  approved by {}: {}", a.user, a.comment))?;
    }
    Ok(())
}

/// `cairn model alias NAME@VERSION ALIAS [--reason ...]` (also how to roll back).
pub fn alias(ws: &Workspace, reference: &str, alias: &str, reason: &str) -> Result<(), Failure> {
    let moved = registry::alias(ws, reference, alias, reason)?;
    let (name, alias, version) = (&moved.name, &moved.alias, moved.version);
    match moved.previous {
        Some(p) if p == version => out(format!("{name}@{alias} already is version {version}")),
        Some(p) => out(format!("{name}@{alias}: {p} → {version}")),
        None => out(format!("{name}@{alias} → {version}")),
    }
}

/// `cairn model unalias NAME ALIAS`.
pub fn unalias(ws: &Workspace, name: &str, alias: &str, reason: &str) -> Result<(), Failure> {
    let previous = registry::unalias(ws, name, alias, reason)?;
    out(format!("removed {name}@{alias} (was version {previous})"))
}

/// `cairn model history NAME [ALIAS]`.
pub fn history(ws: &Workspace, name: &str, alias: Option<&str>, as_json: bool) -> Result<(), Failure> {
    let moves = registry::history(ws, name, alias)?;
    if as_json {
        return json(&moves);
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
pub fn approve(ws: &Workspace, reference: &str, comment: &str) -> Result<(), Failure> {
    let (name, version) = registry::approve(ws, reference, comment)?;
    out(format!("approved {name}@{version}"))
}

/// `cairn model policy NAME ALIAS [--approvals N] [--require 'METRIC OP N']... [--clear]`.
pub fn policy(ws: &Workspace, name: &str, alias: &str, change: PolicyChange) -> Result<(), Failure> {
    let clear = change.clear;
    match registry::policy(ws, name, alias, &change)? {
        Some(p) => out(format!("{name}@{alias}: {}", p.describe())),
        None if clear => out(format!("{name}@{alias} has no policy")),
        None => out(format!("{name}@{alias} has no policy: any version may take it")),
    }
}

/// `cairn model ...`.
pub fn command(
    context: &crate::context::Context,
    command: crate::args::ModelCommand,
    reporter: &dyn cairn_repo::Reporter,
) -> Result<(), Failure> {
    use crate::args::ModelCommand;
    let ws = context.workspace()?;
    match command {
        ModelCommand::Register { name, path, run, training_data, feature_names, description, output } => {
            register(
                &ws,
                &context.cwd,
                &Register {
                    name: &name,
                    path: &path,
                    run: run.as_deref(),
                    training_data: training_data.as_deref(),
                    feature_names: &feature_names,
                    description: &description,
                    json: output.json,
                },
                reporter,
            )
        }
        ModelCommand::List { output } => list(&ws, output.json),
        ModelCommand::Versions { name, output } => versions(&ws, &name, output.json),
        ModelCommand::Show { reference, output } => show(&ws, &reference, output.json),
        ModelCommand::Alias { reference, alias, reason } => self::alias(&ws, &reference, &alias, &reason),
        ModelCommand::Unalias { name, alias, reason } => unalias(&ws, &name, &alias, &reason),
        ModelCommand::History { name, alias, output } => history(&ws, &name, alias.as_deref(), output.json),
        ModelCommand::Approve { reference, comment } => approve(&ws, &reference, &comment),
        ModelCommand::Policy { name, alias, approvals, require, allow_delete, clear } => policy(
            &ws,
            &name,
            &alias,
            cairn_app::registry::PolicyChange { approvals, require, allow_delete, clear },
        ),
        ModelCommand::Rollout { target, canary, weight, shadow, clear, output } => crate::serve::rollout(
            &ws,
            &crate::serve::RolloutRequest {
                target: &target,
                canary,
                weight,
                shadows: &shadow,
                clear,
                json: output.json,
            },
        ),
    }
}
