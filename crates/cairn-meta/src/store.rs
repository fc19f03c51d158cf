//! The store's operations, written once over [`Backend`] and run on either database.

use std::hash::{BuildHasher, Hasher};
use std::sync::Mutex;

use crate::backend::{Backend, Tx, Value};
use crate::{
    Artifact, Columns, Experiment, IoRecord, MetaError, Metric, NewRun, Result, Run, RunInfo, RunOwner,
    RunStatus, RunUpdate, StageRecord, View, now_ms, schema,
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
        // Only `RunStatus` names are ever written; anything else (a hand-edited database) reads
        // as a run that did not finish well.
        status: RunStatus::parse(&row[4].text()).unwrap_or(RunStatus::Failed),
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
        tags: Vec::new(),
    }
}

/// A new run id: 32 hex digits, like MLflow's.
pub(crate) fn new_run_id() -> String {
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

    pub(crate) fn tx<T>(&self, mut work: impl FnMut(&mut dyn Tx) -> Result<T>) -> Result<T> {
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
            if current == 0 {
                // A new store: the Default experiment was created now (the schema's SQL
                // cannot say when, portably).
                tx.execute(
                    "UPDATE experiments SET creation_time = $1, last_update_time = $1 WHERE experiment_id = 0",
                    &[Value::Int(now_ms())],
                )?;
            }
            Ok(())
        })
    }

    /// The schema version of the store.
    pub fn version(&self) -> Result<i64> {
        self.tx(|tx| Ok(tx.query("SELECT version FROM cairn_schema", &[])?.first().map_or(0, |r| r[0].int())))
    }

    // ------------------------------------------------------------------ experiments

    /// Creates an experiment; `artifact_location` empty means `mlflow-artifacts:/<id>`.
    pub fn create_experiment(&self, name: &str, artifact_location: &str) -> Result<i64> {
        self.create_experiment_with_tags(name, artifact_location, &[])
    }

    pub fn create_experiment_with_tags(
        &self,
        name: &str,
        artifact_location: &str,
        tags: &[(String, String)],
    ) -> Result<i64> {
        self.tx(|tx| {
            if !tx.query("SELECT 1 FROM experiments WHERE name = $1", &[name.into()])?.is_empty() {
                return Err(MetaError::ExperimentExists(name.to_owned()));
            }
            let next = tx.query("SELECT COALESCE(MAX(experiment_id), 0) + 1 FROM experiments", &[])?[0][0].int();
            let now = now_ms();
            let location =
                if artifact_location.is_empty() { format!("mlflow-artifacts:/{next}") } else { artifact_location.to_owned() };
            tx.execute(
                "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, \
                 last_update_time) VALUES ($1, $2, $3, 'active', $4, $5)",
                &[next.into(), name.into(), location.into(), now.into(), now.into()],
            )?;
            for (key, value) in tags {
                set_experiment_tag(tx, next, key, value)?;
            }
            Ok(next)
        })
    }

    pub fn experiment(&self, id: i64) -> Result<Option<Experiment>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE experiment_id = $1"),
                &[id.into()],
            )?;
            rows.first().map(|r| with_tags(tx, experiment(r))).transpose()
        })
    }

    pub fn experiment_by_name(&self, name: &str) -> Result<Option<Experiment>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!("SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE name = $1"),
                &[name.into()],
            )?;
            rows.first().map(|r| with_tags(tx, experiment(r))).transpose()
        })
    }

    /// Every experiment, by id.
    pub fn experiments(&self) -> Result<Vec<Experiment>> {
        self.search_experiments(View::All)
    }

    /// Experiments in `view`, by id.
    pub fn search_experiments(&self, view: View) -> Result<Vec<Experiment>> {
        self.tx(|tx| {
            let rows = tx.query(
                &format!(
                    "SELECT {EXPERIMENT_COLUMNS} FROM experiments WHERE {} ORDER BY experiment_id",
                    view.clause("experiments")
                ),
                &[],
            )?;
            rows.iter().map(|r| with_tags(tx, experiment(r))).collect()
        })
    }

    /// Renames an experiment; the new name must be free.
    pub fn rename_experiment(&self, id: i64, name: &str) -> Result<()> {
        self.tx(|tx| {
            let holder = tx.query("SELECT experiment_id FROM experiments WHERE name = $1", &[name.into()])?;
            if holder.first().is_some_and(|r| r[0].int() != id) {
                return Err(MetaError::ExperimentExists(name.to_owned()));
            }
            let changed = tx.execute(
                "UPDATE experiments SET name = $1, last_update_time = $2 WHERE experiment_id = $3",
                &[name.into(), now_ms().into(), id.into()],
            )?;
            if changed == 0 {
                return Err(MetaError::NoExperiment(id.to_string()));
            }
            Ok(())
        })
    }

    /// Marks an experiment (and, as MLflow does, its runs) `deleted`, or `active` again.
    pub fn set_experiment_stage(&self, id: i64, stage: &str) -> Result<()> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE experiments SET lifecycle_stage = $1, last_update_time = $2 WHERE experiment_id = $3",
                &[stage.into(), now_ms().into(), id.into()],
            )?;
            if changed == 0 {
                return Err(MetaError::NoExperiment(id.to_string()));
            }
            tx.execute(
                "UPDATE runs SET lifecycle_stage = $1 WHERE experiment_id = $2",
                &[stage.into(), id.into()],
            )?;
            Ok(())
        })
    }

    pub fn set_experiment_tag(&self, id: i64, key: &str, value: &str) -> Result<()> {
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM experiments WHERE experiment_id = $1", &[id.into()])?.is_empty() {
                return Err(MetaError::NoExperiment(id.to_string()));
            }
            set_experiment_tag(tx, id, key, value)
        })
    }

    /// Removes an experiment's tag; an absent tag is not an error (as for runs' tags).
    pub fn delete_experiment_tag(&self, id: i64, key: &str) -> Result<()> {
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM experiments WHERE experiment_id = $1", &[id.into()])?.is_empty() {
                return Err(MetaError::NoExperiment(id.to_string()));
            }
            tx.execute(
                "DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2",
                &[id.into(), key.into()],
            )
            .map(drop)
        })
    }

    // ------------------------------------------------------------------ runs

    /// Starts a run (status `RUNNING`); returns its id. An empty `artifact_uri` becomes
    /// `mlflow-artifacts:/<experiment>/<run>/artifacts`, served by `cairn server`.
    pub fn create_run(&self, run: &NewRun) -> Result<String> {
        self.create_run_with_tags(run, &[])
    }

    pub fn create_run_with_tags(&self, run: &NewRun, tags: &[(String, String)]) -> Result<String> {
        let id = new_run_id();
        self.tx(|tx| {
            let stage = tx.query(
                "SELECT lifecycle_stage FROM experiments WHERE experiment_id = $1",
                &[run.experiment_id.into()],
            )?;
            match stage.first() {
                None => return Err(MetaError::NoExperiment(run.experiment_id.to_string())),
                Some(row) if row[0].text() != "active" => {
                    return Err(MetaError::NoExperiment(format!("{} (it is deleted)", run.experiment_id)));
                }
                Some(_) => {}
            }
            let artifact_uri = if run.artifact_uri.is_empty() {
                format!("mlflow-artifacts:/{}/{id}/artifacts", run.experiment_id)
            } else {
                run.artifact_uri.clone()
            };
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
                    artifact_uri.into(),
                ],
            )?;
            for (key, value) in tags {
                set_tag(tx, &id, key, value)?;
            }
            if let Some(owner) = &run.owner {
                insert_owner(tx, &id, owner, run.start_time)?;
            }
            Ok(())
        })?;
        Ok(id)
    }

    /// Ends a run with a status (`FINISHED`, `FAILED`, `KILLED`).
    pub fn end_run(&self, run_id: &str, status: RunStatus, end_time: i64) -> Result<()> {
        self.update_run(run_id, &RunUpdate { status: Some(status), end_time: Some(end_time), name: None })
    }

    /// Changes a run's status, end time or name.
    pub fn update_run(&self, run_id: &str, update: &RunUpdate) -> Result<()> {
        self.tx(|tx| {
            let changed = tx.execute(
                "UPDATE runs SET status = COALESCE($1, status), end_time = COALESCE($2, end_time), \
                 name = COALESCE($3, name) WHERE run_id = $4",
                &[
                    update.status.map(|s| s.as_str().to_owned()).into(),
                    update.end_time.into(),
                    update.name.clone().into(),
                    run_id.into(),
                ],
            )?;
            if changed == 0 {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            if let Some(name) = &update.name {
                set_tag(tx, run_id, "mlflow.runName", name)?;
            }
            Ok(())
        })
    }

    /// Records which process runs `run_id` (replacing an earlier owner) with a first
    /// heartbeat at `now`.
    pub fn claim_run(&self, run_id: &str, owner: &RunOwner, now: i64) -> Result<()> {
        self.tx(|tx| insert_owner(tx, run_id, owner, now))
    }

    /// The owner's sign of life: a run on another host whose heartbeat stops is reaped.
    pub fn heartbeat(&self, run_id: &str, now: i64) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "UPDATE run_owners SET heartbeat = $1 WHERE run_id = $2",
                &[now.into(), run_id.into()],
            )?;
            Ok(())
        })
    }

    /// Marks `KILLED` every `RUNNING` run whose owning process is gone: on `host`, one that
    /// `alive(pid, process_start)` denies; elsewhere, one whose heartbeat is older than
    /// `stale_ms` (its host cannot be asked). The end time is the last heartbeat. Returns the
    /// runs marked. Runs without an owner (an MLflow client's) are left alone.
    pub fn reap_dead_runs(
        &self,
        host: &str,
        alive: &dyn Fn(i64, i64) -> bool,
        now: i64,
        stale_ms: i64,
    ) -> Result<Vec<String>> {
        let rows = self.tx(|tx| {
            tx.query(
                "SELECT o.run_id, o.host, o.pid, o.process_start, o.heartbeat FROM run_owners o                  JOIN runs r ON r.run_id = o.run_id WHERE r.status = 'RUNNING'",
                &[],
            )
        })?;
        let mut reaped = Vec::new();
        for row in rows {
            let (run_id, owner_host, pid, start, heartbeat) =
                (row[0].text(), row[1].text(), row[2].int(), row[3].int(), row[4].int());
            let dead = if owner_host == host { !alive(pid, start) } else { now - heartbeat > stale_ms };
            if !dead {
                continue;
            }
            let changed = self.tx(|tx| {
                tx.execute(
                    "UPDATE runs SET status = 'KILLED', end_time = $1 WHERE run_id = $2 AND status = 'RUNNING'",
                    &[heartbeat.into(), run_id.clone().into()],
                )
            })?;
            if changed > 0 {
                reaped.push(run_id);
            }
        }
        Ok(reaped)
    }

    /// Marks a run deleted (`lifecycle_stage`), as MLflow does.
    pub fn delete_run(&self, run_id: &str) -> Result<()> {
        self.set_run_stage(run_id, "deleted")
    }

    /// Marks a deleted run active again.
    pub fn restore_run(&self, run_id: &str) -> Result<()> {
        self.set_run_stage(run_id, "active")
    }

    fn set_run_stage(&self, run_id: &str, stage: &str) -> Result<()> {
        self.tx(|tx| {
            if tx.execute(
                "UPDATE runs SET lifecycle_stage = $1 WHERE run_id = $2",
                &[stage.into(), run_id.into()],
            )? == 0
            {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            Ok(())
        })
    }

    /// Adds a run recorded elsewhere (`cairn exp pull`) with its id, params, tags, metric
    /// history, stages and records; returns `false` (and changes nothing) if the id is
    /// already here. One transaction: a run arrives whole or not at all.
    pub fn import_run(
        &self,
        run: &Run,
        history: &[Metric],
        stages: &[StageRecord],
        io: &[IoRecord],
    ) -> Result<bool> {
        self.tx(|tx| {
            let info = &run.info;
            if !tx.query("SELECT 1 FROM runs WHERE run_id = $1", &[info.run_id.as_str().into()])?.is_empty() {
                return Ok(false);
            }
            if tx.query("SELECT 1 FROM experiments WHERE experiment_id = $1", &[info.experiment_id.into()])?.is_empty() {
                return Err(MetaError::NoExperiment(info.experiment_id.to_string()));
            }
            tx.execute(
                &format!("INSERT INTO runs ({RUN_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"),
                &[
                    info.run_id.as_str().into(),
                    info.experiment_id.into(),
                    info.name.as_str().into(),
                    info.parent_run_id.clone().into(),
                    info.status.as_str().into(),
                    info.start_time.into(),
                    info.end_time.into(),
                    info.user.as_str().into(),
                    info.git_commit.clone().into(),
                    i64::from(info.git_dirty).into(),
                    info.source.as_str().into(),
                    info.artifact_uri.as_str().into(),
                    info.lifecycle_stage.as_str().into(),
                ],
            )?;
            for (key, value) in &run.params {
                tx.execute(
                    "INSERT INTO params (run_id, key, value) VALUES ($1, $2, $3)",
                    &[info.run_id.as_str().into(), key.as_str().into(), value.as_str().into()],
                )?;
            }
            for (key, value) in &run.tags {
                set_tag(tx, &info.run_id, key, value)?;
            }
            insert_metrics(tx, &info.run_id, history)?;
            for stage in stages {
                insert_stage(tx, &info.run_id, stage)?;
            }
            for r in io {
                insert_io(tx, &info.run_id, r)?;
            }
            Ok(true)
        })
    }

    /// Removes a run and everything recorded about it (`cairn exp remove`).
    pub fn purge_run(&self, run_id: &str) -> Result<()> {
        self.tx(|tx| {
            for table in [
                "params",
                "tags",
                "metrics",
                "latest_metrics",
                "stages",
                "run_io",
                "run_inputs",
                "run_models",
            ] {
                tx.execute(&format!("DELETE FROM {table} WHERE run_id = $1"), &[run_id.into()])?;
            }
            if tx.execute("DELETE FROM runs WHERE run_id = $1", &[run_id.into()])? == 0 {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            Ok(())
        })
    }

    pub fn run(&self, run_id: &str) -> Result<Option<Run>> {
        self.tx(|tx| {
            let rows =
                tx.query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE run_id = $1"), &[run_id.into()])?;
            Ok(complete(tx, rows, "runs.run_id = $1", &[run_id.into()])?.pop())
        })
    }

    /// Active runs of the experiments (all when empty), newest first, at most `max`.
    pub fn search_runs(&self, experiment_ids: &[i64], max: usize) -> Result<Vec<Run>> {
        let mut runs = self.runs(experiment_ids, View::Active)?;
        runs.truncate(max);
        Ok(runs)
    }

    /// Every run of the experiments (all when empty) in `view`, newest first, with params,
    /// tags and latest metrics: a fixed number of queries however many runs there are.
    pub fn runs(&self, experiment_ids: &[i64], view: View) -> Result<Vec<Run>> {
        self.tx(|tx| {
            let mut clause = view.clause("runs");
            let params: Vec<Value> = experiment_ids.iter().map(|&id| id.into()).collect();
            if !experiment_ids.is_empty() {
                let slots: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
                clause.push_str(&format!(" AND runs.experiment_id IN ({})", slots.join(", ")));
            }
            let rows = tx.query(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE {clause} ORDER BY start_time DESC, run_id"),
                &params,
            )?;
            complete(tx, rows, &clause, &params)
        })
    }

    /// Every run in `view`, newest first, with only the params, tags and metrics `columns`
    /// names (and dataset inputs if it asks): what a filter and a sort key need, so a listing
    /// of many runs reads a few columns and loads whole runs only for the page it shows.
    pub fn runs_with(&self, view: View, columns: &Columns) -> Result<Vec<Run>> {
        self.tx(|tx| {
            let clause = view.clause("runs");
            let rows = tx.query(
                &format!("SELECT {RUN_COLUMNS} FROM runs WHERE {clause} ORDER BY start_time DESC, run_id"),
                &[],
            )?;
            complete_with(tx, rows, &clause, &[], Some(columns))
        })
    }

    /// One page of active runs in start order (newest first when `descending`, ties by run
    /// id in the same direction), after the run `after` names (its start time and id):
    /// their ids, and how many active runs there are. Reads only the page.
    pub fn run_ids_by_start(
        &self,
        descending: bool,
        after: Option<(i64, &str)>,
        limit: usize,
    ) -> Result<(Vec<String>, usize)> {
        self.tx(|tx| {
            let (cmp, order) = if descending { ("<", "DESC") } else { (">", "ASC") };
            let mut params: Vec<Value> = Vec::new();
            let mut clause = "lifecycle_stage = 'active'".to_owned();
            if let Some((time, id)) = after {
                clause.push_str(&format!(
                    " AND (start_time {cmp} $1 OR (start_time = $1 AND run_id {cmp} $2))"
                ));
                params.extend([time.into(), id.into()]);
            }
            let rows = tx.query(
                &format!(
                    "SELECT run_id FROM runs WHERE {clause} ORDER BY start_time {order}, run_id {order} LIMIT {}",
                    limit.min(100_000)
                ),
                &params,
            )?;
            let total = tx.query("SELECT COUNT(*) FROM runs WHERE lifecycle_stage = 'active'", &[])?;
            let total = total.first().map_or(0, |r| r[0].int()) as usize;
            Ok((rows.iter().map(|r| r[0].text()).collect(), total))
        })
    }

    /// The runs with these ids, whole, in the order given (ids not found are left out).
    pub fn runs_by_id(&self, ids: &[String]) -> Result<Vec<Run>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut found = self.tx(|tx| {
            let params: Vec<Value> = ids.iter().map(|id| id.as_str().into()).collect();
            let slots: Vec<String> = (1..=params.len()).map(|i| format!("${i}")).collect();
            let clause = format!("runs.run_id IN ({})", slots.join(", "));
            let rows = tx.query(&format!("SELECT {RUN_COLUMNS} FROM runs WHERE {clause}"), &params)?;
            complete(tx, rows, &clause, &params)
        })?;
        let order: std::collections::HashMap<&str, usize> =
            ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
        found.sort_by_key(|r| order.get(r.info.run_id.as_str()).copied().unwrap_or(usize::MAX));
        Ok(found)
    }

    /// Every param key and every metric key any run has (deleted ones too: joining the runs
    /// to leave them out costs a random read per row, seconds at 100,000 runs), sorted.
    pub fn run_keys(&self) -> Result<(Vec<String>, Vec<String>)> {
        self.tx(|tx| {
            let mut keys = |table: &str| -> Result<Vec<String>> {
                let rows = tx.query(&format!("SELECT DISTINCT key FROM {table} ORDER BY key"), &[])?;
                Ok(rows.iter().map(|r| r[0].text()).collect())
            };
            Ok((keys("params")?, keys("latest_metrics")?))
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
            let stage = tx.query("SELECT lifecycle_stage FROM runs WHERE run_id = $1", &[run_id.into()])?;
            match stage.first() {
                None => return Err(MetaError::NoRun(run_id.to_owned())),
                Some(row) if row[0].text() != "active" => return Err(MetaError::RunNotActive(run_id.to_owned())),
                Some(_) => {}
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
                set_tag(tx, run_id, key, value)?;
            }
            insert_metrics(tx, run_id, metrics)
        })
    }

    /// Removes a tag; an absent tag is not an error.
    pub fn delete_tag(&self, run_id: &str, key: &str) -> Result<()> {
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM runs WHERE run_id = $1", &[run_id.into()])?.is_empty() {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            tx.execute("DELETE FROM tags WHERE run_id = $1 AND key = $2", &[run_id.into(), key.into()])
                .map(drop)
        })
    }

    /// Records dataset inputs (each `(name, digest, JSON body)`); logging one twice keeps one.
    pub fn log_inputs(&self, run_id: &str, inputs: &[(String, String, String)]) -> Result<()> {
        self.tx(|tx| {
            if tx.query("SELECT 1 FROM runs WHERE run_id = $1", &[run_id.into()])?.is_empty() {
                return Err(MetaError::NoRun(run_id.to_owned()));
            }
            for (name, digest, body) in inputs {
                tx.execute(
                    "INSERT INTO run_inputs (run_id, name, digest, body) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (run_id, name, digest) DO UPDATE SET body = excluded.body",
                    &[run_id.into(), name.as_str().into(), digest.as_str().into(), body.as_str().into()],
                )?;
            }
            Ok(())
        })
    }

    /// The newest active run from `source` at `commit`: the run a re-run or an experiment
    /// varies (its parent).
    pub fn latest_run_at(&self, source: &str, commit: &str) -> Result<Option<String>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT run_id FROM runs WHERE source = $1 AND git_commit = $2 AND lifecycle_stage = 'active' \
                 ORDER BY start_time DESC, run_id LIMIT 1",
                &[source.into(), commit.into()],
            )?;
            Ok(rows.first().map(|r| r[0].text()))
        })
    }

    /// Every logged value of one metric, by step then timestamp.
    pub fn metric_history(&self, run_id: &str, key: &str) -> Result<Vec<Metric>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_id = $1 AND key = $2 \
                 ORDER BY step, timestamp",
                &[run_id.into(), key.into()],
            )?;
            Ok(rows.iter().map(|r| metric(r)).collect())
        })
    }

    /// Every metric key a run logged.
    pub fn metric_keys(&self, run_id: &str) -> Result<Vec<String>> {
        self.tx(|tx| {
            let rows =
                tx.query("SELECT key FROM latest_metrics WHERE run_id = $1 ORDER BY key", &[run_id.into()])?;
            Ok(rows.iter().map(|r| r[0].text()).collect())
        })
    }

    // ------------------------------------------------------------------ artifacts

    /// Records (or replaces) the file at `path` in the artifact tree.
    pub fn put_artifact(&self, artifact: &Artifact) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO artifacts (path, digest, size, modified) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (path) DO UPDATE SET digest = excluded.digest, size = excluded.size, \
                 modified = excluded.modified",
                &[
                    artifact.path.as_str().into(),
                    artifact.digest.to_string().into(),
                    artifact.size.into(),
                    now_ms().into(),
                ],
            )
            .map(drop)
        })
    }

    pub fn artifact(&self, path: &str) -> Result<Option<Artifact>> {
        self.tx(|tx| {
            let rows =
                tx.query("SELECT path, digest, size FROM artifacts WHERE path = $1", &[path.into()])?;
            rows.first().map(|r| artifact(r)).transpose()
        })
    }

    /// Every file below the directory `prefix` (no trailing `/`; empty: the whole tree).
    pub fn artifacts_under(&self, prefix: &str) -> Result<Vec<Artifact>> {
        self.tx(|tx| {
            // Paths below `a/b` sort between `a/b/` and `a/b0` (`0` follows `/`).
            let rows = if prefix.is_empty() {
                tx.query("SELECT path, digest, size FROM artifacts ORDER BY path", &[])?
            } else {
                tx.query(
                    "SELECT path, digest, size FROM artifacts WHERE path >= $1 AND path < $2 ORDER BY path",
                    &[format!("{prefix}/").into(), format!("{prefix}0").into()],
                )?
            };
            rows.iter().map(|r| artifact(r)).collect()
        })
    }

    /// Every cache object the store names — artifacts, and files kept for experiments — as
    /// `(what, digest, size)`, so garbage collection keeps them.
    pub fn referenced_objects(&self) -> Result<Vec<(String, cairn_hash::Digest, i64)>> {
        self.tx(|tx| {
            let mut out: Vec<(String, cairn_hash::Digest, i64)> = tx
                .query("SELECT path, digest, size FROM artifacts", &[])?
                .iter()
                .map(|r| Ok((format!("artifact {}", r[0].text()), r[1].digest()?, r[2].int())))
                .collect::<Result<_>>()?;
            for r in
                tx.query("SELECT run_id, path, digest, size FROM run_io WHERE direction = 'file'", &[])?
            {
                out.push((format!("{} of run {}", r[1].text(), r[0].text()), r[2].digest()?, r[3].int()));
            }
            for r in
                tx.query("SELECT name, version, profile FROM model_versions WHERE profile IS NOT NULL", &[])?
            {
                out.push((
                    format!("training-data profile of {}@{}", r[0].text(), r[1].int()),
                    r[2].digest()?,
                    0,
                ));
            }
            Ok(out)
        })
    }

    /// Forgets the file at `path` or every file below it; returns how many.
    pub fn delete_artifacts(&self, path: &str) -> Result<u64> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM artifacts WHERE path = $1 OR (path >= $2 AND path < $3)",
                &[path.into(), format!("{path}/").into(), format!("{path}0").into()],
            )
        })
    }

    /// Records (or replaces) what happened to one stage of a run.
    pub fn record_stage(&self, run_id: &str, stage: &StageRecord) -> Result<()> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM stages WHERE run_id = $1 AND stage = $2",
                &[run_id.into(), stage.stage.as_str().into()],
            )?;
            insert_stage(tx, run_id, stage)
        })
    }

    pub fn stages(&self, run_id: &str) -> Result<Vec<StageRecord>> {
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT stage, action, start_time, wall_ms, cpu_ms, max_rss_kb, fingerprint, log, error FROM stages \
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
                    error: r[8].opt_text(),
                })
                .collect())
        })
    }

    /// Records the digests of what a run read and wrote.
    pub fn record_io(&self, run_id: &str, records: &[IoRecord]) -> Result<()> {
        self.tx(|tx| {
            for r in records {
                insert_io(tx, run_id, r)?;
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
            rows.iter()
                .map(|r| {
                    Ok(IoRecord {
                        direction: r[0].text(),
                        path: r[1].text(),
                        digest: r[2].digest()?,
                        size: r[3].int(),
                    })
                })
                .collect()
        })
    }
}

