//! Running one stage's commands: a process group per command, output streamed line by line
//! to the observer and to the stage's log, timeouts, and cancellation (Ctrl-C).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use rustix::process::{Pid, Signal, kill_process_group};

/// Receives a running command's output, one line at a time.
pub trait OutputSink: Sync {
    fn line(&self, stage: &str, line: &str, stderr: bool);
}

/// One command run: what and where.
pub struct Job {
    /// The stage (or `stage` + datum) the output is attributed to.
    pub label: String,
    pub cmds: Vec<String>,
    pub cwd: PathBuf,
    pub env: Vec<(String, String)>,
    pub timeout: Option<Duration>,
    pub retries: u32,
    pub log: PathBuf,
    /// A program that runs the command and writes its CPU time and peak memory to a file:
    /// `SUPERVISOR __supervise USAGE-FILE sh -c CMD` (the `cairn` binary itself). Without
    /// one, nothing is measured.
    pub supervisor: Option<PathBuf>,
}

/// What the commands of a job cost: CPU time (user + system) and peak resident memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub cpu_ms: i64,
    pub max_rss_kb: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failed(String),
    TimedOut(Duration),
    Interrupted,
}

/// How long a stopped command gets between SIGTERM and SIGKILL.
const GRACE: Duration = Duration::from_secs(3);

/// Runs the job's commands in order (again from the first, up to `retries` times, after a
/// failure). Output goes to `sink` and to the log file, which is replaced.
pub fn run(job: &Job, sink: &dyn OutputSink, cancel: &AtomicBool) -> Outcome {
    run_measured(job, sink, cancel).0
}

/// [`run`], also returning what the commands cost when a supervisor measured them (summed
/// CPU time, the largest peak memory).
pub fn run_measured(job: &Job, sink: &dyn OutputSink, cancel: &AtomicBool) -> (Outcome, Option<Usage>) {
    let usage_file = job.log.with_extension("usage");
    let mut usage: Option<Usage> = None;
    if let Some(parent) = job.log.parent() {
        let _ = std::fs::create_dir_all(parent);
    }
    let log = match std::fs::File::create(&job.log) {
        Ok(file) => Mutex::new(Some(file)),
        Err(_) => Mutex::new(None),
    };
    let mut outcome = Outcome::Success;
    for attempt in 0..=job.retries {
        if attempt > 0 {
            sink.line(
                &job.label,
                &format!("retrying ({attempt} of {}) after: {}", job.retries, describe(&outcome)),
                true,
            );
        }
        outcome = Outcome::Success;
        for cmd in &job.cmds {
            let _ = std::fs::remove_file(&usage_file);
            outcome = run_one(job, cmd, sink, &log, cancel, &usage_file);
            if let Some(measured) = read_usage(&usage_file) {
                let total = usage.get_or_insert_with(Usage::default);
                total.cpu_ms += measured.cpu_ms;
                total.max_rss_kb = total.max_rss_kb.max(measured.max_rss_kb);
            }
            if outcome != Outcome::Success {
                break;
            }
        }
        if matches!(outcome, Outcome::Success | Outcome::Interrupted) {
            break;
        }
    }
    let _ = std::fs::remove_file(&usage_file);
    (outcome, usage)
}

/// `cpu_ms max_rss_kb`, as the supervisor writes it.
fn read_usage(path: &std::path::Path) -> Option<Usage> {
    let text = std::fs::read_to_string(path).ok()?;
    let mut parts = text.split_whitespace().map(|p| p.parse::<i64>().ok());
    Some(Usage { cpu_ms: parts.next()??, max_rss_kb: parts.next()?? })
}

pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Success => "succeeded".into(),
        Outcome::Failed(m) => m.clone(),
        Outcome::TimedOut(t) => format!("timed out after {}", crate::engine::seconds(*t)),
        Outcome::Interrupted => "interrupted".into(),
    }
}

