//! A hostile clone, remote or `cairn.yaml` cannot make Cairn write, delete or read outside
//! the repository, or hand out corrupt bytes; a killed run leaves nothing behind that matters.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::Path;

use common::TestRepo;

fn outside_dir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_clone_whose_history_puts_a_link_where_a_tracked_directory_goes_writes_nothing_outside() {
    let origin = TestRepo::new();
    let remote = outside_dir();
    origin.write("data/raw/authorized_keys", b"ssh-ed25519 AAAA attacker\n");
    origin.write("data/raw/notes.txt", b"hello\n");
    origin.ok(&["add", "data/raw"]);
    origin.ok(&["remote", "add", "origin", remote.path().to_str().unwrap(), "--default"]);
    origin.ok(&["push"]);
    // The attacker commits a link where the tracked directory goes, next to its pointer.
    let victim = outside_dir();
    std::fs::remove_dir_all(origin.path("data/raw")).unwrap();
    symlink(victim.path(), origin.path("data/raw")).unwrap();
    origin.git(&["add", "-A"]);
    origin.git(&["add", "-f", "data/raw"]);
    origin.git(&["commit", "-q", "-m", "hostile"]);

    let clone = TestRepo::clone_of(&origin);
    assert!(std::fs::symlink_metadata(clone.path("data/raw")).unwrap().file_type().is_symlink());
    for command in [&["pull"][..], &["checkout"], &["checkout", "--force"]] {
        let stderr = clone.fail(1, command);
        assert!(stderr.contains("symbolic link") && stderr.contains("outside the repository"), "{stderr}");
        assert!(stderr.contains("data/raw"), "{stderr}");
        assert!(entries(victim.path()).is_empty(), "{command:?} wrote {:?}", entries(victim.path()));
    }
    // A link in a leading component of a pipeline output is refused the same way when the
    // run cache restores it.
    let repo = TestRepo::new();
    repo.write("cairn.yaml", "stages:\n  train:\n    cmd: mkdir -p models && echo w > models/model.bin\n    outs: [models/model.bin]\n");
    repo.ok(&["run"]);
    std::fs::remove_dir_all(repo.path("models")).unwrap();
    symlink(victim.path(), repo.path("models")).unwrap();
    for command in [&["run"][..], &["checkout"]] {
        let stderr = repo.fail(1, command);
        assert!(stderr.contains("models") && stderr.contains("outside the repository"), "{stderr}");
        assert!(entries(victim.path()).is_empty(), "{command:?}: {:?}", entries(victim.path()));
    }
}

#[test]
fn links_inside_the_repository_are_followed() {
    let repo = TestRepo::new();
    repo.write("data/raw/a.txt", b"a\n");
    repo.ok(&["add", "data/raw"]);
    std::fs::remove_dir_all(repo.path("data/raw")).unwrap();
    std::fs::create_dir_all(repo.path("store")).unwrap();
    symlink("../store", repo.path("data/raw")).unwrap();
    repo.ok(&["checkout"]);
    assert_eq!(repo.read("store/a.txt"), b"a\n");
    // But never into Git's or Cairn's own directories.
    std::fs::remove_file(repo.path("data/raw")).unwrap();
    symlink("../.git", repo.path("data/raw")).unwrap();
    let stderr = repo.fail(1, &["checkout", "--force"]);
    assert!(stderr.contains("inside Git's own directory"), "{stderr}");
    assert!(!repo.exists(".git/a.txt"));
}

