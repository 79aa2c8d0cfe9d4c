//! The programmer's start-up logs (PROTOCOLS.md §2.2, §9.6): "Binary build date: …",
//! "Chip serial num: N (0x…)", "Supported Functions (N):", the functions, and
//! "End of supported functions N", which means *ready*.
//!
//! Two list formats are accepted (fwupd needed both for RM520, fwupd/fwupd PR #10582):
//!
//! 1. **One function per log** after the header (every Quectel capture):
//!    `Supported Functions (15):`, `program`, `read`, …, `End of supported functions 15`.
//! 2. **The whole list in one log.** The exact second format is not in our captures; we infer it
//!    and accept its plausible shapes: the names on the header line itself
//!    (`Supported Functions (15): program read nop …` or `Supported Functions: program,read,…`),
//!    or one log right after the header holding every name, separated by spaces and/or commas
//!    (`program,read,nop,…`, the shape edl prints).
//!
//! A log is taken as part of the list only if every token looks like a function name (ASCII
//! letters, digits, `_`, at most 40 characters), so unrelated logs such as
//! `logbuf@0x0801BE50 fh@0x08018CB8` do not leak into it. Level prefixes (`INFO:`, `LOG:`,
//! `DEBUG:`, `WARN:`, `ERROR:`) are ignored everywhere.

/// What the programmer announced about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Welcome {
    /// "Binary build date: …" (the first one; SDX24 prints it twice).
    pub build_date: Option<String>,
    /// "Chip serial num: N (0x…)".
    pub chip_serial: Option<u64>,
    /// The supported functions in announced order, lower-cased, without duplicates.
    pub functions: Vec<String>,
    /// N from "Supported Functions (N)" or "End of supported functions N".
    pub declared_functions: Option<u32>,
    /// "End of supported functions" was seen.
    pub ready: bool,
    /// No welcome logs arrived and readiness was established by a nop probe instead.
    pub via_nop_probe: bool,
    /// Every welcome log as received.
    pub logs: Vec<String>,
}

impl Welcome {
    /// Whether `name` is supported: None when the programmer sent no function list.
    pub fn supports(&self, name: &str) -> Option<bool> {
        if self.functions.is_empty() {
            None
        } else {
            Some(self.functions.iter().any(|f| f.eq_ignore_ascii_case(name)))
        }
    }
}

