//! The prediction log: every request and answer, off the hot path, in Parquet segments.
//!
//! Handlers hand a [`Record`] to a bounded channel and move on; one writer thread owns the
//! files. Layout under the log directory (default `.cairn/predictions/`):
//!
//! - `wal-<pid>-<start ms>.jsonl`: the open segment's rows as JSON lines, appended and
//!   `fdatasync`ed once a second, so a crash loses at most the last second. The writer holds
//!   an exclusive lock on it while it runs.
//! - `seg-<first ms>-<last ms>-<pid>-<n>.parquet`: closed segments, written whole (temp file,
//!   fsync, rename) when the open one reaches `segment_bytes` or `segment_age`, and on
//!   graceful shutdown. The WAL is removed only after its segment is in place.
//!
//! A WAL nobody holds a lock on is a crashed server's: the next server (or `cairn trace`)
//! turns it into a segment first.
//!
//! Segment schema (one row per prediction; a shadow version's answer is a row of its own
//! with the same trace id and role `shadow`):
//!
//! | column | type | |
//! |---|---|---|
//! | `trace_id` | utf8 | 32 hex digits; the first 12 are the milliseconds since the epoch |
//! | `time_ms` | int64 | when the request arrived |
//! | `endpoint` | utf8 | the model name it was sent to |
//! | `model`, `version` | utf8, int64 | the version that answered |
//! | `role` | utf8 | `primary`, `canary`, `shadow` or `direct` (a version asked for by number) |
//! | `protocol` | utf8 | `native`, `kserve` or `mlflow` |
//! | `status` | int32 | the HTTP status |
//! | `latency_us` | int64 | from request to answer, in the server |
//! | `rows` | int64 | rows predicted |
//! | `inputs`, `outputs` | utf8 | JSON: `{input: [rows]}` and `{output: [rows]}` |
//! | `error` | utf8, nullable | why it failed |

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use arrow_schema::{DataType, Field, Schema};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::tensor::{Data, Output, Tensor};

/// One logged prediction, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub trace_id: String,
    pub time_ms: i64,
    pub endpoint: String,
    pub model: String,
    pub version: i64,
    pub role: String,
    pub protocol: String,
    pub status: i32,
    pub latency_us: i64,
    pub rows: i64,
    pub inputs: String,
    pub outputs: String,
    pub error: Option<String>,
}

/// What a handler hands over: the tensors themselves; turning them into JSON is the writer's
/// work, not the request's.
pub struct Record {
    pub trace_id: String,
    pub time_ms: i64,
    pub endpoint: String,
    pub model: String,
    pub version: i64,
    pub role: &'static str,
    pub protocol: &'static str,
    pub status: u16,
    pub latency_us: i64,
    pub inputs: Arc<Vec<(String, Tensor)>>,
    pub outputs: Option<Vec<(String, Output)>>,
    pub error: Option<String>,
}

impl Record {
    fn entry(self) -> Entry {
        let rows = self.inputs.first().map_or(0, |(_, t)| t.rows() as i64);
        // Written straight into strings: this runs for every prediction.
        let mut inputs = String::with_capacity(64);
        inputs.push('{');
        for (i, (name, t)) in self.inputs.iter().enumerate() {
            if i > 0 {
                inputs.push(',');
            }
            push_str(&mut inputs, name);
            inputs.push(':');
            push_nested(&mut inputs, &t.data, &t.shape, 0);
        }
        inputs.push('}');
        let mut outputs = String::with_capacity(64);
        outputs.push('{');
        for (i, (name, out)) in self.outputs.iter().flatten().enumerate() {
            if i > 0 {
                outputs.push(',');
            }
            push_str(&mut outputs, name);
            outputs.push(':');
            match out {
                Output::Tensor(t) => {
                    // One value per row (a `[rows, 1]` tensor as a list of scalars).
                    let width = t.width();
                    outputs.push('[');
                    for r in 0..t.rows() {
                        if r > 0 {
                            outputs.push(',');
                        }
                        if width == 1 {
                            push_value(&mut outputs, &t.data, r);
                        } else {
                            push_nested(&mut outputs, &t.data, &t.shape[1..], r * width);
                        }
                    }
                    outputs.push(']');
                }
                Output::Classes { classes, probabilities, rows } => {
                    let k = classes.len();
                    outputs.push('[');
                    for r in 0..*rows {
                        if r > 0 {
                            outputs.push(',');
                        }
                        outputs.push('{');
                        for (j, class) in classes.iter().enumerate() {
                            if j > 0 {
                                outputs.push(',');
                            }
                            match class {
                                Value::String(s) => push_str(&mut outputs, s),
                                other => push_str(&mut outputs, &other.to_string()),
                            }
                            outputs.push(':');
                            push_f32(&mut outputs, probabilities[r * k + j]);
                        }
                        outputs.push('}');
                    }
                    outputs.push(']');
                }
            }
        }
        outputs.push('}');
        Entry {
            trace_id: self.trace_id,
            time_ms: self.time_ms,
            endpoint: self.endpoint,
            model: self.model,
            version: self.version,
            role: self.role.to_owned(),
            protocol: self.protocol.to_owned(),
            status: i32::from(self.status),
            latency_us: self.latency_us,
            rows,
            inputs,
            outputs,
            error: self.error,
        }
    }
}

