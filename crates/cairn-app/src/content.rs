//! What pipelines, runs and the registry keep alive: the roots garbage collection (local and
//! on a remote) must never delete, and the outputs `checkout` and `pull` restore.
//!
//! Every root is labelled for the user (`model.onnx (stage train)`, `churn@3`), so a report
//! can say why an object is kept.

use cairn_hash::Digest;
use cairn_meta::registry::VersionKind;
use cairn_pipeline::lock::{LOCK_FILE, LockFile, PartsFile};
use cairn_pipeline::runcache::RunCache;
use cairn_repo::pointer::{Pointer, PointerKind};
use cairn_repo::{GcReport, GcScope, Repo, Reporter, Tracked};
use serde::Serialize;

use crate::{Error, Result, Workspace};

/// A labelled piece of content: what it is for the user, and where it is tracked.
pub type Labelled = (String, Tracked);

fn file(digest: Digest, size: u64) -> Pointer {
    Pointer { kind: PointerKind::File { executable: false }, digest, size }
}

/// The pipeline outputs recorded in `cairn.lock` (outputs, parts lists and parts' outputs).
pub fn lock_content(repo: &Repo) -> Result<Vec<Labelled>> {
    let lock = LockFile::load(&repo.root().join(LOCK_FILE))?;
    let mut out = Vec::new();
    for (name, stage) in &lock.stages {
        for (path, content) in &stage.outs {
            let pointer = content.to_pointer();
            out.push((format!("{path} (stage {name})"), Tracked { rel: path.as_bytes().to_vec(), pointer }));
        }
        // Datum and partitioned stages: the parts list (a cache object) and each part's files.
        let base = stage.outs.keys().next().cloned().unwrap_or_default();
        let Some(digest) = stage.parts else { continue };
        let label = format!("{base} (parts of stage {name})");
        let Ok(bytes) = repo.store().read_verified(&digest) else {
            // Not here yet (a clone that has not pulled): the list itself is still wanted.
            out.push((label, Tracked { rel: base.as_bytes().to_vec(), pointer: file(digest, 0) }));
            continue;
        };
        out.push((
            label,
            Tracked { rel: base.as_bytes().to_vec(), pointer: file(digest, bytes.len() as u64) },
        ));
        let parts: PartsFile = serde_json::from_slice(&bytes).map_err(|e| {
            Error::refused(format!("the parts list {digest} of stage `{name}` is damaged: {e}"), None)
        })?;
        for (key, part) in &parts.parts {
            let pointer = part.outs.to_pointer();
            out.push((
                format!("{base} (stage {name}, part {key})"),
                Tracked { rel: base.as_bytes().to_vec(), pointer },
            ));
        }
    }
    Ok(out)
}

/// Run-cache entries whose outputs are all in the local cache: (fingerprint, their outputs).
pub fn local_runs(repo: &Repo) -> Vec<(Digest, Vec<Labelled>)> {
    let runs = RunCache::new(repo.store().root());
    let mut out = Vec::new();
    for fingerprint in runs.list() {
        let Some(entry) = runs.get(&fingerprint) else { continue };
        let mut records = Vec::new();
        let mut complete = true;
        for (path, content) in &entry.outs {
            let pointer = content.to_pointer();
            if repo.has_content(&pointer).unwrap_or(false) {
                let label = format!("{path} (run cache of `{}`)", entry.stage);
                records.push((label, Tracked { rel: path.as_bytes().to_vec(), pointer }));
            } else {
                complete = false;
            }
        }
        if complete {
            out.push((fingerprint, records));
        }
    }
    out
}

