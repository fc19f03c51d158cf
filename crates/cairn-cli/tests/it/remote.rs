//! Remotes end to end: the `cairn` binary against a local directory and a real S3-protocol
//! server (moto) on 127.0.0.1.

#![allow(clippy::unwrap_used)]

use crate::common;

use std::time::{Duration, Instant};

use common::s3::S3Server;
use common::{TestRepo, make_tree, snapshot};

/// A repository with a tracked directory and a chunked large file, committed.
fn origin_with_data() -> TestRepo {
    let repo = TestRepo::new();
    make_tree(&repo, "data/raw", 300, 7);
    let big: Vec<u8> = (0..(12u32 << 20)).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    repo.write("model.bin", big);
    repo.ok(&["add", "data/raw", "model.bin"]);
    repo
}

fn add_dir_remote(repo: &TestRepo, name: &str, dir: &std::path::Path) {
    repo.ok(&["remote", "add", name, dir.to_str().unwrap(), "--default"]);
}

fn add_s3_remote(repo: &TestRepo, server: &S3Server, bucket: &str) {
    repo.ok(&[
        "remote",
        "add",
        "s3",
        &format!("s3://{bucket}/project"),
        "--default",
        "-o",
        &format!("endpoint={}", server.endpoint),
        "-o",
        "access-key-id=testing",
        "-o",
        "secret-access-key=testing",
        // A stuck test server fails the test in a minute rather than hanging it.
        "-o",
        "timeout=60",
    ]);
}

fn data_of(repo: &TestRepo) -> std::collections::BTreeMap<Vec<u8>, Vec<u8>> {
    let mut all = snapshot(&repo.path("data/raw"));
    all.insert(b"model.bin".to_vec(), repo.read("model.bin"));
    all
}

fn round_trip(origin: &TestRepo) {
    let pushed = origin.json(&["push", "--json"]);
    assert_eq!(pushed["objects_sent"], 302, "300 files, their manifest and the large file: {pushed}");
    assert_eq!(pushed["problems"].as_array().unwrap().len(), 0);
    let again = origin.json(&["push", "--json"]);
    assert_eq!((again["objects_sent"].as_u64(), again["objects_skipped"].as_u64()), (Some(0), Some(302)));

    let clone = TestRepo::clone_of(origin);
    assert!(!clone.exists("data/raw"));
    let pulled = clone.json(&["pull", "--json"]);
    assert_eq!(pulled["objects_fetched"], 302);
    assert_eq!(pulled["files_checked_out"], 301);
    assert_eq!(data_of(&clone), data_of(origin));
    assert!(clone.ok(&["status"]).contains("up to date"));
    clone.ok(&["fsck"]);
    // Small objects arrive in a few local packs, not a cache file each.
    let loose = clone.objects().len();
    assert!(loose < 30 && clone.cached_digests().len() == 302, "{loose} loose objects");

    // A clone whose work tree hard-links the cache gets a file per object to link.
    let linked = TestRepo::clone_of(origin);
    linked.ok(&["config", "cache.link", "hardlink,copy"]);
    linked.ok(&["pull"]);
    assert_eq!(data_of(&linked), data_of(origin));
    assert!(linked.objects().len() >= 301 && !linked.path(".cairn/cache/packs-v1").exists());
}

#[test]
fn directory_remote_round_trip() {
    let origin = origin_with_data();
    let store = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", store.path());
    origin.commit_all("v1");
    round_trip(&origin);
}

#[test]
fn s3_remote_round_trip_and_incremental_push() {
    let server = S3Server::start(&["bucket"]);
    let origin = origin_with_data();
    add_s3_remote(&origin, &server, "bucket");
    origin.commit_all("v1");
    round_trip(&origin);

    // Change 3 files and 1 MiB in the middle of the large one: only that goes up.
    for i in [0, 10, 20] {
        origin.write(format!("data/raw/d{:02}/f{i:05}.bin", i % 7), format!("changed {i}"));
    }
    let mut big = origin.read("model.bin");
    let middle = big.len() / 2;
    for byte in &mut big[middle..middle + (1 << 20)] {
        *byte = byte.wrapping_add(1);
    }
    origin.write("model.bin", &big);
    origin.ok(&["commit"]);
    let pushed = origin.json(&["push", "--json"]);
    assert_eq!(pushed["objects_sent"], 5, "3 files, the new manifest, the large file: {pushed}");
    assert!(pushed["bytes_sent"].as_u64().unwrap() < 8 << 20, "{pushed}");
    assert!(pushed["chunks_deduplicated"].as_u64().unwrap() > 0);
    origin.commit_all("v2");

    let clone = TestRepo::clone_of(&origin);
    clone.ok(&["pull"]);
    assert_eq!(data_of(&clone), data_of(&origin));
    // The old version is still fetchable by revision.
    let fetched = clone.json(&["fetch", "--rev", "HEAD~1", "--json"]);
    assert_eq!(fetched["objects_fetched"], 5);
    clone.git(&["checkout", "-q", "HEAD~1"]);
    clone.ok(&["checkout"]);
    assert_ne!(clone.read("model.bin"), big);
}

