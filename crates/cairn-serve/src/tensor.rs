//! Tensors as the server holds them between a protocol and a runtime, and the one place JSON
//! values become typed columns (so every protocol checks input the same way and names the
//! field and the expected type when it cannot).

use serde_json::Value;

/// The element types a model input may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    F64,
    I64,
    I32,
    Bool,
    Str,
}

impl DType {
    /// From the signature's names (`float32`, `int64`, `string`, ...).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "float32" | "float" => Self::F32,
            "float64" | "double" => Self::F64,
            "int64" => Self::I64,
            "int32" => Self::I32,
            "bool" => Self::Bool,
            "string" => Self::Str,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::F32 => "float32",
            Self::F64 => "float64",
            Self::I64 => "int64",
            Self::I32 => "int32",
            Self::Bool => "bool",
            Self::Str => "string",
        }
    }

    /// The Open Inference Protocol's datatype.
    pub fn kserve(self) -> &'static str {
        match self {
            Self::F32 => "FP32",
            Self::F64 => "FP64",
            Self::I64 => "INT64",
            Self::I32 => "INT32",
            Self::Bool => "BOOL",
            Self::Str => "BYTES",
        }
    }

    pub fn from_kserve(name: &str) -> Option<Self> {
        Some(match name {
            "FP32" => Self::F32,
            "FP64" => Self::F64,
            "INT64" => Self::I64,
            "INT32" => Self::I32,
            "BOOL" => Self::Bool,
            "BYTES" => Self::Str,
            _ => return None,
        })
    }
}

