//! Runtimes run models. A [`Runtime`] loads a model's files into a [`Model`] that runs
//! batches: ONNX Runtime (`OnnxRuntime`, in `crate::onnx`, the `onnx` feature) for ONNX files,
//! and Python workers ([`crate::python::PythonRuntime`]) for MLflow models.
//!
//! ONNX Runtime is loaded at run time from a shared library (`ort`'s `load-dynamic`), so the
//! build downloads nothing. [`locate_onnxruntime`] takes the first of the caller's candidates
//! that holds it (the CLI tries `$CAIRN_ONNXRUNTIME`, `$ORT_DYLIB_PATH`, then the
//! `onnxruntime` wheel — `onnxruntime/capi/libonnxruntime.so.*` — in the active virtual
//! environment, the project's `.venv` and the user's site-packages; see [`wheel_locations`]).
//! The server loads it before anything else, so a missing library is one clear error at
//! startup.
//!
//! Sessions are pooled: a model holds one session per core, each running single-threaded,
//! so concurrent requests run on all cores without contending inside one session.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::tensor::{Output, Tensor};

#[cfg(feature = "onnx")]
pub use crate::onnx::OnnxRuntime;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error(
        "ONNX Runtime was not found (looked in: {searched}); install it with `pip install onnxruntime` in the project's virtual environment, or point CAIRN_ONNXRUNTIME at libonnxruntime.so"
    )]
    LibraryNotFound { searched: String },
    #[error(
        "cannot load ONNX Runtime from `{path}`: {message}; point CAIRN_ONNXRUNTIME at a working libonnxruntime.so (1.17 or newer)"
    )]
    LibraryLoad { path: PathBuf, message: String },
    #[error("ONNX Runtime cannot load this model: {0}")]
    Load(String),
    #[error("the model failed on this input: {0}")]
    Run(String),
    /// The process running the model died (not the input's fault).
    #[error("{0}")]
    Crashed(String),
    #[error("the model answered an output Cairn cannot return: {0}")]
    Output(String),
}

/// A model's files as a runtime takes them.
#[derive(Debug, Clone, Copy)]
pub enum ModelFiles<'a> {
    /// One model file's bytes (ONNX).
    Bytes(&'a [u8]),
    /// A directory of files (an MLflow model), already verified and laid out on disk.
    Directory(&'a Path),
}

/// Something that runs models of one kind (`onnx`, `mlflow`).
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    /// Loads a model from its files.
    fn load(&self, files: ModelFiles<'_>) -> Result<Arc<dyn Model>, RuntimeError>;
}

/// A loaded model.
pub trait Model: Send + Sync {
    /// Runs one batch: `inputs` in any order, by name; answers every output, by name, in the
    /// model's order.
    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Output)>, RuntimeError>;

    /// Whether it can answer now; `Err` says what it is waiting for (a runtime that starts in
    /// the background) or why it cannot.
    fn status(&self) -> Result<(), String> {
        Ok(())
    }

    /// Whether `run` waits on something outside this process (a worker), so that even a
    /// small batch must not run on the server's I/O threads.
    fn blocks(&self) -> bool {
        false
    }
}

/// Where the `onnxruntime` wheel keeps its library inside a Python environment (a virtual
/// environment's root, or a `lib` directory holding `python3.X/`).
pub fn wheel_locations(env: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for lib in [env.join("lib"), env.join("lib64"), env.to_path_buf()] {
        if let Ok(entries) = std::fs::read_dir(&lib) {
            for entry in entries.flatten() {
                if entry.file_name().to_string_lossy().starts_with("python") {
                    out.push(entry.path().join("site-packages/onnxruntime/capi"));
                }
            }
        }
    }
    out
}

/// The library at `candidate`: the file itself, or `libonnxruntime.so*` inside a directory.
fn library_in(candidate: &Path) -> Option<PathBuf> {
    if candidate.is_file() {
        return Some(candidate.to_path_buf());
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir(candidate)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                n.starts_with("libonnxruntime.so")
                    || n.starts_with("libonnxruntime.") && n.ends_with(".dylib")
            })
        })
        .collect();
    // `libonnxruntime.so.1.22.0` before a bare symlink name: the longest name is the real file.
    found.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    found.into_iter().next()
}

/// Finds ONNX Runtime's shared library: the first candidate that is the library, or a
/// directory holding `libonnxruntime.so*`.
pub fn locate_onnxruntime(candidates: &[PathBuf]) -> Result<PathBuf, RuntimeError> {
    for candidate in candidates {
        if let Some(found) = library_in(candidate) {
            return Ok(found);
        }
    }
    let searched = if candidates.is_empty() {
        "nowhere: no CAIRN_ONNXRUNTIME, no virtual environment".to_owned()
    } else {
        candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    };
    Err(RuntimeError::LibraryNotFound { searched })
}
