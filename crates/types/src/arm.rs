//! ARM conventions shared by every handler: the error body, api-version rules, time and duration
//! spellings, and the absolute URLs handed back in `Location` / `Azure-AsyncOperation` / `nextLink`.

use chrono::{DateTime, SecondsFormat, Utc};
use http::StatusCode;
use serde_json::json;

/// The single table of ARM error codes rsvault answers with, and their HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArmCode {
    Unauthorized,
    MissingApiVersion,
    InvalidApiVersion,
    InvalidInput,
    InvalidJson,
    InvalidFilter,
    InvalidSkipToken,
    InvalidResourceName,
    BodyTooLarge,
    ResourceNotFound,
    ItemNotFound,
    JobNotFound,
    RecoveryPointNotFound,
    OperationNotFound,
    PolicyNotFound,
    ContainerNotFound,
    PathNotFound,
    MethodNotAllowed,
    NotCancellable,
    ItemNotProtected,
    VaultNotEmpty,
    PolicyInUse,
    RestoreTargetInvalid,
    /// An operation that would shorten retention on an immutable vault.
    ImmutableVault,
    /// Changing the immutability of a vault where it is `Locked`.
    ImmutabilityLocked,
    /// Turning off soft delete where it is `AlwaysON`.
    SoftDeleteAlwaysOn,
    /// An operation a soft-deleted item cannot take before it is undeleted.
    ItemSoftDeleted,
    /// Undeleting an item that is not soft-deleted (or whose soft-delete period has ended).
    ItemNotSoftDeleted,
    Conflict,
    Internal,
    InvalidAuthenticationToken,
    ExpiredAuthenticationToken,
    AuthorizationFailed,
    TooManyRequests,
    RoleAssignmentNotFound,
    RoleDefinitionDoesNotExist,
    RoleAssignmentExists,
    RoleAssignmentUpdateNotPermitted,
    InvalidRoleAssignmentId,
}

