//! What a browser asks of runs: one page of the runs table at a time (MLflow's filter
//! syntax, any sort key, keyset pagination), a metric's history downsampled for a chart, and
//! a side-by-side comparison of runs.

use std::cmp::Ordering;
use std::collections::BTreeSet;

use cairn_meta::Run;
use serde::Serialize;

use crate::downsample::lttb;
use crate::runs::{RunSummary, summary};
use crate::{Error, Result, Workspace};

/// One page of the runs table.
#[derive(Debug, Default, Clone)]
pub struct PageRequest {
    /// MLflow's search syntax (`metrics.acc > 0.9 and params.lr = '0.01'`).
    pub filter: Option<String>,
    /// `start_time` (the default), `end_time`, `name`, or a metric or param key; `-` before
    /// it sorts descending (`-start_time` is the default order).
    pub order_by: Option<String>,
    /// The `next_page_token` of the page before.
    pub page_token: Option<String>,
    /// Runs per page (at most 1,000).
    pub max_results: usize,
}

/// A page of runs, and the token of the next one (`None` on the last page).
#[derive(Debug, Serialize)]
pub struct RunPage {
    pub runs: Vec<RunSummary>,
    /// Runs matching the filter, on every page.
    pub total: usize,
    pub next_page_token: Option<String>,
}

/// A sort key: a number (times, metrics, numeric params) or text (names, other params).
#[derive(Debug, Clone, PartialEq)]
enum Key {
    Number(f64),
    Text(String),
    Absent,
}

impl Key {
    fn of(run: &Run, field: &str) -> Key {
        match field {
            "start_time" => Key::Number(run.info.start_time as f64),
            "end_time" => run.info.end_time.map_or(Key::Absent, |t| Key::Number(t as f64)),
            "name" => Key::Text(run.info.name.clone()),
            _ => {
                let field = field.strip_prefix("metrics.").unwrap_or(field);
                if let Some(m) = run.metrics.iter().find(|m| m.key == field) {
                    return Key::Number(m.value);
                }
                let field = field.strip_prefix("params.").unwrap_or(field);
                match run.params.iter().find(|(k, _)| k == field) {
                    Some((_, v)) => v.parse().map_or_else(|_| Key::Text(v.clone()), Key::Number),
                    None => Key::Absent,
                }
            }
        }
    }

    /// The key as a page token carries it.
    fn encode(&self) -> String {
        match self {
            Key::Number(x) => format!("n{x}"),
            Key::Text(t) => format!("t{t}"),
            Key::Absent => "a".into(),
        }
    }

    fn decode(text: &str) -> Option<Key> {
        match text.split_at_checked(1)? {
            ("n", x) => x.parse().ok().map(Key::Number),
            ("t", t) => Some(Key::Text(t.to_owned())),
            ("a", "") => Some(Key::Absent),
            _ => None,
        }
    }

    /// Present keys first (numbers before text), each in `descending` order or not.
    fn compare(&self, other: &Key, descending: bool) -> Ordering {
        let rank = |k: &Key| match k {
            Key::Number(_) => 0,
            Key::Text(_) => 1,
            Key::Absent => 2,
        };
        let ordered = match (self, other) {
            (Key::Number(a), Key::Number(b)) => a.total_cmp(b),
            (Key::Text(a), Key::Text(b)) => a.cmp(b),
            _ => return rank(self).cmp(&rank(other)),
        };
        if descending { ordered.reverse() } else { ordered }
    }
}

/// A run's place in the order: its key, then its id in the same direction (so every run has
/// one place, and the store's start-time index serves the default order as it is).
fn position(a: (&Key, &str), b: (&Key, &str), descending: bool) -> Ordering {
    let by_id = if descending { b.1.cmp(a.1) } else { a.1.cmp(b.1) };
    a.0.compare(b.0, descending).then(by_id)
}

/// A page token: the last run's id and sort key.
fn decode_token(token: &str) -> Result<(Key, &str)> {
    token
        .split_once(':')
        .and_then(|(id, key)| Some((Key::decode(key)?, id)))
        .ok_or_else(|| Error::Usage(format!("invalid page token `{token}`")))
}

