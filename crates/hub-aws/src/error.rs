//! The errors of the AWS adapters: what failed (the service and operation), the kind of failure
//! read from the SDK's error metadata, and how each kind becomes a store or queue error.

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{ProvideErrorMetadata, SdkError};
use hub_core::ports::{QueueError, StoreError};

/// The AWS service a call went to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    DynamoDb,
    S3,
    Sqs,
    SecretsManager,
}

impl Service {
    pub fn name(self) -> &'static str {
        match self {
            Service::DynamoDb => "dynamodb",
            Service::S3 => "s3",
            Service::Sqs => "sqs",
            Service::SecretsManager => "secretsmanager",
        }
    }
}

/// How an AWS call failed. The kind is the decision: whether, and how soon, the same call can
/// succeed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallKind {
    /// The request rate or the provisioned throughput is exceeded: retry later, slower.
    Throttled,
    /// No answer (timeout, connection or I/O failure) or the service failed (5xx): retry later.
    Unavailable,
    /// A write condition did not hold, or another transaction was writing the same item:
    /// re-read and retry.
    Conflict,
    /// The item, item collection or message is over the service's size limits: retrying will
    /// not help.
    TooLarge,
    /// The table, index, queue, bucket, object or secret does not exist.
    NotFound,
    /// The service refused the request for good (validation, access denied, a bad request).
    Permanent,
}

impl CallKind {
    /// The kind of a failed SDK call: how it failed before an answer, or the error code and
    /// HTTP status the service answered with.
    pub fn of<E: ProvideErrorMetadata>(e: &SdkError<E, HttpResponse>) -> Self {
        match e {
            SdkError::ConstructionFailure(_) => CallKind::Permanent,
            SdkError::DispatchFailure(d) if d.is_user() => CallKind::Permanent,
            SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
                CallKind::Unavailable
            }
            SdkError::ServiceError(s) => {
                Self::of_answer(s.err().code(), s.err().message(), Some(s.raw().status().as_u16()))
            }
            // A failure the SDK does not classify: assume it passes.
            _ => CallKind::Unavailable,
        }
    }

    /// The kind of a service's answer from its error code (`ThrottlingException`), message
    /// and HTTP status.
    pub fn of_answer(code: Option<&str>, message: Option<&str>, status: Option<u16>) -> Self {
        let too_large = |m: Option<&str>| {
            m.is_some_and(|m| {
                let m = m.to_ascii_lowercase();
                m.contains("item size") || m.contains("size has exceeded")
            })
        };
        match code.unwrap_or_default() {
            "ConditionalCheckFailedException"
            | "ConditionalCheckFailed"
            | "TransactionConflictException"
            | "TransactionConflict" => CallKind::Conflict,
            "ProvisionedThroughputExceededException"
            | "ProvisionedThroughputExceeded"
            | "ThrottlingException"
            | "ThrottlingError"
            | "Throttling"
            | "ThrottledException"
            | "RequestLimitExceeded"
            | "LimitExceededException"
            | "TooManyRequestsException"
            | "RequestThrottled"
            | "RequestThrottledException"
            | "KmsThrottled"
            | "SlowDown" => CallKind::Throttled,
            "ItemCollectionSizeLimitExceededException"
            | "ItemCollectionSizeLimitExceeded"
            | "EntityTooLarge"
            | "BatchRequestTooLong" => CallKind::TooLarge,
            "ValidationException" | "ValidationError" if too_large(message) => CallKind::TooLarge,
            "ResourceNotFoundException"
            | "QueueDoesNotExist"
            | "AWS.SimpleQueueService.NonExistentQueue"
            | "NoSuchBucket"
            | "NoSuchKey"
            | "NotFound" => CallKind::NotFound,
            "InternalServerError"
            | "InternalFailure"
            | "InternalError"
            | "InternalServiceError"
            | "ServiceUnavailable"
            | "ServiceUnavailableException"
            | "RequestTimeout"
            | "RequestTimeoutException"
            | "TransactionInProgressException" => CallKind::Unavailable,
            _ => match status {
                Some(429) => CallKind::Throttled,
                Some(s) if s >= 500 => CallKind::Unavailable,
                _ => CallKind::Permanent,
            },
        }
    }

    /// A stable name of the kind, for logs and metrics (renaming one is a breaking change).
    pub fn code(self) -> &'static str {
        match self {
            CallKind::Throttled => "aws_throttled",
            CallKind::Unavailable => "aws_unavailable",
            CallKind::Conflict => "aws_conflict",
            CallKind::TooLarge => "aws_too_large",
            CallKind::NotFound => "aws_not_found",
            CallKind::Permanent => "aws_permanent",
        }
    }

    /// Whether the same call, made again (after re-reading, for a conflict), can succeed.
    pub fn is_retryable(self) -> bool {
        matches!(self, CallKind::Throttled | CallKind::Unavailable | CallKind::Conflict)
    }
}

