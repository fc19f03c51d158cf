//! Rules evaluated continuously over the served versions' profiles; alerts recorded in the
//! alert log ([`cairn_monitor::alerts`]) and delivered to webhooks with retries.
//!
//! [`Evaluator::evaluate`] is one pass: for every model `monitor.yaml` has rules for and every
//! version of it with profiles in the log, each rule's metric over its window, then the
//! rule's state machine ([`cairn_monitor::rules::RuleState::step`]). Live quality comes from
//! `feedback.jsonl`, whose labels carry the answers they label. Opened and resolved
//! alerts are appended to the alert log before anything is delivered, so a delivery that
//! fails (after its retries) is recorded as such and the alert is not lost. `cairn serve`
//! runs a pass every `evaluate_every` ([`run`]); `cairn alerts check` runs one.
//!
//! A webhook receives `POST` with a JSON body: `{"event": "opened"|"resolved", "text": "...",
//! "alert": {...}}` (`text` is a one-line summary, which Slack-style incoming webhooks show).
//! A delivery is retried with exponential backoff from 0.5 s on connection errors, timeouts,
//! 408, 429 and 5xx, up to the webhook's `attempts`; any other 4xx is final. Each outcome is
//! an event in the alert log; a notice with no outcome (a server stopped while retrying it)
//! is delivered by the next server that starts, or by `cairn alerts check`, if it is less than
//! an hour old ([`undelivered`]).

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cairn_monitor::alerts::{Alert, AlertError, AlertLog, Event, alert_id, state_key};
use cairn_monitor::drift::{DatasetDrift, DriftConfig, dataset_drift};
use cairn_monitor::profile::Profile;
use cairn_monitor::quality::{Quality, quality};
use cairn_monitor::rules::{Metric, MonitorConfig, Retrain, Rule, Transition, Webhook, Window, value};
use serde_json::{Value, json};

use crate::predlog::{self, Entry};

/// Finds a version's training-data profile (`None`: registered without one).
pub type References = Box<dyn Fn(&str, i64) -> Option<Value> + Send + Sync>;

pub struct Evaluator {
    pub log_dir: PathBuf,
    pub config: MonitorConfig,
    pub references: References,
}

/// What one pass changed.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Alerts that opened, with the rule's `retrain`, if it has one.
    pub opened: Vec<(Alert, Option<Retrain>)>,
    /// Alerts that resolved, with the value at resolution.
    pub resolved: Vec<(Alert, Option<f64>)>,
    /// Rules evaluated (one per rule and served version).
    pub evaluated: usize,
    /// What kept rules from a verdict (a version without a training-data profile).
    pub warnings: Vec<String>,
    /// Deliveries an earlier process recorded no outcome for ([`undelivered`]).
    pub undelivered: Vec<Notice>,
}

/// One alert to tell one webhook.
#[derive(Debug, Clone)]
pub struct Notice {
    /// `opened` or `resolved`.
    pub what: String,
    pub alert: Alert,
    pub value: Option<f64>,
    pub hook: Webhook,
}

/// How far back a starting server looks for deliveries that never finished.
pub const REDELIVER_WITHIN_MS: i64 = 3_600_000;

/// Alerts opened or resolved since `since_ms` that some webhook has no delivery outcome for
/// (delivered, or failed for good): a server stopped while it was still retrying them. The
/// next server delivers them.
pub fn undelivered(events: &[Event], hooks: &[Webhook], since_ms: i64) -> Vec<Notice> {
    let done: std::collections::HashSet<(&str, &str, &str)> = events
        .iter()
        .filter_map(|e| match e {
            Event::Delivered { alert_id, what, url, .. }
            | Event::DeliveryFailed { alert_id, what, url, .. } => {
                Some((alert_id.as_str(), what.as_str(), url.as_str()))
            }
            _ => None,
        })
        .collect();
    let mut alerts: HashMap<&str, &Alert> = HashMap::new();
    let mut out = Vec::new();
    for event in events {
        let (what, alert, value) = match event {
            Event::Opened { alert } => {
                alerts.insert(&alert.id, alert);
                if alert.opened_ms < since_ms {
                    continue;
                }
                ("opened", alert, None)
            }
            Event::Resolved { alert_id, time_ms, value } if *time_ms >= since_ms => {
                let Some(alert) = alerts.get(alert_id.as_str()) else { continue };
                ("resolved", *alert, *value)
            }
            _ => continue,
        };
        for hook in hooks {
            if !done.contains(&(alert.id.as_str(), what, hook.url.as_str())) {
                out.push(Notice { what: what.into(), alert: alert.clone(), value, hook: hook.clone() });
            }
        }
    }
    out
}