#[test]
fn concurrent_pushes_from_two_clones_both_land() {
    let server = S3Server::start(&["shared"]);
    let origin = TestRepo::new();
    origin.write("README", "x");
    add_s3_remote(&origin, &server, "shared");
    origin.commit_all("init");
    let a = TestRepo::clone_of(&origin);
    let b = TestRepo::clone_of(&origin);
    make_tree(&a, "data/a", 400, 3);
    make_tree(&b, "data/b", 400, 5);
    // Some files in common too.
    make_tree(&a, "data/common", 50, 9);
    make_tree(&b, "data/common", 50, 9);
    a.ok(&["add", "data/a", "data/common"]);
    b.ok(&["add", "data/b", "data/common"]);
    let mut pushes: Vec<_> = [&a, &b]
        .iter()
        .map(|repo| {
            repo.command(&["push", "--jobs", "4"]).stdout(std::process::Stdio::null()).spawn().unwrap()
        })
        .collect();
    for push in &mut pushes {
        assert!(push.wait().unwrap().success());
    }
    a.commit_all("a");
    b.commit_all("b");
    // Fresh clones of either side get all of its data from the shared remote.
    for side in [&a, &b] {
        let clone = TestRepo::clone_of(side);
        clone.ok(&["pull"]);
        assert_eq!(snapshot(&clone.path("data")), snapshot(&side.path("data")));
    }
}

#[test]
fn killed_push_resumes_without_resending_and_never_claims_missing_objects() {
    let origin = TestRepo::new();
    // 40 files of 4 MiB: ten packs, uploaded one at a time.
    for i in 0..40u32 {
        let content: Vec<u8> = (0..(4u32 << 20)).map(|j| (j.wrapping_mul(i + 7) >> 5) as u8).collect();
        origin.write(format!("data/f{i:02}.bin"), content);
    }
    origin.ok(&["add", "data"]);
    let store = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", store.path());
    origin.commit_all("v1");

    let mut child = origin.command(&["push", "--jobs", "1"]).spawn().unwrap();
    let packs = store.path().join("packs");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let indexes = std::fs::read_dir(&packs)
            .map(|d| {
                d.filter_map(|e| e.ok()).filter(|e| e.path().extension().is_some_and(|x| x == "idx")).count()
            })
            .unwrap_or(0);
        if indexes >= 1 || Instant::now() > deadline {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the push was killed before it finished");

    // What the remote claims is there is there: a fresh clone can fetch every claimed object.
    let resumed = origin.json(&["push", "--json"]);
    let skipped = resumed["objects_skipped"].as_u64().unwrap();
    let sent = resumed["objects_sent"].as_u64().unwrap();
    assert!(skipped >= 4, "objects of the finished packs are not sent again: {resumed}");
    assert!(sent > 0 && sent + skipped == 41, "{resumed}");
    let clone = TestRepo::clone_of(&origin);
    clone.ok(&["pull"]);
    assert_eq!(snapshot(&clone.path("data")), snapshot(&origin.path("data")));
}

/// Flips one byte of `needle` inside the remote's packs.
fn damage(store: &std::path::Path, needle: &[u8]) {
    for entry in std::fs::read_dir(store.join("packs")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at] ^= 0xff;
            std::fs::write(&path, bytes).unwrap();
            return;
        }
    }
    panic!("not found in any pack");
}

