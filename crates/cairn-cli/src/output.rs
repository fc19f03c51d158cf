//! What commands print: human text on stdout, or `--json` built from the wire types below.
//! Wire types are the CLI's own (converted from the library's domain types with `From`), so
//! the JSON shape is a documented interface that library refactors cannot change by accident.

use std::io::Write;

use cairn_repo::{AddOutcome, Change, CheckoutOutcome, DiffEntry, ListedFile, TrackedStatus, display_bytes};
use serde::Serialize;

use crate::failure::Failure;
use crate::progress::human_bytes;

/// Writes one line to stdout.
pub fn out(line: impl std::fmt::Display) -> Result<(), Failure> {
    writeln!(std::io::stdout(), "{line}")
        .map_err(|e| Failure::user(format!("cannot write to stdout: {e}"), None))
}

/// A warning on stderr.
pub fn warn(message: &str) {
    let _ = writeln!(std::io::stderr(), "warning: {message}");
}

/// Writes `items` as pretty JSON to stdout.
pub fn json<T: Serialize>(value: &T) -> Result<(), Failure> {
    out(serde_json::to_string_pretty(value).expect("plain data always serializes"))
}

/// Converts domain values to wire values and prints them as a JSON array.
pub fn json_list<'a, D: 'a, W: Serialize + From<&'a D>>(items: &'a [D]) -> Result<(), Failure> {
    json(&items.iter().map(W::from).collect::<Vec<W>>())
}

#[derive(Serialize)]
pub struct AddedJson {
    path: String,
    digest: String,
    size: u64,
    files: u64,
    hashed: u64,
    new_objects: u64,
    new_bytes: u64,
    changed: bool,
}

impl From<&AddOutcome> for AddedJson {
    fn from(o: &AddOutcome) -> Self {
        AddedJson {
            path: display_bytes(&o.rel),
            digest: o.pointer.digest.to_string(),
            size: o.pointer.size,
            files: o.files,
            hashed: o.hashed,
            new_objects: o.new_objects,
            new_bytes: o.new_bytes,
            changed: o.changed,
        }
    }
}

#[derive(Serialize)]
pub struct StatusJson {
    path: String,
    missing: bool,
    not_in_cache: bool,
    changes: Vec<ChangeJson>,
}

#[derive(Serialize)]
struct ChangeJson {
    path: String,
    change: &'static str,
}

impl From<&TrackedStatus> for StatusJson {
    fn from(s: &TrackedStatus) -> Self {
        StatusJson {
            path: display_bytes(&s.rel),
            missing: s.missing,
            not_in_cache: s.not_in_cache,
            changes: s
                .changes
                .iter()
                .map(|c| ChangeJson { path: display_bytes(&c.path), change: c.change.name() })
                .collect(),
        }
    }
}

#[derive(Serialize)]
pub struct CheckoutJson {
    path: String,
    written: u64,
    written_bytes: u64,
    removed: u64,
    unchanged: u64,
}

impl From<&CheckoutOutcome> for CheckoutJson {
    fn from(o: &CheckoutOutcome) -> Self {
        CheckoutJson {
            path: display_bytes(&o.rel),
            written: o.written,
            written_bytes: o.written_bytes,
            removed: o.removed,
            unchanged: o.unchanged,
        }
    }
}

#[derive(Serialize)]
pub struct DiffJson {
    path: String,
    change: &'static str,
    old: Option<VersionJson>,
    new: Option<VersionJson>,
}

#[derive(Serialize)]
struct VersionJson {
    digest: String,
    size: u64,
}

impl From<&DiffEntry> for DiffJson {
    fn from(e: &DiffEntry) -> Self {
        let version =
            |(digest, size): (cairn_hash::Digest, u64)| VersionJson { digest: digest.to_string(), size };
        DiffJson {
            path: display_bytes(&e.path),
            change: e.change.name(),
            old: e.old.map(version),
            new: e.new.map(version),
        }
    }
}

#[derive(Serialize)]
pub struct FileJson {
    path: String,
    digest: String,
    size: u64,
    executable: bool,
}

impl From<&ListedFile> for FileJson {
    fn from(f: &ListedFile) -> Self {
        FileJson {
            path: display_bytes(&f.path),
            digest: f.digest.to_string(),
            size: f.size,
            executable: f.executable,
        }
    }
}

pub fn added(outcomes: &[AddOutcome], as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json_list::<_, AddedJson>(outcomes);
    }
    for o in outcomes {
        out(format!(
            "{} {}: {} file(s), {} ({} new object(s), {} hashed)",
            if o.changed { "recorded" } else { "unchanged" },
            display_bytes(&o.rel),
            o.files,
            human_bytes(o.pointer.size),
            o.new_objects,
            o.hashed,
        ))?;
    }
    Ok(())
}