fn push_str(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        out.push_str(&Value::from(s).to_string());
    }
}

fn push_float(out: &mut String, x: impl std::fmt::Display + Copy, finite: bool, integral: bool) {
    use std::fmt::Write as _;
    if !finite {
        out.push_str("null");
    } else {
        let _ = write!(out, "{x}");
        if integral {
            out.push_str(".0");
        }
    }
}

fn push_f32(out: &mut String, x: f32) {
    push_float(out, x, x.is_finite(), x.is_finite() && x.fract() == 0.0 && x.abs() < 1e16);
}

fn push_value(out: &mut String, data: &Data, i: usize) {
    use std::fmt::Write as _;
    match data {
        Data::F32(v) => push_f32(out, v[i]),
        Data::F64(v) => push_float(
            out,
            v[i],
            v[i].is_finite(),
            v[i].is_finite() && v[i].fract() == 0.0 && v[i].abs() < 1e16,
        ),
        Data::I64(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::I32(v) => {
            let _ = write!(out, "{}", v[i]);
        }
        Data::Bool(v) => out.push_str(if v[i] { "true" } else { "false" }),
        Data::Str(v) => push_str(out, &v[i]),
    }
}

/// `data` from `offset` as nested lists of `dims`.
fn push_nested(out: &mut String, data: &Data, dims: &[usize], offset: usize) {
    match dims {
        [] => push_value(out, data, offset),
        [n, rest @ ..] => {
            let stride: usize = rest.iter().product();
            out.push('[');
            for i in 0..*n {
                if i > 0 {
                    out.push(',');
                }
                push_nested(out, data, rest, offset + i * stride);
            }
            out.push(']');
        }
    }
}

/// A new trace id: 12 hex digits of milliseconds since the epoch, then 20 random ones.
pub fn trace_id(time_ms: i64) -> String {
    format!("{:012x}{:016x}{:04x}", time_ms, fastrand::u64(..), fastrand::u16(..))
}

/// The milliseconds a trace id was made at.
pub fn trace_time(trace_id: &str) -> Option<i64> {
    i64::from_str_radix(trace_id.get(..12)?, 16).ok()
}

pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub dir: PathBuf,
    /// Close a segment when its WAL reaches this size.
    pub segment_bytes: u64,
    /// ... or this age.
    pub segment_age: Duration,
    /// Also keep per-minute profiles of inputs and outputs ([`crate::profiles`]).
    pub profiles: bool,
    /// How often open minutes' profiles are checkpointed to disk (at most as often as the WAL
    /// is synced, once a second).
    pub profile_checkpoint: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("prediction log `{path}`: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("prediction log segment `{path}`: {message}")]
    Parquet { path: PathBuf, message: String },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_path_buf(), source }
}

enum Message {
    Record(Box<Record>),
    /// Seal the open segment, answer, and stop.
    Close(std::sync::mpsc::Sender<Result<(), LogError>>),
}

