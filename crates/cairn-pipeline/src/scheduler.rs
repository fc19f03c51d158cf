//! The scheduler: evaluates each stage once everything upstream of it finished, then
//! records, restores or queues it; runs queued commands (whole stages, or the parts of datum
//! and partitioned stages) within the job, CPU, GPU and memory budget; and records what
//! finished in the lock and the run cache.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use cairn_hash::hash_bytes;
use cairn_repo::confine::Access;
use cairn_repo::{NoReporter, Tracked};

use crate::engine::{
    Action, Decision, Evaluation, Observer, Part, PartCounts, Project, Records, RunOptions, StageReport,
    now_secs, rel_bytes, seconds,
};
use crate::exec::{self, Job, Outcome};
use crate::lock::{Content, LockedDatum, LockedStage, PartsFile};
use crate::runcache::Entry;
use crate::spec::Stage;
use crate::template::render_datum;
use crate::{PipelineError, Result, checks};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done,
    Failed,
    Blocked,
    NotRun,
}

/// A command to run: a whole stage, or one part (datum or partition) of a stage.
struct Task {
    stage: usize,
    part: Option<Part>,
}

/// A datum or partitioned stage being run: parts still out, and what finished.
struct PartProgress {
    evaluation: Evaluation,
    outstanding: usize,
    /// Every part's lock entry: the lock's, replaced as parts finish.
    done: BTreeMap<String, LockedDatum>,
    counts: PartCounts,
    failed: bool,
}

pub(crate) struct Scheduler<'p, 'r> {
    project: &'p mut Project<'r>,
    options: &'p RunOptions,
    commit: Option<String>,
    selected: Vec<usize>,
    forced: HashSet<usize>,
    state: Vec<State>,
    remaining: Vec<usize>,
    records: Records,
    queue: Vec<Task>,
    /// Single-run stages waiting for their command: their evaluation.
    running: HashMap<usize, (Evaluation, Instant)>,
    part_stages: HashMap<usize, (PartProgress, Instant)>,
    reports: BTreeMap<usize, StageReport>,
    free_cpus: u32,
    free_gpus: Vec<u32>,
    free_memory: u64,
    active: usize,
    stop: bool,
    /// What each stage's commands cost so far.
    usage: HashMap<usize, exec::Usage>,
}

struct Finished {
    task: Task,
    outcome: Outcome,
    usage: Option<exec::Usage>,
    gpus: Vec<u32>,
    cpus: u32,
    memory: u64,
}

impl<'p, 'r> Scheduler<'p, 'r> {
    pub(crate) fn new(
        project: &'p mut Project<'r>,
        selected: &[usize],
        options: &'p RunOptions,
        commit: Option<String>,
    ) -> Self {
        let n = project.pipeline.stages.len();
        let forced = if options.force { project.resolve_exact(&options.targets) } else { HashSet::new() };
        let in_run: HashSet<usize> = selected.iter().copied().collect();
        let remaining =
            (0..n).map(|i| project.graph.upstream[i].iter().filter(|u| in_run.contains(u)).count()).collect();
        Scheduler {
            project,
            options,
            commit,
            selected: selected.to_vec(),
            forced,
            state: vec![State::Waiting; n],
            remaining,
            records: Records::new(),
            queue: Vec::new(),
            running: HashMap::new(),
            part_stages: HashMap::new(),
            reports: BTreeMap::new(),
            free_cpus: options.cpus.max(1),
            free_gpus: (0..options.gpus).collect(),
            free_memory: options.memory,
            active: 0,
            stop: false,
            usage: HashMap::new(),
        }
    }

    fn name(&self, i: usize) -> String {
        self.project.pipeline.stages[i].name.clone()
    }

    fn report(
        &mut self,
        i: usize,
        action: Action,
        reasons: Vec<String>,
        started: Option<Instant>,
        error: Option<String>,
    ) {
        let seconds = started.map(|s| s.elapsed().as_secs_f64()).unwrap_or(0.0);
        let stage = self.name(i);
        let previous = self.reports.get(&i);
        let parts = previous.and_then(|r| r.parts);
        let (cpu_ms, max_rss_kb) =
            self.usage.get(&i).map_or((None, None), |u| (Some(u.cpu_ms), Some(u.max_rss_kb)));
        self.reports
            .insert(i, StageReport { stage, action, reasons, seconds, error, parts, cpu_ms, max_rss_kb });
    }

