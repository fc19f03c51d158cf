//! End-to-end tests of the `cairn` binary in temporary Git repositories.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common::{TestRepo, make_tree, snapshot};

#[test]
fn init_needs_git_and_is_idempotent() {
    let outside = TestRepo::bare();
    let stderr = outside.fail(1, &["init"]);
    assert!(stderr.contains("is not inside a Git work tree"), "{stderr}");
    assert!(stderr.contains("hint: ") && stderr.contains("git init"), "{stderr}");

    let repo = TestRepo::new();
    assert!(repo.path(".cairn/config").is_file());
    assert!(repo.path(".cairn/cache/objects-v1").is_dir());
    assert!(repo.path(".cairn/state").is_dir());
    let ignore = String::from_utf8(repo.read(".cairn/.gitignore")).unwrap();
    assert!(ignore.contains("/cache/") && ignore.contains("/state/") && ignore.contains("/predictions/"));
    repo.ok(&["config", "core.jobs", "2"]);
    let again = repo.ok(&["init"]);
    assert!(again.contains("already initialized"), "{again}");
    assert_eq!(repo.ok(&["config", "core.jobs"]).trim(), "2", "init again keeps the config");
    // Git sees the config but not the cache.
    let status = repo.git(&["status", "--porcelain", "--untracked-files=all"]);
    assert!(status.contains(".cairn/config") && !status.contains("cache"), "{status}");

    // Commands other than init need an initialized repository.
    let plain = TestRepo::bare();
    plain.git(&["init", "-q"]);
    let stderr = plain.fail(1, &["status"]);
    assert!(stderr.contains("not a Cairn repository") && stderr.contains("cairn init"), "{stderr}");
}

#[test]
fn add_writes_pointer_gitignore_and_read_only_objects() {
    let repo = TestRepo::new();
    make_tree(&repo, "data/raw", 20, 3);
    repo.write("model.onnx", b"weights");
    // Files modified within 50 ms of hashing are not trusted to the stat cache ("racy").
    std::thread::sleep(std::time::Duration::from_millis(100));
    let out = repo.ok(&["add", "data/raw", "model.onnx"]);
    assert!(out.contains("recorded data/raw: 20 file(s)"), "{out}");

    let pointer = String::from_utf8(repo.read("data/raw.cairn")).unwrap();
    assert!(pointer.contains("format: 1\nkind: directory\ndigest: blake3:"), "{pointer}");
    assert!(pointer.contains("files: 20\n"), "{pointer}");
    let file_pointer = String::from_utf8(repo.read("model.onnx.cairn")).unwrap();
    let weights_digest = format!("digest: blake3:{}", blake3_hex(b"weights"));
    assert!(file_pointer.contains(&weights_digest), "{file_pointer}");
    assert_eq!(String::from_utf8(repo.read("data/.gitignore")).unwrap(), "/raw\n");
    assert_eq!(String::from_utf8(repo.read(".gitignore")).unwrap(), "/model.onnx\n");

    // 20 files + 1 manifest + model; every object read-only and named by its hash.
    let objects = repo.objects();
    assert_eq!(objects.len(), 22);
    for object in &objects {
        assert_eq!(std::fs::metadata(object).unwrap().permissions().mode() & 0o222, 0);
        let name: String = object
            .iter()
            .rev()
            .take(2)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .map(|s| s.to_string_lossy().into_owned())
            .collect();
        assert_eq!(name, blake3_hex(&std::fs::read(object).unwrap()));
    }
    // Git sees pointers, not data.
    let status = repo.git(&["status", "--porcelain", "--untracked-files=all"]);
    assert!(status.contains("data/raw.cairn") && !status.contains("data/raw/"), "{status}");

    // Adding again changes nothing and hashes nothing.
    let json = repo.json(&["add", "data/raw", "--json"]);
    assert_eq!(json[0]["changed"], false);
    assert_eq!(json[0]["hashed"], 0);
    assert_eq!(json[0]["new_objects"], 0);
}

