//! Push and fetch: verified, concurrent, resumable transfers between the cache and a remote.
//!
//! **Push** plans first: objects the remote index already has are skipped; small objects are
//! grouped into packs of about [`PACK_TARGET`] bytes; each large object is chunked
//! ([`crate::chunk`]) and only chunks the remote lacks are packed, followed by its recipe.
//! Up to `jobs` packs are built and uploaded at once (packs over 16 MiB as parallel multipart
//! uploads). Each pack is uploaded before its index, and a recipe goes in the last pack of
//! its object, so an index never names anything that is not yet on the remote. Objects are
//! re-verified as they are read from the cache, so a damaged cache object is never shared.
//!
//! **Fetch** reads only what is needed: entries of one pack are read with ranged `GET`s,
//! adjacent entries coalesced into one request; large objects are assembled from their
//! chunks, fetched in parallel and written at their offsets. Every object is verified by its
//! digest before it enters the cache; damaged or absent ones are reported, never stored. A
//! killed fetch leaves only whole objects, so running it again continues where it stopped.

use std::collections::HashMap;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use bytes::Bytes;
use cairn_hash::Digest;
use cairn_store::{Reporter, Store, StoreError};
use futures::{StreamExt, TryStreamExt};
use object_store::{ObjectStoreExt, WriteMultipart};
use rustc_hash::FxHashSet;
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio::task::JoinSet;

use crate::chunk::{CHUNK_THRESHOLD, MAX_CHUNK, for_each_run};
use crate::index::RemoteIndex;
use crate::pack::{BuiltPack, EntryKind, PackBuilder, Recipe};
use crate::{Inner, PACK_TARGET, Remote, RemoteError, Result, index_name, pack_name};

/// Packs larger than this are uploaded in parts, in parallel.
const MULTIPART_THRESHOLD: usize = 16 << 20;
const PART_SIZE: usize = 8 << 20;
/// Entries of one pack closer than this are read with one request.
const COALESCE_GAP: u64 = 1 << 20;
/// Longest single ranged read.
const MAX_RANGE: u64 = 8 << 20;

/// What a push did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PushReport {
    /// Objects uploaded (small objects plus large objects whose recipe was uploaded).
    pub objects_sent: u64,
    /// Bytes uploaded, pack framing and indexes included.
    pub bytes_sent: u64,
    /// Objects the remote already had.
    pub objects_skipped: u64,
    pub bytes_skipped: u64,
    /// Chunks of large objects that the remote (or an earlier chunk of the same push) already had.
    pub chunks_deduplicated: u64,
    pub bytes_deduplicated: u64,
    pub packs: u64,
    /// Objects that should be pushed but are not in the local cache.
    pub missing_locally: Vec<Digest>,
}

/// What a fetch did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FetchReport {
    pub objects_fetched: u64,
    /// Bytes of the objects now in the cache.
    pub bytes_fetched: u64,
    /// Bytes downloaded.
    pub bytes_transferred: u64,
    /// Objects the cache already had.
    pub already_present: u64,
    /// Objects the remote does not have (or a chunk of theirs is absent).
    pub missing: Vec<Digest>,
    /// Objects the remote has but whose bytes do not match their digest, with a reason.
    pub corrupt: Vec<(Digest, String)>,
}

type Progress = UnboundedSender<(u64, u64)>;

/// Runs `tasks` with at most `jobs` in flight, forwarding progress events to `reporter`
/// and handing each result to `done`. The first error stops everything.
async fn drive<T, F>(
    tasks: impl IntoIterator<Item = F>,
    jobs: usize,
    mut events: tokio::sync::mpsc::UnboundedReceiver<(u64, u64)>,
    reporter: &dyn Reporter,
    mut done: impl FnMut(T),
) -> Result<()>
where
    T: Send + 'static,
    F: Future<Output = Result<T>> + Send + 'static,
{
    let mut set = JoinSet::new();
    let mut tasks = tasks.into_iter();
    loop {
        while set.len() < jobs {
            match tasks.next() {
                Some(task) => {
                    set.spawn(task);
                }
                None => break,
            }
        }
        if set.is_empty() {
            break;
        }
        tokio::select! {
            Some((items, bytes)) = events.recv() => reporter.advance(items, bytes),
            joined = set.join_next() => match joined {
                Some(Ok(Ok(value))) => done(value),
                Some(Ok(Err(error))) => {
                    set.abort_all();
                    return Err(error);
                }
                Some(Err(join)) => {
                    set.abort_all();
                    return Err(RemoteError::Internal(format!("a transfer task failed: {join}")));
                }
                None => break,
            },
        }
    }
    while let Ok((items, bytes)) = events.try_recv() {
        reporter.advance(items, bytes);
    }
    Ok(())
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RemoteError::Internal(format!("a worker thread failed: {e}")))?
}

