//! Checks on a stage's outputs: a command that must succeed, and built-in checks of tabular
//! files (CSV, Parquet): row count bounds, required columns, the largest null fraction.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::spec::{Check, TableCheck};

/// Runs one check in the repository root; `Err` says what failed.
pub fn run(check: &Check, root: &Path) -> Result<(), String> {
    match check {
        Check::Command { name, cmd } => {
            let output = Command::new("sh")
                .arg("-c")
                .arg(cmd)
                .current_dir(root)
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("check `{name}`: could not start `sh`: {e}"))?;
            if output.status.success() {
                return Ok(());
            }
            let said = String::from_utf8_lossy(&output.stderr);
            let said = said.trim();
            let tail: String = said
                .lines()
                .rev()
                .take(5)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<Vec<_>>()
                .join("\n  ");
            Err(format!(
                "check `{name}` failed: `{cmd}` exited with {}{}",
                output.status.code().map_or("a signal".to_owned(), |c| c.to_string()),
                if tail.is_empty() { String::new() } else { format!(":\n  {tail}") }
            ))
        }
        Check::Table { name, file, spec } => {
            let path = root.join(file);
            let table = if is_parquet(file) { parquet_stats(&path) } else { csv_stats(&path) }
                .map_err(|e| format!("check `{name}` on `{file}`: {e}"))?;
            table_check(spec, &table).map_err(|e| format!("check `{name}` failed on `{file}`: {e}"))
        }
    }
}

fn is_parquet(file: &str) -> bool {
    file.ends_with(".parquet") || file.ends_with(".pq")
}

/// What the built-in checks need to know about a table.
struct TableStats {
    rows: u64,
    /// (column, null count)
    columns: Vec<(String, u64)>,
}

fn table_check(spec: &TableCheck, table: &TableStats) -> Result<(), String> {
    if let Some(bounds) = &spec.rows {
        if let Some(min) = bounds.min
            && table.rows < min
        {
            return Err(format!("{} rows, fewer than the minimum {min}", table.rows));
        }
        if let Some(max) = bounds.max
            && table.rows > max
        {
            return Err(format!("{} rows, more than the maximum {max}", table.rows));
        }
    }
    let missing: Vec<&str> = spec
        .columns
        .iter()
        .filter(|c| !table.columns.iter().any(|(name, _)| name == *c))
        .map(String::as_str)
        .collect();
    if !missing.is_empty() {
        return Err(format!(
            "missing required column{} {}",
            if missing.len() == 1 { "" } else { "s" },
            quoted(&missing)
        ));
    }
    if let Some(limit) = spec.max_null_fraction
        && table.rows > 0
    {
        for (column, nulls) in &table.columns {
            let fraction = *nulls as f64 / table.rows as f64;
            if fraction > limit {
                return Err(format!(
                    "column `{column}` is {:.1}% empty ({nulls} of {} rows), above the limit of {:.1}%",
                    fraction * 100.0,
                    table.rows,
                    limit * 100.0
                ));
            }
        }
    }
    Ok(())
}

fn quoted(names: &[&str]) -> String {
    names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(", ")
}

/// Rows and empty fields per column of a CSV file (an empty field or `NA`/`null`/`NaN`
/// counts as null).
fn csv_stats(path: &Path) -> Result<TableStats, String> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(if path.extension().is_some_and(|e| e == "tsv") { b'\t' } else { b',' })
        .from_path(path)
        .map_err(|e| e.to_string())?;
    let headers: Vec<String> =
        reader.headers().map_err(|e| e.to_string())?.iter().map(str::to_owned).collect();
    let mut nulls = vec![0u64; headers.len()];
    let mut rows = 0u64;
    let mut record = csv::ByteRecord::new();
    while reader.read_byte_record(&mut record).map_err(|e| format!("row {}: {e}", rows + 1))? {
        rows += 1;
        for (i, field) in record.iter().enumerate().take(headers.len()) {
            if matches!(field, b"" | b"NA" | b"null" | b"NULL" | b"NaN" | b"nan") {
                nulls[i] += 1;
            }
        }
    }
    Ok(TableStats { rows, columns: headers.into_iter().zip(nulls).collect() })
}

