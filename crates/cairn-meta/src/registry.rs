//! The model registry: named models with immutable, numbered versions; aliases (`production`)
//! that point at a version, with the history of every move; approvals of versions; and the
//! policy an alias move must satisfy (approvals needed, metric conditions, checked by the
//! caller, which knows the metrics).

use crate::backend::{Tx, Value};
use crate::store::Store;
use crate::{MetaError, Result, now_ms};

/// What a version's digest names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum VersionKind {
    /// One model file: the digest is its content.
    #[default]
    File,
    /// A directory: the digest is its manifest (`cairn_hash::Manifest`).
    Directory,
    /// A tracking-server artifact tree (a logged model or a run's `model/`): the digest is
    /// the tree's, and `source` says where its files are.
    Artifacts,
    /// A location this store does not hold (registered through the tracking API from
    /// elsewhere): the digest is the location's, and nothing can be served from it.
    External,
}

impl VersionKind {
    pub fn as_str(self) -> &'static str {
        match self {
            VersionKind::File => "file",
            VersionKind::Directory => "directory",
            VersionKind::Artifacts => "artifacts",
            VersionKind::External => "external",
        }
    }

    pub fn parse(text: &str) -> Option<VersionKind> {
        Some(match text {
            "file" => VersionKind::File,
            "directory" => VersionKind::Directory,
            "artifacts" => VersionKind::Artifacts,
            "external" => VersionKind::External,
            _ => return None,
        })
    }
}

impl std::fmt::Display for VersionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for VersionKind {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A version to register.
#[derive(Debug, Clone)]
pub struct NewVersion {
    /// The model's content digest (a file, or a directory's manifest).
    pub digest: cairn_hash::Digest,
    pub size: i64,
    pub kind: VersionKind,
    /// The model file inside a directory (empty for a file).
    pub model_file: String,
    pub runtime: String,
    /// The path it was registered from.
    pub source: String,
    pub run_id: Option<String>,
    /// JSON: the signature.
    pub signature: String,
    /// JSON: run, commit, params, metrics, data digests.
    pub lineage: String,
    /// Digest of the training-data profile, if one was made.
    pub profile: Option<cairn_hash::Digest>,
    pub description: String,
    pub user: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub digest: cairn_hash::Digest,
    pub size: i64,
    pub kind: VersionKind,
    pub model_file: String,
    pub runtime: String,
    pub source: String,
    pub run_id: Option<String>,
    pub signature: String,
    pub lineage: String,
    pub profile: Option<cairn_hash::Digest>,
    pub description: String,
    pub user: String,
    pub creation_time: i64,
    /// Aliases pointing at this version.
    pub aliases: Vec<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RegisteredModel {
    pub name: String,
    pub description: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    pub latest_version: Option<i64>,
    /// `(alias, version)`.
    pub aliases: Vec<(String, i64)>,
}

/// One move of an alias (`version` `None`: removed).
#[derive(Debug, Clone, PartialEq)]
pub struct AliasMove {
    pub alias: String,
    pub version: Option<i64>,
    pub previous: Option<i64>,
    pub user: String,
    pub time: i64,
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Approval {
    pub version: i64,
    pub user: String,
    pub comment: String,
    pub time: i64,
}

/// What moving an alias requires.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Policy {
    pub approvals: i64,
    /// Conditions on the version's metrics, such as `accuracy >= 0.9`.
    pub conditions: Vec<String>,
    /// Whether the model may be deleted while the alias points at a version.
    pub allow_delete: bool,
}

impl Policy {
    /// The policy in words, for messages: `1 approval(s); requires accuracy >= 0.9`.
    pub fn describe(&self) -> String {
        let mut text = format!("{} approval(s)", self.approvals);
        if !self.conditions.is_empty() {
            text.push_str("; requires ");
            text.push_str(&self.conditions.join(", "));
        }
        if self.allow_delete {
            text.push_str("; allows deleting the model");
        }
        text
    }
}

const VERSION_COLUMNS: &str = "name, version, digest, size, kind, model_file, runtime, source, run_id, signature, \
     lineage, profile, description, user_id, creation_time";

fn version_row(row: &[Value]) -> Result<ModelVersion> {
    Ok(ModelVersion {
        name: row[0].text(),
        version: row[1].int(),
        digest: row[2].digest()?,
        size: row[3].int(),
        // Only `VersionKind` names are ever written.
        kind: VersionKind::parse(&row[4].text()).unwrap_or_default(),
        model_file: row[5].text(),
        runtime: row[6].text(),
        source: row[7].text(),
        run_id: row[8].opt_text(),
        signature: row[9].text(),
        lineage: row[10].text(),
        profile: row[11].opt_digest()?,
        description: row[12].text(),
        user: row[13].text(),
        creation_time: row[14].int(),
        aliases: Vec::new(),
    })
}

fn model_exists(tx: &mut dyn Tx, name: &str) -> Result<bool> {
    Ok(!tx.query("SELECT 1 FROM registered_models WHERE name = $1", &[name.into()])?.is_empty())
}

fn with_aliases(tx: &mut dyn Tx, mut v: ModelVersion) -> Result<ModelVersion> {
    v.aliases = tx
        .query(
            "SELECT alias FROM model_aliases WHERE name = $1 AND version = $2 ORDER BY alias",
            &[v.name.as_str().into(), v.version.into()],
        )?
        .iter()
        .map(|r| r[0].text())
        .collect();
    Ok(v)
}

impl Store {
    /// Creates the model if it does not exist; returns whether it was created.
    pub fn create_model(&self, name: &str, description: &str) -> Result<bool> {
        self.tx(|tx| {
            if model_exists(tx, name)? {
                return Ok(false);
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO registered_models (name, description, creation_time, last_update_time) VALUES ($1, $2, $3, $4)",
                &[name.into(), description.into(), now.into(), now.into()],
            )?;
            Ok(true)
        })
    }

