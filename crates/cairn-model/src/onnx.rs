//! The signature of an ONNX model: its graph's named, typed inputs and outputs, read from the
//! protobuf (`onnx.ModelProto`) without a runtime.
//!
//! Only the fields the signature needs are declared (field numbers from `onnx.proto3`);
//! protobuf skips the rest. Graph inputs that are also initializers (weights, in models from
//! older exporters) are not inputs a client sends, and are left out.

use prost::Message;

use crate::{ModelError, Signature, TensorSpec};

#[derive(Clone, PartialEq, Message)]
struct ModelProto {
    #[prost(int64, tag = "1")]
    ir_version: i64,
    #[prost(string, tag = "2")]
    producer_name: String,
    #[prost(message, optional, tag = "7")]
    graph: Option<GraphProto>,
    #[prost(message, repeated, tag = "8")]
    opset_import: Vec<OperatorSetIdProto>,
}

#[derive(Clone, PartialEq, Message)]
struct OperatorSetIdProto {
    #[prost(string, tag = "1")]
    domain: String,
    #[prost(int64, tag = "2")]
    version: i64,
}

#[derive(Clone, PartialEq, Message)]
struct GraphProto {
    #[prost(message, repeated, tag = "5")]
    initializer: Vec<TensorProto>,
    #[prost(message, repeated, tag = "11")]
    input: Vec<ValueInfoProto>,
    #[prost(message, repeated, tag = "12")]
    output: Vec<ValueInfoProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorProto {
    #[prost(string, tag = "8")]
    name: String,
}

#[derive(Clone, PartialEq, Message)]
struct ValueInfoProto {
    #[prost(string, tag = "1")]
    name: String,
    #[prost(message, optional, tag = "2")]
    r#type: Option<TypeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct TypeProto {
    #[prost(message, optional, tag = "1")]
    tensor_type: Option<TensorType>,
    #[prost(message, optional, boxed, tag = "4")]
    sequence_type: Option<Box<SequenceType>>,
    #[prost(message, optional, boxed, tag = "5")]
    map_type: Option<Box<MapType>>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorType {
    #[prost(int32, tag = "1")]
    elem_type: i32,
    #[prost(message, optional, tag = "2")]
    shape: Option<TensorShapeProto>,
}

#[derive(Clone, PartialEq, Message)]
struct SequenceType {
    #[prost(message, optional, boxed, tag = "1")]
    elem_type: Option<Box<TypeProto>>,
}

#[derive(Clone, PartialEq, Message)]
struct MapType {
    #[prost(int32, tag = "1")]
    key_type: i32,
    #[prost(message, optional, boxed, tag = "2")]
    value_type: Option<Box<TypeProto>>,
}

#[derive(Clone, PartialEq, Message)]
struct TensorShapeProto {
    #[prost(message, repeated, tag = "1")]
    dim: Vec<Dimension>,
}

#[derive(Clone, PartialEq, Message)]
struct Dimension {
    #[prost(int64, optional, tag = "1")]
    dim_value: Option<i64>,
    #[prost(string, optional, tag = "2")]
    dim_param: Option<String>,
}

/// ONNX's `TensorProto.DataType` names.
fn element_type(code: i32) -> &'static str {
    match code {
        1 => "float32",
        2 => "uint8",
        3 => "int8",
        4 => "uint16",
        5 => "int16",
        6 => "int32",
        7 => "int64",
        8 => "string",
        9 => "bool",
        10 => "float16",
        11 => "float64",
        12 => "uint32",
        13 => "uint64",
        16 => "bfloat16",
        _ => "unknown",
    }
}

/// A type as text: `float32`, or `seq(map(int64, float32))` for what scikit-learn's ZipMap
/// produces.
fn type_name(t: &TypeProto) -> (String, Option<Vec<Option<i64>>>) {
    if let Some(tensor) = &t.tensor_type {
        let shape =
            tensor.shape.as_ref().map(|s| s.dim.iter().map(|d| d.dim_value.filter(|v| *v > 0)).collect());
        return (element_type(tensor.elem_type).to_owned(), shape);
    }
    if let Some(seq) = &t.sequence_type {
        let inner = seq.elem_type.as_deref().map_or("unknown".to_owned(), |e| type_name(e).0);
        return (format!("seq({inner})"), None);
    }
    if let Some(map) = &t.map_type {
        let value = map.value_type.as_deref().map_or("unknown".to_owned(), |v| type_name(v).0);
        return (format!("map({}, {value})", element_type(map.key_type)), None);
    }
    ("unknown".to_owned(), None)
}

fn spec(v: &ValueInfoProto) -> TensorSpec {
    let (dtype, shape) = v.r#type.as_ref().map_or(("unknown".to_owned(), None), type_name);
    TensorSpec { name: v.name.clone(), dtype, shape, columns: None }
}

/// Reads the signature of the ONNX model in `bytes`.
pub fn signature(bytes: &[u8]) -> Result<Signature, ModelError> {
    let model = ModelProto::decode(bytes).map_err(|e| ModelError::NotOnnx(e.to_string()))?;
    let graph = model.graph.ok_or_else(|| ModelError::NotOnnx("the model has no graph".into()))?;
    if graph.input.is_empty() && graph.output.is_empty() {
        return Err(ModelError::NotOnnx("the graph declares no inputs or outputs".into()));
    }
    let weights: std::collections::HashSet<&str> =
        graph.initializer.iter().map(|t| t.name.as_str()).collect();
    Ok(Signature {
        inputs: graph.input.iter().filter(|i| !weights.contains(i.name.as_str())).map(spec).collect(),
        outputs: graph.output.iter().map(spec).collect(),
        producer: Some(model.producer_name).filter(|p| !p.is_empty()),
        opset: model
            .opset_import
            .iter()
            .find(|o| o.domain.is_empty() || o.domain == "ai.onnx")
            .map(|o| o.version),
    })
}