impl ArmCode {
    pub fn status(self) -> StatusCode {
        match self {
            Self::Unauthorized
            | Self::InvalidAuthenticationToken
            | Self::ExpiredAuthenticationToken => StatusCode::UNAUTHORIZED,
            Self::AuthorizationFailed => StatusCode::FORBIDDEN,
            Self::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
            Self::RoleAssignmentNotFound | Self::RoleDefinitionDoesNotExist => {
                StatusCode::NOT_FOUND
            }
            Self::RoleAssignmentExists => StatusCode::CONFLICT,
            Self::RoleAssignmentUpdateNotPermitted | Self::InvalidRoleAssignmentId => {
                StatusCode::BAD_REQUEST
            }
            Self::MissingApiVersion
            | Self::InvalidApiVersion
            | Self::InvalidInput
            | Self::InvalidJson
            | Self::InvalidFilter
            | Self::InvalidSkipToken
            | Self::ImmutableVault
            | Self::ImmutabilityLocked
            | Self::SoftDeleteAlwaysOn
            | Self::ItemSoftDeleted
            | Self::ItemNotSoftDeleted
            | Self::InvalidResourceName
            | Self::NotCancellable
            | Self::ItemNotProtected
            | Self::PolicyInUse
            | Self::RestoreTargetInvalid => StatusCode::BAD_REQUEST,
            Self::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::ResourceNotFound
            | Self::ItemNotFound
            | Self::JobNotFound
            | Self::RecoveryPointNotFound
            | Self::OperationNotFound
            | Self::PolicyNotFound
            | Self::ContainerNotFound
            | Self::PathNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Self::VaultNotEmpty | Self::Conflict => StatusCode::CONFLICT,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ImmutableVault => "UserErrorImmutableVaultOperationNotAllowed",
            Self::ImmutabilityLocked => "UserErrorImmutabilityLockedCannotBeChanged",
            Self::SoftDeleteAlwaysOn => "UserErrorSoftDeleteAlwaysOnCannotBeChanged",
            Self::ItemSoftDeleted => "UserErrorOperationNotAllowedOnSoftDeletedItem",
            Self::ItemNotSoftDeleted => "UserErrorItemNotSoftDeleted",
            Self::Unauthorized => "AuthenticationFailed",
            Self::MissingApiVersion => "MissingApiVersionParameter",
            Self::InvalidApiVersion => "InvalidApiVersionParameter",
            Self::InvalidInput => "BMSUserErrorInvalidInput",
            Self::InvalidJson => "InvalidRequestContent",
            Self::InvalidFilter => "BMSUserErrorInvalidFilter",
            Self::InvalidSkipToken => "BMSUserErrorInvalidSkipToken",
            Self::InvalidResourceName => "InvalidResourceName",
            Self::BodyTooLarge => "RequestEntityTooLarge",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::ItemNotFound => "BMSUserErrorDataSourceObjectNotFound",
            Self::JobNotFound => "BMSUserErrorJobNotFound",
            Self::RecoveryPointNotFound => "BMSUserErrorRecoveryPointNotFound",
            Self::OperationNotFound => "BMSUserErrorOperationNotFound",
            Self::PolicyNotFound => "BMSUserErrorPolicyNotFound",
            Self::ContainerNotFound => "BMSUserErrorContainerObjectNotFound",
            Self::PathNotFound => "InvalidResourceType",
            Self::MethodNotAllowed => "MethodNotAllowed",
            Self::NotCancellable => "BMSUserErrorJobNotCancellable",
            Self::ItemNotProtected => "BMSUserErrorItemNotProtected",
            Self::VaultNotEmpty => "ServiceResourceNotEmpty",
            Self::PolicyInUse => "BMSUserErrorPolicyInUse",
            Self::RestoreTargetInvalid => "BMSUserErrorInvalidRestoreTarget",
            Self::Conflict => "Conflict",
            Self::Internal => "InternalServerError",
            Self::InvalidAuthenticationToken => "InvalidAuthenticationToken",
            Self::ExpiredAuthenticationToken => "ExpiredAuthenticationToken",
            Self::AuthorizationFailed => "AuthorizationFailed",
            Self::TooManyRequests => "TooManyRequests",
            Self::RoleAssignmentNotFound => "RoleAssignmentNotFound",
            Self::RoleDefinitionDoesNotExist => "RoleDefinitionDoesNotExist",
            Self::RoleAssignmentExists => "RoleAssignmentExists",
            Self::RoleAssignmentUpdateNotPermitted => "RoleAssignmentUpdateNotPermitted",
            Self::InvalidRoleAssignmentId => "InvalidRoleAssignmentId",
        }
    }
}

/// An ARM error response: `{"error":{"code","message","target","details","additionalInfo"}}`.
#[derive(Debug, Clone)]
pub struct ArmError {
    pub code: ArmCode,
    pub message: String,
    pub target: Option<String>,
}

impl ArmError {
    pub fn new(code: ArmCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            target: None,
        }
    }
    pub fn with_target(mut self, target: impl Into<String>) -> Self {
        self.target = Some(target.into());
        self
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ArmCode::InvalidInput, message)
    }
    /// A 5xx: the detail is logged here, once, and the caller gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        let id = uuid::Uuid::new_v4();
        tracing::error!(error_id = %id, "internal error: {detail}");
        Self::new(
            ArmCode::Internal,
            format!("An internal error occurred (error id {id}); the server log has the details."),
        )
    }
    /// Absent members are left out rather than sent as `null`: azure-core's error parser iterates
    /// `details` and `additionalInfo` when present, and on `null` gives up on the whole error, so
    /// an SDK caller would see no `error.code` at all.
    pub fn body(&self) -> serde_json::Value {
        let mut e = json!({"code": self.code.as_str(), "message": self.message});
        if let Some(t) = &self.target {
            e["target"] = json!(t);
        }
        json!({ "error": e })
    }
}

impl std::fmt::Display for ArmError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

pub type ArmResult<T> = Result<T, ArmError>;

/// The oldest api-version of the Recovery Services APIs.
pub const OLDEST_API_VERSION: &str = "2016-06-01";

