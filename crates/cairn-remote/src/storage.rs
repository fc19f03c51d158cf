//! Where a remote lives: URLs, options, credentials, and the `object_store` client behind it.
//!
//! A remote is any [`object_store::ObjectStore`]: a local or network directory
//! (`LocalFileSystem`), S3-compatible storage (`AmazonS3`), or in tests the in-memory store.
//! That trait is the seam Cairn's transfer code is written against; adding GCS, Azure or HTTP
//! is a matter of building another client here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
#[cfg(feature = "s3")]
use std::time::Duration;

use object_store::ObjectStore;
use object_store::path::Path as StorePath;

use crate::RemoteError;

/// Options a remote may set (`cairn remote modify NAME KEY VALUE`).
pub const OPTIONS: &[(&str, &str)] = &[
    ("endpoint", "S3 endpoint URL, e.g. http://127.0.0.1:9000 (default: AWS)"),
    ("region", "S3 region (default: from the environment or profile, else us-east-1)"),
    ("path-style", "true to address buckets as ENDPOINT/BUCKET (default: true with an endpoint)"),
    ("profile", "AWS profile in ~/.aws/credentials and ~/.aws/config"),
    ("access-key-id", "S3 access key (better kept in the user config: cairn remote modify --user)"),
    ("secret-access-key", "S3 secret key (better kept in the user config)"),
    ("session-token", "S3 session token"),
    ("retries", "retries of a failed request, with exponential backoff (default 3)"),
    ("timeout", "seconds one request may take before it is retried (default 300)"),
    ("jobs", "concurrent transfers (default 8)"),
];

/// A configured remote: name, URL and options, as read from config files.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoteSpec {
    pub name: String,
    pub url: String,
    pub options: BTreeMap<String, String>,
}

/// Credentials and defaults from the process environment and the AWS shared files. The
/// library never reads them itself; the front end fills this in.
#[derive(Clone, Debug, Default)]
pub struct AwsEnvironment {
    pub access_key_id: Option<String>,
    pub secret_access_key: Option<String>,
    pub session_token: Option<String>,
    pub region: Option<String>,
    pub endpoint: Option<String>,
    /// `AWS_PROFILE`.
    pub profile: Option<String>,
    /// Contents of `~/.aws/credentials` (or `AWS_SHARED_CREDENTIALS_FILE`), if any.
    pub credentials_file: Option<String>,
    /// Contents of `~/.aws/config` (or `AWS_CONFIG_FILE`), if any.
    pub config_file: Option<String>,
}

/// Where a remote's URL points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Location {
    Directory(PathBuf),
    S3 { bucket: String, prefix: String },
}

impl Location {
    /// Parses `s3://bucket/prefix`, `file:///path`, or a plain absolute path. Relative paths
    /// must have been resolved by the caller.
    pub fn parse(url: &str) -> Result<Self, String> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if bucket.is_empty() {
                return Err("the bucket name is empty (expected s3://BUCKET/PREFIX)".into());
            }
            return Ok(Location::S3 {
                bucket: bucket.to_owned(),
                prefix: prefix.trim_matches('/').to_owned(),
            });
        }
        if let Some((scheme, _)) = url.split_once("://")
            && scheme != "file"
        {
            return Err(format!("`{scheme}://` remotes are not supported; use a directory path or s3://"));
        }
        let path = url.strip_prefix("file://").unwrap_or(url);
        if path.is_empty() {
            return Err("the path is empty".into());
        }
        let path = PathBuf::from(path);
        if !path.is_absolute() {
            return Err("a directory remote needs an absolute path here".into());
        }
        Ok(Location::Directory(path))
    }
}

/// The object store client and the key prefix everything lives under.
pub(crate) struct Storage {
    pub store: Arc<dyn ObjectStore>,
    pub prefix: StorePath,
    /// For a directory remote, its path: uploads are fsynced there (object_store's local
    /// store renames into place but never syncs, and an index must not outlive its pack).
    pub local_root: Option<PathBuf>,
}

fn option<'a>(spec: &'a RemoteSpec, key: &str) -> Option<&'a str> {
    spec.options.get(key).map(String::as_str).filter(|v| !v.is_empty())
}

pub(crate) fn parse_bool(spec: &RemoteSpec, key: &str) -> Result<Option<bool>, RemoteError> {
    match option(spec, key) {
        None => Ok(None),
        Some("true" | "yes" | "1") => Ok(Some(true)),
        Some("false" | "no" | "0") => Ok(Some(false)),
        Some(other) => Err(RemoteError::BadOption {
            remote: spec.name.clone(),
            key: key.to_owned(),
            value: other.to_owned(),
            reason: "expected true or false".into(),
        }),
    }
}

