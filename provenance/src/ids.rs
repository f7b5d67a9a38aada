//! Names and small value types of the domain: authorities, roles, time,
//! licenses, purposes and data classes.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest identifier or label, in bytes.
pub const MAX_LABEL_BYTES: usize = 128;

/// Why a label was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: {reason}")]
pub struct LabelError {
    /// What kind of label.
    pub what: &'static str,
    /// The offending value (truncated).
    pub value: String,
    /// Why.
    pub reason: &'static str,
}

fn check_label(what: &'static str, s: &str, extra: &[char]) -> Result<(), LabelError> {
    let err = |reason| LabelError {
        what,
        value: s.chars().take(40).collect(),
        reason,
    };
    if s.is_empty() {
        return Err(err("must not be empty"));
    }
    if s.len() > MAX_LABEL_BYTES {
        return Err(err("longer than 128 bytes"));
    }
    if !s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' || extra.contains(&c))
    {
        return Err(err("only ASCII letters, digits, '-', '_' and '.' are allowed"));
    }
    Ok(())
}

macro_rules! label {
    ($(#[$m:meta])* $name:ident, $what:literal, $extra:expr) => {
        $(#[$m])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(pub(crate) String);

        impl TryFrom<String> for $name {
            type Error = LabelError;
            fn try_from(s: String) -> Result<Self, LabelError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(v: $name) -> String {
                v.0
            }
        }

        impl $name {
            /// Validates and wraps a label.
            pub fn new(s: impl Into<String>) -> Result<Self, LabelError> {
                let s = s.into();
                check_label($what, &s, $extra)?;
                Ok(Self(s))
            }
            /// The label text.
            pub fn as_str(&self) -> &str {
                &self.0
            }
            /// Re-checks a value that came from decoding.
            pub fn validate(&self) -> Result<(), LabelError> {
                check_label($what, &self.0, $extra)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl std::str::FromStr for $name {
            type Err = LabelError;
            fn from_str(s: &str) -> Result<Self, LabelError> {
                Self::new(s)
            }
        }
    };
}

label!(
    /// An authority's identifier, as listed in genesis (`globe-press`).
    AuthorityId,
    "authority id",
    &[]
);
label!(
    /// An SPDX license identifier or expression (`CC-BY-4.0`,
    /// `LicenseRef-publisher-terms`, `MIT OR Apache-2.0`).
    License,
    "license",
    &[' ', '+', '(', ')', ':']
);
label!(
    /// A declared purpose of use (`research`, `commercial-fine-tuning`).
    Purpose,
    "purpose",
    &[':']
);
label!(
    /// A data class, which the policy maps to a depth profile (`literary`,
    /// `personal-correspondence`).
    DataClass,
    "data class",
    &[':']
);

/// The three roles an authority can hold in a consortium.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// A rights-holder that signs the data it contributes.
    DataSource,
    /// The authority that signs admission policies.
    Governance,
    /// An authority that runs fine-tuning.
    Operator,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::DataSource => "data-source",
            Role::Governance => "governance",
            Role::Operator => "operator",
        })
    }
}

impl Role {
    /// Stable byte used inside signed messages.
    pub const fn code(self) -> u8 {
        match self {
            Role::DataSource => 1,
            Role::Governance => 2,
            Role::Operator => 3,
        }
    }
}

/// Milliseconds since the Unix epoch (UTC). Time is always an input: the
/// pure crates never read a clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// Milliseconds since the epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}ms", self.0)
    }
}
