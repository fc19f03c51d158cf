//! Signatures read from real scikit-learn models converted by skl2onnx (fixtures made by
//! `fixtures/generate.py`); the expected names, types and shapes are what onnxruntime's
//! Python API reports for the same files.
#![allow(clippy::unwrap_used)]

use std::path::Path;

use cairn_model::{Signature, TensorSpec, inspect};

fn fixture(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name)
}

fn spec(name: &str, dtype: &str, shape: Option<Vec<Option<i64>>>) -> TensorSpec {
    TensorSpec { name: name.into(), dtype: dtype.into(), shape, columns: None }
}

#[test]
fn a_scaler_and_logistic_regression_pipeline() {
    let info = inspect(&fixture("logistic.onnx")).unwrap();
    assert_eq!(info.runtime, "onnx");
    assert_eq!(info.signature.inputs, vec![spec("features", "float32", Some(vec![None, Some(4)]))]);
    assert_eq!(
        info.signature.outputs,
        vec![
            spec("output_label", "int64", Some(vec![None])),
            spec("output_probability", "seq(map(int64, float32))", None)
        ]
    );
    assert_eq!(info.signature.producer.as_deref(), Some("skl2onnx"));
    assert_eq!(info.signature.opset, Some(15));
}

#[test]
fn a_random_forest_without_zipmap() {
    let info = inspect(&fixture("forest.onnx")).unwrap();
    assert_eq!(
        info.signature,
        Signature {
            inputs: vec![spec("features", "float32", Some(vec![None, Some(4)]))],
            outputs: vec![
                spec("label", "int64", Some(vec![None])),
                spec("probabilities", "float32", Some(vec![None, Some(2)]))
            ],
            producer: Some("skl2onnx".into()),
            opset: Some(15),
        }
    );
}

#[test]
fn a_directory_with_cairn_model_yaml_can_override_the_signature() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("forest.onnx"), dir.path().join("m.onnx")).unwrap();
    std::fs::write(
        dir.path().join("cairn-model.yaml"),
        "runtime: onnx\nmodel: m.onnx\nsignature:\n  inputs: [{name: x, dtype: float32, shape: [null, 4]}]\n  outputs: [{name: y, dtype: int64}]\n",
    )
    .unwrap();
    let info = inspect(dir.path()).unwrap();
    assert_eq!(info.model_file, "m.onnx");
    assert_eq!(info.signature.inputs, vec![spec("x", "float32", Some(vec![None, Some(4)]))]);
    assert_eq!(info.signature.outputs, vec![spec("y", "int64", None)]);
}

#[test]
fn what_is_not_a_model_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fake = dir.path().join("fake.onnx");
    std::fs::write(&fake, b"this is not protobuf at all, just text").unwrap();
    let err = inspect(&fake).unwrap_err().to_string();
    assert!(err.contains("not an ONNX model"), "{err}");
    let err = inspect(dir.path()).unwrap_err().to_string();
    assert!(err.contains("cairn-model.yaml"), "{err}");
    std::fs::write(dir.path().join("cairn-model.yaml"), "runtime: pickle\nmodel: m.pkl\n").unwrap();
    let err = inspect(dir.path()).unwrap_err().to_string();
    assert!(err.contains("runtime `pickle`"), "{err}");
    std::fs::write(dir.path().join("cairn-model.yaml"), "runtime: onnx\nmodle: typo.onnx\n").unwrap();
    let err = inspect(dir.path()).unwrap_err().to_string();
    assert!(err.contains("is not valid"), "{err}");
}
