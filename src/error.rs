//! The one error type of qrescue: every error says what happened, why it matters and what to do
//! next, and carries a kind that maps to a documented process exit code.

use std::fmt;

/// What class of failure this is; decides the exit code (see README.md, "Exit codes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Anything that went wrong and is not one of the kinds below (exit 1).
    Failure,
    /// The command line or its arguments were wrong (exit 2).
    Usage,
    /// No device was found where one was expected (exit 3).
    NoDevice,
    /// The device or a file could not be opened for lack of permission (exit 4).
    Permission,
    /// Something was written but reading it back did not match (exit 5).
    VerifyMismatch,
    /// The device went away in the middle of an operation (exit 6).
    DeviceLost,
    /// The person interrupted the operation (exit 130).
    Interrupted,
}

impl ErrorKind {
    /// The process exit code for this kind.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorKind::Failure => 1,
            ErrorKind::Usage => 2,
            ErrorKind::NoDevice => 3,
            ErrorKind::Permission => 4,
            ErrorKind::VerifyMismatch => 5,
            ErrorKind::DeviceLost => 6,
            ErrorKind::Interrupted => 130,
        }
    }
}

/// An error written for a person: `what` happened, `why` it matters, `next` step to take.
#[derive(Debug)]
pub struct Error {
    pub kind: ErrorKind,
    pub what: String,
    pub why: String,
    pub next: String,
    pub source: Option<Box<dyn std::error::Error + Send + Sync + 'static>>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(
        kind: ErrorKind,
        what: impl Into<String>,
        why: impl Into<String>,
        next: impl Into<String>,
    ) -> Self {
        Error {
            kind,
            what: what.into(),
            why: why.into(),
            next: next.into(),
            source: None,
        }
    }

    /// A generic failure.
    pub fn failure(
        what: impl Into<String>,
        why: impl Into<String>,
        next: impl Into<String>,
    ) -> Self {
        Self::new(ErrorKind::Failure, what, why, next)
    }

    /// A wrong command line or argument.
    pub fn usage(what: impl Into<String>, next: impl Into<String>) -> Self {
        Self::new(
            ErrorKind::Usage,
            what,
            "qrescue cannot start the operation with these arguments",
            next,
        )
    }

    /// Attach the lower-level cause (kept for logs and `--json`, not repeated in the message).
    pub fn with_source(mut self, source: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Change the kind (e.g. a transport error that turned out to be a lost device).
    pub fn with_kind(mut self, kind: ErrorKind) -> Self {
        self.kind = kind;
        self
    }

    pub fn exit_code(&self) -> i32 {
        self.kind.exit_code()
    }

    /// A machine-readable form for `--json` output.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "error": {
                "kind": self.kind,
                "exit_code": self.exit_code(),
                "what": self.what,
                "why": self.why,
                "next": self.next,
                "cause": self.source.as_ref().map(|s| s.to_string()),
            }
        })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.what)?;
        if !self.why.is_empty() {
            write!(f, "\n  why:  {}", self.why)?;
        }
        if !self.next.is_empty() {
            write!(f, "\n  next: {}", self.next)?;
        }
        if let Some(src) = &self.source {
            write!(f, "\n  (detail: {src})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_match_the_readme_table() {
        let table = [
            (ErrorKind::Failure, 1),
            (ErrorKind::Usage, 2),
            (ErrorKind::NoDevice, 3),
            (ErrorKind::Permission, 4),
            (ErrorKind::VerifyMismatch, 5),
            (ErrorKind::DeviceLost, 6),
            (ErrorKind::Interrupted, 130),
        ];
        for (kind, code) in table {
            assert_eq!(kind.exit_code(), code, "{kind:?}");
        }
    }

    #[test]
    fn display_names_what_why_and_next() {
        let e = Error::failure(
            "the upload failed",
            "the modem refused it",
            "use the package's programmer",
        );
        let s = e.to_string();
        assert!(s.starts_with("the upload failed"));
        assert!(s.contains("why:  the modem refused it"));
        assert!(s.contains("next: use the package's programmer"));
        let j = e.to_json();
        assert_eq!(j["error"]["exit_code"], 1);
        assert_eq!(j["error"]["kind"], "failure");
    }
}
