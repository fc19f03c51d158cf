//! Rules over a served model's metrics, and when they open and resolve alerts.
//!
//! Rules live in `monitor.yaml` at the root of the repository (in Git, reviewed like code):
//!
//! ```yaml
//! evaluate_every: 30s          # how often `cairn serve` evaluates every rule (default 30s)
//! webhooks:                    # every alert that opens or resolves is POSTed here (JSON)
//!   - url: https://hooks.example.com/ml-alerts
//!     headers: {Authorization: "Bearer ..."}
//!     attempts: 5              # tries, with exponential backoff from 0.5 s (default 5)
//! webhook_hosts: [hooks.example.com, "*.slack.com"]   # optional allow-list of webhook hosts
//! models:
//!   churn:
//!     drift: {share: 0.5, distance: 0.1, p_value: 0.05, numeric: psi}   # overrides
//!     rules:
//!       - name: inputs drifted
//!         metric: drift_share   # see below
//!         op: ">="              # >, >=, <, <=
//!         threshold: 0.5
//!         window: 5m            # the metric is computed over the last 5 minutes
//!         for: 1m               # it must hold this long before the alert opens (default 0s)
//!         cooldown: 2m          # and not hold for this long before it resolves (default 2m)
//!         min_rows: 50          # fewer requests (labels, for quality metrics): no verdict
//!         retrain:              # optional: when it opens, run these stages and register
//!           stages: [train]
//!           model_path: models/churn.onnx
//!           training_data: data/train.csv
//! ```
//!
//! Metrics ([`Metric`]), each over the rule's window of one served version:
//!
//! | metric | value |
//! |---|---|
//! | `requests`, `rows` | how many requests (failed ones included), rows predicted |
//! | `error_rate` | failed requests / requests |
//! | `latency_p50`, `latency_p90`, `latency_p95`, `latency_p99` | milliseconds, in the server |
//! | `drift_share`, `drifted_features` | share and number of drifted features ([`crate::drift`]) |
//! | `drift.FEATURE` | the feature's drift score (a p-value or a distance, per its method) |
//! | `drifted.FEATURE` | 1 when the feature drifted, else 0 |
//! | `missing_rate`, `missing_rate.FEATURE` | missing cells / cells, over the inputs or one feature |
//! | `type_error_rate`, `type_error_rate.FEATURE` | cells of the wrong type / cells |
//! | `mean.FEATURE` | the mean of a numeric feature, e.g. `mean.output:output_probability[1]` |
//! | `accuracy`, `precision`, `recall`, `mae`, `rmse` | live quality from `POST /feedback` labels |
//!
//! Windows are made of the server's per-minute profiles, so a window covers whole minutes:
//! `5m` evaluated at 10:05:30 reads the minutes 10:00 to 10:05.
//!
//! An alert doesn't flap ([`RuleState::step`]): it opens once the condition has held for
//! `for`, stays open while it keeps holding, and resolves only after it has not held for
//! `cooldown`. A window with too few rows (or no data) counts as not holding.

use std::collections::BTreeMap;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};

use crate::drift::{DatasetDrift, DriftConfig, Method};
use crate::profile::{Kind, Profile};
use crate::quality::Quality;

/// The file rules are read from, at the repository's root.
pub const CONFIG_FILE: &str = "monitor.yaml";

/// A duration in Cairn's grammar (see `cairn_units`) → milliseconds.
pub fn parse_duration(text: &str) -> Result<i64, String> {
    text.parse::<cairn_units::Duration>().map(cairn_units::Duration::as_millis_i64)
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
    cairn_units::Duration::deserialize(d).map(cairn_units::Duration::as_millis_i64)
}

