//! What a remote holds: the union of its pack indexes, mirrored in a local directory.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use cairn_hash::Digest;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;
use rustc_hash::FxHashMap;

use crate::pack::{EntryKind, IndexEntry, PackIndex};
use crate::{Inner, Remote, RemoteError, Result, index_name};

/// A pack listed on the remote.
#[derive(Clone, Debug)]
pub(crate) struct ListedPack {
    pub digest: Digest,
    pub size: u64,
    /// Seconds since the Unix epoch.
    pub modified: i64,
    pub has_index: bool,
    pub has_pack: bool,
}

/// The objects a remote has, and where each lives.
#[derive(Debug, Default)]
pub struct RemoteIndex {
    pub(crate) indexes: Vec<PackIndex>,
    /// digest -> (pack number, entry number) for blobs and for recipes.
    blobs: FxHashMap<Digest, (u32, u32)>,
    recipes: FxHashMap<Digest, (u32, u32)>,
    pub(crate) listed: Vec<ListedPack>,
    /// Names under `packs/` that are neither packs nor indexes (name, modified, size).
    pub(crate) leftovers: Vec<(String, i64, u64)>,
}

/// Where one entry lives.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Located<'a> {
    pub pack: &'a Digest,
    pub entry: &'a IndexEntry,
}

impl RemoteIndex {
    fn add(&mut self, index: PackIndex) {
        let number = self.indexes.len() as u32;
        for (i, entry) in index.entries.iter().enumerate() {
            let map = match entry.kind {
                EntryKind::Blob => &mut self.blobs,
                EntryKind::Recipe => &mut self.recipes,
            };
            map.entry(entry.digest).or_insert((number, i as u32));
        }
        self.indexes.push(index);
    }

    /// Whether the remote has the object `digest` (whole or as a recipe of chunks).
    pub fn contains(&self, digest: &Digest) -> bool {
        self.blobs.contains_key(digest) || self.recipes.contains_key(digest)
    }

    pub(crate) fn blob(&self, digest: &Digest) -> Option<Located<'_>> {
        self.blobs.get(digest).map(|&(p, e)| self.located(p, e))
    }

    pub(crate) fn recipe(&self, digest: &Digest) -> Option<Located<'_>> {
        self.recipes.get(digest).map(|&(p, e)| self.located(p, e))
    }

    fn located(&self, pack: u32, entry: u32) -> Located<'_> {
        let index = &self.indexes[pack as usize];
        Located { pack: &index.pack, entry: &index.entries[entry as usize] }
    }
}

fn parse_listed_name(name: &str) -> Option<(Digest, bool)> {
    let (hex, is_index) = match name.strip_suffix(".idx") {
        Some(hex) => (hex, true),
        None => (name.strip_suffix(".pack")?, false),
    };
    let digest = format!("blake3:{hex}").parse().ok()?;
    Some((digest, is_index))
}

impl Remote {
    /// Lists the remote's packs and brings the local copy of its indexes up to date: indexes
    /// that appeared since last time are downloaded (in parallel, verified), indexes of packs
    /// that are gone are forgotten. Costs one `LIST` per 1,000 packs plus the new indexes.
    pub fn index(&self) -> Result<RemoteIndex> {
        self.runtime.block_on(self.inner.index_async())
    }
}

impl Inner {
    fn idx_cache(&self) -> PathBuf {
        self.state_dir.join("idx")
    }

    pub(crate) async fn index_async(&self) -> Result<RemoteIndex> {
        let prefix = self.storage.prefix.clone().join("packs");
        let listing: Vec<object_store::ObjectMeta> = self
            .storage
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| self.storage_error(format!("list `{prefix}`"), &e))?;
        let packs = listed_packs(&listing);
        let on_remote: HashSet<Digest> = packs.values().filter(|p| p.has_index).map(|p| p.digest).collect();

