//! `rm`, `unprotect`, `gc` and `fsck`.

use std::collections::HashSet;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use cairn_hash::Digest;
use rayon::prelude::*;

use super::*;
use crate::pointer::{POINTER_SUFFIX, Pointer};
use crate::walk::ScannedFile;
use crate::{Repo, RepoError, Reporter, Result, Tracked, gitignore, is_under, join_rel};

impl Repo {
    /// Stops tracking `rel`: removes its pointer and `.gitignore` line and leaves the data in
    /// place as ordinary, writable files.
    pub fn rm(&self, rel: &[u8], reporter: &dyn Reporter) -> Result<()> {
        if self.read_pointer(rel)?.is_none() {
            return Err(RepoError::NotTracked { path: self.abs(rel) });
        }
        let mut cache = self.stat_cache();
        self.unprotect_files(rel, &mut cache)?;
        let pointer = self.pointer_path(rel);
        fs::remove_file(&pointer).map_err(|e| RepoError::io("delete", &pointer, e))?;
        gitignore::remove_ignored(&self.root, rel)?;
        cache.forget_under(rel);
        self.save_stat_cache(&mut cache, reporter);
        Ok(())
    }

    /// Replaces hard- or symbolic links to the cache at or below `rel` with writable copies.
    /// Returns how many files were unprotected.
    pub fn unprotect(&self, rel: &[u8], reporter: &dyn Reporter) -> Result<u64> {
        let mut cache = self.stat_cache();
        let count = self.unprotect_files(rel, &mut cache)?;
        self.save_stat_cache(&mut cache, reporter);
        Ok(count)
    }

    fn unprotect_files(&self, rel: &[u8], cache: &mut StatCache) -> Result<u64> {
        let owners: Vec<Tracked> = match self.tracked_containing(rel)? {
            Some(owner) => vec![owner],
            None => self.tracked(Some(rel))?,
        };
        if owners.is_empty() {
            return Err(RepoError::NotTracked { path: self.abs(rel) });
        }
        let mut count = 0;
        for owner in owners {
            let confine = self.confinement();
            let Some(scan) = scan_data(&self.abs(&owner.rel), &confine)? else { continue };
            let targets: Vec<ScannedFile> =
                scan.files.into_iter().filter(|f| is_under(&join_rel(&owner.rel, &f.rel), rel)).collect();
            let done: Vec<Option<Vec<u8>>> = self.install(|| {
                targets
                    .par_iter()
                    .map(|f| -> Result<Option<Vec<u8>>> {
                        confine.check_leading(&f.abs, crate::confine::Access::Write)?;
                        let link =
                            fs::symlink_metadata(&f.abs).map_err(|e| RepoError::io("stat", &f.abs, e))?;
                        let shared = link.file_type().is_symlink()
                            || link.nlink() > 1
                            || link.permissions().readonly();
                        if !shared {
                            return Ok(None);
                        }
                        let mode = if f.stat.executable() { 0o755 } else { 0o644 };
                        // A private copy replaces the link (`io::copy` between files uses
                        // `copy_file_range`, a reflink where the file system can).
                        let options = cairn_fs::Options { mode: Some(mode), ..Default::default() };
                        cairn_fs::write_with(&f.abs, options, |copy| {
                            std::io::copy(&mut fs::File::open(&f.abs)?, copy).map(drop)
                        })
                        .map_err(|e| RepoError::io("unprotect", &f.abs, e))?;
                        Ok(Some(join_rel(&owner.rel, &f.rel)))
                    })
                    .collect::<Result<_>>()
            })?;
            for key in done.into_iter().flatten() {
                // The copy has a new inode; forget the old entry so the next status rehashes it.
                cache.forget_under(&key);
                count += 1;
            }
        }
        Ok(count)
    }

    // ------------------------------------------------------------------------ gc and fsck

