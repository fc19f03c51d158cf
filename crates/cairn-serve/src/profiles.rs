//! Per-minute profiles of every served version's inputs and outputs, kept by the prediction
//! log's writer (off the request path) and persisted when the minute is over (and at
//! shutdown) as `<log dir>/profiles/<model>/<version>/<minute start ms>-<pid>.json`: a
//! serialized [`cairn_monitor::profile::Profile`]. Files from several processes (replicas,
//! restarts) for the same minute merge.
//!
//! While a minute is open its file is rewritten every few seconds (a checkpoint: the same
//! name, the fuller state), so rules evaluated by another thread or process see the current
//! minute too.
//!
//! Rollups ([`compact`]): minutes older than two hours are merged into
//! `hour-<hour start ms>.json`, and hours older than two days into `day-<day start ms>.json`.
//! A rollup is `{"sources": [file names], "profile": {...}}`: the files merged into it. It is
//! written before its sources are removed, and readers skip files a rollup lists as sources,
//! so a crash between the two counts nothing twice; a late minute file (a replica that
//! flushed after the rollup) is not listed and is merged at the next compaction.
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

/// One open window of one version.
struct Slot {
    key: (String, i64, i64),
    profile: Profile,
    /// Changed since its last checkpoint.
    dirty: bool,
}

/// Open windows by (model, version, window start). A handful at a time (versions served ×
/// one or two minutes), so a scan finds one without building a key per record.
#[derive(Default)]
pub struct Windows {
    open: Vec<Slot>,
    /// Feature names built per record (`output:NAME[class]`, `output:NAME`), reused.
    name: String,
    output: String,
}

/// An hour.
pub const HOUR_MS: i64 = 3_600_000;
/// A day.
pub const DAY_MS: i64 = 86_400_000;

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

fn add_tensor(profile: &mut Profile, name: &str, tensor: &Tensor, buffer: &mut String) {
    use std::fmt::Write as _;
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
        buffer.clear();
        let _ = write!(buffer, "{name}[{j}]");
        let feature = profile.feature(buffer, kind);
        for row in 0..tensor.rows() {
            feature.add(cell(&tensor.data, row * width + j));
        }
    }
}