fn run_one(
    job: &Job,
    cmd: &str,
    sink: &dyn OutputSink,
    log: &Mutex<Option<std::fs::File>>,
    cancel: &AtomicBool,
    usage_file: &std::path::Path,
) -> Outcome {
    if let Ok(mut guard) = log.lock()
        && let Some(file) = guard.as_mut()
    {
        let _ = writeln!(file, "$ {cmd}");
    }
    let mut command = match &job.supervisor {
        Some(supervisor) => {
            let mut c = Command::new(supervisor);
            c.arg("__supervise").arg(usage_file).arg("sh");
            c
        }
        None => Command::new("sh"),
    };
    command
        .arg("-c")
        .arg(cmd)
        .current_dir(&job.cwd)
        .envs(job.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group: the terminal's Ctrl-C reaches cairn only, and cairn stops
        // the whole group (the command and anything it started).
        .process_group(0);
    let mut child = match command.spawn() {
        Ok(child) => child,
        Err(e) => return Outcome::Failed(format!("could not start `sh` in `{}`: {e}", job.cwd.display())),
    };
    let pid = child.id() as i32;
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let (status_tx, status_rx) = mpsc::channel();
    let started = Instant::now();
    let outcome = std::thread::scope(|scope| {
        if let Some(out) = stdout {
            scope.spawn(move || pump(out, &job.label, false, sink, log));
        }
        if let Some(err) = stderr {
            scope.spawn(move || pump(err, &job.label, true, sink, log));
        }
        scope.spawn(move || {
            let _ = status_tx.send(child.wait());
        });
        let mut stopping: Option<(Instant, Outcome)> = None;
        let status = loop {
            match status_rx.recv_timeout(Duration::from_millis(25)) {
                Ok(status) => break status,
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    break Err(std::io::Error::other("lost track of the process"));
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
            }
            match &stopping {
                None => {
                    let why = if cancel.load(Ordering::Relaxed) {
                        Some(Outcome::Interrupted)
                    } else {
                        job.timeout.filter(|t| started.elapsed() >= *t).map(Outcome::TimedOut)
                    };
                    if let Some(why) = why {
                        signal_group(pid, Signal::TERM);
                        stopping = Some((Instant::now(), why));
                    }
                }
                Some((since, _)) if since.elapsed() >= GRACE => signal_group(pid, Signal::KILL),
                Some(_) => {}
            }
        };
        // Anything the command left running in its group would hold the pipes open.
        signal_group(pid, Signal::KILL);
        if let Some((_, why)) = stopping {
            return why;
        }
        exit_outcome(job, cmd, status)
    });
    if let Ok(mut guard) = log.lock()
        && let Some(file) = guard.as_mut()
    {
        let _ =
            writeln!(file, "# {} after {}", describe(&outcome), crate::engine::seconds(started.elapsed()));
    }
    outcome
}

/// What a command's exit status means, in words that say what to check.
fn exit_outcome(job: &Job, cmd: &str, status: std::io::Result<std::process::ExitStatus>) -> Outcome {
    match status {
        Ok(status) if status.success() => Outcome::Success,
        Ok(status) => Outcome::Failed(match (status.code(), status.signal()) {
            (Some(127), _) => {
                format!("`{cmd}` exited with 127: command not found (is it installed and on PATH?)")
            }
            (Some(126), _) => format!("`{cmd}` exited with 126: not executable (check its permissions)"),
            // Under a supervisor, a command killed by a signal exits with 128 + signal.
            (Some(code), _) if job.supervisor.is_some() && code > 128 => {
                format!("`{cmd}` was killed by signal {}", code - 128)
            }
            (Some(code), _) => format!("`{cmd}` exited with {code}"),
            (None, Some(signal)) => format!("`{cmd}` was killed by signal {signal}"),
            (None, None) => format!("`{cmd}` failed"),
        }),
        Err(e) => Outcome::Failed(format!("waiting for `{cmd}`: {e}")),
    }
}

fn signal_group(pid: i32, signal: Signal) {
    if let Some(pid) = Pid::from_raw(pid) {
        let _ = kill_process_group(pid, signal);
    }
}

fn pump(
    stream: impl Read,
    label: &str,
    stderr: bool,
    sink: &dyn OutputSink,
    log: &Mutex<Option<std::fs::File>>,
) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => break,
            Ok(_) => {
                if let Ok(mut guard) = log.lock()
                    && let Some(file) = guard.as_mut()
                {
                    let _ = file.write_all(&buf);
                }
                let text = String::from_utf8_lossy(&buf);
                sink.line(label, text.trim_end_matches(['\n', '\r']), stderr);
            }
        }
    }
}

/// A sink that drops output (for tests and quiet runs).
pub struct Discard;

impl OutputSink for Discard {
    fn line(&self, _: &str, _: &str, _: bool) {}
}

/// Shared cancellation flag.
pub type Cancel = Arc<AtomicBool>;

#[cfg(test)]
mod tests {
    use super::*;

    fn job(cmds: &[&str], timeout: Option<Duration>, dir: &std::path::Path) -> Job {
        Job {
            label: "t".into(),
            cmds: cmds.iter().map(|c| (*c).to_owned()).collect(),
            cwd: dir.to_path_buf(),
            env: vec![("GREETING".into(), "hi".into())],
            timeout,
            retries: 0,
            log: dir.join("log"),
            supervisor: None,
        }
    }

    #[test]
    fn runs_logs_fails_and_times_out() {
        let dir = tempfile::tempdir().unwrap();
        let flag = AtomicBool::new(false);
        assert_eq!(
            run(&job(&["echo $GREETING", "echo two >&2"], None, dir.path()), &Discard, &flag),
            Outcome::Success
        );
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(log.contains("hi\n") && log.contains("two\n"), "{log}");
        match run(&job(&["no-such-command-xyz"], None, dir.path()), &Discard, &flag) {
            Outcome::Failed(m) => assert!(m.contains("command not found"), "{m}"),
            other => panic!("{other:?}"),
        }
        let started = Instant::now();
        let outcome = run(
            &job(&["sleep 30 & sleep 30"], Some(Duration::from_millis(200)), dir.path()),
            &Discard,
            &flag,
        );
        assert!(matches!(outcome, Outcome::TimedOut(_)), "{outcome:?}");
        assert!(started.elapsed() < Duration::from_secs(5));
        // Retries run the commands again from the first; the third attempt succeeds.
        let mut flaky = job(
            &["n=$(cat tries 2>/dev/null || echo 0); echo $((n+1)) > tries; test $n -ge 2"],
            None,
            dir.path(),
        );
        flaky.retries = 2;
        assert_eq!(run(&flaky, &Discard, &flag), Outcome::Success);
        assert_eq!(std::fs::read_to_string(dir.path().join("tries")).unwrap().trim(), "3");
        flaky.retries = 0;
        std::fs::remove_file(dir.path().join("tries")).unwrap();
        assert!(matches!(run(&flaky, &Discard, &flag), Outcome::Failed(_)));
        flag.store(true, Ordering::Relaxed);
        assert_eq!(run(&job(&["sleep 30"], None, dir.path()), &Discard, &flag), Outcome::Interrupted);
    }
}
