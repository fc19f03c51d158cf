//! The alert log: what opened, when it resolved, where it was delivered.
//!
//! Layout, under the prediction log's directory (`.cairn/predictions/alerts/`):
//!
//! - `events.jsonl`: one [`Event`] per line, appended and `fdatasync`ed (`{"event": "opened",
//!   "alert": {...}}`, `{"event": "resolved", ...}`, `{"event": "delivered", ...}`,
//!   `{"event": "delivery_failed", ...}`, `{"event": "action", ...}`). The alerts are a fold
//!   over it ([`read`]); a torn last line (a crash mid-write) is skipped.
//! - `state.json`: each rule's [`RuleState`] per served version, keyed `model/version/rule`,
//!   replaced whole (temp file, rename) after each evaluation, so a restarted server neither
//!   re-opens an open alert nor forgets one.
//! - `lock`: held while evaluating, so that replicas sharing the directory take turns and
//!   record each alert once.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::rules::RuleState;

/// One alert, as it opened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// 12 hex digits of the opening millisecond, then 8 random ones.
    pub id: String,
    pub model: String,
    pub version: i64,
    pub rule: String,
    pub metric: String,
    pub op: String,
    pub threshold: f64,
    pub value: f64,
    /// The window the value was measured over.
    pub window_start_ms: i64,
    pub window_end_ms: i64,
    pub opened_ms: i64,
    /// Some of the requests behind it (trace ids), for `cairn trace`.
    #[serde(default)]
    pub requests: Vec<String>,
    /// How many requests in the window are behind it.
    #[serde(default)]
    pub requests_total: usize,
    /// The input features it is about (the drifted ones, for the dataset's drift).
    #[serde(default)]
    pub features: Vec<String>,
    /// The command that lists all of them.
    pub requests_command: String,
}

impl Alert {
    /// One line: `churn@3 drift_share = 0.75 (>= 0.5) over 10:00–10:05`.
    pub fn summary(&self) -> String {
        format!(
            "{}@{}: {} = {} ({} {}) — rule `{}`",
            self.model,
            self.version,
            self.metric,
            round(self.value),
            self.op,
            self.threshold,
            self.rule
        )
    }
}

fn round(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 { format!("{x:.0}") } else { format!("{x:.4}") }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    Opened {
        alert: Alert,
    },
    Resolved {
        alert_id: String,
        time_ms: i64,
        /// The value when it resolved (none: no data in the window).
        value: Option<f64>,
    },
    Delivered {
        alert_id: String,
        time_ms: i64,
        /// `opened` or `resolved`.
        what: String,
        url: String,
        attempts: u32,
    },
    DeliveryFailed {
        alert_id: String,
        time_ms: i64,
        what: String,
        url: String,
        attempts: u32,
        error: String,
    },
    /// A rule's `retrain` ran.
    Action {
        alert_id: String,
        time_ms: i64,
        command: String,
        ok: bool,
        detail: String,
    },
}

impl Event {
    pub fn alert_id(&self) -> &str {
        match self {
            Self::Opened { alert } => &alert.id,
            Self::Resolved { alert_id, .. }
            | Self::Delivered { alert_id, .. }
            | Self::DeliveryFailed { alert_id, .. }
            | Self::Action { alert_id, .. } => alert_id,
        }
    }
}

/// An alert with what happened to it since.
#[derive(Debug, Clone, Serialize)]
pub struct AlertView {
    #[serde(flatten)]
    pub alert: Alert,
    pub resolved_ms: Option<i64>,
    /// Delivery and action events, in order.
    pub history: Vec<Event>,
}

#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    #[error("alert log `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("alert state `{path}` is damaged: {message}; move it aside to start the rules afresh")]
    State { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> AlertError + '_ {
    move |source| AlertError::Io { path: path.to_path_buf(), source }
}

/// The directory of one prediction log's alerts.
#[derive(Debug, Clone)]
pub struct AlertLog {
    dir: PathBuf,
}

/// A new alert id.
pub fn alert_id(time_ms: i64) -> String {
    format!("{:012x}{:08x}", time_ms, fastrand::u32(..))
}

impl AlertLog {
    /// The alerts of the prediction log in `log_dir`.
    pub fn new(log_dir: &Path) -> Self {
        Self { dir: log_dir.join("alerts") }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn create(&self) -> Result<(), AlertError> {
        std::fs::create_dir_all(&self.dir).map_err(io(&self.dir))
    }

    /// Takes the evaluation lock (blocking until another process lets go of it).
    pub fn lock(&self) -> Result<File, AlertError> {
        self.create()?;
        let path = self.dir.join("lock");
        let file =
            OpenOptions::new().create(true).truncate(false).write(true).open(&path).map_err(io(&path))?;
        file.lock().map_err(io(&path))?;
        Ok(file)
    }

    /// Appends events durably.
    pub fn append(&self, events: &[Event]) -> Result<(), AlertError> {
        if events.is_empty() {
            return Ok(());
        }
        self.create()?;
        let path = self.dir.join("events.jsonl");
        let mut buf = Vec::new();
        for e in events {
            serde_json::to_writer(&mut buf, e)
                .map_err(|e| AlertError::Io { path: path.clone(), source: e.into() })?;
            buf.push(b'\n');
        }
        let mut file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
        file.write_all(&buf).map_err(io(&path))?;
        file.sync_data().map_err(io(&path))
    }

    /// Every event, oldest first.
    pub fn events(&self) -> Result<Vec<Event>, AlertError> {
        let path = self.dir.join("events.jsonl");
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(AlertError::Io { path, source: e }),
        };
        Ok(text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect())
    }

