//! MLflow's artifact proxy, `/api/2.0/mlflow-artifacts/artifacts/<path>`: upload (PUT),
//! download (GET), delete (DELETE), and directory listing (GET `...artifacts?path=DIR`).
//!
//! An upload is streamed into a cache object while it is hashed; the object is checked
//! against that hash before it is linked into the cache, and only then does the path's row
//! in the metadata store point at it (data first, index last). A killed upload leaves at most
//! a temporary file that `cairn gc` removes.

use std::io::Write;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State as Extract};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use cairn_hash::Digest;
use cairn_meta::Artifact;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::wire::Request;
use crate::{ApiError, State};

const PREFIX: &str = "/api/2.0/mlflow-artifacts/artifacts";

pub(crate) fn routes() -> Router<State> {
    Router::new()
        .route(PREFIX, get(list))
        .route(&format!("{PREFIX}/{{*path}}"), get(download).put(upload).delete(remove))
        .layer(axum::extract::DefaultBodyLimit::disable())
}

pub use cairn_meta::artifact_tree_path as tree_path;

/// A relative path inside the artifact tree: no `..`, no empty or absolute parts.
pub(crate) fn check_path(path: &str) -> Result<(), ApiError> {
    if path.is_empty() {
        return Ok(());
    }
    let bad = path.starts_with('/')
        || path.contains('\\')
        || path.contains('\0')
        || path.split('/').any(|part| part.is_empty() || part == "." || part == "..");
    if bad {
        return Err(ApiError::invalid(format!(
            "invalid artifact path `{path}`: use a relative path without `.`, `..` or empty parts"
        )));
    }
    Ok(())
}

/// The digest of the files under `tree` (each file's path below `tree` and its content
/// digest) and their total size; `None` when there are none. Equal trees have equal digests
/// wherever they live, so a model logged twice with the same files is one content.
pub(crate) fn tree_digest(state: &State, tree: &str) -> Result<Option<(Digest, i64)>, ApiError> {
    let files = state.meta.artifacts_under(tree)?;
    if files.is_empty() {
        return Ok(None);
    }
    let mut hasher = blake3::Hasher::new();
    let mut size = 0;
    for f in &files {
        hasher.update(&f.path.as_bytes()[tree.len()..]);
        hasher.update(b"\0");
        // The digest's text (`blake3:…`), as the encoding has always hashed it.
        hasher.update(f.digest.to_string().as_bytes());
        hasher.update(b"\n");
        size += f.size;
    }
    Ok(Some((Digest::blake3(*hasher.finalize().as_bytes()), size)))
}

/// The answer to listing `relative` under an artifact root (a run's or a logged model's):
/// `{"root_uri", "files": [{"path", "is_dir", "file_size"}]}` with paths relative to the root;
/// no files for a root this server does not hold.
pub(crate) fn listing(state: &State, root_uri: &str, relative: &str) -> Result<Value, ApiError> {
    let Some(root) = tree_path(root_uri) else {
        return Ok(json!({"root_uri": root_uri, "files": []}));
    };
    let relative = relative.trim_matches('/');
    check_path(relative)?;
    let dir = if relative.is_empty() { root } else { format!("{root}/{relative}") };
    let files: Vec<Value> = children(state, &dir)?
        .into_iter()
        .map(|(name, is_dir, size)| {
            let path = if relative.is_empty() { name } else { format!("{relative}/{name}") };
            let mut file = json!({"path": path, "is_dir": is_dir});
            if let Some(size) = size {
                file["file_size"] = json!(size);
            }
            file
        })
        .collect();
    Ok(json!({"root_uri": root_uri, "files": files}))
}

/// The entries directly inside `dir`: `(name, is_dir, size of a file)`.
pub(crate) fn children(state: &State, dir: &str) -> Result<Vec<(String, bool, Option<i64>)>, ApiError> {
    let mut out: Vec<(String, bool, Option<i64>)> = Vec::new();
    for artifact in state.meta.artifacts_under(dir)? {
        let rest = if dir.is_empty() { artifact.path.as_str() } else { &artifact.path[dir.len() + 1..] };
        match rest.split_once('/') {
            Some((name, _)) => {
                if out.last().is_none_or(|(last, _, _)| last != name) {
                    out.push((name.to_owned(), true, None));
                }
            }
            None => out.push((rest.to_owned(), false, Some(artifact.size))),
        }
    }
    Ok(out)
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("the artifact handler failed: {e}"))))
}

async fn list(
    Extract(state): Extract<State>,
    RawQuery(query): RawQuery,
) -> Result<axum::Json<Value>, ApiError> {
    let request = Request::from_query(query.as_deref())?;
    let dir = request.string("path")?.unwrap_or_default().trim_matches('/').to_owned();
    check_path(&dir)?;
    let entries = blocking(move || children(&state, &dir)).await?;
    let files: Vec<Value> = entries
        .into_iter()
        .map(|(name, is_dir, size)| {
            let mut file = json!({"path": name, "is_dir": is_dir});
            if let Some(size) = size {
                file["file_size"] = json!(size);
            }
            file
        })
        .collect();
    Ok(axum::Json(json!({ "files": files })))
}

