//! Users, service accounts and API tokens (`cairn user`, `cairn token`): who may use a team
//! server. The store keeps only a hash of each token; the whole token is in the result of
//! [`create_token`], once.

use cairn_meta::identity::{Token, User};
use serde::Serialize;

use crate::{Result, Workspace};

/// A user as `cairn user list --json` shows it.
#[derive(Debug, Serialize)]
pub struct UserDocument {
    pub name: String,
    /// `user` or `service`.
    pub kind: &'static str,
    pub admin: bool,
    #[serde(serialize_with = "crate::time::serialize_iso")]
    pub created: i64,
}

impl From<User> for UserDocument {
    fn from(u: User) -> Self {
        UserDocument {
            name: u.name,
            kind: if u.service { "service" } else { "user" },
            admin: u.admin,
            created: u.created_ms,
        }
    }
}

/// A token as listed: never its secret.
#[derive(Debug, Serialize)]
pub struct TokenDocument {
    pub id: String,
    pub user: String,
    pub name: String,
    #[serde(serialize_with = "crate::time::serialize_iso")]
    pub created: i64,
    pub expires_ms: Option<i64>,
    pub revoked_ms: Option<i64>,
    pub last_used_ms: Option<i64>,
}

impl From<Token> for TokenDocument {
    fn from(t: Token) -> Self {
        TokenDocument {
            id: t.id,
            user: t.user,
            name: t.name,
            created: t.created_ms,
            expires_ms: t.expires_ms,
            revoked_ms: t.revoked_ms,
            last_used_ms: t.last_used_ms,
        }
    }
}

/// A token just created: the whole token (shown once), and its row.
#[derive(Debug, Serialize)]
pub struct CreatedToken {
    pub token: String,
    #[serde(flatten)]
    pub info: TokenDocument,
}

/// `user add`.
pub fn add_user(ws: &Workspace, name: &str, service: bool, admin: bool) -> Result<UserDocument> {
    Ok(ws.meta()?.create_user(name, service, admin)?.into())
}

/// `user list`.
pub fn users(ws: &Workspace) -> Result<Vec<UserDocument>> {
    Ok(ws.meta()?.users()?.into_iter().map(UserDocument::from).collect())
}

/// `user remove` (and every token of theirs).
pub fn remove_user(ws: &Workspace, name: &str) -> Result<()> {
    Ok(ws.meta()?.remove_user(name)?)
}

/// `token create`: a token for `user`, valid for `valid_ms` (or until revoked).
pub fn create_token(ws: &Workspace, user: &str, name: &str, valid_ms: Option<i64>) -> Result<CreatedToken> {
    let expires = valid_ms.map(|ms| cairn_meta::now_ms() + ms);
    let created = ws.meta()?.create_token(user, name, expires)?;
    Ok(CreatedToken { token: created.secret, info: created.token.into() })
}

/// `token list`.
pub fn tokens(ws: &Workspace, user: Option<&str>) -> Result<Vec<TokenDocument>> {
    Ok(ws.meta()?.tokens(user)?.into_iter().map(TokenDocument::from).collect())
}

/// `token revoke`.
pub fn revoke_token(ws: &Workspace, id: &str) -> Result<TokenDocument> {
    Ok(ws.meta()?.revoke_token(id)?.into())
}

/// One audit entry as `cairn audit --json` shows it.
#[derive(Debug, Serialize)]
pub struct AuditDocument {
    #[serde(serialize_with = "crate::time::serialize_iso")]
    pub time: i64,
    pub user: String,
    pub address: String,
    pub method: String,
    pub path: String,
    pub object: String,
    pub status: i64,
    /// The start of the JSON body the write sent.
    pub request: String,
}

/// Which audit entries `cairn audit` shows.
#[derive(Debug, Default)]
pub struct AuditRequest {
    /// `1h`, `7d`: only this recent.
    pub since: Option<String>,
    pub user: Option<String>,
    pub object: Option<String>,
}

/// `cairn audit`: the writes servers took, oldest first.
pub fn audit(ws: &Workspace, request: &AuditRequest) -> Result<Vec<AuditDocument>> {
    let since_ms = match &request.since {
        Some(text) => Some(
            cairn_meta::now_ms()
                - text
                    .parse::<cairn_units::Duration>()
                    .map_err(|e| crate::Error::Usage(format!("--since {text}: {e}")))?
                    .as_millis_i64(),
        ),
        None => None,
    };
    let query = cairn_meta::identity::AuditQuery {
        since_ms,
        user: request.user.clone(),
        object: request.object.clone(),
        limit: None,
    };
    Ok(ws
        .meta()?
        .audit(&query)?
        .into_iter()
        .map(|e| AuditDocument {
            time: e.time_ms,
            user: e.user,
            address: e.address,
            method: e.method,
            path: e.path,
            object: e.object,
            status: e.status,
            request: e.request,
        })
        .collect())
}