/// `cairn status --json`: `{"data": [...], "stages": [...]}`; `stages` lists the pipeline's
/// stages that are not up to date (empty without a cairn.yaml).
pub fn status_with_stages(
    statuses: &[TrackedStatus],
    stale: Option<&[cairn_app::pipeline::PlanEntry]>,
) -> Result<(), Failure> {
    let data: Vec<StatusJson> = statuses.iter().map(StatusJson::from).collect();
    json(&serde_json::json!({"data": data, "stages": stale.unwrap_or_default()}))
}

pub fn status(statuses: &[TrackedStatus], as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json_list::<_, StatusJson>(statuses);
    }
    let changed: Vec<&TrackedStatus> =
        statuses.iter().filter(|s| !s.changes.is_empty() || s.not_in_cache).collect();
    for s in &changed {
        if s.not_in_cache {
            out(format!(
                "{}: not in the cache{} (its manifest was never added or fetched here)",
                display_bytes(&s.rel),
                if s.missing { " and missing from the work tree" } else { "" }
            ))?;
            continue;
        }
        if s.missing {
            out(format!(
                "{}: missing from the work tree (run `cairn checkout` to restore it)",
                display_bytes(&s.rel)
            ))?;
            continue;
        }
        out(format!("{}:", display_bytes(&s.rel)))?;
        for c in &s.changes {
            out(format!("\t{:<9} {}", format!("{}:", c.change.name()), display_bytes(&c.path)))?;
        }
    }
    if changed.is_empty() {
        out(format!("{} tracked path(s), all up to date", statuses.len()))?;
    }
    Ok(())
}

pub fn checkout(outcomes: &[CheckoutOutcome], as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json_list::<_, CheckoutJson>(outcomes);
    }
    for o in outcomes {
        if o.written == 0 && o.removed == 0 {
            out(format!("{}: up to date ({} file(s))", display_bytes(&o.rel), o.unchanged))?;
        } else {
            out(format!(
                "{}: wrote {} file(s) ({}), removed {}, {} already up to date",
                display_bytes(&o.rel),
                o.written,
                human_bytes(o.written_bytes),
                o.removed,
                o.unchanged
            ))?;
        }
    }
    Ok(())
}

pub fn diff(entries: &[DiffEntry], as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json_list::<_, DiffJson>(entries);
    }
    for e in entries {
        let sizes = match (e.old, e.new) {
            (Some((_, a)), Some((_, b))) => format!("{} -> {}", human_bytes(a), human_bytes(b)),
            (Some((_, size)), None) | (None, Some((_, size))) => human_bytes(size),
            (None, None) => String::new(),
        };
        out(format!("{:<9} {}  ({sizes})", e.change.name(), display_bytes(&e.path)))?;
    }
    let count = |c: Change| entries.iter().filter(|e| e.change == c).count();
    out(format!(
        "{} added, {} modified, {} deleted",
        count(Change::Added),
        count(Change::Modified),
        count(Change::Deleted)
    ))
}

pub fn files(files: &[ListedFile], as_json: bool) -> Result<(), Failure> {
    if as_json {
        return json_list::<_, FileJson>(files);
    }
    for f in files {
        out(format!("{:>10}  {}", human_bytes(f.size), display_bytes(&f.path)))?;
    }
    Ok(())
}

pub use cairn_app::time::format_time;

/// Writes generated text to stdout; a reader that stopped early (`| head`) is not an error.
pub fn write_stdout(bytes: &[u8]) -> Result<(), Failure> {
    match std::io::Write::write_all(&mut std::io::stdout(), bytes) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::user(format!("cannot write to stdout: {e}"), None))
        }
        _ => Ok(()),
    }
}

/// `cairn gc`'s report.
pub fn gc(summary: &cairn_app::content::GcSummary) -> String {
    use cairn_repo::GcScope;
    let mut lines = vec![format!("keeps {} object(s) referenced by:", summary.kept_objects)];
    for kept in &summary.kept_for {
        lines.push(format!("  {}: {} pointer(s)", kept.scope, kept.pointers));
    }
    if summary.scope == GcScope::WorkTree {
        lines.push(
            "  (not other branches or tags: their data is removed; `cairn gc` without --workspace keeps it)"
                .into(),
        );
    }
    let size = human_bytes(summary.unreferenced_bytes);
    let count = summary.unreferenced_objects;
    let flags = match summary.scope {
        GcScope::WorkTree => " --workspace",
        GcScope::AllCommits => " --all-commits",
        GcScope::Refs => "",
    };
    lines.push(if summary.deleted {
        format!("removed {count} object(s) nothing in that scope references, freed {size}")
    } else if count == 0 {
        "nothing to remove".to_owned()
    } else {
        format!(
            "would remove {count} object(s) nothing in that scope references, freeing {size}\nrun `cairn gc --force{flags}` to delete them"
        )
    });
    lines.join("\n")
}
