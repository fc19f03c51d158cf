//! What the library learns from this process's surroundings: the acting user and cloud
//! credentials, read from the environment and the user's files.

use std::path::PathBuf;

use cairn_remote::AwsEnvironment;

/// The CLI's [`cairn_app::Environment`]: `$USER` and the AWS variables and shared files.
pub struct Cli;

impl cairn_app::Environment for Cli {
    fn user(&self) -> String {
        user_name()
    }

    fn aws(&self) -> AwsEnvironment {
        aws_environment()
    }
}

/// Who is acting: `$USER` (or `$LOGNAME`), else the user Git would record here, else
/// `unknown`.
pub fn user_name() -> String {
    ["USER", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|u| !u.is_empty()))
        .or_else(|| {
            let cwd = std::env::current_dir().ok()?;
            cairn_git::GitRepo::discover(&cwd).ok()?.user_name()
        })
        .or_else(cairn_git::GitRepo::global_user_name)
        .unwrap_or_else(|| "unknown".into())
}

/// Credentials and defaults from the environment and the AWS shared files.
pub fn aws_environment() -> AwsEnvironment {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let read = |override_var: &str, default: &str| {
        let path = var(override_var).map(PathBuf::from).or_else(|| home.as_ref().map(|h| h.join(default)))?;
        std::fs::read_to_string(path).ok()
    };
    AwsEnvironment {
        access_key_id: var("AWS_ACCESS_KEY_ID"),
        secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
        session_token: var("AWS_SESSION_TOKEN"),
        region: var("AWS_REGION").or_else(|| var("AWS_DEFAULT_REGION")),
        endpoint: var("AWS_ENDPOINT_URL_S3").or_else(|| var("AWS_ENDPOINT_URL")),
        profile: var("AWS_PROFILE"),
        credentials_file: read("AWS_SHARED_CREDENTIALS_FILE", ".aws/credentials"),
        config_file: read("AWS_CONFIG_FILE", ".aws/config"),
    }
}