pub(crate) fn parse_count(spec: &RemoteSpec, key: &str) -> Result<Option<usize>, RemoteError> {
    option(spec, key)
        .map(|value| {
            value.parse::<usize>().map_err(|_| RemoteError::BadOption {
                remote: spec.name.clone(),
                key: key.to_owned(),
                value: value.to_owned(),
                reason: "expected a whole number".into(),
            })
        })
        .transpose()
}

/// Validates an option name and value before it is written to a config file.
pub fn check_option(remote: &str, key: &str, value: &str) -> Result<(), RemoteError> {
    if !OPTIONS.iter().any(|(name, _)| *name == key) {
        return Err(RemoteError::UnknownOption {
            remote: remote.to_owned(),
            key: key.to_owned(),
            known: OPTIONS.iter().map(|(name, _)| *name).collect::<Vec<_>>().join(", "),
        });
    }
    let mut spec = RemoteSpec { name: remote.to_owned(), ..Default::default() };
    spec.options.insert(key.to_owned(), value.to_owned());
    match key {
        "path-style" => parse_bool(&spec, key).map(drop),
        "retries" | "jobs" | "timeout" => parse_count(&spec, key).map(drop),
        "endpoint" if !(value.starts_with("http://") || value.starts_with("https://")) => {
            Err(RemoteError::BadOption {
                remote: remote.to_owned(),
                key: key.to_owned(),
                value: value.to_owned(),
                reason: "expected an http:// or https:// URL".into(),
            })
        }
        _ => Ok(()),
    }
}

/// Reads `key` of `[section]` from an INI-style AWS shared file.
pub fn ini_value(text: &str, section: &str, key: &str) -> Option<String> {
    let mut current = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            current = Some(name.trim().to_owned());
            continue;
        }
        if current.as_deref() == Some(section)
            && let Some((k, v)) = line.split_once('=')
            && k.trim() == key
        {
            return Some(v.trim().to_owned());
        }
    }
    None
}

pub(crate) fn open(spec: &RemoteSpec, aws: &AwsEnvironment) -> Result<Storage, RemoteError> {
    let location = Location::parse(&spec.url).map_err(|reason| RemoteError::InvalidUrl {
        remote: spec.name.clone(),
        url: spec.url.clone(),
        reason,
    })?;
    match location {
        Location::Directory(path) => {
            if !path.is_dir() {
                return Err(RemoteError::DirectoryMissing { remote: spec.name.clone(), path });
            }
            let store = object_store::local::LocalFileSystem::new_with_prefix(&path).map_err(|e| {
                RemoteError::InvalidUrl {
                    remote: spec.name.clone(),
                    url: spec.url.clone(),
                    reason: e.to_string(),
                }
            })?;
            Ok(Storage { store: Arc::new(store), prefix: StorePath::default(), local_root: Some(path) })
        }
        #[cfg(feature = "s3")]
        Location::S3 { bucket, prefix } => open_s3(spec, aws, bucket, prefix),
        #[cfg(not(feature = "s3"))]
        Location::S3 { .. } => {
            let _ = aws;
            Err(RemoteError::InvalidUrl {
                remote: spec.name.clone(),
                url: spec.url.clone(),
                reason: "this build of Cairn has no S3 support (the `s3` feature of cairn-remote)".into(),
            })
        }
    }
}