/// A tensor's elements, row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum Data {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I64(Vec<i64>),
    I32(Vec<i32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl Data {
    pub fn len(&self) -> usize {
        match self {
            Self::F32(v) => v.len(),
            Self::F64(v) => v.len(),
            Self::I64(v) => v.len(),
            Self::I32(v) => v.len(),
            Self::Bool(v) => v.len(),
            Self::Str(v) => v.len(),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn dtype(&self) -> DType {
        match self {
            Self::F32(_) => DType::F32,
            Self::F64(_) => DType::F64,
            Self::I64(_) => DType::I64,
            Self::I32(_) => DType::I32,
            Self::Bool(_) => DType::Bool,
            Self::Str(_) => DType::Str,
        }
    }

    fn empty(dtype: DType, capacity: usize) -> Self {
        match dtype {
            DType::F32 => Self::F32(Vec::with_capacity(capacity)),
            DType::F64 => Self::F64(Vec::with_capacity(capacity)),
            DType::I64 => Self::I64(Vec::with_capacity(capacity)),
            DType::I32 => Self::I32(Vec::with_capacity(capacity)),
            DType::Bool => Self::Bool(Vec::with_capacity(capacity)),
            DType::Str => Self::Str(Vec::with_capacity(capacity)),
        }
    }

    /// Element `i` as JSON (NaN and infinities, which JSON lacks, as `null`).
    pub fn json(&self, i: usize) -> Value {
        match self {
            Self::F32(v) => f32_json(v[i]),
            Self::F64(v) => float_json(v[i]),
            Self::I64(v) => Value::from(v[i]),
            Self::I32(v) => Value::from(v[i]),
            Self::Bool(v) => Value::from(v[i]),
            Self::Str(v) => Value::from(v[i].as_str()),
        }
    }

    fn extend_range(&mut self, other: &Data, from: usize, to: usize) {
        match (self, other) {
            (Self::F32(a), Self::F32(b)) => a.extend_from_slice(&b[from..to]),
            (Self::F64(a), Self::F64(b)) => a.extend_from_slice(&b[from..to]),
            (Self::I64(a), Self::I64(b)) => a.extend_from_slice(&b[from..to]),
            (Self::I32(a), Self::I32(b)) => a.extend_from_slice(&b[from..to]),
            (Self::Bool(a), Self::Bool(b)) => a.extend_from_slice(&b[from..to]),
            (Self::Str(a), Self::Str(b)) => a.extend_from_slice(&b[from..to]),
            // Callers only join tensors of one input, which were checked against one dtype.
            _ => {}
        }
    }
}

fn float_json(x: f64) -> Value {
    serde_json::Number::from_f64(x).map_or(Value::Null, Value::Number)
}

/// A float32 as the shortest decimal that reads back as the same float32 (`0.556674`, not
/// the float64 widening `0.5566740036010742`).
pub fn f32_json(x: f32) -> Value {
    if !x.is_finite() {
        return Value::Null;
    }
    // Rust's float Display is the shortest representation that round-trips.
    let mut buf = x.to_string();
    if !buf.contains(['.', 'e', 'E']) {
        buf.push_str(".0");
    }
    buf.parse::<f64>().ok().and_then(serde_json::Number::from_f64).map_or(Value::Null, Value::Number)
}

/// A dense tensor: the first dimension is the batch (rows).
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Data,
}

impl Tensor {
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row.
    pub fn width(&self) -> usize {
        self.shape.iter().skip(1).product()
    }

    /// Row `i` as JSON: a scalar when a row holds one element, else a (nested) list.
    pub fn row_json(&self, i: usize) -> Value {
        let width = self.width();
        if width == 1 {
            return self.data.json(i);
        }
        nest(&self.data, &self.shape[1..], i * width)
    }

    /// The whole tensor as nested JSON lists.
    pub fn json(&self) -> Value {
        nest(&self.data, &self.shape, 0)
    }

    /// Joins tensors of one input along the batch dimension.
    pub fn concat(parts: &[&Tensor]) -> Tensor {
        let Some(first) = parts.first() else {
            return Tensor { shape: vec![0], data: Data::F32(Vec::new()) };
        };
        let rows = parts.iter().map(|t| t.rows()).sum();
        let mut data = Data::empty(first.data.dtype(), parts.iter().map(|t| t.data.len()).sum());
        for part in parts {
            data.extend_range(&part.data, 0, part.data.len());
        }
        let mut shape = first.shape.clone();
        if shape.is_empty() {
            shape.push(rows);
        } else {
            shape[0] = rows;
        }
        Tensor { shape, data }
    }

    /// Column `j` of a `[N, k]` tensor, as a `[N]` tensor.
    pub fn column(&self, j: usize) -> Tensor {
        let width = self.width();
        let rows = self.rows();
        let mut data = Data::empty(self.data.dtype(), rows);
        for row in 0..rows {
            data.extend_range(&self.data, row * width + j, row * width + j + 1);
        }
        Tensor { shape: vec![rows], data }
    }

    /// Rows `from..to`.
    pub fn slice_rows(&self, from: usize, to: usize) -> Tensor {
        let width = self.width();
        let mut data = Data::empty(self.data.dtype(), (to - from) * width);
        data.extend_range(&self.data, from * width, to * width);
        let mut shape = self.shape.clone();
        if let Some(first) = shape.first_mut() {
            *first = to - from;
        }
        Tensor { shape, data }
    }
}

fn nest(data: &Data, dims: &[usize], offset: usize) -> Value {
    match dims {
        [] => data.json(offset),
        [n] => Value::Array((0..*n).map(|i| data.json(offset + i)).collect()),
        [n, rest @ ..] => {
            let stride: usize = rest.iter().product();
            Value::Array((0..*n).map(|i| nest(data, rest, offset + i * stride)).collect())
        }
    }
}

/// What a model answers for one output.
#[derive(Debug, Clone, PartialEq)]
pub enum Output {
    Tensor(Tensor),
    /// A classifier's per-class probabilities as scikit-learn's ZipMap writes them (a
    /// sequence of `{class: probability}` maps), held as a `[rows, classes]` matrix.
    Classes {
        classes: Vec<Value>,
        probabilities: Vec<f32>,
        rows: usize,
    },
}

impl Output {
    pub fn rows(&self) -> usize {
        match self {
            Self::Tensor(t) => t.rows(),
            Self::Classes { rows, .. } => *rows,
        }
    }

    /// Row `i` as JSON (`{class: probability}` for class maps).
    pub fn row_json(&self, i: usize) -> Value {
        match self {
            Self::Tensor(t) => t.row_json(i),
            Self::Classes { classes, probabilities, .. } => {
                let k = classes.len();
                let mut map = serde_json::Map::with_capacity(k);
                for (j, class) in classes.iter().enumerate() {
                    let key = match class {
                        Value::String(s) => s.clone(),
                        other => other.to_string(),
                    };
                    map.insert(key, f32_json(probabilities[i * k + j]));
                }
                Value::Object(map)
            }
        }
    }

    /// Rows `from..to`.
    pub fn slice_rows(&self, from: usize, to: usize) -> Output {
        match self {
            Self::Tensor(t) => Self::Tensor(t.slice_rows(from, to)),
            Self::Classes { classes, probabilities, .. } => {
                let k = classes.len();
                Self::Classes {
                    classes: classes.clone(),
                    probabilities: probabilities[from * k..to * k].to_vec(),
                    rows: to - from,
                }
            }
        }
    }
}

/// One model input as the signature describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct InputSpec {
    pub name: String,
    pub dtype: DType,
    /// Dimensions after the batch dimension; `None` where any size goes.
    pub row_shape: Vec<Option<usize>>,
}

impl InputSpec {
    /// Elements per row when the signature fixes them.
    pub fn width(&self) -> Option<usize> {
        self.row_shape.iter().try_fold(1usize, |acc, d| d.map(|d| acc * d))
    }

    /// `float32[4]`, `string`: the type a client must send per row.
    pub fn expected(&self) -> String {
        match self.width() {
            Some(1) => self.dtype.name().to_owned(),
            Some(n) => format!("{}[{n}]", self.dtype.name()),
            None => format!("{}[...]", self.dtype.name()),
        }
    }
}

/// Input a client sent that the model cannot take. Every protocol turns it into a 4xx in its
/// own error shape.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct BadInput {
    /// The field (input or feature) at fault, when one is.
    pub field: Option<String>,
    /// What the field must hold.
    pub expected: Option<String>,
    pub message: String,
}

