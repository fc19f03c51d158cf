//! The PostgreSQL backend, for teams sharing one store.

use postgres::types::{ToSql, Type};
use postgres::{Client, NoTls};

use crate::backend::{Backend, Tx, Value};
use crate::{MetaError, Result, redact};

pub(crate) struct Postgres {
    client: Client,
    location: String,
}

impl Postgres {
    pub(crate) fn connect(url: &str) -> Result<Self> {
        let location = redact(url);
        let client = Client::connect(url, NoTls).map_err(|e| MetaError::Backend {
            location: location.clone(),
            message: format!(
                "cannot connect: {e}; check that the server is running and the URL's host, port, user and database"
            ),
        })?;
        Ok(Postgres { client, location })
    }
}

fn failed(location: &str, sql: &str, e: postgres::Error) -> MetaError {
    let message = match e.as_db_error() {
        Some(db) => format!("{} (in `{}`)", db.message(), sql.trim()),
        None => format!("{e} (in `{}`)", sql.trim()),
    };
    MetaError::Backend { location: location.to_owned(), message }
}

/// Owned parameters, typed so that NULLs have the type PostgreSQL expects.
fn owned(params: &[Value]) -> Vec<Box<dyn ToSql + Sync>> {
    params
        .iter()
        .map(|v| -> Box<dyn ToSql + Sync> {
            match v {
                Value::Int(i) => Box::new(*i),
                Value::Real(r) => Box::new(*r),
                Value::Text(t) => Box::new(t.clone()),
                Value::NullInt => Box::new(None::<i64>),
                Value::Null => Box::new(None::<String>),
            }
        })
        .collect()
}

struct PgTx<'a, 'b> {
    tx: &'a mut postgres::Transaction<'b>,
    location: &'a str,
}

impl Tx for PgTx<'_, '_> {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let owned = owned(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        self.tx.execute(sql, &refs).map_err(|e| failed(self.location, sql, e))
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Vec<Value>>> {
        let owned = owned(params);
        let refs: Vec<&(dyn ToSql + Sync)> = owned.iter().map(|b| b.as_ref()).collect();
        let rows = self.tx.query(sql, &refs).map_err(|e| failed(self.location, sql, e))?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let mut values = Vec::with_capacity(row.len());
            for (i, column) in row.columns().iter().enumerate() {
                let read = |e: postgres::Error| failed(self.location, sql, e);
                let value = match *column.type_() {
                    Type::INT8 => row.try_get::<_, Option<i64>>(i).map_err(read)?.map(Value::Int),
                    Type::INT4 => {
                        row.try_get::<_, Option<i32>>(i).map_err(read)?.map(|v| Value::Int(v.into()))
                    }
                    Type::FLOAT8 => row.try_get::<_, Option<f64>>(i).map_err(read)?.map(Value::Real),
                    Type::BOOL => {
                        row.try_get::<_, Option<bool>>(i).map_err(read)?.map(|b| Value::Int(b.into()))
                    }
                    _ => row.try_get::<_, Option<String>>(i).map_err(read)?.map(Value::Text),
                };
                values.push(value.unwrap_or(Value::Null));
            }
            out.push(values);
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.tx.batch_execute(sql).map_err(|e| failed(self.location, "migration", e))
    }
}

impl Backend for Postgres {
    fn location(&self) -> &str {
        &self.location
    }

    fn transaction(&mut self, work: &mut dyn FnMut(&mut dyn Tx) -> Result<()>) -> Result<()> {
        let location = self.location.clone();
        let mut tx = self.client.transaction().map_err(|e| failed(&location, "BEGIN", e))?;
        {
            let mut handle = PgTx { tx: &mut tx, location: &location };
            work(&mut handle)?;
        }
        tx.commit().map_err(|e| failed(&location, "COMMIT", e))
    }
}
