//! The `mlflow` runtime: MLflow model directories (any flavor with a `python_function`
//! flavor) served by Python worker processes.
//!
//! Each served version gets a Python environment: with [`EnvManager::Virtualenv`], a virtual
//! environment built once from the model's `requirements.txt` and kept under the cache
//! directory by the digest of those requirements and the base interpreter's version (so
//! versions with the same requirements share one); with [`EnvManager::Local`], the given
//! interpreter as it is (MLflow's `--env-manager local`). A pool of workers per version
//! loads the model with `mlflow.pyfunc.load_model` and answers batches over a pipe in a
//! binary tensor framing (see `python_worker.py`: a small JSON header per batch, then the raw
//! little-endian buffers — nothing is parsed per row).
//!
//! Loading returns at once: the environment is built and the workers started on a thread of
//! their own, and the version is ready when every worker is ([`Model::status`] says what it
//! is waiting for, or why it failed, with the fix). A worker that dies while answering is
//! replaced; its request gets an error that says so. What the workers print goes to
//! `<model dir>.log`.

use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex, PoisonError, Weak};

use serde_json::{Value, json};

use crate::runtime::{Model, ModelFiles, Runtime, RuntimeError};
use crate::tensor::{DType, InputSpec, Output, Strictness, Tensor, from_binary, to_binary};

const WORKER: &str = include_str!("python_worker.py");

/// How a version's Python environment is made.
#[derive(Debug, Clone)]
pub enum EnvManager {
    /// This interpreter as it is; it must be able to import mlflow and the model's libraries.
    Local(PathBuf),
    /// A virtual environment per distinct `requirements.txt`, made from `python`, under `cache`.
    Virtualenv { python: PathBuf, cache: PathBuf },
}

/// Runs MLflow models in Python worker processes.
pub struct PythonRuntime {
    env: EnvManager,
    workers: usize,
}

impl PythonRuntime {
    /// `workers` processes per served version (at least one).
    pub fn new(env: EnvManager, workers: usize) -> Self {
        Self { env, workers: workers.max(1) }
    }
}

impl Runtime for PythonRuntime {
    fn name(&self) -> &'static str {
        "mlflow"
    }

    fn load(&self, files: ModelFiles<'_>) -> Result<Arc<dyn Model>, RuntimeError> {
        let ModelFiles::Directory(dir) = files else {
            return Err(RuntimeError::Load("an MLflow model is a directory with an MLmodel file".into()));
        };
        let model = Arc::new_cyclic(|me| PythonModel {
            me: me.clone(),
            dir: dir.to_path_buf(),
            log: dir.with_extension("log"),
            python: Mutex::new(None),
            state: Mutex::new(State::Starting(match self.env {
                EnvManager::Local(_) => "starting its Python workers".into(),
                EnvManager::Virtualenv { .. } => "building its Python environment".into(),
            })),
            idle: Mutex::new(Vec::new()),
            returned: Condvar::new(),
        });
        let (starting, env, workers) = (model.clone(), self.env.clone(), self.workers);
        std::thread::Builder::new()
            .name("cairn-python-start".into())
            .spawn(move || starting.start(&env, workers))
            .map_err(|e| RuntimeError::Load(format!("cannot start a thread: {e}")))?;
        Ok(model)
    }
}

enum State {
    Starting(String),
    Ready,
    Failed(String),
}

struct PythonModel {
    /// Itself, for the threads that restart workers.
    me: Weak<PythonModel>,
    dir: PathBuf,
    log: PathBuf,
    python: Mutex<Option<PathBuf>>,
    state: Mutex<State>,
    idle: Mutex<Vec<Worker>>,
    returned: Condvar,
}