fn default_every() -> i64 {
    30_000
}
fn default_window() -> i64 {
    300_000
}
fn default_cooldown() -> i64 {
    120_000
}
fn default_min_rows() -> u64 {
    1
}
fn default_attempts() -> u32 {
    5
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorConfig {
    #[serde(default = "default_every", deserialize_with = "duration")]
    pub evaluate_every: i64,
    #[serde(default)]
    pub webhooks: Vec<Webhook>,
    /// The only hosts webhooks may be delivered to (`*.example.com` matches its subdomains);
    /// absent: any host. Deliveries never follow a redirect to another host either way.
    #[serde(default)]
    pub webhook_hosts: Option<Vec<String>>,
    #[serde(default)]
    pub models: BTreeMap<String, ModelMonitor>,
}

/// Whether `host` is one of `allowed` (exactly, ignoring case, or below a `*.` pattern).
pub fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let host = host.to_ascii_lowercase();
    allowed.iter().any(|pattern| {
        let pattern = pattern.to_ascii_lowercase();
        match pattern.strip_prefix("*.") {
            Some(domain) => host.ends_with(&format!(".{domain}")),
            None => host == pattern,
        }
    })
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    #[serde(default = "default_attempts")]
    pub attempts: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelMonitor {
    #[serde(default)]
    pub drift: DriftSettings,
    #[serde(default)]
    pub rules: Vec<Rule>,
}

/// Per-model overrides of [`DriftConfig`]'s defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DriftSettings {
    pub small_reference: Option<u64>,
    pub p_value: Option<f64>,
    pub distance: Option<f64>,
    pub share: Option<f64>,
    pub numeric: Option<Method>,
    pub categorical: Option<Method>,
    pub bins: Option<usize>,
}

impl DriftSettings {
    pub fn config(&self) -> DriftConfig {
        let d = DriftConfig::default();
        DriftConfig {
            small_reference: self.small_reference.unwrap_or(d.small_reference),
            p_value: self.p_value.unwrap_or(d.p_value),
            distance: self.distance.unwrap_or(d.distance),
            share: self.share.unwrap_or(d.share),
            numeric: self.numeric.or(d.numeric),
            categorical: self.categorical.or(d.categorical),
            bins: self.bins.unwrap_or(d.bins),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    #[serde(rename = ">")]
    Above,
    #[serde(rename = ">=")]
    AtLeast,
    #[serde(rename = "<")]
    Below,
    #[serde(rename = "<=")]
    AtMost,
}

impl Op {
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Self::Above => value > threshold,
            Self::AtLeast => value >= threshold,
            Self::Below => value < threshold,
            Self::AtMost => value <= threshold,
        }
    }

    /// The operator written as `>`, `>=`, `<` or `<=`.
    pub fn parse(symbol: &str) -> Option<Self> {
        [Self::Above, Self::AtLeast, Self::Below, Self::AtMost].into_iter().find(|op| op.symbol() == symbol)
    }

    pub fn symbol(self) -> &'static str {
        match self {
            Self::Above => ">",
            Self::AtLeast => ">=",
            Self::Below => "<",
            Self::AtMost => "<=",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub name: String,
    pub metric: Metric,
    pub op: Op,
    pub threshold: f64,
    #[serde(default = "default_window", deserialize_with = "duration")]
    pub window: i64,
    #[serde(rename = "for", default, deserialize_with = "duration")]
    pub hold: i64,
    #[serde(default = "default_cooldown", deserialize_with = "duration")]
    pub cooldown: i64,
    #[serde(default = "default_min_rows")]
    pub min_rows: u64,
    #[serde(default)]
    pub retrain: Option<Retrain>,
}

/// What to do when the rule's alert opens: run pipeline stages, then register the model
/// file they wrote as a new version (a candidate: moving an alias still needs the policy's
/// approvals).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retrain {
    #[serde(default)]
    pub stages: Vec<String>,
    pub model_path: Option<String>,
    /// Registered with the new version as its training-data profile.
    pub training_data: Option<String>,
}

/// A metric a rule reads; see the module docs for the names.
#[derive(Debug, Clone, PartialEq)]
pub enum Metric {
    Requests,
    Rows,
    ErrorRate,
    /// A latency quantile, 0..=1.
    Latency(f64),
    DriftShare,
    DriftedFeatures,
    Drift(String),
    Drifted(String),
    MissingRate(Option<String>),
    TypeErrorRate(Option<String>),
    Mean(String),
    /// `accuracy`, `precision`, `recall`, `mae` or `rmse`.
    Quality(String),
}

