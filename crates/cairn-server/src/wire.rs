//! MLflow's messages as JSON: reading requests (a JSON body, or a query string for GET) and
//! writing experiments, runs and metrics.

use cairn_meta::{Experiment, Metric, ModelDirection, Run, RunInfo};
use serde::Serialize;
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde_json::{Map, Value, json};

use crate::ApiError;

/// A request's fields, from a JSON body or a query string.
///
/// Fields are typed as MLflow's messages type them, and a value of another type is
/// `INVALID_PARAMETER_VALUE`, as `mlflow server` answers: a number where a string goes, or —
/// in a JSON body — one value where a list goes. (A query string has only strings, and a key
/// given once is a list of one.)
pub(crate) struct Request {
    fields: Map<String, Value>,
    from_query: bool,
}

impl Request {
    pub(crate) fn from_body(body: &[u8]) -> Result<Request, ApiError> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(Request { fields: Map::new(), from_query: false });
        }
        match serde_json::from_slice::<Value>(body) {
            Ok(Value::Object(fields)) => Ok(Request { fields, from_query: false }),
            Ok(other) => Err(ApiError::invalid(format!(
                "the request body must be a JSON object, not {}",
                kind(&other)
            ))),
            Err(e) => Err(ApiError::invalid(format!("the request body is not valid JSON: {e}"))),
        }
    }

    /// A query string; a key given more than once becomes a list.
    pub(crate) fn from_query(query: Option<&str>) -> Result<Request, ApiError> {
        let pairs: Vec<(String, String)> = serde_urlencoded::from_str(query.unwrap_or(""))
            .map_err(|e| ApiError::invalid(format!("the query string is malformed: {e}")))?;
        let mut fields = Map::new();
        for (key, value) in pairs {
            match fields.get_mut(&key) {
                None => {
                    fields.insert(key, Value::String(value));
                }
                Some(Value::Array(list)) => list.push(Value::String(value)),
                Some(first) => *first = Value::Array(vec![first.take(), Value::String(value)]),
            }
        }
        Ok(Request { fields, from_query: true })
    }

    /// Sets a field (a path parameter, which wins over the body's).
    pub(crate) fn set(&mut self, name: &str, value: String) {
        self.fields.insert(name.to_owned(), Value::String(value));
    }

    pub(crate) fn get(&self, name: &str) -> Option<&Value> {
        self.fields.get(name).filter(|v| !v.is_null())
    }

    pub(crate) fn string(&self, name: &str) -> Result<Option<String>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ApiError::invalid(format!("`{name}` must be a string, not {other}"))),
        }
    }

    pub(crate) fn required(&self, name: &str) -> Result<String, ApiError> {
        self.string(name)?.ok_or_else(|| missing(name))
    }

    /// `run_id`, or the older `run_uuid`.
    pub(crate) fn run_id(&self) -> Result<String, ApiError> {
        match self.string("run_id")? {
            Some(id) if !id.is_empty() => Ok(id),
            _ => self.required("run_uuid"),
        }
    }

    pub(crate) fn int(&self, name: &str) -> Result<Option<i64>, ApiError> {
        self.get(name).map(|v| int64(v).ok_or_else(|| not_a(name, "an integer", v))).transpose()
    }

    /// A repeated field: a JSON list, or in a query string the values of a key given once or
    /// more.
    pub(crate) fn list(&self, name: &str) -> Result<Vec<Value>, ApiError> {
        match self.get(name) {
            None => Ok(Vec::new()),
            Some(Value::Array(items)) => Ok(items.clone()),
            Some(one) if self.from_query => Ok(vec![one.clone()]),
            Some(other) => Err(ApiError::invalid(format!("`{name}` must be a list, not {other}"))),
        }
    }

    /// `[{"key": ..., "value": ...}]` as pairs.
    pub(crate) fn pairs(&self, name: &str) -> Result<Vec<(String, String)>, ApiError> {
        self.list(name)?.iter().map(|item| key_value(name, item)).collect()
    }
}

pub(crate) fn missing(name: &str) -> ApiError {
    ApiError::invalid(format!("missing value for required parameter '{name}'"))
}

fn not_a(name: &str, what: &str, value: &Value) -> ApiError {
    ApiError::invalid(format!("`{name}` must be {what}, not {value}"))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

pub(crate) fn key_value(field: &str, item: &Value) -> Result<(String, String), ApiError> {
    let text = |name: &str| -> Result<String, ApiError> {
        match item.get(name) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(Value::Bool(b)) => Ok(b.to_string()),
            None | Some(Value::Null) if name == "value" => Ok(String::new()),
            None | Some(Value::Null) => {
                Err(ApiError::invalid(format!("an entry of `{field}` has no `{name}`")))
            }
            Some(other) => Err(not_a(&format!("{field}.{name}"), "a string", other)),
        }
    };
    Ok((text("key")?, text("value")?))
}

/// An int64: protobuf's JSON allows a number or a decimal string.
pub(crate) fn int64(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A double: a number, a numeric string, or `"NaN"`, `"Infinity"`, `"-Infinity"`.
pub(crate) fn double(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            other => other.trim().parse().ok(),
        },
        _ => None,
    }
}

/// A double as protobuf's JSON writes it.
pub(crate) fn double_json(value: f64) -> Value {
    if value.is_nan() {
        json!("NaN")
    } else if value.is_infinite() {
        json!(if value > 0.0 { "Infinity" } else { "-Infinity" })
    } else {
        json!(value)
    }
}

fn pairs_json(pairs: &[(String, String)]) -> Value {
    Value::Array(pairs.iter().map(|(k, v)| json!({"key": k, "value": v})).collect())
}

