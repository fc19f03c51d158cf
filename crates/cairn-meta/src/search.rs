//! MLflow's run search: the filter syntax (`metrics.acc > 0.9 and params.lr = '0.01'`) and
//! `order_by` clauses (`metrics.acc DESC`), evaluated over runs read from the store.
//!
//! A filter is comparisons joined by `AND` (MLflow has no `OR`). The left side is an entity
//! and a key: `metrics.`/`metric.`, `params.`/`param.`/`parameters.`, `tags.`/`tag.`, or
//! `attributes.`/`attribute.`/`attr.`/`run.` (and a bare attribute name); a key with spaces
//! or dots may be quoted with backticks or double quotes (``metrics.`f1 score` ``,
//! `tags."mlflow.runName"`). Metrics and the time attributes compare as numbers (`=`, `!=`,
//! `<`, `<=`, `>`, `>=`); params, tags and the other attributes as strings (`=`, `!=`,
//! `LIKE`, `ILIKE`, `IN (...)`, `NOT IN (...)`), and any of them `IS NULL`/`IS NOT NULL`.
//! A run without the metric, param or tag matches no comparison except `IS NULL`.
//! `datasets.name`, `datasets.digest` and `datasets.context` compare as strings with a run's
//! dataset inputs (`log_input`); a run matches when any of its datasets does, as in MLflow.

use std::cmp::Ordering;

use crate::Run;

/// Where a searched value comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum Entity {
    Metric(String),
    Param(String),
    Tag(String),
    Attribute(Attribute),
    Dataset(DatasetField),
}

/// What a `datasets.` comparison reads from each of a run's dataset inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetField {
    Name,
    Digest,
    /// The input's `mlflow.data.context` tag (`training`, `evaluation`, ...).
    Context,
}

impl DatasetField {
    /// This field of every dataset input of `run` that has it.
    fn values(self, run: &Run) -> Vec<String> {
        run.inputs
            .iter()
            .filter_map(|input| serde_json::from_str::<serde_json::Value>(input).ok())
            .filter_map(|input| match self {
                DatasetField::Name => input["dataset"]["name"].as_str().map(str::to_owned),
                DatasetField::Digest => input["dataset"]["digest"].as_str().map(str::to_owned),
                DatasetField::Context => input["tags"].as_array().and_then(|tags| {
                    tags.iter()
                        .find(|t| t["key"] == "mlflow.data.context")
                        .and_then(|t| t["value"].as_str().map(str::to_owned))
                }),
            })
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    RunId,
    RunName,
    Status,
    User,
    ArtifactUri,
    LifecycleStage,
    StartTime,
    EndTime,
    /// A run's `source`; searchable only as a logged model's `model_type` (see [`Searched`]).
    Source,
    /// A run's parent; searchable only as a logged model's `source_run_id`.
    ParentRunId,
    /// A logged model's status (`PENDING`, `READY`, `UPLOAD_FAILED`), which its run-shaped
    /// record carries as the tag [`MODEL_STATUS_TAG`].
    ModelStatus,
}

/// The tag under which a logged model's search record carries its status: a key no client
/// can set (it starts with a NUL character, which tag keys never hold).
pub const MODEL_STATUS_TAG: &str = "\u{0}cairn.logged_model.status";

/// What a filter searches, which decides its attribute names. Logged models are searched as
/// run-shaped records ([`record`]): `model_id` is the run id, `name` the run name,
/// `creation_timestamp` the start time, `last_updated_timestamp` the end time, `model_type`
/// the source and `source_run_id` the parent run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Searched {
    Runs,
    LoggedModels,
}