    /// Registers a new version (the next number; the model is created if needed). If the same
    /// content is already a version of this model, that version is returned instead, with
    /// `false`: versions are immutable and content-addressed.
    pub fn register_version(&self, name: &str, version: &NewVersion) -> Result<(i64, bool)> {
        self.tx(|tx| {
            let now = now_ms();
            if !model_exists(tx, name)? {
                tx.execute(
                    "INSERT INTO registered_models (name, description, creation_time, last_update_time) VALUES ($1, '', $2, $3)",
                    &[name.into(), now.into(), now.into()],
                )?;
            }
            let same = tx.query(
                "SELECT version FROM model_versions WHERE name = $1 AND digest = $2 ORDER BY version LIMIT 1",
                &[name.into(), version.digest.to_string().into()],
            )?;
            if let Some(row) = same.first() {
                return Ok((row[0].int(), false));
            }
            let next =
                tx.query("SELECT COALESCE(MAX(version), 0) + 1 FROM model_versions WHERE name = $1", &[name.into()])?[0][0]
                    .int();
            tx.execute(
                &format!(
                    "INSERT INTO model_versions ({VERSION_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
                ),
                &[
                    name.into(),
                    next.into(),
                    version.digest.to_string().into(),
                    version.size.into(),
                    version.kind.as_str().into(),
                    version.model_file.as_str().into(),
                    version.runtime.as_str().into(),
                    version.source.as_str().into(),
                    version.run_id.clone().into(),
                    version.signature.as_str().into(),
                    version.lineage.as_str().into(),
                    version.profile.map(|d| d.to_string()).into(),
                    version.description.as_str().into(),
                    version.user.as_str().into(),
                    now.into(),
                ],
            )?;
            tx.execute("UPDATE registered_models SET last_update_time = $1 WHERE name = $2", &[now.into(), name.into()])?;
            Ok((next, true))
        })
    }