/// True labels for logged predictions (`POST /feedback`), one JSON object per line:
/// `{"trace_id", "label", "time_ms", "model", "version", "predicted_ms", "predicted"}` — when
/// the label arrived, and the answer it labels (the version, when it was asked, what it
/// answered: the output named like `label`, else the first).
pub const FEEDBACK: &str = "feedback.jsonl";

/// One recorded label with the answer it labels.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Label {
    pub trace_id: String,
    pub label: Value,
    pub model: String,
    pub version: i64,
    pub predicted_ms: i64,
    pub predicted: Option<Value>,
}

/// Every label recorded with its answer (the latest per trace id). Lines written before
/// labels carried their answer are skipped here; `feedback` still reads them.
pub fn labels(dir: &Path) -> Result<Vec<Label>, LogError> {
    let path = dir.join(FEEDBACK);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(LogError::Io { path, source: e }),
    };
    let mut latest: std::collections::HashMap<String, Label> = std::collections::HashMap::new();
    for line in text.lines() {
        if let Ok(label) = serde_json::from_str::<Label>(line) {
            latest.insert(label.trace_id.clone(), label);
        }
    }
    Ok(latest.into_values().collect())
}

/// Every label recorded for a trace id (the latest wins).
pub fn feedback(dir: &Path) -> Result<std::collections::HashMap<String, Value>, LogError> {
    let path = dir.join(FEEDBACK);
    let mut out = std::collections::HashMap::new();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(LogError::Io { path, source: e }),
    };
    for line in text.lines() {
        if let Ok(v) = serde_json::from_str::<Value>(line)
            && let (Some(id), Some(label)) = (v.get("trace_id").and_then(Value::as_str), v.get("label"))
        {
            out.insert(id.to_owned(), label.clone());
        }
    }
    Ok(out)
}

/// Where sealed segments are copied (an object store). Segments stay in the log directory
/// too; one that could not be shipped is retried after the next seal and at the next start.
pub trait SegmentSink: Send {
    /// Copies the sealed segment at `path` (named `seg-...parquet`).
    fn ship(&self, path: &Path) -> Result<(), String>;
}

/// The log directory's record of shipped segments (one name per line).
const SHIPPED: &str = "shipped.txt";

struct Shipper {
    sink: Box<dyn SegmentSink>,
    dir: PathBuf,
    failures: Arc<AtomicU64>,
    last_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl Shipper {
    /// Ships every segment in the directory not yet shipped.
    fn ship_pending(&self) {
        let done: std::collections::HashSet<String> = std::fs::read_to_string(self.dir.join(SHIPPED))
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        let mut pending: Vec<(PathBuf, i64, i64)> = segments(&self.dir)
            .into_iter()
            .filter(|(p, _, _)| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| !done.contains(n)))
            .collect();
        pending.sort_by_key(|(_, first, _)| *first);
        for (path, _, _) in pending {
            match self.sink.ship(&path) {
                Ok(()) => {
                    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                    let _ = OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(self.dir.join(SHIPPED))
                        .and_then(|mut f| writeln!(f, "{name}"));
                }
                Err(e) => {
                    self.failures.fetch_add(1, Ordering::Relaxed);
                    *self.last_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
                        Some(format!("{}: {e}", path.display()));
                    return;
                }
            }
        }
    }
}

/// The handle handlers log through.
pub struct PredictionLog {
    tx: SyncSender<Message>,
    writer: std::sync::Mutex<Option<JoinHandle<Result<(), LogError>>>>,
    dropped: Arc<AtomicU64>,
    ship_failures: Arc<AtomicU64>,
    ship_error: Arc<std::sync::Mutex<Option<String>>>,
}

