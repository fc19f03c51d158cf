//! Per-minute profiles of every served version's inputs and outputs, kept by the prediction
//! log's writer (off the request path) and persisted when the minute is over (and at
//! shutdown) as `<log dir>/profiles/<model>/<version>/<minute start ms>-<pid>.json`: a
//! serialized [`cairn_monitor::profile::Profile`]. Files from several processes (replicas,
//! restarts) for the same minute merge.
//!
//! Features are named as `cairn monitor` names them: an input by its name (`name[i]` for the
//! i-th value of a wider row), an output as `output:NAME` (`output:NAME[class]` for class
//! probabilities).

use std::collections::BTreeMap;
use std::path::Path;

use cairn_monitor::profile::{Cell, Kind, Profile};

use crate::predlog::Record;
use crate::tensor::{Data, Output, Tensor};

/// A minute.
pub const WINDOW_MS: i64 = 60_000;

/// Open windows by (model, version, window start).
#[derive(Default)]
pub struct Windows {
    open: BTreeMap<(String, i64, i64), Profile>,
}

fn cell(data: &Data, i: usize) -> Cell<'_> {
    match data {
        Data::F32(v) => Cell::Num(f64::from(v[i])),
        Data::F64(v) => Cell::Num(v[i]),
        Data::I64(v) => Cell::Num(v[i] as f64),
        Data::I32(v) => Cell::Num(f64::from(v[i])),
        Data::Bool(v) => Cell::Num(if v[i] { 1.0 } else { 0.0 }),
        Data::Str(v) => Cell::Text(&v[i]),
    }
}

fn add_tensor(profile: &mut Profile, name: &str, tensor: &Tensor) {
    let kind = if matches!(tensor.data, Data::Str(_)) { Kind::Categorical } else { Kind::Numeric };
    let width = tensor.width().max(1);
    if width == 1 {
        let feature = profile.feature(name, kind);
        for i in 0..tensor.data.len() {
            feature.add(cell(&tensor.data, i));
        }
        return;
    }
    for j in 0..width {
        let feature = profile.feature(&format!("{name}[{j}]"), kind);
        for row in 0..tensor.rows() {
            feature.add(cell(&tensor.data, row * width + j));
        }
    }
}

impl Windows {
    /// Profiles one successful prediction; windows older than the record's are written out.
    pub fn add(&mut self, record: &Record, dir: &Path) {
        if record.status != 200 {
            return;
        }
        let start = record.time_ms - record.time_ms.rem_euclid(WINDOW_MS);
        // Requests arrive in about time order; a minute closes once a later one has begun
        // and a few seconds have passed (late records of it still land in it).
        let stale: Vec<(String, i64, i64)> =
            self.open.keys().filter(|(_, _, s)| *s + WINDOW_MS + 5_000 < record.time_ms).cloned().collect();
        for key in stale {
            if let Some(profile) = self.open.remove(&key) {
                write(dir, &key, &profile);
            }
        }
        let profile = self
            .open
            .entry((record.model.clone(), record.version, start))
            .or_insert_with(|| Profile { start_ms: start, end_ms: start + WINDOW_MS, ..Profile::default() });
        profile.rows += record.inputs.first().map_or(0, |(_, t)| t.rows() as u64);
        for (name, tensor) in record.inputs.iter() {
            add_tensor(profile, name, tensor);
        }
        for (name, output) in record.outputs.iter().flatten() {
            match output {
                Output::Tensor(t) => add_tensor(profile, &format!("output:{name}"), t),
                Output::Classes { classes, probabilities, rows } => {
                    let k = classes.len();
                    for (j, class) in classes.iter().enumerate() {
                        let label = class.as_str().map_or_else(|| class.to_string(), str::to_owned);
                        let feature = profile.feature(&format!("output:{name}[{label}]"), Kind::Numeric);
                        for r in 0..*rows {
                            feature.add(Cell::Num(f64::from(probabilities[r * k + j])));
                        }
                    }
                }
            }
        }
    }

    /// Writes every open window (at shutdown).
    pub fn flush_all(&mut self, dir: &Path) {
        for (key, profile) in std::mem::take(&mut self.open) {
            write(dir, &key, &profile);
        }
    }
}

/// Writes one window's profile (temp file + rename). Best effort: a profile is derived data,
/// and the log it came from is kept.
fn write(dir: &Path, (model, version, start): &(String, i64, i64), profile: &Profile) {
    let folder = dir.join("profiles").join(model).join(version.to_string());
    if std::fs::create_dir_all(&folder).is_err() {
        return;
    }
    let name = format!("{start}-{}.json", std::process::id());
    let tmp = folder.join(format!(".{name}.tmp"));
    if let Ok(bytes) = serde_json::to_vec(profile)
        && std::fs::write(&tmp, bytes).is_ok()
    {
        let _ = std::fs::rename(&tmp, folder.join(name));
    }
}

/// The persisted window profiles of a version from `since_ms` on, merged per window.
pub fn read(dir: &Path, model: &str, version: i64, since_ms: i64) -> BTreeMap<i64, Profile> {
    let folder = dir.join("profiles").join(model).join(version.to_string());
    let mut out: BTreeMap<i64, Profile> = BTreeMap::new();
    for entry in std::fs::read_dir(folder).into_iter().flatten().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(start) = name.split('-').next().and_then(|s| s.parse::<i64>().ok()) else { continue };
        if start + WINDOW_MS <= since_ms || !name.ends_with(".json") {
            continue;
        }
        let Ok(bytes) = std::fs::read(entry.path()) else { continue };
        let Ok(profile) = serde_json::from_slice::<Profile>(&bytes) else { continue };
        out.entry(start).or_default().merge(&profile);
    }
    out
}
