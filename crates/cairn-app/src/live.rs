//! Live metrics: while a pipeline runs, it follows each command's `$CAIRN_METRICS_FILE`
//! (JSON lines such as `{"step": 3, "loss": 0.41}`) and records every numeric field of each
//! complete line as a metric point of the run, so `cairn exp show`, `cairn plots show` and
//! the tracking API see training progress as it happens.
//!
//! A line's `step` (default: its line number, from 0) and `timestamp` (milliseconds; default:
//! when it was read) are taken from the line; every other numeric field is a metric. Lines
//! that are not JSON objects are skipped with one warning per file.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use cairn_meta::{Metric, Store, now_ms};
use cairn_pipeline::Observer;
use serde_json::Value;

/// Follows the live metrics directory on a scoped thread until dropped (then reads what is
/// left).
pub struct Follower<'scope> {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::ScopedJoinHandle<'scope, ()>>,
}

#[derive(Default)]
struct FileState {
    offset: u64,
    lines: i64,
    pending: Vec<u8>,
    warned: bool,
}

impl<'scope> Follower<'scope> {
    /// Empties `dir` (files from an earlier run) and starts following it; warnings go to
    /// `observer`.
    pub fn start<'env>(
        scope: &'scope std::thread::Scope<'scope, 'env>,
        dir: PathBuf,
        store: Store,
        run_id: String,
        observer: &'env dyn Observer,
    ) -> Follower<'scope> {
        let _ = std::fs::remove_dir_all(&dir);
        let _ = std::fs::create_dir_all(&dir);
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = stop.clone();
        let thread = std::thread::Builder::new()
            .name("cairn-live-metrics".into())
            .spawn_scoped(scope, move || {
                let warn = |m: &str| observer.warn(m);
                let mut files: HashMap<PathBuf, FileState> = HashMap::new();
                loop {
                    let last = stopping.load(Ordering::SeqCst);
                    if let Err(e) = poll(&dir, &mut files, &store, &run_id, &warn) {
                        warn(&format!("live metrics stopped: {e}"));
                        return;
                    }
                    if last {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(250));
                }
            })
            .ok();
        Follower { stop, thread }
    }
}

impl Drop for Follower<'_> {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn poll(
    dir: &Path,
    files: &mut HashMap<PathBuf, FileState>,
    store: &Store,
    run_id: &str,
    warn: &dyn Fn(&str),
) -> Result<(), cairn_meta::MetaError> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(()) };
    let mut metrics = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let state = files.entry(path.clone()).or_default();
        let Ok(mut file) = std::fs::File::open(&path) else { continue };
        if file.seek(SeekFrom::Start(state.offset)).is_err() {
            continue;
        }
        let mut fresh = Vec::new();
        let Ok(read) = file.read_to_end(&mut fresh) else { continue };
        state.offset += read as u64;
        state.pending.extend_from_slice(&fresh);
        // Only complete lines: a writer may be in the middle of one.
        let Some(end) = state.pending.iter().rposition(|&b| b == b'\n') else { continue };
        let complete: Vec<u8> = state.pending.drain(..=end).collect();
        for line in complete.split(|&b| b == b'\n').filter(|l| !l.iter().all(u8::is_ascii_whitespace)) {
            let step_default = state.lines;
            state.lines += 1;
            match parse_line(line, step_default) {
                Some(points) => metrics.extend(points),
                None if !state.warned => {
                    state.warned = true;
                    warn(&format!(
                        "`{}` has a line that is not a JSON object of numbers; such lines are skipped",
                        path.display()
                    ));
                }
                None => {}
            }
        }
    }
    for chunk in metrics.chunks(1000) {
        store.log_batch(run_id, chunk, &[], &[])?;
    }
    Ok(())
}

/// The metric points of one JSON line.
pub fn parse_line(line: &[u8], step_default: i64) -> Option<Vec<Metric>> {
    let Ok(Value::Object(fields)) = serde_json::from_slice::<Value>(line) else { return None };
    let step = fields.get("step").and_then(Value::as_i64).unwrap_or(step_default);
    let timestamp = fields.get("timestamp").and_then(Value::as_i64).unwrap_or_else(now_ms);
    Some(
        fields
            .iter()
            .filter(|(key, _)| *key != "step" && *key != "timestamp")
            .filter_map(|(key, value)| {
                Some(Metric { key: key.clone(), value: value.as_f64()?, timestamp, step })
            })
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_is_points_at_its_step() {
        let points = parse_line(br#"{"step": 4, "loss": 0.5, "acc": 1, "note": "x"}"#, 0).unwrap();
        let got: Vec<(&str, f64, i64)> = points.iter().map(|m| (m.key.as_str(), m.value, m.step)).collect();
        assert_eq!(got, [("loss", 0.5, 4), ("acc", 1.0, 4)]);
        assert_eq!(parse_line(br#"{"loss": 2}"#, 7).unwrap()[0].step, 7);
        assert!(parse_line(b"not json", 0).is_none());
    }
}
