//! What the store needs from a database: transactions running parameterized SQL. Both
//! backends take the same SQL, written with `$1, $2, …` placeholders.

use crate::Result;

/// A value bound to or read from SQL.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Value {
    Int(i64),
    Real(f64),
    Text(String),
    /// A NULL bound where an integer goes.
    NullInt,
    /// A NULL bound where text goes, or any NULL read back.
    Null,
}

impl Value {
    pub(crate) fn int(&self) -> i64 {
        match self {
            Value::Int(i) => *i,
            Value::Real(r) => *r as i64,
            _ => 0,
        }
    }

    pub(crate) fn real(&self) -> f64 {
        match self {
            Value::Real(r) => *r,
            Value::Int(i) => *i as f64,
            _ => f64::NAN,
        }
    }

    pub(crate) fn text(&self) -> String {
        match self {
            Value::Text(t) => t.clone(),
            Value::Int(i) => i.to_string(),
            Value::Real(r) => r.to_string(),
            _ => String::new(),
        }
    }

    pub(crate) fn opt_text(&self) -> Option<String> {
        match self {
            Value::Null | Value::NullInt => None,
            other => Some(other.text()),
        }
    }

    /// A content digest (`blake3:…`), which every digest column holds.
    pub(crate) fn digest(&self) -> crate::Result<cairn_hash::Digest> {
        let text = self.text();
        text.parse().map_err(|_| crate::MetaError::Corrupt { what: "digest", value: text })
    }

    pub(crate) fn opt_digest(&self) -> crate::Result<Option<cairn_hash::Digest>> {
        match self {
            Value::Null | Value::NullInt => Ok(None),
            other => other.digest().map(Some),
        }
    }

    pub(crate) fn opt_int(&self) -> Option<i64> {
        match self {
            Value::Null | Value::NullInt => None,
            other => Some(other.int()),
        }
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Text(v.to_owned())
    }
}

impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Text(v)
    }
}

impl From<Option<String>> for Value {
    fn from(v: Option<String>) -> Self {
        v.map_or(Value::Null, Value::Text)
    }
}

impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Self {
        v.map_or(Value::NullInt, Value::Int)
    }
}

/// SQL inside one transaction.
pub(crate) trait Tx {
    /// Runs a statement; returns the rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>>;
    /// Calls `each` with every row in turn (one buffer, reused): for reads of many rows.
    fn query_each(&mut self, sql: &str, params: &[Value], each: &mut dyn FnMut(&[Value])) -> Result<()> {
        for row in self.query(sql, params)? {
            each(&row);
        }
        Ok(())
    }
    /// Runs several statements without parameters (migrations).
    fn batch(&mut self, sql: &str) -> Result<()>;
}

pub(crate) trait Backend: Send {
    /// The store's path or URL (password redacted), for messages.
    fn location(&self) -> &str;
    /// Runs `work` in one transaction, committed only if it returns `Ok`.
    fn transaction(&mut self, work: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()>;
}