/// One page of the runs that match `request.filter`, in `request.order_by` order, after the
/// run that `request.page_token` names (keyset pagination: a page does not shift when runs
/// are added before it).
pub fn page(ws: &Workspace, request: &PageRequest) -> Result<RunPage> {
    let store = ws.meta()?;
    let filter = match request.filter.as_deref().filter(|t| !t.trim().is_empty()) {
        Some(text) => Some(
            cairn_meta::search::Filter::parse(text)
                .map_err(|e| Error::Usage(format!("invalid filter `{text}`: {e}")))?,
        ),
        None => None,
    };
    let order = request.order_by.as_deref().unwrap_or("-start_time");
    let (field, descending) = match order.strip_prefix('-') {
        Some(field) => (field, true),
        None => (order.strip_suffix(" DESC").unwrap_or(order), order.ends_with(" DESC")),
    };
    let field = field.strip_suffix(" ASC").unwrap_or(field);
    // Only what the filter and the sort key read is loaded for every run; whole runs only for
    // the page shown.
    let mut columns = cairn_meta::Columns::default();
    if let Some(filter) = &filter {
        filter.columns(&mut columns);
    }
    if !matches!(field, "start_time" | "end_time" | "name") {
        let key = field.strip_prefix("metrics.").unwrap_or(field);
        columns.metrics.push(key.to_owned());
        columns.params.push(field.strip_prefix("params.").unwrap_or(key).to_owned());
    }
    let max = request.max_results.clamp(1, 1000);
    if filter.is_none() && field == "start_time" {
        return first_by_start(&store, request, descending, max);
    }
    let mut runs = store.runs_with(cairn_meta::View::Active, &columns)?;
    if let Some(filter) = &filter {
        runs.retain(|r| filter.matches(r));
    }
    let mut keyed: Vec<(Key, String)> =
        runs.into_iter().map(|r| (Key::of(&r, field), r.info.run_id)).collect();
    keyed.sort_by(|a, b| position((&a.0, &a.1), (&b.0, &b.1), descending));
    let total = keyed.len();
    let start = match &request.page_token {
        None => 0,
        Some(token) => {
            let (key, id) = decode_token(token)?;
            keyed.partition_point(|(k, run_id)| position((k, run_id), (&key, id), descending).is_le())
        }
    };
    let end = (start + max).min(total);
    let next_page_token = (end < total).then(|| {
        let (key, run_id) = &keyed[end - 1];
        format!("{run_id}:{}", key.encode())
    });
    let ids: Vec<String> = keyed.drain(start..end).map(|(_, id)| id).collect();
    let runs = store.runs_by_id(&ids)?.into_iter().map(|run| summary(&store, run)).collect();
    Ok(RunPage { runs, total, next_page_token })
}

/// The default order (by start time) without a filter: the store's index reads the page
/// alone, however many runs there are.
fn first_by_start(
    store: &cairn_meta::Store,
    request: &PageRequest,
    descending: bool,
    max: usize,
) -> Result<RunPage> {
    let after = match &request.page_token {
        None => None,
        Some(token) => match decode_token(token)? {
            (Key::Number(time), id) => Some((time as i64, id)),
            _ => return Err(Error::Usage(format!("invalid page token `{token}`"))),
        },
    };
    // One more than the page: whether there is a next one.
    let (mut ids, total) = store.run_ids_by_start(descending, after, max + 1)?;
    let more = ids.len() > max;
    ids.truncate(max);
    let runs: Vec<RunSummary> = store.runs_by_id(&ids)?.into_iter().map(|run| summary(store, run)).collect();
    let next_page_token = match runs.last() {
        Some(last) if more => {
            Some(format!("{}:{}", last.run_id, Key::Number(last.start_time as f64).encode()))
        }
        _ => None,
    };
    Ok(RunPage { runs, total, next_page_token })
}