    /// Every registered model, by name.
    pub fn models(&self) -> Result<Vec<RegisteredModel>> {
        self.registered(None)
    }

    pub fn model(&self, name: &str) -> Result<Option<RegisteredModel>> {
        Ok(self.registered(Some(name))?.pop())
    }

    /// Models (all, or the one named) with their latest version and aliases.
    fn registered(&self, name: Option<&str>) -> Result<Vec<RegisteredModel>> {
        self.tx(|tx| {
            let (clause, params): (&str, Vec<Value>) = match name {
                Some(name) => ("WHERE m.name = $1", vec![name.into()]),
                None => ("", Vec::new()),
            };
            let rows = tx.query(
                &format!(
                    "SELECT m.name, m.description, m.creation_time, m.last_update_time, \
                     (SELECT MAX(version) FROM model_versions v WHERE v.name = m.name) FROM registered_models m \
                     {clause} ORDER BY m.name"
                ),
                &params,
            )?;
            let mut out = Vec::new();
            for r in rows {
                let name = r[0].text();
                let aliases = tx
                    .query("SELECT alias, version FROM model_aliases WHERE name = $1 ORDER BY alias", &[name.as_str().into()])?
                    .iter()
                    .map(|a| (a[0].text(), a[1].int()))
                    .collect();
                out.push(RegisteredModel {
                    name,
                    description: r[1].text(),
                    creation_time: r[2].int(),
                    last_update_time: r[3].int(),
                    latest_version: r[4].opt_int(),
                    aliases,
                });
            }
            Ok(out)
        })
    }