impl PredictionLog {
    /// Recovers crashed servers' WALs, then starts the writer; sealed segments are also
    /// copied to `sink` when one is given.
    pub fn start(config: LogConfig, sink: Option<Box<dyn SegmentSink>>) -> Result<Self, LogError> {
        std::fs::create_dir_all(&config.dir).map_err(io(&config.dir))?;
        recover(&config.dir)?;
        let ship_failures = Arc::new(AtomicU64::new(0));
        let ship_error = Arc::new(std::sync::Mutex::new(None));
        let shipper = sink.map(|sink| Shipper {
            sink,
            dir: config.dir.clone(),
            failures: ship_failures.clone(),
            last_error: ship_error.clone(),
        });
        let (tx, rx) = sync_channel::<Message>(1 << 16);
        let mut writer = Writer::open(config)?;
        writer.shipper = shipper;
        let handle = std::thread::Builder::new()
            .name("prediction log".into())
            .spawn(move || {
                if let Some(s) = &writer.shipper {
                    s.ship_pending();
                }
                writer.run(&rx)
            })
            .map_err(|e| LogError::Io { path: PathBuf::from("<thread>"), source: e })?;
        Ok(Self {
            tx,
            writer: std::sync::Mutex::new(Some(handle)),
            dropped: Arc::new(AtomicU64::new(0)),
            ship_failures,
            ship_error,
        })
    }

    /// How many times shipping a segment failed, and the last reason.
    pub fn ship_failures(&self) -> (u64, Option<String>) {
        (
            self.ship_failures.load(Ordering::Relaxed),
            self.ship_error.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone(),
        )
    }

    /// Hands a record to the writer without waiting. When the writer is this far behind (or
    /// closed) the record is counted as dropped rather than slowing the request.
    pub fn log(&self, record: Record) {
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
            self.tx.try_send(Message::Record(Box::new(record)))
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Writes everything handed over so far into a closed segment and stops the writer.
    pub fn close(&self) -> Result<(), LogError> {
        let Some(handle) = self.writer.lock().unwrap_or_else(std::sync::PoisonError::into_inner).take()
        else {
            return Ok(());
        };
        let (done, wait) = std::sync::mpsc::channel();
        let answered = self.tx.send(Message::Close(done)).is_ok() && wait.recv().is_ok();
        let result = handle.join().unwrap_or(Ok(()));
        if answered { result } else { Ok(()) }
    }
}

impl Drop for PredictionLog {
    fn drop(&mut self) {
        let _ = self.close();
    }
}

struct Writer {
    config: LogConfig,
    wal_path: PathBuf,
    wal: File,
    wal_bytes: u64,
    opened: Instant,
    /// Rows in the open segment.
    rows: usize,
    segments: u64,
    shipper: Option<Shipper>,
    profiles: crate::profiles::Windows,
}

impl Writer {
    fn open(config: LogConfig) -> Result<Self, LogError> {
        let (wal_path, wal) = new_wal(&config.dir)?;
        Ok(Self {
            config,
            wal_path,
            wal,
            wal_bytes: 0,
            opened: Instant::now(),
            rows: 0,
            segments: 0,
            shipper: None,
            profiles: crate::profiles::Windows::default(),
        })
    }

    /// Drains the channel every [`DRAIN`] rather than waking per record, so logging costs a
    /// request one non-blocking send and no thread wake-up; appends to the WAL once a second.
    fn run(mut self, rx: &Receiver<Message>) -> Result<(), LogError> {
        let mut pending: Vec<Entry> = Vec::new();
        let mut last_sync = Instant::now();
        let mut last_checkpoint = Instant::now();
        // Roll old minutes up once at start, then every ten minutes.
        let mut last_compaction: Option<Instant> = None;
        loop {
            std::thread::sleep(DRAIN);
            let mut closing = None;
            loop {
                match rx.try_recv() {
                    Ok(Message::Record(record)) => {
                        if self.config.profiles {
                            self.profiles.add(&record, &self.config.dir);
                        }
                        pending.push(record.entry());
                    }
                    Ok(Message::Close(done)) => {
                        closing = Some(done);
                        break;
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        self.append(&mut pending)?;
                        return self.seal(true);
                    }
                }
            }
            if let Some(done) = closing {
                let result = self.append(&mut pending).and_then(|()| self.seal(true));
                let failed = result.as_ref().err().map(ToString::to_string);
                let _ = done.send(result);
                return match failed {
                    Some(message) => Err(LogError::Io {
                        path: self.config.dir.clone(),
                        source: std::io::Error::other(message),
                    }),
                    None => Ok(()),
                };
            }
            if self.config.profiles && last_compaction.is_none_or(|t| t.elapsed() >= COMPACT_EVERY) {
                crate::profiles::compact(&self.config.dir, now_ms());
                last_compaction = Some(Instant::now());
            }
            if last_sync.elapsed() >= Duration::from_secs(1) || pending.len() >= 4096 {
                self.append(&mut pending)?;
                last_sync = Instant::now();
                // Checkpointed right after the WAL, so a profile never counts a request the
                // log doesn't have yet (alerts look up the requests behind them there).
                if self.config.profiles && last_checkpoint.elapsed() >= self.config.profile_checkpoint {
                    self.profiles.checkpoint(&self.config.dir);
                    last_checkpoint = Instant::now();
                }
                if self.wal_bytes >= self.config.segment_bytes
                    || (self.rows > 0 && self.opened.elapsed() >= self.config.segment_age)
                {
                    self.seal(false)?;
                }
            }
        }
    }