    fn referenced(
        &self,
        scope: GcScope,
        extra: &[(String, Pointer)],
        kept_for: &mut Vec<(String, u64)>,
        reporter: &dyn Reporter,
    ) -> Result<HashSet<Digest>> {
        let mut pointers: Vec<(PathBuf, Pointer)> =
            self.tracked(None)?.into_iter().map(|t| (self.pointer_path(&t.rel), t.pointer)).collect();
        kept_for.push(("the work tree".into(), pointers.len() as u64));
        pointers.extend(extra.iter().map(|(label, p)| (PathBuf::from(label), p.clone())));
        kept_for.push(("pipeline outputs, the run cache and experiments".into(), extra.len() as u64));
        match scope {
            GcScope::WorkTree => {}
            GcScope::Refs => {
                let git = self.git();
                let mut revs: Vec<String> = git.head()?.into_iter().collect();
                revs.extend(git.ref_tips(true, true)?);
                revs.sort();
                revs.dedup();
                let before = pointers.len();
                for rev in &revs {
                    for file in git.files_with_suffix(rev, POINTER_SUFFIX.as_bytes())? {
                        let label = PathBuf::from(format!(
                            "{}:{}",
                            &rev[..rev.len().min(8)],
                            crate::display_bytes(&file.path)
                        ));
                        pointers.push((label.clone(), crate::parse_pointer_bytes(&label, &file.content)?));
                    }
                }
                kept_for.push((
                    format!("HEAD and the tips of every branch and tag ({} commit(s))", revs.len()),
                    (pointers.len() - before) as u64,
                ));
            }
            GcScope::AllCommits => {
                let before = pointers.len();
                for file in self.git().files_with_suffix_all_commits(POINTER_SUFFIX.as_bytes())? {
                    let label = PathBuf::from(format!("(history):{}", crate::display_bytes(&file.path)));
                    pointers.push((label.clone(), crate::parse_pointer_bytes(&label, &file.content)?));
                }
                kept_for
                    .push(("every commit of every branch and tag".into(), (pointers.len() - before) as u64));
            }
        }
        let mut set = HashSet::new();
        for (path, pointer) in pointers {
            set.insert(pointer.digest);
            if pointer.is_directory() {
                match self.expected_files(&path, &pointer) {
                    Ok(entries) => set.extend(entries.into_iter().map(|e| e.digest)),
                    // A directory whose manifest this cache never had (say, a teammate's commit
                    // whose data was not fetched): its files cannot be named, and objects only
                    // it references are unreachable here until the manifest arrives anyway.
                    Err(RepoError::MissingObjects { .. }) => reporter.warn(&format!(
                        "the manifest of `{}` ({}) is not in the cache; objects only it references cannot be told apart",
                        path.display(),
                        pointer.digest
                    )),
                    Err(other) => return Err(other),
                }
            }
        }
        Ok(set)
    }

    /// Finds cache objects referenced by no pointer within `scope` (see [`GcScope`]); deletes
    /// them if `force`. Objects of `extra` (pipeline outputs, the run cache, experiments) are
    /// kept too. The report says what each part of the scope kept.
    pub fn gc(
        &self,
        scope: GcScope,
        force: bool,
        extra: &[(String, Pointer)],
        reporter: &dyn Reporter,
    ) -> Result<GcReport> {
        let mut report = GcReport::default();
        let referenced = self.referenced(scope, extra, &mut report.kept_for, reporter)?;
        for (digest, size) in self.store.list()? {
            if referenced.contains(&digest) {
                report.kept += 1;
            } else {
                report.unreferenced.push((digest, size));
            }
        }
        if force {
            reporter.start(
                "removing unreferenced objects",
                report.unreferenced.len() as u64,
                report.unreferenced_bytes(),
            );
            let doomed: Vec<Digest> = report.unreferenced.iter().map(|(digest, _)| *digest).collect();
            self.store.remove_many(&doomed)?;
            reporter.advance(doomed.len() as u64, report.unreferenced_bytes());
            reporter.finish();
            report.tmp_bytes_freed = self.store.clean_tmp(std::time::Duration::from_secs(3600))?;
            report.deleted = true;
        }
        Ok(report)
    }

    /// Verifies every cache object's hash and that every pointer's objects are present.
    pub fn fsck(&self, reporter: &dyn Reporter) -> Result<FsckReport> {
        let objects = self.store.list()?;
        let mut report = FsckReport {
            objects: objects.len() as u64,
            bytes: objects.iter().map(|(_, size)| size).sum(),
            ..FsckReport::default()
        };
        reporter.start("verifying objects", report.objects, report.bytes);
        let store = &self.store;
        let corrupt: Vec<String> = self.install(|| {
            objects
                .par_iter()
                .filter_map(|(digest, size)| {
                    let result = store.verify(digest);
                    reporter.advance(1, *size);
                    result.err().map(|e| e.to_string())
                })
                .collect()
        });
        reporter.finish();
        report.problems.extend(corrupt);
        for (path, reason) in self.store.damaged_packs() {
            report.problems.push(format!("pack index `{}` is unusable: {reason}", path.display()));
        }
        let present: HashSet<Digest> = objects.iter().map(|(d, _)| *d).collect();
        let (tracked, invalid) = self.tracked_lenient(None);
        report.problems.extend(invalid.into_iter().map(|e| e.to_string()));
        for t in tracked {
            report.pointers += 1;
            let pointer_path = self.pointer_path(&t.rel);
            match self.expected_files(&pointer_path, &t.pointer) {
                Ok(entries) => {
                    let absent: Vec<_> = entries.iter().filter(|e| !present.contains(&e.digest)).collect();
                    if let Some(first) = absent.first() {
                        report.problems.push(format!(
                            "pointer `{}` references {} object(s) missing from the cache (first {})",
                            pointer_path.display(),
                            absent.len(),
                            first.digest
                        ));
                    }
                }
                Err(e) => report.problems.push(e.to_string()),
            }
        }
        Ok(report)
    }
}