/// Opens an S3 (or S3-compatible) remote. About 100 lines: every setting is resolved here,
/// in one place, in the same precedence order (remote options, environment, shared files).
#[cfg(feature = "s3")]
fn open_s3(
    spec: &RemoteSpec,
    aws: &AwsEnvironment,
    bucket: String,
    prefix: String,
) -> Result<Storage, RemoteError> {
    use object_store::aws::AmazonS3Builder;
    let profile = option(spec, "profile").map(str::to_owned).or_else(|| aws.profile.clone());
    let profile_name = profile.clone().unwrap_or_else(|| "default".to_owned());
    let from_credentials_file =
        |key: &str| aws.credentials_file.as_deref().and_then(|text| ini_value(text, &profile_name, key));
    let config_section =
        if profile_name == "default" { "default".to_owned() } else { format!("profile {profile_name}") };
    let from_config_file =
        |key: &str| aws.config_file.as_deref().and_then(|text| ini_value(text, &config_section, key));
    // Precedence: remote options, then (unless a profile is named on the remote) environment
    // variables, then the shared files.
    let named_profile = option(spec, "profile").is_some();
    let pick = |key: &str, env: &Option<String>| -> Option<String> {
        option(spec, key).map(str::to_owned).or_else(|| if named_profile { None } else { env.clone() })
    };
    let access_key =
        pick("access-key-id", &aws.access_key_id).or_else(|| from_credentials_file("aws_access_key_id"));
    let secret_key = pick("secret-access-key", &aws.secret_access_key)
        .or_else(|| from_credentials_file("aws_secret_access_key"));
    let token =
        pick("session-token", &aws.session_token).or_else(|| from_credentials_file("aws_session_token"));
    let region = pick("region", &aws.region)
        .or_else(|| from_config_file("region"))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = pick("endpoint", &aws.endpoint).or_else(|| from_config_file("endpoint_url"));
    if profile.is_some() && access_key.is_none() {
        return Err(RemoteError::Credentials {
            remote: spec.name.clone(),
            url: spec.url.clone(),
            reason: format!("profile `{profile_name}` has no aws_access_key_id in the AWS credentials file"),
        });
    }

    let retries = parse_count(spec, "retries")?.unwrap_or(3);
    let retry = object_store::RetryConfig {
        backoff: object_store::BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            base: 2.0,
        },
        max_retries: retries,
        retry_timeout: Duration::from_secs(180),
    };
    let client = object_store::ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(parse_count(spec, "timeout")?.unwrap_or(300).max(1) as u64))
        .with_allow_http(endpoint.as_deref().is_some_and(|e| e.starts_with("http://")));
    let mut builder = AmazonS3Builder::new()
        .with_bucket_name(&bucket)
        .with_region(region)
        .with_retry(retry)
        .with_client_options(client);
    if let Some(endpoint) = &endpoint {
        let path_style = parse_bool(spec, "path-style")?.unwrap_or(true);
        builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(!path_style);
    } else if parse_bool(spec, "path-style")? == Some(true) {
        builder = builder.with_virtual_hosted_style_request(false);
    }
    match (access_key, secret_key) {
        (Some(id), Some(secret)) => {
            builder = builder.with_access_key_id(id).with_secret_access_key(secret);
            if let Some(token) = token {
                builder = builder.with_token(token);
            }
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(RemoteError::Credentials {
                remote: spec.name.clone(),
                url: spec.url.clone(),
                reason: "only one of the access key id and the secret access key is set".into(),
            });
        }
        // No static credentials: object_store tries instance metadata (EC2, ECS, web
        // identity). That answers from a cloud machine only; against a custom endpoint that
        // is down, it would hide the real problem behind a metadata-service error, so the
        // endpoint is checked first.
        (None, None) => {
            if let Some(endpoint) = &endpoint
                && let Err(reason) = reachable(endpoint)
            {
                return Err(RemoteError::Storage {
                    remote: spec.name.clone(),
                    url: spec.url.clone(),
                    action: format!("connect to the endpoint {endpoint}"),
                    failure: Failure::Unreachable,
                    message: reason,
                });
            }
        }
    }
    let store = builder.build().map_err(|e| RemoteError::InvalidUrl {
        remote: spec.name.clone(),
        url: spec.url.clone(),
        reason: e.to_string(),
    })?;
    Ok(Storage { store: Arc::new(store), prefix: StorePath::from(prefix), local_root: None })
}

/// Whether a TCP connection to the endpoint's host and port opens (within 3 s).
#[cfg(feature = "s3")]
fn reachable(endpoint: &str) -> Result<(), String> {
    use std::net::ToSocketAddrs;
    let url = url::Url::parse(endpoint).map_err(|e| format!("`{endpoint}` is not a URL: {e}"))?;
    let host = url.host_str().ok_or_else(|| format!("`{endpoint}` names no host"))?;
    let port = url.port_or_known_default().unwrap_or(443);
    let addresses: Vec<_> =
        (host, port).to_socket_addrs().map_err(|e| format!("cannot resolve `{host}`: {e}"))?.collect();
    let mut last = format!("`{host}` has no address");
    for address in addresses {
        match std::net::TcpStream::connect_timeout(&address, std::time::Duration::from_secs(3)) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("{address}: {e}"),
        }
    }
    Err(last)
}

/// Why a storage request failed, as far as the user needs to know.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure {
    NotFound,
    NoSuchBucket,
    BadCredentials,
    /// None were configured, and the cloud's metadata service gave none.
    NoCredentials,
    AccessDenied,
    Unreachable,
    Other,
}