impl Attribute {
    fn parse(name: &str, searched: Searched) -> Option<Attribute> {
        if searched == Searched::LoggedModels {
            return Some(match name {
                "model_id" => Attribute::RunId,
                "name" => Attribute::RunName,
                "status" => Attribute::ModelStatus,
                "model_type" => Attribute::Source,
                "source_run_id" => Attribute::ParentRunId,
                "creation_timestamp" | "creation_time" | "creation_timestamp_ms" => Attribute::StartTime,
                "last_updated_timestamp" | "last_updated_time" | "last_updated_timestamp_ms" => {
                    Attribute::EndTime
                }
                _ => return None,
            });
        }
        Some(match name {
            "run_id" | "run_uuid" => Attribute::RunId,
            "run_name" | "runName" | "name" => Attribute::RunName,
            "status" => Attribute::Status,
            "user_id" => Attribute::User,
            "artifact_uri" => Attribute::ArtifactUri,
            "lifecycle_stage" => Attribute::LifecycleStage,
            "start_time" | "created" | "Created" => Attribute::StartTime,
            "end_time" => Attribute::EndTime,
            _ => return None,
        })
    }

    fn numeric(self) -> bool {
        matches!(self, Attribute::StartTime | Attribute::EndTime)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
    Like,
    ILike,
    In,
    NotIn,
    IsNull,
    IsNotNull,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Literal {
    Number(f64),
    Text(String),
    List(Vec<String>),
    None,
}

/// One comparison of a filter.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    pub entity: Entity,
    pub op: Op,
    pub value: Literal,
}

/// A filter: every comparison must hold.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Filter(pub Vec<Comparison>);

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Number(f64),
    Op(String),
    Open,
    Close,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = text.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '(' {
            tokens.push(Token::Open);
            i += 1;
        } else if c == ')' {
            tokens.push(Token::Close);
            i += 1;
        } else if c == ',' {
            tokens.push(Token::Comma);
            i += 1;
        } else if c == '\'' || c == '"' || c == '`' {
            let start = i + 1;
            let end = chars[start..]
                .iter()
                .position(|&d| d == c)
                .ok_or_else(|| format!("unterminated {c}quote{c} starting at character {}", i + 1))?;
            tokens.push(Token::Quoted(chars[start..start + end].iter().collect()));
            i = start + end + 1;
        } else if matches!(c, '=' | '!' | '<' | '>') {
            let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
            let op = if matches!(two.as_str(), "!=" | "<=" | ">=" | "==") { two } else { c.to_string() };
            if op == "!" {
                return Err(format!("`!` at character {} must be followed by `=`", i + 1));
            }
            i += op.len();
            tokens.push(Token::Op(if op == "==" { "=".into() } else { op }));
        } else if c.is_ascii_digit()
            || (matches!(c, '-' | '+' | '.') && chars.get(i + 1).is_some_and(char::is_ascii_digit))
        {
            let start = i;
            i += 1;
            // Digits, letters (`1e5`), `.`, and a sign only right after an exponent's `e`.
            let continues = |i: usize| {
                let c = chars[i];
                if matches!(c, '-' | '+') {
                    matches!(chars[i - 1], 'e' | 'E')
                } else {
                    c.is_ascii_alphanumeric() || c == '.'
                }
            };
            while i < chars.len() && continues(i) {
                i += 1;
            }
            let text: String = chars[start..i].iter().collect();
            let number = text.parse().map_err(|_| format!("`{text}` is not a number"))?;
            tokens.push(Token::Number(number));
        } else {
            // A word runs to whitespace, an operator, a parenthesis, a comma or a quote (so
            // `tags."a b"` is the word `tags.` followed by a quoted key).
            let start = i;
            while i < chars.len()
                && !chars[i].is_whitespace()
                && !matches!(chars[i], '=' | '!' | '<' | '>' | '(' | ')' | ',' | '\'' | '"' | '`')
            {
                i += 1;
            }
            tokens.push(Token::Word(chars[start..i].iter().collect()));
        }
    }
    Ok(tokens)
}

