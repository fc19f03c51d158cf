//! `cairn user` and `cairn token`: who may use a team server.

use cairn_app::Workspace;
use cairn_app::identity;

use crate::args::{TokenCommand, UserCommand};
use crate::failure::Failure;
use crate::output::{self, out};

/// `cairn user add|list|remove`.
pub fn user(ws: &Workspace, command: UserCommand, quiet: bool) -> Result<(), Failure> {
    match command {
        UserCommand::Add { name, admin, service, output } => {
            let added = identity::add_user(ws, &name, service, admin)?;
            if output.json {
                return output::json(&added);
            }
            if !quiet {
                let role = if added.admin { ", admin" } else { "" };
                out(format!("added {} `{}`{role}", added.kind, added.name))?;
            }
            Ok(())
        }
        UserCommand::List { output } => {
            let users = identity::users(ws)?;
            if output.json {
                return output::json(&users);
            }
            for u in &users {
                out(format!("{:<24} {:<8} {}", u.name, u.kind, if u.admin { "admin" } else { "" }))?;
            }
            Ok(())
        }
        UserCommand::Remove { name } => {
            identity::remove_user(ws, &name)?;
            if !quiet {
                out(format!("removed `{name}` and their tokens"))?;
            }
            Ok(())
        }
    }
}

fn when(ms: Option<i64>) -> String {
    ms.map_or_else(|| "-".to_owned(), output::format_time)
}

/// `cairn token create|list|revoke`.
pub fn token(ws: &Workspace, command: TokenCommand, quiet: bool) -> Result<(), Failure> {
    match command {
        TokenCommand::Create { name, user, expires, output } => {
            let valid = expires.map(cairn_units::Duration::as_millis_i64);
            let created = identity::create_token(ws, &user, &name, valid)?;
            if output.json {
                return output::json(&created);
            }
            // The token alone on stdout (for `$(cairn token create … -q)`); the rest on stderr.
            out(&created.token)?;
            if !quiet {
                eprintln!(
                    "token `{}` ({}) for `{}`, valid until {}: it is shown only this once",
                    created.info.name,
                    created.info.id,
                    created.info.user,
                    created.info.expires_ms.map_or_else(|| "revoked".to_owned(), output::format_time)
                );
            }
            Ok(())
        }
        TokenCommand::List { user, output } => {
            let tokens = identity::tokens(ws, user.as_deref())?;
            if output.json {
                return output::json(&tokens);
            }
            for t in &tokens {
                let state = if t.revoked_ms.is_some() { "revoked" } else { "active" };
                out(format!(
                    "{}  {:<16} {:<16} {:<8} expires {}  last used {}",
                    t.id,
                    t.user,
                    t.name,
                    state,
                    when(t.expires_ms),
                    when(t.last_used_ms)
                ))?;
            }
            Ok(())
        }
        TokenCommand::Revoke { id } => {
            let revoked = identity::revoke_token(ws, &id)?;
            if !quiet {
                out(format!("revoked token `{}` ({}) of `{}`", revoked.name, revoked.id, revoked.user))?;
            }
            Ok(())
        }
    }
}

/// `cairn audit`.
pub fn audit(ws: &Workspace, request: &identity::AuditRequest, as_json: bool) -> Result<(), Failure> {
    let entries = identity::audit(ws, request)?;
    if as_json {
        return output::json(&entries);
    }
    for e in &entries {
        out(format!(
            "{}  {:<12} {:<21} {} {} {}  {}",
            output::format_time(e.time),
            e.user,
            e.address,
            e.status,
            e.method,
            e.path,
            e.object
        ))?;
    }
    Ok(())
}
