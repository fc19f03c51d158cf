//! The README is executable: every shell block of `README.md` runs as written, in order, in one
//! scratch project made of the files under `examples/readme/`, so the README cannot drift from
//! the binary again.
//!
//! How the blocks run:
//! - Each ```` ```sh ```` block runs in its own `bash -euo pipefail`, starting in the project's
//!   root (a block that `cd`s elsewhere does not move the next one). A failing command fails
//!   the test with the block, its line in README.md and everything it printed.
//! - A ```` ```yaml ```` block whose first line is a comment naming a file (`# cairn.yaml …`) is
//!   written to that file when the test reaches it, so the README's examples of `cairn.yaml`
//!   and `monitor.yaml` are the ones the commands after them use.
//! - The environment is a user's: a fake `HOME`, `cairn` on `PATH` once the Install block has
//!   "installed" it, `python`, `jq` and `curl`, an activated virtual environment with
//!   `onnxruntime` (so `pip install onnxruntime` is satisfied at once), and an S3 server (moto)
//!   on 127.0.0.1 behind `AWS_ENDPOINT_URL`, holding the README's bucket.
//! - Tests never use fixed ports: the README's 8080, 8081, 5000 and 4000 are replaced by free ports.
//!   A server a block starts with `&` is stopped (SIGTERM, then waited for) when the block ends.
//!   `curl` retries while a just-started server is not yet listening and fails on an HTTP
//!   error, as a person would wait and read the error.
//! - Two commands stand in rather than run: `cargo install --locked --path crates/cairn-cli`
//!   (a release build would take most of CI's time) links this build of `cairn` into
//!   `~/.cargo/bin` after checking the path names the crate of the `cairn` binary; and the
//!   blocks of "The two commands" are checked to be exactly what CI (`.ci/run`) and
//!   `tests/quickstart.rs` run, since running the test suite from inside itself would recurse.
#![allow(clippy::unwrap_used)]

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

