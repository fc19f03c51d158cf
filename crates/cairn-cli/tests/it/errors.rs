//! Bad input and hostile conditions: every failure is clear, and nothing is lost or corrupted.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{TestRepo, make_tree, snapshot};

#[test]
fn hand_edited_pointer_with_invalid_yaml() {
    let repo = TestRepo::new();
    repo.write("data.csv", b"a,b\n");
    repo.ok(&["add", "data.csv"]);
    repo.write("data.csv.cairn", b"format: 1\nkind: [file\n");
    for command in [&["status"][..], &["checkout"], &["diff"], &["ls"]] {
        let stderr = repo.fail(1, command);
        assert!(
            stderr.contains("pointer file `") && stderr.contains("data.csv.cairn` is invalid"),
            "{stderr}"
        );
        assert!(stderr.contains("hint: restore the file from Git"), "{stderr}");
    }
    assert_eq!(repo.read("data.csv"), b"a,b\n", "the data is untouched");
    let output = repo.run(&["fsck"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stdout).contains("data.csv.cairn"));
}

#[test]
fn pointer_with_a_wrong_digest() {
    let repo = TestRepo::new();
    repo.write("data.csv", b"a,b\n");
    repo.ok(&["add", "data.csv"]);
    let text = String::from_utf8(repo.read("data.csv.cairn")).unwrap();
    let wrong = format!("blake3:{}", "0".repeat(64));
    let start = text.find("blake3:").unwrap();
    let edited = format!("{}{}{}", &text[..start], wrong, &text[start + 71..]);
    repo.write("data.csv.cairn", edited.as_bytes());
    assert!(repo.ok(&["status"]).contains("modified: data.csv"));
    let stderr = repo.fail(1, &["checkout", "--force"]);
    assert!(stderr.contains("is not in the cache") && stderr.contains(&wrong), "{stderr}");
    assert_eq!(repo.read("data.csv"), b"a,b\n", "nothing was deleted before the failure");
    // A malformed digest is a parse error naming the field.
    repo.write("data.csv.cairn", edited.replace(&wrong, "blake3:xyz").as_bytes());
    let stderr = repo.fail(1, &["status"]);
    assert!(stderr.contains("`digest: blake3:xyz` is invalid"), "{stderr}");
}

#[test]
fn missing_cache_object() {
    let repo = TestRepo::new();
    repo.write("data/a.txt", b"aaa");
    repo.ok(&["add", "data"]);
    for object in repo.objects() {
        std::fs::remove_file(object).unwrap();
    }
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    let stderr = repo.fail(1, &["checkout"]);
    assert!(stderr.contains("data.cairn") && stderr.contains("is not in the cache"), "{stderr}");
    assert!(stderr.contains("hint: "), "{stderr}");
}

#[test]
fn path_outside_the_repository() {
    let repo = TestRepo::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x"), b"x").unwrap();
    let stderr = repo.fail(1, &["add".as_ref(), outside.path().join("x").as_os_str()]);
    assert!(stderr.contains("is outside the repository"), "{stderr}");
    let stderr = repo.fail(1, &["add", "../escape"]);
    assert!(stderr.contains("is outside the repository"), "{stderr}");
    let stderr = repo.fail(1, &["add", ".git/config"]);
    assert!(stderr.contains("which Cairn manages itself"), "{stderr}");
}

#[test]
fn symlink_loop() {
    let repo = TestRepo::new();
    repo.write("data/a.txt", b"a");
    std::os::unix::fs::symlink("..", repo.path("data/up")).unwrap();
    let stderr = repo.fail(1, &["add", "data"]);
    assert!(stderr.contains("symbolic link loop at") && stderr.contains("data/up"), "{stderr}");
    std::fs::remove_file(repo.path("data/up")).unwrap();
    std::os::unix::fs::symlink("self", repo.path("data/self")).unwrap();
    let stderr = repo.fail(1, &["add", "data"]);
    assert!(stderr.contains("symbolic link loop at") && stderr.contains("data/self"), "{stderr}");
    assert!(!repo.exists("data.cairn"));
}

#[test]
fn file_changing_while_it_is_added_is_detected() {
    let repo = TestRepo::new();
    let path = repo.path("data/big.bin");
    repo.write("data/big.bin", vec![7u8; 48 << 20]);
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let path = path.clone();
        std::thread::spawn(move || {
            use std::os::unix::fs::FileExt;
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                file.write_at(&i.to_le_bytes(), (i * 4096) % (48 << 20)).unwrap();
                i += 1;
                std::thread::sleep(Duration::from_micros(200));
            }
        })
    };
    let output = repo.run(&["add", "data"]);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("big.bin` changed while it was being read"), "{stderr}");
    assert!(stderr.contains("hint: wait until"), "{stderr}");
    assert!(!repo.exists("data.cairn"), "no pointer for data that was never captured");
    repo.ok(&["fsck"]);
    // Once the file is quiet, add succeeds and stores exactly what is on disk.
    std::thread::sleep(Duration::from_millis(100));
    repo.ok(&["add", "data"]);
    let expected = std::fs::read(&path).unwrap();
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    repo.ok(&["checkout"]);
    assert!(std::fs::read(&path).unwrap() == expected);
}