fn blake3_hex(bytes: &[u8]) -> String {
    cairn_hash::hash_bytes(bytes).hex()
}

#[test]
fn status_reports_changes_per_file_and_commit_records_them() {
    let repo = TestRepo::new();
    make_tree(&repo, "data", 10, 5);
    repo.ok(&["add", "data"]);
    assert!(repo.ok(&["status"]).contains("all up to date"));

    repo.write("data/d00/f00000.bin", b"changed");
    repo.write("data/extra.csv", b"a,b\n");
    std::fs::remove_file(repo.path("data/d01/f00001.bin")).unwrap();
    let text = repo.ok(&["status"]);
    assert!(text.contains("modified: data/d00/f00000.bin"), "{text}");
    assert!(text.contains("added:    data/extra.csv"), "{text}");
    assert!(text.contains("deleted:  data/d01/f00001.bin"), "{text}");
    let json = repo.json(&["status", "--json"]);
    let changes = json["data"][0]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 3);

    let before = String::from_utf8(repo.read("data.cairn")).unwrap();
    let out = repo.ok(&["commit"]);
    assert!(out.contains("recorded data: 10 file(s)"), "{out}");
    assert_ne!(before, String::from_utf8(repo.read("data.cairn")).unwrap());
    assert!(repo.ok(&["status"]).contains("all up to date"));
    // Committing a path nobody tracks is an error with a hint.
    repo.write("loose.txt", b"x");
    let stderr = repo.fail(1, &["commit", "loose.txt"]);
    assert!(stderr.contains("is not tracked") && stderr.contains("cairn add"), "{stderr}");
    let stderr = repo.fail(1, &["status", "loose.txt"]);
    assert!(stderr.contains("is not tracked"), "{stderr}");
    assert!(repo.ok(&["status", "data/d00"]).contains("1 tracked path(s), all up to date"));
}

#[test]
fn checkout_restores_versions_across_git_history() {
    let repo = TestRepo::new();
    make_tree(&repo, "data", 12, 7);
    repo.write("labels.csv", b"v1\n");
    repo.ok(&["add", "data", "labels.csv"]);
    repo.commit_all("v1");
    let v1 = snapshot(&repo.path("data"));

    repo.write("data/d00/f00000.bin", b"second version");
    repo.write("data/new/file.txt", b"new");
    std::fs::remove_file(repo.path("data/d02/f00002.bin")).unwrap();
    repo.write("labels.csv", b"v2\n");
    repo.ok(&["commit"]);
    repo.commit_all("v2");
    let v2 = snapshot(&repo.path("data"));
    assert_ne!(v1, v2);

    repo.git(&["checkout", "-q", "HEAD~1"]);
    let text = repo.ok(&["status"]);
    assert!(text.contains("modified"), "pointers moved, data not yet: {text}");
    repo.ok(&["checkout"]);
    assert_eq!(snapshot(&repo.path("data")), v1);
    assert_eq!(repo.read("labels.csv"), b"v1\n");
    assert!(!repo.exists("data/new"), "directories emptied by checkout are removed");

    repo.git(&["checkout", "-q", "main"]);
    repo.ok(&["checkout"]);
    assert_eq!(snapshot(&repo.path("data")), v2);
    assert!(repo.ok(&["status"]).contains("all up to date"));

    // Deleted data comes back.
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    let json = repo.json(&["checkout", "data", "--json"]);
    assert_eq!(json[0]["written"], 12);
    assert_eq!(snapshot(&repo.path("data")), v2);
}

#[test]
fn checkout_switches_a_path_between_file_and_directory() {
    let repo = TestRepo::new();
    repo.write("data/a.txt", b"inside a directory");
    repo.ok(&["add", "data"]);
    repo.commit_all("directory");
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    repo.write("data", b"now a single file");
    repo.ok(&["add", "data"]);
    repo.commit_all("file");

    repo.git(&["checkout", "-q", "HEAD~1"]);
    repo.ok(&["checkout"]);
    assert_eq!(repo.read("data/a.txt"), b"inside a directory");
    repo.git(&["checkout", "-q", "main"]);
    repo.ok(&["checkout"]);
    assert_eq!(repo.read("data"), b"now a single file");
    assert!(repo.ok(&["status"]).contains("all up to date"));
}

