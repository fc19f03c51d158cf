//! `checkout`: making the work tree match the pointers.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::{self};
use std::path::{Path, PathBuf};

use cairn_hash::{Digest, ManifestEntry};
use rayon::prelude::*;

use super::*;
use crate::confine::{Access, Confinement};
use crate::{
    Repo, RepoError, Reporter, Result, Tracked, bytes_to_path, gitignore, is_under, join_rel, now_ns,
};

impl Repo {
    /// Makes the work tree match the pointers (all of them, or at or below `scope`).
    /// Refuses, before changing anything, to overwrite or delete a file whose content is not
    /// in the cache, unless `force`.
    pub fn checkout(
        &self,
        scope: Option<&[u8]>,
        force: bool,
        reporter: &dyn Reporter,
    ) -> Result<Vec<CheckoutOutcome>> {
        let tracked = self.tracked(scope)?;
        if tracked.is_empty()
            && let Some(scope) = scope
        {
            return Err(RepoError::NotTracked { path: self.abs(scope) });
        }
        self.checkout_tracked(tracked, scope, force, true, reporter)
    }

    /// Restores pipeline outputs from the cache: each path is made to hold exactly the
    /// recorded content, replacing whatever is there (the pipeline decided to replace it).
    pub fn restore_outputs(&self, outputs: Vec<Tracked>, reporter: &dyn Reporter) -> Result<()> {
        // Outputs' `.gitignore` entries are the pipeline's business (a metrics file is
        // committed), so restoring one leaves `.gitignore` alone.
        self.checkout_tracked(outputs, None, true, false, reporter).map(drop)
    }

