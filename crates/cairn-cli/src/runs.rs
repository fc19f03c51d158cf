//! `cairn exp show` and `cairn exp diff`: recorded runs as a table, CSV or JSON.

use cairn_app::Workspace;
use cairn_app::runs::{ShowRequest, short_id};

use crate::failure::Failure;
use crate::output::{json, out};

/// How `exp show` prints.
pub enum Format {
    Table,
    Csv,
    Json,
}

/// `cairn exp show`.
pub fn show(ws: &Workspace, request: &ShowRequest, format: Format) -> Result<(), Failure> {
    let table = cairn_app::runs::show(ws, request)?;
    if let Format::Json = format {
        return json(&table.runs);
    }
    let mut header = vec!["run".to_owned(), "status".to_owned(), "commit".to_owned()];
    header.extend(table.param_keys.iter().cloned());
    header.extend(table.metric_keys.iter().cloned());
    let rows: Vec<Vec<String>> = table
        .runs
        .iter()
        .map(|r| {
            let mut row = vec![
                short_id(&r.run_id).to_owned(),
                r.status.to_string(),
                r.commit.as_deref().map_or("-".into(), |c| {
                    format!("{}{}", &c[..c.len().min(8)], if r.dirty { "+" } else { "" })
                }),
            ];
            for k in &table.param_keys {
                row.push(r.params.get(k).cloned().unwrap_or_else(|| "-".into()));
            }
            for k in &table.metric_keys {
                row.push(r.metrics.get(k).map_or("-".into(), |v| format!("{v}")));
            }
            row
        })
        .collect();
    if let Format::Csv = format {
        let quote = |f: &String| {
            if f.contains([',', '"', '\n']) { format!("\"{}\"", f.replace('"', "\"\"")) } else { f.clone() }
        };
        out(header.iter().map(quote).collect::<Vec<_>>().join(","))?;
        for row in &rows {
            out(row.iter().map(quote).collect::<Vec<_>>().join(","))?;
        }
        return Ok(());
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|i| rows.iter().map(|r| r[i].len()).chain(std::iter::once(header[i].len())).max().unwrap_or(0))
        .collect();
    let line = |cells: &[String]| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join("  ")
    };
    out(line(&header).trim_end())?;
    for row in &rows {
        out(line(row).trim_end())?;
    }
    Ok(())
}

/// `cairn exp diff A B`.
pub fn diff(ws: &Workspace, a: &str, b: &str, all: bool, as_json: bool) -> Result<(), Failure> {
    let diff = cairn_app::runs::diff(ws, a, b, all)?;
    if as_json {
        return json(&diff);
    }
    let (a_id, b_id) = (short_id(&diff.old), short_id(&diff.new));
    if diff.differences.is_empty() {
        return out(format!("runs {a_id} and {b_id} have the same params and metrics"));
    }
    let width = diff.differences.iter().map(|d| d.key.len() + d.kind.len() + 1).max().unwrap_or(0).max(4);
    out(format!("{:<width$}  {:>12}  {:>12}", "", a_id, b_id))?;
    for d in &diff.differences {
        let name = format!("{} {}", d.kind, d.key);
        out(format!(
            "{name:<width$}  {:>12}  {:>12}",
            d.old.as_deref().unwrap_or("-"),
            d.new.as_deref().unwrap_or("-")
        ))?;
    }
    Ok(())
}