    pub(crate) fn drive(&mut self, observer: &dyn Observer) -> Result<()> {
        let selected = self.selected.clone();
        self.project.digest_all(&selected, &mut self.records)?;
        let (tx, rx) = mpsc::channel::<Finished>();
        let cancel = &self.options.cancel;
        let root = self.project.repo.root().to_path_buf();
        std::thread::scope(|scope| -> Result<()> {
            let mut error = None;
            loop {
                if cancel.load(Ordering::Relaxed) {
                    self.stop = true;
                }
                // Evaluate every stage whose upstream is done.
                if !self.stop && error.is_none() {
                    let ready: Vec<usize> = selected
                        .iter()
                        .copied()
                        .filter(|&i| self.state[i] == State::Waiting && self.remaining[i] == 0)
                        .collect();
                    for i in ready {
                        if let Err(e) = self.start_stage(i, observer) {
                            error = Some(e);
                            self.stop = true;
                            break;
                        }
                    }
                }
                // Start queued commands while the budget allows.
                let mut k = 0;
                while !self.stop && k < self.queue.len() {
                    let stage = &self.project.pipeline.stages[self.queue[k].stage];
                    let cpus = stage.cpus.clamp(1, self.options.cpus.max(1));
                    let fits = self.active < self.options.jobs.max(1)
                        && cpus <= self.free_cpus
                        && (stage.gpus as usize) <= self.free_gpus.len()
                        && (self.options.memory == 0 || stage.memory <= self.free_memory);
                    if !fits {
                        k += 1;
                        continue;
                    }
                    let task = self.queue.remove(k);
                    let gpus: Vec<u32> = self.free_gpus.drain(..stage.gpus as usize).collect();
                    let memory = if self.options.memory == 0 { 0 } else { stage.memory };
                    self.free_cpus -= cpus;
                    self.free_memory -= memory;
                    self.active += 1;
                    let job = self.job(&task, &gpus, &root)?;
                    let tx = tx.clone();
                    scope.spawn(move || {
                        let (outcome, usage) = exec::run_measured(&job, observer, cancel);
                        let _ = tx.send(Finished { task, outcome, usage, gpus, cpus, memory });
                    });
                }
                if self.active == 0 {
                    let more = !self.stop
                        && selected
                            .iter()
                            .any(|&i| self.state[i] == State::Waiting && self.remaining[i] == 0);
                    if !more && (self.queue.is_empty() || self.stop) {
                        break;
                    }
                    if more {
                        continue;
                    }
                }
                let Ok(finished) = rx.recv_timeout(Duration::from_millis(100)) else { continue };
                self.active -= 1;
                self.free_cpus += finished.cpus;
                self.free_memory += finished.memory;
                self.free_gpus.extend(finished.gpus);
                self.free_gpus.sort();
                if let Some(measured) = finished.usage {
                    let total = self.usage.entry(finished.task.stage).or_default();
                    total.cpu_ms += measured.cpu_ms;
                    total.max_rss_kb = total.max_rss_kb.max(measured.max_rss_kb);
                }
                if let Err(e) = self.finish_task(finished.task, finished.outcome, observer) {
                    error.get_or_insert(e);
                    self.stop = true;
                }
            }
            match error {
                Some(e) => Err(e),
                None => Ok(()),
            }
        })
    }