/// Counts of one push task.
#[derive(Default)]
struct PushDone {
    objects: u64,
    bytes_sent: u64,
    packs: u64,
    chunks_deduplicated: u64,
    bytes_deduplicated: u64,
}

impl Remote {
    /// Uploads the cache objects `objects` that the remote lacks according to `index`.
    /// Objects absent from the cache are listed in the report, not an error.
    pub fn push(
        &self,
        index: &RemoteIndex,
        store: &Store,
        objects: &[Digest],
        reporter: &dyn Reporter,
    ) -> Result<PushReport> {
        let mut report = PushReport::default();
        let mut seen = FxHashSet::default();
        let mut small: Vec<(Digest, u64)> = Vec::new();
        let mut large: Vec<(Digest, u64)> = Vec::new();
        for digest in objects {
            if !seen.insert(*digest) {
                continue;
            }
            // Most objects of a repeated push are already there: answer those from the
            // index (a blob's entry has its size) without touching the cache.
            if let Some(at) = index.blob(digest) {
                report.objects_skipped += 1;
                report.bytes_skipped += at.entry.length;
                continue;
            }
            let Some(size) = store.object_size(digest)? else {
                if index.contains(digest) {
                    report.objects_skipped += 1;
                } else {
                    report.missing_locally.push(*digest);
                }
                continue;
            };
            if index.contains(digest) {
                report.objects_skipped += 1;
                report.bytes_skipped += size;
            } else if size >= CHUNK_THRESHOLD {
                large.push((*digest, size));
            } else {
                small.push((*digest, size));
            }
        }
        let total_objects = (small.len() + large.len()) as u64;
        let total_bytes: u64 = small.iter().chain(&large).map(|(_, size)| size).sum();
        if total_objects == 0 {
            return Ok(report);
        }
        reporter.start(&format!("pushing to {}", self.inner.spec.name), total_objects, total_bytes);

        let mut batches: Vec<Vec<(Digest, u64)>> = Vec::new();
        let mut current = Vec::new();
        let mut current_size = 0u64;
        for item in small {
            current_size += item.1 + 41;
            current.push(item);
            if current_size >= PACK_TARGET as u64 {
                batches.push(std::mem::take(&mut current));
                current_size = 0;
            }
        }
        if !current.is_empty() {
            batches.push(current);
        }
        let known_chunks: Arc<FxHashSet<Digest>> = Arc::new(if large.is_empty() {
            FxHashSet::default()
        } else {
            index
                .indexes
                .iter()
                .flat_map(|i| &i.entries)
                .filter(|e| e.kind == EntryKind::Blob)
                .map(|e| e.digest)
                .collect()
        });

        let (tx, rx) = unbounded_channel();
        let handle = self.runtime.handle().clone();
        let mut tasks: Vec<std::pin::Pin<Box<dyn Future<Output = Result<PushDone>> + Send>>> = Vec::new();
        for batch in batches {
            tasks.push(Box::pin(push_small(self.inner.clone(), store.clone(), batch, tx.clone())));
        }
        for (digest, size) in large {
            let task = push_large(
                self.inner.clone(),
                store.clone(),
                digest,
                size,
                known_chunks.clone(),
                handle.clone(),
                tx.clone(),
            );
            tasks.push(Box::pin(task));
        }
        drop(tx);
        let result = self.runtime.block_on(drive(tasks, self.inner.jobs, rx, reporter, |done: PushDone| {
            report.objects_sent += done.objects;
            report.bytes_sent += done.bytes_sent;
            report.packs += done.packs;
            report.chunks_deduplicated += done.chunks_deduplicated;
            report.bytes_deduplicated += done.bytes_deduplicated;
        }));
        reporter.finish();
        result.map(|()| report)
    }
}

