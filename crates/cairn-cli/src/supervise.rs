//! `cairn __supervise USAGE-FILE PROGRAM ARGS...`: how `cairn run` runs and measures a
//! stage's command (its CPU time and peak memory), and makes sure it never outlives the run.

use std::process::ExitCode;

use crate::failure;

/// Runs a program, waits for it, writes `CPU-ms PEAK-RSS-KiB` of everything it ran to the
/// usage file, and ends the way the program ended (same exit code, or same signal).
pub fn supervise(args: &[std::ffi::OsString]) -> ExitCode {
    let [usage_file, program, rest @ ..] = args else {
        eprintln!("error: usage: cairn __supervise USAGE-FILE PROGRAM [ARGS...]");
        return ExitCode::from(failure::EXIT_USAGE);
    };
    // Ctrl-C and `cairn run` stopping the process group must not take the supervisor down
    // before the command: it waits, so the command is reaped (not left a zombie) and
    // measured. Caught signals are reset to their defaults in the command.
    let stopped = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let _ = signal_hook::flag::register(signal, stopped.clone());
    }
    // If `cairn run` dies, even by SIGKILL, the kernel sends this supervisor SIGTERM; it
    // then stops the whole process group it leads (the command and everything it started),
    // so no stage outlives its run to race the next one.
    let parent = nix::unistd::getppid();
    let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
    let orphaned = move || nix::unistd::getppid() != parent;
    if orphaned() {
        return ExitCode::from(128 + 15);
    }
    let mut child = match std::process::Command::new(program).args(rest).spawn() {
        Ok(child) => child,
        Err(e) => {
            eprintln!("error: cannot run `{}`: {e}", program.to_string_lossy());
            return ExitCode::from(127);
        }
    };
    // The wait runs on its own thread so the command's exit is seen at once, while this
    // one watches for the parent's death.
    let (exited, exit) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = exited.send(child.wait());
    });
    let status = loop {
        match exit.recv_timeout(std::time::Duration::from_millis(50)) {
            Ok(Ok(status)) => break status,
            Ok(Err(e)) => {
                eprintln!("error: lost track of `{}`: {e}", program.to_string_lossy());
                return ExitCode::from(1);
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return ExitCode::from(1),
        }
        if stopped.load(std::sync::atomic::Ordering::Relaxed) && orphaned() {
            stop_own_group(&exit);
        }
    };
    if let Ok(usage) = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN) {
        let ms = |t: nix::sys::time::TimeVal| t.tv_sec() * 1000 + t.tv_usec() / 1000;
        let cpu_ms = ms(usage.user_time()) + ms(usage.system_time());
        let _ = std::fs::write(usage_file, format!("{cpu_ms} {}\n", usage.max_rss()));
    }
    // A command killed by a signal is reported the shell's way: 128 + the signal.
    use std::os::unix::process::ExitStatusExt;
    let code = status.code().or_else(|| status.signal().map(|s| 128 + s)).unwrap_or(1);
    ExitCode::from(code.clamp(0, 255) as u8)
}

/// The supervisor's parent is gone: SIGTERM to its process group, SIGKILL after a grace
/// period. The group includes the supervisor, which is why it ignores the SIGTERM itself.
fn stop_own_group<T>(exit: &std::sync::mpsc::Receiver<T>) -> ! {
    use nix::sys::signal::{Signal, killpg};
    let group = nix::unistd::getpgrp();
    let _ = killpg(group, Signal::SIGTERM);
    let _ = exit.recv_timeout(std::time::Duration::from_secs(3));
    // Whatever else the command started in its group goes too, and this process with it.
    let _ = killpg(group, Signal::SIGKILL);
    std::process::exit(128 + 15)
}