/// A metric from `key, value, timestamp, step, is_nan`.
pub(crate) fn metric(row: &[Value]) -> Metric {
    let value = if row[4].int() != 0 { f64::NAN } else { row[1].real() };
    Metric { key: row[0].text(), value, timestamp: row[2].int(), step: row[3].int() }
}

/// Metric points per `INSERT` statement (six values each, well under SQLite's and
/// PostgreSQL's limits on bound values).
const METRIC_ROWS_PER_INSERT: usize = 100;

/// The bound values of a metric row: `run_id, key, value, timestamp, step, is_nan`.
pub(crate) fn metric_row(run_id: &str, m: &Metric) -> [Value; 6] {
    let (value, is_nan) = if m.value.is_nan() { (0.0, 1) } else { (m.value, 0) };
    [run_id.into(), m.key.as_str().into(), value.into(), m.timestamp.into(), m.step.into(), is_nan.into()]
}

/// Appends metric points to their histories and moves each key's latest value forward (a
/// point is latest if its step, then timestamp, is not older than the recorded one).
pub(crate) fn insert_metrics(tx: &mut dyn Tx, run_id: &str, metrics: &[Metric]) -> Result<()> {
    // The newest point of each key in this batch is the only candidate for latest.
    let mut newest: std::collections::HashMap<&str, &Metric> = std::collections::HashMap::new();
    // Many rows per statement: a batch of 1,000 points is ten statements, not 1,000.
    for chunk in metrics.chunks(METRIC_ROWS_PER_INSERT) {
        let mut sql =
            String::from("INSERT INTO metrics (run_id, key, value, timestamp, step, is_nan) VALUES ");
        let mut values = Vec::with_capacity(chunk.len() * 6);
        for (i, m) in chunk.iter().enumerate() {
            let n = i * 6;
            if i > 0 {
                sql.push_str(", ");
            }
            sql.push_str(&format!(
                "(${}, ${}, ${}, ${}, ${}, ${})",
                n + 1,
                n + 2,
                n + 3,
                n + 4,
                n + 5,
                n + 6
            ));
            values.extend(metric_row(run_id, m));
        }
        tx.execute(&sql, &values)?;
    }
    for m in metrics {
        let slot = newest.entry(m.key.as_str()).or_insert(m);
        if (m.step, m.timestamp) >= (slot.step, slot.timestamp) {
            *slot = m;
        }
    }
    for m in newest.values() {
        tx.execute(
            "INSERT INTO latest_metrics (run_id, key, value, timestamp, step, is_nan) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, timestamp = excluded.timestamp, \
             step = excluded.step, is_nan = excluded.is_nan WHERE excluded.step > latest_metrics.step OR \
             (excluded.step = latest_metrics.step AND excluded.timestamp >= latest_metrics.timestamp)",
            &metric_row(run_id, m),
        )?;
    }
    Ok(())
}