fn store_error(e: cairn_store::StoreError) -> ApiError {
    ApiError::internal(format!("the object store failed: {e}"))
}

async fn upload(
    Extract(state): Extract<State>,
    Path(path): Path<String>,
    headers: axum::http::HeaderMap,
    body: Body,
) -> Result<axum::Json<Value>, ApiError> {
    check_path(&path)?;
    // What this upload may add: the artifact limit, and what is left of its run's quota.
    let allowed = {
        let (state, path) = (state.clone(), path.clone());
        blocking(move || upload_allowance(&state, &path)).await?
    };
    let declared =
        headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(length) = declared
        && length > allowed.bytes
    {
        return Err(ApiError::too_large(allowed.refusal(&path, length)));
    }
    let objects = state.objects.clone();
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Bytes>(16);
    let writer = tokio::task::spawn_blocking(move || -> Result<(Digest, u64), ApiError> {
        let partial = objects.partial().map_err(store_error)?;
        let mut hasher = blake3::Hasher::new();
        let mut size = 0u64;
        while let Some(chunk) = receiver.blocking_recv() {
            hasher.update(&chunk);
            partial.file().write_all(&chunk).map_err(|e| {
                ApiError::internal(format!("cannot write `{}`: {e}", partial.path().display()))
            })?;
            size += chunk.len() as u64;
        }
        let digest = Digest::blake3(*hasher.finalize().as_bytes());
        partial.commit(&digest).map_err(store_error)?;
        Ok((digest, size))
    });
    let mut stream = body.into_data_stream();
    let mut received = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::invalid(format!("the upload of `{path}` broke off: {e}")))?;
        received += chunk.len() as u64;
        if received > allowed.bytes {
            // Dropping the writer's channel discards the partial object.
            return Err(ApiError::too_large(allowed.refusal(&path, received)));
        }
        if sender.send(chunk).await.is_err() {
            break;
        }
    }
    drop(sender);
    let (digest, size) = writer
        .await
        .unwrap_or_else(|e| Err(ApiError::internal(format!("the upload handler failed: {e}"))))?;
    let artifact = Artifact { path, digest, size: size as i64 };
    blocking(move || state.meta.put_artifact(&artifact).map_err(ApiError::from)).await?;
    Ok(axum::Json(json!({})))
}

/// How many bytes an upload to `path` may have, and why no more.
struct Allowance {
    bytes: u64,
    /// The run or logged model whose quota limits it, when that is tighter than the artifact
    /// limit.
    quota: Option<(String, u64, u64)>,
    max_artifact: u64,
}

impl Allowance {
    fn refusal(&self, path: &str, size: u64) -> String {
        match &self.quota {
            Some((owner, used, quota)) => format!(
                "the upload of `{path}` ({size} bytes or more) would take {owner} past its artifact quota ({used} of {quota} bytes used); delete artifacts or raise `--run-quota`"
            ),
            None => format!(
                "the upload of `{path}` ({size} bytes or more) is larger than this server accepts ({} bytes); raise `--max-artifact-size`",
                self.max_artifact
            ),
        }
    }
}

/// Artifacts under `<experiment>/<run id>/artifacts/` belong to a run, and those under
/// `<experiment>/models/<model id>/artifacts/` to a logged model; the owner must exist, and
/// its artifacts together stay within the quota.
fn upload_allowance(state: &State, path: &str) -> Result<Allowance, ApiError> {
    let limits = state.uploads;
    let mut allowance =
        Allowance { bytes: limits.max_artifact_bytes, quota: None, max_artifact: limits.max_artifact_bytes };
    let parts: Vec<&str> = path.splitn(4, '/').collect();
    let is_run_id = |s: &str| s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit());
    let model_parts: Vec<&str> = path.splitn(5, '/').collect();
    if let [experiment, "models", model_id, "artifacts", _] = model_parts.as_slice() {
        let model = crate::logged_models::find(state, model_id).map_err(|_| {
            ApiError::not_found(format!(
                "no logged model {model_id}: its artifacts can only be uploaded after it is created"
            ))
        })?;
        if model.experiment_id.to_string() != *experiment {
            return Err(ApiError::invalid(format!(
                "logged model {model_id} belongs to experiment {}, not {experiment}",
                model.experiment_id
            )));
        }
        let prefix = format!("{experiment}/models/{model_id}");
        limit_to_quota(state, &mut allowance, path, &prefix, &format!("logged model {model_id}"))?;
    } else if let [experiment, run_id, "artifacts", _] = parts.as_slice()
        && is_run_id(run_id)
    {
        let run = state.meta.run(run_id)?.ok_or_else(|| {
            ApiError::not_found(format!(
                "no run {run_id}: artifacts can only be uploaded to a run that exists"
            ))
        })?;
        if run.info.experiment_id.to_string() != *experiment {
            return Err(ApiError::invalid(format!(
                "run {run_id} belongs to experiment {}, not {experiment}",
                run.info.experiment_id
            )));
        }
        limit_to_quota(
            state,
            &mut allowance,
            path,
            &format!("{experiment}/{run_id}"),
            &format!("run {run_id}"),
        )?;
    }
    Ok(allowance)
}