/// Parses `entity.key` from the word (and a following quoted key when the word ends in `.`).
fn entity(tokens: &[Token], at: &mut usize, searched: Searched) -> Result<Entity, String> {
    let Some(Token::Word(word)) = tokens.get(*at) else {
        return Err(format!(
            "expected `metrics.KEY`, `params.KEY`, `tags.KEY` or `attributes.NAME`, found {}",
            describe(tokens.get(*at))
        ));
    };
    *at += 1;
    let (prefix, mut key) = match word.split_once('.') {
        Some((prefix, key)) => (prefix.to_owned(), key.to_owned()),
        None => (String::new(), word.clone()),
    };
    if key.is_empty() {
        match tokens.get(*at) {
            Some(Token::Quoted(quoted)) => {
                key = quoted.clone();
                *at += 1;
            }
            other => return Err(format!("expected a key after `{word}`, found {}", describe(other))),
        }
    }
    match prefix.to_ascii_lowercase().as_str() {
        "metric" | "metrics" => Ok(Entity::Metric(key)),
        "param" | "params" | "parameter" | "parameters" => Ok(Entity::Param(key)),
        "tag" | "tags" => Ok(Entity::Tag(key)),
        "dataset" | "datasets" => match key.as_str() {
            "name" => Ok(Entity::Dataset(DatasetField::Name)),
            "digest" => Ok(Entity::Dataset(DatasetField::Digest)),
            "context" => Ok(Entity::Dataset(DatasetField::Context)),
            other => Err(format!("unknown dataset field `{other}`; use datasets.name, datasets.digest or datasets.context")),
        },
        "attribute" | "attributes" | "attr" | "run" | "" => {
            Attribute::parse(&key, searched).map(Entity::Attribute).ok_or_else(|| match searched {
                Searched::Runs => format!(
                    "unknown attribute `{key}`; searchable attributes are run_id, run_name, status, user_id, artifact_uri, lifecycle_stage, start_time, end_time"
                ),
                Searched::LoggedModels => format!(
                    "unknown attribute `{key}`; a logged model's searchable attributes are model_id, name, status, model_type, source_run_id, creation_timestamp, last_updated_timestamp"
                ),
            })
        }
        other => Err(format!(
            "unknown entity `{other}` in `{word}`; use metrics., params., tags., attributes. or datasets."
        )),
    }
}

fn describe(token: Option<&Token>) -> String {
    match token {
        None => "the end of the filter".into(),
        Some(Token::Word(w)) => format!("`{w}`"),
        Some(Token::Quoted(q)) => format!("'{q}'"),
        Some(Token::Number(n)) => format!("{n}"),
        Some(Token::Op(o)) => format!("`{o}`"),
        Some(Token::Open) => "`(`".into(),
        Some(Token::Close) => "`)`".into(),
        Some(Token::Comma) => "`,`".into(),
    }
}

fn is_word(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token::Word(w)) if w.eq_ignore_ascii_case(word))
}

impl Filter {
    /// Parses MLflow's filter syntax; an empty string matches every run.
    pub fn parse(text: &str) -> Result<Filter, String> {
        Filter::parse_for(text, Searched::Runs)
    }

    /// Parses a filter over runs or over logged models (whose attributes have other names).
    pub fn parse_for(text: &str, searched: Searched) -> Result<Filter, String> {
        let tokens = tokenize(text)?;
        let mut comparisons = Vec::new();
        let mut at = 0;
        while at < tokens.len() {
            if !comparisons.is_empty() {
                if !is_word(tokens.get(at), "and") {
                    return Err(format!(
                        "expected `AND` between comparisons, found {} (MLflow's filter has no OR)",
                        describe(tokens.get(at))
                    ));
                }
                at += 1;
            }
            comparisons.push(comparison(&tokens, &mut at, searched)?);
        }
        Ok(Filter(comparisons))
    }

    pub fn matches(&self, run: &Run) -> bool {
        self.0.iter().all(|c| c.matches(run))
    }