    /// Every version of a model, oldest first.
    pub fn model_versions(&self, name: &str) -> Result<Vec<ModelVersion>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE name = $1 ORDER BY version"),
                &[name.into()],
            )?;
            rows.iter().map(|r| with_aliases(tx, version_row(r)?)).collect()
        })
    }

    pub fn model_version(&self, name: &str, version: i64) -> Result<Option<ModelVersion>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {VERSION_COLUMNS} FROM model_versions WHERE name = $1 AND version = $2"),
                &[name.into(), version.into()],
            )?;
            rows.first().map(|r| with_aliases(tx, version_row(r)?)).transpose()
        })
    }

    /// The version an alias points at.
    pub fn resolve_alias(&self, name: &str, alias: &str) -> Result<Option<i64>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT version FROM model_aliases WHERE name = $1 AND alias = $2",
                &[name.into(), alias.into()],
            )?;
            Ok(rows.first().map(|r| r[0].int()))
        })
    }

    /// Points `alias` at `version` (`None` removes it) and records the move; returns the
    /// version it pointed at before. Policies are the caller's to check first.
    pub fn move_alias(
        &self,
        name: &str,
        alias: &str,
        version: Option<i64>,
        user: &str,
        reason: &str,
    ) -> Result<Option<i64>> {
        self.tx(|tx| {
            if let Some(v) = version
                && tx
                    .query("SELECT 1 FROM model_versions WHERE name = $1 AND version = $2", &[name.into(), v.into()])?
                    .is_empty()
            {
                return Err(MetaError::NoModelVersion(format!("{name}@{v}")));
            }
            let previous = tx
                .query("SELECT version FROM model_aliases WHERE name = $1 AND alias = $2", &[name.into(), alias.into()])?
                .first()
                .map(|r| r[0].int());
            tx.execute("DELETE FROM model_aliases WHERE name = $1 AND alias = $2", &[name.into(), alias.into()])?;
            if let Some(v) = version {
                tx.execute(
                    "INSERT INTO model_aliases (name, alias, version) VALUES ($1, $2, $3)",
                    &[name.into(), alias.into(), v.into()],
                )?;
            }
            tx.execute(
                "INSERT INTO alias_history (name, alias, version, previous, user_id, time, reason) VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[name.into(), alias.into(), version.into(), previous.into(), user.into(), now_ms().into(), reason.into()],
            )?;
            Ok(previous)
        })
    }

    /// Every move of the model's aliases (or of one), oldest first.
    pub fn alias_history(&self, name: &str, alias: Option<&str>) -> Result<Vec<AliasMove>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT alias, version, previous, user_id, time, reason FROM alias_history WHERE name = $1 \
                 ORDER BY time, alias",
                &[name.into()],
            )?;
            Ok(rows
                .iter()
                .map(|r| AliasMove {
                    alias: r[0].text(),
                    version: r[1].opt_int(),
                    previous: r[2].opt_int(),
                    user: r[3].text(),
                    time: r[4].int(),
                    reason: r[5].text(),
                })
                .filter(|m| alias.is_none_or(|a| a == m.alias))
                .collect())
        })
    }

    pub fn approve(&self, name: &str, version: i64, user: &str, comment: &str) -> Result<()> {
        self.tx(|tx| {
            if tx
                .query("SELECT 1 FROM model_versions WHERE name = $1 AND version = $2", &[name.into(), version.into()])?
                .is_empty()
            {
                return Err(MetaError::NoModelVersion(format!("{name}@{version}")));
            }
            tx.execute(
                "INSERT INTO model_approvals (name, version, user_id, comment, time) VALUES ($1, $2, $3, $4, $5)",
                &[name.into(), version.into(), user.into(), comment.into(), now_ms().into()],
            )
            .map(drop)
        })
    }

    pub fn approvals(&self, name: &str, version: i64) -> Result<Vec<Approval>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT version, user_id, comment, time FROM model_approvals WHERE name = $1 AND version = $2 ORDER BY time",
                &[name.into(), version.into()],
            )?;
            Ok(rows
                .iter()
                .map(|r| Approval { version: r[0].int(), user: r[1].text(), comment: r[2].text(), time: r[3].int() })
                .collect())
        })
    }

    /// Sets (or with `None`, removes) the policy for moving `alias` of `name`.
    pub fn set_policy(&self, name: &str, alias: &str, policy: Option<&Policy>) -> Result<()> {
        self.tx(|tx| {
            if !model_exists(tx, name)? {
                return Err(MetaError::NoModelVersion(name.to_owned()));
            }
            tx.execute(
                "DELETE FROM alias_policies WHERE name = $1 AND alias = $2",
                &[name.into(), alias.into()],
            )?;
            if let Some(p) = policy {
                tx.execute(
                    "INSERT INTO alias_policies (name, alias, approvals, conditions, allow_delete) VALUES ($1, $2, $3, $4, $5)",
                    &[
                        name.into(),
                        alias.into(),
                        p.approvals.into(),
                        p.conditions.join("\n").into(),
                        i64::from(p.allow_delete).into(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    pub fn policy(&self, name: &str, alias: &str) -> Result<Option<Policy>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT approvals, conditions, allow_delete FROM alias_policies WHERE name = $1 AND alias = $2",
                &[name.into(), alias.into()],
            )?;
            Ok(rows.first().map(|r| Policy {
                approvals: r[0].int(),
                conditions: r[1].text().lines().filter(|l| !l.is_empty()).map(str::to_owned).collect(),
                allow_delete: r[2].int() != 0,
            }))
        })
    }
}

/// How an alias's traffic is shared: a canary version takes `weight` percent of it, and
/// shadow versions get a copy of every request (their answers are logged, never returned).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rollout {
    pub canary: Option<i64>,
    /// Percent of requests (0–100) the canary answers.
    pub weight: i64,
    pub shadows: Vec<i64>,
    pub user: String,
    pub time: i64,
}

/// What a model server routes by: every alias and every rollout. Small tables, read whole
/// by each poll.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RoutingSnapshot {
    /// (model, alias) → version.
    pub aliases: std::collections::BTreeMap<(String, String), i64>,
    /// (model, alias) → rollout.
    pub rollouts: std::collections::BTreeMap<(String, String), Rollout>,
    /// model → latest version.
    pub latest: std::collections::BTreeMap<String, i64>,
}