    /// Builds the command for a task.
    fn job(&self, task: &Task, gpus: &[u32], root: &Path) -> Result<Job> {
        let stage = &self.project.pipeline.stages[task.stage];
        let cwd = root.join(&stage.wdir);
        let mut env: Vec<(String, String)> = stage.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        env.push(("CAIRN_STAGE".into(), stage.name.clone()));
        env.extend(self.options.extra_env.iter().cloned());
        if !gpus.is_empty() {
            let ids: Vec<String> = gpus.iter().map(u32::to_string).collect();
            env.push(("CUDA_VISIBLE_DEVICES".into(), ids.join(",")));
        }
        let logs = root.join(".cairn/state/logs");
        let (label, cmds, log) = match &task.part {
            None => (stage.name.clone(), stage.cmd.clone(), logs.join(format!("{}.log", stage.name))),
            Some(part) => {
                let staging = root.join(staging_rel(&stage.name, &part.key));
                let _ = std::fs::remove_dir_all(&staging);
                std::fs::create_dir_all(&staging)
                    .map_err(|e| PipelineError::io("create directory", &staging, e))?;
                let out = staging.to_string_lossy().into_owned();
                for (_, value) in env.iter_mut() {
                    *value = render_part(stage, value, &part.key, &out);
                }
                let variable = if stage.datums.is_some() { "CAIRN_DATUM" } else { "CAIRN_PARTITION" };
                env.push((variable.into(), part.key.clone()));
                (
                    format!("{}[{}]", stage.name, part.key),
                    stage.cmd.iter().map(|c| render_part(stage, c, &part.key, &out)).collect(),
                    logs.join(&stage.name).join(format!("{}.log", part_key(&part.key))),
                )
            }
        };
        // Step-wise metrics: the command appends JSON lines here; `cairn run` follows the file
        // and records each line as it arrives.
        let live: String = label
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') { c } else { '_' })
            .collect();
        env.push((
            "CAIRN_METRICS_FILE".into(),
            root.join(crate::LIVE_METRICS_DIR).join(format!("{live}.jsonl")).to_string_lossy().into_owned(),
        ));
        Ok(Job {
            label,
            cmds,
            cwd,
            env,
            timeout: stage.timeout,
            retries: stage.retries,
            log,
            supervisor: self.options.supervisor.clone(),
        })
    }

    /// Evaluates a ready stage and acts: fresh, record, restore, or queue its command(s).
    fn start_stage(&mut self, i: usize, observer: &dyn Observer) -> Result<()> {
        let name = self.name(i);
        if self.project.graph.upstream[i]
            .iter()
            .any(|&u| matches!(self.state[u], State::Failed | State::Blocked))
        {
            self.state[i] = State::Blocked;
            self.report(i, Action::Blocked, vec!["a stage it depends on failed".into()], None, None);
            observer.stage(&name, "blocked: a stage it depends on failed");
            self.release(i);
            return Ok(());
        }
        let started = Instant::now();
        let stage = self.project.pipeline.stages[i].clone();
        // Deps written by upstream stages in this run are digested now.
        self.project.digest_all(&[i], &mut self.records)?;
        let evaluation = match self.project.evaluate(i, &self.records, self.forced.contains(&i)) {
            Ok(e) => e,
            Err(e) => {
                self.state[i] = State::Failed;
                let message = e.to_string();
                observer.stage(&name, &format!("failed: {message}"));
                self.report(i, Action::Failed, Vec::new(), None, Some(message));
                self.after_failure(i);
                return Ok(());
            }
        };
        match evaluation.decision {
            Decision::Fresh => {
                self.state[i] = State::Done;
                observer.stage(&name, "up to date");
                self.report(i, Action::Fresh, evaluation.reasons, None, None);
                if let (Some(plan), Some(report)) = (&evaluation.parts, self.reports.get_mut(&i)) {
                    report.parts = Some(PartCounts {
                        fresh: plan.fresh as u64,
                        missing: plan.missing as u64,
                        ..Default::default()
                    });
                }
                self.release(i);
            }
            Decision::Record | Decision::Restore if !stage.has_parts() => {
                self.reuse_outputs(i, evaluation, started, observer)?;
            }
            _ if stage.has_parts() => self.start_parts(i, &stage, evaluation, started, observer)?,
            _ => {
                observer.stage(&name, &format!("running ({})", evaluation.reasons.join("; ")));
                self.prepare_outputs(&stage)?;
                self.state[i] = State::Running;
                self.running.insert(i, (evaluation, started));
                self.queue.push(Task { stage: i, part: None });
            }
        }
        Ok(())
    }

    /// Finishes a stage whose outputs an earlier run made: restores them from the run cache
    /// (or finds them already in place) and records the run.
    fn reuse_outputs(
        &mut self,
        i: usize,
        evaluation: Evaluation,
        started: Instant,
        observer: &dyn Observer,
    ) -> Result<()> {
        let name = self.name(i);
        let outs = evaluation.outs.clone().unwrap_or_default();
        if evaluation.decision == Decision::Restore {
            let tracked: Vec<Tracked> = outs
                .iter()
                .map(|(path, c)| Tracked { rel: rel_bytes(path), pointer: c.to_pointer() })
                .collect();
            self.project.repo.restore_outputs(tracked, &NoReporter)?;
            observer.stage(&name, "restored from the run cache");
        } else {
            observer.stage(&name, "recorded (outputs already match an earlier run)");
        }
        self.ignore_cached_outs(i)?;
        self.record(i, &evaluation, outs);
        self.state[i] = State::Done;
        let action =
            if evaluation.decision == Decision::Restore { Action::Restored } else { Action::Recorded };
        self.report(i, action, evaluation.reasons, Some(started), None);
        self.release(i);
        Ok(())
    }

