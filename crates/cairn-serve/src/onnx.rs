//! ONNX Runtime as a [`Runtime`] (the `onnx` feature): loaded at run time from a shared
//! library, with a pool of single-threaded sessions per model (see [`crate::runtime`]).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use ort::session::Session;
use ort::value::{DynValue, Tensor as OrtTensor, ValueType};
use serde_json::Value;

use crate::runtime::{Model, ModelFiles, Runtime, RuntimeError};
use crate::tensor::{Data, Output, Tensor};

/// ONNX Runtime, loaded once per process.
pub struct OnnxRuntime {
    environment: ort::environment::Environment,
    library: PathBuf,
    pool_size: usize,
}

impl OnnxRuntime {
    /// Loads the library at `library` (see [`locate_onnxruntime`]). `pool_size` sessions per
    /// model (0: one per core).
    pub fn init(library: &Path, pool_size: usize) -> Result<Self, RuntimeError> {
        let fail = |message: String| RuntimeError::LibraryLoad { path: library.to_path_buf(), message };
        let builder = ort::init_from(library).map_err(|e| fail(e.to_string()))?;
        let environment = builder.with_name("cairn").build().map_err(|e| fail(e.to_string()))?;
        let pool_size = if pool_size == 0 {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        } else {
            pool_size
        };
        Ok(Self { environment, library: library.to_path_buf(), pool_size })
    }

    pub fn library(&self) -> &Path {
        &self.library
    }

    /// The ONNX Runtime version the library reports.
    pub fn version(&self) -> String {
        ort::info()
            .split(',')
            .find_map(|part| part.trim().strip_prefix("git-branch=rel-"))
            .unwrap_or("unknown")
            .to_owned()
    }

    fn session(&self, bytes: &[u8]) -> Result<Session, RuntimeError> {
        let load = |e: ort::Error| RuntimeError::Load(e.to_string());
        Session::builder(&self.environment)
            .map_err(load)?
            .with_intra_threads(1)
            .map_err(|e| RuntimeError::Load(e.to_string()))?
            .with_inter_threads(1)
            .map_err(|e| RuntimeError::Load(e.to_string()))?
            .commit_from_memory(bytes)
            .map_err(load)
    }
}

impl Runtime for OnnxRuntime {
    fn name(&self) -> &'static str {
        "onnx"
    }

    fn load(&self, files: ModelFiles<'_>) -> Result<Arc<dyn Model>, RuntimeError> {
        let ModelFiles::Bytes(bytes) = files else {
            return Err(RuntimeError::Load("an ONNX model is one file".into()));
        };
        let first = self.session(bytes)?;
        let outputs = first.outputs().iter().map(|o| o.name().to_owned()).collect();
        let mut sessions = vec![first];
        for _ in 1..self.pool_size {
            sessions.push(self.session(bytes)?);
        }
        Ok(Arc::new(OnnxModel { idle: Mutex::new(sessions), returned: Condvar::new(), outputs }))
    }
}

struct OnnxModel {
    idle: Mutex<Vec<Session>>,
    returned: Condvar,
    outputs: Vec<String>,
}

/// A session taken from the pool, given back when dropped (also when a run panics).
struct Lease<'a> {
    model: &'a OnnxModel,
    session: Option<Session>,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        if let Some(session) = self.session.take() {
            self.model.idle.lock().unwrap_or_else(PoisonError::into_inner).push(session);
            self.model.returned.notify_one();
        }
    }
}

impl OnnxModel {
    fn lease(&self) -> Lease<'_> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(session) = idle.pop() {
                return Lease { model: self, session: Some(session) };
            }
            idle = self.returned.wait(idle).unwrap_or_else(PoisonError::into_inner);
        }
    }
}

fn ort_value(tensor: &Tensor) -> Result<DynValue, ort::Error> {
    let shape: Vec<i64> = tensor.shape.iter().map(|&d| d as i64).collect();
    Ok(match &tensor.data {
        Data::F32(v) => OrtTensor::from_array((shape, v.clone()))?.into_dyn(),
        Data::F64(v) => OrtTensor::from_array((shape, v.clone()))?.into_dyn(),
        Data::I64(v) => OrtTensor::from_array((shape, v.clone()))?.into_dyn(),
        Data::I32(v) => OrtTensor::from_array((shape, v.clone()))?.into_dyn(),
        Data::Bool(v) => OrtTensor::from_array((shape, v.clone()))?.into_dyn(),
        Data::Str(v) => OrtTensor::from_string_array((shape, v.as_slice()))?.into_dyn(),
    })
}

fn shape_of(shape: &[i64]) -> Vec<usize> {
    shape.iter().map(|&d| d.max(0) as usize).collect()
}