/// One worker process and its pipes; killed when dropped.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PythonModel {
    fn set(&self, state: State) {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        // Under the pool's lock, so a request between checking the state and waiting for a
        // worker cannot miss the news.
        let _pool = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        self.returned.notify_all();
    }

    fn start(&self, env: &EnvManager, workers: usize) {
        let python = match env {
            EnvManager::Local(python) => Ok(python.clone()),
            EnvManager::Virtualenv { python, cache } => build_env(&self.dir, python, cache),
        };
        let python = match python {
            Ok(p) => p,
            Err(reason) => return self.set(State::Failed(reason)),
        };
        *self.python.lock().unwrap_or_else(PoisonError::into_inner) = Some(python.clone());
        self.set(State::Starting(format!("starting {workers} Python worker(s)")));
        // Workers start in parallel: each loads the model, which may take seconds.
        let started: Vec<Result<Worker, String>> = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..workers).map(|_| scope.spawn(|| self.spawn(&python))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|_| Err("a starter thread panicked".into())))
                .collect()
        });
        let mut ready = Vec::new();
        for worker in started {
            match worker {
                Ok(w) => ready.push(w),
                Err(reason) => return self.set(State::Failed(reason)),
            }
        }
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).extend(ready);
        self.set(State::Ready);
    }

    /// Starts a worker and waits until it has loaded the model.
    fn spawn(&self, python: &Path) -> Result<Worker, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .map_err(|e| format!("cannot open the workers' log {}: {e}", self.log.display()))?;
        let mut child = Command::new(python)
            .arg("-c")
            .arg(WORKER)
            .arg(&self.dir)
            .current_dir(&self.dir)
            .env("PYTHONUNBUFFERED", "1")
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| {
                format!(
                    "cannot run {}: {e}; give an interpreter with --python or CAIRN_PYTHON",
                    python.display()
                )
            })?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            return Err("the worker's pipes could not be opened".into());
        };
        let mut worker = Worker { child, stdin, stdout: BufReader::new(stdout) };
        match read_frame(&mut worker.stdout) {
            Ok((header, _)) if header["ready"] == true => Ok(worker),
            Ok((header, _)) => Err(format!(
                "{}; the workers' log is {}",
                header["error"].as_str().unwrap_or("the worker did not start").trim(),
                self.log.display()
            )),
            Err(_) => Err(format!(
                "the Python worker exited before loading the model ({}): {}",
                worker.child.wait().map_or_else(|e| e.to_string(), |s| s.to_string()),
                log_tail(&self.log)
            )),
        }
    }

    fn lease(&self) -> Result<Worker, RuntimeError> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        loop {
            if let Some(worker) = idle.pop() {
                return Ok(worker);
            }
            if let Err(reason) = self.status() {
                return Err(RuntimeError::Run(format!("the model is not ready: {reason}")));
            }
            idle = self.returned.wait(idle).unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn give_back(&self, worker: Worker) {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner).push(worker);
        self.returned.notify_one();
    }

    /// Replaces a worker that died, in the background; the pool fails when a replacement
    /// cannot start.
    fn replace(&self) {
        // A model being dropped needs no new worker.
        let Some(model) = self.me.upgrade() else { return };
        let started = std::thread::Builder::new().name("cairn-python-restart".into()).spawn(move || {
            let python = model.python.lock().unwrap_or_else(PoisonError::into_inner).clone();
            let replacement = match python {
                Some(python) => model.spawn(&python),
                None => Err("no Python environment".into()),
            };
            match replacement {
                Ok(worker) => model.give_back(worker),
                Err(reason) => {
                    model.set(State::Failed(format!("a worker died and could not be restarted: {reason}")))
                }
            }
        });
        if let Err(e) = started {
            self.set(State::Failed(format!("a worker died and no thread could restart it: {e}")));
        }
    }
}

impl Model for PythonModel {
    fn run(&self, inputs: &[(String, Tensor)]) -> Result<Vec<(String, Output)>, RuntimeError> {
        let mut header = Vec::with_capacity(inputs.len());
        let mut body = Vec::new();
        for (name, tensor) in inputs {
            let start = body.len();
            to_binary(&tensor.data, &mut body);
            header.push(json!({
                "name": name,
                "dtype": tensor.data.dtype().name(),
                "shape": tensor.shape,
                "nbytes": body.len() - start,
            }));
        }
        let mut worker = self.lease()?;
        let exchanged = write_frame(&mut worker.stdin, &json!({"inputs": header}), &body)
            .and_then(|()| read_frame(&mut worker.stdout));
        let (answer, payload) = match exchanged {
            Ok(answer) => answer,
            Err(e) => {
                // Its pipe broke: it is gone, or no longer to be trusted.
                let _ = worker.child.kill();
                let status = worker.child.wait().map_or_else(|_| e.to_string(), |s| s.to_string());
                drop(worker);
                self.replace();
                return Err(RuntimeError::Crashed(format!(
                    "the Python worker died while predicting ({status}); it is being restarted. The workers' log is {}",
                    self.log.display()
                )));
            }
        };
        self.give_back(worker);
        if let Some(error) = answer["error"].as_str() {
            return Err(RuntimeError::Run(error.to_owned()));
        }
        decode_outputs(&answer, &payload)
    }

