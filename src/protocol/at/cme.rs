//! `+CME ERROR` (3GPP TS 27.007 §9.2) and `+CMS ERROR` (3GPP TS 27.005 §3.2.5) codes.
//!
//! Modems report either the number (`AT+CMEE=1`) or the text (`AT+CMEE=2`); both are mapped
//! to the same code and name here. Unknown numbers and texts are kept as they came.

use serde::Serialize;

/// Common `+CME ERROR` codes and their 27.007 texts.
pub const CME_CODES: &[(u16, &str)] = &[
    (0, "phone failure"),
    (1, "no connection to phone"),
    (2, "phone-adaptor link reserved"),
    (3, "operation not allowed"),
    (4, "operation not supported"),
    (5, "PH-SIM PIN required"),
    (6, "PH-FSIM PIN required"),
    (7, "PH-FSIM PUK required"),
    (10, "SIM not inserted"),
    (11, "SIM PIN required"),
    (12, "SIM PUK required"),
    (13, "SIM failure"),
    (14, "SIM busy"),
    (15, "SIM wrong"),
    (16, "incorrect password"),
    (17, "SIM PIN2 required"),
    (18, "SIM PUK2 required"),
    (20, "memory full"),
    (21, "invalid index"),
    (22, "not found"),
    (23, "memory failure"),
    (24, "text string too long"),
    (25, "invalid characters in text string"),
    (26, "dial string too long"),
    (27, "invalid characters in dial string"),
    (30, "no network service"),
    (31, "network timeout"),
    (32, "network not allowed - emergency calls only"),
    (40, "network personalization PIN required"),
    (41, "network personalization PUK required"),
    (42, "network subset personalization PIN required"),
    (43, "network subset personalization PUK required"),
    (44, "service provider personalization PIN required"),
    (45, "service provider personalization PUK required"),
    (46, "corporate personalization PIN required"),
    (47, "corporate personalization PUK required"),
    (50, "incorrect parameters"),
    (100, "unknown"),
];

/// Common `+CMS ERROR` codes and their 27.005 texts.
pub const CMS_CODES: &[(u16, &str)] = &[
    (300, "ME failure"),
    (301, "SMS service of ME reserved"),
    (302, "operation not allowed"),
    (303, "operation not supported"),
    (304, "invalid PDU mode parameter"),
    (305, "invalid text mode parameter"),
    (310, "SIM not inserted"),
    (311, "SIM PIN required"),
    (312, "PH-SIM PIN required"),
    (313, "SIM failure"),
    (314, "SIM busy"),
    (315, "SIM wrong"),
    (316, "SIM PUK required"),
    (320, "memory failure"),
    (321, "invalid memory index"),
    (322, "memory full"),
    (330, "SMSC address unknown"),
    (331, "no network service"),
    (332, "network timeout"),
    (500, "unknown error"),
];

fn lookup(table: &[(u16, &'static str)], code: u16) -> Option<&'static str> {
    table.iter().find(|(c, _)| *c == code).map(|(_, t)| *t)
}

fn reverse(table: &[(u16, &'static str)], text: &str) -> Option<u16> {
    let t = text.trim();
    table
        .iter()
        .find(|(_, name)| name.eq_ignore_ascii_case(t))
        .map(|(c, _)| *c)
}

/// Split `10`, `0 (phone failure)` or `SIM not inserted` into (code, text).
fn split(rest: &str, table: &[(u16, &'static str)]) -> (Option<u16>, String) {
    let rest = rest.trim();
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    if !digits.is_empty() && digits.len() <= 5 {
        let tail = rest[digits.len()..].trim();
        if tail.is_empty() || tail.starts_with('(') {
            if let Ok(code) = digits.parse::<u16>() {
                return (Some(code), rest.chars().take(200).collect());
            }
        }
    }
    (reverse(table, rest), rest.chars().take(200).collect())
}

/// A `+CME ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmeError {
    /// The numeric code, given or looked up from the text.
    pub code: Option<u16>,
    /// What followed `+CME ERROR:`, as sent.
    pub raw: String,
}

impl CmeError {
    /// Parse what follows `+CME ERROR:`.
    pub fn parse(rest: &str) -> CmeError {
        let (code, raw) = split(rest, CME_CODES);
        CmeError { code, raw }
    }

    /// The 27.007 text for the code, or what the modem sent.
    pub fn name(&self) -> String {
        self.code
            .and_then(|c| lookup(CME_CODES, c))
            .map(str::to_string)
            .unwrap_or_else(|| self.raw.clone())
    }

    /// Whether this is code `code`.
    pub fn is(&self, code: u16) -> bool {
        self.code == Some(code)
    }
}

impl std::fmt::Display for CmeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+CME ERROR: {}", self.raw)?;
        if let (Some(c), Some(name)) = (self.code, self.code.and_then(|c| lookup(CME_CODES, c))) {
            if !self.raw.eq_ignore_ascii_case(name) && self.raw == c.to_string() {
                write!(f, " ({name})")?;
            }
        }
        Ok(())
    }
}

/// A `+CMS ERROR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CmsError {
    pub code: Option<u16>,
    pub raw: String,
}

impl CmsError {
    pub fn parse(rest: &str) -> CmsError {
        let (code, raw) = split(rest, CMS_CODES);
        CmsError { code, raw }
    }

    pub fn name(&self) -> String {
        self.code
            .and_then(|c| lookup(CMS_CODES, c))
            .map(str::to_string)
            .unwrap_or_else(|| self.raw.clone())
    }
}

impl std::fmt::Display for CmsError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "+CMS ERROR: {}", self.raw)?;
        if let (Some(c), Some(name)) = (self.code, self.code.and_then(|c| lookup(CMS_CODES, c))) {
            if self.raw == c.to_string() {
                write!(f, " ({name})")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn numbers_and_texts() {
        let e = CmeError::parse(" 10");
        assert_eq!(e.code, Some(10));
        assert_eq!(e.name(), "SIM not inserted");
        assert_eq!(e.to_string(), "+CME ERROR: 10 (SIM not inserted)");
        let e = CmeError::parse("memory failure");
        assert_eq!(e.code, Some(23));
        assert_eq!(e.to_string(), "+CME ERROR: memory failure");
        let e = CmeError::parse("0 (phone failure)");
        assert_eq!(e.code, Some(0));
        assert_eq!(e.name(), "phone failure");
        let e = CmeError::parse("Something odd");
        assert_eq!(e.code, None);
        assert_eq!(e.name(), "Something odd");
        assert!(CmeError::parse("3").is(3));
        assert_eq!(CmeError::parse("999999999").code, None);
        assert_eq!(CmsError::parse("310").name(), "SIM not inserted");
        assert_eq!(CmsError::parse("SIM busy").code, Some(314));
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,300}") {
            let e = CmeError::parse(&s);
            prop_assert!(e.raw.chars().count() <= 200);
            let _ = e.to_string();
            let _ = CmsError::parse(&s).to_string();
        }
    }
}