    fn checkout_tracked(
        &self,
        tracked: Vec<Tracked>,
        scope: Option<&[u8]>,
        force: bool,
        ignore_in_git: bool,
        reporter: &dyn Reporter,
    ) -> Result<Vec<CheckoutOutcome>> {
        let mut cache = self.stat_cache();
        let plans = self.plan_checkout(tracked, scope, force, &mut cache, reporter)?;
        // Nothing is written or deleted through a symbolic link that leads out of the
        // repository (or into `.git` or `.cairn`); checked before the first change.
        let confine = self.confinement();
        for plan in &plans {
            confine.check_leading(&self.abs(&plan.tracked.rel), Access::Write)?;
            for path in &plan.deletes {
                confine.check_leading(path, Access::Write)?;
            }
        }
        let mut outcomes = Vec::new();
        for plan in plans {
            outcomes.push(self.apply_checkout(plan, &confine, &mut cache, ignore_in_git, reporter)?);
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(outcomes)
    }

    /// Decides, for every tracked path, what to write and what to delete, without changing
    /// anything. Fails if a change would lose content that is not in the cache (unless
    /// `force`) or if content to write is not in the cache.
    fn plan_checkout(
        &self,
        tracked: Vec<Tracked>,
        scope: Option<&[u8]>,
        force: bool,
        cache: &mut StatCache,
        reporter: &dyn Reporter,
    ) -> Result<Vec<CheckoutPlan>> {
        let hashed_at = now_ns();
        let mut plans = Vec::new();
        let mut conflicts = Vec::new();
        let mut missing: Option<(PathBuf, Digest, usize)> = None;
        for tracked in tracked {
            let pointer_path = self.pointer_path(&tracked.rel);
            let (mut expected, Current { files: current, is_dir, recorded, leftovers }) =
                self.expected_and_current(&tracked, cache, reporter)?;
            Self::record_all(cache, recorded, hashed_at);
            let exists = current.is_some();
            let mut current = current.unwrap_or_default();
            if let Some(scope) = scope {
                expected.retain(|e| is_under(&join_rel(&tracked.rel, &e.path), scope));
                current.retain(|c| is_under(&join_rel(&tracked.rel, &c.rel), scope));
            }
            // The path exists as the wrong kind of entry (a file where a directory belongs).
            let replace_root = exists && (is_dir != tracked.pointer.is_directory());
            let mut plan =
                CheckoutPlan { tracked, writes: Vec::new(), deletes: leftovers, unchanged: 0, replace_root };
            let current_by_rel: BTreeMap<&[u8], &WorkFile> =
                current.iter().map(|c| (c.rel.as_slice(), c)).collect();
            let mut would_lose = |c: &WorkFile| -> Result<()> {
                if !force && !self.store.contains(&c.digest)? {
                    conflicts.push(c.abs.clone());
                }
                Ok(())
            };
            for e in &expected {
                match current_by_rel.get(e.path.as_slice()) {
                    Some(c) if c.digest == e.digest && c.stat.executable() == e.executable => {
                        plan.unchanged += 1;
                        continue;
                    }
                    Some(c) => would_lose(c)?,
                    None => {}
                }
                plan.writes.push(e.clone());
            }
            let expected_rels: HashSet<&[u8]> = expected.iter().map(|e| e.path.as_slice()).collect();
            for c in &current {
                if !expected_rels.contains(c.rel.as_slice()) {
                    would_lose(c)?;
                    plan.deletes.push(c.abs.clone());
                }
            }
            let absent: Vec<&ManifestEntry> =
                plan.writes.iter().filter(|e| !self.store.contains(&e.digest).unwrap_or(false)).collect();
            if let Some(first) = absent.first()
                && missing.is_none()
            {
                missing = Some((pointer_path, first.digest, absent.len()));
            }
            plans.push(plan);
        }
        if !conflicts.is_empty() {
            return Err(RepoError::WouldOverwrite { paths: conflicts });
        }
        if let Some((pointer, first, count)) = missing {
            return Err(RepoError::MissingObjects { pointer, first, count });
        }
        Ok(plans)
    }

    /// Carries out one path's plan: deletions first, then the writes, in parallel.
    fn apply_checkout(
        &self,
        plan: CheckoutPlan,
        confine: &Confinement,
        cache: &mut StatCache,
        ignore_in_git: bool,
        reporter: &dyn Reporter,
    ) -> Result<CheckoutOutcome> {
        let rel = &plan.tracked.rel;
        let root_abs = self.abs(rel);
        for path in &plan.deletes {
            fs::remove_file(path).map_err(|e| RepoError::io("delete", path, e))?;
        }
        if plan.replace_root {
            // What is left of the wrong kind of entry (its files were deleted above).
            let removed = match fs::symlink_metadata(&root_abs) {
                Ok(meta) if meta.is_dir() => fs::remove_dir_all(&root_abs),
                Ok(_) => fs::remove_file(&root_abs),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(e),
            };
            removed.map_err(|e| RepoError::io("replace", &root_abs, e))?;
        }
        prune_empty_parents(&plan.deletes, &root_abs);
        let mut dirs: Vec<PathBuf> = plan
            .writes
            .iter()
            .filter_map(|e| root_abs.join(bytes_to_path(&e.path)).parent().map(Path::to_path_buf))
            .collect();
        if plan.tracked.pointer.is_directory() {
            dirs.push(root_abs.clone());
        }
        dirs.sort();
        dirs.dedup();
        for dir in &dirs {
            confine.create_dir_all(dir)?;
        }
        let bytes: u64 = plan.writes.iter().map(|e| e.size).sum();
        reporter.start(
            &format!("checking out {}", crate::display_bytes(rel)),
            plan.writes.len() as u64,
            bytes,
        );
        let (store, strategy) = (&self.store, &self.settings.link);
        let written: Vec<Recorded> = self.install(|| {
            plan.writes
                .par_iter()
                .map(|e| -> Result<Recorded> {
                    let dest = if e.path.is_empty() {
                        root_abs.clone()
                    } else {
                        root_abs.join(bytes_to_path(&e.path))
                    };
                    let (_, stat) = store.materialize(&e.digest, &dest, e.executable, strategy)?;
                    reporter.advance(1, e.size);
                    Ok((join_rel(rel, &e.path), stat, e.digest))
                })
                .collect::<Result<_>>()
        })?;
        reporter.finish();
        for (key, stat, digest) in written {
            cache.record(key, stat, digest);
        }
        if ignore_in_git {
            gitignore::ensure_ignored(&self.root, rel)?;
        }
        Ok(CheckoutOutcome {
            rel: rel.clone(),
            written: plan.writes.len() as u64,
            written_bytes: bytes,
            removed: plan.deletes.len() as u64,
            unchanged: plan.unchanged,
        })
    }
}

/// What checkout will do to one tracked path.
struct CheckoutPlan {
    tracked: Tracked,
    writes: Vec<ManifestEntry>,
    deletes: Vec<PathBuf>,
    unchanged: u64,
    /// The data path exists with the wrong type (file vs. directory).
    replace_root: bool,
}

/// Removes directories left empty by deletions, up to (not including) `stop`.
fn prune_empty_parents(deleted: &[PathBuf], stop: &Path) {
    let mut dirs: Vec<&Path> = deleted.iter().filter_map(|p| p.parent()).collect();
    dirs.sort_by_key(|d| std::cmp::Reverse(d.components().count()));
    dirs.dedup();
    for dir in dirs {
        let mut cursor = Some(dir);
        while let Some(d) = cursor {
            if d == stop || !d.starts_with(stop) || fs::remove_dir(d).is_err() {
                break;
            }
            cursor = d.parent();
        }
    }
}