pub(crate) fn metric_json(m: &Metric) -> Value {
    json!({"key": m.key, "value": double_json(m.value), "timestamp": m.timestamp, "step": m.step})
}

pub(crate) fn experiment_json(e: &Experiment) -> Value {
    json!({
        "experiment_id": e.id.to_string(),
        "name": e.name,
        "artifact_location": e.artifact_location,
        "lifecycle_stage": e.lifecycle_stage,
        "creation_time": e.creation_time,
        "last_update_time": e.last_update_time,
        "tags": pairs_json(&e.tags),
    })
}

/// A run as MLflow's `Run` message: `info`, `data` (latest metrics, params, tags), `inputs`
/// (datasets and models read) and `outputs` (models produced). Written straight to the output
/// by serde (a search answers thousands of runs; no intermediate JSON tree).
pub(crate) struct RunWire<'a>(pub &'a Run);

pub(crate) fn run_json(run: &Run) -> Value {
    serde_json::to_value(RunWire(run)).unwrap_or(Value::Null)
}

impl Serialize for RunWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let run = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("info", &InfoWire(&run.info))?;
        map.serialize_entry("data", &DataWire(run))?;
        map.serialize_entry("inputs", &InputsWire(run))?;
        map.serialize_entry("outputs", &OutputsWire(run))?;
        map.end()
    }
}

pub(crate) struct InfoWire<'a>(pub &'a RunInfo);

impl Serialize for InfoWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let info = self.0;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("run_id", &info.run_id)?;
        map.serialize_entry("run_uuid", &info.run_id)?;
        map.serialize_entry("run_name", &info.name)?;
        map.serialize_entry("experiment_id", &info.experiment_id.to_string())?;
        map.serialize_entry("user_id", &info.user)?;
        map.serialize_entry("status", &info.status)?;
        map.serialize_entry("start_time", &info.start_time)?;
        map.serialize_entry("artifact_uri", &info.artifact_uri)?;
        map.serialize_entry("lifecycle_stage", &info.lifecycle_stage)?;
        if let Some(end) = info.end_time {
            map.serialize_entry("end_time", &end)?;
        }
        map.end()
    }
}

struct DataWire<'a>(&'a Run);

impl Serialize for DataWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(3))?;
        map.serialize_entry("metrics", &MetricsWire(&self.0.metrics))?;
        map.serialize_entry("params", &PairsWire(&self.0.params))?;
        map.serialize_entry("tags", &PairsWire(&self.0.tags))?;
        map.end()
    }
}

struct PairsWire<'a>(&'a [(String, String)]);

impl Serialize for PairsWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for (key, value) in self.0 {
            seq.serialize_element(&KeyValue { key, value })?;
        }
        seq.end()
    }
}

#[derive(Serialize)]
struct KeyValue<'a> {
    key: &'a str,
    value: &'a str,
}

struct MetricsWire<'a>(&'a [Metric]);

impl Serialize for MetricsWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.0.len()))?;
        for m in self.0 {
            seq.serialize_element(&MetricWire(m))?;
        }
        seq.end()
    }
}

struct MetricWire<'a>(&'a Metric);

impl Serialize for MetricWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("key", &m.key)?;
        if m.value.is_finite() {
            map.serialize_entry("value", &m.value)?;
        } else {
            map.serialize_entry("value", &double_json(m.value))?;
        }
        map.serialize_entry("timestamp", &m.timestamp)?;
        map.serialize_entry("step", &m.step)?;
        map.end()
    }
}

struct InputsWire<'a>(&'a Run);

impl Serialize for InputsWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let datasets: Vec<Value> =
            self.0.inputs.iter().filter_map(|body| serde_json::from_str(body).ok()).collect();
        let models: Vec<ModelWire> = self
            .0
            .models
            .iter()
            .filter(|m| m.direction == ModelDirection::Input)
            .map(|m| ModelWire { model_id: &m.model_id, step: None })
            .collect();
        let mut map = serializer.serialize_map(Some(2))?;
        map.serialize_entry("dataset_inputs", &datasets)?;
        map.serialize_entry("model_inputs", &models)?;
        map.end()
    }
}

struct OutputsWire<'a>(&'a Run);

impl Serialize for OutputsWire<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let models: Vec<ModelWire> = self
            .0
            .models
            .iter()
            .filter(|m| m.direction == ModelDirection::Output)
            .map(|m| ModelWire { model_id: &m.model_id, step: Some(m.step) })
            .collect();
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("model_outputs", &models)?;
        map.end()
    }
}

#[derive(Serialize)]
struct ModelWire<'a> {
    model_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    step: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn int64_and_double_accept_protobuf_json_forms() {
        assert_eq!(int64(&json!(5)), Some(5));
        assert_eq!(int64(&json!("1700000000000")), Some(1_700_000_000_000));
        assert_eq!(int64(&json!("x")), None);
        assert!(double(&json!("NaN")).is_some_and(f64::is_nan));
        assert_eq!(double(&json!("-Infinity")), Some(f64::NEG_INFINITY));
        assert_eq!(double(&json!(0.5)), Some(0.5));
        assert_eq!(double_json(f64::INFINITY), json!("Infinity"));
    }

    #[test]
    fn a_repeated_query_key_is_a_list() {
        let request = Request::from_query(Some("experiment_ids=1&experiment_ids=2&run_id=abc")).unwrap();
        assert_eq!(request.list("experiment_ids").unwrap(), vec![json!("1"), json!("2")]);
        assert_eq!(request.run_id().unwrap(), "abc");
    }
}
