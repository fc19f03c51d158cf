//! The store's operations, written once over [`Backend`] and run on either database.

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use crate::backend::{Backend, Tx, Value};
use crate::{
    Experiment, IoRecord, MetaError, Metric, NewRun, Result, Run, RunInfo, StageRecord, now_ms, schema,
};

/// An open metadata store. Cheap to share between threads (operations take turns on one
/// connection; each is one transaction).
pub struct Store {
    backend: Mutex<Box<dyn Backend>>,
    location: String,
}

const EXPERIMENT_COLUMNS: &str =
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time";

const RUN_COLUMNS: &str = "run_id, experiment_id, name, parent_run_id, status, start_time, end_time, user_id, \
     git_commit, git_dirty, source, artifact_uri, lifecycle_stage";

fn run_info(row: &[Value]) -> RunInfo {
    RunInfo {
        run_id: row[0].text(),
        experiment_id: row[1].int(),
        name: row[2].text(),
        parent_run_id: row[3].opt_text(),
        status: row[4].text(),
        start_time: row[5].int(),
        end_time: row[6].opt_int(),
        user: row[7].text(),
        git_commit: row[8].opt_text(),
        git_dirty: row[9].int() != 0,
        source: row[10].text(),
        artifact_uri: row[11].text(),
        lifecycle_stage: row[12].text(),
    }
}

fn experiment(row: &[Value]) -> Experiment {
    Experiment {
        id: row[0].int(),
        name: row[1].text(),
        artifact_location: row[2].text(),
        lifecycle_stage: row[3].text(),
        creation_time: row[4].int(),
        last_update_time: row[5].int(),
    }
}

/// A new run id: 32 hex digits, like MLflow's.
fn new_run_id() -> String {
    let state = std::collections::hash_map::RandomState::new();
    let mut a = state.build_hasher();
    a.write_i64(now_ms());
    a.write_u32(std::process::id());
    let first = a.finish();
    let mut b = state.build_hasher();
    b.write_u64(first);
    b.write_u128(std::time::Instant::now().elapsed().as_nanos());
    format!("{first:016x}{:016x}", b.finish())
}

impl Store {
    pub(crate) fn new(backend: Box<dyn Backend>) -> Result<Self> {
        let location = backend.location().to_owned();
        let store = Store { backend: Mutex::new(backend), location };
        store.migrate()?;
        Ok(store)
    }

    /// The store's path or URL (password redacted).
    pub fn location(&self) -> &str {
        &self.location
    }

    fn tx<T>(&self, mut work: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
        let mut backend = self.backend.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut out = None;
        backend.transaction(&mut |tx| {
            out = Some(work(tx)?);
            Ok(())
        })?;
        Ok(out.expect("a committed transaction ran its work"))
    }

    /// Brings the schema to [`schema::latest`]; refuses a store newer than this build.
    fn migrate(&self) -> Result<()> {
        let location = self.location.clone();
        self.tx(|tx| {
            tx.batch("CREATE TABLE IF NOT EXISTS cairn_schema (version BIGINT NOT NULL)")?;
            let rows = tx.query("SELECT version FROM cairn_schema", &[])?;
            let current = match rows.first() {
                Some(row) => row[0].int(),
                None => {
                    tx.execute("INSERT INTO cairn_schema (version) VALUES (0)", &[])?;
                    0
                }
            };
            if current > schema::latest() {
                return Err(MetaError::TooNew {
                    location: location.clone(),
                    found: current,
                    supported: schema::latest(),
                });
            }
            for (i, sql) in schema::MIGRATIONS.iter().enumerate().skip(current as usize) {
                tx.batch(sql)?;
                tx.execute("UPDATE cairn_schema SET version = $1", &[Value::Int(i as i64 + 1)])?;
            }
            Ok(())
        })
    }

    /// The schema version of the store.
    pub fn version(&self) -> Result<i64> {
        self.tx(|tx| Ok(tx.query("SELECT version FROM cairn_schema", &[])?.first().map_or(0, |r| r[0].int())))
    }

    // ------------------------------------------------------------------ experiments