    /// Every alert, oldest first, with its resolution and deliveries.
    pub fn read(&self) -> Result<Vec<AlertView>, AlertError> {
        let mut views: Vec<AlertView> = Vec::new();
        let mut at: BTreeMap<String, usize> = BTreeMap::new();
        for event in self.events()? {
            match event {
                Event::Opened { alert } => {
                    at.insert(alert.id.clone(), views.len());
                    views.push(AlertView { alert, resolved_ms: None, history: Vec::new() });
                }
                other => {
                    let Some(&i) = at.get(other.alert_id()) else { continue };
                    if let Event::Resolved { time_ms, .. } = &other {
                        views[i].resolved_ms = Some(*time_ms);
                    }
                    views[i].history.push(other);
                }
            }
        }
        Ok(views)
    }

    /// One alert by id (or a unique prefix of it).
    pub fn get(&self, id: &str) -> Result<Option<AlertView>, AlertError> {
        let mut found: Vec<AlertView> =
            self.read()?.into_iter().filter(|v| v.alert.id.starts_with(id)).collect();
        Ok(if found.len() == 1 { found.pop() } else { None })
    }

    /// The rules' saved state.
    pub fn state(&self) -> Result<BTreeMap<String, RuleState>, AlertError> {
        let path = self.dir.join("state.json");
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| AlertError::State { path: path.clone(), message: e.to_string() }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(e) => Err(AlertError::Io { path, source: e }),
        }
    }

    /// Replaces the saved state (atomically: see `cairn_fs`).
    pub fn save_state(&self, state: &BTreeMap<String, RuleState>) -> Result<(), AlertError> {
        self.create()?;
        let path = self.dir.join("state.json");
        let bytes = serde_json::to_vec_pretty(state)
            .map_err(|e| AlertError::Io { path: path.clone(), source: e.into() })?;
        cairn_fs::write(&path, &bytes).map_err(io(&path))
    }
}

/// The state key of a rule for one served version.
pub fn state_key(model: &str, version: i64, rule: &str) -> String {
    format!("{model}/{version}/{rule}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Status;

    fn alert(id: &str) -> Alert {
        Alert {
            id: id.into(),
            model: "churn".into(),
            version: 2,
            rule: "drifted".into(),
            metric: "drift_share".into(),
            op: ">=".into(),
            threshold: 0.5,
            value: 0.75,
            window_start_ms: 0,
            window_end_ms: 60_000,
            opened_ms: 60_000,
            requests: vec!["abc".into()],
            requests_total: 1,
            features: vec!["plan".into()],
            requests_command: "cairn monitor requests churn --alert a1".into(),
        }
    }

    #[test]
    fn alerts_fold_from_the_event_log_and_a_torn_line_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::new(dir.path());
        assert!(log.read().unwrap().is_empty());
        log.append(&[Event::Opened { alert: alert("a1") }, Event::Opened { alert: alert("b2") }]).unwrap();
        log.append(&[
            Event::Delivered {
                alert_id: "a1".into(),
                time_ms: 1,
                what: "opened".into(),
                url: "u".into(),
                attempts: 2,
            },
            Event::Resolved { alert_id: "a1".into(), time_ms: 120_000, value: Some(0.1) },
        ])
        .unwrap();
        let path = dir.path().join("alerts/events.jsonl");
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("{\"event\": \"resol");
        std::fs::write(&path, text).unwrap();
        let views = log.read().unwrap();
        assert_eq!(views.len(), 2);
        assert_eq!(views[0].resolved_ms, Some(120_000));
        assert_eq!(views[0].history.len(), 2);
        assert_eq!(views[1].resolved_ms, None);
        assert_eq!(log.get("b").unwrap().unwrap().alert.id, "b2");
        assert!(log.get("zz").unwrap().is_none());
    }

    #[test]
    fn state_round_trips_and_damage_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let log = AlertLog::new(dir.path());
        let mut state = BTreeMap::new();
        state.insert(
            state_key("churn", 2, "r"),
            RuleState {
                status: Status::Firing,
                since_ms: 5,
                last_held_ms: 9,
                alert_id: Some("a1".into()),
                value: Some(1.0),
            },
        );
        log.save_state(&state).unwrap();
        assert_eq!(log.state().unwrap(), state);
        std::fs::write(dir.path().join("alerts/state.json"), "{").unwrap();
        assert!(log.state().unwrap_err().to_string().contains("move it aside"));
        drop(log.lock().unwrap());
    }
}