    /// Starts a stage with datums or partitions: restores the parts the run cache has and
    /// queues the rest, one task each.
    fn start_parts(
        &mut self,
        i: usize,
        stage: &Stage,
        evaluation: Evaluation,
        started: Instant,
        observer: &dyn Observer,
    ) -> Result<()> {
        let name = self.name(i);
        let plan = evaluation.parts.clone().unwrap_or_default();
        let out = stage.outs[0].path.clone();
        let out_abs = self.project.repo.prepare_write(out.as_bytes())?;
        self.project.repo.confinement().create_dir_all(&out_abs)?;
        let mut done = plan.locked.clone();
        // Inputs or partitions that are gone take their outputs with them.
        for (key, part) in &plan.removed {
            self.remove_part_files(&out, &part.outs)?;
            done.remove(key);
        }
        let mut progress = PartProgress {
            outstanding: 0,
            done,
            counts: PartCounts {
                fresh: plan.fresh as u64,
                removed: plan.removed.len() as u64,
                missing: plan.missing as u64,
                ..Default::default()
            },
            failed: false,
            evaluation,
        };
        let mut to_run = Vec::new();
        for part in plan.todo {
            match &part.cached {
                Some(content) => {
                    let previous = progress.done.get(&part.key).map(|l| l.outs.clone());
                    let locked = self.merge_part(i, &part, Some(content.clone()), previous)?;
                    progress.done.insert(part.key.clone(), locked);
                    progress.counts.restored += 1;
                }
                None => to_run.push(part),
            }
        }
        progress.outstanding = to_run.len();
        let noun = if stage.datums.is_some() { "datums" } else { "partitions" };
        let counts = progress.counts;
        observer.stage(
            &name,
            &format!(
                "{noun}: {} to run, {} restored from the run cache, {} up to date, {} removed{}",
                to_run.len(),
                counts.restored,
                counts.fresh,
                counts.removed,
                if counts.missing > 0 {
                    format!(", {} never materialized", counts.missing)
                } else {
                    String::new()
                }
            ),
        );
        self.state[i] = State::Running;
        self.reports.insert(
            i,
            StageReport {
                stage: name.clone(),
                action: Action::Ran,
                reasons: Vec::new(),
                seconds: 0.0,
                error: None,
                parts: Some(counts),
                cpu_ms: None,
                max_rss_kb: None,
            },
        );
        let empty = to_run.is_empty();
        for part in to_run {
            self.queue.push(Task { stage: i, part: Some(part) });
        }
        self.part_stages.insert(i, (progress, started));
        if empty {
            self.complete_parts_stage(i, observer)?;
        }
        Ok(())
    }

    /// Deletes outputs (except `persist` ones) before the command runs, so nothing stale is
    /// mistaken for its output, and creates their parent directories.
    fn prepare_outputs(&self, stage: &Stage) -> Result<()> {
        for out in &stage.outs {
            // Checks that no symbolic link on the way leads out of the repository (the output
            // itself may be a link: it is removed, never followed), and creates its parents.
            let path = self.project.repo.prepare_write(out.path.as_bytes())?;
            if !out.persist {
                let removed = match std::fs::symlink_metadata(&path) {
                    Ok(m) if m.is_dir() => std::fs::remove_dir_all(&path),
                    Ok(_) => std::fs::remove_file(&path),
                    Err(_) => Ok(()),
                };
                removed.map_err(|e| PipelineError::io("remove the old output", &path, e))?;
            }
        }
        Ok(())
    }

    fn ignore_cached_outs(&self, i: usize) -> Result<()> {
        for out in &self.project.pipeline.stages[i].outs {
            if out.cache {
                self.project.repo.ignore_in_git(out.path.as_bytes())?;
            }
        }
        Ok(())
    }