impl FromStr for Metric {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (head, feature) = match text.split_once('.') {
            Some((h, f)) if !f.is_empty() => (h, Some(f.to_owned())),
            Some(_) => return Err(format!("metric `{text}` names no feature after the dot")),
            None => (text, None),
        };
        let needs =
            |f: Option<String>| f.ok_or_else(|| format!("metric `{head}` needs a feature: `{head}.FEATURE`"));
        let none = |m: Metric| match &feature {
            None => Ok(m),
            Some(_) => Err(format!("metric `{head}` takes no feature (`{text}`)")),
        };
        match head {
            "requests" => none(Self::Requests),
            "rows" => none(Self::Rows),
            "error_rate" => none(Self::ErrorRate),
            "latency_p50" => none(Self::Latency(0.5)),
            "latency_p90" => none(Self::Latency(0.9)),
            "latency_p95" => none(Self::Latency(0.95)),
            "latency_p99" => none(Self::Latency(0.99)),
            "drift_share" => none(Self::DriftShare),
            "drifted_features" => none(Self::DriftedFeatures),
            "drift" => Ok(Self::Drift(needs(feature)?)),
            "drifted" => Ok(Self::Drifted(needs(feature)?)),
            "missing_rate" => Ok(Self::MissingRate(feature)),
            "type_error_rate" => Ok(Self::TypeErrorRate(feature)),
            "mean" => Ok(Self::Mean(needs(feature)?)),
            "accuracy" | "precision" | "recall" | "mae" | "rmse" => none(Self::Quality(head.to_owned())),
            _ => Err(format!(
                "unknown metric `{text}`: use requests, rows, error_rate, latency_p50/p90/p95/p99, drift_share, drifted_features, drift.FEATURE, drifted.FEATURE, missing_rate[.FEATURE], type_error_rate[.FEATURE], mean.FEATURE, accuracy, precision, recall, mae or rmse"
            )),
        }
    }
}

impl<'de> Deserialize<'de> for Metric {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?.parse().map_err(serde::de::Error::custom)
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Requests => f.write_str("requests"),
            Self::Rows => f.write_str("rows"),
            Self::ErrorRate => f.write_str("error_rate"),
            Self::Latency(q) => write!(f, "latency_p{}", (q * 100.0).round()),
            Self::DriftShare => f.write_str("drift_share"),
            Self::DriftedFeatures => f.write_str("drifted_features"),
            Self::Drift(x) => write!(f, "drift.{x}"),
            Self::Drifted(x) => write!(f, "drifted.{x}"),
            Self::MissingRate(None) => f.write_str("missing_rate"),
            Self::MissingRate(Some(x)) => write!(f, "missing_rate.{x}"),
            Self::TypeErrorRate(None) => f.write_str("type_error_rate"),
            Self::TypeErrorRate(Some(x)) => write!(f, "type_error_rate.{x}"),
            Self::Mean(x) => write!(f, "mean.{x}"),
            Self::Quality(x) => f.write_str(x),
        }
    }
}

impl Metric {
    pub fn needs_drift(&self) -> bool {
        matches!(self, Self::DriftShare | Self::DriftedFeatures | Self::Drift(_) | Self::Drifted(_))
    }

    pub fn needs_labels(&self) -> bool {
        matches!(self, Self::Quality(_))
    }