#[test]
fn adding_a_link_that_leaves_the_repository_needs_a_flag() {
    let repo = TestRepo::new();
    let outside = outside_dir();
    std::fs::write(outside.path().join("secret.txt"), b"private\n").unwrap();
    symlink(outside.path().join("secret.txt"), repo.path("secret.txt")).unwrap();
    let stderr = repo.fail(1, &["add", "secret.txt"]);
    assert!(stderr.contains("outside the repository"), "{stderr}");
    assert!(stderr.contains("--follow-external-symlinks"), "{stderr}");
    assert!(!repo.exists("secret.txt.cairn"));
    // Inside a tracked directory too.
    repo.write("data/a.txt", b"a");
    symlink(outside.path(), repo.path("data/escape")).unwrap();
    let stderr = repo.fail(1, &["add", "data"]);
    assert!(stderr.contains("data/escape"), "{stderr}");
    assert!(repo.objects().is_empty(), "nothing was stored");
    // Asked for explicitly, it is stored.
    repo.ok(&["add", "--follow-external-symlinks", "secret.txt"]);
    assert!(repo.exists("secret.txt.cairn"));
    // A cloned repository cannot turn that on for its user.
    std::fs::write(repo.path(".cairn/config"), "[core]\nfollow-external-symlinks = true\n").unwrap();
    let stderr = repo.fail(1, &["status"]);
    assert!(stderr.contains("cairn config --user core.follow-external-symlinks"), "{stderr}");
}

#[test]
fn reserved_paths_are_never_outputs() {
    let repo = TestRepo::new();
    repo.write("data.csv", b"x\n");
    repo.ok(&["add", "data.csv"]);
    repo.commit_all("data");
    for (out, why) in [
        (".git", "belongs to Git"),
        (".git/hooks/pre-commit", "belongs to Git"),
        (".cairn", "belongs to Cairn"),
        (".cairn/config", "belongs to Cairn"),
        ("cairn.yaml", "pipeline's own file"),
        ("cairn.lock", "pipeline's own file"),
        ("data.csv.cairn", "pointer file"),
        (".", "repository root"),
    ] {
        repo.write(
            "cairn.yaml",
            format!("stages:\n  ok:\n    cmd: echo ok\n  evil:\n    cmd: echo hi\n    outs: [\"{out}\"]\n"),
        );
        let stderr = repo.fail(1, &["run"]);
        assert!(stderr.contains("cairn.yaml:") && stderr.contains("stage `evil`"), "{out}: {stderr}");
        assert!(stderr.contains(why), "{out}: {stderr}");
        assert!(repo.exists(".git/HEAD") && repo.exists(".cairn/config") && repo.exists("data.csv.cairn"));
    }
}

#[test]
fn an_output_behind_a_link_out_of_the_repository_is_not_deleted() {
    let repo = TestRepo::new();
    let outside = outside_dir();
    std::fs::write(outside.path().join("victim.txt"), b"precious\n").unwrap();
    symlink(outside.path(), repo.path("lnk")).unwrap();
    repo.write("cairn.yaml", "stages:\n  evil:\n    cmd: echo hi\n    outs: [lnk/victim.txt]\n");
    let stderr = repo.fail(1, &["run"]);
    assert!(stderr.contains("lnk") && stderr.contains("outside the repository"), "{stderr}");
    assert_eq!(std::fs::read(outside.path().join("victim.txt")).unwrap(), b"precious\n");
    // A datum stage whose output directory is such a link is refused the same way.
    std::fs::write(outside.path().join("x.png"), b"keep").unwrap();
    repo.write("images/a.png", b"a");
    repo.write("cairn.yaml", "stages:\n  thumbs:\n    foreach: {glob: \"images/*.png\"}\n    cmd: cp ${item} ${out}/${item.name}\n    outs: [lnk/thumbs]\n");
    let stderr = repo.fail(1, &["run"]);
    assert!(stderr.contains("outside the repository"), "{stderr}");
    assert_eq!(entries(outside.path()), ["victim.txt", "x.png"]);
}

