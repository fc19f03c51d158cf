//! Property test: `add` then `checkout` restores arbitrary trees byte for byte, with every
//! link strategy, including empty files and names that are not UTF-8.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use cairn_repo::{NoReporter, OpenOptions, Repo};
use proptest::prelude::*;

fn name() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[a-z]{1,6}".prop_map(|s| s.into_bytes()),
        Just(b"with space".to_vec()),
        Just(b"caf\xc3\xa9".to_vec()),
        Just(b"\xff\xfe raw".to_vec()),
        Just(b"*?[glob]".to_vec()),
        Just(b".hidden".to_vec()),
        Just(b"line\nbreak".to_vec()),
    ]
}

fn tree() -> impl Strategy<Value = BTreeMap<Vec<u8>, Vec<u8>>> {
    let path = prop::collection::vec(name(), 1..4).prop_map(|parts| parts.join(&b'/'));
    let content = prop_oneof![Just(Vec::new()), prop::collection::vec(any::<u8>(), 0..3000)];
    prop::collection::btree_map(path, content, 1..12).prop_map(|mut files| {
        // Drop paths that would need a file and a directory of the same name.
        let keys: Vec<Vec<u8>> = files.keys().cloned().collect();
        for key in &keys {
            if keys
                .iter()
                .any(|other| other.len() > key.len() && other.starts_with(key) && other[key.len()] == b'/')
            {
                files.remove(key);
            }
        }
        files
    })
}

fn write_tree(root: &Path, files: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (path, content) in files {
        let path = root.join(std::ffi::OsStr::from_bytes(path));
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, content).unwrap();
    }
}

fn read_tree(root: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<Vec<u8>, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if std::fs::metadata(&path).unwrap().is_dir() {
                walk(base, &path, out);
            } else {
                let rel = path.strip_prefix(base).unwrap().as_os_str().as_bytes().to_vec();
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(40))]
    #[test]
    fn add_then_checkout_round_trips(files in tree(), strategy in prop::sample::select(vec!["reflink,copy", "copy", "hardlink", "symlink"])) {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let status = std::process::Command::new("git").args(["init", "-q"]).current_dir(root).status().unwrap();
        prop_assert!(status.success());
        Repo::init(root).unwrap();
        std::fs::write(root.join(".cairn/config"), format!("[cache]\nlink = \"{strategy}\"\n")).unwrap();
        let repo = Repo::open(root, &OpenOptions::default()).unwrap();
        let data = root.join("data");
        write_tree(&data, &files);

        repo.add(&[b"data".to_vec()], &NoReporter).unwrap();
        prop_assert_eq!(read_tree(&data), files.clone(), "add leaves the work tree as it was");
        std::fs::remove_dir_all(&data).unwrap();
        repo.checkout(None, false, &NoReporter).unwrap();
        prop_assert_eq!(read_tree(&data), files.clone());
        let status = repo.status(None, &NoReporter).unwrap();
        prop_assert!(status.iter().all(|s| s.changes.is_empty()));
        let fsck = repo.fsck(&NoReporter).unwrap();
        prop_assert!(fsck.problems.is_empty(), "{:?}", fsck.problems);
    }
}