    /// The feature the metric is about, if one.
    pub fn feature(&self) -> Option<&str> {
        match self {
            Self::Drift(x) | Self::Drifted(x) | Self::Mean(x) => Some(x),
            Self::MissingRate(x) | Self::TypeErrorRate(x) => x.as_deref(),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{path}: {message}")]
    Syntax { path: String, message: String },
    #[error("{path}: model `{model}`, rule `{rule}`: {message}")]
    Rule { path: String, model: String, rule: String, message: String },
}

impl MonitorConfig {
    /// Parses `monitor.yaml`'s text; `path` names it in errors.
    pub fn parse(text: &str, path: &str) -> Result<Self, ConfigError> {
        let config: MonitorConfig = serde_saphyr::from_str(text)
            .map_err(|e| ConfigError::Syntax { path: path.to_owned(), message: e.to_string() })?;
        if config.evaluate_every < 100 {
            return Err(ConfigError::Syntax {
                path: path.to_owned(),
                message: "evaluate_every must be at least 100ms".into(),
            });
        }
        for hook in &config.webhooks {
            let fail = |message: String| ConfigError::Syntax {
                path: path.to_owned(),
                message: format!("webhook `{}`: {message}", hook.url),
            };
            let url = url::Url::parse(&hook.url).map_err(|e| fail(format!("not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(fail("webhooks are http:// or https:// URLs".into()));
            }
            let host = url.host_str().ok_or_else(|| fail("the URL names no host".into()))?;
            if let Some(allowed) = &config.webhook_hosts
                && !host_allowed(host, allowed)
            {
                return Err(fail(format!(
                    "host `{host}` is not in webhook_hosts ({}); add it there if it is meant to get alerts",
                    allowed.join(", ")
                )));
            }
        }
        for (model, monitor) in &config.models {
            let mut names = std::collections::BTreeSet::new();
            for rule in &monitor.rules {
                let fail = |message: String| ConfigError::Rule {
                    path: path.to_owned(),
                    model: model.clone(),
                    rule: rule.name.clone(),
                    message,
                };
                if rule.name.trim().is_empty() {
                    return Err(fail("give the rule a name".into()));
                }
                if !names.insert(rule.name.as_str()) {
                    return Err(fail("two rules of this model have this name".into()));
                }
                if rule.window < 60_000 {
                    return Err(fail(
                        "window must be at least 1m (windows are made of whole minutes)".into(),
                    ));
                }
                if !rule.threshold.is_finite() {
                    return Err(fail("threshold must be a finite number".into()));
                }
                if let Some(r) = &rule.retrain
                    && r.stages.is_empty()
                    && r.model_path.is_none()
                {
                    return Err(fail("retrain needs stages, a model_path, or both".into()));
                }
            }
        }
        Ok(config)
    }
}

/// What a window holds for the rules: its merged profile, its drift (when a rule needs it
/// and the version has a reference), and its live quality (when labels arrived).
pub struct Window<'a> {
    pub profile: &'a Profile,
    pub drift: Option<&'a DatasetDrift>,
    pub quality: Option<&'a Quality>,
}

/// Inputs only: outputs are profiled as `output:NAME`.
fn is_input(name: &str) -> bool {
    !name.starts_with("output:")
}

/// The metric's value over the window; `None` when the window can't say (too few rows or
/// labels, no reference to measure drift against, an unknown feature).
pub fn value(rule: &Rule, window: &Window) -> Option<f64> {
    let profile = window.profile;
    if rule.metric.needs_labels() {
        let quality = window.quality?;
        if (quality.labelled as u64) < rule.min_rows {
            return None;
        }
        return quality.metric(&rule.metric.to_string());
    }
    if profile.traffic.requests.max(profile.rows) < rule.min_rows {
        return None;
    }
    let rate = |part: u64, whole: u64| (whole > 0).then(|| part as f64 / whole as f64);
    let cells = |f: &dyn Fn(&crate::profile::Feature) -> u64, feature: &Option<String>| match feature {
        Some(name) => profile.features.get(name).and_then(|x| rate(f(x), x.count)),
        None => {
            let inputs = profile.features.iter().filter(|(n, _)| is_input(n));
            let (part, whole) = inputs.fold((0, 0), |(p, w), (_, x)| (p + f(x), w + x.count));
            rate(part, whole)
        }
    };
    let feature_drift =
        |name: &str| window.drift?.features.iter().find(|f| f.feature == name && f.skipped.is_none());
    match &rule.metric {
        Metric::Requests => Some(profile.traffic.requests as f64),
        Metric::Rows => Some(profile.rows as f64),
        Metric::ErrorRate => rate(profile.traffic.failed, profile.traffic.requests),
        Metric::Latency(q) => profile.traffic.latency_quantile(*q),
        Metric::DriftShare => window.drift.map(|d| d.share),
        Metric::DriftedFeatures => window.drift.map(|d| d.drifted_features as f64),
        Metric::Drift(name) => feature_drift(name).map(|f| f.score),
        Metric::Drifted(name) => feature_drift(name).map(|f| if f.drifted { 1.0 } else { 0.0 }),
        Metric::MissingRate(feature) => cells(&|f| f.missing, feature),
        Metric::TypeErrorRate(feature) => cells(&|f| f.type_errors, feature),
        Metric::Mean(name) => {
            let f = profile.features.get(name)?;
            (f.kind == Kind::Numeric && f.numeric.count > 0).then_some(f.numeric.mean)
        }
        Metric::Quality(_) => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// The condition does not hold.
    #[default]
    Ok,
    /// It holds, not yet for the rule's `for`.
    Pending,
    /// An alert is open.
    Firing,
}

/// A rule's state for one served version, kept between evaluations (and across restarts).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleState {
    pub status: Status,
    /// When it became pending, or when the alert opened.
    pub since_ms: i64,
    /// The last evaluation at which the condition held.
    pub last_held_ms: i64,
    /// The open alert.
    pub alert_id: Option<String>,
    /// The value at the last evaluation.
    pub value: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Open,
    Resolve,
}

impl RuleState {
    /// Takes one evaluation's value at `now_ms`; answers whether an alert opens or resolves.
    pub fn step(&mut self, rule: &Rule, now_ms: i64, value: Option<f64>) -> Option<Transition> {
        self.value = value;
        let holds = value.is_some_and(|v| rule.op.holds(v, rule.threshold));
        if holds {
            self.last_held_ms = now_ms;
        }
        match (self.status, holds) {
            (Status::Ok, true) => {
                self.status = Status::Pending;
                self.since_ms = now_ms;
                self.open_if_held(rule, now_ms)
            }
            (Status::Pending, true) => self.open_if_held(rule, now_ms),
            (Status::Pending, false) => {
                self.status = Status::Ok;
                None
            }
            (Status::Firing, false) if now_ms - self.last_held_ms >= rule.cooldown => {
                self.status = Status::Ok;
                self.since_ms = now_ms;
                Some(Transition::Resolve)
            }
            (Status::Firing, _) | (Status::Ok, false) => None,
        }
    }

    fn open_if_held(&mut self, rule: &Rule, now_ms: i64) -> Option<Transition> {
        if now_ms - self.since_ms >= rule.hold {
            self.status = Status::Firing;
            self.since_ms = now_ms;
            Some(Transition::Open)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = r#"
evaluate_every: 5s
webhooks:
  - url: http://127.0.0.1:9/hook
models:
  churn:
    drift: {share: 0.4, numeric: psi}
    rules:
      - name: inputs drifted
        metric: drift_share
        op: ">="
        threshold: 0.5
        window: 5m
        for: 1m
        cooldown: 2m
        min_rows: 10
      - name: plan drifted
        metric: drifted.plan
        op: ">="
        threshold: 1
      - name: slow
        metric: latency_p99
        op: ">"
        threshold: 50
        retrain: {stages: [train], model_path: models/churn.onnx}
"#;

    #[test]
    fn webhooks_must_go_to_allowed_hosts() {
        let with = |hosts: &str, url: &str| {
            MonitorConfig::parse(&format!("{hosts}webhooks:\n  - url: {url}\n"), "monitor.yaml")
        };
        assert!(with("", "https://anywhere.example/x").is_ok());
        let allow = "webhook_hosts: [hooks.example.com, \"*.slack.com\"]\n";
        assert!(with(allow, "https://hooks.example.com/a").is_ok());
        assert!(with(allow, "https://HOOKS.example.com/a").is_ok());
        assert!(with(allow, "https://team.slack.com/a").is_ok());
        let refused = with(allow, "http://169.254.169.254/latest/meta-data").unwrap_err().to_string();
        assert!(refused.contains("169.254.169.254") && refused.contains("webhook_hosts"), "{refused}");
        assert!(with(allow, "https://slack.com.evil.example/a").is_err());
        assert!(with("", "file:///etc/passwd").is_err());
        assert!(with("", "not a url").is_err());
    }

    #[test]
    fn parses_rules_with_defaults() {
        let config = MonitorConfig::parse(YAML, "monitor.yaml").unwrap();
        assert_eq!(config.evaluate_every, 5_000);
        assert_eq!(config.webhooks[0].attempts, 5);
        let churn = &config.models["churn"];
        assert_eq!(churn.drift.config().share, 0.4);
        assert_eq!(churn.drift.config().numeric, Some(Method::Psi));
        assert_eq!(churn.drift.config().p_value, 0.05);
        let r = &churn.rules[0];
        assert_eq!(
            (r.metric.clone(), r.op, r.window, r.hold, r.cooldown, r.min_rows),
            (Metric::DriftShare, Op::AtLeast, 300_000, 60_000, 120_000, 10)
        );
        let r = &churn.rules[1];
        assert_eq!(
            (r.metric.clone(), r.window, r.hold, r.cooldown, r.min_rows),
            (Metric::Drifted("plan".into()), 300_000, 0, 120_000, 1)
        );
        assert_eq!(churn.rules[2].metric, Metric::Latency(0.99));
        assert_eq!(churn.rules[2].retrain.as_ref().unwrap().stages, ["train"]);
    }

    #[test]
    fn bad_rules_are_named() {
        let bad = |yaml: &str| MonitorConfig::parse(yaml, "monitor.yaml").unwrap_err().to_string();
        let rule = |body: &str| format!("models:\n  churn:\n    rules:\n      - {{name: r1, {body}}}\n");
        assert!(
            bad(&rule("metric: drift_shares, op: '>', threshold: 1"))
                .contains("unknown metric `drift_shares`")
        );
        assert!(bad(&rule("metric: drift, op: '>', threshold: 1")).contains("needs a feature"));
        assert!(bad(&rule("metric: requests, op: '=>', threshold: 1")).contains("monitor.yaml"));
        let e = bad(&rule("metric: requests, op: '>', threshold: 1, window: 30s"));
        assert!(e.contains("rule `r1`") && e.contains("at least 1m"), "{e}");
        assert!(
            bad(&rule("metric: requests, op: '>', threshold: 1, window: 5 minutes"))
                .contains("invalid duration")
        );
        assert!(bad("evaluate_every: 10s\nrulez: []\n").contains("rulez"));
    }

    fn rule(hold: i64, cooldown: i64) -> Rule {
        Rule {
            name: "r".into(),
            metric: Metric::DriftShare,
            op: Op::AtLeast,
            threshold: 0.5,
            window: 300_000,
            hold,
            cooldown,
            min_rows: 1,
            retrain: None,
        }
    }

    #[test]
    fn alerts_open_after_for_and_resolve_after_cooldown_without_flapping() {
        let r = rule(20, 30);
        let mut s = RuleState::default();
        let mut transitions = Vec::new();
        // time, value: holds at 0, 10, 20 (opens at 20 = held for 20), then flaps
        // (false at 30, true at 40, false at 50, 60), and stays false from 40 on: resolves at 70.
        for (t, v) in
            [(0, 0.6), (10, 0.7), (20, 0.9), (30, 0.1), (40, 0.6), (50, 0.1), (60, 0.2), (70, 0.0), (80, 0.0)]
        {
            if let Some(x) = s.step(&r, t, Some(v)) {
                transitions.push((t, x));
            }
        }
        assert_eq!(transitions, [(20, Transition::Open), (70, Transition::Resolve)]);
        assert_eq!(s.status, Status::Ok);
    }

    #[test]
    fn a_blip_shorter_than_for_opens_nothing_and_no_data_counts_as_not_holding() {
        let r = rule(20, 0);
        let mut s = RuleState::default();
        assert_eq!(s.step(&r, 0, Some(0.9)), None);
        assert_eq!(s.status, Status::Pending);
        assert_eq!(s.step(&r, 10, None), None);
        assert_eq!(s.status, Status::Ok);
        assert_eq!(s.step(&r, 20, Some(0.9)), None);
        let r = rule(0, 0);
        let mut s = RuleState::default();
        assert_eq!(s.step(&r, 0, Some(0.5)), Some(Transition::Open));
        assert_eq!(s.step(&r, 1, None), Some(Transition::Resolve));
    }

    #[test]
    fn metrics_read_the_window() {
        use crate::profile::Cell;
        let mut p = Profile::default();
        for i in 1..=100 {
            p.traffic.add(i % 10 == 0, f64::from(i));
        }
        p.rows = 9;
        let f = p.feature("age", Kind::Numeric);
        for x in [10.0, 20.0, 30.0] {
            f.add(Cell::Num(x));
        }
        f.add(Cell::Missing);
        let g = p.feature("plan", Kind::Categorical);
        g.add(Cell::Text("pro"));
        g.add(Cell::Num(3.0));
        let w = Window { profile: &p, drift: None, quality: None };
        let at = |metric: &str| {
            let mut r = rule(0, 0);
            r.metric = metric.parse().unwrap();
            value(&r, &w)
        };
        assert_eq!(at("requests"), Some(100.0));
        assert_eq!(at("error_rate"), Some(0.1));
        let p99 = at("latency_p99").unwrap();
        assert!((p99 - 99.0).abs() <= 2.0, "{p99}");
        assert_eq!(at("mean.age"), Some(20.0));
        assert_eq!(at("missing_rate.age"), Some(0.25));
        assert_eq!(at("missing_rate"), Some(1.0 / 6.0));
        assert_eq!(at("type_error_rate.plan"), Some(0.5));
        assert_eq!(at("drift_share"), None, "no reference, no drift");
        assert_eq!(at("accuracy"), None, "no labels");
        assert_eq!(at("mean.nothing"), None);
        let mut r = rule(0, 0);
        r.metric = Metric::Requests;
        r.min_rows = 101;
        assert_eq!(value(&r, &w), None, "too few requests");
    }
}