    /// The parts of a run the filter reads (added to `columns`).
    pub fn columns(&self, columns: &mut crate::Columns) {
        for c in &self.0 {
            match &c.entity {
                Entity::Metric(key) => columns.metrics.push(key.clone()),
                Entity::Param(key) => columns.params.push(key.clone()),
                Entity::Tag(key) => columns.tags.push(key.clone()),
                Entity::Dataset(_) => columns.inputs = true,
                Entity::Attribute(Attribute::ModelStatus) => columns.tags.push(MODEL_STATUS_TAG.to_owned()),
                Entity::Attribute(_) => {}
            }
        }
    }

    /// As the registry searches: `!=` and `NOT IN` also hold when the value is absent (the
    /// `mlflow` client excludes prompts with ``tag.`mlflow.prompt.is_prompt` != 'true'``, which
    /// must keep every model without that tag).
    pub fn matches_absent_as_unequal(&self, run: &Run) -> bool {
        self.0.iter().all(|c| {
            let absent = lookup(run, &c.entity).is_none();
            (absent && matches!(c.op, Op::Ne | Op::NotIn)) || c.matches(run)
        })
    }
}

/// Parses one comparison (`entity op value`). About 100 lines: one pass over the grammar's
/// three parts, each with the error that names what was expected there.
fn comparison(tokens: &[Token], at: &mut usize, searched: Searched) -> Result<Comparison, String> {
    let entity = entity(tokens, at, searched)?;
    let numeric =
        matches!(&entity, Entity::Metric(_)) || matches!(&entity, Entity::Attribute(a) if a.numeric());
    let op = match tokens.get(*at) {
        Some(Token::Op(op)) => {
            *at += 1;
            match op.as_str() {
                "=" => Op::Eq,
                "!=" => Op::Ne,
                "<" => Op::Lt,
                "<=" => Op::Le,
                ">" => Op::Gt,
                ">=" => Op::Ge,
                other => return Err(format!("unknown comparator `{other}`")),
            }
        }
        Some(Token::Word(w)) => {
            *at += 1;
            match w.to_ascii_uppercase().as_str() {
                "LIKE" => Op::Like,
                "ILIKE" => Op::ILike,
                "IN" => Op::In,
                "NOT" if is_word(tokens.get(*at), "in") => {
                    *at += 1;
                    Op::NotIn
                }
                "IS" if is_word(tokens.get(*at), "null") => {
                    *at += 1;
                    return Ok(Comparison { entity, op: Op::IsNull, value: Literal::None });
                }
                "IS" if is_word(tokens.get(*at), "not") && is_word(tokens.get(*at + 1), "null") => {
                    *at += 2;
                    return Ok(Comparison { entity, op: Op::IsNotNull, value: Literal::None });
                }
                _ => return Err(format!("expected a comparator after the key, found `{w}`")),
            }
        }
        other => return Err(format!("expected a comparator after the key, found {}", describe(other))),
    };
    let allowed = if numeric {
        matches!(op, Op::Eq | Op::Ne | Op::Lt | Op::Le | Op::Gt | Op::Ge)
    } else {
        matches!(op, Op::Eq | Op::Ne | Op::Like | Op::ILike | Op::In | Op::NotIn)
    };
    if !allowed {
        return Err(if numeric {
            "metrics and times compare with =, !=, <, <=, >, >=".to_owned()
        } else {
            "params, tags and text attributes compare with =, !=, LIKE, ILIKE, IN, NOT IN".to_owned()
        });
    }
    let value = match (op, tokens.get(*at)) {
        (Op::In | Op::NotIn, Some(Token::Open)) => {
            *at += 1;
            let mut items = Vec::new();
            loop {
                match tokens.get(*at) {
                    Some(Token::Quoted(q)) => items.push(q.clone()),
                    other => {
                        return Err(format!(
                            "expected a quoted value in the IN list, found {}",
                            describe(other)
                        ));
                    }
                }
                *at += 1;
                match tokens.get(*at) {
                    Some(Token::Comma) => *at += 1,
                    Some(Token::Close) => {
                        *at += 1;
                        break;
                    }
                    other => {
                        return Err(format!("expected `,` or `)` in the IN list, found {}", describe(other)));
                    }
                }
            }
            Literal::List(items)
        }
        (Op::In | Op::NotIn, other) => {
            return Err(format!("expected `(` after IN, found {}", describe(other)));
        }
        (_, Some(Token::Number(n))) if numeric => {
            *at += 1;
            Literal::Number(*n)
        }
        (_, Some(Token::Quoted(q))) if numeric => {
            *at += 1;
            Literal::Number(q.parse().map_err(|_| format!("'{q}' is not a number"))?)
        }
        (_, Some(Token::Quoted(q))) => {
            *at += 1;
            Literal::Text(q.clone())
        }
        (_, other) if numeric => return Err(format!("expected a number, found {}", describe(other))),
        (_, other) => {
            return Err(format!("expected a quoted string ('value'), found {}", describe(other)));
        }
    };
    Ok(Comparison { entity, op, value })
}