#[derive(Debug, thiserror::Error)]
pub enum EvaluateError {
    #[error(transparent)]
    Alerts(#[from] AlertError),
    #[error(transparent)]
    Log(#[from] predlog::LogError),
}

/// One window of one version, built once for all the rules that read it.
struct Built {
    profile: Profile,
    drift: Option<DatasetDrift>,
    quality: Option<Quality>,
    entries: Option<Vec<Entry>>,
}

/// The most requests named in an alert.
const SAMPLE: usize = 20;

impl Evaluator {
    /// Evaluates every rule once at `now_ms`, records what opened or resolved, and answers it.
    pub fn evaluate(&self, now_ms: i64) -> Result<Outcome, EvaluateError> {
        let log = AlertLog::new(&self.log_dir);
        let _lock = log.lock()?;
        let mut state = log.state()?;
        // The open alerts, read from the log only when one resolves.
        let mut open: Option<HashMap<String, Alert>> = None;
        let needs_labels =
            self.config.models.values().flat_map(|m| &m.rules).any(|r| r.metric.needs_labels());
        let labels = if needs_labels { predlog::labels(&self.log_dir)? } else { Vec::new() };
        let served = crate::profiles::versions(&self.log_dir);
        let mut outcome = Outcome::default();
        let mut events = Vec::new();
        for (model, monitor) in &self.config.models {
            let drift_config = monitor.drift.config();
            for (_, version) in served.iter().filter(|(m, _)| m == model) {
                let version = *version;
                let reference = monitor
                    .rules
                    .iter()
                    .any(|r| r.metric.needs_drift())
                    .then(|| (self.references)(model, version))
                    .flatten();
                if reference.is_none() && monitor.rules.iter().any(|r| r.metric.needs_drift()) {
                    outcome.warnings.push(format!(
                        "{model}@{version} has no readable training-data profile: its drift rules give no verdict (register with --training-data, or `cairn pull` the profile)"
                    ));
                }
                let mut windows: BTreeMap<i64, Built> = BTreeMap::new();
                for rule in &monitor.rules {
                    outcome.evaluated += 1;
                    let since = now_ms - rule.window;
                    let subject = Subject { model, version, reference: reference.as_ref() };
                    let built = windows
                        .entry(rule.window)
                        .or_insert_with(|| self.window(&subject, since, &drift_config));
                    if rule.metric.needs_labels() && built.quality.is_none() {
                        // The labels of answers given in the window, each with its answer.
                        let pairs: Vec<(Value, Value)> = labels
                            .iter()
                            .filter(|l| &l.model == model && l.version == version)
                            .filter(|l| l.predicted_ms >= since && l.predicted_ms <= now_ms)
                            .filter_map(|l| Some((l.predicted.clone()?, l.label.clone())))
                            .collect();
                        built.quality = quality(&pairs);
                    }
                    let v = value(
                        rule,
                        &Window {
                            profile: &built.profile,
                            drift: built.drift.as_ref(),
                            quality: built.quality.as_ref(),
                        },
                    );
                    let key = state_key(model, version, &rule.name);
                    let rule_state = state.entry(key).or_default();
                    match rule_state.step(rule, now_ms, v) {
                        Some(Transition::Open) => {
                            let alert = self.open_alert(&subject, rule, v, built, now_ms)?;
                            rule_state.alert_id = Some(alert.id.clone());
                            events.push(Event::Opened { alert: alert.clone() });
                            outcome.opened.push((alert, rule.retrain.clone()));
                        }
                        Some(Transition::Resolve) => {
                            let Some(id) = rule_state.alert_id.take() else { continue };
                            events.push(Event::Resolved { alert_id: id.clone(), time_ms: now_ms, value: v });
                            if open.is_none() {
                                open = Some(
                                    log.read()?
                                        .into_iter()
                                        .filter(|v| v.resolved_ms.is_none())
                                        .map(|v| (v.alert.id.clone(), v.alert))
                                        .collect(),
                                );
                            }
                            if let Some(alert) = open.as_ref().and_then(|o| o.get(&id)) {
                                outcome.resolved.push((alert.clone(), v));
                            }
                        }
                        None => {}
                    }
                }
            }
        }
        // Data first: the events, then the state that says they happened.
        log.append(&events)?;
        log.save_state(&state)?;
        Ok(outcome)
    }

    /// The merged profile of a version's requests since `since`, and its drift from the
    /// training data.
    fn window(&self, subject: &Subject, since: i64, drift_config: &DriftConfig) -> Built {
        let mut profile = Profile::default();
        for window in crate::profiles::read(&self.log_dir, subject.model, subject.version, since).values() {
            profile.merge(window);
        }
        let drift = subject.reference.map(|r| dataset_drift(r, &profile, drift_config));
        Built { profile, drift, quality: None, entries: None }
    }

    /// The alert a rule opens now, naming the requests behind it.
    fn open_alert(
        &self,
        subject: &Subject,
        rule: &Rule,
        value: Option<f64>,
        built: &mut Built,
        now_ms: i64,
    ) -> Result<Alert, EvaluateError> {
        let (model, version) = (subject.model, subject.version);
        let since = now_ms - rule.window;
        if built.entries.is_none() {
            built.entries = Some(window_entries(&self.log_dir, model, version, since, now_ms)?);
        }
        let entries = built.entries.as_deref().unwrap_or_default();
        let features = drifted_features(rule, built.drift.as_ref());
        let id = alert_id(now_ms);
        let behind = requests_behind(rule, &features, subject.reference, entries);
        Ok(Alert {
            id: id.clone(),
            model: model.to_owned(),
            version,
            rule: rule.name.clone(),
            metric: rule.metric.to_string(),
            op: rule.op.symbol().to_owned(),
            threshold: rule.threshold,
            value: value.unwrap_or(f64::NAN),
            window_start_ms: since - since.rem_euclid(crate::profiles::WINDOW_MS),
            window_end_ms: now_ms,
            opened_ms: now_ms,
            requests: behind.iter().take(SAMPLE).map(|e| e.trace_id.clone()).collect(),
            requests_total: behind.len(),
            features,
            requests_command: format!("cairn monitor requests {model} --alert {id}"),
        })
    }
}

/// The version a pass evaluates rules for, and its training data's profile.
struct Subject<'a> {
    model: &'a str,
    version: i64,
    reference: Option<&'a Value>,
}

/// A version's logged rows in `[since, until]`.
fn window_entries(
    dir: &std::path::Path,
    model: &str,
    version: i64,
    since: i64,
    until: i64,
) -> Result<Vec<Entry>, predlog::LogError> {
    let since = since - since.rem_euclid(crate::profiles::WINDOW_MS);
    Ok(predlog::scan(dir, since)?
        .into_iter()
        .filter(|e| e.model == model && e.version == version && e.time_ms <= until)
        .collect())
}

/// The input features a rule's alert is about: its own feature, or (for the dataset's drift)
/// every input feature that drifted.
pub fn drifted_features(rule: &Rule, drift: Option<&DatasetDrift>) -> Vec<String> {
    match &rule.metric {
        Metric::DriftShare | Metric::DriftedFeatures => drift
            .map(|d| {
                d.features
                    .iter()
                    .filter(|f| f.drifted && !f.feature.starts_with("output:"))
                    .map(|f| f.feature.clone())
                    .collect()
            })
            .unwrap_or_default(),
        metric => metric.feature().map(|f| vec![f.to_owned()]).unwrap_or_default(),
    }
}

/// The logged requests behind an alert of `rule`: for drift, those whose value of a drifted
/// feature lies outside what the training data had; for missing values and type errors,
/// those with such a cell; for errors, the failed ones; for latency, those over the
/// threshold; for anything else, every request in the window.
pub fn requests_behind<'a>(
    rule: &Rule,
    features: &[String],
    reference: Option<&Value>,
    entries: &'a [Entry],
) -> Vec<&'a Entry> {
    let cells = |e: &Entry, feature: &str| -> Vec<Value> {
        let inputs: Value = serde_json::from_str(&e.inputs).unwrap_or(Value::Null);
        let mut leaves = Vec::new();
        for row in inputs.get(feature).and_then(Value::as_array).into_iter().flatten() {
            crate::tensor::flatten(row, &mut leaves);
        }
        leaves.into_iter().cloned().collect()
    };
    let ok = entries.iter().filter(|e| e.status == 200);
    match &rule.metric {
        Metric::ErrorRate => entries.iter().filter(|e| e.status != 200).collect(),
        Metric::Latency(_) => {
            let limit = (rule.threshold * 1000.0) as i64;
            entries.iter().filter(|e| e.latency_us >= limit).collect()
        }
        Metric::MissingRate(_) | Metric::TypeErrorRate(_) => {
            let missing = matches!(rule.metric, Metric::MissingRate(_));
            ok.filter(|e| {
                let inputs: Value = serde_json::from_str(&e.inputs).unwrap_or(Value::Null);
                let names: Vec<String> = match rule.metric.feature() {
                    Some(f) => vec![f.to_owned()],
                    None => inputs.as_object().map(|m| m.keys().cloned().collect()).unwrap_or_default(),
                };
                names.iter().any(|n| {
                    cells(e, n).iter().any(|v| {
                        if missing {
                            v.is_null() || v.as_f64().is_some_and(f64::is_nan)
                        } else {
                            let kind = reference
                                .and_then(|r| cairn_monitor::reference_column(r, n))
                                .and_then(|c| c.get("kind"))
                                .and_then(Value::as_str);
                            match kind {
                                Some("numeric") => v.is_string(),
                                Some(_) => v.is_number(),
                                None => false,
                            }
                        }
                    })
                })
            })
            .collect()
        }
        _ if !features.is_empty() && reference.is_some() => {
            let Some(reference) = reference else { return Vec::new() };
            let seen: Vec<(&str, cairn_monitor::Seen)> = features
                .iter()
                .filter_map(|f| {
                    Some((
                        f.as_str(),
                        cairn_monitor::Seen::new(cairn_monitor::reference_column(reference, f)?),
                    ))
                })
                .collect();
            ok.filter(|e| seen.iter().any(|(f, s)| cells(e, f).iter().any(|v| s.outside(v)))).collect()
        }
        _ => ok.collect(),
    }
}