#[test]
fn no_space_left_on_the_cache_device() {
    let repo = TestRepo::new();
    let cache = repo.path("small-cache");
    std::fs::create_dir(&cache).unwrap();
    repo.ok(&["config", "cache.dir", "small-cache"]);
    repo.write(".gitignore", b"/small-cache\n");
    make_tree(&repo, "data", 4, 1);
    repo.write("data/big.bin", vec![1u8; 2 << 20]);
    let before = snapshot(&repo.path("data"));
    // A 256 KiB tmpfs over the cache directory, in a private mount namespace.
    let script = r#"mount -t tmpfs -o size=256k tmpfs "$0" && exec "$@""#;
    let mut wrapper: Vec<&std::ffi::OsStr> = ["unshare", "--mount", "--map-root-user", "sh", "-c", script]
        .into_iter()
        .map(|s| s.as_ref())
        .collect();
    wrapper.push(cache.as_os_str());
    let result = repo.command_via(&wrapper, &["add", "data"]).output().expect("unshare runs");
    let stderr = String::from_utf8_lossy(&result.stderr);
    assert_eq!(result.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("No space left on device"), "{stderr}");
    assert!(stderr.contains("hint: free some disk space"), "{stderr}");
    assert!(!repo.exists("data.cairn"), "no pointer to objects that were never written");
    assert_eq!(snapshot(&repo.path("data")), before, "the data is untouched");
    // With room again, the same command completes.
    repo.ok(&["add", "data"]);
    repo.ok(&["fsck"]);
}

#[test]
fn permission_denied_names_the_file() {
    let repo = TestRepo::new();
    repo.write("data/ok.txt", b"fine");
    repo.write("data/secret.txt", b"no");
    std::fs::set_permissions(repo.path("data/secret.txt"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let mut command = repo.command(&["add", "data"]);
    if rustix::process::geteuid().is_root() {
        // Root ignores file modes: run as `nobody`, who owns the repository.
        let top = repo.root.parent().unwrap();
        let status = Command::new("chown").args(["-R", "65534:65534"]).arg(top).status().unwrap();
        assert!(status.success());
        std::fs::set_permissions(repo.path("data/secret.txt"), std::fs::Permissions::from_mode(0o000))
            .unwrap();
        let wrapper: Vec<&std::ffi::OsStr> = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
            .into_iter()
            .map(|s| s.as_ref())
            .collect();
        command = repo.command_via(&wrapper, &["add", "data"]);
    }
    let output = command.output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("data/secret.txt") && stderr.contains("Permission denied"), "{stderr}");
    assert!(stderr.contains("hint: check the permissions"), "{stderr}");
    assert!(!repo.exists("data.cairn"));
}

#[test]
fn odd_and_non_utf8_file_names_round_trip() {
    let repo = TestRepo::new();
    let names: Vec<&[u8]> = vec![
        b"caf\xc3\xa9.txt",
        b"raw-\xff\xfe.bin",
        b"with space.csv",
        b"star*and?[brackets]",
        b"#not-a-comment",
        b"!bang",
        b"line\nbreak",
        b"empty",
    ];
    for (i, name) in names.iter().enumerate() {
        let path = repo.path("data").join(std::ffi::OsStr::from_bytes(name));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, if *name == b"empty" { Vec::new() } else { vec![i as u8; i * 10] }).unwrap();
    }
    let odd_top = PathBuf::from(std::ffi::OsStr::from_bytes(b"top \xff*.bin"));
    std::fs::write(repo.root.join(&odd_top), b"top").unwrap();
    let before = snapshot(&repo.path("data"));
    repo.ok(&["add".as_ref(), "data".as_ref(), odd_top.as_os_str()]);
    // Git ignores the data, even with glob characters and invalid UTF-8 in the name.
    let status = repo.git(&["status", "--porcelain", "--untracked-files=all", "-z"]);
    assert!(status.contains(".cairn\0"), "the pointer is visible: {status:?}");
    assert!(!status.split('\0').any(|e| e.ends_with("*.bin") || e.contains("data/")), "{status:?}");
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    std::fs::remove_file(repo.root.join(&odd_top)).unwrap();
    repo.ok(&["checkout"]);
    assert_eq!(snapshot(&repo.path("data")), before);
    assert_eq!(std::fs::read(repo.root.join(&odd_top)).unwrap(), b"top");
    assert!(repo.ok(&["status"]).contains("all up to date"));
}

