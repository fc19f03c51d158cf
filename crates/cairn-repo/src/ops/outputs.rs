//! What pipelines need from the workspace: the content of dependency and output paths as
//! content records (the same [`Pointer`] a tracked path has, without a pointer file).

use cairn_hash::{Manifest, ManifestEntry};

use super::*;
use crate::now_ns;
use crate::pointer::PointerKind;

impl Repo {
    /// The current content of each path — `None` where it does not exist — digested through
    /// the stat cache (a file whose stat is unchanged is not read again). Nothing is stored.
    pub fn digest_paths(&self, rels: &[Vec<u8>], reporter: &dyn Reporter) -> Result<Vec<Option<Pointer>>> {
        let mut cache = self.stat_cache();
        let hashed_at = now_ns();
        let cache_ref = &cache;
        let digested: Vec<(Option<Pointer>, Vec<Recorded>)> = self.install(|| {
            rels.par_iter()
                .map(|rel| -> Result<_> {
                    let current = self.current_files(rel, cache_ref, reporter)?;
                    let record = match current.files {
                        None => None,
                        Some(files) => Some(content_record(current.is_dir, files)?),
                    };
                    Ok((record, current.recorded))
                })
                .collect::<Result<_>>()
        })?;
        let mut records = Vec::with_capacity(digested.len());
        for (record, recorded) in digested {
            Self::record_all(&mut cache, recorded, hashed_at);
            records.push(record);
        }
        self.save_stat_cache(&mut cache, reporter);
        Ok(records)
    }

    /// Whether the cache holds every object of `record` (for a directory, its manifest and
    /// all its files).
    pub fn has_content(&self, record: &Pointer) -> Result<bool> {
        if !self.store.contains(&record.digest)? {
            return Ok(false);
        }
        if let PointerKind::Directory { .. } = record.kind {
            let Ok(bytes) = self.store.read_verified(&record.digest) else { return Ok(false) };
            let Ok(manifest) = Manifest::decode(&bytes) else { return Ok(false) };
            for entry in manifest.entries() {
                if !self.store.contains(&entry.digest)? {
                    return Ok(false);
                }
            }
        }
        Ok(true)
    }

    /// The files of a content record (one entry with an empty path for a file).
    pub fn content_files(&self, record: &Pointer) -> Result<Vec<ManifestEntry>> {
        self.expected_files(std::path::Path::new("cairn.lock"), record)
    }
}

/// The content record of a scanned path: a file's digest, or a directory's manifest digest.
fn content_record(is_dir: bool, files: Vec<WorkFile>) -> Result<Pointer> {
    if !is_dir {
        let file = files.into_iter().next().expect("a file scan yields one file");
        return Ok(Pointer {
            kind: PointerKind::File { executable: file.stat.executable() },
            digest: file.digest,
            size: file.stat.size,
        });
    }
    let entries: Vec<ManifestEntry> = files
        .into_iter()
        .map(|f| ManifestEntry {
            path: f.rel,
            digest: f.digest,
            size: f.stat.size,
            executable: f.stat.executable(),
        })
        .collect();
    let manifest = Manifest::new(entries)
        .map_err(|e| RepoError::Internal(format!("a directory scan produced an invalid manifest: {e}")))?;
    Ok(Pointer {
        kind: PointerKind::Directory { files: manifest.len() as u64 },
        digest: manifest.digest(),
        size: manifest.total_size(),
    })
}