#[test]
fn a_corrupt_cache_object_is_never_checked_out_and_status_says_so() {
    for strategy in ["copy", "hardlink", "symlink", "reflink,copy"] {
        let repo = TestRepo::new();
        repo.ok(&["config", "cache.link", strategy]);
        repo.write("data/a.csv", b"id,value\n1,10\n");
        repo.write("data/b.csv", b"id,value\n2,20\n");
        repo.ok(&["add", "data"]);
        std::fs::remove_dir_all(repo.path("data")).unwrap();
        // Flip one bit of one object.
        let objects = repo.objects();
        let object = objects
            .iter()
            .find(|o| std::fs::read(o).unwrap() == b"id,value\n1,10\n")
            .expect("a.csv's object")
            .clone();
        std::fs::set_permissions(&object, std::fs::Permissions::from_mode(0o644)).unwrap();
        let mut bytes = std::fs::read(&object).unwrap();
        bytes[10] ^= 1;
        std::fs::write(&object, &bytes).unwrap();
        let stderr = repo.fail(1, &["checkout"]);
        assert!(stderr.contains("is corrupt"), "{strategy}: {stderr}");
        assert!(stderr.contains("a.csv"), "{strategy}: {stderr}");
        assert!(stderr.contains("hint: "), "{strategy}: {stderr}");
        assert!(!repo.exists("data/a.csv"), "{strategy}: corrupt bytes reached the work tree");
        let status = repo.json(&["status", "--json"]);
        let text = status.to_string();
        assert!(!text.contains("\"up to date\"") && text.contains("a.csv"), "{strategy}: {text}");
        // `cat` refuses too.
        let stderr = repo.fail(1, &["cat", "data/a.csv"]);
        assert!(stderr.contains("corrupt"), "{strategy}: {stderr}");
    }
}

#[test]
fn data_files_named_like_pointers_inside_a_tracked_directory_are_data() {
    let repo = TestRepo::new();
    repo.write("data/notes.cairn", b"not a pointer\n");
    repo.write("data/x.csv", b"1\n");
    repo.ok(&["add", "data"]);
    let listed = repo.ok(&["ls", "data"]);
    assert!(listed.contains("notes.cairn"), "{listed}");
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    repo.ok(&["checkout"]);
    assert_eq!(repo.read("data/notes.cairn"), b"not a pointer\n");
    let status = repo.json(&["status", "--json"]);
    assert!(!status.to_string().contains("modified"), "{status}");
}