impl BadInput {
    pub fn new(message: impl Into<String>) -> Self {
        Self { field: None, expected: None, message: message.into() }
    }

    pub fn field(spec: &InputSpec, message: impl std::fmt::Display) -> Self {
        Self {
            field: Some(spec.name.clone()),
            expected: Some(spec.expected()),
            message: format!("input `{}`: {message} (expected {})", spec.name, spec.expected()),
        }
    }
}

/// How strict converting JSON is.
#[derive(Debug, Clone, Copy, Default)]
pub struct Strictness {
    /// Take `null` (and NaN) for float inputs as missing values (NaN) instead of refusing.
    pub allow_nan: bool,
}

/// Builds one input from its rows: each row is a scalar or a (nested) list of `width`
/// elements.
pub fn column<'a>(
    spec: &InputSpec,
    rows: impl ExactSizeIterator<Item = &'a Value>,
    strict: Strictness,
) -> Result<Tensor, BadInput> {
    let count = rows.len();
    if count == 0 {
        return Err(BadInput::field(spec, "no rows: an empty batch has nothing to predict"));
    }
    let mut width = spec.width();
    let mut data = Data::empty(spec.dtype, count * width.unwrap_or(1));
    let mut flat = Vec::new();
    for (i, row) in rows.enumerate() {
        flat.clear();
        flatten(row, &mut flat);
        match width {
            Some(w) if w != flat.len() => {
                return Err(BadInput::field(
                    spec,
                    format!("row {i} has {} values, the model takes {w}", flat.len()),
                ));
            }
            None => width = Some(flat.len()),
            _ => {}
        }
        for value in &flat {
            push(&mut data, value, spec, strict)?;
        }
    }
    let width = width.unwrap_or(1);
    let mut shape = vec![count];
    match spec.row_shape.len() {
        0 => {}
        1 => shape.push(width),
        _ => {
            // Fixed inner dimensions (the open one, if any, takes what is left).
            let known: usize = spec.row_shape.iter().flatten().product();
            for d in &spec.row_shape {
                shape.push(d.unwrap_or(width / known.max(1)));
            }
        }
    }
    Ok(Tensor { shape, data })
}

