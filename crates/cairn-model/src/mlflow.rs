//! MLflow model directories: an `MLmodel` file (YAML) naming the model's flavors, and the files
//! they load. Cairn serves any flavor that has a `python_function` flavor, through its Python
//! runtime (`mlflow`).
//!
//! The signature comes from `MLmodel`'s `signature` (two JSON strings, `inputs` and
//! `outputs`), in either of MLflow's forms:
//!
//! - column-based: `[{"type": "double", "name": "age"}, ...]`: one `[N]` input per column,
//!   typed as MLflow's column types map (`double` → float64, `float` → float32, `long` →
//!   int64, `integer` → int32, `boolean` → bool, `string` → string);
//! - tensor-based: `[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 4]}}]`:
//!   named inputs as given, an unnamed one as `input` (`-1` is any size).
//!
//! The environment comes from `python_env.yaml` (the Python version) and `requirements.txt`.

use serde::Deserialize;
use serde_json::Value;

use crate::{Signature, TensorSpec};

/// The name of an MLflow model directory's description file.
pub const MLMODEL: &str = "MLmodel";

/// The name an unnamed tensor input gets.
pub const UNNAMED_INPUT: &str = "input";

/// What Cairn needs from an `MLmodel` file.
#[derive(Debug, Clone, PartialEq)]
pub struct MlflowModel {
    /// Every flavor the model was saved with (`python_function`, `sklearn`, ...).
    pub flavors: Vec<String>,
    /// The `python_function` flavor's loader (`mlflow.sklearn`), when there is one.
    pub loader_module: Option<String>,
    /// The Python version it was saved with (`3.11.7`).
    pub python_version: Option<String>,
    /// `None` when the model was logged without a signature.
    pub signature: Option<Signature>,
    /// Whether the inputs are columns of a table (as opposed to tensors).
    pub columns: bool,
}

impl MlflowModel {
    /// Why Cairn cannot serve it, with the fix; `None` when it can.
    pub fn unservable(&self) -> Option<String> {
        if self.loader_module.is_none() && !self.flavors.iter().any(|f| f == "python_function") {
            return Some(format!(
                "the model has no python_function flavor (it has: {}), so no Python process can load it; log it with a flavor that has one (mlflow.sklearn, mlflow.pyfunc, ...)",
                if self.flavors.is_empty() { "none".to_owned() } else { self.flavors.join(", ") }
            ));
        }
        if self.signature.as_ref().is_none_or(|s| s.inputs.is_empty()) {
            return Some(
                "the model has no input signature, so requests cannot be typed; log it with `input_example=` or `signature=`"
                    .to_owned(),
            );
        }
        None
    }
}

#[derive(Debug, Deserialize)]
struct MlmodelYaml {
    #[serde(default)]
    flavors: serde_json::Map<String, Value>,
    #[serde(default)]
    signature: Option<SignatureYaml>,
}

#[derive(Debug, Deserialize)]
struct SignatureYaml {
    #[serde(default)]
    inputs: Option<String>,
    #[serde(default)]
    outputs: Option<String>,
}

/// Reads an `MLmodel` file's text.
pub fn read_mlmodel(text: &str) -> Result<MlflowModel, String> {
    let yaml: MlmodelYaml =
        serde_saphyr::from_str(text).map_err(|e| format!("MLmodel is not valid YAML: {e}"))?;
    let pyfunc = yaml.flavors.get("python_function");
    let text_of = |key: &str| pyfunc.and_then(|f| f.get(key)).and_then(Value::as_str).map(str::to_owned);
    let (signature, columns) = match &yaml.signature {
        Some(s) => {
            let (inputs, columns) = match &s.inputs {
                Some(text) => specs(text, "inputs")?,
                None => (Vec::new(), false),
            };
            let (outputs, _) = match &s.outputs {
                Some(text) => specs(text, "outputs")?,
                None => (Vec::new(), false),
            };
            (Some(Signature { inputs, outputs, producer: Some("mlflow".into()), opset: None }), columns)
        }
        None => (None, false),
    };
    Ok(MlflowModel {
        flavors: yaml.flavors.keys().cloned().collect(),
        loader_module: text_of("loader_module"),
        python_version: text_of("python_version"),
        signature,
        columns,
    })
}

/// MLflow's column type as a tensor dtype.
fn column_dtype(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "double" => "float64",
        "float" => "float32",
        "long" => "int64",
        "integer" => "int32",
        "boolean" => "bool",
        "string" | "datetime" => "string",
        _ => return None,
    })
}

/// numpy's dtype names as Cairn's.
fn tensor_dtype(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "float64" | "double" => "float64",
        "float32" | "float" => "float32",
        "int64" => "int64",
        "int32" | "int16" | "int8" | "uint8" | "uint16" => "int32",
        "uint32" | "uint64" => "int64",
        "bool" => "bool",
        "str" | "object" => "string",
        _ => return None,
    })
}

