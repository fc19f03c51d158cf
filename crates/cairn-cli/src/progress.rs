//! Progress bars on stderr, implementing the library's `Reporter`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use cairn_repo::Reporter;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Draws a bar per phase (files, bytes, rate, ETA) when stderr is a terminal and `--quiet`
/// is not given; warnings are printed either way unless quiet.
pub struct Progress {
    enabled: bool,
    quiet: bool,
    bar: Mutex<Option<ProgressBar>>,
    files: AtomicU64,
    total_files: AtomicU64,
}

impl Progress {
    pub fn new(quiet: bool) -> Self {
        Progress {
            enabled: !quiet && std::io::stderr().is_terminal(),
            quiet,
            bar: Mutex::new(None),
            files: AtomicU64::new(0),
            total_files: AtomicU64::new(0),
        }
    }

    fn current(&self) -> Option<ProgressBar> {
        self.bar.lock().ok()?.clone()
    }
}

impl Reporter for Progress {
    fn start(&self, label: &str, items: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        let bar = ProgressBar::with_draw_target(Some(bytes), ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template(
            "{prefix:.bold} [{bar:30}] {msg} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
        )
        .expect("the template is valid")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.set_prefix(label.to_owned());
        bar.set_message(format!("0/{items} files"));
        bar.enable_steady_tick(Duration::from_millis(200));
        self.files.store(0, Ordering::Relaxed);
        self.total_files.store(items, Ordering::Relaxed);
        if let Ok(mut slot) = self.bar.lock() {
            *slot = Some(bar);
        }
    }

    fn advance(&self, items: u64, bytes: u64) {
        if !self.enabled {
            return;
        }
        if let Some(bar) = self.current() {
            bar.inc(bytes);
            let done = self.files.fetch_add(items, Ordering::Relaxed) + items;
            if done.is_multiple_of(128) || bytes > 1 << 20 {
                bar.set_message(format!("{done}/{} files", self.total_files.load(Ordering::Relaxed)));
            }
        }
    }

    fn finish(&self) {
        if let Ok(mut slot) = self.bar.lock()
            && let Some(bar) = slot.take()
        {
            bar.finish_and_clear();
        }
    }

    fn warn(&self, message: &str) {
        if self.quiet {
            return;
        }
        match self.current() {
            Some(bar) => bar.suspend(|| eprintln!("warning: {message}")),
            None => eprintln!("warning: {message}"),
        }
    }
}

/// Bytes in binary units: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 { format!("{bytes} B") } else { format!("{value:.1} {}", UNITS[unit]) }
}
