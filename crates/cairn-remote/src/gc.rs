//! `gc --cloud`: remove what no live pointer references from a remote.
//!
//! A pack whose entries are all unreferenced is deleted (its index first, so no reader is
//! ever sent to a missing pack). A pack that is at least half garbage is rewritten: its live
//! entries go into a new pack, published like any push, before the old one is deleted. Packs
//! without an index older than an hour (left by killed pushes) are deleted too, and so are a
//! directory remote's part files of interrupted multipart uploads (`<pack>#<n>`). Live large
//! objects keep every chunk their recipe names.
//!
//! Do not run it while another clone pushes to the same remote: a push that saw an object in
//! a pack that is being deleted would skip uploading it.

use std::collections::HashSet;

use cairn_hash::Digest;
use cairn_store::Reporter;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use crate::index::RemoteIndex;
use crate::pack::{EntryKind, PackBuilder, PackIndex, Recipe};
use crate::transfer::plan_reads;
use crate::{Inner, Remote, RemoteError, Result, index_name, pack_name};

/// Packs without an index younger than this may belong to a push still running.
const ORPHAN_GRACE_SECONDS: i64 = 3600;

/// What `gc --cloud` found (and did, with `force`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CloudGcReport {
    pub packs: u64,
    pub packs_deleted: u64,
    pub packs_rewritten: u64,
    pub objects_kept: u64,
    pub objects_removed: u64,
    pub bytes_freed: u64,
    pub deleted: bool,
}

enum Action {
    Delete {
        pack: Digest,
        index: bool,
        pack_exists: bool,
    },
    /// A leftover part file of an interrupted multipart upload.
    DeleteLeftover {
        name: String,
    },
    Rewrite {
        index: PackIndex,
    },
}

impl Remote {
    /// Finds (and with `force` removes) remote entries not in `live` — object digests,
    /// manifests included. Chunks of live large objects stay.
    pub fn gc(
        &self,
        index: &RemoteIndex,
        live: &HashSet<Digest>,
        force: bool,
        reporter: &dyn Reporter,
    ) -> Result<CloudGcReport> {
        self.runtime.block_on(self.inner.gc_async(index, live, force, reporter))
    }
}