    fn blocks(&self) -> bool {
        true
    }

    fn status(&self) -> Result<(), String> {
        match &*self.state.lock().unwrap_or_else(PoisonError::into_inner) {
            State::Ready => Ok(()),
            State::Starting(what) => Err(format!("starting: {what}")),
            State::Failed(reason) => Err(reason.clone()),
        }
    }
}

fn decode_outputs(answer: &Value, payload: &[u8]) -> Result<Vec<(String, Output)>, RuntimeError> {
    let specs = answer["outputs"]
        .as_array()
        .ok_or_else(|| RuntimeError::Output("the worker sent no outputs".into()))?;
    let mut outputs = Vec::with_capacity(specs.len());
    let mut at = 0usize;
    for spec in specs {
        let name = spec["name"].as_str().unwrap_or("predictions").to_owned();
        let dtype = spec["dtype"]
            .as_str()
            .and_then(DType::from_name)
            .ok_or_else(|| RuntimeError::Output(format!("output `{name}` has an unknown type: {spec}")))?;
        let shape: Vec<usize> = spec["shape"]
            .as_array()
            .map(|dims| dims.iter().filter_map(Value::as_u64).map(|d| d as usize).collect())
            .unwrap_or_default();
        let size = spec["nbytes"].as_u64().unwrap_or(0) as usize;
        let bytes = payload
            .get(at..at + size)
            .ok_or_else(|| RuntimeError::Output(format!("output `{name}` is cut short")))?;
        at += size;
        let row_shape = vec![None; shape.len().saturating_sub(1)];
        let expected = InputSpec { name: name.clone(), dtype, row_shape };
        // A scalar answer is one row.
        let shape = if shape.is_empty() { vec![1] } else { shape };
        let tensor = from_binary(&expected, &shape, bytes, Strictness { allow_nan: true })
            .map_err(|e| RuntimeError::Output(format!("output `{name}`: {}", e.message)))?;
        outputs.push((name, Output::Tensor(tensor)));
    }
    Ok(outputs)
}

/// One frame in one write (a pipe write is a system call; the frame is small next to the
/// model's work).
fn write_frame(stream: &mut impl Write, header: &Value, body: &[u8]) -> std::io::Result<()> {
    let header = header.to_string();
    let mut frame = Vec::with_capacity(4 + header.len() + body.len());
    frame.extend_from_slice(&(header.len() as u32).to_le_bytes());
    frame.extend_from_slice(header.as_bytes());
    frame.extend_from_slice(body);
    stream.write_all(&frame)?;
    stream.flush()
}

/// The largest answer header accepted from a worker.
const MAX_HEADER: usize = 16 << 20;

fn read_frame(stream: &mut impl Read) -> std::io::Result<(Value, Vec<u8>)> {
    let mut length = [0u8; 4];
    stream.read_exact(&mut length)?;
    let length = u32::from_le_bytes(length) as usize;
    if length > MAX_HEADER {
        return Err(std::io::Error::other(format!("a frame header of {length} bytes")));
    }
    let mut header = vec![0u8; length];
    stream.read_exact(&mut header)?;
    let header: Value = serde_json::from_slice(&header).map_err(std::io::Error::other)?;
    let size: u64 = header["outputs"]
        .as_array()
        .map_or(0, |specs| specs.iter().filter_map(|s| s["nbytes"].as_u64()).sum());
    let mut payload = vec![0u8; size as usize];
    stream.read_exact(&mut payload)?;
    Ok((header, payload))
}

/// The last lines of a log, for a reason.
fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().rev().take(5).collect();
    if lines.is_empty() {
        format!("see {}", path.display())
    } else {
        format!("{} (from {})", lines.into_iter().rev().collect::<Vec<_>>().join(" | "), path.display())
    }
}

