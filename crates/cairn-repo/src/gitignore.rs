//! Keeping tracked data out of Git: one `/name` line per data path, in the `.gitignore` of the
//! directory that holds it (as DVC does).

use std::path::Path;

use crate::{RepoError, Result, bytes_to_path};

/// Escapes a file name so Git matches it literally, as gitignore(5) specifies: `\`, `*`, `?`,
/// `[` are escaped, as are a leading `!` or `#` and trailing spaces (Git strips unescaped
/// ones; leading spaces are kept as they are). A newline cannot appear in a line of the
/// file, so it becomes `?`, which matches any one character but `/`: the entry then also
/// ignores a name that differs from this one only by another character there.
fn escape(name: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + 2);
    for (i, &byte) in name.iter().enumerate() {
        if byte == b'\n' {
            out.push(b'?');
            continue;
        }
        let trailing_space = byte == b' ' && name[i..].iter().all(|&b| b == b' ');
        if matches!(byte, b'\\' | b'*' | b'?' | b'[')
            || trailing_space
            || (i == 0 && matches!(byte, b'!' | b'#'))
        {
            out.push(b'\\');
        }
        out.push(byte);
    }
    out
}

fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[][..], rel),
    }
}

fn entry_line(name: &[u8]) -> Vec<u8> {
    [&b"/"[..], &escape(name)].concat()
}

fn gitignore_path(root: &Path, dir: &[u8]) -> std::path::PathBuf {
    if dir.is_empty() { root.join(".gitignore") } else { root.join(bytes_to_path(dir)).join(".gitignore") }
}

/// Adds `/name` for the data path `rel` if it is not there yet.
pub fn ensure_ignored(root: &Path, rel: &[u8]) -> Result<()> {
    let (dir, name) = split(rel);
    let path = gitignore_path(root, dir);
    let mut content = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(RepoError::io("read", path, e)),
    };
    let line = entry_line(name);
    if content.split(|&b| b == b'\n').any(|l| l == line.as_slice()) {
        return Ok(());
    }
    if !content.is_empty() && !content.ends_with(b"\n") {
        content.push(b'\n');
    }
    content.extend_from_slice(&line);
    content.push(b'\n');
    cairn_fs::write(&path, &content).map_err(|e| RepoError::io("write", path, e))
}

/// Removes the `/name` line for `rel`; deletes the `.gitignore` if nothing else is left.
pub fn remove_ignored(root: &Path, rel: &[u8]) -> Result<()> {
    let (dir, name) = split(rel);
    let path = gitignore_path(root, dir);
    let content = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(RepoError::io("read", path, e)),
    };
    let line = entry_line(name);
    let kept: Vec<&[u8]> = content.split(|&b| b == b'\n').filter(|l| *l != line.as_slice()).collect();
    let mut out = kept.join(&b'\n');
    while out.ends_with(b"\n\n") {
        out.pop();
    }
    if out.iter().all(|b| b.is_ascii_whitespace()) {
        return std::fs::remove_file(&path).map_err(|e| RepoError::io("delete", path, e));
    }
    cairn_fs::write(&path, &out).map_err(|e| RepoError::io("write", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_glob_characters() {
        assert_eq!(escape(b"a*b?[c]"), b"a\\*b\\?\\[c]");
        assert_eq!(escape(b"!x#"), b"\\!x#");
        assert_eq!(escape(b"x  "), b"x\\ \\ ");
        assert_eq!(escape(b"a\nb"), b"a?b");
        assert_eq!(escape(b"  lead\\"), b"  lead\\\\");
    }

    #[test]
    fn add_and_remove_lines() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("data")).unwrap();
        std::fs::write(dir.path().join("data/.gitignore"), "*.log").unwrap();
        ensure_ignored(dir.path(), b"data/raw").unwrap();
        ensure_ignored(dir.path(), b"data/raw").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("data/.gitignore")).unwrap(), "*.log\n/raw\n");
        remove_ignored(dir.path(), b"data/raw").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("data/.gitignore")).unwrap(), "*.log\n");
        ensure_ignored(dir.path(), b"top").unwrap();
        remove_ignored(dir.path(), b"top").unwrap();
        assert!(!dir.path().join(".gitignore").exists());
    }
}