/// A setting of the AWS shell (an environment variable the template sets) that is missing or
/// cannot be used: the cold start fails with it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SettingsError {
    #[error("{0} is not set")]
    Missing(&'static str),
    #[error("{name}=`{value}` is not a whole number")]
    NotANumber { name: &'static str, value: String },
    /// `range` in words: `at least 1`, `between 1 and 1024`.
    #[error("{name} must be {range}")]
    OutOfRange { name: &'static str, range: &'static str },
    #[error("{name}: `{value}` is not an address or CIDR network")]
    BadNetwork { name: &'static str, value: String },
    #[error("{name}=`{value}`: expected {expected}")]
    BadChoice { name: &'static str, value: String, expected: &'static str },
}

impl SettingsError {
    /// A stable name of the kind, for logs (renaming one is a breaking change).
    pub fn code(&self) -> &'static str {
        match self {
            SettingsError::Missing(_) => "setting_missing",
            SettingsError::NotANumber { .. } => "setting_not_a_number",
            SettingsError::OutOfRange { .. } => "setting_out_of_range",
            SettingsError::BadNetwork { .. } => "setting_bad_network",
            SettingsError::BadChoice { .. } => "setting_bad_choice",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// A call to AWS failed. `detail` is the SDK's error with its causes, for the operator.
    #[error("AWS call failed: {detail}")]
    Call { service: Service, operation: &'static str, kind: CallKind, detail: String },
    /// A request could not be built from what we gave the SDK (a bug of ours).
    #[error("invalid request: {0}")]
    Build(String),
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// A mapping file does not fit one item.
    #[error("{name}: {bytes} bytes; a mapping file can have at most {max}")]
    MappingFileTooLarge { name: String, bytes: usize, max: usize },
    /// The mapping set in force was stored in a layout this hub no longer reads.
    #[error("mapping set v{version} was stored by an older version of the hub; push the mappings again")]
    MappingSetOutdated { version: u64 },
    /// The pointer names a file that is not stored.
    #[error("mapping set v{version}: file {name} is missing")]
    MappingFileMissing { version: u64, name: String },
    /// The stored mapping set does not compile here (e.g. a secret it needs is not held).
    #[error("mapping set v{version} does not compile:\n{}", diagnostics.join("\n"))]
    MappingSetInvalid { version: u64, diagnostics: Vec<String> },
    /// Another push put version `version` in force first.
    #[error("another push made version {version} first; push again")]
    PushConflict { version: u64 },
    #[error("secret {id} has no string value (a JSON object is expected)")]
    SecretNotText { id: String },
    /// `reason` names the kind of JSON error only: serde's message may quote the secret.
    #[error("secret {id} is not a JSON object of strings ({reason})")]
    SecretNotObject { id: String, reason: &'static str },
}

impl AwsError {
    /// A failed SDK call to `service`'s `operation`, its kind read from the SDK error.
    pub fn call<E>(service: Service, operation: &'static str, e: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        AwsError::Call { service, operation, kind: CallKind::of(e), detail: crate::sdk_error(e) }
    }

    /// [`AwsError::call`] on DynamoDB.
    pub fn dynamodb<E>(operation: &'static str, e: &SdkError<E, HttpResponse>) -> Self
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        Self::call(Service::DynamoDb, operation, e)
    }

    pub fn build(e: impl std::fmt::Display) -> Self {
        AwsError::Build(e.to_string())
    }

    /// The kind of a failed call; `None` for the errors that are not calls.
    pub fn call_kind(&self) -> Option<CallKind> {
        match self {
            AwsError::Call { kind, .. } => Some(*kind),
            _ => None,
        }
    }

    /// Whether doing the same thing again (after re-reading, for a conflict) can succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            AwsError::Call { kind, .. } => kind.is_retryable(),
            AwsError::PushConflict { .. } => true,
            _ => false,
        }
    }

    /// A stable name of the kind, for logs and metrics (renaming one is a breaking change).
    pub fn code(&self) -> &'static str {
        match self {
            AwsError::Call { kind, .. } => kind.code(),
            AwsError::Build(_) => "aws_bad_request",
            AwsError::Settings(e) => e.code(),
            AwsError::MappingFileTooLarge { .. } => "mapping_file_too_large",
            AwsError::MappingSetOutdated { .. } => "mapping_set_outdated",
            AwsError::MappingFileMissing { .. } => "mapping_file_missing",
            AwsError::MappingSetInvalid { .. } => "mapping_set_invalid",
            AwsError::PushConflict { .. } => "mapping_push_conflict",
            AwsError::SecretNotText { .. } => "secret_not_text",
            AwsError::SecretNotObject { .. } => "secret_not_object",
        }
    }
}

impl From<AwsError> for StoreError {
    fn from(e: AwsError) -> Self {
        let message = e.to_string();
        match e {
            AwsError::Call { kind: CallKind::Conflict, .. } | AwsError::PushConflict { .. } => {
                StoreError::Conflict(message)
            }
            AwsError::Call { kind: CallKind::TooLarge, .. } | AwsError::MappingFileTooLarge { .. } => {
                StoreError::TooLarge(message)
            }
            // Throttling and outages pass. A missing table or a refused request is a deployment
            // fault (a resource or a permission not in place yet) that an operator fixes: the
            // work waits for it, it is not given up.
            AwsError::Call { .. } => StoreError::Unavailable(message),
            _ => StoreError::Corrupt(message),
        }
    }
}

impl From<AwsError> for QueueError {
    fn from(e: AwsError) -> Self {
        match e.call_kind() {
            // The store stays the record of the job: a job not queued is swept later.
            Some(CallKind::TooLarge | CallKind::Permanent) | None => QueueError::Invalid(e.to_string()),
            Some(_) => QueueError::Unavailable(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_dynamodb::error::ErrorMetadata;
    use aws_sdk_dynamodb::operation::put_item::PutItemError;

    fn answered(code: &str, message: &str, status: u16) -> SdkError<PutItemError, HttpResponse> {
        let meta = ErrorMetadata::builder().code(code).message(message).build();
        let raw =
            HttpResponse::new(status.try_into().expect("status"), aws_sdk_s3::primitives::SdkBody::empty());
        SdkError::service_error(PutItemError::generic(meta), raw)
    }

    fn put_error(code: &str, message: &str, status: u16) -> AwsError {
        AwsError::dynamodb("PutItem", &answered(code, message, status))
    }

    #[test]
    fn sdk_errors_are_classified_by_their_code() {
        let cases = [
            ("ThrottlingException", "", 400, CallKind::Throttled),
            ("ProvisionedThroughputExceededException", "", 400, CallKind::Throttled),
            ("RequestLimitExceeded", "", 400, CallKind::Throttled),
            ("ConditionalCheckFailedException", "The conditional request failed", 400, CallKind::Conflict),
            ("ItemCollectionSizeLimitExceededException", "", 400, CallKind::TooLarge),
            (
                "ValidationException",
                "Item size has exceeded the maximum allowed size",
                400,
                CallKind::TooLarge,
            ),
            ("ValidationException", "One or more parameter values were invalid", 400, CallKind::Permanent),
            ("ResourceNotFoundException", "Requested resource not found", 400, CallKind::NotFound),
            ("AccessDeniedException", "", 400, CallKind::Permanent),
            ("InternalServerError", "", 500, CallKind::Unavailable),
            ("SomethingNew", "", 503, CallKind::Unavailable),
            ("SomethingNew", "", 429, CallKind::Throttled),
        ];
        for (code, message, status, kind) in cases {
            let e = put_error(code, message, status);
            assert_eq!(e.call_kind(), Some(kind), "{code} {message}");
            assert_eq!(e.code(), kind.code());
            assert_eq!(e.is_retryable(), kind.is_retryable(), "{code}");
        }
        assert!(put_error("ThrottlingException", "", 400).is_retryable());
        assert!(!put_error("AccessDeniedException", "", 400).is_retryable());
        assert_eq!(put_error("ThrottlingException", "", 400).code(), "aws_throttled");
    }

    #[test]
    fn failures_without_an_answer_are_retryable() {
        let timeout: SdkError<PutItemError, HttpResponse> = SdkError::timeout_error("took too long");
        assert_eq!(CallKind::of(&timeout), CallKind::Unavailable);
        let io = SdkError::<PutItemError, HttpResponse>::dispatch_failure(
            aws_sdk_dynamodb::error::ConnectorError::io("connection reset".into()),
        );
        assert_eq!(CallKind::of(&io), CallKind::Unavailable);
        let built: SdkError<PutItemError, HttpResponse> = SdkError::construction_failure("no table name");
        assert_eq!(CallKind::of(&built), CallKind::Permanent);
    }

    #[test]
    fn store_and_queue_errors_keep_the_kind() {
        let store = |e: AwsError| StoreError::from(e);
        assert!(matches!(store(put_error("ThrottlingException", "", 400)), StoreError::Unavailable(_)));
        assert!(matches!(
            store(put_error("ConditionalCheckFailedException", "", 400)),
            StoreError::Conflict(_)
        ));
        assert!(matches!(
            store(put_error("ValidationException", "Item size has exceeded the maximum allowed size", 400)),
            StoreError::TooLarge(_)
        ));
        assert!(matches!(store(put_error("ResourceNotFoundException", "", 400)), StoreError::Unavailable(_)));
        assert!(matches!(store(AwsError::PushConflict { version: 3 }), StoreError::Conflict(_)));
        assert!(matches!(
            store(AwsError::MappingFileTooLarge { name: "a.yaml".into(), bytes: 9, max: 1 }),
            StoreError::TooLarge(_)
        ));
        assert!(matches!(store(AwsError::MappingSetOutdated { version: 1 }), StoreError::Corrupt(_)));
        assert!(matches!(store(AwsError::build("no key")), StoreError::Corrupt(_)));
        let e = store(put_error("ThrottlingException", "slow down", 400));
        assert!(e.is_retryable() && e.to_string().starts_with("store unavailable: AWS call failed: "), "{e}");

        let queue = |e: AwsError| QueueError::from(e);
        assert!(matches!(queue(put_error("ThrottlingException", "", 400)), QueueError::Unavailable(_)));
        assert!(matches!(queue(put_error("AccessDeniedException", "", 400)), QueueError::Invalid(_)));
        assert!(matches!(queue(put_error("BatchRequestTooLong", "", 400)), QueueError::Invalid(_)));
    }

    #[test]
    fn other_errors_keep_their_text_and_code() {
        let cases: [(AwsError, &str, &str); 4] = [
            (
                AwsError::PushConflict { version: 4 },
                "mapping_push_conflict",
                "another push made version 4 first; push again",
            ),
            (
                AwsError::MappingSetInvalid {
                    version: 2,
                    diagnostics: vec!["a.yaml:1: x".into(), "b".into()],
                },
                "mapping_set_invalid",
                "mapping set v2 does not compile:\na.yaml:1: x\nb",
            ),
            (SettingsError::Missing("HUB_TABLE").into(), "setting_missing", "HUB_TABLE is not set"),
            (
                SettingsError::OutOfRange { name: "HUB_LIST_SHARDS", range: "between 1 and 1024" }.into(),
                "setting_out_of_range",
                "HUB_LIST_SHARDS must be between 1 and 1024",
            ),
        ];
        for (e, code, text) in cases {
            assert_eq!((e.code(), e.to_string().as_str()), (code, text));
        }
    }
}