/// The interpreter of a virtual environment with the model's requirements, built under
/// `cache` unless one with the same requirements and base interpreter is there.
fn build_env(dir: &Path, python: &Path, cache: &Path) -> Result<PathBuf, String> {
    let requirements = dir.join("requirements.txt");
    let wanted = std::fs::read(&requirements).map_err(|e| {
        format!(
            "the model has no readable requirements.txt ({e}), so its environment cannot be built; log it with mlflow 2 or newer, or serve with --env-manager local"
        )
    })?;
    let version = Command::new(python)
        .arg("--version")
        .output()
        .map_err(|e| format!("cannot run {}: {e}; give an interpreter with --python", python.display()))?;
    let mut key = version.stdout;
    key.extend_from_slice(&version.stderr);
    key.push(0);
    key.extend_from_slice(&wanted);
    let digest = cairn_hash::hash_bytes(&key).to_string();
    let hex = digest.rsplit(':').next().unwrap_or(&digest);
    let env = cache.join(&hex[..24.min(hex.len())]);
    let interpreter = env.join("bin/python");
    let marker = env.join(".cairn-env-ready");
    if marker.is_file() {
        return Ok(interpreter);
    }
    std::fs::create_dir_all(cache).map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
    // Built aside and renamed into place, so a killed build leaves no half environment in use.
    let building = cache.join(format!(
        ".building-{}-{}",
        std::process::id(),
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos())
    ));
    let run = |command: &mut Command, what: &str| -> Result<(), String> {
        let output = command.output().map_err(|e| format!("cannot {what}: {e}"))?;
        if output.status.success() {
            return Ok(());
        }
        let stderr = String::from_utf8_lossy(&output.stderr);
        let tail: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).rev().take(3).collect();
        Err(format!("cannot {what}: {}", tail.into_iter().rev().collect::<Vec<_>>().join(" | ")))
    };
    let built =
        run(Command::new(python).arg("-m").arg("venv").arg(&building), "create a virtual environment")
            .and_then(|()| {
                run(
                    Command::new(building.join("bin/python"))
                        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
                        .arg(&requirements),
                    "install the model's requirements.txt",
                )
            })
            .and_then(|()| std::fs::write(building.join(".cairn-env-ready"), b"").map_err(|e| e.to_string()));
    if let Err(reason) = built {
        let _ = std::fs::remove_dir_all(&building);
        return Err(format!("{reason}; fix the model's requirements, or serve with --env-manager local"));
    }
    // Another server may have built the same environment meanwhile: keep the first.
    if std::fs::rename(&building, &env).is_err() {
        let _ = std::fs::remove_dir_all(&building);
        if !marker.is_file() {
            return Err(format!("cannot move the new environment to {}", env.display()));
        }
    }
    Ok(interpreter)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Data;

    #[test]
    fn frames_carry_a_header_and_raw_buffers() {
        let mut body = Vec::new();
        to_binary(&Data::F64(vec![1.5, -2.0]), &mut body);
        to_binary(&Data::Str(vec!["a".into(), "bc".into()]), &mut body);
        let header = json!({"outputs": [
            {"name": "y", "dtype": "float64", "shape": [2], "nbytes": 16},
            {"name": "label", "dtype": "string", "shape": [2], "nbytes": 11},
        ]});
        let mut wire = Vec::new();
        write_frame(&mut wire, &header, &body).unwrap();
        let (read, payload) = read_frame(&mut wire.as_slice()).unwrap();
        let outputs = decode_outputs(&read, &payload).unwrap();
        assert_eq!(outputs[0].1, Output::Tensor(Tensor { shape: vec![2], data: Data::F64(vec![1.5, -2.0]) }));
        assert_eq!(
            outputs[1].1,
            Output::Tensor(Tensor { shape: vec![2], data: Data::Str(vec!["a".into(), "bc".into()]) })
        );
    }

    #[test]
    fn a_short_or_oversized_frame_is_an_error() {
        let mut wire = Vec::new();
        write_frame(
            &mut wire,
            &json!({"outputs": [{"name": "y", "dtype": "float64", "shape": [2], "nbytes": 16}]}),
            &[0; 8],
        )
        .unwrap();
        assert!(read_frame(&mut wire.as_slice()).is_err());
        let huge = (u32::MAX).to_le_bytes();
        assert!(read_frame(&mut huge.as_slice()).is_err());
    }
}