/// The body POSTed to webhooks.
pub fn payload(what: &str, alert: &Alert, resolved_value: Option<f64>) -> Value {
    let text = match what {
        "opened" => format!("ALERT {} (details: {})", alert.summary(), alert.requests_command),
        _ => format!(
            "RESOLVED {} — now {}",
            alert.summary(),
            resolved_value.map_or("no data".to_owned(), |v| format!("{v:.4}"))
        ),
    };
    json!({"event": what, "text": text, "alert": alert, "resolved_value": resolved_value})
}

/// POSTs `body` to the webhook, retrying transient failures; answers the attempts made, or
/// the attempts and the last error.
pub async fn deliver(client: &reqwest::Client, hook: &Webhook, body: &Value) -> Result<u32, (u32, String)> {
    let bytes = serde_json::to_vec(body).map_err(|e| (0, e.to_string()))?;
    let attempts = hook.attempts.max(1);
    let mut last = String::new();
    for attempt in 1..=attempts {
        let mut request = client
            .post(&hook.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(bytes.clone());
        for (k, v) in &hook.headers {
            request = request.header(k.as_str(), v.as_str());
        }
        match request.send().await {
            Ok(response) if response.status().is_success() => return Ok(attempt),
            Ok(response) => {
                let status = response.status();
                last = match response.headers().get(reqwest::header::LOCATION) {
                    Some(to) if status.is_redirection() => format!(
                        "{} redirected to {} on another host, which webhooks do not follow",
                        hook.url,
                        to.to_str().unwrap_or("?")
                    ),
                    _ => format!("{} answered {status}", hook.url),
                };
                let transient = status.is_server_error() || status.as_u16() == 408 || status.as_u16() == 429;
                if !transient {
                    return Err((attempt, format!("{last}; check the webhook's URL and headers")));
                }
            }
            Err(e) => last = format!("cannot reach {}: {e}", hook.url),
        }
        if attempt < attempts {
            tokio::time::sleep(Duration::from_millis(500 << (attempt - 1).min(6))).await;
        }
    }
    Err((attempts, last))
}

/// The HTTP client webhooks are delivered with (10 s per attempt). It follows a redirect
/// only to the same scheme, host and port (at most 5): a webhook cannot be bounced to an
/// internal address or another service. A redirect elsewhere is answered as the 3xx it is,
/// which fails the delivery.
pub fn client() -> Result<reqwest::Client, String> {
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        let Some(first) = attempt.previous().first() else { return attempt.stop() };
        let same = |a: &reqwest::Url, b: &reqwest::Url| {
            a.scheme() == b.scheme()
                && a.host_str() == b.host_str()
                && a.port_or_known_default() == b.port_or_known_default()
        };
        if attempt.previous().len() > 5 || !same(first, attempt.url()) {
            attempt.stop()
        } else {
            attempt.follow()
        }
    });
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .redirect(policy)
        .build()
        .map_err(|e| format!("cannot make the webhook client: {e}"))
}