    /// Appends rows to the WAL and makes them durable.
    fn append(&mut self, pending: &mut Vec<Entry>) -> Result<(), LogError> {
        if pending.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(pending.len() * 256);
        for entry in pending.iter() {
            serde_json::to_writer(&mut buf, entry)
                .map_err(|e| LogError::Io { path: self.wal_path.clone(), source: e.into() })?;
            buf.push(b'\n');
        }
        self.wal.write_all(&buf).map_err(io(&self.wal_path))?;
        self.wal.sync_data().map_err(io(&self.wal_path))?;
        self.wal_bytes += buf.len() as u64;
        self.rows += pending.len();
        pending.clear();
        Ok(())
    }

    /// Writes the open segment as Parquet (read back from its WAL, so rows are never held in
    /// memory) and starts a new WAL (unless `last`).
    fn seal(&mut self, last: bool) -> Result<(), LogError> {
        if last {
            self.profiles.flush_all(&self.config.dir);
        }
        if self.rows > 0 {
            self.segments += 1;
            write_segment(&self.config.dir, &self.wal_path, self.segments)?;
        }
        self.rows = 0;
        let old = self.wal_path.clone();
        if !last {
            let (path, wal) = new_wal(&self.config.dir)?;
            self.wal_path = path;
            self.wal = wal;
            self.wal_bytes = 0;
            self.opened = Instant::now();
        }
        std::fs::remove_file(&old).map_err(io(&old))?;
        if let Some(shipper) = &self.shipper {
            shipper.ship_pending();
        }
        Ok(())
    }
}

fn new_wal(dir: &Path) -> Result<(PathBuf, File), LogError> {
    let path = dir.join(format!("wal-{}-{}.jsonl", std::process::id(), now_ms()));
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
    file.try_lock()
        .map_err(|e| LogError::Io { path: path.clone(), source: std::io::Error::other(e.to_string()) })?;
    Ok((path, file))
}

fn schema() -> Arc<Schema> {
    let text = |name: &str| Field::new(name, DataType::Utf8, false);
    let int = |name: &str| Field::new(name, DataType::Int64, false);
    Arc::new(Schema::new(vec![
        text("trace_id"),
        int("time_ms"),
        text("endpoint"),
        text("model"),
        int("version"),
        text("role"),
        text("protocol"),
        Field::new("status", DataType::Int32, false),
        int("latency_us"),
        int("rows"),
        text("inputs"),
        text("outputs"),
        Field::new("error", DataType::Utf8, true),
    ]))
}

/// How often the writer rolls old profile minutes up into hours and days.
const COMPACT_EVERY: Duration = Duration::from_secs(600);

/// How often the writer takes what handlers logged.
const DRAIN: Duration = Duration::from_millis(50);

/// Rows per Parquet row group (and per chunk read from a WAL).
const CHUNK: usize = 8192;

fn batch(rows: &[Entry]) -> Result<RecordBatch, arrow_schema::ArrowError> {
    let strings =
        |f: fn(&Entry) -> &str| -> ArrayRef { Arc::new(StringArray::from_iter_values(rows.iter().map(f))) };
    let ints =
        |f: fn(&Entry) -> i64| -> ArrayRef { Arc::new(Int64Array::from_iter_values(rows.iter().map(f))) };
    let columns: Vec<ArrayRef> = vec![
        strings(|r| &r.trace_id),
        ints(|r| r.time_ms),
        strings(|r| &r.endpoint),
        strings(|r| &r.model),
        ints(|r| r.version),
        strings(|r| &r.role),
        strings(|r| &r.protocol),
        Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.status))),
        ints(|r| r.latency_us),
        ints(|r| r.rows),
        strings(|r| &r.inputs),
        strings(|r| &r.outputs),
        Arc::new(StringArray::from_iter(rows.iter().map(|r| r.error.as_deref()))),
    ];
    RecordBatch::try_new(schema(), columns)
}