#[test]
fn two_adds_at_once_both_succeed() {
    let repo = TestRepo::new();
    make_tree(&repo, "a", 300, 3);
    make_tree(&repo, "b", 300, 5);
    let spawn = |path: &str| {
        repo.command(&["add", path]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap()
    };
    let (first, second) = (spawn("a"), spawn("b"));
    let (first, second) = (first.wait_with_output().unwrap(), second.wait_with_output().unwrap());
    assert!(first.status.success() && second.status.success());
    assert!(repo.exists("a.cairn") && repo.exists("b.cairn"));
    repo.ok(&["fsck"]);
    assert!(repo.ok(&["status"]).contains("2 tracked path(s), all up to date"));
}

#[test]
fn a_held_lock_times_out_with_a_clear_error() {
    let repo = TestRepo::new();
    repo.ok(&["config", "core.lock-timeout", "1"]);
    repo.write("x.txt", b"x");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(repo.path(".cairn/state/lock"))
        .unwrap();
    rustix::fs::flock(&lock, rustix::fs::FlockOperation::LockExclusive).unwrap();
    let stderr = repo.fail(1, &["add", "x.txt"]);
    assert!(stderr.contains("waiting for another cairn process"), "{stderr}");
    assert!(stderr.contains("another Cairn process holds the repository lock"), "{stderr}");
    assert!(stderr.contains("core.lock-timeout"), "{stderr}");
    assert!(!repo.exists("x.txt.cairn"));
    drop(lock);
    repo.ok(&["add", "x.txt"]);
}

fn kill_after(repo: &TestRepo, args: &[&str], delay: Duration) {
    let mut child = repo.command(args).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    std::thread::sleep(delay);
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[test]
fn sigkill_during_add_leaves_a_consistent_store() {
    for delay_ms in [5, 20, 60, 150] {
        let repo = TestRepo::new();
        make_tree(&repo, "data", 1500, 9);
        repo.write("data/big.bin", vec![3u8; 24 << 20]);
        let before = snapshot(&repo.path("data"));
        kill_after(&repo, &["add", "data"], Duration::from_millis(delay_ms));
        // Whatever got stored is valid, and a pointer exists only if complete.
        repo.ok(&["fsck"]);
        assert_eq!(snapshot(&repo.path("data")), before);
        repo.ok(&["add", "data"]);
        repo.ok(&["fsck"]);
        std::fs::remove_dir_all(repo.path("data")).unwrap();
        repo.ok(&["checkout"]);
        assert_eq!(snapshot(&repo.path("data")), before, "delay {delay_ms} ms");
    }
}

#[test]
fn sigkill_during_checkout_then_rerun_completes() {
    for delay_ms in [5, 20, 60, 150] {
        let repo = TestRepo::new();
        make_tree(&repo, "data", 1500, 11);
        repo.write("data/big.bin", vec![4u8; 24 << 20]);
        let before = snapshot(&repo.path("data"));
        repo.ok(&["add", "data"]);
        std::fs::remove_dir_all(repo.path("data")).unwrap();
        kill_after(&repo, &["checkout"], Duration::from_millis(delay_ms));
        // No --force needed: whatever is half-done is content the cache already has.
        repo.ok(&["checkout"]);
        assert_eq!(snapshot(&repo.path("data")), before, "delay {delay_ms} ms");
        assert!(repo.ok(&["status"]).contains("all up to date"));
        repo.ok(&["fsck"]);
    }
}

#[test]
fn an_s3_remote_whose_endpoint_is_down_says_so_even_without_credentials() {
    let repo = TestRepo::new();
    repo.write("f.txt", b"x\n");
    repo.ok(&["add", "f.txt"]);
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0)).unwrap().local_addr().unwrap().port();
    repo.ok(&["remote", "add", "origin", "s3://bucket/prefix", "--default"]);
    repo.ok(&["remote", "modify", "origin", "endpoint", &format!("http://127.0.0.1:{port}")]);
    let stderr = repo.fail(1, &["push"]);
    assert!(stderr.contains("cannot be reached") && stderr.contains(&port.to_string()), "{stderr}");
    assert!(!stderr.contains("credentials work"), "{stderr}");
    assert!(stderr.contains("hint: check the endpoint"), "{stderr}");
}

#[test]
fn adding_what_git_already_tracks_is_refused_and_changes_nothing() {
    let repo = TestRepo::new();
    repo.write("data/train.csv", b"a,b\n1,2\n");
    repo.write("data/raw/part-1.csv", b"x\n1\n");
    repo.git(&["add", "data"]);
    for path in ["data/train.csv", "data/raw", "data"] {
        let stderr = repo.fail(1, &["add", path]);
        assert!(stderr.contains(&format!("{path}` is tracked by Git")), "{stderr}");
        assert!(
            stderr.contains("hint: stop tracking it in Git first with `git rm -r --cached PATH`"),
            "{stderr}"
        );
    }
    assert!(!repo.exists("data/train.csv.cairn") && !repo.exists("data/.gitignore"), "nothing was written");
    assert_eq!(repo.read("data/train.csv"), b"a,b\n1,2\n");
    // Once Git lets go, Cairn takes it.
    repo.git(&["rm", "-r", "-q", "--cached", "data/train.csv"]);
    repo.ok(&["add", "data/train.csv"]);
    assert!(repo.exists("data/train.csv.cairn"));
}