impl Store {
    /// Sets (or with `None`, clears) the rollout of `alias`. Versions must exist; the alias
    /// must point somewhere.
    pub fn set_rollout(&self, name: &str, alias: &str, rollout: Option<&Rollout>) -> Result<()> {
        self.tx(|tx| {
            if tx
                .query(
                    "SELECT 1 FROM model_aliases WHERE name = $1 AND alias = $2",
                    &[name.into(), alias.into()],
                )?
                .is_empty()
            {
                return Err(MetaError::NoModelVersion(format!("{name}@{alias}")));
            }
            tx.execute(
                "DELETE FROM model_rollouts WHERE name = $1 AND alias = $2",
                &[name.into(), alias.into()],
            )?;
            let Some(r) = rollout else { return Ok(()) };
            for v in r.canary.iter().chain(&r.shadows) {
                if tx
                    .query(
                        "SELECT 1 FROM model_versions WHERE name = $1 AND version = $2",
                        &[name.into(), (*v).into()],
                    )?
                    .is_empty()
                {
                    return Err(MetaError::NoModelVersion(format!("{name}@{v}")));
                }
            }
            let shadows = r.shadows.iter().map(i64::to_string).collect::<Vec<_>>().join(",");
            tx.execute(
                "INSERT INTO model_rollouts (name, alias, canary, weight, shadows, user_id, time) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    name.into(),
                    alias.into(),
                    r.canary.into(),
                    r.weight.into(),
                    shadows.into(),
                    r.user.as_str().into(),
                    now_ms().into(),
                ],
            )?;
            Ok(())
        })
    }

    pub fn rollout(&self, name: &str, alias: &str) -> Result<Option<Rollout>> {
        Ok(self.routing_snapshot()?.rollouts.remove(&(name.to_owned(), alias.to_owned())))
    }

    /// Every alias, rollout and latest version, in one transaction.
    pub fn routing_snapshot(&self) -> Result<RoutingSnapshot> {
        self.tx(|tx| {
            let mut snapshot = RoutingSnapshot::default();
            for r in tx.query("SELECT name, alias, version FROM model_aliases", &[])? {
                snapshot.aliases.insert((r[0].text(), r[1].text()), r[2].int());
            }
            for r in tx.query(
                "SELECT name, alias, canary, weight, shadows, user_id, time FROM model_rollouts",
                &[],
            )? {
                let rollout = Rollout {
                    canary: r[2].opt_int(),
                    weight: r[3].int(),
                    shadows: r[4].text().split(',').filter_map(|v| v.parse().ok()).collect(),
                    user: r[5].text(),
                    time: r[6].int(),
                };
                snapshot.rollouts.insert((r[0].text(), r[1].text()), rollout);
            }
            for r in tx.query("SELECT name, MAX(version) FROM model_versions GROUP BY name", &[])? {
                snapshot.latest.insert(r[0].text(), r[1].int());
            }
            Ok(snapshot)
        })
    }
}

/// `metric OP number`, e.g. `accuracy >= 0.9`.
pub fn parse_condition(text: &str) -> Option<(String, String, f64)> {
    for op in [">=", "<=", "==", "!=", ">", "<"] {
        if let Some((metric, value)) = text.split_once(op) {
            let metric = metric.trim();
            let value: f64 = value.trim().parse().ok()?;
            if metric.is_empty() {
                return None;
            }
            return Some((metric.to_owned(), op.to_owned(), value));
        }
    }
    None
}

fn holds(value: f64, op: &str, bound: f64) -> bool {
    match op {
        ">=" => value >= bound,
        "<=" => value <= bound,
        ">" => value > bound,
        "<" => value < bound,
        "==" => value == bound,
        _ => value != bound,
    }
}