fn insert_stage(tx: &mut dyn Tx, run_id: &str, stage: &StageRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO stages (run_id, stage, action, start_time, wall_ms, cpu_ms, max_rss_kb, fingerprint, log, error) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
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
            stage.error.clone().into(),
        ],
    )
    .map(drop)
}

/// Records (or replaces) one path a run read or wrote.
fn insert_io(tx: &mut dyn Tx, run_id: &str, r: &IoRecord) -> Result<()> {
    tx.execute(
        "INSERT INTO run_io (run_id, direction, path, digest, size) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (run_id, direction, path) DO UPDATE SET digest = excluded.digest, size = excluded.size",
        &[
            run_id.into(),
            r.direction.as_str().into(),
            r.path.as_str().into(),
            r.digest.to_string().into(),
            r.size.into(),
        ],
    )
    .map(drop)
}

fn artifact(row: &[Value]) -> Result<Artifact> {
    Ok(Artifact { path: row[0].text(), digest: row[1].digest()?, size: row[2].int() })
}

/// Records (or replaces) the owner of a run, with a first heartbeat at `now`.
fn insert_owner(tx: &mut dyn Tx, run_id: &str, owner: &RunOwner, now: i64) -> Result<()> {
    tx.execute("DELETE FROM run_owners WHERE run_id = $1", &[run_id.into()])?;
    tx.execute(
        "INSERT INTO run_owners (run_id, host, pid, process_start, heartbeat) VALUES ($1, $2, $3, $4, $5)",
        &[run_id.into(), owner.host.clone().into(), owner.pid.into(), owner.process_start.into(), now.into()],
    )?;
    Ok(())
}

