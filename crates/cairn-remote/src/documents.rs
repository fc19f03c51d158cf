//! Small named documents beside the packs, such as run-cache entries
//! (`<url>/runs-v1/<2 hex>/<62 hex>`). Each is immutable and named by what it describes, so
//! uploading one twice is harmless and concurrent writers never conflict.

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::ObjectStoreExt;

use crate::{Remote, Result};

impl Remote {
    /// The documents under `<url>/<dir>/`, as keys relative to it (one `LIST`).
    pub fn list_documents(&self, dir: &str) -> Result<Vec<String>> {
        let inner = &self.inner;
        let prefix = inner.storage.prefix.clone().join(dir);
        self.runtime.block_on(async {
            let listing: Vec<object_store::ObjectMeta> = inner
                .storage
                .store
                .list(Some(&prefix))
                .try_collect()
                .await
                .map_err(|e| inner.storage_error(format!("list `{prefix}`"), &e))?;
            let base = format!("{prefix}/");
            let mut keys: Vec<String> = listing
                .iter()
                .filter_map(|m| m.location.as_ref().strip_prefix(&base).map(str::to_owned))
                .collect();
            keys.sort();
            Ok(keys)
        })
    }

    /// Downloads documents, up to `jobs` at once.
    pub fn get_documents(&self, dir: &str, keys: &[String]) -> Result<Vec<(String, Bytes)>> {
        let inner = &self.inner;
        self.runtime.block_on(
            futures::stream::iter(keys.iter().cloned())
                .map(|key| async move {
                    let path = document_path(inner, dir, &key);
                    let got = inner.storage.store.get(&path).await;
                    let bytes = match got {
                        Ok(result) => result.bytes().await,
                        Err(e) => Err(e),
                    }
                    .map_err(|e| inner.storage_error(format!("read `{path}`"), &e))?;
                    Ok::<_, crate::RemoteError>((key, bytes))
                })
                .buffer_unordered(inner.jobs)
                .try_collect(),
        )
    }

    /// Uploads documents, up to `jobs` at once.
    pub fn put_documents(&self, dir: &str, documents: Vec<(String, Vec<u8>)>) -> Result<()> {
        let inner = &self.inner;
        self.runtime.block_on(
            futures::stream::iter(documents)
                .map(|(key, bytes)| async move {
                    let path = document_path(inner, dir, &key);
                    inner
                        .storage
                        .store
                        .put(&path, Bytes::from(bytes).into())
                        .await
                        .map_err(|e| inner.storage_error(format!("upload `{path}`"), &e))?;
                    inner.make_durable(&path).await
                })
                .buffer_unordered(inner.jobs)
                .try_collect::<Vec<()>>(),
        )?;
        Ok(())
    }
}

/// `<prefix>/<dir>/<key>`, with the key's `/` separating path segments.
fn document_path(inner: &crate::Inner, dir: &str, key: &str) -> object_store::path::Path {
    key.split('/').fold(inner.storage.prefix.clone().join(dir), |path, part| path.join(part))
}
