#![allow(clippy::unwrap_used)]
//! ONNX Runtime behind the `Runtime` trait, on scikit-learn models converted by skl2onnx.
//!
//! Needs ONNX Runtime's library: `$CAIRN_ONNXRUNTIME`, or the test tools' `serve-venv`
//! (`.ci/run` installs it).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use cairn_serve::runtime::{
    ModelFiles, OnnxRuntime, Runtime, RuntimeError, locate_onnxruntime, wheel_locations,
};
use cairn_serve::tensor::{Data, Output, Tensor};
use serde_json::json;

fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("../cairn-model/tests/fixtures").join(name))
        .unwrap()
}

fn library() -> PathBuf {
    let mut candidates: Vec<PathBuf> =
        std::env::var_os("CAIRN_ONNXRUNTIME").map(PathBuf::from).into_iter().collect();
    candidates.extend(wheel_locations(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools/serve-venv"),
    ));
    locate_onnxruntime(&candidates).unwrap_or_else(|e| {
        panic!("{e}\n(set CAIRN_ONNXRUNTIME, or run .ci/run to install target/test-tools/serve-venv)")
    })
}

fn features(rows: &[[f32; 4]]) -> Vec<(String, Tensor)> {
    vec![("features".into(), Tensor { shape: vec![rows.len(), 4], data: Data::F32(rows.concat()) })]
}

#[test]
fn runs_skl2onnx_models_from_a_pool_of_sessions() {
    // Nothing found, and a file that is not a library: clear errors, not panics.
    let dir = tempfile::tempdir().unwrap();
    let missing = locate_onnxruntime(&[dir.path().join("nowhere")]).unwrap_err();
    assert!(missing.to_string().contains("pip install onnxruntime"), "{missing}");
    let bogus = dir.path().join("libonnxruntime.so");
    std::fs::write(&bogus, "not a library").unwrap();
    let err = OnnxRuntime::init(&bogus, 1).err().unwrap();
    assert!(matches!(err, RuntimeError::LibraryLoad { .. }), "{err}");
    assert!(err.to_string().contains("CAIRN_ONNXRUNTIME"), "{err}");

    let rt = OnnxRuntime::init(&library(), 2).unwrap();
    assert!(rt.load(ModelFiles::Bytes(b"not onnx")).is_err());

    // Scaler + logistic regression with scikit-learn's ZipMap: class maps become a matrix.
    let logistic = rt.load(ModelFiles::Bytes(&fixture("logistic.onnx"))).unwrap();
    let out = logistic.run(&features(&[[2.0, 1.0, 0.0, 0.0], [-2.0, -1.0, 0.0, 0.0]])).unwrap();
    assert_eq!(out[0].0, "output_label");
    assert_eq!(out[0].1, Output::Tensor(Tensor { shape: vec![2], data: Data::I64(vec![1, 0]) }));
    let Output::Classes { classes, probabilities, rows } = &out[1].1 else { panic!("{out:?}") };
    assert_eq!((classes.clone(), *rows), (vec![json!(0), json!(1)], 2));
    assert!(probabilities[1] > 0.9 && probabilities[2] > 0.9, "{probabilities:?}");
    assert!((probabilities[0] + probabilities[1] - 1.0).abs() < 1e-5);

    // Tree ensembles: a forest classifier and a gradient-boosted regressor.
    let forest = rt.load(ModelFiles::Bytes(&fixture("forest.onnx"))).unwrap();
    let out = forest.run(&features(&[[2.0, 1.0, 0.0, 0.0]])).unwrap();
    assert!(matches!(&out[1].1, Output::Tensor(t) if t.shape == vec![1, 2]), "{out:?}");
    let regressor = Arc::new(rt.load(ModelFiles::Bytes(&fixture("regressor.onnx"))).unwrap());
    let one = regressor.run(&features(&[[1.0, 0.0, 0.0, 0.0]])).unwrap();
    let Output::Tensor(Tensor { data: Data::F32(y), .. }) = &one[0].1 else { panic!("{one:?}") };
    assert!(y[0] > 1.0 && y[0] < 3.0, "about 2·x0 − x2: {y:?}");

    // Eight threads through a pool of two sessions get the same answers.
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (model, want) = (regressor.clone(), one.clone());
            std::thread::spawn(move || {
                for _ in 0..50 {
                    assert_eq!(model.run(&features(&[[1.0, 0.0, 0.0, 0.0]])).unwrap(), want);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }

    // Named inputs of mixed types; an unseen category is handled by the model, a wrong
    // input name is a run error.
    let churn = rt.load(ModelFiles::Bytes(&fixture("churn.onnx"))).unwrap();
    let column = |name: &str, data: Data| (name.to_owned(), Tensor { shape: vec![1, 1], data });
    let out = churn
        .run(&[
            column("age", Data::F32(vec![42.0])),
            column("tenure", Data::F32(vec![3.0])),
            column("plan", Data::Str(vec!["unheard-of".into()])),
        ])
        .unwrap();
    assert_eq!(out.len(), 2);
    let err = churn.run(&[column("nope", Data::F32(vec![1.0]))]).unwrap_err();
    assert!(matches!(err, RuntimeError::Run(_)), "{err}");
}