fn set_tag(tx: &mut dyn Tx, run_id: &str, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO tags (run_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value",
        &[run_id.into(), key.into(), value.into()],
    )
    .map(drop)
}

fn set_experiment_tag(tx: &mut dyn Tx, id: i64, key: &str, value: &str) -> Result<()> {
    tx.execute(
        "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
        &[id.into(), key.into(), value.into()],
    )
    .map(drop)
}

fn with_tags(tx: &mut dyn Tx, mut experiment: Experiment) -> Result<Experiment> {
    experiment.tags = tx
        .query(
            "SELECT key, value FROM experiment_tags WHERE experiment_id = $1 ORDER BY key",
            &[experiment.id.into()],
        )?
        .iter()
        .map(|r| (r[0].text(), r[1].text()))
        .collect();
    Ok(experiment)
}

/// The runs in `rows` with their params, tags, latest metrics and inputs, read with one query
/// per table for every run matching `clause` (the clause that selected `rows`).
fn complete(tx: &mut dyn Tx, rows: Vec<Vec<Value>>, clause: &str, params: &[Value]) -> Result<Vec<Run>> {
    complete_with(tx, rows, clause, params, None)
}

/// Fills in runs' params, tags, latest metrics, inputs and models (`only`: just the keys it
/// names, and inputs only if it asks for them).
fn complete_with(
    tx: &mut dyn Tx,
    rows: Vec<Vec<Value>>,
    clause: &str,
    params: &[Value],
    only: Option<&Columns>,
) -> Result<Vec<Run>> {
    let mut runs: Vec<Run> = rows
        .iter()
        .map(|row| Run {
            info: run_info(row),
            params: Vec::new(),
            tags: Vec::new(),
            metrics: Vec::new(),
            inputs: Vec::new(),
            models: Vec::new(),
        })
        .collect();
    if runs.is_empty() {
        return Ok(runs);
    }
    let index: std::collections::HashMap<String, usize> =
        runs.iter().enumerate().map(|(i, r)| (r.info.run_id.clone(), i)).collect();
    // With `only`, each table is read for the keys named (a table with none is not read).
    let keys = |table: &str| -> Option<String> {
        let Some(only) = only else { return Some(String::new()) };
        let keys = match table {
            "params" => &only.params,
            "tags" => &only.tags,
            _ => &only.metrics,
        };
        if keys.is_empty() {
            return None;
        }
        let quoted: Vec<String> = keys.iter().map(|k| format!("'{}'", k.replace('\'', "''"))).collect();
        Some(format!("t.key IN ({})", quoted.join(", ")))
    };
    let select = |columns: &str, table: &str| {
        keys(table).map(|restrict| match only {
            // A few keys of every run: read by key, neither joined with the runs nor sorted
            // (each costs a random read or a sort of every row); rows of runs not listed are
            // skipped below, and a run's keys come in no particular order.
            Some(_) => format!("SELECT t.run_id, {columns} FROM {table} t WHERE {restrict}"),
            None => format!(
                "SELECT t.run_id, {columns} FROM {table} t JOIN runs ON runs.run_id = t.run_id WHERE {clause} \
                 ORDER BY t.run_id, t.key"
            ),
        })
    };
    // Rows come grouped by run (whole runs): the index is looked up once per run, not per row.
    let mut at: Option<(String, Option<usize>)> = None;
    let mut find = |id: &Value| -> Option<usize> {
        let Value::Text(id) = id else { return None };
        match &at {
            Some((last, i)) if last == id => *i,
            _ => {
                let i = index.get(id).copied();
                at = Some((id.clone(), i));
                i
            }
        }
    };
    if let Some(query) = select("t.key, t.value", "params") {
        tx.query_each(&query, params, &mut |row| {
            if let Some(i) = find(&row[0]) {
                runs[i].params.push((row[1].text(), row[2].text()));
            }
        })?;
    }
    if let Some(query) = select("t.key, t.value", "tags") {
        tx.query_each(&query, params, &mut |row| {
            if let Some(i) = find(&row[0]) {
                runs[i].tags.push((row[1].text(), row[2].text()));
            }
        })?;
    }
    if let Some(query) = select("t.key, t.value, t.timestamp, t.step, t.is_nan", "latest_metrics") {
        tx.query_each(&query, params, &mut |row| {
            if let Some(i) = find(&row[0]) {
                runs[i].metrics.push(metric(&row[1..]));
            }
        })?;
    }
    if only.is_some_and(|o| !o.inputs) {
        return Ok(runs);
    }
    let inputs = format!(
        "SELECT t.run_id, t.body FROM run_inputs t JOIN runs ON runs.run_id = t.run_id WHERE {clause} \
         ORDER BY t.run_id, t.name, t.digest"
    );
    for row in tx.query(&inputs, params)? {
        if let Some(&i) = index.get(&row[0].text()) {
            runs[i].inputs.push(row[1].text());
        }
    }
    let models = format!(
        "SELECT t.run_id, t.model_id, t.direction, t.step FROM run_models t JOIN runs ON runs.run_id = t.run_id \
         WHERE {clause} ORDER BY t.run_id, t.step, t.model_id"
    );
    for row in tx.query(&models, params)? {
        if let Some(&i) = index.get(&row[0].text()) {
            let direction = if row[2].text() == "input" {
                crate::ModelDirection::Input
            } else {
                crate::ModelDirection::Output
            };
            runs[i].models.push(crate::RunModel { model_id: row[1].text(), direction, step: row[3].int() });
        }
    }
    Ok(runs)
}
