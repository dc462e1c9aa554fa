//! What a Kinesis call's failure means for the caller: renew the iterator,
//! back off and retry, or stop.

use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// How to react to a failed call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// The shard iterator is too old: get a new one from the last record.
    RenewIterator,
    /// Throttled (the shard's or the account's limits): back off, retry.
    Throttled,
    /// A network or server hiccup: back off, retry.
    Transient,
    /// It will never work (no such stream, no permission, invalid input).
    Permanent,
}

/// The reaction to an SDK error, from its AWS error code.
pub fn react<E: ProvideErrorMetadata, R>(error: &SdkError<E, R>) -> Reaction {
    match error {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            Reaction::Transient
        }
        SdkError::ServiceError(service) => react_to_code(service.err().code()),
        _ => react_to_code(error.code()),
    }
}

/// The reaction to an AWS error code.
pub fn react_to_code(code: Option<&str>) -> Reaction {
    match code {
        Some("ExpiredIteratorException") => Reaction::RenewIterator,
        Some(
            "ProvisionedThroughputExceededException"
            | "LimitExceededException"
            | "KMSThrottlingException"
            | "ThrottlingException",
        ) => Reaction::Throttled,
        Some(
            "ResourceNotFoundException"
            | "AccessDeniedException"
            | "InvalidArgumentException"
            | "ValidationException"
            | "KMSAccessDeniedException"
            | "KMSDisabledException"
            | "KMSNotFoundException"
            | "KMSInvalidStateException"
            | "KMSOptInRequired"
            | "UnrecognizedClientException"
            | "IncompleteSignatureException",
        ) => Reaction::Permanent,
        _ => Reaction::Transient,
    }
}

/// A short description of an SDK error: its code and message when the
/// service gave them, the SDK's own words otherwise.
pub fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    error: &SdkError<E, R>,
) -> String {
    match (error.code(), error.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_string(),
        _ => aws_smithy_types::error::display::DisplayErrorContext(error).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_is_retried_expiry_renews_and_missing_streams_stop() {
        assert_eq!(
            react_to_code(Some("ExpiredIteratorException")),
            Reaction::RenewIterator
        );
        for code in [
            "ProvisionedThroughputExceededException",
            "LimitExceededException",
            "KMSThrottlingException",
        ] {
            assert_eq!(react_to_code(Some(code)), Reaction::Throttled, "{code}");
        }
        assert_eq!(
            react_to_code(Some("ResourceNotFoundException")),
            Reaction::Permanent
        );
        assert_eq!(react_to_code(Some("InternalFailure")), Reaction::Transient);
        assert_eq!(react_to_code(None), Reaction::Transient);
    }
}