#[test]
fn corrupt_object_on_the_remote_is_detected_and_not_checked_out() {
    let origin = TestRepo::new();
    origin.write("data/good.txt", "good content that stays intact");
    origin.write("data/bad.txt", "content that will be damaged on the remote");
    origin.ok(&["add", "data"]);
    let store = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", store.path());
    origin.commit_all("v1");
    origin.ok(&["push"]);
    damage(store.path(), b"content that will be damaged");

    let clone = TestRepo::clone_of(&origin);
    let stderr = clone.fail(1, &["pull"]);
    assert!(stderr.contains("data/bad.txt") && stderr.contains("damaged on the remote"), "{stderr}");
    assert!(!clone.exists("data/bad.txt"), "damaged data is never checked out");
    assert_eq!(clone.cached_digests().len(), 2, "the manifest and the good file are cached, not the bad one");
    let fsck = clone.run(&["fsck"]);
    let report = String::from_utf8_lossy(&fsck.stdout);
    assert!(report.contains("missing from the cache") && !report.contains("corrupt"), "{report}");
}

#[test]
fn missing_object_names_the_files_affected() {
    let origin = TestRepo::new();
    origin.write("data/a.txt", "pushed");
    origin.ok(&["add", "data/a.txt"]);
    let store = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", store.path());
    origin.ok(&["push"]);
    // Data added after the push never reaches the remote.
    origin.write("data/b.txt", "never pushed");
    origin.ok(&["add", "data/b.txt"]);
    origin.commit_all("v1");

    let clone = TestRepo::clone_of(&origin);
    let stderr = clone.fail(1, &["pull"]);
    assert!(stderr.contains("data/b.txt: not on the remote"), "{stderr}");
    assert!(stderr.contains("hint: push these files"), "{stderr}");
    assert_eq!(clone.read("data/a.txt"), b"pushed", "complete paths are still checked out");

    // Pushing from a clone that lacks the data says which files are missing locally.
    let stderr = clone.fail(1, &["push"]);
    assert!(stderr.contains("data/b.txt: not in the local cache"), "{stderr}");
}

#[test]
fn gc_cloud_removes_only_unreferenced_data() {
    let origin = TestRepo::new();
    origin.write("data/keep.txt", "kept in every version");
    origin.write("data/old.txt", "only in version 1");
    origin.ok(&["add", "data"]);
    let store = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", store.path());
    origin.commit_all("v1");
    origin.ok(&["push"]);
    std::fs::remove_file(origin.path("data/old.txt")).unwrap();
    origin.write("data/new.txt", "version 2");
    origin.ok(&["commit"]);
    origin.commit_all("v2");
    origin.ok(&["push"]);

    // v1 is only in history: kept with --all-commits, collected without.
    let dry = origin.json(&["gc", "--cloud", "--all-commits", "--json"]);
    assert_eq!(dry["objects_removed"], 0, "{dry}");
    let dry = origin.json(&["gc", "--cloud", "--json"]);
    assert_eq!(dry["objects_removed"], 2, "old.txt and the v1 manifest: {dry}");
    assert_eq!(dry["deleted"], false);
    let done = origin.json(&["gc", "--cloud", "-r", "nas", "--force", "--json"]);
    assert_eq!(done["deleted"], true);
    let after = origin.json(&["gc", "--cloud", "--json"]);
    assert_eq!(after["objects_removed"], 0, "{after}");

    let clone = TestRepo::clone_of(&origin);
    clone.ok(&["pull"]);
    assert_eq!(clone.read("data/new.txt"), b"version 2");
    assert_eq!(clone.read("data/keep.txt"), b"kept in every version");
    clone.git(&["checkout", "-q", "HEAD~1"]);
    let stderr = clone.fail(1, &["pull"]);
    assert!(stderr.contains("data/old.txt") || stderr.contains("data:"), "{stderr}");
}

