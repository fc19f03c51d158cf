//! Who may use a team server: users and service accounts, and their API tokens.
//!
//! A token is `cairn_<id>_<secret>`: `id` (16 hex digits) names the row, `secret` (64 hex
//! digits, 256 random bits from the operating system) is shown once and stored only as its
//! BLAKE3 hash, which is enough for a secret of that strength (a slow password hash protects
//! low-entropy secrets; this one is not guessable). Tokens have a name, an optional expiry, and
//! can be revoked; a revoked or expired token authenticates nobody. There is no default user:
//! the first admin is created explicitly (`cairn user add NAME --admin`).

use crate::backend::{Tx, Value};
use crate::store::Store;
use crate::{MetaError, Result, now_ms};

/// A person or a service account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// A service account (a pipeline, a server) rather than a person.
    pub service: bool,
    pub admin: bool,
    pub created_ms: i64,
}

/// An API token as listed (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub id: String,
    pub user: String,
    pub name: String,
    pub created_ms: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

/// A token just created: its row, and the whole token, shown this once.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub token: Token,
    pub secret: String,
}

/// Who a request authenticated as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub user: String,
    pub admin: bool,
    pub token_id: String,
}

const TOKEN_PREFIX: &str = "cairn_";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| MetaError::Backend {
        location: "the operating system's random source".into(),
        message: e.to_string(),
    })?;
    Ok(hex(&buf))
}

fn secret_hash(secret: &str) -> String {
    blake3::hash(secret.as_bytes()).to_hex().to_string()
}

/// Splits `cairn_<id>_<secret>` into its id and secret.
fn parse_token(text: &str) -> Option<(&str, &str)> {
    let (id, secret) = text.strip_prefix(TOKEN_PREFIX)?.split_once('_')?;
    let hexes = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    (hexes(id, 16) && hexes(secret, 64)).then_some((id, secret))
}

/// A user or token name: letters, digits, `.`, `_`, `-`, `@`; 1 to 64 characters.
pub fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b'@'))
}

fn user_row(row: &[Value]) -> User {
    User {
        name: row[0].text(),
        service: row[1].int() != 0,
        admin: row[2].int() != 0,
        created_ms: row[3].int(),
    }
}

fn token_row(row: &[Value]) -> Token {
    Token {
        id: row[0].text(),
        user: row[1].text(),
        name: row[2].text(),
        created_ms: row[3].int(),
        expires_ms: row[4].opt_int(),
        revoked_ms: row[5].opt_int(),
        last_used_ms: row[6].opt_int(),
    }
}

const TOKEN_COLUMNS: &str = "id, user_name, name, created, expires, revoked, last_used";

fn user_exists(tx: &mut dyn Tx, name: &str) -> Result<bool> {
    Ok(!tx.query("SELECT 1 FROM users WHERE name = $1", &[name.into()])?.is_empty())
}

