//! Shared AWS plumbing: one SDK config for every client (region, endpoint, timeouts, retries)
//! and the classification of SDK errors into retryable and permanent kinds.

use std::fmt;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region};
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use serde::Deserialize;

/// AWS connection settings.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AwsConfig {
    /// AWS region; unset uses the SDK's default chain (env, profile, IMDS).
    pub region: Option<String>,
    /// Custom endpoint for both S3 and KMS (an emulator); unset means real AWS.
    pub endpoint_url: Option<String>,
    /// Endpoint for S3 only (overrides `endpoint_url` for S3): an S3-compatible store, a VPC
    /// endpoint, or a benchmark server.
    #[serde(default)]
    pub s3_endpoint_url: Option<String>,
    /// Endpoint for KMS only (overrides `endpoint_url` for KMS).
    #[serde(default)]
    pub kms_endpoint_url: Option<String>,
    /// Path-style S3 addressing; emulators need it. Defaults to true when an S3 endpoint is
    /// set.
    pub force_path_style: Option<bool>,
    /// Per-operation timeout in seconds (includes the SDK's own retries).
    #[serde(default = "default_operation_timeout")]
    pub operation_timeout_secs: u64,
}

fn default_operation_timeout() -> u64 {
    120
}

impl AwsConfig {
    /// The S3 endpoint, when not AWS's own.
    pub fn s3_endpoint(&self) -> Option<&str> {
        self.s3_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }

    /// The KMS endpoint, when not AWS's own.
    pub fn kms_endpoint(&self) -> Option<&str> {
        self.kms_endpoint_url
            .as_deref()
            .or(self.endpoint_url.as_deref())
    }

    /// Whether S3 is addressed path-style.
    pub fn path_style(&self) -> bool {
        self.force_path_style
            .unwrap_or(self.s3_endpoint().is_some())
    }
}

impl Default for AwsConfig {
    fn default() -> Self {
        Self {
            region: None,
            endpoint_url: None,
            s3_endpoint_url: None,
            kms_endpoint_url: None,
            force_path_style: None,
            operation_timeout_secs: default_operation_timeout(),
        }
    }
}

/// Attempts the SDK itself makes per request (standard mode) before an error reaches us.
pub const SDK_ATTEMPTS_PER_REQUEST: u32 = 3;
/// Time to establish a TCP/TLS connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The kind of an AWS failure, which alone decides whether dualseal retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AwsErrorKind {
    /// The bucket, key or KMS key does not exist.
    NotFound,
    /// Credentials or policy forbid the call.
    AccessDenied,
    /// No credentials could be found: a problem of the daemon's setup, not of any object.
    NoCredentials,
    /// The KMS key is disabled or pending deletion, or the request is invalid.
    Invalid,
    /// A conditional request's condition did not hold (HTTP 412).
    PreconditionFailed,
    /// Throttling (SlowDown, ThrottlingException, 429).
    Throttled,
    /// 5xx, timeouts, connection resets: try again later.
    Transient,
    /// Anything else.
    Other,
}

impl AwsErrorKind {
    /// Short name for reports (`AccessDenied`).
    pub fn code(self) -> &'static str {
        match self {
            Self::NotFound => "NotFound",
            Self::AccessDenied => "AccessDenied",
            Self::NoCredentials => "NoCredentials",
            Self::Invalid => "Invalid",
            Self::PreconditionFailed => "PreconditionFailed",
            Self::Throttled => "Throttled",
            Self::Transient => "Transient",
            Self::Other => "Other",
        }
    }

    /// Whether the same call can succeed later.
    pub fn is_retryable(self) -> bool {
        matches!(self, Self::Throttled | Self::Transient)
    }

    /// Whether a failure of this kind, with this message, is the daemon's (no credentials, an
    /// endpoint that cannot be reached) rather than one object's: a job meeting it parks
    /// instead of failing every object in turn.
    pub fn is_systemic(self, message: &str) -> bool {
        self == Self::NoCredentials
            || (self == Self::Transient && message.starts_with("could not send the request"))
    }
}

impl fmt::Display for AwsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::NotFound => "not found",
            Self::AccessDenied => "access denied (check the IAM and bucket/key policies)",
            Self::NoCredentials => "no AWS credentials were found (give dualseald an instance or task role, AWS_PROFILE, or AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY in its environment)",
            Self::Invalid => "rejected as invalid",
            Self::PreconditionFailed => "precondition failed",
            Self::Throttled => "throttled",
            Self::Transient => "transient failure",
            Self::Other => "failed",
        })
    }
}

/// The SDK configs of the S3 and KMS clients: one credential chain and region, each service at
/// its own endpoint when the config names one.
pub async fn service_configs(cfg: &AwsConfig) -> (aws_config::SdkConfig, aws_config::SdkConfig) {
    let base = sdk_config(cfg).await;
    let at = |url: Option<&str>| match url {
        Some(u) => base.to_builder().endpoint_url(u).build(),
        None => base.clone(),
    };
    (at(cfg.s3_endpoint()), at(cfg.kms_endpoint()))
}