async fn push_small(
    inner: Arc<Inner>,
    store: Store,
    batch: Vec<(Digest, u64)>,
    progress: Progress,
) -> Result<PushDone> {
    let count = batch.len() as u64;
    let bytes: u64 = batch.iter().map(|(_, size)| size).sum();
    let built = blocking(move || {
        let capacity = batch.iter().map(|(_, size)| *size as usize + 41).sum();
        let mut builder = PackBuilder::with_capacity(capacity);
        for (digest, _) in batch {
            let bytes = store.read_verified(&digest)?;
            builder.push(EntryKind::Blob, digest, &bytes);
        }
        Ok(builder.finish())
    })
    .await?;
    let sent = inner.publish_pack(built).await?;
    let _ = progress.send((count, bytes));
    Ok(PushDone { objects: count, bytes_sent: sent, packs: 1, ..Default::default() })
}

/// Chunks one large object and uploads the chunks the remote lacks, then its recipe. Runs on
/// a blocking thread: cutting is sequential, but chunks are hashed in parallel (a pack's worth
/// at a time), full packs are uploaded while cutting goes on (up to `jobs` at once), and the
/// whole object is verified against its digest on another thread. The recipe is published
/// only after every chunk pack has landed.
async fn push_large(
    inner: Arc<Inner>,
    store: Store,
    digest: Digest,
    size: u64,
    known: Arc<FxHashSet<Digest>>,
    handle: tokio::runtime::Handle,
    progress: Progress,
) -> Result<PushDone> {
    use rayon::prelude::*;
    blocking(move || {
        let mut done = PushDone::default();
        // The reader verifies the object as it is cut: a corrupt one fails at its end, before
        // its recipe (the only thing that names it on the remote) is written.
        let file = store.open_object(&digest)?;
        let path = store.object_path(&digest);
        let mut recipe = Recipe { size: 0, chunks: Vec::new() };
        let mut here: FxHashSet<Digest> = FxHashSet::default();
        let mut builder = PackBuilder::with_capacity(PACK_TARGET + MAX_CHUNK as usize);
        let mut uploads: std::collections::VecDeque<tokio::task::JoinHandle<Result<u64>>> =
            Default::default();
        let mut failure = None;
        let cutting = for_each_run(file, |run| {
            let digests: Vec<Digest> = run.par_iter().map(|data| cairn_hash::hash_bytes(data)).collect();
            for (data, chunk) in run.iter().zip(digests) {
                let length = data.len() as u32;
                recipe.size += u64::from(length);
                recipe.chunks.push((chunk, length));
                if known.contains(&chunk) || !here.insert(chunk) {
                    done.chunks_deduplicated += 1;
                    done.bytes_deduplicated += u64::from(length);
                } else {
                    builder.push(EntryKind::Blob, chunk, data);
                }
                let _ = progress.send((0, u64::from(length)));
                if builder.size() >= PACK_TARGET {
                    let fresh = PackBuilder::with_capacity(PACK_TARGET + MAX_CHUNK as usize);
                    let full = std::mem::replace(&mut builder, fresh);
                    let uploader = inner.clone();
                    uploads
                        .push_back(handle.spawn(async move { uploader.publish_pack(full.finish()).await }));
                    done.packs += 1;
                    if uploads.len() >= inner.jobs {
                        let oldest = uploads.pop_front().expect("not empty");
                        match join(handle.block_on(oldest)) {
                            Ok(sent) => done.bytes_sent += sent,
                            Err(error) => {
                                failure = Some(error);
                                return Err(std::io::Error::other("upload failed"));
                            }
                        }
                    }
                }
            }
            Ok(())
        });
        if let Some(error) = failure {
            return Err(error);
        }
        cutting.map_err(|e| crate::index::io_error("read", &path, e))?;
        for upload in uploads {
            done.bytes_sent += join(handle.block_on(upload))?;
        }
        if recipe.size != size {
            return Err(StoreError::ChangedWhileReading { path }.into());
        }
        builder.push(EntryKind::Recipe, digest, &recipe.encode());
        done.bytes_sent += handle.block_on(inner.publish_pack(builder.finish()))?;
        done.packs += 1;
        done.objects = 1;
        let _ = progress.send((1, 0));
        Ok(done)
    })
    .await
}

fn join(result: std::result::Result<Result<u64>, tokio::task::JoinError>) -> Result<u64> {
    result.map_err(|e| RemoteError::Internal(format!("an upload task failed: {e}")))?
}

impl Inner {
    /// Uploads a pack, then its index; records the index locally. Returns the bytes sent.
    pub(crate) async fn publish_pack(&self, built: BuiltPack) -> Result<u64> {
        let index_bytes = built.index.encode();
        let sent = (built.bytes.len() + index_bytes.len()) as u64;
        self.upload(&pack_name(&built.digest), Bytes::from(built.bytes)).await?;
        self.upload(&index_name(&built.digest), Bytes::from(index_bytes.clone())).await?;
        self.save_index_copy(&built.digest, &index_bytes)?;
        Ok(sent)
    }

