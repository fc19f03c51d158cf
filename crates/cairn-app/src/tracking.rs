//! The MLflow-compatible tracking server over a workspace: its state for `cairn server`, and
//! a loopback server that lives as long as one pipeline run (its stages reach the run through
//! MLflow's client).

use std::sync::Arc;

use cairn_server::{Background, State, UploadLimits};

use crate::{Error, Result, Workspace};

/// The server's state over this workspace's metadata store and cache.
pub fn state(ws: &Workspace, uploads: UploadLimits) -> Result<State> {
    let meta = cairn_meta::open(&ws.repo().meta_location()).map_err(Error::OpenMeta)?;
    Ok(State { meta: Arc::new(meta), objects: ws.repo().store().clone(), uploads })
}

/// A tracking server on a loopback port for the duration of a pipeline run; `None` (with a
/// warning) when it cannot start: the pipeline still runs, and `mlflow` calls in stages then
/// fail on their own.
pub fn background(ws: &Workspace, warn: &dyn Fn(&str)) -> Option<Background> {
    let state = match state(ws, UploadLimits::default()) {
        Ok(state) => state,
        Err(e) => {
            warn(&format!("no tracking server for this run: {e}"));
            return None;
        }
    };
    match Background::start(state) {
        Ok(server) => Some(server),
        Err(e) => {
            warn(&format!("no tracking server for this run: cannot listen on 127.0.0.1: {e}"));
            None
        }
    }
}