impl Inner {
    async fn gc_async(
        &self,
        index: &RemoteIndex,
        live: &HashSet<Digest>,
        force: bool,
        reporter: &dyn Reporter,
    ) -> Result<CloudGcReport> {
        let live_chunks = self.live_chunks(index, live).await?;
        let is_live = |kind: EntryKind, digest: &Digest| match kind {
            EntryKind::Recipe => live.contains(digest),
            EntryKind::Blob => live.contains(digest) || live_chunks.contains(digest),
        };

        let mut report = CloudGcReport { packs: index.indexes.len() as u64, ..Default::default() };
        let size_of = |pack: &Digest| index.listed.iter().find(|p| p.digest == *pack).map_or(0, |p| p.size);
        let mut actions = Vec::new();
        for pack_index in &index.indexes {
            let (alive, dead): (Vec<&crate::pack::IndexEntry>, Vec<_>) =
                pack_index.entries.iter().partition(|e| is_live(e.kind, &e.digest));
            report.objects_kept += alive.len() as u64;
            if dead.is_empty() {
                continue;
            }
            let dead_bytes: u64 = dead.iter().map(|e| e.length + 41).sum();
            if alive.is_empty() {
                report.packs_deleted += 1;
                report.objects_removed += dead.len() as u64;
                report.bytes_freed += size_of(&pack_index.pack);
                actions.push(Action::Delete { pack: pack_index.pack, index: true, pack_exists: true });
            } else if dead_bytes * 2 >= size_of(&pack_index.pack) {
                report.packs_rewritten += 1;
                report.objects_removed += dead.len() as u64;
                report.bytes_freed += dead_bytes;
                let kept = PackIndex { pack: pack_index.pack, entries: alive.into_iter().copied().collect() };
                actions.push(Action::Rewrite { index: kept });
            } else {
                report.objects_kept += dead.len() as u64;
            }
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        for listed in &index.listed {
            if listed.has_pack && !listed.has_index && now - listed.modified >= ORPHAN_GRACE_SECONDS {
                report.packs_deleted += 1;
                report.bytes_freed += listed.size;
                actions.push(Action::Delete { pack: listed.digest, index: false, pack_exists: true });
            }
        }
        for (name, modified, size) in &index.leftovers {
            if now - modified >= ORPHAN_GRACE_SECONDS {
                report.bytes_freed += size;
                actions.push(Action::DeleteLeftover { name: name.clone() });
            }
        }
        if !force {
            return Ok(report);
        }

        reporter.start(&format!("cleaning {}", self.spec.name), actions.len() as u64, 0);
        futures::stream::iter(actions)
            .map(|action| async move {
                self.carry_out(action).await?;
                reporter.advance(1, 0);
                Ok::<(), RemoteError>(())
            })
            .buffer_unordered(self.jobs)
            .try_collect::<Vec<()>>()
            .await?;
        reporter.finish();
        report.deleted = true;
        Ok(report)
    }

    /// The chunks that live recipes name (read from the remote).
    async fn live_chunks(&self, index: &RemoteIndex, live: &HashSet<Digest>) -> Result<HashSet<Digest>> {
        let wanted: Vec<_> = live
            .iter()
            .filter_map(|d| index.recipe(d).map(|f| (*f.pack, *d, f.entry.offset, f.entry.length)))
            .collect();
        let mut live_chunks: HashSet<Digest> = HashSet::new();
        for read in plan_reads(wanted) {
            let bytes = self.read_range(&read).await?;
            for &(digest, offset, length) in &read.pieces {
                let recipe = Recipe::decode(read.piece(&bytes, offset, length)).map_err(|e| {
                    self.damaged("recipe", format!("{digest} in {}", pack_name(&read.pack)), e.to_string())
                })?;
                live_chunks.extend(recipe.chunks.iter().map(|(chunk, _)| *chunk));
            }
        }
        Ok(live_chunks)
    }

    /// Deletes or rewrites one pack, or removes one leftover upload part.
    async fn carry_out(&self, action: Action) -> Result<()> {
        match action {
            Action::Delete { pack, index, pack_exists } => {
                if index {
                    self.delete(&index_name(&pack)).await?;
                    self.forget_index_copy(&pack);
                }
                if pack_exists {
                    self.delete(&pack_name(&pack)).await?;
                }
            }
            Action::Rewrite { index } => self.rewrite(index).await?,
            Action::DeleteLeftover { name } => {
                // Invisible to object_store, so removed from the directory itself.
                if let Some(root) = &self.storage.local_root {
                    let packs = self.storage.prefix.clone().join("packs");
                    let dir = packs.parts().fold(root.clone(), |p, part| p.join(part.as_ref()));
                    let path = dir.join(&name);
                    match std::fs::remove_file(&path) {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(source) => {
                            return Err(RemoteError::Io { action: "remove", path, source });
                        }
                    }
                }
            }
        }
        Ok(())
    }

    async fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(name);
        match self.storage.store.delete(&key).await {
            Ok(()) => Ok(()),
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.storage_error(format!("delete `{key}`"), &e)),
        }
    }

    /// Copies the live entries of a pack into a new one, then deletes the old pack.
    async fn rewrite(&self, kept: PackIndex) -> Result<()> {
        let old = kept.pack;
        let wanted = kept.entries.iter().map(|e| (old, e.digest, e.offset, e.length)).collect();
        let kinds: std::collections::HashMap<(Digest, u64), EntryKind> =
            kept.entries.iter().map(|e| ((e.digest, e.offset), e.kind)).collect();
        let mut builder = PackBuilder::new();
        for read in plan_reads(wanted) {
            let bytes = self.read_range(&read).await?;
            for &(digest, offset, length) in &read.pieces {
                let data = read.piece(&bytes, offset, length);
                let kind = kinds[&(digest, offset)];
                if kind == EntryKind::Blob && cairn_hash::hash_bytes(data) != digest {
                    return Err(self.damaged(
                        "pack",
                        pack_name(&old),
                        format!("entry {digest} does not match its digest"),
                    ));
                }
                builder.push(kind, digest, data);
            }
        }
        self.publish_pack(builder.finish()).await?;
        self.delete(&index_name(&old)).await?;
        self.forget_index_copy(&old);
        self.delete(&pack_name(&old)).await
    }
}