    pub fn create_experiment(&self, name: &str, artifact_location: &str) -> Result<i64> {
        self.tx(|tx| {
            if !tx.query("SELECT 1 FROM experiments WHERE name = $1", &[name.into()])?.is_empty() {
                return Err(MetaError::ExperimentExists(name.to_owned()));
            }
            let next = tx.query("SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM experiments", &[])?[0][0].int();
            let now = now_ms();
            tx.execute(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, \
                 last_update_time) VALUES ($1, $2, $3, 'active', $4, $5)",
                &[next.into(), name.into(), artifact_location.into(), now.into(), now.into()],
            )?;
            Ok(next)
        })
    }

    pub fn experiment(&self, id: i64) -> Result<Option<Experiment>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = $1"),
                &[id.into()],
            )?;
            Ok(rows.first().map(|r| experiment(r)))
        })
    }

    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE name = $1"),
                &[name.into()],
            )?;
            Ok(rows.first().map(|r| experiment(r)))
        })
    }

    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments ORDER BY experiment_id"),
                &[],
            )?;
            Ok(rows.iter().map(|r| experiment(r)).collect())
        })
    }

    // ------------------------------------------------------------------ runs

    /// Starts a run (status `RUNNING`); returns its id.
    pub fn create_run(&self, run: &NewRun) -> Result<String> {
        let id = new_run_id();
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM experiments WHERE experiment_id = $1", &[run.experiment_id.into()])?.is_empty() {
                return Err(MetaError::NoExperiment(run.experiment_id.to_string()));
            }
            tx.execute(
                &format!(
                    "INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, 'RUNNING', $5, $6, $7, $8, $9, $10, $11, 'active')"
                ),
                &[
                    id.clone().into(),
                    run.experiment_id.into(),
                    run.name.clone().into(),
                    run.parent_run_id.clone().into(),
                    run.start_time.into(),
                    Value::NullInt,
                    run.user.clone().into(),
                    run.git_commit.clone().into(),
                    i64::from(run.git_dirty).into(),
                    run.source.clone().into(),
                    run.artifact_uri.clone().into(),
                ],
            )?;
            Ok(())
        })?;
        Ok(id)
    }

    /// Ends a run with a status (`FINISHED`, `FAILED`, `KILLED`).
    pub fn end_run(&self, run_id: &str, status: &str, end_time: i64) -> Result<()> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE runs SET status = $1, end_time = $2 WHERE run_id = $3",
                &[status.into(), end_time.into(), run_id.into()],
            )?;
            if changed == 0 {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            Ok(())
        })
    }

    /// Marks a run deleted (`lifecycle_stage`), as MLflow does.
    pub fn delete_run(&self, run_id: &str) -> Result<()> {
        self.tx(|tx| {
            if tx
                .execute("UPDATE runs SET lifecycle_stage = 'deleted' WHERE run_id = $1", &[run_id.into()])?
                == 0
            {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            Ok(())
        })
    }

    pub fn run(&self, run_id: &str) -> Result<Option<Run>> {
        self.tx(|tx| {
            let rows =
                tx.query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"), &[run_id.into()])?;
            let Some(row) = rows.first() else { return Ok(None) };
            Ok(Some(complete(tx, run_info(row))?))
        })
    }

    /// Active runs of the experiments (all when empty), newest first, at most `max`.
    pub fn search_runs(&self, experiment_ids: &[i64], max: usize) -> Result<Vec<Run>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE lifecycle_stage = 'active' ORDER BY start_time DESC, run_id"),
                &[],
            )?;
            let mut out = Vec::new();
            for row in rows {
                let info = run_info(&row);
                if !experiment_ids.is_empty() && !experiment_ids.contains(&info.experiment_id) {
                    continue;
                }
                out.push(complete(tx, info)?);
                if out.len() >= max {
                    break;
                }
            }
            Ok(out)
        })
    }

    /// Logs metrics, params and tags in one transaction: all or nothing. A param that
    /// exists with another value is an error; tags are overwritten.
    pub fn log_batch(
        &self,
        run_id: &str,
        metrics: &[Metric],
        params: &[(String, String)],
        tags: &[(String, String)],
    ) -> Result<()> {
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM runs WHERE run_id = $1", &[run_id.into()])?.is_empty() {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            for (key, value) in params {
                let inserted = tx.execute(
                    "INSERT INTO params (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO NOTHING",
                    &[run_id.into(), key.as_str().into(), value.as_str().into()],
                )?;
                if inserted == 0 {
                    let old = tx.query("SELECT value FROM params WHERE run_id = $1 AND key = $2", &[run_id.into(), key.as_str().into()])?;
                    let old = old.first().map(|r| r[0].text()).unwrap_or_default();
                    if old != *value {
                        return Err(MetaError::ParamChanged {
                            run: run_id.to_owned(),
                            key: key.clone(),
                            old,
                            new: value.clone(),
                        });
                    }
                }
            }
            for (key, value) in tags {
                tx.execute(
                    "INSERT INTO tags (run_id, key, value) VALUES ($1, $2, $3) \
                     ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
                    &[run_id.into(), key.as_str().into(), value.as_str().into()],
                )?;
            }
            for m in metrics {
                let row = [run_id.into(), m.key.as_str().into(), m.value.into(), m.timestamp.into(), m.step.into()];
                tx.execute("INSERT INTO metrics (run_id, key, value, timestamp, step) VALUES ($1, $2, $3, $4, $5)", &row)?;
                tx.execute(
                    "INSERT INTO latest_metrics (run_id, key, value, timestamp, step) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, \
                     step = excluded.step WHERE excluded.step > latest_metrics.step OR \
                     (excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp)",
                    &row,
                )?;
            }
            Ok(())
        })
    }

    /// Every logged value of one metric, by step then timestamp.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT key, value, timestamp, step FROM metrics WHERE run_id = $1 AND key = $2 ORDER BY step, timestamp",
                &[run_id.into(), key.into()],
            )?;
            Ok(rows.iter().map(|r| metric(r)).collect())
        })
    }

    /// Records (or replaces) what happened to one stage of a run.
    pub fn record_stage(&self, run_id: &str, stage: &StageRecord) -> Result<()> {
        self.tx(|tx| {
            tx.execute("DELETE FROM stages WHERE run_id = $1 AND stage = $2", &[run_id.into(), stage.stage.as_str().into()])?;
            tx.execute(
                "INSERT INTO stages (run_id, stage, action, start_time, wall_ms, cpu_ms, max_rss_kb, fingerprint, log) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    run_id.into(),
                    stage.stage.as_str().into(),
                    stage.action.as_str().into(),
                    stage.start_time.into(),
                    stage.wall_ms.into(),
                    stage.cpu_ms.into(),
                    stage.max_rss_kb.into(),
                    stage.fingerprint.clone().into(),
                    stage.log.clone().into(),
                ],
            )
            .map(drop)
        })
    }

    pub fn stages(&self, run_id: &str) -> Result<Vec<StageRecord>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT stage, action, start_time, wall_ms, cpu_ms, max_rss_kb, fingerprint, log FROM stages \
                 WHERE run_id = $1 ORDER BY start_time, stage",
                &[run_id.into()],
            )?;
            Ok(rows
                .iter()
                .map(|r| StageRecord {
                    stage: r[0].text(),
                    action: r[1].text(),
                    start_time: r[2].int(),
                    wall_ms: r[3].int(),
                    cpu_ms: r[4].opt_int(),
                    max_rss_kb: r[5].opt_int(),
                    fingerprint: r[6].opt_text(),
                    log: r[7].opt_text(),
                })
                .collect())
        })
    }

    /// Records the digests of what a run read and wrote.
    pub fn record_io(&self, run_id: &str, records: &[IoRecord]) -> Result<()> {
        self.tx(|tx| {
            for r in records {
                tx.execute(
                    "INSERT INTO run_io (run_id, direction, path, digest, size) VALUES ($1, $2, $3, $4, $5) \
                     ON CONFLICT (run_id, direction, path) DO UPDATE SET digest = excluded.digest, size = excluded.size",
                    &[run_id.into(), r.direction.as_str().into(), r.path.as_str().into(), r.digest.as_str().into(), r.size.into()],
                )?;
            }
            Ok(())
        })
    }

    pub fn io(&self, run_id: &str) -> Result<Vec<IoRecord>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT direction, path, digest, size FROM run_io WHERE run_id = $1 ORDER BY direction, path",
                &[run_id.into()],
            )?;
            Ok(rows
                .iter()
                .map(|r| IoRecord {
                    direction: r[0].text(),
                    path: r[1].text(),
                    digest: r[2].text(),
                    size: r[3].int(),
                })
                .collect())
        })
    }
}

fn metric(row: &[Value]) -> Metric {
    Metric { key: row[0].text(), value: row[1].real(), timestamp: row[2].int(), step: row[3].int() }
}

/// A run with its params, tags and latest metrics.
fn complete(tx: &mut dyn Tx, info: RunInfo) -> Result<Run> {
    let id: Value = info.run_id.as_str().into();
    let pairs = |rows: Vec<Vec<Value>>| rows.iter().map(|r| (r[0].text(), r[1].text())).collect();
    let params = pairs(
        tx.query("SELECT key, value FROM params WHERE run_id = $1 ORDER BY key", std::slice::from_ref(&id))?,
    );
    let tags = pairs(
        tx.query("SELECT key, value FROM tags WHERE run_id = $1 ORDER BY key", std::slice::from_ref(&id))?,
    );
    let metrics = tx
        .query(
            "SELECT key, value, timestamp, step FROM latest_metrics WHERE run_id = $1 ORDER BY key",
            &[id],
        )?
        .iter()
        .map(|r| metric(r))
        .collect();
    Ok(Run { info, params, tags, metrics })
}