impl Store {
    /// Adds a user (or service account); an existing name is an error.
    pub fn create_user(&self, name: &str, service: bool, admin: bool) -> Result<User> {
        if !valid_name(name) {
            return Err(MetaError::BadName(name.to_owned()));
        }
        self.tx(|tx| {
            if user_exists(tx, name)? {
                return Err(MetaError::UserExists(name.to_owned()));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO users (name, service, admin, created) VALUES ($1, $2, $3, $4)",
                &[name.into(), i64::from(service).into(), i64::from(admin).into(), now.into()],
            )?;
            Ok(User { name: name.to_owned(), service, admin, created_ms: now })
        })
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<User>> {
        self.tx(|tx| {
            let rows = tx.query("SELECT name, service, admin, created FROM users ORDER BY name", &[])?;
            Ok(rows.iter().map(|r| user_row(r)).collect())
        })
    }

    /// Removes a user and every token of theirs.
    pub fn remove_user(&self, name: &str) -> Result<()> {
        self.tx(|tx| {
            if !user_exists(tx, name)? {
                return Err(MetaError::NoUser(name.to_owned()));
            }
            tx.execute("DELETE FROM tokens WHERE user_name = $1", &[name.into()])?;
            tx.execute("DELETE FROM users WHERE name = $1", &[name.into()])?;
            Ok(())
        })
    }

    /// Creates a token for `user`, valid until `expires_ms` (or until revoked).
    pub fn create_token(&self, user: &str, name: &str, expires_ms: Option<i64>) -> Result<NewToken> {
        if !valid_name(name) {
            return Err(MetaError::BadName(name.to_owned()));
        }
        let id = random_hex(8)?;
        let secret = random_hex(32)?;
        self.tx(|tx| {
            if !user_exists(tx, user)? {
                return Err(MetaError::NoUser(user.to_owned()));
            }
            let now = now_ms();
            tx.execute(
                "INSERT INTO tokens (id, user_name, name, hash, created, expires) VALUES ($1, $2, $3, $4, $5, $6)",
                &[id.as_str().into(), user.into(), name.into(), secret_hash(&secret).into(), now.into(), expires_ms.into()],
            )?;
            Ok(NewToken {
                token: Token {
                    id: id.clone(),
                    user: user.to_owned(),
                    name: name.to_owned(),
                    created_ms: now,
                    expires_ms,
                    revoked_ms: None,
                    last_used_ms: None,
                },
                secret: format!("{TOKEN_PREFIX}{id}_{secret}"),
            })
        })
    }

    /// Tokens (of one user, or everyone's), newest first.
    pub fn tokens(&self, user: Option<&str>) -> Result<Vec<Token>> {
        self.tx(|tx| {
            let rows = match user {
                Some(user) => tx.query(
                    &format!(
                        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE user_name = $1 ORDER BY created DESC, id"
                    ),
                    &[user.into()],
                )?,
                None => {
                    tx.query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens ORDER BY created DESC, id"), &[])?
                }
            };
            Ok(rows.iter().map(|r| token_row(r)).collect())
        })
    }

    /// Revokes a token (from now on it authenticates nobody); revoking twice is not an error.
    pub fn revoke_token(&self, id: &str) -> Result<Token> {
        self.tx(|tx| {
            let now = now_ms();
            tx.execute(
                "UPDATE tokens SET revoked = $1 WHERE id = $2 AND revoked IS NULL",
                &[now.into(), id.into()],
            )?;
            let rows =
                tx.query(&format!("SELECT {TOKEN_COLUMNS} FROM tokens WHERE id = $1"), &[id.into()])?;
            rows.first().map(|r| token_row(r)).ok_or_else(|| MetaError::NoToken(id.to_owned()))
        })
    }

    /// Who `token` (a whole `cairn_…` token) authenticates, at `now_ms`: `None` for a
    /// malformed, unknown, revoked or expired token. Records when it was last used.
    pub fn authenticate(&self, token: &str, now_ms: i64) -> Result<Option<Identity>> {
        let Some((id, secret)) = parse_token(token) else { return Ok(None) };
        let hash = secret_hash(secret);
        self.tx(|tx| {
            let rows = tx.query(
                "SELECT t.hash, t.expires, t.revoked, u.name, u.admin FROM tokens t JOIN users u ON u.name = t.user_name \
                 WHERE t.id = $1",
                &[id.into()],
            )?;
            let Some(row) = rows.first() else { return Ok(None) };
            // Compared in constant time: the hash of a guess says nothing about the stored one.
            let stored = row[0].text();
            let same = stored.len() == hash.len()
                && stored.bytes().zip(hash.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
            let expired = row[1].opt_int().is_some_and(|e| e <= now_ms);
            if !same || expired || row[2].opt_int().is_some() {
                return Ok(None);
            }
            tx.execute("UPDATE tokens SET last_used = $1 WHERE id = $2", &[now_ms.into(), id.into()])?;
            Ok(Some(Identity { user: row[3].text(), admin: row[4].int() != 0, token_id: id.to_owned() }))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_only_in_their_exact_shape() {
        let good = format!("cairn_{}_{}", "a".repeat(16), "b".repeat(64));
        assert_eq!(parse_token(&good), Some(("aaaaaaaaaaaaaaaa", &*"b".repeat(64))));
        for bad in ["", "cairn_", "cairn_x_y", &good[..good.len() - 1], &good.replace("cairn_", "cairm_")] {
            assert_eq!(parse_token(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_are_plain() {
        assert!(valid_name("alice") && valid_name("ci-bot@team.example"));
        assert!(!valid_name("") && !valid_name("a b") && !valid_name("x/y") && !valid_name(&"a".repeat(65)));
    }
}

/// One write a server took: who, from where, what, to which object, with what outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub time_ms: i64,
    /// The authenticated user, or `anonymous` on a server without `--auth`.
    pub user: String,
    pub address: String,
    pub method: String,
    pub path: String,
    /// The object it names: a run, experiment, model or version id or name, when it names one.
    pub object: String,
    pub status: i64,
    /// The request's JSON body (at most 4 KiB of it), what the write asked for.
    pub request: String,
}

/// Which audit entries to read.
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub since_ms: Option<i64>,
    pub user: Option<String>,
    /// Entries whose object contains this.
    pub object: Option<String>,
    pub limit: Option<usize>,
}

impl Store {
    /// Appends an entry. There is no way to change or delete one: the store has no such
    /// function, and no API offers one.
    pub fn append_audit(&self, entry: &AuditEntry) -> Result<()> {
        let id = format!("{:013}-{}", entry.time_ms.max(0), random_hex(8)?);
        self.tx(|tx| {
            tx.execute(
                "INSERT INTO audit (id, time, user_name, address, method, path, object, status, request) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
                &[
                    id.as_str().into(),
                    entry.time_ms.into(),
                    entry.user.as_str().into(),
                    entry.address.as_str().into(),
                    entry.method.as_str().into(),
                    entry.path.as_str().into(),
                    entry.object.as_str().into(),
                    entry.status.into(),
                    entry.request.as_str().into(),
                ],
            )
            .map(drop)
        })
    }

    /// Audit entries, oldest first.
    pub fn audit(&self, query: &AuditQuery) -> Result<Vec<AuditEntry>> {
        self.tx(|tx| {
            let mut clause = vec!["1 = 1".to_owned()];
            let mut params: Vec<Value> = Vec::new();
            if let Some(since) = query.since_ms {
                params.push(since.into());
                clause.push(format!("time >= ${}", params.len()));
            }
            if let Some(user) = &query.user {
                params.push(user.as_str().into());
                clause.push(format!("user_name = ${}", params.len()));
            }
            if let Some(object) = &query.object {
                params.push(format!("%{}%", object.replace(['%', '_'], "")).into());
                clause.push(format!("object LIKE ${}", params.len()));
            }
            let limit = query.limit.map(|n| format!(" LIMIT {n}")).unwrap_or_default();
            let rows = tx.query(
                &format!(
                    "SELECT time, user_name, address, method, path, object, status, request FROM audit WHERE {} \
                     ORDER BY id{limit}",
                    clause.join(" AND ")
                ),
                &params,
            )?;
            Ok(rows
                .iter()
                .map(|r| AuditEntry {
                    time_ms: r[0].int(),
                    user: r[1].text(),
                    address: r[2].text(),
                    method: r[3].text(),
                    path: r[4].text(),
                    object: r[5].text(),
                    status: r[6].int(),
                    request: r[7].text(),
                })
                .collect())
        })
    }
}
