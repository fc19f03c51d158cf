//! Push, fetch and gc against a directory remote, through the library API.

#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::path::Path;

use cairn_hash::Digest;
use cairn_remote::{AwsEnvironment, Remote, RemoteSpec};
use cairn_store::{NoReporter, Store};

fn pseudo_random(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

struct Setup {
    _dir: tempfile::TempDir,
    remote_dir: std::path::PathBuf,
    root: std::path::PathBuf,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let remote_dir = root.join("remote");
        std::fs::create_dir(&remote_dir).unwrap();
        Setup { _dir: dir, remote_dir, root }
    }

    fn store(&self, name: &str) -> Store {
        Store::open(&self.root.join(name)).unwrap()
    }

    fn remote(&self, clone: &str) -> Remote {
        let spec = RemoteSpec {
            name: "origin".into(),
            url: self.remote_dir.display().to_string(),
            ..Default::default()
        };
        Remote::open(&spec, &AwsEnvironment::default(), &self.root.join(clone).join("state")).unwrap()
    }
}

fn packs(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir.join("packs")).unwrap().map(|e| e.unwrap().path()).collect();
    out.sort();
    out
}

#[test]
fn push_then_fetch_round_trips_small_and_chunked_objects() {
    let setup = Setup::new();
    let a = setup.store("a");
    let mut digests: Vec<Digest> =
        (0..500).map(|i| a.put_bytes(format!("object {i}").as_bytes()).unwrap()).collect();
    let big = pseudo_random(20 << 20, 3);
    digests.push(a.put_bytes(&big).unwrap());
    digests.push(a.put_bytes(b"").unwrap());

    let remote = setup.remote("a");
    let report = remote.push(&remote.index().unwrap(), &a, &digests, &NoReporter).unwrap();
    assert_eq!(report.objects_sent, 502);
    assert!(report.missing_locally.is_empty());

    // Nothing left to send.
    let again = remote.push(&remote.index().unwrap(), &a, &digests, &NoReporter).unwrap();
    assert_eq!((again.objects_sent, again.objects_skipped, again.bytes_sent), (0, 502, 0));

    // Another clone with an empty cache gets every object back, verified.
    let b = setup.store("b");
    let other = setup.remote("b");
    let fetched = other.fetch(&other.index().unwrap(), &b, &digests, &NoReporter).unwrap();
    assert_eq!(fetched.objects_fetched, 502);
    assert!(fetched.missing.is_empty() && fetched.corrupt.is_empty());
    for digest in &digests {
        b.verify(digest).unwrap();
    }
    assert_eq!(std::fs::read(b.object_path(&digests[500])).unwrap(), big);
    let twice = other.fetch(&other.index().unwrap(), &b, &digests, &NoReporter).unwrap();
    assert_eq!((twice.objects_fetched, twice.already_present), (0, 502));
}

#[test]
fn a_small_edit_of_a_large_object_uploads_little() {
    let setup = Setup::new();
    let a = setup.store("a");
    let mut data = pseudo_random(40 << 20, 11);
    let v1 = a.put_bytes(&data).unwrap();
    let remote = setup.remote("a");
    let first = remote.push(&remote.index().unwrap(), &a, &[v1], &NoReporter).unwrap();
    assert!(first.bytes_sent >= 40 << 20);
    let middle = data.len() / 2;
    data[middle..middle + (1 << 20)].copy_from_slice(&pseudo_random(1 << 20, 5));
    let v2 = a.put_bytes(&data).unwrap();
    let second = remote.push(&remote.index().unwrap(), &a, &[v1, v2], &NoReporter).unwrap();
    assert_eq!(second.objects_sent, 1);
    assert!(second.bytes_sent < 10 << 20, "sent {} bytes for a 1 MiB change", second.bytes_sent);
    assert!(second.chunks_deduplicated > 20);

    let b = setup.store("b");
    let other = setup.remote("b");
    other.fetch(&other.index().unwrap(), &b, &[v2], &NoReporter).unwrap();
    assert_eq!(std::fs::read(b.object_path(&v2)).unwrap(), data);
}

#[test]
fn corrupt_and_missing_objects_are_reported_not_stored() {
    let setup = Setup::new();
    let a = setup.store("a");
    let good = a.put_bytes(b"good object").unwrap();
    let bad = a.put_bytes(b"object to damage").unwrap();
    let remote = setup.remote("a");
    remote.push(&remote.index().unwrap(), &a, &[good, bad], &NoReporter).unwrap();
    // Flip a byte of the second object inside the pack.
    let pack = packs(&setup.remote_dir).into_iter().find(|p| p.extension().unwrap() == "pack").unwrap();
    let mut bytes = std::fs::read(&pack).unwrap();
    let at = bytes.windows(16).position(|w| w == b"object to damage").unwrap();
    bytes[at] = b'O';
    std::fs::write(&pack, bytes).unwrap();

    let b = setup.store("b");
    let other = setup.remote("b");
    let absent = cairn_hash::hash_bytes(b"never pushed");
    let report = other.fetch(&other.index().unwrap(), &b, &[good, bad, absent], &NoReporter).unwrap();
    assert_eq!(report.objects_fetched, 1);
    assert_eq!(report.missing, vec![absent]);
    assert_eq!(report.corrupt.len(), 1);
    assert_eq!(report.corrupt[0].0, bad);
    assert!(b.contains(&good).unwrap());
    assert!(!b.contains(&bad).unwrap(), "a corrupt object never enters the cache");
}