/// Validates `api-version`: any `YYYY-MM-DD` that is a real date, optionally `-preview` /
/// `-privatepreview` etc. Clients ship versions newer than any list, so no allow-list.
pub fn check_api_version(value: Option<&str>) -> ArmResult<String> {
    check_api_version_since(value, OLDEST_API_VERSION)
}

/// The oldest api-version clients send for the Compute and Storage resources rsvault resolves
/// (`az` reads storage accounts with Microsoft.ClassicStorage 2015-12-01 and Storage 2016-01-01).
pub const OLDEST_NEIGHBOUR_API_VERSION: &str = "2014-01-01";

/// [`check_api_version`] with another oldest version.
pub fn check_api_version_since(value: Option<&str>, oldest: &str) -> ArmResult<String> {
    let Some(v) = value else {
        return Err(ArmError::new(
            ArmCode::MissingApiVersion,
            "The api-version query parameter (?api-version=) is required for all requests.",
        ));
    };
    let date = v.get(..10).unwrap_or("");
    let suffix = v.get(10..).unwrap_or("");
    // The first published Recovery Services api-version is 2016-06-01; nothing older exists.
    let date_ok = date.len() == 10
        && chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_ok()
        && date.as_bytes()[4] == b'-'
        && date >= oldest;
    let suffix_ok = suffix.is_empty()
        || (suffix.starts_with('-')
            && suffix.len() > 1
            && suffix[1..].chars().all(|c| c.is_ascii_alphanumeric()));
    if date_ok && suffix_ok {
        Ok(v.to_string())
    } else {
        Err(ArmError::new(
            ArmCode::InvalidApiVersion,
            format!(
                "The api-version '{v}' is invalid. The supported versions are dates from \
                 '{oldest}' on, such as '2019-05-13' or '2026-02-01', optionally \
                 followed by '-preview'."
            ),
        ))
    }
}

/// RFC 3339 UTC with a `Z`, as Azure writes it.
pub fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// ISO 8601 duration, e.g. `PT12.42S`.
pub fn duration(d: chrono::Duration) -> String {
    let ms = d.num_milliseconds().max(0);
    let (h, rem) = (ms / 3_600_000, ms % 3_600_000);
    let (m, rem) = (rem / 60_000, rem % 60_000);
    let secs = rem as f64 / 1000.0;
    let mut out = String::from("PT");
    if h > 0 {
        out.push_str(&format!("{h}H"));
    }
    if m > 0 {
        out.push_str(&format!("{m}M"));
    }
    let s = format!("{secs:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    out.push_str(s);
    out.push('S');
    out
}

/// Validates a resource name (vault, policy): 1–80 chars of letters, digits, `-` and `_`,
/// starting with a letter or digit.
pub fn check_name(kind: &str, name: &str) -> ArmResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 80
        && name
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(())
    } else {
        Err(ArmError::new(
            ArmCode::InvalidResourceName,
            format!(
                "The {kind} name '{name}' is invalid: use 1 to 80 letters, digits, '-' or '_', \
                 starting with a letter or digit."
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_versions_are_dates() {
        assert!(check_api_version(Some("2019-05-13")).is_ok());
        assert!(check_api_version(Some("2026-10-01")).is_ok());
        assert!(check_api_version(Some("2026-03-31-preview")).is_ok());
        assert!(check_api_version(Some("2016-06-01")).is_ok());
        assert_eq!(
            check_api_version(None).unwrap_err().code,
            ArmCode::MissingApiVersion
        );
        for bad in [
            "",
            "2019-13-01",
            "latest",
            "2019-05-13-",
            "2019/05/13",
            "2019-05-13-pr view",
            "1999-01-01",
            "2016-05-31",
        ] {
            assert_eq!(
                check_api_version(Some(bad)).unwrap_err().code,
                ArmCode::InvalidApiVersion,
                "{bad}"
            );
        }
    }

    #[test]
    fn durations_are_iso8601() {
        assert_eq!(duration(chrono::Duration::milliseconds(12_420)), "PT12.42S");
        assert_eq!(
            duration(chrono::Duration::milliseconds(3_723_000)),
            "PT1H2M3S"
        );
        assert_eq!(duration(chrono::Duration::zero()), "PT0S");
    }
}