    pub(crate) async fn upload(&self, name: &str, bytes: Bytes) -> Result<()> {
        let key = self.key(name);
        let failed = |e: object_store::Error| self.storage_error(format!("upload `{key}`"), &e);
        if bytes.len() <= MULTIPART_THRESHOLD {
            self.storage.store.put(&key, bytes.into()).await.map_err(failed)?;
        } else {
            let upload = self.storage.store.put_multipart(&key).await.map_err(failed)?;
            let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            writer.put(bytes);
            writer.finish().await.map_err(failed)?;
        }
        self.make_durable(&key).await
    }

    /// On a directory remote, fsyncs what was just written and its directory, so that after
    /// a crash of the machine a pack is whole before its index can exist (an S3 PUT is
    /// durable when it returns).
    pub(crate) async fn make_durable(&self, key: &object_store::path::Path) -> Result<()> {
        let Some(root) = self.storage.local_root.clone() else { return Ok(()) };
        let path = key.parts().fold(root, |path, part| path.join(part.as_ref()));
        blocking(move || {
            let sync = |p: &std::path::Path| std::fs::File::open(p).and_then(|f| f.sync_all());
            sync(&path).and_then(|()| path.parent().map_or(Ok(()), sync)).map_err(|source| RemoteError::Io {
                action: "sync",
                path,
                source,
            })
        })
        .await
    }

    /// Reads the bytes of `read`; a pack shorter than its index says is damaged.
    pub(crate) async fn read_range(&self, read: &RangeRead) -> Result<Bytes> {
        let key = self.key(&pack_name(&read.pack));
        let bytes = self.storage.store.get_range(&key, read.start..read.end).await.map_err(|e| {
            self.storage_error(format!("read bytes {}..{} of `{key}`", read.start, read.end), &e)
        })?;
        if bytes.len() as u64 != read.end - read.start {
            return Err(self.damaged("pack", key.to_string(), "it is shorter than its index says"));
        }
        Ok(bytes)
    }
}

/// A ranged read of one pack and the entries it covers.
#[derive(Clone, Debug)]
pub(crate) struct RangeRead {
    pub pack: Digest,
    pub start: u64,
    pub end: u64,
    /// (digest, offset in the pack, length)
    pub pieces: Vec<(Digest, u64, u64)>,
}

impl RangeRead {
    /// The bytes of the piece at `offset` in the pack, out of what [`Inner::read_range`] read.
    pub fn piece<'a>(&self, bytes: &'a [u8], offset: u64, length: u64) -> &'a [u8] {
        let at = (offset - self.start) as usize;
        &bytes[at..at + length as usize]
    }
}

/// Groups entries of packs into coalesced ranged reads.
pub(crate) fn plan_reads(mut wanted: Vec<(Digest, Digest, u64, u64)>) -> Vec<RangeRead> {
    // (pack, digest, offset, length), ordered by pack then offset.
    wanted.sort_by(|a, b| a.0.cmp(&b.0).then(a.2.cmp(&b.2)));
    let mut reads: Vec<RangeRead> = Vec::new();
    for (pack, digest, offset, length) in wanted {
        let end = offset + length;
        if let Some(last) = reads.last_mut()
            && last.pack == pack
            && offset <= last.end + COALESCE_GAP
            && end.max(last.end) - last.start <= MAX_RANGE
        {
            last.end = last.end.max(end);
            last.pieces.push((digest, offset, length));
            continue;
        }
        reads.push(RangeRead { pack, start: offset, end, pieces: vec![(digest, offset, length)] });
    }
    reads
}

#[derive(Default)]
struct FetchDone {
    objects: u64,
    bytes: u64,
    transferred: u64,
    corrupt: Vec<(Digest, String)>,
    missing: Vec<Digest>,
}