/// Strip a level prefix such as `INFO: `.
pub fn strip_level(line: &str) -> &str {
    let t = line.trim();
    for p in ["INFO:", "LOG:", "DEBUG:", "WARN:", "WARNING:", "ERROR:"] {
        if t.len() >= p.len() && t.is_char_boundary(p.len()) && t[..p.len()].eq_ignore_ascii_case(p)
        {
            return t[p.len()..].trim();
        }
    }
    t
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

fn is_function_name(t: &str) -> bool {
    !t.is_empty() && t.len() <= 40 && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Split a list of function names; None if any token is not a plausible name.
fn function_tokens(s: &str) -> Option<Vec<String>> {
    let tokens: Vec<&str> = s
        .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .collect();
    if tokens.is_empty() || !tokens.iter().all(|t| is_function_name(t)) {
        return None;
    }
    Some(tokens.iter().map(|t| t.to_ascii_lowercase()).collect())
}

fn leading_number(s: &str) -> Option<u64> {
    let s = s.trim_start();
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum ListState {
    #[default]
    Before,
    InList,
    After,
}

/// Incremental parser: push each log line, ask [`WelcomeParser::is_ready`].
#[derive(Debug, Clone, Default)]
pub struct WelcomeParser {
    welcome: Welcome,
    state: ListState,
}

/// Bound on what is kept, whatever a chatty programmer sends.
const MAX_WELCOME_LOGS: usize = 512;
const MAX_FUNCTIONS: usize = 256;

impl WelcomeParser {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn is_ready(&self) -> bool {
        self.welcome.ready
    }

    /// Whether any log was pushed.
    pub fn saw_logs(&self) -> bool {
        !self.welcome.logs.is_empty()
    }

    pub fn welcome(&self) -> &Welcome {
        &self.welcome
    }

    pub fn finish(self) -> Welcome {
        self.welcome
    }

    fn add_functions(&mut self, names: Vec<String>) {
        for n in names {
            if self.welcome.functions.len() >= MAX_FUNCTIONS {
                break;
            }
            if !self.welcome.functions.contains(&n) {
                self.welcome.functions.push(n);
            }
        }
    }

    fn list_full(&self) -> bool {
        matches!(self.welcome.declared_functions, Some(n) if self.welcome.functions.len() >= n as usize)
    }

    /// Feed one log line.
    pub fn push_log(&mut self, raw: &str) {
        if self.welcome.logs.len() < MAX_WELCOME_LOGS {
            self.welcome.logs.push(raw.to_string());
        }
        let line = strip_level(raw);

        if let Some(rest) = strip_prefix_ci(line, "End of supported functions") {
            if let Some(n) = leading_number(rest) {
                self.welcome
                    .declared_functions
                    .get_or_insert(n.min(u32::MAX as u64) as u32);
            }
            self.welcome.ready = true;
            self.state = ListState::After;
            return;
        }
        if let Some(rest) = strip_prefix_ci(line, "Binary build date") {
            if self.welcome.build_date.is_none() {
                let v = rest.trim_start().trim_start_matches(':').trim();
                if !v.is_empty() {
                    self.welcome.build_date = Some(v.chars().take(128).collect());
                }
            }
            return;
        }
        if let Some(rest) = strip_prefix_ci(line, "Chip serial num") {
            let rest = rest.trim_start().trim_start_matches(':').trim();
            let dec = leading_number(rest);
            let hex = rest.find("0x").or_else(|| rest.find("0X")).and_then(|i| {
                let h = &rest[i + 2..];
                let end = h.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(h.len());
                u64::from_str_radix(&h[..end], 16).ok()
            });
            if let Some(v) = dec.or(hex) {
                self.welcome.chip_serial = Some(v);
            }
            return;
        }
        if let Some(rest) = strip_prefix_ci(line, "Supported Functions") {
            let rest = rest.trim_start();
            let mut after = rest;
            if let Some(inner) = rest.strip_prefix('(') {
                if let Some(close) = inner.find(')') {
                    if let Some(n) = leading_number(&inner[..close]) {
                        self.welcome.declared_functions = Some(n.min(u32::MAX as u64) as u32);
                    }
                    after = &inner[close + 1..];
                }
            }
            let after = after.trim_start().trim_start_matches(':');
            self.state = ListState::InList;
            if let Some(names) = function_tokens(after) {
                // Format 2: the names on the header line.
                self.add_functions(names);
            }
            if self.list_full() {
                self.state = ListState::After;
            }
            return;
        }
        if self.state == ListState::InList {
            match function_tokens(line) {
                Some(names) => {
                    self.add_functions(names);
                    if self.list_full() {
                        self.state = ListState::After;
                    }
                }
                None => self.state = ListState::After,
            }
        }
    }
}

/// Parse a complete list of welcome logs.
pub fn parse_welcome<'a>(logs: impl IntoIterator<Item = &'a str>) -> Welcome {
    let mut p = WelcomeParser::new();
    for l in logs {
        p.push_log(l);
    }
    p.finish()
}

/// The 15 functions of the real Quectel SDX24 programmer, in its order (§2.2).
pub const SDX24_FUNCTIONS: [&str; 15] = [
    "program",
    "read",
    "nop",
    "patch",
    "configure",
    "setbootablestoragedrive",
    "erase",
    "power",
    "firmwarewrite",
    "getstorageinfo",
    "benchmark",
    "emmc",
    "ufs",
    "fixgpt",
    "getsha256digest",
];

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn real_logs() -> Vec<String> {
        let mut v = vec![
            "INFO: Binary build date: Jan  1 2020 @ 00:00:00".to_string(),
            "INFO: Binary build date: Jan  1 2020 @ 00:00:00".to_string(),
            "INFO: Chip serial num: 217664612 (0xcf94c64)".to_string(),
            "INFO: Supported Functions (15):".to_string(),
        ];
        v.extend(SDX24_FUNCTIONS.iter().map(|f| format!("INFO: {f}")));
        v.push("INFO: End of supported functions 15".into());
        v
    }

    #[test]
    fn one_function_per_line() {
        let logs = real_logs();
        let w = parse_welcome(logs.iter().map(|s| s.as_str()));
        assert!(w.ready);
        assert_eq!(w.build_date.as_deref(), Some("Jan  1 2020 @ 00:00:00"));
        assert_eq!(w.chip_serial, Some(217664612));
        assert_eq!(w.declared_functions, Some(15));
        assert_eq!(w.functions, SDX24_FUNCTIONS.to_vec());
        assert_eq!(w.supports("getsha256digest"), Some(true));
        assert_eq!(w.supports("peek"), Some(false));
        assert_eq!(w.logs.len(), 20);
    }

    #[test]
    fn not_ready_until_the_end_line() {
        let logs = real_logs();
        let mut p = WelcomeParser::new();
        for l in &logs[..logs.len() - 1] {
            p.push_log(l);
            assert!(!p.is_ready());
        }
        p.push_log(&logs[logs.len() - 1]);
        assert!(p.is_ready());
    }

    #[test]
    fn whole_list_in_one_line_formats() {
        let list = SDX24_FUNCTIONS.join(",");
        let w = parse_welcome([
            "INFO: Supported Functions (15):",
            list.as_str(),
            "INFO: End of supported functions 15",
        ]);
        assert_eq!(w.functions.len(), 15);
        assert!(w.ready);

        let spaced = format!(
            "INFO: Supported Functions (15): {}",
            SDX24_FUNCTIONS.join(" ")
        );
        let w = parse_welcome([spaced.as_str(), "INFO: End of supported functions 15"]);
        assert_eq!(w.functions, SDX24_FUNCTIONS.to_vec());

        let w = parse_welcome([
            "Supported Functions: program, read, nop",
            "End of supported functions",
        ]);
        assert_eq!(w.functions, vec!["program", "read", "nop"]);
        assert!(w.ready);
        assert_eq!(w.declared_functions, None);
    }

    #[test]
    fn unrelated_logs_do_not_join_the_list() {
        let w = parse_welcome([
            "INFO: Supported Functions (2):",
            "INFO: program",
            "logbuf@0x0801BE50 fh@0x08018CB8",
            "INFO: read",
        ]);
        assert_eq!(w.functions, vec!["program"]);
        assert!(!w.ready);
        assert_eq!(w.supports("read"), Some(false));
        assert_eq!(Welcome::default().supports("read"), None);
    }

    #[test]
    fn serial_zero_and_hex_only() {
        assert_eq!(
            parse_welcome(["INFO: Chip serial num: 0 (0x0)"]).chip_serial,
            Some(0)
        );
        assert_eq!(
            parse_welcome(["Chip serial num: (0x1f)"]).chip_serial,
            Some(31)
        );
    }

    proptest! {
        #[test]
        fn never_panics(lines in proptest::collection::vec("(INFO: )?(Supported Functions ?\\(|End of supported functions |Chip serial num: |Binary build date)?[ -~é]{0,30}", 0..30)) {
            let w = parse_welcome(lines.iter().map(|s| s.as_str()));
            prop_assert!(w.functions.len() <= MAX_FUNCTIONS);
        }

        #[test]
        fn never_panics_on_any_text(lines in proptest::collection::vec(any::<String>(), 0..10)) {
            let _ = parse_welcome(lines.iter().map(|s| s.as_str()));
        }
    }
}
