//! Inference requests come from any HTTP or gRPC client. The body is JSON in one of the
//! shapes the server takes, or binary tensor data; decoding it into tensors for an arbitrary
//! signature never panics, whatever the values, shapes and types, and binary data that decodes
//! encodes back to the same bytes.
#![no_main]

use cairn_serve::tensor::{DType, InputSpec, Strictness, column, flatten, from_binary, from_flat, to_binary};
use serde_json::Value;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else { return };
    let dtypes = [DType::F32, DType::F64, DType::I64, DType::I32, DType::Bool, DType::Str];
    let dtype = dtypes[usize::from(selector) % dtypes.len()];
    let row_shape = match selector >> 4 {
        0 => vec![],
        1 => vec![None],
        2 => vec![Some(2)],
        3 => vec![Some(2), None],
        _ => vec![Some(usize::from(selector & 7))],
    };
    let spec = InputSpec { name: "x".into(), dtype, row_shape };
    let strict = Strictness { allow_nan: selector & 8 != 0 };
    // The binary tensor data extension (HTTP and gRPC's raw contents): the body's bytes for a
    // shape chosen from its first bytes.
    if let Some((dims, bytes)) = body.split_first_chunk::<2>() {
        let shape = [usize::from(dims[0]), usize::from(dims[1])];
        if let Ok(tensor) = from_binary(&spec, &shape, bytes, strict) {
            let mut again = Vec::new();
            to_binary(&tensor.data, &mut again);
            assert_eq!(again, bytes, "binary data re-encodes to the bytes it came from");
        }
    }
    let Ok(value) = serde_json::from_slice::<Value>(body) else { return };
    // Native and MLflow bodies: rows of values.
    if let Value::Array(rows) = &value {
        let _ = column(&spec, rows.iter(), strict);
    }
    // KServe v2: a flat `data` list with a client-given `shape`.
    if let Some(input) = value.get("inputs").and_then(|i| i.get(0)) {
        let shape: Vec<usize> = input
            .get("shape")
            .and_then(Value::as_array)
            .map(|dims| dims.iter().filter_map(Value::as_u64).map(|d| d as usize).collect())
            .unwrap_or_default();
        if let Some(data) = input.get("data") {
            let mut leaves = Vec::new();
            flatten(data, &mut leaves);
            let _ = from_flat(&spec, &shape, &leaves, strict);
        }
    }
});