/// The value a run has for an entity: a number or text.
#[derive(Debug, Clone, PartialEq)]
enum Found {
    Number(f64),
    Text(String),
}

fn lookup(run: &Run, entity: &Entity) -> Option<Found> {
    let info = &run.info;
    match entity {
        Entity::Metric(key) => run.metrics.iter().find(|m| &m.key == key).map(|m| Found::Number(m.value)),
        Entity::Param(key) => run.params.iter().find(|(k, _)| k == key).map(|(_, v)| Found::Text(v.clone())),
        Entity::Tag(key) => run.tags.iter().find(|(k, _)| k == key).map(|(_, v)| Found::Text(v.clone())),
        // Several datasets may answer; sorting takes the first (comparisons try each).
        Entity::Dataset(field) => field.values(run).into_iter().next().map(Found::Text),
        Entity::Attribute(a) => match a {
            Attribute::RunId => Some(Found::Text(info.run_id.clone())),
            Attribute::RunName => Some(Found::Text(info.name.clone())),
            Attribute::Status => Some(Found::Text(info.status.as_str().to_owned())),
            Attribute::User => Some(Found::Text(info.user.clone())),
            Attribute::ArtifactUri => Some(Found::Text(info.artifact_uri.clone())),
            Attribute::LifecycleStage => Some(Found::Text(info.lifecycle_stage.clone())),
            Attribute::StartTime => Some(Found::Number(info.start_time as f64)),
            Attribute::EndTime => info.end_time.map(|t| Found::Number(t as f64)),
            Attribute::Source => Some(Found::Text(info.source.clone())),
            Attribute::ParentRunId => info.parent_run_id.clone().map(Found::Text),
            Attribute::ModelStatus => {
                run.tags.iter().find(|(k, _)| k == MODEL_STATUS_TAG).map(|(_, v)| Found::Text(v.clone()))
            }
        },
    }
}

impl Comparison {
    pub fn matches(&self, run: &Run) -> bool {
        if let Entity::Dataset(field) = &self.entity {
            let values = field.values(run);
            return match self.op {
                Op::IsNull => values.is_empty(),
                Op::IsNotNull => !values.is_empty(),
                _ => values.into_iter().any(|v| self.holds(Some(Found::Text(v)))),
            };
        }
        self.holds(lookup(run, &self.entity))
    }

    fn holds(&self, found: Option<Found>) -> bool {
        match (self.op, found, &self.value) {
            (Op::IsNull, found, _) => found.is_none(),
            (Op::IsNotNull, found, _) => found.is_some(),
            (_, None, _) => false,
            (op, Some(Found::Number(x)), Literal::Number(y)) => match op {
                Op::Eq => x == *y,
                Op::Ne => x != *y,
                Op::Lt => x < *y,
                Op::Le => x <= *y,
                Op::Gt => x > *y,
                Op::Ge => x >= *y,
                _ => false,
            },
            (op, Some(Found::Text(x)), Literal::Text(y)) => match op {
                Op::Eq => x == *y,
                Op::Ne => x != *y,
                Op::Like => like(&x, y, false),
                Op::ILike => like(&x, y, true),
                _ => false,
            },
            (Op::In, Some(Found::Text(x)), Literal::List(items)) => items.contains(&x),
            (Op::NotIn, Some(Found::Text(x)), Literal::List(items)) => !items.contains(&x),
            _ => false,
        }
    }
}