#[test]
fn checkout_refuses_to_lose_uncommitted_changes() {
    let repo = TestRepo::new();
    repo.write("data/a.txt", b"committed");
    repo.ok(&["add", "data"]);
    repo.write("data/a.txt", b"precious edit");
    let stderr = repo.fail(1, &["checkout"]);
    assert!(stderr.contains("would overwrite") && stderr.contains("data/a.txt"), "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(repo.read("data/a.txt"), b"precious edit", "nothing changed");

    repo.ok(&["checkout", "--force"]);
    assert_eq!(repo.read("data/a.txt"), b"committed");
}

#[test]
fn diff_between_revisions_and_against_the_work_tree() {
    let repo = TestRepo::new();
    repo.write("data/keep.txt", b"same");
    repo.write("data/change.txt", b"old");
    repo.write("data/gone.txt", b"bye");
    repo.ok(&["add", "data"]);
    repo.commit_all("one");
    repo.git(&["tag", "v1"]);
    repo.write("data/change.txt", b"newer");
    std::fs::remove_file(repo.path("data/gone.txt")).unwrap();
    repo.write("data/added.txt", b"hi");

    let text = repo.ok(&["diff"]);
    assert!(text.contains("modified  data/change.txt  (3 B -> 5 B)"), "{text}");
    assert!(text.contains("deleted   data/gone.txt  (3 B)"), "{text}");
    assert!(text.contains("added     data/added.txt  (2 B)"), "{text}");
    assert!(text.contains("1 added, 1 modified, 1 deleted"), "{text}");

    repo.ok(&["commit"]);
    repo.commit_all("two");
    let json = repo.json(&["diff", "v1", "HEAD", "--json"]);
    let changes: Vec<(String, String)> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["path"].as_str().unwrap().to_owned(), e["change"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(
        changes,
        [
            ("data/added.txt".into(), "added".into()),
            ("data/change.txt".into(), "modified".into()),
            ("data/gone.txt".into(), "deleted".into())
        ]
    );
    assert!(repo.ok(&["diff", "HEAD"]).contains("0 added, 0 modified, 0 deleted"));
    let stderr = repo.fail(1, &["diff", "no-such-rev"]);
    assert!(stderr.contains("unknown Git revision `no-such-rev`"), "{stderr}");
}

#[test]
fn ls_and_cat_read_any_revision() {
    let repo = TestRepo::new();
    repo.write("data/x.csv", b"first\n");
    repo.write("data/sub/y.csv", b"y\n");
    repo.ok(&["add", "data"]);
    repo.commit_all("one");
    repo.write("data/x.csv", b"second\n");
    repo.ok(&["commit"]);
    repo.commit_all("two");

    let listing = repo.ok(&["ls"]);
    assert!(listing.contains("data/x.csv") && listing.contains("data/sub/y.csv"), "{listing}");
    let json = repo.json(&["ls", "data/sub", "--json"]);
    assert_eq!(json.as_array().unwrap().len(), 1);
    assert_eq!(json[0]["size"], 2);

    let now = repo.run(&["cat", "data/x.csv"]);
    assert_eq!(now.stdout, b"second\n");
    let then = repo.run(&["cat", "data/x.csv", "--rev", "HEAD~1"]);
    assert_eq!(then.stdout, b"first\n");
    // From a subdirectory, paths are relative to it.
    let mut sub = repo.command(&["cat", "x.csv", "--rev", "HEAD~1"]);
    sub.current_dir(repo.path("data"));
    assert_eq!(sub.output().unwrap().stdout, b"first\n");

    let stderr = repo.fail(1, &["cat", "data/sub"]);
    assert!(stderr.contains("is a tracked directory"), "{stderr}");
    let stderr = repo.fail(1, &["cat", "data/nope.csv"]);
    assert!(stderr.contains("not a tracked file"), "{stderr}");
}

#[test]
fn rm_stops_tracking_and_keeps_the_data() {
    let repo = TestRepo::new();
    repo.ok(&["config", "cache.link", "hardlink,copy"]);
    repo.write("data/a.txt", b"A");
    repo.write("notes.txt", b"keep me");
    repo.write(".gitignore", b"*.log\n");
    repo.ok(&["add", "data", "notes.txt"]);
    repo.ok(&["rm", "data", "notes.txt"]);
    assert!(!repo.exists("data.cairn") && !repo.exists("notes.txt.cairn"));
    assert_eq!(repo.read("data/a.txt"), b"A");
    assert!(
        !repo.exists("data/.gitignore")
            || !String::from_utf8(repo.read(".gitignore")).unwrap().contains("/data")
    );
    assert_eq!(String::from_utf8(repo.read(".gitignore")).unwrap(), "*.log\n");
    // The data is an ordinary writable file again, not a link into the cache.
    let meta = std::fs::metadata(repo.path("notes.txt")).unwrap();
    assert_eq!(meta.nlink(), 1);
    assert!(!meta.permissions().readonly());
    let stderr = repo.fail(1, &["rm", "data"]);
    assert!(stderr.contains("is not tracked"), "{stderr}");
}

#[test]
fn link_strategies_protect_the_cache_and_unprotect_restores_editing() {
    for strategy in ["hardlink", "symlink"] {
        let repo = TestRepo::new();
        repo.ok(&["config", "cache.link", strategy]);
        repo.write("data/a.bin", b"payload");
        repo.write("data/run.sh", b"#!/bin/sh\n");
        std::fs::set_permissions(repo.path("data/run.sh"), std::fs::Permissions::from_mode(0o755)).unwrap();
        repo.ok(&["add", "data"]);
        let link = std::fs::symlink_metadata(repo.path("data/a.bin")).unwrap();
        match strategy {
            "hardlink" => assert_eq!(link.nlink(), 2, "workspace file shares the object's inode"),
            _ => assert!(link.file_type().is_symlink()),
        }
        assert!(std::fs::metadata(repo.path("data/a.bin")).unwrap().permissions().readonly());
        // Executables are copied, not linked: the shared object cannot carry their mode.
        let exe = std::fs::symlink_metadata(repo.path("data/run.sh")).unwrap();
        assert!(exe.file_type().is_file() && exe.nlink() == 1 && exe.mode() & 0o100 != 0);
        assert!(repo.ok(&["status"]).contains("all up to date"));

        std::fs::remove_dir_all(repo.path("data")).unwrap();
        repo.ok(&["checkout"]);
        assert_eq!(repo.read("data/a.bin"), b"payload");
        assert_eq!(std::fs::metadata(repo.path("data/run.sh")).unwrap().mode() & 0o111, 0o111);

        let out = repo.ok(&["unprotect", "data/a.bin"]);
        assert!(out.contains("1 file(s) made editable"), "{out}");
        let meta = std::fs::symlink_metadata(repo.path("data/a.bin")).unwrap();
        assert!(meta.file_type().is_file() && meta.nlink() == 1 && !meta.permissions().readonly());
        std::fs::write(repo.path("data/a.bin"), b"edited").unwrap();
        repo.ok(&["fsck"]);
        assert!(repo.ok(&["status"]).contains("modified: data/a.bin"));
    }
}

#[test]
fn hardlink_add_adopts_work_tree_files_without_copying() {
    let repo = TestRepo::new();
    repo.ok(&["config", "cache.link", "hardlink,copy"]);
    make_tree(&repo, "data", 50, 13);
    let before = snapshot(&repo.path("data"));
    let inode = std::fs::metadata(repo.path("data/d00/f00000.bin")).unwrap().ino();
    std::thread::sleep(std::time::Duration::from_millis(100)); // out of the racy window
    repo.ok(&["add", "data"]);
    // The work-tree file itself became the read-only object: same inode, two links.
    let meta = std::fs::metadata(repo.path("data/d00/f00000.bin")).unwrap();
    assert_eq!(meta.ino(), inode);
    assert_eq!(meta.nlink(), 2);
    assert!(meta.permissions().readonly());
    assert_eq!(snapshot(&repo.path("data")), before);
    repo.ok(&["fsck"]);
    let json = repo.json(&["add", "data", "--json"]);
    assert_eq!(json[0]["hashed"], 0, "adopted files are in the stat cache");
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    repo.ok(&["checkout"]);
    assert_eq!(snapshot(&repo.path("data")), before);
}

#[test]
fn default_strategy_leaves_editable_copies() {
    let repo = TestRepo::new();
    repo.write("data/a.bin", b"payload");
    repo.ok(&["add", "data"]);
    std::fs::remove_dir_all(repo.path("data")).unwrap();
    repo.ok(&["checkout"]);
    let meta = std::fs::symlink_metadata(repo.path("data/a.bin")).unwrap();
    assert!(meta.file_type().is_file() && meta.nlink() == 1 && !meta.permissions().readonly());
}

#[test]
fn gc_is_a_dry_run_until_forced_and_respects_history() {
    let repo = TestRepo::new();
    repo.write("data.csv", b"version 1");
    repo.ok(&["add", "data.csv"]);
    repo.commit_all("one");
    repo.write("data.csv", b"version 2");
    repo.ok(&["commit"]);
    repo.commit_all("two");
    repo.write("data.csv", b"version 3, never committed to git");
    repo.ok(&["commit"]);
    assert_eq!(repo.objects().len(), 3);

    let dry = repo.ok(&["gc", "--all-commits"]);
    assert!(dry.contains("nothing to remove"), "{dry}");
    // The default keeps HEAD's data as well as the work tree's: only version 1 would go.
    let dry = repo.ok(&["gc"]);
    assert!(dry.contains("would remove 1 object(s)") && dry.contains("--force"), "{dry}");
    assert!(dry.contains("the work tree: 1 pointer(s)") && dry.contains("HEAD and the tips"), "{dry}");
    let dry = repo.ok(&["gc", "--workspace"]);
    assert!(dry.contains("would remove 2 object(s)") && dry.contains("--force --workspace"), "{dry}");
    assert!(dry.contains("not other branches or tags"), "{dry}");
    assert_eq!(repo.objects().len(), 3, "dry run deletes nothing");

    // Restore the second version's pointer, then collect keeping all commits: v1 and v2 stay.
    repo.git(&["checkout", "--", "data.csv.cairn"]);
    let json = repo.json(&["gc", "--all-commits", "--force", "--json"]);
    assert_eq!(json["unreferenced_objects"], 1, "only the never-committed version goes");
    assert_eq!(repo.objects().len(), 2);
    repo.ok(&["checkout", "--force"]);
    assert_eq!(repo.read("data.csv"), b"version 2");
    repo.ok(&["gc", "--force"]);
    assert_eq!(repo.objects().len(), 1);
    let old = repo.fail(1, &["cat", "data.csv", "--rev", "HEAD~1"]);
    assert!(old.contains("missing"), "{old}");
}

#[test]
fn gc_keeps_the_data_of_tags_and_branches_by_default() {
    let repo = TestRepo::new();
    let remote = tempfile::tempdir().unwrap();
    repo.ok(&["remote", "add", "origin", remote.path().to_str().unwrap(), "--default"]);
    repo.write("data.csv", b"version 1");
    repo.ok(&["add", "data.csv"]);
    repo.commit_all("one");
    repo.git(&["tag", "v1"]);
    repo.git(&["branch", "keep-v1"]);
    repo.write("data.csv", b"version 2");
    repo.ok(&["commit"]);
    repo.commit_all("two");
    let json = repo.json(&["gc", "--force", "--json"]);
    assert_eq!(json["unreferenced_objects"], 0, "{json}");
    assert_eq!(repo.ok(&["cat", "data.csv", "--rev", "v1"]), "version 1");
    // Nothing refuses to run afterwards.
    repo.ok(&["push", "--all-tags"]);
    repo.ok(&["gc", "--cloud"]);
    // Asked for, the narrow scope drops the tag's data, and says so first.
    let dry = repo.ok(&["gc", "--workspace"]);
    assert!(dry.contains("would remove 1 object(s)") && dry.contains("not other branches or tags"), "{dry}");
}

#[test]
fn gc_survives_history_whose_data_this_cache_never_had() {
    let repo = TestRepo::new();
    repo.write("data/a.txt", b"teammate's data");
    repo.ok(&["add", "data"]);
    repo.commit_all("their commit");
    // As if the pointer arrived through `git pull` without the data: drop every object.
    for object in repo.objects() {
        std::fs::remove_file(object).unwrap();
    }
    std::fs::remove_file(repo.path("data.cairn")).unwrap();
    repo.commit_all("drop it");
    repo.write("mine.txt", b"mine");
    repo.ok(&["add", "mine.txt"]);
    // Status still works, and says which path cannot be compared.
    repo.git(&["checkout", "-q", "HEAD~1", "--", "data.cairn"]);
    let text = repo.ok(&["status"]);
    assert!(text.contains("data: not in the cache (its manifest was never added or fetched here)"), "{text}");
    assert_eq!(repo.json(&["status", "--json"])["data"][0]["not_in_cache"], true);
    std::fs::remove_file(repo.path("data.cairn")).unwrap();
    let output = repo.run(&["gc", "--all-commits"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("data.cairn") && stderr.contains("is not in the cache"), "{stderr}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("nothing to remove"));
}

#[test]
fn fsck_finds_corrupt_and_missing_objects() {
    let repo = TestRepo::new();
    repo.write("data/a.txt", b"aaaa");
    repo.write("data/b.txt", b"bbbb");
    repo.ok(&["add", "data"]);
    assert!(repo.ok(&["fsck"]).contains(": ok"));

    let a = repo.objects().into_iter().find(|p| std::fs::read(p).unwrap() == b"aaaa").unwrap();
    common::make_writable(&a);
    std::fs::write(&a, b"rot!").unwrap();
    let b = repo.objects().into_iter().find(|p| std::fs::read(p).unwrap() == b"bbbb").unwrap();
    std::fs::remove_file(&b).unwrap();
    let output = repo.run(&["fsck"]);
    assert_eq!(output.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("is corrupt"), "{stdout}");
    assert!(stdout.contains("missing from the cache"), "{stdout}");
    let json = repo.run(&["fsck", "--json"]);
    let value: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(value["problems"].as_array().unwrap().len(), 2);
}

#[test]
fn config_levels_keys_and_usage_errors() {
    let repo = TestRepo::new();
    repo.ok(&["config", "--user", "cache.link", "symlink"]);
    repo.write("f.txt", b"x");
    repo.ok(&["add", "f.txt"]);
    assert!(
        std::fs::symlink_metadata(repo.path("f.txt")).unwrap().file_type().is_symlink(),
        "user config applies"
    );
    repo.ok(&["config", "cache.link", "copy"]);
    assert_eq!(repo.ok(&["config", "--list"]), "cache.link = copy\n");
    assert!(repo.home.join(".config/cairn/config.toml").is_file());
    repo.ok(&["config", "--unset", "cache.link"]);
    let stderr = repo.fail(1, &["config", "cache.link"]);
    assert!(stderr.contains("not set"), "{stderr}");

    let stderr = repo.fail(1, &["config", "cache.lnk", "copy"]);
    assert!(stderr.contains("unknown config key `cache.lnk`") && stderr.contains("cache.link"), "{stderr}");
    let stderr = repo.fail(1, &["config", "cache.link", "teleport"]);
    assert!(stderr.contains("invalid value `teleport`"), "{stderr}");
    repo.fail(2, &["frobnicate"]);
    repo.fail(2, &["add"]);
    let help = repo.ok(&["add", "--help"]);
    assert!(help.contains("Examples:"), "{help}");
    // A hand-broken config file is reported with its path.
    std::fs::write(repo.path(".cairn/config"), "[cache\n").unwrap();
    let stderr = repo.fail(1, &["status"]);
    assert!(stderr.contains(".cairn/config") && stderr.contains("not valid TOML"), "{stderr}");
}

#[test]
fn paths_inside_tracked_directories_and_nested_tracking() {
    let repo = TestRepo::new();
    repo.write("data/inner/a.txt", b"a");
    repo.ok(&["add", "data"]);
    let stderr = repo.fail(1, &["add", "data/inner"]);
    assert!(stderr.contains("already tracked as part of") && stderr.contains("cairn commit"), "{stderr}");
    let stderr = repo.fail(1, &["add", "data.cairn"]);
    assert!(stderr.contains("is a pointer file"), "{stderr}");

    let other = TestRepo::new();
    other.write("outer/inner/a.txt", b"a");
    other.ok(&["add", "outer/inner"]);
    let stderr = other.fail(1, &["add", "outer"]);
    assert!(stderr.contains("contains data tracked separately"), "{stderr}");
    let stderr = other.fail(1, &["add", "nope"]);
    assert!(stderr.contains("does not exist"), "{stderr}");
}

#[test]
fn completions_and_the_manual_page_come_from_the_command_definitions() {
    let repo = TestRepo::bare();
    let bash = repo.ok(&["completions", "bash"]);
    assert!(
        bash.contains("_cairn()") && bash.contains("checkout") && bash.contains("--follow-external-symlinks")
    );
    // The script is valid bash.
    let script = repo.root.join("cairn.bash");
    std::fs::write(&script, &bash).unwrap();
    let checked = std::process::Command::new("bash").arg("-n").arg(&script).status().unwrap();
    assert!(checked.success());
    for shell in ["zsh", "fish", "powershell"] {
        assert!(repo.ok(&["completions", shell]).contains("cairn"), "{shell}");
    }
    repo.fail(2, &["completions", "tcsh"]);
    let man = repo.ok(&["man"]);
    assert!(man.contains(".TH cairn 1") && man.contains(".SH NAME") && man.contains("checkout"), "{man}");
    // `cairn config --help` lists every key with its meaning and default.
    let help = repo.ok(&["config", "--help"]);
    for key in ["cache.link", "cache.dir", "core.jobs", "core.lock-timeout", "core.remote", "meta.url"] {
        assert!(help.contains(key), "{key} missing from:\n{help}");
    }
    assert!(help.contains("default: .cairn/state/meta-v1.sqlite"), "{help}");
}

#[test]
fn version_names_the_commit_and_build_date_and_the_git_user_stands_in_for_user() {
    let repo = TestRepo::new();
    let version = repo.ok(&["--version"]);
    // `cairn 0.1.0 (0123456789ab 2026-12-04)`, or `unknown` outside a checkout.
    let inner = version.split_once('(').and_then(|(_, rest)| rest.split_once(')')).map(|(v, _)| v).unwrap();
    let (commit, date) = inner.split_once(' ').unwrap();
    assert!(commit == "unknown" || commit.trim_end_matches("-dirty").len() == 12, "{version}");
    assert!(date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-', "{version}");
    // Without $USER, who registered a model is the Git user, not "unknown".
    repo.git(&["config", "user.name", "Ada Lovelace"]);
    repo.write("params.yaml", "a: 1\n");
    repo.write(
        "cairn.yaml",
        "stages:\n  s:\n    cmd: echo a=${a} > out.txt\n    params: [a]\n    outs: [out.txt]\n",
    );
    repo.ok(&["run"]);
    let shown = repo.json(&["exp", "show", "--json"]);
    assert_eq!(shown[0]["user"], "Ada Lovelace", "{shown}");
}