#[test]
fn the_user_config_is_private() {
    let repo = TestRepo::new();
    repo.ok(&["config", "--user", "core.jobs", "2"]);
    let path = repo.home.join(".config/cairn/config.toml");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = repo.run(&["status"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning:") && stderr.contains("mode 600"), "{stderr}");
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

/// Pseudo-random kill points, different on every run; the seed is printed so a failure can
/// be replayed with `CAIRN_KILL_SEED`.
fn kill_points(count: usize, max_ms: u64) -> Vec<u64> {
    let mut seed: u64 =
        std::env::var("CAIRN_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
        });
    eprintln!("kill points from CAIRN_KILL_SEED={seed}");
    (0..count)
        .map(|_| {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (seed >> 33) % max_ms
        })
        .collect()
}

/// Whether `pid` is a live process (a zombie waiting to be reaped is not).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => false,
        Ok(stat) => !stat[stat.rfind(')').unwrap() + 1..].trim_start().starts_with('Z'),
    }
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !done() {
        assert!(std::time::Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn pids(file: &Path) -> Vec<u32> {
    std::fs::read_to_string(file).unwrap_or_default().lines().filter_map(|l| l.trim().parse().ok()).collect()
}

fn leftovers(root: &Path) -> Vec<std::path::PathBuf> {
    walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".cairn-tmp-"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

fn statuses(repo: &TestRepo) -> Vec<String> {
    let shown = repo.json(&["exp", "show", "--json"]);
    shown.as_array().unwrap().iter().map(|r| r["status"].as_str().unwrap().to_owned()).collect()
}

/// The stage records its shell's and its sleep's pids, then sleeps unless `fast` exists.
fn slow_pipeline(repo: &TestRepo, pid_file: &Path) {
    let pid_file = pid_file.display();
    repo.write("params.yaml", "train:\n  lr: 0.1\n");
    repo.write(
        "cairn.yaml",
        format!(
            "stages:\n  slow:\n    cmd: echo $$ >> {pid_file}; if [ ! -f fast ]; then sleep 30 & echo $! >> {pid_file}; wait; fi; echo lr=${{train.lr}} > out.txt\n    params: [train.lr]\n    outs: [out.txt]\n"
        ),
    );
}

#[test]
fn kill_9_of_cairn_run_at_random_points_leaves_nothing_behind() {
    let repo = TestRepo::new();
    let scratch = outside_dir();
    let pid_file = scratch.path().join("pids");
    slow_pipeline(&repo, &pid_file);
    for (round, delay) in kill_points(4, 1500).into_iter().enumerate() {
        let _ = std::fs::remove_file(&pid_file);
        let _ = std::fs::remove_file(repo.path("fast"));
        // A new param value each round: the run cache cannot answer for the stage.
        repo.write("params.yaml", format!("train:\n  lr: {round}\n"));
        let mut run = repo
            .command(&["run"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        run.kill().unwrap(); // SIGKILL
        run.wait().unwrap();
        // Whatever the stage had started dies with the run.
        let started = pids(&pid_file);
        wait_until("the stage's processes are gone", || started.iter().all(|&p| !alive(p)));
        // The next command that opens the store marks the run KILLED.
        assert!(!statuses(&repo).iter().any(|s| s == "RUNNING"), "delay {delay} ms: {:?}", statuses(&repo));
        // A rerun does the work and leaves a consistent repository.
        repo.write("fast", "");
        repo.ok(&["run"]);
        assert_eq!(repo.read("out.txt"), format!("lr={round}\n").as_bytes(), "delay {delay} ms");
        assert_eq!(statuses(&repo)[0], "FINISHED");
        assert!(leftovers(&repo.root).is_empty(), "{:?}", leftovers(&repo.root));
        std::fs::remove_file(repo.path("out.txt")).unwrap();
        std::fs::remove_file(repo.path("cairn.lock")).unwrap();
    }
}

#[test]
fn kill_9_of_cairn_exp_run_at_random_points_stops_the_experiment_and_lists_its_workspace() {
    let repo = TestRepo::new();
    let scratch = outside_dir();
    let pid_file = scratch.path().join("pids");
    slow_pipeline(&repo, &pid_file);
    repo.commit_all("pipeline");
    for delay in kill_points(3, 2000) {
        let _ = std::fs::remove_file(&pid_file);
        let mut exp = repo
            .command(&["exp", "run", "-S", "train.lr=0.5"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(delay));
        exp.kill().unwrap();
        exp.wait().unwrap();
        let started = pids(&pid_file);
        wait_until("the experiment's processes are gone", || started.iter().all(|&p| !alive(p)));
        // Its `cairn run` (if it had started) stopped and recorded the run; nothing stays RUNNING.
        wait_until("no experiment is RUNNING", || !statuses(&repo).iter().any(|s| s == "RUNNING"));
        // Its workspace, if one was made, belongs to a listed experiment that `exp remove` cleans.
        let shown = repo.json(&["exp", "show", "--json"]);
        let exps = repo.path(".cairn/state/exps");
        for entry in std::fs::read_dir(&exps).into_iter().flatten() {
            let id = entry.unwrap().file_name().to_string_lossy().into_owned();
            assert!(shown.to_string().contains(&id), "workspace {id} of no listed experiment: {shown}");
            repo.ok(&["exp", "remove", &id]);
            assert!(!exps.join(&id).exists());
        }
    }
    // The work tree was never touched, and an experiment still runs to the end.
    assert!(!repo.exists("out.txt"));
    repo.write("fast", "");
    repo.ok(&["exp", "run", "-S", "train.lr=0.5"]);
    assert_eq!(statuses(&repo)[0], "FINISHED");
}

#[test]
fn gitignore_entries_match_exactly_the_tracked_names() {
    use std::os::unix::ffi::OsStrExt;
    let repo = TestRepo::new();
    let special = [
        "new\nline",
        "#hash",
        "!bang",
        "star*",
        "what?",
        "[set]",
        "back\\slash",
        " lead",
        "trail ",
        "both  ",
        "mid dle",
        "tab\tx",
        "semi;colon",
    ];
    // Look-alikes that must stay visible to Git.
    let lookalikes = ["hash", "bang", "starry", "what", "set", "backslash", "lead", "trail", "both", "s"];
    for name in special.iter().chain(&lookalikes) {
        std::fs::create_dir_all(repo.path("data")).unwrap();
        std::fs::write(repo.path("data").join(name), name.as_bytes()).unwrap();
    }
    for name in special {
        let path = repo.path("data").join(name);
        let output = repo.command(&[std::ffi::OsStr::new("add"), path.as_os_str()]).output().unwrap();
        assert!(output.status.success(), "{name:?}: {}", String::from_utf8_lossy(&output.stderr));
    }
    let ignored = |name: &str| {
        let output = std::process::Command::new("git")
            .current_dir(&repo.root)
            .args(["check-ignore", "-q", "--no-index", "--"])
            .arg(std::ffi::OsStr::from_bytes(format!("data/{name}").as_bytes()))
            .status()
            .unwrap();
        output.success()
    };
    for name in special {
        assert!(ignored(name), "{name:?} is tracked by Cairn but not ignored by Git");
        assert!(!ignored(&format!("{name}.cairn")), "the pointer of {name:?} is ignored");
    }
    for name in lookalikes {
        assert!(!ignored(name), "{name:?} is not tracked by Cairn but Git ignores it");
    }
    // Each entry is removed again by `cairn rm`.
    for name in special {
        let path = repo.path("data").join(name);
        let output = repo.command(&[std::ffi::OsStr::new("rm"), path.as_os_str()]).output().unwrap();
        assert!(output.status.success(), "{name:?}: {}", String::from_utf8_lossy(&output.stderr));
        assert!(!ignored(name), "{name:?} is still ignored after `cairn rm`");
    }
}

#[test]
fn secrets_stay_out_of_output_errors_and_the_project_config() {
    let repo = TestRepo::new();
    let remote = outside_dir();
    repo.ok(&["remote", "add", "origin", remote.path().to_str().unwrap(), "--default"]);
    let stderr = repo.fail(1, &["remote", "modify", "origin", "secret-access-key", "hunter2"]);
    assert!(stderr.contains("--user"), "{stderr}");
    assert!(!std::fs::read_to_string(repo.path(".cairn/config")).unwrap().contains("hunter2"));
    repo.ok(&["remote", "modify", "--user", "origin", "secret-access-key", "hunter2"]);
    repo.ok(&["remote", "modify", "--user", "origin", "session-token", "hunter2"]);
    let config = repo.home.join(".config/cairn/config.toml");
    assert_eq!(std::fs::metadata(&config).unwrap().permissions().mode() & 0o777, 0o600);
    let listed = repo.ok(&["remote", "list", "--json"]);
    assert!(listed.contains("secret-access-key") && !listed.contains("hunter2"), "{listed}");
    repo.ok(&["config", "meta.url", "postgres://ada:hunter2@127.0.0.1:1/cairn"]);
    let listed = repo.ok(&["config", "--list"]);
    assert!(listed.contains("meta.url") && !listed.contains("hunter2"), "{listed}");
    let output = repo.run(&["exp", "show", "--json"]);
    let all =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success() && all.contains("127.0.0.1") && !all.contains("hunter2"), "{all}");
    repo.ok(&["config", "meta.url", "mysql://ada:hunter2@127.0.0.1:1/cairn"]);
    let output = repo.run(&["exp", "show"]);
    let all =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(!output.status.success() && !all.contains("hunter2"), "{all}");
}

#[test]
fn a_server_reachable_from_other_machines_must_authenticate() {
    use std::io::{BufRead, BufReader};
    let repo = TestRepo::new();
    // Off loopback without authentication: refused, for every server.
    for command in [&["server"][..], &["ui"], &["serve", "m@production"]] {
        let args = [command, &["--host", "0.0.0.0", "--port", "0"]].concat();
        let err = repo.fail(1, &args);
        assert!(
            err.contains("without authentication") && err.contains("--insecure-no-auth"),
            "{args:?}: {err}"
        );
    }
    // On loopback it starts quietly; off loopback with --auth too; with --insecure-no-auth it
    // starts and says what that means.
    repo.ok(&["user", "add", "admin", "--admin"]);
    for (args, warns) in [
        (&["--host", "127.0.0.1"][..], false),
        (&["--host", "0.0.0.0", "--auth"], false),
        (&["--host", "0.0.0.0", "--insecure-no-auth"], true),
    ] {
        let mut server = repo
            .command(&[&["server", "--port", "0"], args].concat())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut url = String::new();
        BufReader::new(server.stdout.take().unwrap()).read_line(&mut url).unwrap();
        assert!(url.starts_with("http://"), "{args:?}: {url}");
        server.kill().unwrap();
        server.wait().unwrap();
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut server.stderr.take().unwrap(), &mut stderr).unwrap();
        assert_eq!(stderr.contains("without authentication"), warns, "{args:?}: {stderr}");
    }
}

#[test]
fn a_clone_that_commits_a_link_in_place_of_cairns_own_directories_is_refused() {
    let origin = TestRepo::new();
    let victim = outside_dir();
    for dir in [".cairn/state", ".cairn/cache"] {
        let _ = std::fs::remove_dir_all(origin.path(dir));
        symlink(victim.path(), origin.path(dir)).unwrap();
        origin.git(&["add", "-f", dir]);
    }
    origin.git(&["add", "-A"]);
    origin.git(&["commit", "-q", "-m", "hostile"]);
    let clone = TestRepo::clone_of(&origin);
    clone.write("data.csv", b"x\n");
    let stderr = clone.fail(1, &["add", "data.csv"]);
    assert!(stderr.contains("committed to Git in place of Cairn's own directory"), "{stderr}");
    assert!(entries(victim.path()).is_empty(), "{:?}", entries(victim.path()));
}

#[test]
fn following_a_link_out_of_the_repository_never_changes_what_it_points_to() {
    use std::os::unix::fs::MetadataExt;
    let repo = TestRepo::new();
    repo.ok(&["config", "cache.link", "hardlink"]);
    let outside = outside_dir();
    std::fs::write(outside.path().join("shared.csv"), b"a,b\n1,2\n").unwrap();
    std::fs::set_permissions(outside.path().join("shared.csv"), std::fs::Permissions::from_mode(0o644))
        .unwrap();
    let before = std::fs::metadata(outside.path().join("shared.csv")).unwrap();
    repo.write("data/own.csv", b"x\n");
    symlink(outside.path(), repo.path("data/ext")).unwrap();
    symlink("own.csv", repo.path("data/alias.csv")).unwrap();
    repo.ok(&["add", "--follow-external-symlinks", "data"]);
    // The outside file was read, not adopted into the cache or replaced by a link.
    let after = std::fs::metadata(outside.path().join("shared.csv")).unwrap();
    assert_eq!((after.ino(), after.nlink(), after.mode() & 0o777), (before.ino(), 1, 0o644));
    assert_eq!(std::fs::read(outside.path().join("shared.csv")).unwrap(), b"a,b\n1,2\n");
    // No cache object is a symbolic link (an in-repository link is stored by its content).
    for object in repo.objects() {
        assert!(!std::fs::symlink_metadata(&object).unwrap().file_type().is_symlink(), "{object:?}");
    }
    assert!(repo.ok(&["ls", "data"]).contains("ext/shared.csv"));
}