/// One side of a signature (a JSON list) as tensor specs, and whether it is column-based.
fn specs(text: &str, side: &str) -> Result<(Vec<TensorSpec>, bool), String> {
    let items: Vec<Value> = serde_json::from_str(text)
        .map_err(|e| format!("MLmodel's signature {side} are not a JSON list: {e}"))?;
    let mut out = Vec::with_capacity(items.len());
    let mut columns = false;
    for (i, item) in items.iter().enumerate() {
        let kind = item.get("type").and_then(Value::as_str).unwrap_or_default();
        let name = item.get("name").and_then(Value::as_str).map(str::to_owned);
        if kind == "tensor" {
            let spec =
                item.get("tensor-spec").ok_or_else(|| format!("signature {side}[{i}] has no tensor-spec"))?;
            let dtype = spec.get("dtype").and_then(Value::as_str).unwrap_or_default();
            let dtype = tensor_dtype(dtype).ok_or_else(|| {
                format!("signature {side}[{i}] has dtype `{dtype}`, which Cairn cannot send")
            })?;
            let shape = spec
                .get("shape")
                .and_then(Value::as_array)
                .map(|dims| dims.iter().map(|d| d.as_i64().filter(|&d| d >= 0)).collect::<Vec<_>>());
            let default = if side == "inputs" { UNNAMED_INPUT } else { "predictions" };
            let name = name.unwrap_or_else(|| {
                if items.len() == 1 { default.to_owned() } else { format!("{default}_{i}") }
            });
            out.push(TensorSpec { name, dtype: dtype.to_owned(), shape, columns: None });
        } else {
            let dtype = column_dtype(kind).ok_or_else(|| {
                format!("signature {side}[{i}] has column type `{kind}`, which Cairn cannot send")
            })?;
            columns = true;
            let name = name.unwrap_or_else(|| {
                if side == "outputs" && items.len() == 1 { "predictions".to_owned() } else { i.to_string() }
            });
            out.push(TensorSpec { name, dtype: dtype.to_owned(), shape: Some(vec![None]), columns: None });
        }
    }
    Ok((out, columns))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENSOR: &str = r#"
flavors:
  python_function:
    env: {virtualenv: python_env.yaml}
    loader_module: mlflow.sklearn
    python_version: 3.11.7
  sklearn: {pickled_model: model.pkl}
signature:
  inputs: '[{"type": "tensor", "tensor-spec": {"dtype": "float64", "shape": [-1, 2]}}]'
  outputs: '[{"type": "tensor", "tensor-spec": {"dtype": "int64", "shape": [-1]}}]'
  params: null
"#;

    #[test]
    fn tensor_signatures_become_one_named_input() {
        let model = read_mlmodel(TENSOR).unwrap();
        assert_eq!(model.loader_module.as_deref(), Some("mlflow.sklearn"));
        assert_eq!(model.python_version.as_deref(), Some("3.11.7"));
        let signature = model.signature.clone().unwrap();
        assert_eq!(signature.inputs[0].name, "input");
        assert_eq!(signature.inputs[0].dtype, "float64");
        assert_eq!(signature.inputs[0].shape, Some(vec![None, Some(2)]));
        assert_eq!(signature.outputs[0].name, "predictions");
        assert!(!model.columns);
        assert_eq!(model.unservable(), None);
    }

    #[test]
    fn column_signatures_become_one_input_per_column() {
        let text = r#"
flavors: {python_function: {loader_module: mlflow.pyfunc.model}}
signature:
  inputs: '[{"type": "double", "name": "age", "required": true}, {"type": "string", "name": "plan"}]'
  outputs: '[{"type": "long", "required": true}]'
"#;
        let model = read_mlmodel(text).unwrap();
        let signature = model.signature.unwrap();
        let inputs: Vec<(&str, &str)> =
            signature.inputs.iter().map(|s| (s.name.as_str(), s.dtype.as_str())).collect();
        assert_eq!(inputs, [("age", "float64"), ("plan", "string")]);
        assert!(model.columns);
    }

    #[test]
    fn what_cannot_be_served_says_why() {
        let no_pyfunc = read_mlmodel("flavors: {keras: {}}\n").unwrap();
        assert!(no_pyfunc.unservable().unwrap().contains("no python_function flavor"));
        let no_signature =
            read_mlmodel("flavors: {python_function: {loader_module: mlflow.sklearn}}\n").unwrap();
        assert!(no_signature.unservable().unwrap().contains("input_example"));
        assert!(read_mlmodel("signature: {inputs: 'not json'}\n").is_err());
    }
}