    /// Records a finished stage in the lock and the records.
    fn record(&mut self, i: usize, evaluation: &Evaluation, outs: BTreeMap<String, Content>) {
        let stage = &self.project.pipeline.stages[i];
        let locked = LockedStage {
            fingerprint: evaluation.fingerprint,
            cmd: stage.cmd.clone(),
            wdir: stage.wdir.clone(),
            deps: evaluation.deps.clone(),
            params: evaluation.params.clone(),
            env: stage.env.clone(),
            outs: outs.clone(),
            parts: None,
        };
        let name = stage.name.clone();
        self.project.invalidate_inside(i, &mut self.records, false);
        for (path, content) in &outs {
            self.records.insert(path.clone(), Some(content.to_pointer()));
        }
        self.project.lock.stages.insert(name, locked);
    }

    /// Lets downstream stages become ready.
    fn release(&mut self, i: usize) {
        for d in self.project.graph.downstream[i].clone() {
            self.remaining[d] = self.remaining[d].saturating_sub(1);
        }
    }

    fn after_failure(&mut self, i: usize) {
        if !self.options.keep_going {
            self.stop = true;
        }
        self.release(i);
    }

    fn finish_task(&mut self, task: Task, outcome: Outcome, observer: &dyn Observer) -> Result<()> {
        let i = task.stage;
        let name = self.name(i);
        if let Some(part) = task.part {
            let label = format!("{name}[{}]", part.key);
            let merged = match outcome {
                Outcome::Success => {
                    let previous = self.part_stages[&i].0.done.get(&part.key).map(|l| l.outs.clone());
                    self.merge_part(i, &part, None, previous).map_err(|e| e.to_string())
                }
                other => Err(exec::describe(&other)),
            };
            let keep_going = self.options.keep_going;
            let (progress, _) = self.part_stages.get_mut(&i).expect("a running part stage");
            progress.outstanding -= 1;
            match merged {
                Ok(locked) => {
                    progress.done.insert(part.key.clone(), locked);
                    progress.counts.ran += 1;
                }
                Err(message) => {
                    observer.stage(&label, &format!("failed: {message}"));
                    progress.failed = true;
                    if !keep_going {
                        // Parts not started yet stay undone.
                        let before = self.queue.len();
                        self.queue.retain(|t| t.stage != i);
                        progress.outstanding -= before - self.queue.len();
                    }
                }
            }
            if progress.outstanding == 0 {
                self.complete_parts_stage(i, observer)?;
            }
            return Ok(());
        }

        let (evaluation, started) = self.running.remove(&i).expect("a running stage");
        let result = match outcome {
            Outcome::Success => self.collect_outputs(i),
            other => Err(exec::describe(&other)),
        };
        match result {
            Ok(outs) => {
                let entry = Entry {
                    schema: 1,
                    fingerprint: evaluation.fingerprint,
                    stage: name.clone(),
                    outs: outs.clone(),
                    created: now_secs(),
                    commit: self.commit.clone(),
                };
                self.project.runs.put(&entry)?;
                self.record(i, &evaluation, outs);
                self.state[i] = State::Done;
                observer.stage(&name, &format!("done in {}", seconds(started.elapsed())));
                self.report(i, Action::Ran, evaluation.reasons, Some(started), None);
                self.release(i);
            }
            Err(message) => {
                let interrupted = self.options.cancel.load(Ordering::Relaxed);
                self.state[i] = if interrupted { State::NotRun } else { State::Failed };
                let log = self.project.repo.root().join(".cairn/state/logs").join(format!("{name}.log"));
                let message = format!("{message} (full log: {})", log.display());
                if interrupted {
                    observer.stage(&name, "stopped: interrupted; nothing it wrote was cached");
                } else {
                    observer.stage(&name, &format!("failed: {message}"));
                }
                let action = if interrupted { Action::NotRun } else { Action::Failed };
                self.report(i, action, evaluation.reasons, Some(started), Some(message));
                self.after_failure(i);
            }
        }
        Ok(())
    }

    /// After a successful command: every declared output must exist; checks must pass;
    /// then the outputs are stored. Nothing is cached if any of that fails.
    fn collect_outputs(&mut self, i: usize) -> std::result::Result<BTreeMap<String, Content>, String> {
        let stage = self.project.pipeline.stages[i].clone();
        let root = self.project.repo.root();
        let missing: Vec<&str> = stage
            .outs
            .iter()
            .filter(|o| std::fs::symlink_metadata(root.join(&o.path)).is_err())
            .map(|o| o.path.as_str())
            .collect();
        if !missing.is_empty() {
            return Err(format!(
                "the command succeeded but did not write the declared output{} {}; nothing was cached",
                if missing.len() == 1 { "" } else { "s" },
                missing.iter().map(|m| format!("`{m}`")).collect::<Vec<_>>().join(", ")
            ));
        }
        for check in &stage.checks {
            checks::run(check, root)?;
        }
        let rels: Vec<Vec<u8>> = stage.outs.iter().map(|o| rel_bytes(&o.path)).collect();
        let stored = self.project.repo.store_outputs(&rels, &NoReporter).map_err(|e| e.to_string())?;
        self.ignore_cached_outs(i).map_err(|e| e.to_string())?;
        Ok(stage.outs.iter().zip(stored).map(|(o, p)| (o.path.clone(), Content::from_pointer(&p))).collect())
    }