/// SQL `LIKE`: `%` matches any run of characters, `_` one character.
pub fn like(text: &str, pattern: &str, ignore_case: bool) -> bool {
    let fold = |s: &str| -> Vec<char> {
        if ignore_case { s.to_lowercase().chars().collect() } else { s.chars().collect() }
    };
    let (text, pattern) = (fold(text), fold(pattern));
    // Greedy matching with backtracking to the last `%`.
    let (mut t, mut p) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while t < text.len() {
        if p < pattern.len() && (pattern[p] == '_' || pattern[p] == text[t]) {
            t += 1;
            p += 1;
        } else if p < pattern.len() && pattern[p] == '%' {
            star = Some((p, t));
            p += 1;
        } else if let Some((sp, st)) = star {
            p = sp + 1;
            t = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == '%')
}

/// Something that is not a run — an experiment, a registered model — as a run-shaped record,
/// so the same filters apply: `name`, `tags.*`, `start_time` (its creation time) and `run_id`
/// (its id).
pub fn record(id: &str, name: &str, created: i64, tags: Vec<(String, String)>) -> Run {
    Run {
        info: crate::RunInfo {
            run_id: id.to_owned(),
            experiment_id: 0,
            name: name.to_owned(),
            parent_run_id: None,
            status: crate::RunStatus::Running,
            start_time: created,
            end_time: None,
            user: String::new(),
            git_commit: None,
            git_dirty: false,
            source: String::new(),
            artifact_uri: String::new(),
            lifecycle_stage: "active".into(),
        },
        params: Vec::new(),
        tags,
        metrics: Vec::new(),
        inputs: Vec::new(),
        models: Vec::new(),
    }
}

/// One `order_by` clause.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderBy {
    pub entity: Entity,
    pub descending: bool,
}

impl OrderBy {
    /// Parses `metrics.acc DESC`, `params.lr`, `attributes.start_time ASC`.
    pub fn parse(text: &str) -> Result<OrderBy, String> {
        let tokens = tokenize(text)?;
        let mut at = 0;
        let entity = entity(&tokens, &mut at, Searched::Runs)?;
        let descending = match tokens.get(at) {
            None => false,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("asc") => false,
            Some(Token::Word(w)) if w.eq_ignore_ascii_case("desc") => true,
            other => return Err(format!("expected ASC or DESC after the key, found {}", describe(other))),
        };
        if tokens.len() > at + 1 {
            return Err(format!("unexpected {} after the direction", describe(tokens.get(at + 1))));
        }
        Ok(OrderBy { entity, descending })
    }
}