/// Rows and null counts per top-level column of a Parquet file, from its footer statistics.
fn parquet_stats(path: &Path) -> Result<TableStats, String> {
    use parquet::file::reader::{FileReader, SerializedFileReader};
    let file = std::fs::File::open(path).map_err(|e| e.to_string())?;
    let reader = SerializedFileReader::new(file).map_err(|e| format!("not a readable Parquet file: {e}"))?;
    let metadata = reader.metadata();
    let schema = metadata.file_metadata().schema_descr();
    let mut columns: Vec<(String, u64)> =
        (0..schema.num_columns()).map(|i| (schema.column(i).path().string(), 0)).collect();
    let mut rows = 0u64;
    for group in metadata.row_groups() {
        rows += group.num_rows().max(0) as u64;
        for (i, column) in group.columns().iter().enumerate() {
            if let Some(nulls) = column.statistics().and_then(|s| s.null_count_opt()) {
                columns[i].1 += nulls;
            }
        }
    }
    Ok(TableStats { rows, columns })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::RowBounds;

    #[test]
    fn csv_checks() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.csv"), "a,b\n1,\n2,x\n3,y\n").unwrap();
        let spec = |min, columns: &[&str], nulls| TableCheck {
            file: "t.csv".into(),
            name: None,
            rows: Some(RowBounds { min: Some(min), max: None }),
            columns: columns.iter().map(|c| (*c).to_owned()).collect(),
            max_null_fraction: nulls,
        };
        let check = |s: TableCheck| {
            run(&Check::Table { name: "c".into(), file: "t.csv".into(), spec: s }, dir.path())
        };
        check(spec(3, &["a", "b"], Some(0.34))).unwrap();
        assert!(check(spec(4, &[], None)).unwrap_err().contains("3 rows, fewer than the minimum 4"));
        assert!(check(spec(1, &["c"], None)).unwrap_err().contains("missing required column `c`"));
        assert!(check(spec(1, &[], Some(0.2))).unwrap_err().contains("column `b` is 33.3% empty"));
        // The same checks on a Parquet file, from its footer statistics.
        write_parquet(&dir.path().join("t.parquet"));
        let parquet = |columns: &[&str], nulls| {
            let spec = TableCheck {
                file: "t.parquet".into(),
                name: None,
                rows: Some(RowBounds { min: Some(4), max: Some(4) }),
                columns: columns.iter().map(|c| (*c).to_owned()).collect(),
                max_null_fraction: nulls,
            };
            run(&Check::Table { name: "p".into(), file: "t.parquet".into(), spec }, dir.path())
        };
        parquet(&["id", "plan"], Some(0.75)).unwrap();
        assert!(parquet(&["age"], None).unwrap_err().contains("missing required column `age`"));
        assert!(parquet(&[], Some(0.5)).unwrap_err().contains("column `plan` is 75.0% empty (3 of 4 rows)"));
        std::fs::write(dir.path().join("bad.parquet"), "not parquet").unwrap();
        let bad = TableCheck {
            file: "bad.parquet".into(),
            name: None,
            rows: None,
            columns: vec![],
            max_null_fraction: None,
        };
        let err = run(&Check::Table { name: "b".into(), file: "bad.parquet".into(), spec: bad }, dir.path())
            .unwrap_err();
        assert!(err.contains("not a readable Parquet file"), "{err}");

        let cmd = Check::Command { name: "nonempty".into(), cmd: "echo bad >&2; exit 3".into() };
        let err = run(&cmd, dir.path()).unwrap_err();
        assert!(err.contains("exited with 3") && err.contains("bad"), "{err}");
    }

    /// Four rows: `id` 1..4, `plan` set only in the first row.
    fn write_parquet(path: &std::path::Path) {
        use parquet::data_type::{ByteArray, ByteArrayType, Int32Type};
        use parquet::file::properties::WriterProperties;
        use parquet::file::writer::SerializedFileWriter;
        use parquet::schema::parser::parse_message_type;
        use std::sync::Arc;
        let schema = Arc::new(
            parse_message_type("message t { required int32 id; optional binary plan (UTF8); }").unwrap(),
        );
        let file = std::fs::File::create(path).unwrap();
        let mut writer =
            SerializedFileWriter::new(file, schema, Arc::new(WriterProperties::builder().build())).unwrap();
        let mut group = writer.next_row_group().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column.typed::<Int32Type>().write_batch(&[1, 2, 3, 4], None, None).unwrap();
        column.close().unwrap();
        let mut column = group.next_column().unwrap().unwrap();
        column
            .typed::<ByteArrayType>()
            .write_batch(&[ByteArray::from("pro")], Some(&[1, 0, 0, 0]), None)
            .unwrap();
        column.close().unwrap();
        group.close().unwrap();
        writer.close().unwrap();
    }
}