impl Store {
    /// Why `name@version` may not take `alias` under the alias's policy (empty: it may).
    pub fn policy_violations(&self, name: &str, alias: &str, version: i64) -> Result<Vec<String>> {
        let Some(policy) = self.policy(name, alias)? else { return Ok(Vec::new()) };
        let mut problems = Vec::new();
        let approvals = self.approvals(name, version)?.len() as i64;
        if approvals < policy.approvals {
            problems.push(format!(
                "`{alias}` needs {} approval(s) and {name}@{version} has {approvals} (cairn model approve {name}@{version} --comment ...)",
                policy.approvals
            ));
        }
        let v = self
            .model_version(name, version)?
            .ok_or_else(|| MetaError::NoModelVersion(format!("{name}@{version}")))?;
        let lineage: serde_json::Value = serde_json::from_str(&v.lineage).unwrap_or(serde_json::Value::Null);
        for condition in &policy.conditions {
            let Some((metric, op, bound)) = parse_condition(condition) else {
                problems.push(format!("`{alias}` has a malformed condition `{condition}`"));
                continue;
            };
            match lineage["metrics"][&metric].as_f64() {
                Some(value) if holds(value, &op, bound) => {}
                Some(value) => problems.push(format!("`{alias}` requires {condition}; {name}@{version} has {metric} = {value}")),
                None => problems.push(format!(
                    "`{alias}` requires {condition}; {name}@{version} has no recorded `{metric}` (register it with --run)"
                )),
            }
        }
        Ok(problems)
    }

    /// Deletes a model with its versions, aliases and policies (their history stays).
    /// Refused while an alias protected by a policy points at a version, unless that policy
    /// allows deletion: what a policy guards cannot be removed around it.
    pub fn delete_model(&self, name: &str) -> Result<()> {
        self.tx(|tx| {
            if !model_exists(tx, name)? {
                return Err(MetaError::NoModelVersion(name.to_owned()));
            }
            let protected = tx.query(
                "SELECT p.alias, p.approvals, p.conditions FROM alias_policies p                  JOIN model_aliases a ON a.name = p.name AND a.alias = p.alias                  WHERE p.name = $1 AND p.allow_delete = 0 ORDER BY p.alias",
                &[name.into()],
            )?;
            if let Some(row) = protected.first() {
                let policy = Policy {
                    approvals: row[1].int(),
                    conditions: row[2].text().lines().filter(|l| !l.is_empty()).map(str::to_owned).collect(),
                    allow_delete: false,
                };
                return Err(MetaError::Protected {
                    model: name.to_owned(),
                    alias: row[0].text(),
                    policy: policy.describe(),
                });
            }
            for table in [
                "model_aliases",
                "model_versions",
                "alias_policies",
                "model_approvals",
                "model_tags",
                "model_rollouts",
                "registered_models",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE name = $1"), &[name.into()])?;
            }
            Ok(())
        })
    }

    /// Renames a model (its versions, aliases, approvals, policies and history follow).
    pub fn rename_model(&self, name: &str, new_name: &str) -> Result<()> {
        self.tx(|tx| {
            if !model_exists(tx, name)? {
                return Err(MetaError::NoModelVersion(name.to_owned()));
            }
            if model_exists(tx, new_name)? {
                return Err(MetaError::ExperimentExists(format!("model {new_name}")));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO registered_models (name, description, creation_time, last_update_time) \
                 SELECT CAST($1 AS TEXT), description, creation_time, CAST($2 AS BIGINT) FROM registered_models \
                 WHERE name = $3",
                &[new_name.into(), now.into(), name.into()],
            )?;
            for table in
                [
                "model_versions",
                "model_aliases",
                "alias_history",
                "model_approvals",
                "alias_policies",
                "model_tags",
                "model_rollouts",
            ]
            {
                tx.execute(
                    &format!("UPDATE {table} SET name = $1 WHERE name = $2"),
                    &[new_name.into(), name.into()],
                )?;
            }
            tx.execute("DELETE FROM registered_models WHERE name = $1", &[name.into()])?;
            Ok(())
        })
    }