/// Writes the rows of the WAL at `wal` as one segment, a chunk at a time (temp file, fsync,
/// rename); `None` when the WAL holds no complete row.
fn write_segment(dir: &Path, wal: &Path, n: u64) -> Result<Option<PathBuf>, LogError> {
    let tmp = dir.join(format!(".seg-{}-{n}.parquet.tmp", std::process::id()));
    let fail = |message: String| LogError::Parquet { path: tmp.clone(), message };
    let file = File::create(&tmp).map_err(io(&tmp))?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(CHUNK))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema(), Some(props)).map_err(|e| fail(e.to_string()))?;
    let (mut first, mut last, mut count) = (i64::MAX, i64::MIN, 0usize);
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut flush = |chunk: &mut Vec<Entry>, writer: &mut ArrowWriter<File>| -> Result<(), LogError> {
        for e in chunk.iter() {
            first = first.min(e.time_ms);
            last = last.max(e.time_ms);
        }
        count += chunk.len();
        let b = batch(chunk).map_err(|e| fail(e.to_string()))?;
        writer.write(&b).map_err(|e| fail(e.to_string()))?;
        chunk.clear();
        Ok(())
    };
    let reader = BufReader::new(File::open(wal).map_err(io(wal))?);
    for line in reader.lines() {
        let line = line.map_err(io(wal))?;
        // A torn last line, from a crash mid-write, is skipped.
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            chunk.push(entry);
            if chunk.len() == CHUNK {
                flush(&mut chunk, &mut writer)?;
            }
        }
    }
    if !chunk.is_empty() {
        flush(&mut chunk, &mut writer)?;
    }
    let file = writer.into_inner().map_err(|e| fail(e.to_string()))?;
    if count == 0 {
        drop(file);
        let _ = std::fs::remove_file(&tmp);
        return Ok(None);
    }
    file.sync_all().map_err(io(&tmp))?;
    let path = dir.join(format!("seg-{first}-{last}-{}-{n}.parquet", std::process::id()));
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(Some(path))
}

/// Rows of a WAL (a torn last line, from a crash mid-write, is skipped).
fn read_wal(path: &Path) -> Result<Vec<Entry>, LogError> {
    let file = File::open(path).map_err(io(path))?;
    let mut rows = Vec::new();
    for line in BufReader::new(file).lines() {
        let line = line.map_err(io(path))?;
        if let Ok(entry) = serde_json::from_str::<Entry>(&line) {
            rows.push(entry);
        }
    }
    Ok(rows)
}

fn wals(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("wal-") && n.ends_with(".jsonl"))
        })
        .collect();
    out.sort();
    out
}

/// Turns WALs no running server holds into segments; answers how many.
pub fn recover(dir: &Path) -> Result<usize, LogError> {
    let mut recovered = 0;
    for path in wals(dir) {
        let Ok(file) = OpenOptions::new().read(true).write(true).open(&path) else { continue };
        if file.try_lock().is_err() {
            continue; // a running server's
        }
        if write_segment(dir, &path, now_ms() as u64)?.is_some() {
            recovered += 1;
        }
        std::fs::remove_file(&path).map_err(io(&path))?;
    }
    Ok(recovered)
}

fn segments(dir: &Path) -> Vec<(PathBuf, i64, i64)> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let (first, last) = segment_range(e.file_name().to_str()?)?;
            Some((e.path(), first, last))
        })
        .collect()
}