/// Lowers `allowance` to what is left of the quota of `owner` (a run or a logged model), whose
/// artifacts are under `prefix`; `path` itself is being replaced, so its size does not count.
fn limit_to_quota(
    state: &State,
    allowance: &mut Allowance,
    path: &str,
    prefix: &str,
    owner: &str,
) -> Result<(), ApiError> {
    let quota = state.uploads.run_quota_bytes;
    let used: u64 = state
        .meta
        .artifacts_under(prefix)?
        .iter()
        .filter(|a| a.path != path)
        .map(|a| a.size.max(0) as u64)
        .sum();
    let left = quota.saturating_sub(used);
    if left < allowance.bytes {
        allowance.bytes = left;
        allowance.quota = Some((owner.to_owned(), used, quota));
    }
    Ok(())
}

async fn download(Extract(state): Extract<State>, Path(path): Path<String>) -> Result<Response, ApiError> {
    check_path(&path)?;
    let found = {
        let (state, path) = (state.clone(), path.clone());
        blocking(move || state.meta.artifact(&path).map_err(ApiError::from)).await?
    };
    let artifact = found.ok_or_else(|| ApiError::not_found(format!("no artifact at `{path}`")))?;
    let digest = artifact.digest;
    let objects = state.objects.clone();
    let served_as = content_type(&artifact.path);
    let file = blocking(move || {
        objects.open_object(&digest).map_err(|e| {
            ApiError::internal(format!(
                "artifact `{}` is recorded but its object is missing from the cache ({e}); pull it from a remote with `cairn exp pull`",
                artifact.path
            ))
        })
    })
    .await?;
    Ok((
        [
            (header::CONTENT_TYPE, served_as),
            (header::CONTENT_LENGTH, &artifact.size.to_string()),
            // Browsers must take the type as given: an artifact is whatever a client uploaded.
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        Body::from_stream(verified_stream(file)),
    )
        .into_response())
}

/// The type an artifact is served as, from its extension. Markup and scripts (HTML, SVG,
/// JavaScript, XML) go out as plain text, so an uploaded page never runs in a browser that
/// opens it from this server.
fn content_type(path: &str) -> &'static str {
    let extension = path.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase()).unwrap_or_default();
    match extension.as_str() {
        "json" => "application/json",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "pdf" => "application/pdf",
        "txt" | "log" | "md" | "csv" | "tsv" | "yaml" | "yml" | "toml" | "cfg" | "ini" | "py" | "html"
        | "htm" | "svg" | "js" | "xml" => "text/plain; charset=utf-8",
        _ if path.rsplit('/').next() == Some("MLmodel") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// Streams an object's bytes, read on a blocking thread through the store's verifying reader.
/// Corruption surfaces as a stream error at the end, which aborts the response: the client
/// sees a truncated body (short of `Content-Length`), never a complete-looking corrupt file.
fn verified_stream(
    mut reader: cairn_store::VerifiedReader,
) -> impl futures::Stream<Item = std::io::Result<Bytes>> {
    use std::io::Read;
    let (tx, rx) = tokio::sync::mpsc::channel::<std::io::Result<Bytes>>(4);
    tokio::task::spawn_blocking(move || {
        let mut buffer = vec![0u8; 256 * 1024];
        loop {
            let item = match reader.read(&mut buffer) {
                Ok(0) => return,
                Ok(n) => Ok(Bytes::copy_from_slice(&buffer[..n])),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => Err(e),
            };
            let failed = item.is_err();
            // A closed channel means the client went away: stop reading.
            if tx.blocking_send(item).is_err() || failed {
                return;
            }
        }
    });
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) })
}

async fn remove(
    Extract(state): Extract<State>,
    Path(path): Path<String>,
) -> Result<axum::Json<Value>, ApiError> {
    check_path(&path)?;
    blocking(move || state.meta.delete_artifacts(&path).map_err(ApiError::from)).await?;
    Ok(axum::Json(json!({})))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn artifact_uris_map_to_tree_paths() {
        assert_eq!(tree_path("mlflow-artifacts:/1/abc/artifacts").as_deref(), Some("1/abc/artifacts"));
        assert_eq!(
            tree_path("mlflow-artifacts://host:5000/1/abc/artifacts").as_deref(),
            Some("1/abc/artifacts")
        );
        assert_eq!(
            tree_path("http://h/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts").as_deref(),
            Some("0/r/artifacts")
        );
        assert_eq!(tree_path("s3://bucket/x"), None);
    }

    #[test]
    fn paths_may_not_climb_out() {
        assert!(check_path("1/abc/artifacts/model.pkl").is_ok());
        for bad in ["../etc/passwd", "a/../../b", "/abs", "a//b", "a/./b"] {
            assert!(check_path(bad).is_err(), "{bad}");
        }
    }
}