fn from_ort(value: &DynValue) -> Result<Output, RuntimeError> {
    let bad = |e: ort::Error| RuntimeError::Output(e.to_string());
    use ort::value::TensorElementType as T;
    match value.dtype() {
        ValueType::Tensor { ty, .. } => {
            let tensor = match ty {
                T::Float32 => {
                    let (shape, data) = value.try_extract_tensor::<f32>().map_err(bad)?;
                    Tensor { shape: shape_of(shape), data: Data::F32(data.to_vec()) }
                }
                T::Float64 => {
                    let (shape, data) = value.try_extract_tensor::<f64>().map_err(bad)?;
                    Tensor { shape: shape_of(shape), data: Data::F64(data.to_vec()) }
                }
                T::Int64 => {
                    let (shape, data) = value.try_extract_tensor::<i64>().map_err(bad)?;
                    Tensor { shape: shape_of(shape), data: Data::I64(data.to_vec()) }
                }
                T::Int32 => {
                    let (shape, data) = value.try_extract_tensor::<i32>().map_err(bad)?;
                    Tensor { shape: shape_of(shape), data: Data::I32(data.to_vec()) }
                }
                T::Bool => {
                    let (shape, data) = value.try_extract_tensor::<bool>().map_err(bad)?;
                    Tensor { shape: shape_of(shape), data: Data::Bool(data.to_vec()) }
                }
                T::String => {
                    let (shape, data) = value.try_extract_strings().map_err(bad)?;
                    Tensor { shape: shape_of(shape), data: Data::Str(data) }
                }
                other => return Err(RuntimeError::Output(format!("tensors of {other:?}"))),
            };
            Ok(Output::Tensor(tensor))
        }
        ValueType::Sequence(inner) if matches!(**inner, ValueType::Map { .. }) => {
            let maps = value.try_extract_sequence::<ort::value::DynMapValueType>().map_err(bad)?;
            class_maps(&maps)
        }
        other => Err(RuntimeError::Output(format!("{other:?}"))),
    }
}

/// A ZipMap's sequence of `{class: probability}` maps as a `[rows, classes]` matrix, classes
/// in the first map's order (sorted, as scikit-learn's `classes_` are).
fn class_maps(maps: &[ort::value::DynMap]) -> Result<Output, RuntimeError> {
    let bad = |e: ort::Error| RuntimeError::Output(e.to_string());
    let rows = maps.len();
    let Some(first) = maps.first() else {
        return Ok(Output::Classes { classes: Vec::new(), probabilities: Vec::new(), rows: 0 });
    };
    let string_keys =
        matches!(first.dtype(), ValueType::Map { key: ort::value::TensorElementType::String, .. });
    let mut classes: Vec<Value> = Vec::new();
    let mut probabilities = Vec::new();
    for (i, map) in maps.iter().enumerate() {
        let mut pairs: Vec<(Value, f32)> = if string_keys {
            map.try_extract_key_values::<String, f32>()
                .map_err(bad)?
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect()
        } else {
            map.try_extract_key_values::<i64, f32>()
                .map_err(bad)?
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect()
        };
        pairs.sort_by(|a, b| match (&a.0, &b.0) {
            (Value::Number(x), Value::Number(y)) => x.as_i64().cmp(&y.as_i64()),
            (x, y) => x.to_string().cmp(&y.to_string()),
        });
        if i == 0 {
            classes = pairs.iter().map(|(k, _)| k.clone()).collect();
        } else if pairs.len() != classes.len() {
            return Err(RuntimeError::Output("class maps with different classes per row".into()));
        }
        probabilities.extend(pairs.into_iter().map(|(_, v)| v));
    }
    Ok(Output::Classes { classes, probabilities, rows })
}

impl Model for OnnxModel {
    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Output)>, RuntimeError> {
        let mut values = Vec::with_capacity(inputs.len());
        for (name, tensor) in inputs {
            let value = ort_value(tensor).map_err(|e| RuntimeError::Run(format!("input `{name}`: {e}")))?;
            values.push((name.as_str(), value));
        }
        let mut lease = self.lease();
        let Some(session) = lease.session.as_mut() else {
            return Err(RuntimeError::Run("no session".into()));
        };
        let outputs = session.run(values).map_err(|e| RuntimeError::Run(e.to_string()))?;
        let mut answer = Vec::with_capacity(self.outputs.len());
        for name in &self.outputs {
            let value = outputs
                .get(name.as_str())
                .ok_or_else(|| RuntimeError::Output(format!("output `{name}` is missing")))?;
            answer.push((name.clone(), from_ort(value)?));
        }
        Ok(answer)
    }
}
