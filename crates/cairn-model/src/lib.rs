//! Model formats Cairn registers and serves.
//!
//! A model is an ONNX file, or a directory holding a model file and `cairn-model.yaml`:
//!
//! ```yaml
//! runtime: onnx              # the runtime that runs it (only `onnx` today)
//! model: model.onnx          # the model file, relative to the directory
//! signature:                 # optional: replaces what is read from the model
//!   inputs:  [{name: features, dtype: float32, shape: [null, 4]}]
//!   outputs: [{name: label, dtype: int64, shape: [null]}]
//! ```
//!
//! The signature — named, typed inputs and outputs — is read from the ONNX graph
//! ([`onnx::signature`]) unless the YAML gives one.
//!
//! A directory holding an MLflow model (`MLmodel`, with a `python_function` flavor and a
//! signature) is a model for the `mlflow` runtime, which runs it in Python ([`mlflow`]).

#![cfg_attr(test, allow(clippy::unwrap_used))]

pub mod mlflow;
pub mod onnx;
pub mod profile;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The name of a model directory's description file.
pub const MODEL_YAML: &str = "cairn-model.yaml";

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("not an ONNX model: {0}")]
    NotOnnx(String),
    #[error("cannot read `{path}`: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("`{path}` is not valid: {message}")]
    BadSpec { path: PathBuf, message: String },
    #[error(
        "`{path}` is neither an .onnx file nor a directory with {MODEL_YAML} or an MLflow model's MLmodel"
    )]
    Unknown { path: PathBuf },
    #[error("`{path}` cannot be served: {reason}")]
    NotServable { path: PathBuf, reason: String },
    #[error("runtime `{runtime}` in `{path}` is not supported; supported: onnx")]
    UnsupportedRuntime { path: PathBuf, runtime: String },
}

/// One input or output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    /// `float32`, `int64`, `string`, ..., or `seq(map(int64, float32))`.
    pub dtype: String,
    /// Dimensions; `null` where any size goes (the batch dimension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shape: Option<Vec<Option<i64>>>,
    /// For a `[N, k]` input: what its k columns are, by position (from the training data's
    /// header, or `cairn model register --feature-names`). Monitoring profiles, reports,
    /// rules, exports and the prediction log name the columns so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub columns: Option<Vec<String>>,
}

impl TensorSpec {
    /// Values per row when every dimension after the batch is fixed (`[N, 4]` → 4).
    pub fn row_width(&self) -> Option<usize> {
        let shape = self.shape.as_ref()?;
        shape.iter().skip(1).try_fold(1usize, |acc, d| acc.checked_mul(usize::try_from((*d)?).ok()?))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Signature {
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    /// The program that wrote the model (`skl2onnx`), when it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub producer: Option<String>,
    /// The default-domain opset the model needs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub opset: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelYaml {
    runtime: String,
    model: String,
    #[serde(default)]
    signature: Option<SignatureYaml>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureYaml {
    inputs: Vec<TensorSpec>,
    outputs: Vec<TensorSpec>,
}

/// What registering needs to know about a model.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    /// `onnx`.
    pub runtime: String,
    /// The model file, relative to the registered path (empty when that path is the file).
    pub model_file: String,
    pub signature: Signature,
}

fn read(path: &Path) -> Result<Vec<u8>, ModelError> {
    std::fs::read(path).map_err(|source| ModelError::Read { path: path.to_path_buf(), source })
}

/// Reads the model at `path`: an `.onnx` file, or a directory with [`MODEL_YAML`].
pub fn inspect(path: &Path) -> Result<ModelInfo, ModelError> {
    if path.is_dir() && path.join(mlflow::MLMODEL).is_file() && !path.join(MODEL_YAML).is_file() {
        let mlmodel = path.join(mlflow::MLMODEL);
        let text = String::from_utf8_lossy(&read(&mlmodel)?).into_owned();
        let model = mlflow::read_mlmodel(&text)
            .map_err(|message| ModelError::BadSpec { path: mlmodel.clone(), message })?;
        if let Some(reason) = model.unservable() {
            return Err(ModelError::NotServable { path: path.to_path_buf(), reason });
        }
        return Ok(ModelInfo {
            runtime: "mlflow".into(),
            model_file: mlflow::MLMODEL.into(),
            signature: model.signature.unwrap_or_default(),
        });
    }
    if path.is_dir() {
        let yaml_path = path.join(MODEL_YAML);
        if !yaml_path.is_file() {
            return Err(ModelError::Unknown { path: path.to_path_buf() });
        }
        let text = String::from_utf8_lossy(&read(&yaml_path)?).into_owned();
        let spec: ModelYaml = serde_saphyr::from_str(&text)
            .map_err(|e| ModelError::BadSpec { path: yaml_path.clone(), message: e.to_string() })?;
        if spec.runtime != "onnx" {
            return Err(ModelError::UnsupportedRuntime { path: yaml_path, runtime: spec.runtime });
        }
        let file = path.join(&spec.model);
        let mut signature = onnx::signature(&read(&file)?)?;
        if let Some(given) = spec.signature {
            signature.inputs = given.inputs;
            signature.outputs = given.outputs;
        }
        return Ok(ModelInfo { runtime: spec.runtime, model_file: spec.model, signature });
    }
    if path.extension().is_some_and(|e| e.eq_ignore_ascii_case("onnx")) {
        let signature = onnx::signature(&read(path)?)?;
        return Ok(ModelInfo { runtime: "onnx".into(), model_file: String::new(), signature });
    }
    Err(ModelError::Unknown { path: path.to_path_buf() })
}