/// Builds the SDK config shared by the S3 and KMS clients.
pub async fn sdk_config(cfg: &AwsConfig) -> aws_config::SdkConfig {
    let timeouts = TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_timeout(Duration::from_secs(cfg.operation_timeout_secs))
        .build();
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .timeout_config(timeouts)
        .retry_config(RetryConfig::standard().with_max_attempts(SDK_ATTEMPTS_PER_REQUEST));
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(url) = &cfg.endpoint_url {
        loader = loader.endpoint_url(url);
    }
    loader.load().await
}

/// Resolves the credentials of `sdk` once, as the first request would, so that a daemon
/// without any refuses to start instead of failing every object.
///
/// # Errors
/// The provider chain's reason, in words an operator can act on.
pub async fn check_credentials(sdk: &aws_config::SdkConfig) -> Result<(), String> {
    use aws_credential_types::provider::ProvideCredentials as _;
    let Some(provider) = sdk.credentials_provider() else {
        return Err(format!("{}", AwsErrorKind::NoCredentials));
    };
    provider
        .provide_credentials()
        .await
        .map(|_| ())
        .map_err(|e| format!("{}: {}", AwsErrorKind::NoCredentials, error_chain(&e)))
}

/// Classifies an SDK error and renders a message that names the service's code, never a body.
pub fn classify_sdk_error<E>(e: &SdkError<E, HttpResponse>) -> (AwsErrorKind, String)
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    match e {
        SdkError::TimeoutError(_) => (AwsErrorKind::Transient, "timed out".into()),
        SdkError::DispatchFailure(d) => {
            let chain = error_chain(e);
            // Missing credentials will not fix themselves by retrying: say so at once.
            let kind = if chain.contains("credentials") {
                AwsErrorKind::NoCredentials
            } else if d.is_user() {
                AwsErrorKind::Other
            } else {
                AwsErrorKind::Transient
            };
            (kind, format!("could not send the request: {chain}"))
        }
        SdkError::ResponseError(_) => (
            AwsErrorKind::Transient,
            format!("unreadable response: {}", error_chain(e)),
        ),
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            let code = ctx.err().code().unwrap_or("");
            let message = ctx.err().message().unwrap_or("");
            let kind = kind_of(code, status);
            (
                kind,
                format!("{code} (HTTP {status}) {message}")
                    .trim()
                    .to_owned(),
            )
        }
        _ => (AwsErrorKind::Other, error_chain(e)),
    }
}

fn kind_of(code: &str, status: u16) -> AwsErrorKind {
    match code {
        "SlowDown"
        | "Throttling"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "TooManyRequestsException"
        | "LimitExceededException" => AwsErrorKind::Throttled,
        "InternalError"
        | "ServiceUnavailable"
        | "KMSInternalException"
        | "DependencyTimeoutException"
        | "RequestTimeout" => AwsErrorKind::Transient,
        "NoSuchKey" | "NoSuchBucket" | "NotFoundException" | "NotFound" => AwsErrorKind::NotFound,
        "AccessDenied"
        | "AccessDeniedException"
        | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch" => AwsErrorKind::AccessDenied,
        "DisabledException"
        | "KMSInvalidStateException"
        | "InvalidKeyUsageException"
        | "InvalidCiphertextException"
        | "IncorrectKeyException"
        | "InvalidRequest"
        | "InvalidArgument"
        | "ValidationException"
        | "BadDigest"
        | "InvalidDigest" => AwsErrorKind::Invalid,
        "PreconditionFailed" => AwsErrorKind::PreconditionFailed,
        _ => match status {
            412 => AwsErrorKind::PreconditionFailed,
            429 | 503 => AwsErrorKind::Throttled,
            500..=599 => AwsErrorKind::Transient,
            404 => AwsErrorKind::NotFound,
            403 => AwsErrorKind::AccessDenied,
            400..=499 => AwsErrorKind::Invalid,
            _ => AwsErrorKind::Other,
        },
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(src) = cur {
        s.push_str(": ");
        s.push_str(&src.to_string());
        cur = src.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_and_5xx_retry_but_denials_do_not() {
        assert!(kind_of("SlowDown", 503).is_retryable());
        assert!(kind_of("ThrottlingException", 400).is_retryable());
        assert!(kind_of("", 502).is_retryable());
        assert!(!kind_of("AccessDenied", 403).is_retryable());
        assert!(!kind_of("DisabledException", 400).is_retryable());
        assert!(!kind_of("NoSuchKey", 404).is_retryable());
        assert_eq!(kind_of("Weird", 409), AwsErrorKind::Invalid);
    }
}