fn entries(path: &Path) -> Result<Vec<Entry>, LogError> {
    let fail = |message: String| LogError::Parquet { path: path.to_path_buf(), message };
    let file = File::open(path).map_err(io(path))?;
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .map_err(|e| fail(e.to_string()))?
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| fail(e.to_string()))?;
        let text = |name: &str| -> Result<StringArray, LogError> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<StringArray>().cloned())
                .ok_or_else(|| fail(format!("no utf8 column `{name}`")))
        };
        let int = |name: &str| -> Result<Int64Array, LogError> {
            batch
                .column_by_name(name)
                .and_then(|c| c.as_any().downcast_ref::<Int64Array>().cloned())
                .ok_or_else(|| fail(format!("no int64 column `{name}`")))
        };
        let (trace, endpoint, model, role, protocol, inputs, outputs, error) = (
            text("trace_id")?,
            text("endpoint")?,
            text("model")?,
            text("role")?,
            text("protocol")?,
            text("inputs")?,
            text("outputs")?,
            text("error")?,
        );
        let (time, version, latency, rows) =
            (int("time_ms")?, int("version")?, int("latency_us")?, int("rows")?);
        let status = batch
            .column_by_name("status")
            .and_then(|c| c.as_any().downcast_ref::<Int32Array>().cloned())
            .ok_or_else(|| fail("no int32 column `status`".into()))?;
        for i in 0..batch.num_rows() {
            out.push(Entry {
                trace_id: trace.value(i).to_owned(),
                time_ms: time.value(i),
                endpoint: endpoint.value(i).to_owned(),
                model: model.value(i).to_owned(),
                version: version.value(i),
                role: role.value(i).to_owned(),
                protocol: protocol.value(i).to_owned(),
                status: status.value(i),
                latency_us: latency.value(i),
                rows: rows.value(i),
                inputs: inputs.value(i).to_owned(),
                outputs: outputs.value(i).to_owned(),
                error: (!error.is_null(i)).then(|| error.value(i).to_owned()),
            });
        }
    }
    Ok(out)
}