    /// Changes a model's description.
    pub fn describe_model(&self, name: &str, description: &str) -> Result<()> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE registered_models SET description = $1, last_update_time = $2 WHERE name = $3",
                &[description.into(), now_ms().into(), name.into()],
            )?;
            if changed == 0 {
                return Err(MetaError::NoModelVersion(name.to_owned()));
            }
            Ok(())
        })
    }
}

impl Store {
    /// Sets a tag on a model (`version` 0) or on one of its versions.
    pub fn set_model_tag(&self, name: &str, version: i64, key: &str, value: &str) -> Result<()> {
        self.tx(|tx| {
            let exists = if version == 0 {
                model_exists(tx, name)?
            } else {
                !tx.query(
                    "SELECT 1 FROM model_versions WHERE name = $1 AND version = $2",
                    &[name.into(), version.into()],
                )?
                .is_empty()
            };
            if !exists {
                return Err(MetaError::NoModelVersion(if version == 0 {
                    name.to_owned()
                } else {
                    format!("{name}@{version}")
                }));
            }
            tx.execute(
                "INSERT INTO model_tags (name, version, key, value) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
                &[name.into(), version.into(), key.into(), value.into()],
            )
            .map(drop)
        })
    }

    /// Removes a tag; an absent tag is not an error.
    pub fn delete_model_tag(&self, name: &str, version: i64, key: &str) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM model_tags WHERE name = $1 AND version = $2 AND key = $3",
                &[name.into(), version.into(), key.into()],
            )
            .map(drop)
        })
    }

    /// The tags of a model (`version` 0) or of one version, by key.
    pub fn model_tags(&self, name: &str, version: i64) -> Result<Vec<(String, String)>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT key, value FROM model_tags WHERE name = $1 AND version = $2 ORDER BY key",
                &[name.into(), version.into()],
            )?;
            Ok(rows.iter().map(|r| (r[0].text(), r[1].text())).collect())
        })
    }
}

impl Store {
    /// The newest active run that wrote `digest` as an output: where a model came from.
    pub fn run_with_output(&self, digest: &str) -> Result<Option<String>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT runs.run_id FROM run_io JOIN runs ON runs.run_id = run_io.run_id \
                 WHERE run_io.direction = 'output' AND run_io.digest = $1 AND runs.lifecycle_stage = 'active' \
                 ORDER BY runs.start_time DESC, runs.run_id LIMIT 1",
                &[digest.into()],
            )?;
            Ok(rows.first().map(|r| r[0].text()))
        })
    }

    /// A version's lineage (JSON): the run's id, commit, dirty flag, params, latest metrics and
    /// the digests of its inputs. `None` if there is no such run.
    pub fn run_lineage(&self, run_id: &str) -> Result<Option<serde_json::Value>> {
        let Some(run) = self.run(run_id)? else { return Ok(None) };
        let inputs: Vec<serde_json::Value> = self
            .io(run_id)?
            .into_iter()
            .filter(|r| r.direction == "input")
            .map(|r| serde_json::json!({"path": r.path, "digest": r.digest, "size": r.size}))
            .collect();
        // The datasets an MLflow client logged as the run's inputs, by name and digest.
        let datasets: Vec<serde_json::Value> = run
            .inputs
            .iter()
            .filter_map(|body| serde_json::from_str::<serde_json::Value>(body).ok())
            .map(|input| serde_json::json!({"name": input["dataset"]["name"], "digest": input["dataset"]["digest"]}))
            .collect();
        Ok(Some(serde_json::json!({
            "datasets": datasets,
            "run_id": run.info.run_id,
            "commit": run.info.git_commit,
            "dirty": run.info.git_dirty,
            "params": run.params.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "metrics": run.metrics.iter().map(|m| (m.key.clone(), m.value)).collect::<std::collections::BTreeMap<_, _>>(),
            "inputs": inputs,
        })))
    }
}
