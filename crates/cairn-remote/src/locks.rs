//! Keeping `gc --cloud` and pushes apart on a shared remote.
//!
//! A push and a garbage collection must not overlap: the collection could delete a pack that
//! a concurrent push's index is about to rely on. Each side announces itself with a small
//! marker under `<url>/locks/` (`push-<id>.json`, `gc-<id>.json`) and only then looks for
//! the other side's markers; if it finds one it removes its own and stops. Because each
//! writes before it reads, two that start together cannot both go ahead (at worst both
//! stop, and one retries). This needs only read-after-write consistency, which directory
//! remotes and S3 give; no conditional writes.
//!
//! A marker is removed when its claim is dropped. A process killed mid-push leaves its
//! marker behind; markers older than [`STALE_AFTER`] are ignored (and removed by the next
//! collection), so a crash blocks collections for at most that long.

use std::time::Duration;

use bytes::Bytes;
use futures::TryStreamExt;
use object_store::ObjectStoreExt;

use crate::{Remote, RemoteError, Result};

const LOCKS_DIR: &str = "locks";

/// How long a marker counts: longer than any push or collection should take.
pub const STALE_AFTER: Duration = Duration::from_secs(6 * 3600);

/// What a claim is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    Push,
    Gc,
}

impl ClaimKind {
    fn prefix(self) -> &'static str {
        match self {
            ClaimKind::Push => "push-",
            ClaimKind::Gc => "gc-",
        }
    }
}

/// A marker on the remote, removed when dropped.
pub struct Claim<'r> {
    remote: &'r Remote,
    path: object_store::path::Path,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        let inner = &self.remote.inner;
        let path = self.path.clone();
        let _ = self.remote.runtime.block_on(async move { inner.storage.store.delete(&path).await });
    }
}

fn unique_id() -> String {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let text = format!("{}:{}:{nanos}", host.trim(), std::process::id());
    blake3::hash(text.as_bytes()).to_hex()[..16].to_owned()
}

impl Remote {
    /// Announces a push; fails with [`RemoteError::Busy`] while a collection runs.
    pub fn claim_push(&self) -> Result<Claim<'_>> {
        self.claim(ClaimKind::Push, &[ClaimKind::Gc])
    }

    /// Announces a collection; fails with [`RemoteError::Busy`] while a push or another
    /// collection runs. Stale markers are removed.
    pub fn claim_gc(&self) -> Result<Claim<'_>> {
        self.claim(ClaimKind::Gc, &[ClaimKind::Push, ClaimKind::Gc])
    }

    fn claim(&self, kind: ClaimKind, excludes: &[ClaimKind]) -> Result<Claim<'_>> {
        let inner = &self.inner;
        let dir = inner.storage.prefix.clone().join(LOCKS_DIR);
        let name = format!("{}{}.json", kind.prefix(), unique_id());
        let path = dir.clone().join(name.as_str());
        let body = format!(
            "{{\"pid\": {}, \"host\": {:?}, \"started\": {:?}}}\n",
            std::process::id(),
            std::fs::read_to_string("/etc/hostname").unwrap_or_default().trim(),
            chrono::Utc::now().to_rfc3339()
        );
        self.runtime.block_on(async {
            inner
                .storage
                .store
                .put(&path, Bytes::from(body).into())
                .await
                .map_err(|e| inner.storage_error(format!("write the lock marker `{path}`"), &e))?;
            inner.make_durable(&path).await
        })?;
        let claim = Claim { remote: self, path: path.clone() };
        let listing: Vec<object_store::ObjectMeta> = self.runtime.block_on(async {
            inner
                .storage
                .store
                .list(Some(&dir))
                .try_collect()
                .await
                .map_err(|e| inner.storage_error(format!("list `{dir}`"), &e))
        })?;
        let now = chrono::Utc::now();
        for meta in listing {
            let Some(other) = meta.location.filename() else { continue };
            if meta.location == path {
                continue;
            }
            let age = (now - meta.last_modified).to_std().unwrap_or_default();
            if age > STALE_AFTER {
                if kind == ClaimKind::Gc {
                    let stale = meta.location.clone();
                    let _ = self.runtime.block_on(async { inner.storage.store.delete(&stale).await });
                }
                continue;
            }
            if let Some(blocking) = excludes.iter().find(|k| other.starts_with(k.prefix())) {
                drop(claim);
                return Err(RemoteError::Busy {
                    remote: inner.spec.name.clone(),
                    url: inner.spec.url.clone(),
                    other: match blocking {
                        ClaimKind::Push => "a push".into(),
                        ClaimKind::Gc => "a `gc --cloud`".into(),
                    },
                    marker: format!("{LOCKS_DIR}/{other}"),
                    age_seconds: age.as_secs(),
                });
            }
        }
        Ok(claim)
    }
}