/// Runs a rule's `retrain` for an alert that opened; answers the event recording it.
pub type Action = Arc<dyn Fn(&Alert, &Retrain) -> Event + Send + Sync>;

/// Delivers what a pass changed to every webhook and runs retrain actions; records each
/// delivery and action in the alert log.
pub async fn dispatch(
    evaluator: &Evaluator,
    client: &reqwest::Client,
    outcome: Outcome,
    action: Option<&Action>,
) -> Vec<Event> {
    let mut jobs = tokio::task::JoinSet::new();
    let mut notices: Vec<Notice> = Vec::new();
    let hooks = &evaluator.config.webhooks;
    for (alert, retrain) in outcome.opened {
        if let (Some(action), Some(retrain)) = (action, retrain) {
            let (action, alert) = (action.clone(), alert.clone());
            jobs.spawn(async move {
                tokio::task::spawn_blocking(move || action(&alert, &retrain)).await.unwrap_or_else(|e| {
                    Event::Action {
                        alert_id: String::new(),
                        time_ms: predlog::now_ms(),
                        command: "retrain".into(),
                        ok: false,
                        detail: e.to_string(),
                    }
                })
            });
        }
        notices.extend(hooks.iter().map(|h| Notice {
            what: "opened".into(),
            alert: alert.clone(),
            value: None,
            hook: h.clone(),
        }));
    }
    for (alert, value) in outcome.resolved {
        notices.extend(hooks.iter().map(|h| Notice {
            what: "resolved".into(),
            alert: alert.clone(),
            value,
            hook: h.clone(),
        }));
    }
    notices.extend(outcome.undelivered);
    for notice in notices {
        let client = client.clone();
        jobs.spawn(async move {
            let Notice { what, alert, value, hook } = notice;
            let body = payload(&what, &alert, value);
            let (time_ms, alert_id) = (predlog::now_ms(), alert.id);
            match deliver(&client, &hook, &body).await {
                Ok(attempts) => Event::Delivered { alert_id, time_ms, what, url: hook.url, attempts },
                Err((attempts, error)) => {
                    Event::DeliveryFailed { alert_id, time_ms, what, url: hook.url, attempts, error }
                }
            }
        });
    }
    let mut events = Vec::new();
    while let Some(done) = jobs.join_next().await {
        if let Ok(event) = done {
            events.push(event);
        }
    }
    let _ = AlertLog::new(&evaluator.log_dir).append(&events);
    events
}