/// Makes pipeline outputs match `cairn.lock` (after `git checkout` or `pull`). An output
/// whose current content is not in the cache is left alone unless `force`. Returns what was
/// restored, each as `PATH (stage NAME)`.
pub fn checkout_outputs(repo: &Repo, force: bool, reporter: &dyn Reporter) -> Result<Vec<String>> {
    let outs: Vec<Labelled> = lock_content(repo)?
        .into_iter()
        .filter(|(label, _)| !label.contains(", part ") && !label.contains("(parts of stage "))
        .collect();
    if outs.is_empty() {
        return Ok(Vec::new());
    }
    let rels: Vec<Vec<u8>> = outs.iter().map(|(_, t)| t.rel.clone()).collect();
    let current = repo.digest_paths(&rels, reporter)?;
    let mut restore = Vec::new();
    let mut restored = Vec::new();
    for ((label, tracked), now) in outs.into_iter().zip(current) {
        if now.as_ref().is_some_and(|n| n.digest == tracked.pointer.digest) {
            continue;
        }
        if let Some(now) = &now
            && !force
            && !repo.has_content(now)?
        {
            reporter.warn(&format!(
                "left `{}` as it is: it differs from cairn.lock and its content is not in the cache (use --force to replace it)",
                String::from_utf8_lossy(&tracked.rel)
            ));
            continue;
        }
        if !repo.has_content(&tracked.pointer)? {
            reporter
                .warn(&format!("cannot restore {label}: its data is not in the cache (run `cairn pull`)"));
            continue;
        }
        restore.push(tracked);
        restored.push(label);
    }
    if !restore.is_empty() {
        repo.restore_outputs(restore, reporter)?;
    }
    Ok(restored)
}

/// Everything Cairn keeps alive beyond the pointers in Git: the lock's outputs, the run
/// cache's, run artifacts (stage logs, `mlflow.log_artifact`), experiments' kept files,
/// logged models and registered model versions.
pub fn kept_content(ws: &Workspace) -> Result<Vec<(String, Pointer)>> {
    let repo = ws.repo();
    let mut out: Vec<(String, Pointer)> =
        lock_content(repo)?.into_iter().map(|(l, t)| (l, t.pointer)).collect();
    let runs = RunCache::new(repo.store().root());
    for fingerprint in runs.list() {
        if let Some(entry) = runs.get(&fingerprint) {
            for (path, content) in entry.outs {
                out.push((format!("{path} (run cache of `{}`)", entry.stage), content.to_pointer()));
            }
        }
    }
    let store = ws.meta()?;
    for (label, digest, size) in store.referenced_objects()? {
        out.push((label, file(digest, size as u64)));
    }
    // Registered model versions (a directory's manifest keeps its files).
    for model in store.models()? {
        for v in store.model_versions(&model.name)? {
            let kind = match v.kind {
                VersionKind::File => PointerKind::File { executable: false },
                VersionKind::Directory => PointerKind::Directory { files: 0 },
                // An artifact tree's files are kept as run artifacts; an external location
                // has nothing here.
                VersionKind::Artifacts | VersionKind::External => continue,
            };
            out.push((
                format!("{}@{}", v.name, v.version),
                Pointer { kind, digest: v.digest, size: v.size as u64 },
            ));
        }
    }
    Ok(out)
}

/// What `cairn gc` did or would do (`--json`).
#[derive(Debug, Serialize)]
pub struct GcSummary {
    pub kept_objects: u64,
    pub kept_for: Vec<KeptFor>,
    pub unreferenced_objects: usize,
    pub unreferenced_bytes: u64,
    pub deleted: bool,
    pub tmp_bytes_freed: u64,
    #[serde(skip)]
    pub scope: GcScope,
}

#[derive(Debug, Serialize)]
pub struct KeptFor {
    pub scope: String,
    pub pointers: u64,
}

impl GcSummary {
    fn new(report: GcReport, scope: GcScope) -> Self {
        GcSummary {
            kept_objects: report.kept,
            kept_for: report
                .kept_for
                .iter()
                .map(|(what, pointers)| KeptFor { scope: what.clone(), pointers: *pointers })
                .collect(),
            unreferenced_objects: report.unreferenced.len(),
            unreferenced_bytes: report.unreferenced_bytes(),
            deleted: report.deleted,
            tmp_bytes_freed: report.tmp_bytes_freed,
            scope,
        }
    }
}

/// `cairn gc`: removes (with `force`) or counts the cache objects nothing in `scope`, no
/// pipeline, run or registered model references. The caller holds the repository lock.
pub fn gc(ws: &Workspace, scope: GcScope, force: bool, reporter: &dyn Reporter) -> Result<GcSummary> {
    let kept = kept_content(ws)?;
    let report = ws.repo().gc(scope, force, &kept, reporter)?;
    Ok(GcSummary::new(report, scope))
}