impl Remote {
    /// Downloads the objects `digests` that the cache lacks, verifying each.
    pub fn fetch(
        &self,
        index: &RemoteIndex,
        store: &Store,
        digests: &[Digest],
        reporter: &dyn Reporter,
    ) -> Result<FetchReport> {
        let mut report = FetchReport::default();
        let mut seen = FxHashSet::default();
        let mut small = Vec::new();
        let mut large: Vec<(Digest, Digest, u64, u64)> = Vec::new();
        let mut total_bytes = 0;
        for digest in digests {
            if !seen.insert(*digest) {
                continue;
            }
            if store.contains(digest)? {
                report.already_present += 1;
                continue;
            }
            if let Some(found) = index.blob(digest) {
                small.push((*found.pack, *digest, found.entry.offset, found.entry.length));
                total_bytes += found.entry.length;
            } else if let Some(found) = index.recipe(digest) {
                large.push((*found.pack, *digest, found.entry.offset, found.entry.length));
            } else {
                report.missing.push(*digest);
            }
        }
        let total_objects = (small.len() + large.len()) as u64;
        if total_objects == 0 {
            return Ok(report);
        }

        // Recipes first (small reads), so the whole size is known for the progress bar.
        let recipes = self.read_recipes(large, &mut report, reporter)?;
        let mut large_tasks = Vec::new();
        for (digest, recipe) in recipes {
            match chunk_reads(index, &recipe) {
                Some((reads, offsets)) => {
                    total_bytes += recipe.size;
                    large_tasks.push((digest, recipe.size, reads, offsets));
                }
                None => report.missing.push(digest),
            }
        }

        reporter.start(&format!("fetching from {}", self.inner.spec.name), total_objects, total_bytes);
        let (tx, rx) = unbounded_channel();
        let mut tasks: Vec<std::pin::Pin<Box<dyn Future<Output = Result<FetchDone>> + Send>>> = Vec::new();
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        let writers = Arc::new(tokio::sync::Semaphore::new(cores));
        for read in plan_reads(small) {
            let task = fetch_range(self.inner.clone(), store.clone(), read, writers.clone(), tx.clone());
            tasks.push(Box::pin(task));
        }
        for (digest, size, reads, offsets) in large_tasks {
            let task =
                fetch_large(self.inner.clone(), store.clone(), digest, size, reads, offsets, tx.clone());
            tasks.push(Box::pin(task));
        }
        drop(tx);
        let result = self.runtime.block_on(drive(tasks, self.inner.jobs, rx, reporter, |done: FetchDone| {
            report.objects_fetched += done.objects;
            report.bytes_fetched += done.bytes;
            report.bytes_transferred += done.transferred;
            report.corrupt.extend(done.corrupt);
            report.missing.extend(done.missing);
        }));
        reporter.finish();
        result?;
        store.sync()?;
        Ok(report)
    }

    /// Reads the recipes of large objects, in coalesced range reads. A recipe that does not
    /// decode is reported corrupt.
    fn read_recipes(
        &self,
        large: Vec<(Digest, Digest, u64, u64)>,
        report: &mut FetchReport,
        reporter: &dyn Reporter,
    ) -> Result<Vec<(Digest, Recipe)>> {
        let mut recipes: Vec<(Digest, Recipe)> = Vec::new();
        if large.is_empty() {
            return Ok(recipes);
        }
        {
            let (tx, rx) = unbounded_channel();
            drop(tx);
            let tasks: Vec<_> = plan_reads(large)
                .into_iter()
                .map(|read| {
                    let inner = self.inner.clone();
                    async move {
                        let bytes = inner.read_range(&read).await?;
                        let mut out = Vec::new();
                        for &(digest, offset, length) in &read.pieces {
                            let decoded = Recipe::decode(read.piece(&bytes, offset, length))
                                .map_err(|e| format!("its recipe in pack {} is damaged: {e}", read.pack));
                            out.push((digest, decoded));
                        }
                        Ok((out, bytes.len() as u64))
                    }
                })
                .collect();
            self.runtime.block_on(drive(
                tasks,
                self.inner.jobs,
                rx,
                reporter,
                |(decoded, transferred): (Vec<_>, u64)| {
                    report.bytes_transferred += transferred;
                    for (digest, recipe) in decoded {
                        match recipe {
                            Ok(recipe) => recipes.push((digest, recipe)),
                            Err(reason) => report.corrupt.push((digest, reason)),
                        }
                    }
                },
            ))?;
        }
        Ok(recipes)
    }
}

/// Where each chunk of a large object goes in it (a chunk may repeat).
type ChunkOffsets = HashMap<Digest, Vec<u64>>;

