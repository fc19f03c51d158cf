//! The repository lock: one Cairn process at a time changes a repository.

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::fs::{FlockOperation, flock};

use crate::{RepoError, Reporter, Result};

/// Held while alive; the kernel releases it when the process exits, even on SIGKILL.
#[derive(Debug)]
pub struct RepoLock {
    _file: File,
}

impl RepoLock {
    pub(crate) fn acquire(path: &Path, timeout: Duration, reporter: &dyn Reporter) -> Result<Self> {
        let mut file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(|e| RepoError::io("open the lock file", path, e))?;
        let start = Instant::now();
        let mut warned = false;
        loop {
            match flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => break,
                Err(rustix::io::Errno::WOULDBLOCK) | Err(rustix::io::Errno::INTR) => {
                    let holder = std::fs::read_to_string(path)
                        .ok()
                        .map(|s| s.trim().to_owned())
                        .filter(|s| !s.is_empty());
                    if start.elapsed() >= timeout {
                        return Err(RepoError::Locked { path: path.to_path_buf(), holder });
                    }
                    if !warned {
                        reporter.warn(&format!(
                            "waiting for another cairn process{} to release `{}`",
                            holder.map(|h| format!(" (pid {h})")).unwrap_or_default(),
                            path.display()
                        ));
                        warned = true;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(RepoError::io("lock", path, e.into())),
            }
        }
        // Record who holds it, for the message others see.
        let _ = file.set_len(0);
        let _ = write!(file, "{}", std::process::id());
        Ok(RepoLock { _file: file })
    }
}