#[test]
fn a_pack_without_its_index_is_invisible_and_the_push_resumes() {
    let setup = Setup::new();
    let a = setup.store("a");
    let digests: Vec<Digest> = (0..50).map(|i| a.put_bytes(format!("x{i}").as_bytes()).unwrap()).collect();
    let remote = setup.remote("a");
    remote.push(&remote.index().unwrap(), &a, &digests, &NoReporter).unwrap();
    // Simulate a push killed between the pack and its index.
    let index = packs(&setup.remote_dir).into_iter().find(|p| p.extension().unwrap() == "idx").unwrap();
    std::fs::remove_file(index).unwrap();
    let view = setup.remote("b").index().unwrap();
    assert!(digests.iter().all(|d| !view.contains(d)), "objects of a pack without index are not claimed");
    let resumed = remote.push(&remote.index().unwrap(), &a, &digests, &NoReporter).unwrap();
    assert_eq!(resumed.objects_sent, 50);
    assert!(digests.iter().all(|d| setup.remote("c").index().unwrap().contains(d)));
}

#[test]
fn gc_removes_unreferenced_packs_and_keeps_live_chunks() {
    let setup = Setup::new();
    let a = setup.store("a");
    let keep = a.put_bytes(b"keep me").unwrap();
    let big = a.put_bytes(&pseudo_random(12 << 20, 9)).unwrap();
    let remote = setup.remote("a");
    remote.push(&remote.index().unwrap(), &a, &[keep, big], &NoReporter).unwrap();
    let drop: Vec<Digest> =
        (0..20).map(|i| a.put_bytes(format!("garbage {i}").as_bytes()).unwrap()).collect();
    remote.push(&remote.index().unwrap(), &a, &drop, &NoReporter).unwrap();

    let live: HashSet<Digest> = [keep, big].into_iter().collect();
    let dry = remote.gc(&remote.index().unwrap(), &live, false, &NoReporter).unwrap();
    assert_eq!(dry.objects_removed, 20);
    assert!(!dry.deleted);
    assert!(remote.index().unwrap().contains(&drop[0]), "a dry run deletes nothing");
    let done = remote.gc(&remote.index().unwrap(), &live, true, &NoReporter).unwrap();
    assert!(done.deleted && done.packs_deleted >= 1);
    let index = remote.index().unwrap();
    assert!(drop.iter().all(|d| !index.contains(d)));

    let b = setup.store("b");
    let report = remote.fetch(&index, &b, &[keep, big], &NoReporter).unwrap();
    assert_eq!(report.objects_fetched, 2, "{report:?}");

    // Part files of a multipart upload a killed push left behind go once they are old.
    let part = setup.remote_dir.join("packs").join(format!("{}.pack#2", "ab".repeat(32)));
    std::fs::write(&part, vec![7u8; 4096]).unwrap();
    let fresh = remote.gc(&remote.index().unwrap(), &live, true, &NoReporter).unwrap();
    assert!(part.exists(), "a part file younger than an hour may belong to a running push: {fresh:?}");
    let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(7200);
    std::fs::File::options().write(true).open(&part).unwrap().set_modified(two_hours_ago).unwrap();
    let old = remote.gc(&remote.index().unwrap(), &live, true, &NoReporter).unwrap();
    assert!(!part.exists(), "{old:?}");
    assert!(old.bytes_freed >= 4096);
    assert_eq!(
        remote
            .fetch(&remote.index().unwrap(), &setup.store("c"), &[keep, big], &NoReporter)
            .unwrap()
            .objects_fetched,
        2
    );
}

#[test]
fn a_corrupt_large_object_is_never_pushed_as_that_object() {
    use std::os::unix::fs::PermissionsExt;
    let setup = Setup::new();
    let a = setup.store("a");
    let big = pseudo_random(12 << 20, 9);
    let digest = a.put_bytes(&big).unwrap();
    let path = a.object_path(&digest);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    let mut bytes = std::fs::read(&path).unwrap();
    bytes[5 << 20] ^= 1;
    std::fs::write(&path, &bytes).unwrap();
    let remote = setup.remote("a");
    let error = remote.push(&remote.index().unwrap(), &a, &[digest], &NoReporter).unwrap_err();
    assert!(error.to_string().contains("corrupt"), "{error}");
    // No recipe names it: another clone cannot fetch corrupt bytes under its digest.
    let b = setup.store("b");
    let other = setup.remote("b");
    let fetched = other.fetch(&other.index().unwrap(), &b, &[digest], &NoReporter).unwrap();
    assert_eq!(fetched.missing, vec![digest]);
    assert!(!b.contains(&digest).unwrap());
}
