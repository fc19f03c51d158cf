//! Python tools the tests drive (a real S3 server, the real `mlflow` client), each installed
//! from PyPI into its own virtual environment under `target/test-tools/` by the first test
//! that needs it (`.ci/run` does it ahead of time), pinned so every machine tests the same.

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn tools_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-tools")
}

/// `target/test-tools/<venv>/bin/<binary>`, installing `spec` there first if needed.
pub fn venv_tool(venv: &str, spec: &str, binary: &str) -> PathBuf {
    let dir = tools_dir();
    std::fs::create_dir_all(&dir).expect("create target/test-tools");
    let path = dir.join(venv).join("bin").join(binary);
    // One installer at a time across test processes.
    let lock = std::fs::File::create(dir.join("install.lock")).expect("create the install lock");
    lock.lock().expect("lock target/test-tools");
    let marker = dir.join(venv).join(".installed");
    if !marker.exists() || std::fs::read_to_string(&marker).ok().as_deref() != Some(spec) {
        let venv = dir.join(venv);
        let status = Command::new("python3").arg("-m").arg("venv").arg(&venv).status().expect("python3 runs");
        assert!(status.success(), "python3 -m venv {} failed", venv.display());
        let status = Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(spec.split_whitespace())
            .status()
            .expect("pip runs");
        assert!(status.success(), "pip install {spec} into {} failed", venv.display());
        std::fs::write(&marker, spec).expect("mark the tool installed");
    }
    path
}

/// The real `mlflow` client, pinned: with the SQLAlchemy `mlflow server` 3.6 starts with (the
/// autolog test compares against one), and `onnx` and `onnxruntime` for `mlflow.onnx.log_model`.
pub const MLFLOW: &str = "mlflow==3.6.0 sqlalchemy<2.1 onnx==1.23.2 onnxruntime==1.32.0";

/// A Python interpreter that can `import mlflow`: `CAIRN_TEST_MLFLOW_PYTHON`, else the test
/// tools' `mlflow-venv`.
pub fn mlflow_python() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_TEST_MLFLOW_PYTHON") {
        return PathBuf::from(path);
    }
    venv_tool("mlflow-venv", MLFLOW, "python")
}

/// ONNX Runtime's Python package (whose shared library `cairn serve` loads) and the real
/// `tritonclient`, pinned.
pub const SERVE: &str = "onnxruntime==1.32.0 tritonclient[http,grpc]==2.73.0";

/// A Python interpreter with `onnxruntime` and `tritonclient`: `CAIRN_TEST_SERVE_PYTHON`,
/// else the test tools' `serve-venv`.
pub fn serve_python() -> PathBuf {
    if let Some(path) = std::env::var_os("CAIRN_TEST_SERVE_PYTHON") {
        return PathBuf::from(path);
    }
    venv_tool("serve-venv", SERVE, "python")
}

/// `libonnxruntime.so` from the onnxruntime wheel next to [`serve_python`].
pub fn onnxruntime_library() -> PathBuf {
    let output = Command::new(serve_python())
        .args([
            "-c",
            "import onnxruntime, os; print(os.path.join(os.path.dirname(onnxruntime.__file__), 'capi'))",
        ])
        .output()
        .expect("python runs");
    assert!(
        output.status.success(),
        "import onnxruntime failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}
