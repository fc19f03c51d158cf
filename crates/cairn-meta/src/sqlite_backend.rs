//! The embedded SQLite backend: one file, WAL journal (readers never block the writer), a busy
//! timeout so concurrent `cairn` processes wait for each other instead of failing.

use std::path::Path;
use std::time::Duration;

use rusqlite::types::ValueRef;
use rusqlite::{Connection, params_from_iter};

use crate::backend::{Backend, Tx, Value};
use crate::{MetaError, Result};

pub(crate) struct Sqlite {
    connection: Connection,
    location: String,
}

impl Sqlite {
    pub(crate) fn open(path: &Path) -> Result<Self> {
        let location = path.display().to_string();
        let failed =
            |e: rusqlite::Error| MetaError::Backend { location: location.clone(), message: e.to_string() };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            std::fs::create_dir_all(parent).map_err(|e| MetaError::Backend {
                location: location.clone(),
                message: format!("cannot create `{}`: {e}", parent.display()),
            })?;
        }
        let connection = Connection::open(path).map_err(failed)?;
        connection.busy_timeout(Duration::from_secs(30)).map_err(failed)?;
        connection.pragma_update(None, "journal_mode", "WAL").map_err(failed)?;
        connection.pragma_update(None, "synchronous", "NORMAL").map_err(failed)?;
        connection.pragma_update(None, "foreign_keys", "ON").map_err(failed)?;
        // Metric histories grow large: keep hot pages in memory (64 MiB of page cache, reads
        // through a 256 MiB map) instead of re-reading them with a syscall per page.
        connection.pragma_update(None, "cache_size", -65_536).map_err(failed)?;
        connection.pragma_update(None, "mmap_size", 268_435_456).map_err(failed)?;
        connection.pragma_update(None, "temp_store", "MEMORY").map_err(failed)?;
        Ok(Sqlite { connection, location })
    }
}

/// `$1` placeholders as SQLite's numbered `?1`.
fn numbered(sql: &str) -> String {
    sql.replace('$', "?")
}

fn to_sql(v: &Value) -> rusqlite::types::Value {
    use rusqlite::types::Value as S;
    match v {
        Value::Int(i) => S::Integer(*i),
        Value::Real(r) => S::Real(*r),
        Value::Text(t) => S::Text(t.clone()),
        Value::NullInt | Value::Null => S::Null,
    }
}

struct SqliteTx<'a> {
    tx: &'a rusqlite::Transaction<'a>,
    location: &'a str,
}

impl SqliteTx<'_> {
    fn failed(&self, sql: &str, e: rusqlite::Error) -> MetaError {
        MetaError::Backend {
            location: self.location.to_owned(),
            message: format!("{e} (in `{}`)", sql.trim()),
        }
    }
}

impl Tx for SqliteTx<'_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let values: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
        let mut statement = self.tx.prepare_cached(&numbered(sql)).map_err(|e| self.failed(sql, e))?;
        statement.execute(params_from_iter(values)).map(|n| n as u64).map_err(|e| self.failed(sql, e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let mut out = Vec::new();
        self.query_each(sql, params, &mut |row| out.push(row.to_vec()))?;
        Ok(out)
    }

    fn query_each(&mut self, sql: &str, params: &[Value], each: &mut dyn FnMut(&[Value])) -> Result<()> {
        let values: Vec<rusqlite::types::Value> = params.iter().map(to_sql).collect();
        let mut statement = self.tx.prepare_cached(&numbered(sql)).map_err(|e| self.failed(sql, e))?;
        let columns = statement.column_count();
        let mut rows = statement.query(params_from_iter(values)).map_err(|e| self.failed(sql, e))?;
        let mut buffer = Vec::with_capacity(columns);
        while let Some(row) = rows.next().map_err(|e| self.failed(sql, e))? {
            buffer.clear();
            for i in 0..columns {
                buffer.push(match row.get_ref(i).map_err(|e| self.failed(sql, e))? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => Value::Int(n),
                    ValueRef::Real(r) => Value::Real(r),
                    ValueRef::Text(t) | ValueRef::Blob(t) => Value::Text(match std::str::from_utf8(t) {
                        Ok(text) => text.to_owned(),
                        Err(_) => String::from_utf8_lossy(t).into_owned(),
                    }),
                });
            }
            each(&buffer);
        }
        Ok(())
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.tx.execute_batch(sql).map_err(|e| self.failed("migration", e))
    }
}

impl Backend for Sqlite {
    fn location(&self) -> &str {
        &self.location
    }

    fn transaction(&mut self, work: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let location = self.location.clone();
        let failed =
            |e: rusqlite::Error| MetaError::Backend { location: location.clone(), message: e.to_string() };
        // IMMEDIATE: take the write lock up front, so two writers queue on the busy timeout
        // instead of failing when one upgrades from reading.
        let tx = self
            .connection
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(failed)?;
        {
            let mut handle = SqliteTx { tx: &tx, location: &location };
            work(&mut handle)?;
        }
        tx.commit().map_err(failed)
    }
}