impl Failure {
    pub fn describe(self) -> &'static str {
        match self {
            Failure::NotFound => "not found",
            Failure::NoSuchBucket => "the bucket does not exist",
            Failure::BadCredentials => "the credentials were rejected",
            Failure::NoCredentials => {
                "no credentials are configured, and no instance metadata service provided any"
            }
            Failure::AccessDenied => "permission denied",
            Failure::Unreachable => "the endpoint cannot be reached",
            Failure::Other => "request failed",
        }
    }
}

/// Classifies an `object_store` error from its variant and, for S3's XML error codes, its text.
pub(crate) fn classify(error: &object_store::Error) -> Failure {
    let text = error_chain(error);
    // S3 answers unknown keys with 403, which object_store reports as permission denied
    // on writes: the error code in the body says which it is.
    let bad_credentials = ["InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken", "ExpiredToken"]
        .iter()
        .any(|code| text.contains(code));
    // Without credentials, object_store asks the instance metadata service; its failure
    // means "no credentials", not a permission problem on the bucket.
    let metadata_service = text.contains("169.254.169.254") || text.contains("169.254.170.2");
    match error {
        _ if bad_credentials => Failure::BadCredentials,
        _ if metadata_service => Failure::NoCredentials,
        object_store::Error::NotFound { .. } if text.contains("NoSuchBucket") => Failure::NoSuchBucket,
        object_store::Error::NotFound { .. } => Failure::NotFound,
        object_store::Error::PermissionDenied { .. } => Failure::AccessDenied,
        object_store::Error::Unauthenticated { .. } => Failure::BadCredentials,
        _ if text.contains("NoSuchBucket") => Failure::NoSuchBucket,
        _ if text.contains("AccessDenied") || text.contains("Forbidden") || text.contains("403") => {
            Failure::AccessDenied
        }
        _ if ["Connection refused", "error sending request", "dns error", "connect", "timed out"]
            .iter()
            .any(|needle| text.contains(needle)) =>
        {
            Failure::Unreachable
        }
        _ => Failure::Other,
    }
}

/// The error and all its sources on one line.
pub(crate) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
    let mut source = error.source();
    while let Some(inner) = source {
        let piece = inner.to_string().split_whitespace().collect::<Vec<_>>().join(" ");
        if !text.contains(&piece) {
            text.push_str(": ");
            text.push_str(&piece);
        }
        source = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_metadata_service_means_no_credentials_not_a_denied_bucket() {
        let error = object_store::Error::Generic {
            store: "S3",
            source: "Error performing PUT http://169.254.169.254/latest/api/token: 403 Forbidden".into(),
        };
        assert_eq!(classify(&error), Failure::NoCredentials);
        let denied =
            object_store::Error::Generic { store: "S3", source: "AccessDenied: 403 Forbidden".into() };
        assert_eq!(classify(&denied), Failure::AccessDenied);
    }

    #[test]
    fn parses_urls() {
        assert_eq!(
            Location::parse("s3://bucket/some/prefix/").unwrap(),
            Location::S3 { bucket: "bucket".into(), prefix: "some/prefix".into() }
        );
        assert_eq!(
            Location::parse("s3://bucket").unwrap(),
            Location::S3 { bucket: "bucket".into(), prefix: String::new() }
        );
        assert_eq!(Location::parse("file:///mnt/nfs").unwrap(), Location::Directory("/mnt/nfs".into()));
        assert_eq!(Location::parse("/srv/data").unwrap(), Location::Directory("/srv/data".into()));
        assert!(Location::parse("s3:///x").is_err());
        assert!(Location::parse("gs://bucket").unwrap_err().contains("not supported"));
        assert!(Location::parse("relative/dir").is_err());
    }

    #[test]
    fn reads_aws_shared_files() {
        let text = "[default]\naws_access_key_id = AKIA1\n\n[team]\n# comment\naws_access_key_id=AKIA2\n";
        assert_eq!(ini_value(text, "default", "aws_access_key_id").as_deref(), Some("AKIA1"));
        assert_eq!(ini_value(text, "team", "aws_access_key_id").as_deref(), Some("AKIA2"));
        assert_eq!(ini_value(text, "other", "aws_access_key_id"), None);
    }

    #[test]
    fn validates_options() {
        assert!(check_option("o", "endpoint", "http://127.0.0.1:9000").is_ok());
        assert!(check_option("o", "endpoint", "127.0.0.1:9000").is_err());
        assert!(check_option("o", "path-style", "maybe").is_err());
        assert!(check_option("o", "jobs", "-1").is_err());
        assert!(matches!(check_option("o", "colour", "x"), Err(RemoteError::UnknownOption { .. })));
    }
}