/// Every param and metric key the runs have, for a column chooser.
#[derive(Debug, Serialize)]
pub struct RunKeys {
    pub params: Vec<String>,
    pub metrics: Vec<String>,
}

/// The keys of every run's params and metrics.
pub fn keys(ws: &Workspace) -> Result<RunKeys> {
    let (params, metrics) = ws.meta()?.run_keys()?;
    Ok(RunKeys { params, metrics })
}

/// A metric's history as a chart draws it.
#[derive(Debug, Serialize)]
pub struct MetricHistory {
    pub run_id: String,
    pub key: String,
    /// Points recorded; `points` holds at most about the number asked for.
    pub recorded: usize,
    /// `[step, value]`, downsampled with the true minimum and maximum kept.
    pub points: Vec<(f64, f64)>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

/// The history of metric `key` of run `run` (an id, its start, or a name), downsampled to
/// about `points` points (largest-triangle-three-buckets, extremes kept).
pub fn history(ws: &Workspace, run: &str, key: &str, points: usize) -> Result<MetricHistory> {
    let store = ws.meta()?;
    let run = crate::experiments::find(&store, run)?;
    let recorded = store.metric_history(&run.info.run_id, key)?;
    if recorded.is_empty() && !run.metrics.iter().any(|m| m.key == key) {
        return Err(Error::refused(
            format!("run {} has no metric `{key}`", run.info.run_id),
            Some("list a run's metrics with `cairn exp show --json`"),
        ));
    }
    let all: Vec<(f64, f64)> = recorded.iter().map(|m| (m.step as f64, m.value)).collect();
    let finite = || all.iter().map(|p| p.1).filter(|v| v.is_finite());
    Ok(MetricHistory {
        run_id: run.info.run_id,
        key: key.to_owned(),
        recorded: all.len(),
        min: finite().reduce(f64::min),
        max: finite().reduce(f64::max),
        points: lttb(&all, points.clamp(3, 10_000)),
    })
}

/// Runs side by side: every param and metric, and whether it differs between them.
#[derive(Debug, Serialize)]
pub struct Comparison {
    pub runs: Vec<RunSummary>,
    pub params: Vec<Compared<String>>,
    pub metrics: Vec<Compared<f64>>,
}

/// One param or metric across the compared runs (`None` where a run lacks it).
#[derive(Debug, Serialize)]
pub struct Compared<T> {
    pub key: String,
    pub values: Vec<Option<T>>,
    pub differs: bool,
}

fn compared<T: Clone + PartialEq>(key: String, values: Vec<Option<T>>) -> Compared<T> {
    let differs = values.windows(2).any(|w| w[0] != w[1]);
    Compared { key, values, differs }
}

/// Compares runs (ids, id starts or names; two or more).
pub fn compare(ws: &Workspace, runs: &[String]) -> Result<Comparison> {
    if runs.len() < 2 {
        return Err(Error::Usage("compare needs two runs or more".into()));
    }
    let store = ws.meta()?;
    let runs: Vec<RunSummary> = runs
        .iter()
        .map(|r| crate::experiments::find(&store, r).map(|run| summary(&store, run)))
        .collect::<Result<_>>()?;
    let param_keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.params.keys()).collect();
    let metric_keys: BTreeSet<&String> = runs.iter().flat_map(|r| r.metrics.keys()).collect();
    let params = param_keys
        .into_iter()
        .map(|k| compared(k.clone(), runs.iter().map(|r| r.params.get(k).cloned()).collect()))
        .collect();
    let metrics = metric_keys
        .into_iter()
        .map(|k| compared(k.clone(), runs.iter().map(|r| r.metrics.get(k).copied()).collect()))
        .collect();
    Ok(Comparison { runs, params, metrics })
}

/// One run as the runs table lists it (an id, its start, or a name).
pub fn run(ws: &Workspace, run: &str) -> Result<RunSummary> {
    let store = ws.meta()?;
    let found = crate::experiments::find(&store, run)?;
    Ok(summary(&store, found))
}