/// A fenced block of README.md.
#[derive(Debug)]
struct Block {
    /// The `## ` heading it sits under.
    section: String,
    /// The line of its opening fence (1-based).
    line: usize,
    language: String,
    text: String,
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut out = Vec::new();
    let mut section = String::new();
    let mut open: Option<Block> = None;
    for (index, line) in markdown.lines().enumerate() {
        if let Some(block) = open.as_mut() {
            if line.trim_end() == "```" {
                out.push(open.take().unwrap());
            } else {
                block.text.push_str(line);
                block.text.push('\n');
            }
        } else if let Some(language) = line.strip_prefix("```") {
            open = Some(Block {
                section: section.clone(),
                line: index + 1,
                language: language.trim().to_owned(),
                text: String::new(),
            });
        } else if let Some(heading) = line.strip_prefix("## ") {
            section = heading.trim().to_owned();
        }
    }
    assert!(open.is_none(), "README.md ends inside a fenced block");
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// The real interpreter behind `python3` (a shim such as pyenv's needs the real `HOME`).
fn python_interpreter() -> PathBuf {
    let output = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    assert!(output.status.success(), "python3 -c 'import sys' failed");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let target = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Bash run before every block: the stand-in for `cargo install`, `curl` as a patient person
/// uses it, and servers started with `&` stopped when the block ends.
const PRELUDE: &str = r#"
cargo() {
  if [ "$*" = "install --locked --path crates/cairn-cli" ]; then
    grep -q '^name = "cairn"$' "$CAIRN_SOURCE/crates/cairn-cli/Cargo.toml" \
      || { echo "crates/cairn-cli does not build the cairn binary" >&2; return 1; }
    mkdir -p "$HOME/.cargo/bin" && ln -sf "$CAIRN_TEST_BIN" "$HOME/.cargo/bin/cairn"
    echo "  Installed (stand-in) $HOME/.cargo/bin/cairn" >&2
  else
    echo "the README test has no stand-in for: cargo $*" >&2
    return 2
  fi
}
curl() {
  command curl --show-error --fail-with-body --retry 30 --retry-connrefused --retry-delay 1 \
    --max-time 60 "$@"
}
stop_servers() {
  local pids
  pids="$(jobs -p)"
  if [ -n "$pids" ]; then kill -TERM $pids 2>/dev/null || true; wait $pids 2>/dev/null || true; fi
}
trap stop_servers EXIT
"#;

#[test]
fn every_shell_block_of_the_readme_runs() {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap();
    let readme = std::fs::read_to_string(source.join("README.md")).unwrap();
    let blocks = blocks(&readme);

    // The two commands are the ones CI and the quickstart test run (running them here would
    // run the whole suite from inside itself).
    let two: Vec<&Block> = blocks.iter().filter(|b| b.section == "The two commands").collect();
    assert_eq!(two.len(), 2, "README.md has exactly two blocks under `The two commands`");
    assert_eq!(two[0].text.trim(), "bash examples/quickstart/run.sh");
    let quickstart_test =
        std::fs::read_to_string(source.join("crates/cairn-cli/tests/quickstart.rs")).unwrap();
    assert!(
        quickstart_test.contains(r#"root.join("examples/quickstart/run.sh")"#),
        "tests/quickstart.rs must run the README's main command"
    );
    let test_command = two[1].text.trim();
    let ci = std::fs::read_to_string(source.join(".ci/run")).unwrap();
    assert!(
        ci.lines().any(|line| line.trim() == test_command),
        "`.ci/run` must run the README's test command `{test_command}` as written"
    );

    let scratch = tempfile::tempdir().unwrap();
    let home = scratch.path().join("home");
    let project = scratch.path().join("project");
    let bin = scratch.path().join("bin");
    for dir in [&home, &project, &bin] {
        std::fs::create_dir_all(dir).unwrap();
    }
    copy_tree(&source.join("examples/readme"), &project);
    // A reader has told Git who they are; Cairn records them as who registered and approved.
    std::fs::write(
        home.join(".gitconfig"),
        "[user]\n\tname = Readme Reader\n\temail = reader@example.com\n[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
    )
    .unwrap();
    let python = python_interpreter();
    for name in ["python", "python3"] {
        std::os::unix::fs::symlink(&python, bin.join(name)).unwrap();
    }
    let venv = common::tools::serve_python().parent().unwrap().parent().unwrap().to_path_buf();
    let s3 = common::s3::S3Server::start(&["bucket"]);
    let ports = [
        ("8080", free_port().to_string()),
        ("8081", free_port().to_string()),
        ("5000", free_port().to_string()),
        ("4000", free_port().to_string()),
    ];
    let path = std::env::join_paths(
        [home.join(".cargo/bin"), bin.clone(), venv.join("bin")]
            .into_iter()
            .chain(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())),
    )
    .unwrap();

    let mut ran = 0;
    for block in &blocks {
        if block.section == "The two commands" {
            continue;
        }
        match block.language.as_str() {
            "yaml" => {
                let first = block.text.lines().next().unwrap_or_default();
                let file = first.strip_prefix("# ").and_then(|rest| rest.split_whitespace().next());
                let file = file.unwrap_or_else(|| {
                    panic!("README.md:{}: a yaml block starts with `# FILE`, the file it shows", block.line)
                });
                std::fs::write(project.join(file), &block.text).unwrap();
            }
            "sh" => {
                if block.section == "Model registry" && block.text.contains("credit") {
                    copy_tree(&source.join("examples/readme-credit"), &project);
                }
                // Two passes, so a free port that contains another README port stays whole.
                let mut script = block.text.clone();
                for (i, (port, _)) in ports.iter().enumerate() {
                    script = script.replace(port, &format!("\u{0}{i}\u{0}"));
                }
                for (i, (_, free)) in ports.iter().enumerate() {
                    script = script.replace(&format!("\u{0}{i}\u{0}"), free);
                }
                let output = Command::new("bash")
                    .args(["-euo", "pipefail", "-c"])
                    .arg(format!("{PRELUDE}\n{script}"))
                    .env_clear()
                    .env("HOME", &home)
                    .env("PATH", &path)
                    .env("LANG", "C.UTF-8")
                    .env("VIRTUAL_ENV", &venv)
                    .env("CAIRN_SOURCE", &source)
                    .env("CAIRN_TEST_BIN", common::cairn_bin())
                    .env("AWS_ENDPOINT_URL", &s3.endpoint)
                    .env("AWS_ACCESS_KEY_ID", "readme")
                    .env("AWS_SECRET_ACCESS_KEY", "readme")
                    .env("AWS_REGION", "us-east-1")
                    .env("GIT_CONFIG_NOSYSTEM", "1")
                    .current_dir(&project)
                    .output()
                    .unwrap();
                assert!(
                    output.status.success(),
                    "README.md:{} (under `{}`) failed ({:?}):\n{}\n--- stdout\n{}\n--- stderr\n{}",
                    block.line,
                    block.section,
                    output.status.code(),
                    block.text,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr),
                );
                // Shown with `--nocapture`: what a reader would see.
                eprintln!(
                    "## README.md:{} ({})\n{}{}",
                    block.line,
                    block.section,
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
                check_after(&block.section, &project, &String::from_utf8_lossy(&output.stdout));
                ran += 1;
            }
            other => {
                panic!("README.md:{}: a fenced block in `{other}`, which this test cannot run", block.line)
            }
        }
    }
    assert!(ran >= 10, "only {ran} shell blocks ran: did the README lose its examples?");
}

/// What a reader of each section is promised, beyond every command succeeding.
fn check_after(section: &str, project: &Path, stdout: &str) {
    let read = |rel: &str| std::fs::read(project.join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    match section {
        "Quickstart" if project.join("../teammate").exists() => assert_eq!(
            read("../teammate/data/raw/part-2.csv"),
            read("data/raw/part-2.csv"),
            "the teammate's pull brings the same data"
        ),
        "Pipelines" => {
            assert!(project.join("cairn.lock").exists(), "the pipeline ran and wrote its lock");
            assert!(
                project.join("data/thumbs/cat.png").exists(),
                "the foreach stage made a thumbnail per image"
            );
        }
        "Model registry" if stdout.contains("production") => {
            assert!(
                stdout.contains("1 → 2  by Readme Reader"),
                "the history names who moved the alias:\n{stdout}"
            );
        }
        "Serving" => {
            let answer: serde_json::Value = serde_json::from_slice(&read("answer.json")).unwrap();
            let trace_id = answer["trace_id"].as_str().unwrap();
            assert_eq!(answer["model"], "churn");
            assert!(stdout.contains("churn@1"), "the trace names the version that answered:\n{stdout}");
            assert!(!trace_id.is_empty());
        }
        "Monitoring" => {
            let exported = String::from_utf8(read("data/production.csv")).unwrap();
            assert!(exported.lines().count() >= 2, "the labelled request was exported:\n{exported}");
            assert!(project.join("data/production.csv.cairn").exists(), "the export is `cairn add`ed");
        }
        _ => {}
    }
}