        self.refresh_index_copies(&on_remote).await?;
        let cache = self.idx_cache();
        let mut index = RemoteIndex::default();
        let mut digests: Vec<&Digest> = on_remote.iter().collect();
        digests.sort();
        for digest in digests {
            let path = cache.join(index_name(digest));
            let bytes = std::fs::read(&path).map_err(|e| io_error("read", &path, e))?;
            match PackIndex::decode(&bytes) {
                Ok(decoded) => index.add(decoded),
                Err(_) => {
                    // A damaged local copy: drop it; the next run downloads it again.
                    let _ = std::fs::remove_file(&path);
                    return Err(RemoteError::Io {
                        action: "read the local copy of a pack index",
                        path,
                        source: std::io::Error::other(
                            "it was damaged and has been removed; run the command again",
                        ),
                    });
                }
            }
        }
        let mut listed: Vec<ListedPack> = packs.into_values().collect();
        listed.sort_by_key(|p| p.digest);
        index.listed = listed;
        index.leftovers = self.upload_leftovers(&prefix);
        Ok(index)
    }

    /// Brings the local copies of the remote's pack indexes up to date: downloads (and
    /// checks) the ones not copied yet, forgets the ones no longer on the remote.
    async fn refresh_index_copies(&self, on_remote: &HashSet<Digest>) -> Result<()> {
        let cache = self.idx_cache();
        let mut cached = HashSet::new();
        let entries = std::fs::read_dir(&cache).map_err(|e| io_error("list", &cache, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| io_error("list", &cache, e))?;
            let name = entry.file_name();
            let Some((digest, true)) = name.to_str().and_then(parse_listed_name) else { continue };
            if on_remote.contains(&digest) {
                cached.insert(digest);
            } else {
                // Removed from the remote (by `gc --cloud` elsewhere): forget it.
                let _ = std::fs::remove_file(entry.path());
            }
        }
        let wanted: Vec<Digest> = on_remote.difference(&cached).copied().collect();
        futures::stream::iter(wanted)
            .map(|digest| async move {
                let key = self.key(&index_name(&digest));
                let bytes = self
                    .storage
                    .store
                    .get(&key)
                    .await
                    .map_err(|e| self.storage_error(format!("read `{key}`"), &e))?
                    .bytes()
                    .await
                    .map_err(|e| self.storage_error(format!("read `{key}`"), &e))?;
                let index = PackIndex::decode(&bytes)
                    .map_err(|e| self.damaged("pack index", key.to_string(), e.to_string()))?;
                if index.pack != digest {
                    return Err(self.damaged(
                        "pack index",
                        key.to_string(),
                        format!("it describes pack {}", index.pack),
                    ));
                }
                self.save_index_copy(&digest, &bytes)
            })
            .buffer_unordered(self.jobs)
            .try_collect::<Vec<()>>()
            .await?;

        Ok(())
    }

    /// A directory remote's part files of multipart uploads a killed push left behind
    /// (`<pack>#<n>`), with their time and size; object_store's listing hides them, so they
    /// are found directly.
    fn upload_leftovers(&self, prefix: &object_store::path::Path) -> Vec<(String, i64, u64)> {
        let mut leftovers = Vec::new();
        if let Some(root) = &self.storage.local_root {
            let dir = prefix.parts().fold(root.clone(), |path, part| path.join(part.as_ref()));
            for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name.contains(".pack#")
                    && let Ok(meta) = entry.metadata()
                {
                    let modified = meta
                        .modified()
                        .ok()
                        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                        .map_or(0, |d| d.as_secs() as i64);
                    leftovers.push((name, modified, meta.len()));
                }
            }
        }
        leftovers
    }

    /// Keeps a local copy of a pack index (written atomically; a copy of what the remote
    /// holds, so not synced: a first fetch may store thousands).
    pub(crate) fn save_index_copy(&self, pack: &Digest, bytes: &[u8]) -> Result<()> {
        let path = self.idx_cache().join(index_name(pack));
        cairn_fs::write_derived(&path, bytes).map_err(|e| io_error("write", &path, e))
    }

    pub(crate) fn forget_index_copy(&self, pack: &Digest) {
        let _ = std::fs::remove_file(self.idx_cache().join(index_name(pack)));
    }
}

pub(crate) fn io_error(action: &'static str, path: &Path, source: std::io::Error) -> RemoteError {
    RemoteError::Io { action, path: path.to_path_buf(), source }
}

/// The packs a listing of `packs/` shows: each with its size and time, and whether its
/// data and its index are there.
fn listed_packs(listing: &[object_store::ObjectMeta]) -> FxHashMap<Digest, ListedPack> {
    let mut packs: FxHashMap<Digest, ListedPack> = FxHashMap::default();
    for meta in listing {
        let Some(name) = meta.location.filename() else { continue };
        let Some((digest, is_index)) = parse_listed_name(name) else { continue };
        let listed = packs.entry(digest).or_insert(ListedPack {
            digest,
            size: 0,
            modified: meta.last_modified.timestamp(),
            has_index: false,
            has_pack: false,
        });
        if is_index {
            listed.has_index = true;
        } else {
            listed.has_pack = true;
            listed.size = meta.size;
            listed.modified = meta.last_modified.timestamp();
        }
    }
    packs
}