/// Builds one input from a flat list of elements and the shape the client declared (the
/// Open Inference Protocol's form).
pub fn from_flat(
    spec: &InputSpec,
    shape: &[usize],
    values: &[&Value],
    strict: Strictness,
) -> Result<Tensor, BadInput> {
    if shape.first() == Some(&0) || values.is_empty() {
        return Err(BadInput::field(spec, "no rows: an empty batch has nothing to predict"));
    }
    let (expected, model_shape) = checked_shape(spec, shape)?;
    if values.len() != expected {
        return Err(BadInput::field(
            spec,
            format!("shape {shape:?} holds {expected} values but {} were sent", values.len()),
        ));
    }
    let mut data = Data::empty(spec.dtype, values.len());
    for value in values {
        push(&mut data, value, spec, strict)?;
    }
    Ok(Tensor { shape: model_shape, data })
}

/// Appends the leaves of `value` (scalars, depth first).
pub fn flatten<'a>(value: &'a Value, out: &mut Vec<&'a Value>) {
    match value {
        Value::Array(items) => items.iter().for_each(|v| flatten(v, out)),
        other => out.push(other),
    }
}

fn push(data: &mut Data, value: &Value, spec: &InputSpec, strict: Strictness) -> Result<(), BadInput> {
    let wrong = |what: &str| BadInput::field(spec, format!("got {what} {}", short(value)));
    match data {
        Data::F32(v) => {
            let x = float(value, spec, strict)?;
            // `as f32` would turn 3.5e38 into infinity: a value FP32 cannot hold is refused.
            if x.is_finite() && x.abs() > f64::from(f32::MAX) {
                return Err(BadInput::field(
                    spec,
                    format!("{} is out of range for FP32 (largest: {:e})", short(value), f32::MAX),
                ));
            }
            v.push(x as f32)
        }
        Data::F64(v) => v.push(float(value, spec, strict)?),
        Data::I64(v) => v.push(value.as_i64().ok_or_else(|| wrong(kind(value)))?),
        Data::I32(v) => {
            v.push(value.as_i64().and_then(|x| i32::try_from(x).ok()).ok_or_else(|| wrong(kind(value)))?)
        }
        Data::Bool(v) => v.push(match value {
            Value::Bool(b) => *b,
            Value::Number(n) if n.as_i64() == Some(0) => false,
            Value::Number(n) if n.as_i64() == Some(1) => true,
            _ => return Err(wrong(kind(value))),
        }),
        Data::Str(v) => v.push(match value {
            Value::String(s) => s.clone(),
            _ => return Err(wrong(kind(value))),
        }),
    }
    Ok(())
}