/// Sorts runs by the clauses, then newest first and by id (MLflow's order). Runs without a
/// value for a clause come after those with one, in either direction.
pub fn sort(runs: &mut [Run], order: &[OrderBy]) {
    runs.sort_by(|a, b| {
        for clause in order {
            let ordering = match (lookup(a, &clause.entity), lookup(b, &clause.entity)) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let o = match (x, y) {
                        (Found::Number(x), Found::Number(y)) => x.total_cmp(&y),
                        (Found::Text(x), Found::Text(y)) => x.cmp(&y),
                        (Found::Number(_), Found::Text(_)) => Ordering::Less,
                        (Found::Text(_), Found::Number(_)) => Ordering::Greater,
                    };
                    if clause.descending { o.reverse() } else { o }
                }
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        b.info.start_time.cmp(&a.info.start_time).then_with(|| a.info.run_id.cmp(&b.info.run_id))
    });
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::{Metric, RunInfo};

    fn run(id: &str, acc: Option<f64>, lr: &str) -> Run {
        Run {
            info: RunInfo {
                run_id: id.into(),
                experiment_id: 0,
                name: format!("run {id}"),
                parent_run_id: None,
                status: crate::RunStatus::Finished,
                start_time: 10,
                end_time: Some(20),
                user: "ada".into(),
                git_commit: None,
                git_dirty: false,
                source: "test".into(),
                artifact_uri: String::new(),
                lifecycle_stage: "active".into(),
            },
            params: vec![("lr".into(), lr.into())],
            tags: vec![("mlflow.runName".into(), format!("run {id}"))],
            metrics: acc
                .map(|v| Metric { key: "acc".into(), value: v, timestamp: 1, step: 0 })
                .into_iter()
                .collect(),
            inputs: Vec::new(),
            models: Vec::new(),
        }
    }

    #[test]
    fn filters_combine_metrics_params_tags_and_attributes() {
        let runs = [run("a", Some(0.95), "0.01"), run("b", Some(0.85), "0.01"), run("c", None, "0.1")];
        let ids = |filter: &str| -> Vec<String> {
            let f = Filter::parse(filter).unwrap();
            runs.iter().filter(|r| f.matches(r)).map(|r| r.info.run_id.clone()).collect()
        };
        assert_eq!(ids("metrics.acc > 0.9 and params.lr = '0.01'"), ["a"]);
        assert_eq!(ids("params.lr = \"0.01\""), ["a", "b"]);
        assert_eq!(ids("metrics.acc <= 0.85"), ["b"]);
        assert_eq!(ids("metrics.acc IS NULL"), ["c"]);
        assert_eq!(ids("tags.\"mlflow.runName\" LIKE 'run %'"), ["a", "b", "c"]);
        assert_eq!(ids("tags.`mlflow.runName` ILIKE 'RUN _'"), ["a", "b", "c"]);
        assert_eq!(ids("attributes.run_id IN ('a', 'c')"), ["a", "c"]);
        assert_eq!(ids("attributes.run_id NOT IN ('a')"), ["b", "c"]);
        assert_eq!(ids("attributes.status = 'FINISHED' AND attributes.start_time >= 10"), ["a", "b", "c"]);
        assert_eq!(ids("metrics.acc != 0.95"), ["b"]);
        assert_eq!(ids(""), ["a", "b", "c"]);
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for (filter, says) in [
            ("metrics.acc > 'x'", "not a number"),
            ("params.lr > '1'", "compare with =, !=, LIKE"),
            ("metrics.acc > 0.9 or params.lr = '1'", "no OR"),
            ("colour.red = 'x'", "unknown entity `colour`"),
            ("attributes.colour = 'x'", "unknown attribute `colour`"),
            ("params.lr = 'unterminated", "unterminated"),
            ("params.lr =", "quoted string"),
        ] {
            let error = Filter::parse(filter).unwrap_err();
            assert!(error.contains(says), "{filter}: {error}");
        }
    }

    #[test]
    fn order_by_puts_missing_values_last() {
        let mut runs = vec![run("a", Some(0.5), "1"), run("b", None, "2"), run("c", Some(0.9), "3")];
        sort(&mut runs, &[OrderBy::parse("metrics.acc DESC").unwrap()]);
        let ids: Vec<&str> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
        assert_eq!(ids, ["c", "a", "b"]);
        sort(&mut runs, &[OrderBy::parse("metrics.acc").unwrap()]);
        let ids: Vec<&str> = runs.iter().map(|r| r.info.run_id.as_str()).collect();
        assert_eq!(ids, ["a", "c", "b"]);
        assert!(OrderBy::parse("metrics.acc sideways").is_err());
    }

    #[test]
    fn like_matches_sql_wildcards() {
        assert!(like("abc", "a%", false));
        assert!(like("abc", "%c", false));
        assert!(like("abc", "a_c", false));
        assert!(!like("abc", "a_", false));
        assert!(like("ABC", "a%", true));
        assert!(!like("ABC", "a%", false));
        assert!(like("a%c", "a%%c", false));
    }
}