impl Windows {
    /// Profiles one prediction (a failed one counts only as traffic); windows older than the
    /// record's are written out.
    pub fn add(&mut self, record: &Record, dir: &Path) {
        use std::fmt::Write as _;
        let start = record.time_ms - record.time_ms.rem_euclid(WINDOW_MS);
        // Requests arrive in about time order; a minute closes once a later one has begun
        // and a few seconds have passed (late records of it still land in it).
        if self.open.iter().any(|slot| slot.key.2 + WINDOW_MS + 5_000 < record.time_ms) {
            let (stale, open): (Vec<Slot>, Vec<Slot>) = std::mem::take(&mut self.open)
                .into_iter()
                .partition(|slot| slot.key.2 + WINDOW_MS + 5_000 < record.time_ms);
            self.open = open;
            for slot in stale {
                write(dir, &slot.key, &slot.profile);
            }
        }
        let at = match self
            .open
            .iter()
            .position(|s| s.key.2 == start && s.key.1 == record.version && s.key.0 == record.model)
        {
            Some(at) => at,
            None => {
                self.open.push(Slot {
                    key: (record.model.clone(), record.version, start),
                    profile: Profile { start_ms: start, end_ms: start + WINDOW_MS, ..Profile::default() },
                    dirty: false,
                });
                self.open.len() - 1
            }
        };
        let slot = &mut self.open[at];
        slot.dirty = true;
        let profile = &mut slot.profile;
        let buffer = &mut self.name;
        profile.traffic.add(record.status != 200, record.latency_us as f64 / 1000.0);
        if record.status != 200 {
            return;
        }
        profile.rows += record.inputs.first().map_or(0, |(_, t)| t.rows() as u64);
        let prefixed = &mut self.output;
        for (name, tensor) in record.inputs.iter() {
            add_tensor(profile, name, tensor, buffer);
        }
        for (name, output) in record.outputs.iter().flatten() {
            match output {
                Output::Tensor(t) => {
                    prefixed.clear();
                    let _ = write!(prefixed, "output:{name}");
                    add_tensor(profile, prefixed, t, buffer);
                }
                Output::Classes { classes, probabilities, rows } => {
                    let k = classes.len();
                    for (j, class) in classes.iter().enumerate() {
                        buffer.clear();
                        match class.as_str() {
                            Some(label) => write!(buffer, "output:{name}[{label}]"),
                            None => write!(buffer, "output:{name}[{class}]"),
                        }
                        .expect("writing to a String cannot fail");
                        let feature = profile.feature(buffer, Kind::Numeric);
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
        for slot in std::mem::take(&mut self.open) {
            write(dir, &slot.key, &slot.profile);
        }
    }

    /// Writes the open windows that changed since their last checkpoint; they stay open.
    pub fn checkpoint(&mut self, dir: &Path) {
        for slot in self.open.iter_mut().filter(|s| s.dirty) {
            slot.dirty = false;
            write(dir, &slot.key, &slot.profile);
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
    if let Ok(bytes) = serde_json::to_vec(profile) {
        let _ = cairn_fs::write_derived(&folder.join(name), &bytes);
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Rollup {
    sources: Vec<String>,
    profile: Profile,
}

/// A profile file's level and start: a minute (`<start>-<pid>.json`), `hour-<start>.json` or
/// `day-<start>.json`.
fn level(name: &str) -> Option<(i64, i64)> {
    let stem = name.strip_suffix(".json")?;
    if let Some(start) = stem.strip_prefix("hour-") {
        return Some((HOUR_MS, start.parse().ok()?));
    }
    if let Some(start) = stem.strip_prefix("day-") {
        return Some((DAY_MS, start.parse().ok()?));
    }
    Some((WINDOW_MS, stem.split('-').next()?.parse().ok()?))
}

/// Profile files of one version's folder: (name, level, start).
fn files(folder: &Path) -> Vec<(String, i64, i64)> {
    let mut out: Vec<(String, i64, i64)> = std::fs::read_dir(folder)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                return None;
            }
            let (size, start) = level(&name)?;
            Some((name, size, start))
        })
        .collect();
    out.sort();
    out
}

fn read_profile(path: &Path, rollup: bool) -> Option<(Profile, Vec<String>)> {
    let bytes = std::fs::read(path).ok()?;
    if rollup {
        let r: Rollup = serde_json::from_slice(&bytes).ok()?;
        Some((r.profile, r.sources))
    } else {
        Some((serde_json::from_slice(&bytes).ok()?, Vec::new()))
    }
}

/// The persisted window profiles of a version from `since_ms` on, merged per window (keyed by
/// the window's start; a rollup's window is its hour or day). A file that cannot be read is
/// skipped: profiles are derived from the log, which is kept.
pub fn read(dir: &Path, model: &str, version: i64, since_ms: i64) -> BTreeMap<i64, Profile> {
    let folder = dir.join("profiles").join(model).join(version.to_string());
    let mut loaded: Vec<(String, i64, Profile)> = Vec::new();
    let mut covered: std::collections::HashSet<String> = std::collections::HashSet::new();
    for (name, size, start) in files(&folder) {
        if start + size <= since_ms {
            continue;
        }
        let Some((profile, sources)) = read_profile(&folder.join(&name), size != WINDOW_MS) else { continue };
        covered.extend(sources);
        loaded.push((name, start, profile));
    }
    let mut out: BTreeMap<i64, Profile> = BTreeMap::new();
    for (name, start, profile) in loaded {
        if !covered.contains(&name) {
            out.entry(start).or_default().merge(&profile);
        }
    }
    out
}

/// Every served version's profile folder under the log: (model, version).
pub fn versions(dir: &Path) -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for model in std::fs::read_dir(dir.join("profiles")).into_iter().flatten().flatten() {
        let name = model.file_name().to_string_lossy().into_owned();
        for version in std::fs::read_dir(model.path()).into_iter().flatten().flatten() {
            if let Ok(v) = version.file_name().to_string_lossy().parse::<i64>() {
                out.push((name.clone(), v));
            }
        }
    }
    out.sort();
    out
}

/// Rolls minutes older than two hours into hours, and hours older than two days into days,
/// in every version's folder (see the module docs); answers how many files were merged.
pub fn compact(dir: &Path, now_ms: i64) -> usize {
    let mut merged = 0;
    for (model, version) in versions(dir) {
        let folder = dir.join("profiles").join(&model).join(version.to_string());
        merged += roll(&folder, WINDOW_MS, HOUR_MS, "hour", now_ms - 2 * HOUR_MS);
        merged += roll(&folder, HOUR_MS, DAY_MS, "day", now_ms - 2 * DAY_MS);
    }
    merged
}

/// Merges files of level `from` that ended before `before` into files of level `to`.
fn roll(folder: &Path, from: i64, to: i64, prefix: &str, before: i64) -> usize {
    let mut groups: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (name, size, start) in files(folder) {
        if size == from && start + from <= before {
            groups.entry(start - start.rem_euclid(to)).or_default().push(name);
        }
    }
    let mut merged = 0;
    for (start, names) in groups {
        let name = format!("{prefix}-{start}.json");
        let path = folder.join(&name);
        let (mut profile, mut sources) = read_profile(&path, true).unwrap_or_else(|| {
            (Profile { start_ms: start, end_ms: start + to, ..Profile::default() }, Vec::new())
        });
        let mut changed = false;
        for source in &names {
            if sources.contains(source) {
                continue;
            }
            let Some((p, _)) = read_profile(&folder.join(source), from != WINDOW_MS) else { continue };
            profile.merge(&p);
            sources.push(source.clone());
            changed = true;
            merged += 1;
        }
        profile.start_ms = start;
        profile.end_ms = start + to;
        if changed {
            let Ok(bytes) = serde_json::to_vec(&Rollup { sources, profile }) else { continue };
            if cairn_fs::write(&path, &bytes).is_err() {
                continue;
            }
        }
        for source in &names {
            let _ = std::fs::remove_file(folder.join(source));
        }
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_monitor::profile::{Cell, Kind};

    fn minute(dir: &Path, start: i64, pid: u32, values: &[f64]) {
        let mut p = Profile { start_ms: start, end_ms: start + WINDOW_MS, ..Profile::default() };
        p.rows = values.len() as u64;
        let f = p.feature("age", Kind::Numeric);
        for &x in values {
            f.add(Cell::Num(x));
        }
        let folder = dir.join("profiles/churn/1");
        std::fs::create_dir_all(&folder).unwrap();
        std::fs::write(folder.join(format!("{start}-{pid}.json")), serde_json::to_vec(&p).unwrap()).unwrap();
    }

    fn total(dir: &Path) -> (u64, f64) {
        let mut all = Profile::default();
        for p in read(dir, "churn", 1, 0).values() {
            all.merge(p);
        }
        (all.rows, all.features["age"].numeric.mean)
    }

    #[test]
    fn minutes_roll_into_hours_and_days_counting_everything_once() {
        let dir = tempfile::tempdir().unwrap();
        let day0 = 100 * DAY_MS;
        // Two replicas in the first minute, then minutes through the first hours of a day.
        minute(dir.path(), day0, 1, &[1.0, 2.0]);
        minute(dir.path(), day0, 2, &[3.0]);
        minute(dir.path(), day0 + 5 * WINDOW_MS, 1, &[4.0]);
        minute(dir.path(), day0 + HOUR_MS, 1, &[5.0]);
        let before = total(dir.path());
        assert_eq!(before, (5, 3.0));
        // Four hours later: both hours are rolled up, the minutes removed.
        assert_eq!(compact(dir.path(), day0 + 4 * HOUR_MS), 4);
        let folder = dir.path().join("profiles/churn/1");
        let names: Vec<String> = files(&folder).into_iter().map(|f| f.0).collect();
        assert_eq!(names, [format!("hour-{day0}.json"), format!("hour-{}.json", day0 + HOUR_MS)]);
        assert_eq!(total(dir.path()), before);
        // A late minute file for a rolled-up hour, and a crash that left a source behind.
        minute(dir.path(), day0 + 7 * WINDOW_MS, 3, &[6.0]);
        minute(dir.path(), day0, 1, &[1.0, 2.0]);
        assert_eq!(total(dir.path()), (6, 3.5), "the listed source is skipped, the late one counted");
        compact(dir.path(), day0 + 4 * HOUR_MS);
        assert_eq!(total(dir.path()), (6, 3.5));
        // Days later the hours become a day.
        compact(dir.path(), day0 + 3 * DAY_MS);
        let names: Vec<String> = files(&folder).into_iter().map(|f| f.0).collect();
        assert_eq!(names, [format!("day-{day0}.json")]);
        assert_eq!(total(dir.path()), (6, 3.5));
        assert_eq!(read(dir.path(), "churn", 1, day0 + DAY_MS).len(), 0, "since filters by the day's end");
    }
}