fn float(value: &Value, spec: &InputSpec, strict: Strictness) -> Result<f64, BadInput> {
    match value {
        Value::Number(n) => n.as_f64().ok_or_else(|| BadInput::field(spec, format!("{n} is out of range"))),
        Value::Null if strict.allow_nan => Ok(f64::NAN),
        Value::Null => Err(BadInput::field(
            spec,
            "got null (a missing value); this server refuses missing values (start it with --allow-nan to pass them as NaN)",
        )),
        Value::String(s) if strict.allow_nan && s.eq_ignore_ascii_case("nan") => Ok(f64::NAN),
        other => Err(BadInput::field(spec, format!("got {} {}", kind(other), short(other)))),
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number",
        Value::Number(_) => "an integer",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "an object",
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.len() > 40 { format!("{}…", &text[..text.floor_char_boundary(40)]) } else { text }
}

/// The shape a tensor goes to the model with: the client's, unless it holds the same
/// elements per row as the signature but in another rank (`[N]` for an `[N, 1]` input, or
/// `[N, 4]` for `[N, 2, 2]`), in which case the signature's.
fn model_shape(spec: &InputSpec, shape: &[usize]) -> Result<Vec<usize>, BadInput> {
    if shape.len() == spec.row_shape.len() + 1 {
        return Ok(shape.to_vec());
    }
    let rows = shape.first().copied().unwrap_or(0);
    match spec.row_shape.iter().map(|d| d.ok_or(())).collect::<Result<Vec<usize>, ()>>() {
        Ok(row) => Ok([vec![rows], row].concat()),
        Err(()) => Err(BadInput::field(
            spec,
            format!(
                "shape {shape:?} has {} dimensions; the model takes {} ([rows, {}])",
                shape.len(),
                spec.row_shape.len() + 1,
                spec.row_shape
                    .iter()
                    .map(|d| d.map_or("any".to_owned(), |d| d.to_string()))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// Checks a client's shape against the signature: its element count (without overflow), at
/// least one row, and the elements per row. Returns the element count and the shape for
/// the model.
fn checked_shape(spec: &InputSpec, shape: &[usize]) -> Result<(usize, Vec<usize>), BadInput> {
    // The shape comes from the client: its product may not fit in a usize.
    let product = |dims: &[usize]| dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    let Some(count) = product(shape) else {
        return Err(BadInput::field(spec, format!("shape {shape:?} holds more values than any request can")));
    };
    if shape.first() == Some(&0) || count == 0 {
        return Err(BadInput::field(spec, "no rows: an empty batch has nothing to predict"));
    }
    let row_width = product(shape.get(1..).unwrap_or_default()).unwrap_or(usize::MAX);
    if let Some(w) = spec.width()
        && w != row_width
    {
        return Err(BadInput::field(
            spec,
            format!("shape {shape:?} has {row_width} values per row, the model takes {w}"),
        ));
    }
    Ok((count, model_shape(spec, shape)?))
}

/// Builds one input from the Open Inference Protocol's binary tensor data: elements
/// little-endian and row-major, `BOOL` one byte each, `BYTES` each a 4-byte little-endian
/// length followed by that many bytes (UTF-8 here, since models take strings).
pub fn from_binary(
    spec: &InputSpec,
    shape: &[usize],
    bytes: &[u8],
    strict: Strictness,
) -> Result<Tensor, BadInput> {
    let (count, shape) = checked_shape(spec, shape)?;
    let fixed = |size: usize| -> Result<(), BadInput> {
        match count.checked_mul(size) {
            Some(expected) if expected == bytes.len() => Ok(()),
            _ => Err(BadInput::field(
                spec,
                format!(
                    "binary data of {} bytes does not hold shape {shape:?} of {} ({size} bytes per element)",
                    bytes.len(),
                    spec.dtype.kserve()
                ),
            )),
        }
    };
    let no_nan = |any_nan: bool| -> Result<(), BadInput> {
        if any_nan && !strict.allow_nan {
            return Err(BadInput::field(
                spec,
                "holds NaN (a missing value); this server refuses missing values (start it with --allow-nan to pass them)",
            ));
        }
        Ok(())
    };
    let data = match spec.dtype {
        DType::F32 => {
            fixed(4)?;
            let v: Vec<f32> =
                bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            no_nan(v.iter().any(|x| x.is_nan()))?;
            Data::F32(v)
        }
        DType::F64 => {
            fixed(8)?;
            let v: Vec<f64> = bytes
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
                .collect();
            no_nan(v.iter().any(|x| x.is_nan()))?;
            Data::F64(v)
        }
        DType::I64 => {
            fixed(8)?;
            Data::I64(
                bytes
                    .chunks_exact(8)
                    .map(|c| i64::from_le_bytes(c.try_into().expect("chunks_exact(8) yields 8 bytes")))
                    .collect(),
            )
        }
        DType::I32 => {
            fixed(4)?;
            Data::I32(bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect())
        }
        DType::Bool => {
            fixed(1)?;
            Data::Bool(binary_bools(spec, bytes)?)
        }
        DType::Str => Data::Str(binary_strings(spec, &shape, count, bytes)?),
    };
    Ok(Tensor { shape, data })
}

/// `BOOL` elements of the binary tensor data: one byte each, 0 or 1.
fn binary_bools(spec: &InputSpec, bytes: &[u8]) -> Result<Vec<bool>, BadInput> {
    bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| match b {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(BadInput::field(spec, format!("element {i} is byte {other}; BOOL takes 0 or 1"))),
        })
        .collect()
}

/// `BYTES` elements of the binary tensor data: each a 4-byte little-endian length and that
/// many bytes of UTF-8; exactly `count` of them.
fn binary_strings(
    spec: &InputSpec,
    shape: &[usize],
    count: usize,
    bytes: &[u8],
) -> Result<Vec<String>, BadInput> {
    let mut v = Vec::with_capacity(count.min(bytes.len() / 4));
    let mut rest = bytes;
    while let Some((length, tail)) = rest.split_first_chunk::<4>() {
        let length = u32::from_le_bytes(*length) as usize;
        let Some((element, tail)) = tail.split_at_checked(length) else {
            return Err(BadInput::field(
                spec,
                format!("BYTES element {} claims {length} bytes but only {} remain", v.len(), tail.len()),
            ));
        };
        let text = std::str::from_utf8(element)
            .map_err(|_| BadInput::field(spec, format!("BYTES element {} is not UTF-8 text", v.len())))?;
        v.push(text.to_owned());
        rest = tail;
    }
    if !rest.is_empty() || v.len() != count {
        return Err(BadInput::field(
            spec,
            format!(
                "binary data holds {} BYTES element(s){} but shape {shape:?} needs {count}",
                v.len(),
                if rest.is_empty() { "" } else { " and a partial length prefix" }
            ),
        ));
    }
    Ok(v)
}

/// Appends `data` in the binary tensor data extension's layout (see [`from_binary`]).
pub fn to_binary(data: &Data, out: &mut Vec<u8>) {
    match data {
        Data::F32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I64(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I32(v) => v.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Data::Str(v) => v.iter().for_each(|s| {
            out.extend_from_slice(&(s.len() as u32).to_le_bytes());
            out.extend_from_slice(s.as_bytes());
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec(dtype: DType, row: &[Option<usize>]) -> InputSpec {
        InputSpec { name: "x".into(), dtype, row_shape: row.to_vec() }
    }

    #[test]
    fn rows_become_a_tensor_with_the_batch_first() {
        let rows = [json!([1, 2.5]), json!([3, 4])];
        let t = column(&spec(DType::F32, &[Some(2)]), rows.iter(), Strictness::default()).unwrap();
        assert_eq!(t.shape, vec![2, 2]);
        assert_eq!(t.data, Data::F32(vec![1.0, 2.5, 3.0, 4.0]));
        assert_eq!(t.row_json(1), json!([3.0, 4.0]));
    }

    #[test]
    fn a_wrong_type_names_the_field_and_the_expected_type() {
        let rows = [json!("old")];
        let err = column(&spec(DType::F32, &[Some(1)]), rows.iter(), Strictness::default()).unwrap_err();
        assert_eq!(err.field.as_deref(), Some("x"));
        assert_eq!(err.expected.as_deref(), Some("float32"));
        assert!(err.message.contains("got a string \"old\""), "{}", err.message);
    }

    #[test]
    fn floats_fp32_cannot_hold_are_refused_not_made_infinite() {
        let s = spec(DType::F32, &[Some(1)]);
        for too_big in [json!(3.5e38), json!(-3.5e38), json!(1e300)] {
            let err = column(&s, [too_big.clone()].iter(), Strictness::default()).unwrap_err();
            assert!(err.message.contains("out of range for FP32"), "{too_big}: {}", err.message);
            assert_eq!(err.field.as_deref(), Some("x"));
        }
        let t = column(&s, [json!(3.4e38)].iter(), Strictness::default()).unwrap();
        assert!(matches!(&t.data, Data::F32(v) if v[0].is_finite()));
        // FP64 holds them.
        assert!(column(&spec(DType::F64, &[Some(1)]), [json!(3.5e38)].iter(), Strictness::default()).is_ok());
    }

    #[test]
    fn a_shape_whose_size_overflows_is_refused() {
        let s = spec(DType::F32, &[None]);
        let one = json!(1.0);
        let err = from_flat(&s, &[1 << 40, 1 << 40], &[&one], Strictness::default()).unwrap_err();
        assert!(err.message.contains("more values than any request can"), "{}", err.message);
    }

    #[test]
    fn null_is_refused_unless_allowed() {
        let rows = [json!(null)];
        let s = spec(DType::F64, &[Some(1)]);
        assert!(column(&s, rows.iter(), Strictness::default()).is_err());
        let t = column(&s, rows.iter(), Strictness { allow_nan: true }).unwrap();
        assert!(matches!(&t.data, Data::F64(v) if v[0].is_nan()));
    }

    #[test]
    fn widths_must_match_and_batches_must_not_be_empty() {
        let s = spec(DType::I64, &[Some(3)]);
        let rows = [json!([1, 2])];
        assert!(column(&s, rows.iter(), Strictness::default()).unwrap_err().message.contains("takes 3"));
        let none: [Value; 0] = [];
        assert!(column(&s, none.iter(), Strictness::default()).unwrap_err().message.contains("empty batch"));
    }

    #[test]
    fn a_column_is_every_rows_value_at_that_position() {
        let t = Tensor { shape: vec![2, 3], data: Data::F32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]) };
        assert_eq!(t.column(1), Tensor { shape: vec![2], data: Data::F32(vec![2.0, 5.0]) });
        assert_eq!(t.column(2).row_json(1), json!(6.0));
    }

    #[test]
    fn concat_and_slice_are_inverse() {
        let a = Tensor { shape: vec![1, 2], data: Data::I64(vec![1, 2]) };
        let b = Tensor { shape: vec![2, 2], data: Data::I64(vec![3, 4, 5, 6]) };
        let joined = Tensor::concat(&[&a, &b]);
        assert_eq!(joined.shape, vec![3, 2]);
        assert_eq!(joined.slice_rows(1, 3), b);
        assert_eq!(joined.slice_rows(0, 1), a);
    }
}

#[cfg(test)]
mod binary_tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn spec(dtype: DType, row_shape: Vec<Option<usize>>) -> InputSpec {
        InputSpec { name: "x".into(), dtype, row_shape }
    }

    #[test]
    fn every_datatype_round_trips_through_the_binary_layout() {
        let cases = [
            (DType::F32, Data::F32(vec![1.5, -0.25, f32::MIN_POSITIVE, 3.0e38])),
            (DType::F64, Data::F64(vec![0.1, -1e-300, 2.5e300, 7.0])),
            (DType::I64, Data::I64(vec![i64::MIN, -1, 0, i64::MAX])),
            (DType::I32, Data::I32(vec![i32::MIN, -1, 0, i32::MAX])),
            (DType::Bool, Data::Bool(vec![true, false, false, true])),
            (DType::Str, Data::Str(vec!["a".into(), String::new(), "naïve".into(), "x".repeat(300)])),
        ];
        for (dtype, data) in cases {
            let mut bytes = Vec::new();
            to_binary(&data, &mut bytes);
            let tensor =
                from_binary(&spec(dtype, vec![Some(2)]), &[2, 2], &bytes, Strictness::default()).unwrap();
            assert_eq!(tensor.data, data, "{dtype:?}");
            assert_eq!(tensor.shape, vec![2, 2]);
        }
    }

    #[test]
    fn malformed_binary_data_is_refused_with_the_reason() {
        let message = |dtype, shape: &[usize], bytes: &[u8]| {
            from_binary(&spec(dtype, vec![Some(1)]), shape, bytes, Strictness::default()).unwrap_err().message
        };
        assert!(message(DType::F32, &[2, 1], &[0; 7]).contains("does not hold shape [2, 1] of FP32"));
        assert!(message(DType::Bool, &[1, 1], &[2]).contains("BOOL takes 0 or 1"));
        // A length prefix that claims more than is there, a partial prefix, a count mismatch.
        assert!(message(DType::Str, &[1, 1], &[9, 0, 0, 0, b'a']).contains("claims 9 bytes"));
        assert!(message(DType::Str, &[1, 1], &[1, 0, 0, 0, b'a', 1]).contains("partial length prefix"));
        assert!(message(DType::Str, &[2, 1], &[1, 0, 0, 0, b'a']).contains("holds 1 BYTES element(s)"));
        assert!(message(DType::Str, &[1, 1], &[1, 0, 0, 0, 0xff]).contains("not UTF-8"));
        assert!(message(DType::F32, &[1, 1], &f32::NAN.to_le_bytes()).contains("NaN"));
        let overflow = [usize::MAX, 2];
        assert!(message(DType::F32, &overflow, &[]).contains("more values than any request can"));
    }

    #[test]
    fn a_flat_input_takes_the_signatures_rank_when_the_row_width_matches() {
        let column = spec(DType::F32, vec![Some(1)]);
        let tensor = from_binary(&column, &[3], &[0; 12], Strictness::default()).unwrap();
        assert_eq!(tensor.shape, vec![3, 1]);
        let open = spec(DType::F32, vec![None, Some(2)]);
        let refused = from_binary(&open, &[2, 4], &[0; 32], Strictness::default()).unwrap_err();
        assert!(refused.message.contains("has 2 dimensions; the model takes 3"), "{}", refused.message);
    }
}