/// Evaluates every `evaluate_every` until `stop` turns true, dispatching each pass's alerts.
/// Alerts that open or resolve, failed deliveries and a pass that fails (the loop goes on) are
/// told to `notify`, one line each.
pub async fn run(
    evaluator: Arc<Evaluator>,
    action: Option<Action>,
    mut stop: tokio::sync::watch::Receiver<bool>,
    notify: Arc<dyn Fn(String) + Send + Sync>,
) {
    let on_error = notify;
    let client = match client() {
        Ok(c) => c,
        Err(e) => {
            on_error(e);
            return;
        }
    };
    let every = Duration::from_millis(evaluator.config.evaluate_every.max(100) as u64);
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Deliveries may take their retries; evaluation goes on beside them.
    let mut deliveries = tokio::task::JoinSet::new();
    // Each warning is told once.
    let mut warned = std::collections::HashSet::new();
    // What a previous server did not get to deliver.
    match AlertLog::new(&evaluator.log_dir).events() {
        Ok(events) => {
            let pending =
                undelivered(&events, &evaluator.config.webhooks, predlog::now_ms() - REDELIVER_WITHIN_MS);
            if !pending.is_empty() {
                on_error(format!("delivering {} alert notice(s) a previous server did not", pending.len()));
                let (e, client, on_error) = (evaluator.clone(), client.clone(), on_error.clone());
                deliveries.spawn(async move {
                    let outcome = Outcome { undelivered: pending, ..Outcome::default() };
                    for event in dispatch(&e, &client, outcome, None).await {
                        if let Event::DeliveryFailed { url, error, alert_id, .. } = event {
                            on_error(format!("alert {alert_id} not delivered to {url}: {error}"));
                        }
                    }
                });
            }
        }
        Err(e) => on_error(format!("cannot read the alert log: {e}")),
    }
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => break,
        }
        while deliveries.try_join_next().is_some() {}
        let e = evaluator.clone();
        match tokio::task::spawn_blocking(move || e.evaluate(predlog::now_ms())).await {
            Ok(Ok(outcome)) => {
                for warning in &outcome.warnings {
                    if warned.insert(warning.clone()) {
                        on_error(format!("warning: {warning}"));
                    }
                }
                if outcome.opened.is_empty() && outcome.resolved.is_empty() {
                    continue;
                }
                for (alert, _) in &outcome.opened {
                    on_error(format!("alert {} opened: {}", alert.id, alert.summary()));
                }
                for (alert, _) in &outcome.resolved {
                    on_error(format!("alert {} resolved: {}", alert.id, alert.summary()));
                }
                let (e, client, action, on_error) =
                    (evaluator.clone(), client.clone(), action.clone(), on_error.clone());
                deliveries.spawn(async move {
                    for event in dispatch(&e, &client, outcome, action.as_ref()).await {
                        match event {
                            Event::DeliveryFailed { url, error, alert_id, .. } => {
                                on_error(format!("alert {alert_id} not delivered to {url}: {error}"))
                            }
                            Event::Action { alert_id, command, ok, detail, .. } => on_error(format!(
                                "alert {alert_id}: `{command}` {}: {detail}",
                                if ok { "done" } else { "failed" }
                            )),
                            _ => {}
                        }
                    }
                });
            }
            Ok(Err(err)) => on_error(format!("evaluating monitor.yaml's rules failed: {err}")),
            Err(err) => on_error(format!("evaluating monitor.yaml's rules failed: {err}")),
        }
    }
    // At shutdown, deliveries in flight get a few seconds to finish.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while deliveries.join_next().await.is_some() {}
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_monitor::profile::{Cell, Kind};

    /// A minute profile of `n` requests, `failed` of them failed.
    fn minute(dir: &std::path::Path, start: i64, n: u64, failed: u64) {
        let mut p =
            Profile { start_ms: start, end_ms: start + crate::profiles::WINDOW_MS, ..Profile::default() };
        for i in 0..n {
            p.traffic.add(i < failed, 1.0);
        }
        p.rows = n - failed;
        let rows = p.rows;
        let f = p.feature("age", Kind::Numeric);
        for i in 0..rows {
            f.add(Cell::Num(i as f64));
        }
        let folder = dir.join("profiles/churn/3");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{start}-1.json")), serde_json::to_vec(&p).unwrap()).unwrap();
    }

    fn evaluator(dir: &std::path::Path, yaml: &str) -> Evaluator {
        Evaluator {
            log_dir: dir.to_path_buf(),
            config: MonitorConfig::parse(yaml, "monitor.yaml").unwrap(),
            references: Box::new(|_, _| None),
        }
    }

    const RULES: &str = "models:\n  churn:\n    rules:\n      - {name: errors, metric: error_rate, op: '>', threshold: 0.1, window: 1m, cooldown: 2m}\n      - {name: drift, metric: drift_share, op: '>=', threshold: 0.5, window: 1m}\n";

    #[test]
    fn alerts_survive_a_restart_and_resolve_once() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_000 * crate::profiles::WINDOW_MS;
        minute(dir.path(), t0, 100, 30);
        let first = evaluator(dir.path(), RULES).evaluate(t0 + 10_000).unwrap();
        assert_eq!(first.evaluated, 2);
        assert_eq!(first.opened.len(), 1);
        let alert = &first.opened[0].0;
        assert_eq!((alert.rule.as_str(), alert.version, alert.value), ("errors", 3, 0.3));
        assert_eq!(alert.requests_command, format!("cairn monitor requests churn --alert {}", alert.id));
        // No reference: the drift rule can't say, and says why.
        assert!(first.warnings.iter().any(|w| w.contains("churn@3 has no readable training-data profile")));
        // A new process (a restart) finds the alert open and does not open it again.
        let again = evaluator(dir.path(), RULES).evaluate(t0 + 20_000).unwrap();
        assert!(again.opened.is_empty() && again.resolved.is_empty());
        // Good traffic brings the rate down (30 of 1,100): it resolves only after the cooldown.
        minute(dir.path(), t0 + crate::profiles::WINDOW_MS, 1000, 0);
        let e = evaluator(dir.path(), RULES);
        assert!(e.evaluate(t0 + 70_000).unwrap().resolved.is_empty(), "within the cooldown");
        let resolved = e.evaluate(t0 + 150_000).unwrap();
        assert_eq!(resolved.resolved.len(), 1);
        assert_eq!(resolved.resolved[0].0.id, alert.id);
        let views = AlertLog::new(dir.path()).read().unwrap();
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].resolved_ms, Some(t0 + 150_000));
        assert!(e.evaluate(t0 + 160_000).unwrap().resolved.is_empty(), "resolved once");
    }

    #[tokio::test]
    async fn deliveries_follow_redirects_on_their_host_only() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0)).await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let elsewhere = Arc::new(AtomicUsize::new(0));
        let hits = elsewhere.clone();
        let redirect = |to: String| {
            axum::response::Response::builder()
                .status(307)
                .header("location", to)
                .body(axum::body::Body::empty())
                .unwrap()
        };
        let app = axum::Router::new()
            .route("/same", axum::routing::post(move || async move { redirect("/ok".into()) }))
            .route(
                "/away",
                axum::routing::post(
                    move || async move { redirect(format!("http://localhost:{port}/elsewhere")) },
                ),
            )
            .route("/ok", axum::routing::post(|| async { "ok" }))
            .route(
                "/elsewhere",
                axum::routing::post(move || {
                    hits.fetch_add(1, Ordering::Relaxed);
                    async { "stolen" }
                }),
            );
        let server = tokio::spawn(async move { axum::serve(listener, app).await });
        let client = client().unwrap();
        let hook = |path: &str| Webhook {
            url: format!("http://127.0.0.1:{port}{path}"),
            headers: Default::default(),
            attempts: 1,
        };
        let body = json!({"event": "opened"});
        assert_eq!(deliver(&client, &hook("/same"), &body).await, Ok(1));
        let (_, error) = deliver(&client, &hook("/away"), &body).await.unwrap_err();
        assert!(error.contains("another host"), "{error}");
        assert_eq!(elsewhere.load(Ordering::Relaxed), 0, "the redirect to another host was followed");
        server.abort();
    }

    #[test]
    fn deliveries_without_an_outcome_are_found_for_the_next_server() {
        let dir = tempfile::tempdir().unwrap();
        let t0 = 1_000 * crate::profiles::WINDOW_MS;
        minute(dir.path(), t0, 100, 30);
        let opened = evaluator(dir.path(), RULES).evaluate(t0 + 10_000).unwrap().opened;
        let id = opened[0].0.id.clone();
        let hook = |url: &str| Webhook { url: url.into(), headers: Default::default(), attempts: 1 };
        let hooks = [hook("http://a/"), hook("http://b/")];
        let log = AlertLog::new(dir.path());
        log.append(&[
            Event::Delivered {
                alert_id: id.clone(),
                time_ms: t0,
                what: "opened".into(),
                url: "http://a/".into(),
                attempts: 1,
            },
            Event::Resolved { alert_id: id.clone(), time_ms: t0 + 20_000, value: Some(0.0) },
        ])
        .unwrap();
        let pending = undelivered(&log.events().unwrap(), &hooks, 0);
        let got: Vec<(&str, &str)> = pending.iter().map(|n| (n.what.as_str(), n.hook.url.as_str())).collect();
        assert_eq!(got, [("opened", "http://b/"), ("resolved", "http://a/"), ("resolved", "http://b/")]);
        assert!(undelivered(&log.events().unwrap(), &hooks, t0 + 30_000).is_empty(), "too old to send now");
    }

    #[test]
    fn a_damaged_state_file_is_an_error_not_a_silent_reset() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("alerts")).unwrap();
        std::fs::write(dir.path().join("alerts/state.json"), "{not json").unwrap();
        let err = evaluator(dir.path(), RULES).evaluate(0).unwrap_err().to_string();
        assert!(err.contains("state.json") && err.contains("move it aside"), "{err}");
    }
}