/// The first and last milliseconds a segment's name says it covers.
pub fn segment_range(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_prefix("seg-")?.strip_suffix(".parquet")?;
    let mut parts = stem.split('-');
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

/// Every logged row with this trace id (the answer and any shadows'), from the open WALs
/// and the segments whose time range covers the id's time.
pub fn find(dir: &Path, trace_id: &str) -> Result<Vec<Entry>, LogError> {
    find_all(dir, &[trace_id])
}

/// Every logged row with any of these trace ids, reading each open WAL and each segment whose
/// time range covers one of the ids once.
pub fn find_all(dir: &Path, trace_ids: &[&str]) -> Result<Vec<Entry>, LogError> {
    let wanted: std::collections::HashSet<&str> = trace_ids.iter().copied().collect();
    let times: Vec<Option<i64>> = trace_ids.iter().map(|id| trace_time(id)).collect();
    let mut found = Vec::new();
    for path in wals(dir) {
        found.extend(read_wal(&path)?.into_iter().filter(|e| wanted.contains(e.trace_id.as_str())));
    }
    for (path, first, last) in segments(dir) {
        // Ids are made when the request arrives, and `time_ms` is that time.
        if times.iter().all(|at| at.is_some_and(|t| t < first || t > last)) {
            continue;
        }
        found.extend(entries(&path)?.into_iter().filter(|e| wanted.contains(e.trace_id.as_str())));
    }
    found.sort_by(|a, b| a.role.cmp(&b.role));
    Ok(found)
}

/// Every logged row from `since_ms` on, oldest first.
pub fn scan(dir: &Path, since_ms: i64) -> Result<Vec<Entry>, LogError> {
    let mut out = Vec::new();
    for (path, _, last) in segments(dir) {
        if last >= since_ms {
            out.extend(entries(&path)?.into_iter().filter(|e| e.time_ms >= since_ms));
        }
    }
    for path in wals(dir) {
        out.extend(read_wal(&path)?.into_iter().filter(|e| e.time_ms >= since_ms));
    }
    out.sort_by_key(|e| e.time_ms);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::Data;

    fn record(id: &str) -> Record {
        Record {
            trace_id: id.to_owned(),
            time_ms: trace_time(id).unwrap(),
            endpoint: "churn".into(),
            model: "churn".into(),
            version: 3,
            role: "primary",
            protocol: "native",
            status: 200,
            latency_us: 120,
            inputs: Arc::new(vec![("age".into(), Tensor { shape: vec![1, 1], data: Data::F32(vec![42.0]) })]),
            outputs: Some(vec![(
                "label".into(),
                Output::Tensor(Tensor { shape: vec![1], data: Data::I64(vec![1]) }),
            )]),
            error: None,
        }
    }

    fn config(dir: &Path) -> LogConfig {
        LogConfig {
            dir: dir.to_path_buf(),
            segment_bytes: 1 << 20,
            segment_age: Duration::from_secs(600),
            profiles: true,
            profile_checkpoint: Duration::from_secs(1),
        }
    }

    #[test]
    fn closing_writes_a_segment_that_find_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let log = PredictionLog::start(config(dir.path()), None).unwrap();
        let ids: Vec<String> = (0..100).map(|_| trace_id(now_ms())).collect();
        for id in &ids {
            log.log(record(id));
        }
        log.close().unwrap();
        assert!(wals(dir.path()).is_empty(), "the WAL is gone after a clean close");
        assert_eq!(segments(dir.path()).len(), 1);
        let found = find(dir.path(), &ids[42]).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].inputs, r#"{"age":[[42.0]]}"#);
        assert_eq!(found[0].outputs, r#"{"label":[1]}"#);
        assert_eq!(scan(dir.path(), 0).unwrap().len(), 100);
    }

    /// Copies segments into a directory; fails while `fail` holds.
    struct Copy {
        to: PathBuf,
        fail: Arc<std::sync::atomic::AtomicBool>,
    }

    impl SegmentSink for Copy {
        fn ship(&self, path: &Path) -> Result<(), String> {
            if self.fail.load(Ordering::SeqCst) {
                return Err("the store is down".into());
            }
            std::fs::copy(path, self.to.join(path.file_name().unwrap())).map(drop).map_err(|e| e.to_string())
        }
    }

    #[test]
    fn sealed_segments_are_shipped_and_failed_ones_retried() {
        let dir = tempfile::tempdir().unwrap();
        let store = tempfile::tempdir().unwrap();
        let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let sink = Copy { to: store.path().to_path_buf(), fail: fail.clone() };
        let log = PredictionLog::start(config(dir.path()), Some(Box::new(sink))).unwrap();
        log.log(record(&trace_id(now_ms())));
        log.close().unwrap();
        assert_eq!(log.ship_failures().0, 1);
        assert!(log.ship_failures().1.unwrap().contains("the store is down"));
        assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 0);
        // The next start ships what is pending, then its own segment.
        fail.store(false, Ordering::SeqCst);
        let sink = Copy { to: store.path().to_path_buf(), fail };
        let log = PredictionLog::start(config(dir.path()), Some(Box::new(sink))).unwrap();
        let id = trace_id(now_ms());
        log.log(record(&id));
        log.close().unwrap();
        assert_eq!(std::fs::read_dir(store.path()).unwrap().count(), 2);
        assert_eq!(find(store.path(), &id).unwrap().len(), 1, "the shipped copy is a readable segment");
    }

    #[test]
    fn a_crashed_servers_wal_is_recovered_and_a_torn_line_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let id = trace_id(now_ms());
        let wal = dir.path().join("wal-999999-1.jsonl");
        let mut text = serde_json::to_string(&record(&id).entry()).unwrap();
        text.push_str("\n{\"trace_id\": \"torn");
        std::fs::write(&wal, text).unwrap();
        // `cairn trace` reads an unrecovered WAL too.
        assert_eq!(find(dir.path(), &id).unwrap().len(), 1);
        assert_eq!(recover(dir.path()).unwrap(), 1);
        assert!(!wal.exists());
        assert_eq!(find(dir.path(), &id).unwrap()[0].trace_id, id);
    }

    #[test]
    fn rows_are_durable_within_a_second_while_running() {
        let dir = tempfile::tempdir().unwrap();
        let log = PredictionLog::start(config(dir.path()), None).unwrap();
        let id = trace_id(now_ms());
        log.log(record(&id));
        std::thread::sleep(Duration::from_millis(1300));
        // Without closing (as after a crash), the row is already in the WAL.
        assert_eq!(find(dir.path(), &id).unwrap().len(), 1);
        log.close().unwrap();
    }
}