/// The range reads that bring a large object's chunks, and where each chunk goes in it;
/// `None` if a chunk is not on the remote (or not of the length the recipe says).
fn chunk_reads(index: &RemoteIndex, recipe: &Recipe) -> Option<(Vec<RangeRead>, ChunkOffsets)> {
    let mut wanted = Vec::new();
    let mut offsets = ChunkOffsets::new();
    let mut at = 0u64;
    for (chunk, length) in &recipe.chunks {
        let entry = offsets.entry(*chunk).or_default();
        if entry.is_empty() {
            let found = index.blob(chunk).filter(|found| found.entry.length == u64::from(*length))?;
            wanted.push((*found.pack, *chunk, found.entry.offset, found.entry.length));
        }
        entry.push(at);
        at += u64::from(*length);
    }
    Some((plan_reads(wanted), offsets))
}

async fn fetch_range(
    inner: Arc<Inner>,
    store: Store,
    read: RangeRead,
    writers: Arc<tokio::sync::Semaphore>,
    progress: Progress,
) -> Result<FetchDone> {
    let bytes = inner.read_range(&read).await?;
    let transferred = bytes.len() as u64;
    let pack = read.pack;
    // Downloads run `jobs` at once, but creating files faster than the cores can is slower
    // on ext4 (measured in issue 2), so cache writes run one per core.
    let _permit = writers.acquire_owned().await.map_err(|e| RemoteError::Internal(e.to_string()))?;
    let mut done = blocking(move || {
        let objects: Vec<(Digest, &[u8])> = read
            .pieces
            .iter()
            .map(|&(digest, offset, length)| (digest, read.piece(&bytes, offset, length)))
            .collect();
        let corrupt = store.put_verified_batch(&objects)?;
        let mut done = FetchDone::default();
        for (digest, data) in &objects {
            if !corrupt.iter().any(|(bad, _)| bad == digest) {
                done.objects += 1;
                done.bytes += data.len() as u64;
            }
        }
        for (digest, actual) in corrupt {
            done.corrupt.push((digest, format!("its bytes in pack {pack} hash to {actual}")));
        }
        let sum = objects.iter().map(|(_, data)| data.len() as u64).sum();
        let _ = progress.send((objects.len() as u64, sum));
        Ok(done)
    })
    .await?;
    done.transferred = transferred;
    Ok(done)
}

async fn fetch_large(
    inner: Arc<Inner>,
    store: Store,
    digest: Digest,
    size: u64,
    reads: Vec<RangeRead>,
    offsets: ChunkOffsets,
    progress: Progress,
) -> Result<FetchDone> {
    let partial = Arc::new(store.partial()?);
    partial.file().set_len(size).map_err(|e| crate::index::io_error("allocate", partial.path(), e))?;
    let offsets = Arc::new(offsets);
    let jobs = inner.jobs;
    let results: Vec<(u64, Option<String>)> = futures::stream::iter(reads)
        .map(|read| {
            let (inner, partial, offsets, progress) =
                (inner.clone(), partial.clone(), offsets.clone(), progress.clone());
            async move {
                let bytes = inner.read_range(&read).await?;
                let transferred = bytes.len() as u64;
                blocking(move || {
                    for &(chunk, offset, length) in &read.pieces {
                        let data = read.piece(&bytes, offset, length);
                        let actual = cairn_hash::hash_bytes(data);
                        if actual != chunk {
                            return Ok((
                                transferred,
                                Some(format!("chunk {chunk} in pack {} hashes to {actual}", read.pack)),
                            ));
                        }
                        for position in offsets.get(&chunk).into_iter().flatten() {
                            partial
                                .file()
                                .write_all_at(data, *position)
                                .map_err(|e| crate::index::io_error("write", partial.path(), e))?;
                            let _ = progress.send((0, length));
                        }
                    }
                    Ok((transferred, None))
                })
                .await
            }
        })
        .buffer_unordered(jobs)
        .try_collect()
        .await?;
    let transferred = results.iter().map(|(n, _)| n).sum();
    if let Some(reason) = results.into_iter().find_map(|(_, problem)| problem) {
        return Ok(FetchDone { transferred, corrupt: vec![(digest, reason)], ..Default::default() });
    }
    let partial = Arc::try_unwrap(partial)
        .map_err(|_| RemoteError::Internal("a chunk writer outlived its object".into()))?;
    let committed = blocking(move || Ok(partial.commit(&digest))).await?;
    let _ = progress.send((1, 0));
    match committed {
        Ok(()) => Ok(FetchDone { objects: 1, bytes: size, transferred, ..Default::default() }),
        Err(StoreError::Corrupt { actual, .. }) => Ok(FetchDone {
            transferred,
            corrupt: vec![(digest, format!("its chunks reassemble to {actual}"))],
            ..Default::default()
        }),
        Err(other) => Err(other.into()),
    }
}
