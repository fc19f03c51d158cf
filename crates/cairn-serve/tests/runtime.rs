#![allow(clippy::unwrap_used)]
//! The ONNX runtime on scikit-learn models converted by skl2onnx.

use std::path::{Path, PathBuf};

use cairn_serve::runtime::{OnnxRuntime, Runtime, locate_onnxruntime};
use cairn_serve::tensor::{Data, Output, Tensor};

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-model/tests/fixtures").join(name)).unwrap()
}

fn runtime() -> OnnxRuntime {
    let lib: PathBuf = locate_onnxruntime(None).unwrap();
    OnnxRuntime::init(&lib, 2).unwrap()
}

#[test]
fn runs_logistic_forest_regressor_and_churn() {
    let rt = runtime();
    let features = Tensor { shape: vec![2, 4], data: Data::F32(vec![1.0, 0.5, 0.0, 0.0, -1.0, -0.5, 0.0, 0.0]) };
    let logistic = rt.load(&fixture("logistic.onnx")).unwrap();
    let out = logistic.run(&[("features".into(), features.clone())]).unwrap();
    println!("{out:?}");
    let forest = rt.load(&fixture("forest.onnx")).unwrap();
    println!("{:?}", forest.run(&[("features".into(), features.clone())]).unwrap());
    let reg = rt.load(&fixture("regressor.onnx")).unwrap();
    println!("{:?}", reg.run(&[("features".into(), features)]).unwrap());
    let churn = rt.load(&fixture("churn.onnx")).unwrap();
    let out = churn.run(&[
        ("age".into(), Tensor { shape: vec![1, 1], data: Data::F32(vec![42.0]) }),
        ("tenure".into(), Tensor { shape: vec![1, 1], data: Data::F32(vec![3.0]) }),
        ("plan".into(), Tensor { shape: vec![1, 1], data: Data::Str(vec!["basic".into()]) }),
    ]).unwrap();
    println!("{out:?}");
    assert!(matches!(out[1].1, Output::Classes { .. }));
}
