//! Params and metrics files: YAML, JSON or TOML (and CSV for metrics), read as JSON values.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

/// Parses a params or metrics file by its extension (`.json`, `.toml`, `.csv`/`.tsv`,
/// anything else as YAML). `name` is used in errors.
pub fn parse_file(name: &str, bytes: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("`{name}` is not UTF-8 text"))?;
    let extension = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "json" => serde_json::from_str(text).map_err(|e| format!("`{name}` is not valid JSON: {e}")),
        "toml" => toml::from_str::<toml::Value>(text)
            .map_err(|e| format!("`{name}` is not valid TOML: {e}"))
            .and_then(|v| serde_json::to_value(v).map_err(|e| format!("`{name}`: {e}"))),
        "csv" | "tsv" => parse_table(name, text, if extension == "tsv" { b'\t' } else { b',' }),
        _ => {
            if text.trim().is_empty() {
                return Ok(Value::Object(Default::default()));
            }
            serde_saphyr::from_str(text).map_err(|e| format!("`{name}` is not valid YAML: {e}"))
        }
    }
}

/// A CSV metrics file: the last row, by column name (numbers where they parse).
fn parse_table(name: &str, text: &str, delimiter: u8) -> Result<Value, String> {
    let mut reader = csv::ReaderBuilder::new().delimiter(delimiter).from_reader(text.as_bytes());
    let headers = reader.headers().map_err(|e| format!("`{name}`: {e}"))?.clone();
    let mut last = None;
    for record in reader.records() {
        last = Some(record.map_err(|e| format!("`{name}`: {e}"))?);
    }
    let mut map = serde_json::Map::new();
    if let Some(record) = last {
        for (header, field) in headers.iter().zip(record.iter()) {
            let value = field
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| field.parse::<f64>().map(Value::from))
                .unwrap_or_else(|_| Value::from(field));
            map.insert(header.to_owned(), value);
        }
    }
    Ok(Value::Object(map))
}

/// Sets the value at a dotted key, creating objects on the way (`-S train.lr=0.1`).
pub fn set(root: &mut Value, key: &str, new: Value) -> Result<(), String> {
    let mut value = root;
    let parts: Vec<&str> = key.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        if !value.is_object() {
            if value.is_null() {
                *value = Value::Object(Default::default());
            } else {
                return Err(format!("`{}` is not a mapping, so `{key}` cannot be set", parts[..i].join(".")));
            }
        }
        let map = value.as_object_mut().expect("made an object above");
        if i + 1 == parts.len() {
            map.insert((*part).to_owned(), new);
            return Ok(());
        }
        value = map.entry((*part).to_owned()).or_insert(Value::Null);
    }
    Err(format!("`{key}` is not a key"))
}

/// Writes `root` in the format `name`'s extension says (YAML by default).
pub fn write_file(name: &str, root: &Value) -> Result<Vec<u8>, String> {
    let extension = Path::new(name).extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    match extension.as_str() {
        "json" => serde_json::to_vec_pretty(root).map(|mut v| {
            v.push(b'\n');
            v
        }),
        "toml" => return toml::to_string(root).map(String::into_bytes).map_err(|e| format!("`{name}`: {e}")),
        "csv" | "tsv" => return Err(format!("`{name}`: params in CSV files cannot be overridden")),
        _ => {
            return serde_saphyr::to_string(root)
                .map(String::into_bytes)
                .map_err(|e| format!("`{name}`: {e}"));
        }
    }
    .map_err(|e| format!("`{name}`: {e}"))
}

/// A command-line value as YAML reads it: `3` is a number, `true` a boolean, `adam` a string.
pub fn scalar(text: &str) -> Value {
    match serde_saphyr::from_str::<Value>(text) {
        Ok(value @ (Value::Number(_) | Value::Bool(_) | Value::String(_))) => value,
        _ => Value::String(text.to_owned()),
    }
}

/// The value at a dotted key.
pub fn lookup<'v>(root: &'v Value, key: &str) -> Option<&'v Value> {
    let mut value = root;
    for part in key.split('.') {
        value = match value {
            Value::Object(map) => map.get(part)?,
            Value::Array(list) => list.get(part.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Every leaf of `root` by dotted key (lists of scalars are leaves).
pub fn flatten(root: &Value) -> BTreeMap<String, Value> {
    fn go(prefix: &str, value: &Value, out: &mut BTreeMap<String, Value>) {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map {
                    let key = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                    go(&key, v, out);
                }
            }
            other => {
                out.insert(prefix.to_owned(), other.clone());
            }
        }
    }
    let mut out = BTreeMap::new();
    go("", root, &mut out);
    out
}

/// The error for a key a params file lacks, with the closest key it has.
pub fn missing_key(file: &str, key: &str, root: &Value) -> String {
    let keys = flatten(root);
    let hint = crate::closest(key, keys.keys().map(String::as_str))
        .map(|best| format!("; did you mean `{best}`?"))
        .unwrap_or_default();
    format!("param `{key}` is not in `{file}`{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_keys() {
        let yaml = parse_file("params.yaml", b"train:\n  lr: 0.01\n  depth: 3\nseed: 7\n").unwrap();
        assert_eq!(lookup(&yaml, "train.lr"), Some(&Value::from(0.01)));
        let toml = parse_file("c.toml", b"[train]\nlr = 0.5\n").unwrap();
        assert_eq!(lookup(&toml, "train.lr"), Some(&Value::from(0.5)));
        let csv = parse_file("m.csv", b"step,loss\n1,0.9\n2,0.5\n").unwrap();
        assert_eq!(lookup(&csv, "loss"), Some(&Value::from(0.5)));
        assert!(missing_key("params.yaml", "train.lrr", &yaml).contains("did you mean `train.lr`"));
        assert_eq!(flatten(&yaml).len(), 3);
        assert!(parse_file("bad.json", b"{").is_err());
    }
}