#[test]
fn gc_cloud_in_a_clone_that_lacks_a_tagged_version_reports_it_and_deletes_nothing() {
    let origin = TestRepo::new();
    origin.write("data/a.txt", "version 1");
    origin.ok(&["add", "data"]);
    let store = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", store.path());
    origin.commit_all("v1");
    origin.git(&["tag", "v1"]);
    origin.write("data/a.txt", "version 2");
    origin.ok(&["commit"]);
    origin.commit_all("v2");
    // Only HEAD's data goes to the remote: v1's listing is nowhere but in origin's cache.
    origin.ok(&["push"]);

    let clone = TestRepo::clone_of(&origin);
    clone.ok(&["pull"]);
    let output = clone.run(&["gc", "--cloud", "--json"]);
    assert!(output.status.success(), "a dry run reports, it does not fail");
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["unknown"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["unknown"][0].as_str().unwrap().starts_with("data@"), "{report}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("warning: data@") && stderr.contains("--force` will refuse"), "{stderr}");

    let stderr = clone.fail(1, &["gc", "--cloud", "--force"]);
    assert!(stderr.contains("cannot tell which objects on `nas`"), "{stderr}");
    assert!(stderr.contains("hint: push that data from a clone that has it"), "{stderr}");

    // Once the version is on the remote, gc runs and keeps it.
    origin.ok(&["push", "--all-tags"]);
    let done = clone.json(&["gc", "--cloud", "--force", "--json"]);
    assert_eq!(done["unknown"].as_array().unwrap().len(), 0, "{done}");
    assert_eq!(done["objects_removed"], 0, "{done}");
}

#[test]
fn remote_configuration_commands() {
    let repo = TestRepo::new();
    let store = tempfile::tempdir().unwrap();
    let stderr = repo.fail(1, &["push"]);
    assert!(stderr.contains("no remote is configured") && stderr.contains("cairn remote add"), "{stderr}");
    repo.ok(&["remote", "add", "nas", store.path().to_str().unwrap()]);
    repo.ok(&["remote", "add", "cloud", "s3://bucket/prefix", "-o", "region=eu-west-1"]);
    let stderr = repo.fail(1, &["push"]);
    assert!(stderr.contains("several remotes") && stderr.contains("remote default"), "{stderr}");
    repo.ok(&["remote", "default", "nas"]);
    assert_eq!(repo.ok(&["remote", "default"]).trim(), "nas");
    let listed = repo.json(&["remote", "list", "--json"]);
    assert_eq!(listed.as_array().unwrap().len(), 2);
    assert_eq!(listed[0]["name"], "cloud");
    assert_eq!(listed[0]["options"]["region"], "eu-west-1");
    assert_eq!(listed[1]["default"], true);

    // Credentials go to the user file and are never printed.
    repo.ok(&["remote", "modify", "--user", "cloud", "secret-access-key", "s3cr3t"]);
    assert!(!repo.ok(&["remote", "list", "--json"]).contains("s3cr3t"));
    assert!(!std::fs::read_to_string(repo.path(".cairn/config")).unwrap().contains("s3cr3t"));

    let stderr = repo.fail(1, &["remote", "modify", "cloud", "colour", "blue"]);
    assert!(stderr.contains("unknown option `colour`") && stderr.contains("endpoint"), "{stderr}");
    let stderr = repo.fail(1, &["remote", "add", "x", "gs://bucket"]);
    assert!(stderr.contains("not supported"), "{stderr}");
    let stderr = repo.fail(1, &["remote", "add", "nas", "/elsewhere"]);
    assert!(stderr.contains("already exists"), "{stderr}");
    let stderr = repo.fail(1, &["push", "-r", "nope"]);
    assert!(stderr.contains("no remote named `nope`"), "{stderr}");
    repo.ok(&["remote", "remove", "nas"]);
    let stderr = repo.fail(1, &["remote", "remove", "nas"]);
    assert!(stderr.contains("no remote named `nas`"), "{stderr}");
    let stderr = repo.fail(1, &["remote", "modify", "cloud", "endpoint", "localhost:9000"]);
    assert!(stderr.contains("http://"), "{stderr}");
}

#[test]
fn permanent_s3_errors_fail_fast_and_say_what_to_check() {
    let server = S3Server::start(&["exists"]);
    let repo = TestRepo::new();
    repo.write("f.txt", "x");
    repo.ok(&["add", "f.txt"]);
    let endpoint = format!("endpoint={}", server.endpoint);
    let keys = ["-o", "access-key-id=testing", "-o", "secret-access-key=testing"];
    let mut add = vec!["remote", "add", "missing", "s3://no-such-bucket/p", "-o", &endpoint];
    add.extend(keys);
    repo.ok(&add);
    let started = Instant::now();
    let stderr = repo.fail(1, &["push", "-r", "missing"]);
    assert!(
        stderr.contains("remote `missing` (s3://no-such-bucket/p)")
            && stderr.contains("bucket does not exist"),
        "{stderr}"
    );
    assert!(stderr.contains("hint: create the bucket"), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(10), "a missing bucket is not retried for long");

    // Nothing listens on port 1.
    let mut add = vec!["remote", "add", "down", "s3://exists/p", "-o", "endpoint=http://127.0.0.1:1"];
    add.extend(keys);
    repo.ok(&add);
    let stderr = repo.fail(1, &["push", "-r", "down"]);
    assert!(stderr.contains("cannot be reached") && stderr.contains("hint: check the endpoint"), "{stderr}");

    // Keys the server does not know.
    let checking = S3Server::start_authenticating();
    let endpoint_checking = format!("endpoint={}", checking.endpoint);
    let mut add = vec!["remote", "add", "denied", "s3://exists/p", "-o", &endpoint_checking];
    add.extend(keys);
    repo.ok(&add);
    let stderr = repo.fail(1, &["push", "-r", "denied"]);
    assert!(stderr.contains("the credentials were rejected"), "{stderr}");
    assert!(stderr.contains("hint: check AWS_ACCESS_KEY_ID"), "{stderr}");

    // Credentials from the standard environment variables; half a pair is an error.
    repo.ok(&["remote", "add", "env", "s3://exists/p", "-o", &endpoint]);
    let output = repo
        .command(&["push", "-r", "env", "--json"])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = repo.command(&["push", "-r", "env"]).env("AWS_ACCESS_KEY_ID", "testing").output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("only one of the access key id"));

    // A profile from the AWS credentials file.
    std::fs::create_dir_all(repo.home.join(".aws")).unwrap();
    std::fs::write(
        repo.home.join(".aws/credentials"),
        "[team]\naws_access_key_id = testing\naws_secret_access_key = testing\n",
    )
    .unwrap();
    repo.ok(&["remote", "modify", "env", "profile", "team"]);
    repo.ok(&["push", "-r", "env"]);
    repo.ok(&["remote", "modify", "env", "profile", "nobody"]);
    let stderr = repo.fail(1, &["push", "-r", "env"]);
    assert!(stderr.contains("profile `nobody`"), "{stderr}");
}

#[test]
fn gc_cloud_and_pushes_take_turns() {
    let origin = origin_with_data();
    let dir = tempfile::tempdir().unwrap();
    add_dir_remote(&origin, "nas", dir.path());
    origin.ok(&["push", "-r", "nas"]);
    let locks = dir.path().join("locks");
    let markers = || std::fs::read_dir(&locks).map(|d| d.count()).unwrap_or(0);
    assert_eq!(markers(), 0, "a finished push leaves no marker");

    // Another clone's push in progress: a collection refuses and changes nothing.
    std::fs::create_dir_all(&locks).unwrap();
    let pushing = locks.join("push-0123456789abcdef.json");
    std::fs::write(&pushing, "{}").unwrap();
    let before = common::snapshot(dir.path());
    let err = origin.fail(1, &["gc", "--cloud", "-r", "nas", "--force"]);
    assert!(err.contains("busy") && err.contains("a push") && err.contains("push-0123456789abcdef"), "{err}");
    let mut after = common::snapshot(dir.path());
    after.retain(|k, _| !k.starts_with(b"locks/gc-"));
    assert_eq!(after, before, "the refused collection removed nothing");
    assert_eq!(markers(), 1, "and took its own marker away");

    // A marker left by a killed push stops counting after a while, and gc removes it.
    let status =
        std::process::Command::new("touch").args(["-d", "7 hours ago"]).arg(&pushing).status().unwrap();
    assert!(status.success());
    origin.ok(&["gc", "--cloud", "-r", "nas", "--force"]);
    assert_eq!(markers(), 0);

    // A collection in progress: a push refuses.
    std::fs::create_dir_all(&locks).unwrap();
    std::fs::write(locks.join("gc-fedcba9876543210.json"), "{}").unwrap();
    origin.write("data/extra.txt", "more");
    origin.ok(&["add", "data/extra.txt"]);
    let err = origin.fail(1, &["push", "-r", "nas"]);
    assert!(err.contains("busy") && err.contains("gc --cloud"), "{err}");
}