    fn remove_part_files(&self, out: &str, content: &Content) -> Result<()> {
        let pointer = content.to_pointer();
        let Ok(files) = self.project.repo.content_files(&pointer) else { return Ok(()) };
        let base = self.project.repo.root().join(out);
        let confine = self.project.repo.confinement();
        for file in files {
            let path = base.join(String::from_utf8_lossy(&file.path).as_ref());
            confine.check_leading(&path, Access::Write)?;
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(PipelineError::io("remove", &path, e)),
            }
            let mut dir = path.parent();
            while let Some(d) = dir {
                if d == base || std::fs::remove_dir(d).is_err() {
                    break;
                }
                dir = d.parent();
            }
        }
        Ok(())
    }

    /// Puts one part's outputs into the stage's output directory: from the run cache
    /// (`cached`) or from the staging directory it just ran in (stored and entered into the
    /// run cache first), after removing the files it wrote last time (`previous`). Returns
    /// its lock entry.
    fn merge_part(
        &mut self,
        i: usize,
        part: &Part,
        cached: Option<Content>,
        previous: Option<Content>,
    ) -> Result<LockedDatum> {
        let stage = self.project.pipeline.stages[i].clone();
        let out = stage.outs[0].path.clone();
        let repo = self.project.repo;
        let staging = staging_rel(&stage.name, &part.key);
        let content = match cached {
            Some(content) => {
                let pointer = content.to_pointer();
                repo.restore_outputs(vec![Tracked { rel: rel_bytes(&staging), pointer }], &NoReporter)?;
                content
            }
            None => {
                let stored = repo.store_outputs(&[rel_bytes(&staging)], &NoReporter)?;
                let content = Content::from_pointer(&stored[0]);
                let mut outs = BTreeMap::new();
                outs.insert(out.clone(), content.clone());
                self.project.runs.put(&Entry {
                    schema: 1,
                    fingerprint: part.fingerprint,
                    stage: stage.name.clone(),
                    outs,
                    created: now_secs(),
                    commit: self.commit.clone(),
                })?;
                content
            }
        };
        if let Some(previous) = previous {
            self.remove_part_files(&out, &previous)?;
        }
        let root = repo.root();
        let from = root.join(&staging);
        let to = root.join(&out);
        // Every destination is reached through real directories or links that stay inside
        // the repository: a link in the output directory cannot carry a part's files out.
        let confine = repo.confinement();
        for entry in walkdir::WalkDir::new(&from).min_depth(1) {
            let entry =
                entry.map_err(|e| PipelineError::Internal(format!("listing `{}`: {e}", from.display())))?;
            let rel = entry.path().strip_prefix(&from).expect("under the staging directory");
            let dest = to.join(rel);
            if entry.file_type().is_dir() {
                confine.create_dir_all(&dest)?;
                continue;
            }
            confine.check_leading(&dest, Access::Write)?;
            if std::fs::symlink_metadata(&dest).is_ok() {
                return Err(PipelineError::Stage {
                    stage: stage.name.clone(),
                    message: format!(
                        "`{}` wrote `{}`, which another part already wrote; parts must write distinct files (name them after ${{item.stem}} or ${{partition}})",
                        part.key,
                        Path::new(&out).join(rel).display()
                    ),
                });
            }
            std::fs::rename(entry.path(), &dest)
                .map_err(|e| PipelineError::io("move a part's output to", &dest, e))?;
        }
        let _ = std::fs::remove_dir_all(&from);
        Ok(LockedDatum { fingerprint: part.fingerprint, input: part.input, outs: content })
    }

    fn complete_parts_stage(&mut self, i: usize, observer: &dyn Observer) -> Result<()> {
        let (progress, started) = self.part_stages.remove(&i).expect("a part stage");
        let name = self.name(i);
        let stage = self.project.pipeline.stages[i].clone();
        let out = stage.outs[0].path.clone();
        let counts = progress.counts;
        let reasons = progress.evaluation.reasons.clone();
        let failure = if progress.failed {
            Some(format!(
                "some parts failed (logs: .cairn/state/logs/{name}/); the {} that succeeded are cached",
                counts.ran
            ))
        } else {
            stage.checks.iter().find_map(|check| checks::run(check, self.project.repo.root()).err())
        };
        if let Some(message) = failure {
            // Parts that succeeded are in the run cache; the lock keeps its old state.
            let interrupted = self.options.cancel.load(Ordering::Relaxed);
            self.state[i] = if interrupted { State::NotRun } else { State::Failed };
            let action = if interrupted { Action::NotRun } else { Action::Failed };
            observer.stage(&name, &format!("failed: {message}"));
            self.report(i, action, reasons, Some(started), Some(message));
            if let Some(r) = self.reports.get_mut(&i) {
                r.parts = Some(counts);
            }
            self.after_failure(i);
            return Ok(());
        }
        let stored = self.project.repo.store_outputs(&[rel_bytes(&out)], &NoReporter)?;
        self.project.repo.ignore_in_git(out.as_bytes())?;
        let outs: BTreeMap<String, Content> =
            [(out.clone(), Content::from_pointer(&stored[0]))].into_iter().collect();
        // The parts list goes into the cache; the lock names it by digest.
        let file = PartsFile { schema: 1, parts: progress.done };
        let bytes = serde_json::to_vec(&file).expect("a parts file serializes");
        let digest = self.project.repo.store().put_bytes(&bytes).map_err(cairn_repo::RepoError::from)?;
        self.project.repo.store().sync().map_err(cairn_repo::RepoError::from)?;
        let mut evaluation = progress.evaluation;
        // The stage's fingerprint covers every part's.
        let mut combined = Vec::new();
        for (key, part) in &file.parts {
            combined.extend_from_slice(key.as_bytes());
            combined.push(0);
            // The fingerprint's text (`blake3:…`), as this encoding has always hashed it.
            combined.extend_from_slice(part.fingerprint.to_string().as_bytes());
            combined.push(0);
        }
        evaluation.fingerprint = hash_bytes(&combined);
        self.record(i, &evaluation, outs);
        if let Some(locked) = self.project.lock.stages.get_mut(&name) {
            locked.parts = Some(digest);
        }
        self.project.parts.insert(name.clone(), file.parts);
        self.state[i] = State::Done;
        let action = if counts.ran > 0 {
            Action::Ran
        } else if counts.restored > 0 {
            Action::Restored
        } else {
            Action::Fresh
        };
        observer.stage(&name, &format!("done in {}", seconds(started.elapsed())));
        self.report(i, action, reasons, Some(started), None);
        if let Some(r) = self.reports.get_mut(&i) {
            r.parts = Some(counts);
        }
        self.release(i);
        Ok(())
    }

    /// Reports in run order, with stages never reached marked as not run.
    pub(crate) fn finish(&mut self) -> Vec<StageReport> {
        let selected = self.selected.clone();
        for i in selected.iter().copied() {
            if !self.reports.contains_key(&i) || self.state[i] == State::Waiting {
                let reason = if self.options.cancel.load(Ordering::Relaxed) {
                    "interrupted"
                } else {
                    "the run stopped"
                };
                self.state[i] = State::NotRun;
                self.report(i, Action::NotRun, vec![reason.into()], None, None);
            }
        }
        selected.iter().filter_map(|i| self.reports.get(i).cloned()).collect()
    }
}

/// Where a part runs: `.cairn/state/parts/<stage>/<hash of its key>`.
fn staging_rel(stage: &str, key: &str) -> String {
    format!(".cairn/state/parts/{stage}/{}", part_key(key))
}

fn part_key(key: &str) -> String {
    hash_bytes(key.as_bytes()).hex()[..16].to_owned()
}

/// Fills in a part's placeholders: `${item...}` for a datum, `${partition...}` for a
/// partition, and `${out}`.
pub(crate) fn render_part(stage: &Stage, text: &str, key: &str, out: &str) -> String {
    match &stage.partitions {
        Some(dims) => crate::partitions::render(text, dims, key).replace("${out}", out),
        None => render_datum(text, key, out),
    }
}
