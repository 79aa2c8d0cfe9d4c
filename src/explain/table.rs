//! The table of known messages. Each rule names where its meaning comes from (`source`) and the
//! exact real strings it must explain (`examples`, checked by the table-driven tests). Rules are
//! tried in order, so context-specific and specific rules come before general ones. Programmer
//! `<log>` lines not in this table go to the Firehose table in `protocol::firehose::explain`, so
//! each programmer message has one meaning in one place.

use super::{Context, Explanation, Line, Severity};
use crate::protocol::firehose::explain::{explain_log, Advice};
use crate::protocol::sahara::packet::status_text;

use Context as C;
use Severity as S;

/// How a rule recognises its line (needles are lowercase).
#[derive(Clone, Copy)]
pub(crate) enum Match {
    /// Every needle occurs.
    All(&'static [&'static str]),
    /// At least one needle occurs.
    Any(&'static [&'static str]),
    /// The line carries `errno N` (`errno = 110`, `errno: 110`, `[Errno 110]`) with N listed.
    Errno(&'static [i64]),
    /// A custom reading (numbers, several outcomes).
    Func(fn(&Line, Context, &Rule) -> Option<Explanation>),
}

/// Which number of the line goes into [`Explanation::code`] (and `{code}` in the title).
#[derive(Clone, Copy)]
pub(crate) enum Capture {
    None,
    /// The errno value.
    Errno,
    /// A negative kernel error (`error -71`, `err = -110`, `(-19)`).
    KernelError,
    /// The number after the first of these keys that occurs.
    After(&'static [&'static str]),
}

pub(crate) struct Rule {
    pub id: &'static str,
    /// Contexts the rule applies in (empty: all).
    pub contexts: &'static [Context],
    pub matcher: Match,
    pub severity: Severity,
    pub title: &'static str,
    pub cause: &'static str,
    pub next: &'static str,
    pub source: &'static str,
    pub generic: bool,
    pub capture: Capture,
    /// Real strings this rule must explain, with the context they are read in.
    pub examples: &'static [(&'static str, Context)],
}

const fn rule(
    id: &'static str,
    matcher: Match,
    severity: Severity,
    title: &'static str,
    cause: &'static str,
    next: &'static str,
    source: &'static str,
) -> Rule {
    Rule {
        id,
        contexts: &[],
        matcher,
        severity,
        title,
        cause,
        next,
        source,
        generic: false,
        capture: Capture::None,
        examples: &[],
    }
}

impl Rule {
    const fn only(mut self, contexts: &'static [Context]) -> Self {
        self.contexts = contexts;
        self
    }
    const fn generic(mut self) -> Self {
        self.generic = true;
        self
    }
    const fn capture(mut self, capture: Capture) -> Self {
        self.capture = capture;
        self
    }
    const fn ex(mut self, examples: &'static [(&'static str, Context)]) -> Self {
        self.examples = examples;
        self
    }

    /// The rule's own explanation, with the captured number filled in.
    fn explanation(&self, line: &Line) -> Explanation {
        let code = match self.capture {
            Capture::None => None,
            Capture::Errno => errno_of(&line.lower),
            Capture::KernelError => kernel_error_of(&line.lower),
            Capture::After(keys) => keys.iter().find_map(|k| number_after(&line.lower, k)),
        };
        let title = match code {
            Some(c) => self.title.replace("{code}", &c.to_string()),
            None => self.title.replace(" {code}", "").replace("{code}", "?"),
        };
        Explanation {
            id: self.id,
            severity: self.severity,
            title,
            cause: self.cause.to_string(),
            next: self.next.to_string(),
            source: self.source,
            code,
            generic: self.generic,
        }
    }

    fn try_match(&self, line: &Line, ctx: Context) -> Option<Explanation> {
        if !self.contexts.is_empty() && !self.contexts.contains(&ctx) {
            return None;
        }
        let hit = match self.matcher {
            Match::All(needles) => needles.iter().all(|n| line.lower.contains(n)),
            Match::Any(needles) => needles.iter().any(|n| line.lower.contains(n)),
            Match::Errno(codes) => errno_of(&line.lower).is_some_and(|e| codes.contains(&e)),
            Match::Func(f) => return f(line, ctx, self),
        };
        hit.then(|| self.explanation(line))
    }
}

// ---------------------------------------------------------------------------------------------
// Number readers (bounded by the line length; never panic).

/// Digits (optionally `-` first, or `0x` hex) at the start of `s`.
fn leading_number(s: &str) -> Option<i64> {
    let s = s.trim_start_matches([' ', '=', ':', '\t', '(']);
    if let Some(hex) = s.strip_prefix("0x") {
        let end = hex
            .find(|c: char| !c.is_ascii_hexdigit())
            .unwrap_or(hex.len());
        return i64::from_str_radix(&hex[..end.min(15)], 16).ok();
    }
    let (neg, digits) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    if end == 0 || end > 18 {
        return None;
    }
    let n: i64 = digits[..end].parse().ok()?;
    Some(if neg { -n } else { n })
}

/// The number after `key` (lowercase), skipping spaces, `=`, `:` and `(`.
fn number_after(lower: &str, key: &str) -> Option<i64> {
    let at = lower.find(key)?;
    leading_number(&lower[at + key.len()..])
}

/// `errno = 110`, `errno: 110`, `[errno 110]`.
pub(crate) fn errno_of(lower: &str) -> Option<i64> {
    let mut rest = lower;
    while let Some(at) = rest.find("errno") {
        rest = &rest[at + 5..];
        if let Some(n) = leading_number(rest) {
            return Some(n.abs());
        }
    }
    None
}

/// A negative kernel error: `error -71`, `err = -110`, `failed. (-19)`, `status: -71`.
pub(crate) fn kernel_error_of(lower: &str) -> Option<i64> {
    let bytes = lower.as_bytes();
    for (i, _) in lower.match_indices('-') {
        if !bytes.get(i + 1).is_some_and(u8::is_ascii_digit) {
            continue;
        }
        let start = i.saturating_sub(14);
        let before = lower.get(start..i).unwrap_or("");
        if ["err", "status", "fail", "ret"]
            .iter()
            .any(|k| before.contains(k))
        {
            return leading_number(&lower[i..]);
        }
    }
    None
}

/// What a Linux errno means on a USB link, in plain words.
fn usb_errno_text(code: i64) -> &'static str {
    match code.abs() {
        71 => "USB protocol errors (EPROTO): cable, power, or the modem's USB firmware garble the transfer",
        110 => "the device did not answer in time (ETIMEDOUT)",
        62 => "the device stopped answering (ETIME); seen when the modem firmware crashed and did not come back cleanly",
        32 => "the device stalled the request (EPIPE)",
        19 => "the device is gone (ENODEV): it left the bus",
        108 => "the endpoint was shut down (ESHUTDOWN): the device left the bus",
        2 => "the transfer was cancelled (ENOENT), usually because the device is going away",
        5 => "input/output error (EIO)",
        _ => "a USB error",
    }
}

// ---------------------------------------------------------------------------------------------
// Custom readers.

/// QFirehose's `<file>.c <func> <line> fail`: (file, function, line number).
pub(crate) fn fail_macro(raw: &str) -> Option<(&str, &str, i64)> {
    let words: Vec<&str> = raw
        .split_whitespace()
        .filter(|w| !(w.starts_with('[') && w.ends_with("]:")))
        .take(16)
        .collect();
    match words.as_slice() {
        [.., file, func, line, last]
            if *last == "fail"
                && file.ends_with(".c")
                && !line.is_empty()
                && line.len() <= 9
                && line.bytes().all(|b| b.is_ascii_digit()) =>
        {
            Some((file, func, line.parse().ok()?))
        }
        _ => None,
    }
}

fn qfh_fail_macro(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let (file, func, n) = fail_macro(line.raw)?;
    let name = file.rsplit('/').next().unwrap_or(file);
    let mut e = r.explanation(line);
    e.title = format!("An internal step failed at {name}:{n} ({func})");
    e.code = Some(n);
    Some(e)
}

fn qfh_drain_recv_fail(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let (_, func, n) = fail_macro(line.raw)?;
    (func == "fh_recv_cmd").then(|| {
        let mut e = r.explanation(line);
        e.code = Some(n);
        e
    })
}

fn qfh_md5_totals(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    if !(line.lower.contains("totals checking") && line.lower.contains("md5")) {
        return None;
    }
    let files = number_after(&line.lower, "totals checking")?;
    let failed = number_after(&line.lower, "value,")?;
    let mut e = r.explanation(line);
    e.code = Some(failed);
    if failed == 0 {
        e.title = format!("Package verified ({files} files match md5.txt)");
        e.cause =
            "QFirehose checked every file of the package against md5.txt before flashing".into();
        e.next = "Nothing to do".into();
    } else {
        e.severity = Severity::Error;
        e.title = format!("{failed} of {files} package files fail their md5 check");
        e.cause = "The package is damaged or incomplete (a cut download or copy)".into();
        e.next = "Copy or download the package again; do not flash it as it is".into();
    }
    Some(e)
}

fn sahara_packet_length(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    if !(line.lower.contains("packet length") && line.lower.contains("too large")) {
        return None;
    }
    let n = number_after(&line.lower, "packet length")?;
    let mut e = r.explanation(line);
    e.code = Some(n);
    // Bytes 4..8 of `<?xml ve` read as a little-endian u32: the device already runs Firehose.
    if n == 0x6576_206c {
        e.title =
            "A Firehose programmer is already running (its XML was read as a Sahara packet)".into();
        e.cause = "The tool expected the boot ROM's Sahara, but a programmer from an earlier run answers in XML".into();
        e.next = "Attach to the running programmer (qrescue flash does this by itself), or power-cycle the modem to start from the boot ROM".into();
    }
    Some(e)
}

fn qdl_flashing_failed(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let t = line.raw.trim();
    let rest = t.strip_prefix("flashing of ")?;
    let label = rest.strip_suffix(" failed")?;
    if label.is_empty() || label.len() > 64 || label.contains(' ') {
        return None;
    }
    let mut e = r.explanation(line);
    e.title = format!("Writing {label} failed");
    Some(e)
}

/// `END_OF_IMAGE … status 0x21`, `refused image 13: status 0x21 (…)`, or `status N` in Sahara.
fn sahara_status(line: &Line, ctx: Context, r: &Rule) -> Option<Explanation> {
    let l = &line.lower;
    let named = l.contains("end_of_image")
        || l.contains("end of image")
        || l.contains("end_image_tx")
        || l.contains("refused image");
    if !(named || ctx == Context::Sahara && l.contains("status")) {
        return None;
    }
    let code = number_after(l, "status")?;
    let code_u = u32::try_from(code).ok()?;
    let (name, meaning) = status_text(code_u);
    let mut e = r.explanation(line);
    e.code = Some(code);
    e.title = format!("The boot ROM answered status {code_u:#04x}: {name}");
    e.cause = meaning.to_string();
    let (severity, next) = match code_u {
        0x00 => (Severity::Info, "Nothing to do"),
        0x21..=0x23 | 0x25 | 0x26 => (
            Severity::Fatal,
            "Use the programmer from this module's own firmware package (signed for its key); nothing was written",
        ),
        0x07 | 0x09 | 0x0E..=0x14 => (
            Severity::Fatal,
            "This file is not a programmer for this chip: use the prog_*firehose* file from this module's package",
        ),
        0x0C | 0x16 | 0x17 | 0x27 | 0x28 => (
            Severity::Error,
            "Power-cycle the modem, then change the cable and port (no hubs) and try again",
        ),
        _ => (
            Severity::Error,
            "Power-cycle the modem and try again; if it repeats, check the programmer matches this module",
        ),
    };
    e.severity = severity;
    e.next = next.into();
    Some(e)
}

/// `+CFUN: N`.
fn at_cfun(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let n = number_after(&line.lower, "+cfun:")?;
    let mut e = r.explanation(line);
    e.code = Some(n);
    let (severity, title, cause, next) = match n {
        1 => (
            Severity::Info,
            "Full functionality (+CFUN: 1)",
            "The modem's radio is on",
            "Nothing to do",
        ),
        0 => (
            Severity::Warning,
            "Minimum functionality (+CFUN: 0): the radio is off",
            "Set by a command or by the modem when it can't start its radio",
            "Try AT+CFUN=1; if it answers +CME ERROR, see that error",
        ),
        4 => (
            Severity::Warning,
            "Radio switched off (+CFUN: 4, flight mode)",
            "Transmit and receive are disabled by a command",
            "AT+CFUN=1 turns the radio back on",
        ),
        5 => (
            Severity::Error,
            "The modem is in factory-test mode (+CFUN: 5): its calibration is missing",
            "Without this unit's RF calibration (QCN/NV, usually lost by an erase-all flash) the modem stays in factory-test mode with no signal",
            "Restore this unit's own backup (efs2/modemst/fsg or a QCN from it); another unit's calibration does not fit",
        ),
        7 => (
            Severity::Error,
            "The modem is offline (+CFUN: 7): the firmware does not match this module",
            "Usually firmware of another variant or baseline was flashed (RF configuration mismatch)",
            "Flash the firmware made for this exact model, variant and baseline (qrescue package inspect --revision …)",
        ),
        _ => (
            Severity::Warning,
            "Unusual functionality level",
            "The modem reports a CFUN level other than 0, 1, 4, 5 or 7",
            "Compare with the module's AT manual",
        ),
    };
    e.severity = severity;
    e.title = title.into();
    e.cause = cause.into();
    e.next = next.into();
    Some(e)
}

/// `+CME ERROR: N` or `+CME ERROR: text` (3GPP TS 27.007 §9.2).
fn at_cme(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let at = line.lower.find("+cme error:")?;
    let rest = line.lower[at + 11..].trim();
    let code = leading_number(rest);
    let word = |n: i64, text: &str| code == Some(n) || rest.starts_with(text);
    let mut e = r.explanation(line);
    e.code = code;
    let (severity, title, cause, next) = if word(0, "phone failure") {
        (
            Severity::Error,
            "Phone failure (+CME ERROR: 0)",
            "The modem reports an internal failure; right after a flash this usually means firmware of another variant or baseline (seen with +CFUN: 7)",
            "Check the flashed firmware matches this module's model, variant and baseline",
        )
    } else if word(3, "operation not allowed") {
        (
            Severity::Warning,
            "Operation not allowed (+CME ERROR: 3)",
            "The modem refused the command in its current state; as the answer to AT+CFUN=1 it means factory-test mode (calibration missing)",
            "If AT+CFUN? shows 5, restore this unit's calibration backup",
        )
    } else if word(4, "operation not supported") {
        (
            Severity::Warning,
            "Operation not supported (+CME ERROR: 4)",
            "This firmware does not know the command or its parameters",
            "Check the command in the module's AT manual",
        )
    } else if word(10, "sim not inserted") {
        (
            Severity::Warning,
            "No SIM card detected (+CME ERROR: 10)",
            "The modem sees no SIM: not inserted, not seated, or the SIM slot/detect setting is wrong",
            "Insert or reseat the SIM with the power off; check the SIM-detect setting",
        )
    } else if word(13, "sim failure") {
        (
            Severity::Warning,
            "SIM failure (+CME ERROR: 13)",
            "The modem could not talk to the SIM",
            "Reseat or replace the SIM",
        )
    } else if word(14, "sim busy") {
        (
            Severity::Info,
            "SIM busy (+CME ERROR: 14)",
            "The SIM is still starting up",
            "Wait a few seconds and ask again",
        )
    } else if word(23, "memory failure") {
        (
            Severity::Error,
            "Memory failure (+CME ERROR: 23): as the answer to AT+CGSN the IMEI is missing",
            "The modem's identity (NV/EFS) is gone, typically after an erase or a flash of another unit's data",
            "Restore the IMEI from this unit's own backup or its label; never from another unit",
        )
    } else if word(30, "no network service") {
        (
            Severity::Warning,
            "No network service (+CME ERROR: 30)",
            "The modem is not registered on a network",
            "Check the SIM, antenna and AT+COPS?",
        )
    } else {
        (
            Severity::Warning,
            "The modem refused the command (+CME ERROR)",
            "A 3GPP TS 27.007 error code the table does not name",
            "Look the code up in the module's AT manual",
        )
    };
    e.severity = severity;
    e.title = title.into();
    e.cause = cause.into();
    e.next = next.into();
    Some(e)
}

/// A bare `ERROR` reply.
fn at_plain_error(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    (line.raw.trim() == "ERROR").then(|| r.explanation(line))
}

/// `usb 3-1: New USB device found, idVendor=05c6, idProduct=9008, …`.
fn kernel_new_device(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let l = &line.lower;
    if !l.contains("new usb device found") {
        return None;
    }
    let hex_after = |key: &str| {
        let at = l.find(key)?;
        let v = &l[at + key.len()..];
        let end = v.find(|c: char| !c.is_ascii_hexdigit()).unwrap_or(v.len());
        u16::from_str_radix(&v[..end.min(4)], 16).ok()
    };
    let vid = hex_after("idvendor=")?;
    let pid = hex_after("idproduct=")?;
    let mut e = r.explanation(line);
    let mode = match (vid, pid) {
        (0x05c6, 0x9008) => " (emergency download mode, EDL)",
        (0x05c6, 0x900e) => " (crash-dump mode)",
        (0x18d1, 0xd00d) => " (fastboot)",
        (0x2c7c, _) => " (Quectel, normal mode)",
        _ => "",
    };
    e.title = format!("USB device {vid:04x}:{pid:04x} appeared{mode}");
    Some(e)
}

/// Kernel messages about URBs (`usb_submit_urb … failed`, `resubmit read urb failed. (-19)`,
/// `nonzero status: -71 on endpoint 83`).
fn kernel_urb(line: &Line, ctx: Context, r: &Rule) -> Option<Explanation> {
    let l = &line.lower;
    let about_urb = l.contains("usb_submit_urb")
        || l.contains("urb") && l.contains("failed")
        || l.contains("nonzero status");
    if !about_urb {
        return None;
    }
    let code = kernel_error_of(l);
    let mut e = r.explanation(line);
    e.code = code;
    match code.map(i64::abs) {
        Some(19 | 108 | 2) => {
            e.severity = if ctx == Context::Rebooting {
                Severity::Info
            } else {
                Severity::Warning
            };
            e.title = "A driver lost the modem while using its port".into();
            e.cause = format!(
                "The transfer failed because {}; expected while the modem reboots or switches mode",
                usb_errno_text(code.unwrap_or(0))
            );
            e.next = "If nobody reset the modem, check power and cable; qrescue watch shows whether it comes back".into();
        }
        Some(c) => {
            e.cause = format!(
                "A USB transfer on the modem's port failed: {}",
                usb_errno_text(c)
            );
        }
        None => {}
    }
    Some(e)
}

fn kernel_descriptor(line: &Line, _: Context, r: &Rule) -> Option<Explanation> {
    let l = &line.lower;
    if !(l.contains("device descriptor read") || l.contains("device not accepting address")) {
        return None;
    }
    let mut e = r.explanation(line);
    if let Some(c) = e.code {
        e.cause = format!(
            "Something is on the port but does not answer enumeration: {} (power, a half-dead boot state, or the cable)",
            usb_errno_text(c)
        );
    }
    Some(e)
}

// ---------------------------------------------------------------------------------------------
// Sources (short forms; full addresses in USERS.md §7).

const QFH_SUCCESS: &str =
    "USERS.md §2.1 and §1 problem 12 (…/40192; Biktorgj/quectel_eg25_recovery#25)";
const QFH_SOURCE: &str = "USERS.md §2.1 (nippynetworks/qfirehose qfirehose.c)";
const QFH_EM20: &str = "USERS.md §2.1 (QFH EM20 log @0dc82b3)";
const QFH_REBOOT: &str =
    "USERS.md §2.1 (QFH EM20 log @0dc82b3; xhikarishii/openwrt-ipq#3); PROTOCOLS.md §9.12";
const HANDSHAKE: &str =
    "USERS.md §2.1 and §1 problem 6 (iamromulan/RM551E-GL#4, #2; linux-msm/qdl#184); PROTOCOLS.md §9.12";
const LINK: &str = "USERS.md §2.8 and §1 problem 14 (iamromulan/RM551E-GL#4; …/58273; …/23356)";
const WINDOWS: &str = "USERS.md §2.3";
const QMIFW: &str =
    "USERS.md §2.7 [analogy] (danielewood/sierra-wireless-modems#25; modemmanager-devel 2017-09)";
const KERNEL: &str = "USERS.md §2.8";
const KERNEL_HUB: &str = "USERS.md §2.8, §14; messages of Linux drivers/usb/core/hub.c (https://github.com/torvalds/linux/blob/master/drivers/usb/core/hub.c)";
const KERNEL_WWAN: &str = "USERS.md §2.8; messages of Linux drivers/usb/serial/usb_wwan.c (https://github.com/torvalds/linux/blob/master/drivers/usb/serial/usb_wwan.c)";
const KERNEL_LOG: &str =
    "realdata dmesg_eg25_crash_reenumeration.txt (the-modem-distro/pinephone_modem_sdk#9, #266; crust-firmware/crust#204); USERS.md §4.2";
const AT: &str = "USERS.md §2.9";
const CME: &str = "USERS.md §2.9; 3GPP TS 27.007 §9.2 (https://www.3gpp.org/DynaReport/27007.htm)";
const SAHARA_STATUS: &str = "PROTOCOLS.md §1.6 (edl-ng QualcommSaharaStatusCode.cs)";
const HOLDERS: &str =
    "USERS.md §1 problem 8 (Biktorgj/quectel_eg25_recovery#11; linux-msm/qdl#19; fwupd/fwupd#8223)";

const SAFE_AGAIN: &str = "the modem stays in download mode, so re-running the flash is safe";

// ---------------------------------------------------------------------------------------------
// The table, most specific first.

use Match::{All, Any, Errno, Func};

pub(crate) const RULES: &[Rule] = &[
    // --- QFirehose: success, summaries and harmless chatter (USERS.md §2.1) ---
    rule(
        "qfh_upgrade_ok",
        Any(&["upgrade module successfully"]),
        S::Info,
        "Write finished (this does not yet show the modem boots)",
        "QFirehose wrote every image. Modules have printed this and then been dead or without IMEI",
        "Check that the modem comes back in normal mode and keeps its identity (qrescue list; AT+CGSN, AT+QGMR)",
        QFH_SUCCESS,
    )
    .ex(&[("Upgrade module successfully.", C::Any)]),
    rule(
        "qfh_total_time",
        All(&["the total download time is"]),
        S::Info,
        "The download phase finished after {code} s",
        "QFirehose's timing summary after the last image",
        "Verify the modem boots and keeps its identity",
        QFH_SUCCESS,
    )
    .capture(Capture::After(&["time is"]))
    .ex(&[("THE TOTAL DOWNLOAD TIME IS 30.162 s", C::Any)]),
    rule(
        "qfh_upgrade_failed",
        Any(&["upgrade module failed"]),
        S::Error,
        "The flash failed (final status)",
        "QFirehose prints this after any failure; it names no cause",
        "Read the first error above this line: that is the cause",
        QFH_SOURCE,
    )
    .generic()
    .ex(&[("[005.415]: Upgrade module failed.", C::Any)]),
    rule(
        "qfh_version_probe",
        All(&["detect_and_judge_module_version", "fail"]),
        S::Benign,
        "Couldn't read the current firmware version (not fatal)",
        "QFirehose asks the module for its version over DIAG first; its source says this fails when the modem is not ready",
        "Nothing to do",
        "USERS.md §2.1 (community.teltonika.lt …/rut955-modem-upgrade/630; qfirehose.c)",
    )
    .ex(&[("src/firehose/qfirehose.c detect_and_judge_module_version 180 fail", C::Any)]),
    rule(
        "qfh_drain_recv_fail",
        Func(qfh_drain_recv_fail),
        S::Benign,
        "Read timeout while draining the programmer's start-up logs (harmless)",
        "Seen in a successful QFirehose run right after 'End of supported functions': the tool reads until nothing more comes",
        "Nothing to do",
        QFH_EM20,
    )
    .only(&[C::AfterWelcome])
    .ex(&[("firehose_protocol.c fh_recv_cmd 294 fail", C::AfterWelcome)]),
    rule(
        "drain_read_timeout",
        Errno(&[110]),
        S::Benign,
        "Read timeout while draining the programmer's start-up logs (harmless)",
        "Seen in a successful QFirehose run right after 'End of supported functions'",
        "Nothing to do",
        QFH_EM20,
    )
    .only(&[C::AfterWelcome])
    .capture(Capture::Errno)
    .ex(&[("errno = 110 (Connection timed out)", C::AfterWelcome)]),
    rule(
        "qfh_poll_timeout",
        All(&["poll_wait", "timeout"]),
        S::Benign,
        "No reply to QFirehose's DIAG probe (normal before the switch to download mode)",
        "QFirehose waits briefly for the DIAG port before sending the switch command",
        "Nothing to do",
        "USERS.md §2.1 (…/rut955-modem-upgrade/630; QFH EM20 log @0dc82b3)",
    )
    .ex(&[("[002.270]: poll_wait events=POLLIN msec=1000 timeout", C::Any)]),
    rule(
        "qfh_edl_switch",
        Any(&["switch to 'emergency download mode'", "successful, wait module reboot"]),
        S::Info,
        "The module is switching to download mode (9008)",
        "QFirehose sent the DIAG command that reboots the module into emergency download; from here on it is in download mode",
        "Wait for 05c6:9008; if the job stops now the modem is left in download mode and re-running the flash is safe",
        "USERS.md §2.1 (…/rut955-modem-upgrade/630; QFH EM20 log @0dc82b3)",
    )
    .ex(&[
        ("[002.270]: switch to 'Emergency download mode'", C::Any),
        ("[002.271]: successful, wait module reboot", C::Any),
    ]),
    rule(
        "qfh_wait_reenumeration",
        All(&["fail to fopen /sys/bus/usb/devices/", "uevent"]),
        S::Info,
        "The modem left the bus to reboot; waiting for it to re-appear",
        "After the switch the module re-enumerates as 05c6:9008; QFirehose retries 30 × 1 s",
        "Wait; if it never comes back, check power and the port, then try the test-point method",
        "USERS.md §2.1 (forums.quectel.com …/15556; qfirehose.c edl_retry = 30)",
    )
    .only(&[C::Rebooting])
    .ex(&[(
        "[003.272]: fail to fopen /sys/bus/usb/devices/4-1/uevent, errno: 2 (No such file or directory)",
        C::Rebooting,
    )]),
    rule(
        "qfh_device_missing",
        All(&["fail to fopen /sys/bus/usb/devices/", "uevent"]),
        S::Warning,
        "The modem is not on the bus where the tool expected it",
        "If this follows a switch to download mode, the modem is rebooting; if it never comes back, the switch failed",
        "Check power and the port; qrescue watch shows where (and whether) the modem re-appears",
        "USERS.md §2.1 (forums.quectel.com …/15556; qfirehose.c)",
    )
    .ex(&[(
        "fail to fopen /sys/bus/usb/devices/2-1/uevent, errno: 2 (No such file or directory)",
        C::Any,
    )]),
    rule(
        "link_drop_on_reboot",
        Errno(&[71, 108, 110, 19]),
        S::Info,
        "The modem is rebooting (expected)",
        "After a reset or a switch to download mode the modem leaves the USB bus, so reads and writes fail",
        "Wait for it to come back (qrescue watch shows it)",
        QFH_REBOOT,
    )
    .only(&[C::Rebooting])
    .capture(Capture::Errno)
    .ex(&[
        ("inf[0] ep_in -1/1024, errno = 71 (Protocol error)", C::Rebooting),
        ("errno = 108 (Cannot send after socket shutdown)", C::Rebooting),
    ]),
    rule(
        "qfh_md5_totals",
        Func(qfh_md5_totals),
        S::Info,
        "Package md5 check",
        "",
        "",
        "USERS.md §2.1 (Biktorgj/quectel_eg25_recovery#16)",
    )
    .ex(&[("[002.276]: Totals checking 18 files md5 value, 0 file fail!", C::Any)]),
    rule(
        "qfh_md5_missing",
        All(&["find md5.txt"]),
        S::Error,
        "The package folder is not where the tool looked",
        "The path given does not hold md5.txt (the package path or layout is wrong)",
        "Point at the folder that contains update/ and md5.txt",
        "USERS.md §2.1 (forums.quectel.com …/25138)",
    )
    .ex(&[("Cann't find md5.txt in ../EC20EQAR02A13E2G, Please check it!", C::Any)]),
    rule(
        "qfh_no_module",
        Any(&["quectel module not found"]),
        S::Error,
        "No Quectel module found",
        "No modem in normal or download mode is on the bus",
        "qrescue list shows what is plugged in; check power and cable, or put the modem into download mode",
        QFH_SOURCE,
    )
    .ex(&[("Quectel module not found", C::Any)]),
    rule(
        "qfh_multiple_modules",
        Any(&["multiple quectel modules in system"]),
        S::Warning,
        "More than one modem is attached",
        "The tool will not guess which one to flash",
        "Name the modem to use (--port; qrescue list shows each one with its location)",
        QFH_SOURCE,
    )
    .ex(&[(
        "There are multiple quectel modules in system, Please use <-s /sys/bus/usb/devices/xx> specify which module you want to upgrade!",
        C::Any,
    )]),
    rule(
        "qfh_no_kernel_driver",
        Any(&["usbdevfs_getdriver failed"]),
        S::Benign,
        "No kernel driver on the interface (normal in download mode)",
        "QFirehose asks which driver holds the interface; in download mode none usually does",
        "Nothing to do; look elsewhere for the cause of a failure",
        "USERS.md §2.1 (Biktorgj/quectel_eg25_recovery#18)",
    )
    .ex(&[("ioctl USBDEVFS_GETDRIVER failed, kernel driver may be inactive", C::Any)]),
    rule(
        "qfh_update_conf_pipe",
        Any(&["/data/update.conf"]),
        S::Benign,
        "QFirehose's Android progress pipe is missing (harmless)",
        "QFirehose reports progress through /data/update.conf on Android; PCs and routers don't have it",
        "Nothing to do",
        "USERS.md §2.1 (qfirehose.c IPC_FILE; forums.quectel.com …/8517, …/5214)",
    )
    .ex(&[
        ("Warn: Fail to open(O_WRONLY) pipe \"/data/update.conf\"", C::Any),
        ("Error: fail to create named pipe \"/data/update.conf\"", C::Any),
    ]),
    rule(
        "qfh_fail_location",
        Func(qfh_fail_macro),
        S::Error,
        "An internal step failed",
        "QFirehose prints the source location of any failed step; the line itself carries no cause",
        "Read the message just before it; with none, a timeout or a lost device is the usual cause",
        "USERS.md §2.1 (QFirehose fail macro in ofmodemsandmen/RooterSource firehose_protocol.c; Biktorgj/quectel_eg25_recovery#16)",
    )
    .generic()
    .ex(&[
        ("[152.999]: qfirehose.c main 366 fail", C::Any),
        ("firehose_protocol.c firehose_main 672 fail", C::Firehose),
    ]),
    // --- Sahara ---
    rule(
        "sahara_unknown_command",
        All(&["received an unknown command"]),
        S::Error,
        "This flasher can't talk to this chipset (Sahara command {code})",
        "The device asked for something the tool does not know; command 18 is the 64-bit read of newer chips (Sahara v3)",
        "Use a newer flasher; qrescue's Sahara supports 64-bit reads",
        "USERS.md §2.1 and §1 problem 15 (forums.quectel.com …/51556; bkerler/edl#468)",
    )
    .capture(Capture::After(&["command:"]))
    .ex(&[("Received an unknown command: 18", C::Any)]),
    rule(
        "sahara_past_handshake",
        Any(&["while waiting for hello packet"]),
        S::Error,
        "The modem is already past the Sahara handshake (it sent command {code} instead of HELLO)",
        "Its one HELLO per power-up was used by an earlier attempt, or the link loses packets",
        "Power-cycle or replug the modem and start again; if it repeats, change cable and port (a USB 3 cable fixed it for an RM551E)",
        HANDSHAKE,
    )
    .capture(Capture::After(&["q_cmd:", "command:"]))
    .ex(&[
        ("[005.415]: Received a different q_cmd: 4 while waiting for hello packet", C::Any),
        ("Received a different command: 8 while waiting for hello packet", C::Any),
    ]),
    rule(
        "sahara_request_consumed",
        Any(&["failed to read sahara request from device"]),
        S::Error,
        "The modem already used its handshake",
        "The boot ROM sends HELLO once per power-up; a second attempt without a replug finds nothing to answer",
        "Replug or power-cycle the modem, then start once",
        "USERS.md §2.5 and §1 problem 6 (linux-msm/qdl#184)",
    )
    .ex(&[("failed to read sahara request from device", C::Any)]),
    rule(
        "sahara_packet_length",
        Func(sahara_packet_length),
        S::Error,
        "Garbled Sahara packet ({code} bytes announced)",
        "The length field makes no sense: the link garbles data or the device is not speaking Sahara",
        "Power-cycle the modem and try again; change cable and port if it repeats",
        "PROTOCOLS.md §9.12; realdata sahara_firehose_host_logs_fwupd_qdl.txt (bkerler/edl#690)",
    )
    .ex(&[(
        "15:58:54: ERROR: function: sahara_rx_data:286 Command packet length 1702240364 too large to fit",
        C::Any,
    )]),
    rule(
        "sahara_status",
        Func(sahara_status),
        S::Error,
        "The boot ROM answered a status",
        "",
        "",
        SAHARA_STATUS,
    )
    .ex(&[
        ("END_OF_IMAGE (image 13, status 0x21: hash table auth failure)", C::Sahara),
        ("the device refused image 13: status 0x0c (general TX/RX error)", C::Any),
    ]),
    rule(
        "sahara_protocol_error",
        All(&["sahara protocol error"]),
        S::Error,
        "The Sahara exchange failed",
        "A summary line; the cause is printed just before it",
        "Read the line above; power-cycle the modem before retrying (the boot ROM does not restart Sahara by itself)",
        "USERS.md §2.1 and §1 problem 15",
    )
    .generic()
    .ex(&[
        ("[005.415]: Sahara protocol error", C::Any),
        ("15:58:54: ERROR: function: sahara_main:982 Sahara protocol error", C::Any),
    ]),
    rule(
        "sahara_upload_failed",
        All(&["image using sahara protocol failed"]),
        S::Error,
        "The programmer upload failed (summary)",
        "The Windows Sahara client gave up; the cause is printed before it",
        "Read the lines above",
        "realdata sahara_firehose_host_logs_fwupd_qdl.txt (bkerler/edl#690)",
    )
    .generic()
    .ex(&[(
        "15:58:54: ERROR: function: main:320 Uploading  Image using Sahara protocol failed",
        C::Any,
    )]),
    // --- Teltonika wrappers (USERS.md §2.2) ---
    rule(
        "tlt_firmware_dir_empty",
        All(&["firmware directory is empty"]),
        S::Error,
        "The modem is waiting in download mode without a package",
        "The updater switched the modem to download mode, then found no firmware (the mount failed)",
        "Provide the package (a USB stick or a folder) and run the flash again: the modem stays in download mode",
        "USERS.md §2.2 (community.teltonika.lt …/rut955-modem-upgrade/630)",
    )
    .ex(&[("[ERROR] firmware directory is empty. Mount failed? Exiting…", C::Any)]),
    rule(
        "tlt_no_flasher",
        All(&["not sure what flasher to use"]),
        S::Error,
        "The updater can't tell what the modem is",
        "The modem is no longer in normal mode, so the wrapper can't identify it",
        "qrescue list shows its actual mode; in download mode (9008) flash it from there",
        "USERS.md §2.2 (community.teltonika-networks.com …/55411)",
    )
    .ex(&[("[ERROR] Not sure what flasher to use, Exiting..", C::Any)]),
    rule(
        "tlt_dfota_failed",
        Any(&["firmware update verify was unsuccessful", "command failed: connection failed"]),
        S::Error,
        "The delta (DFOTA) update failed",
        "The delta download or its check failed; the modem was reset and should be unchanged (inferred)",
        "Check that the modem still answers (AT+QGMR); if delta updates keep failing, flash a full package in download mode",
        "USERS.md §2.2 (community.teltonika.lt …/16700)",
    )
    .capture(Capture::After(&["errorcode:"]))
    .ex(&[
        ("Firmware update verify was unsuccessful... ErrorCode: 174", C::Any),
        ("Command failed: Connection failed", C::Any),
    ]),
    rule(
        "tlt_reset_modems",
        Any(&["reseting modems due to error", "resetting modems due to error"]),
        S::Warning,
        "The router reset the modem after a failed update",
        "Teltonika's updater resets the modem when the delta update fails",
        "Wait for the modem to come back, then check its version (AT+QGMR)",
        "USERS.md §2.2 (community.teltonika.lt …/16700)",
    )
    .ex(&[("Reseting modems due to error!", C::Any)]),
    rule(
        "daemon_port_vanished",
        Any(&["modem failed: errno", "failed to send command ("]),
        S::Warning,
        "A router daemon is writing to a modem port that vanished",
        "The modem left normal mode during the update while a daemon (gsmd/mobifd) kept using its AT port",
        "Keep such daemons off the modem for the job: qrescue preflight shows who holds its ports and how to stop them",
        "USERS.md §2.2 and §1 problem 8 (community.teltonika.lt …/10821)",
    )
    .ex(&[
        ("Write to '1-1 [2c7c:6005]' modem failed: errno 5", C::Any),
        ("Failed to send command (0/8 bytes transferred)", C::Any),
    ]),
    // --- Windows tools (USERS.md §2.3) ---
    rule(
        "win_firehose_timeout",
        All(&["dl_firehose", "time out"]),
        S::Error,
        "The programmer was sent but never answered",
        "Wrong programmer or baseline, USB/driver trouble, or dead NAND",
        "Check the programmer comes from this module's own firmware package, then the cable and port",
        "USERS.md §2.3 (…/44652; iamromulan/cellular-modem-wiki#35)",
    )
    .ex(&[("FAIL, DL_Firehose, Time out!", C::Any)]),
    rule(
        "win_no_packet_header",
        All(&["unable to read packet header"]),
        S::Error,
        "The modem sent nothing in download mode",
        "No Sahara data arrived from the device",
        "Power-cycle the modem and try again",
        "USERS.md §2.3 (iamromulan/RM551E-GL#2)",
    )
    .ex(&[("Unable to read packet header. Only read 0 bytes.", C::Any)]),
    rule(
        "win_target_in_sahara",
        Any(&["your target is in sahara mode", "target is speaking sahara"]),
        S::Error,
        "The modem is waiting for a programmer",
        "A Firehose client ran before a programmer was uploaded over Sahara",
        "Upload the programmer first (qrescue flash and qrescue sahara-upload do it)",
        "USERS.md §2.3 (…/31665)",
    )
    .ex(&[(
        "there is a chance your target is in sahara mode!! … this program speaks firehose protocol and your target is speaking sahara protcol, so this will not work",
        C::Any,
    )]),
    rule(
        "win_port_vanished",
        Any(&["your device is probably *not* on this port", "windows api writefile failed"]),
        S::Error,
        "The modem left the bus during the job",
        "The port vanished or changed while the tool was writing",
        "Wait for the modem to return without unplugging it; qrescue watch shows where it re-appears",
        "USERS.md §2.3 (bkerler/edl#690)",
    )
    .ex(&[(
        "{ERROR: Could not write to '\\\\.\\COM4', Windows API WriteFile failed! Your device is probably *not* on this port, attempted 100 times}",
        C::Any,
    )]),
    rule(
        "win_download_fail",
        Any(&["download fail:"]),
        S::Error,
        "The Windows tool gave up (summary)",
        "QFIL's final status; the cause is printed before it",
        "Read the lines above",
        WINDOWS,
    )
    .generic()
    .ex(&[
        ("Download Fail:FireHose Fail:FHLoader Fail:Process fail", C::Any),
        ("Download Fail:Sahara Fail:QSaharaServer Fail:Process fail", C::Any),
    ]),
    rule(
        "win_no_driver",
        Any(&["problem code 28", "qusb_bulk_cid"]),
        S::Info,
        "A modem in download mode is attached; Windows has no driver for it",
        "The device is in emergency download mode (its serial follows _SN:)",
        "No driver is needed on Linux: qrescue talks to it directly",
        "USERS.md §2.3 (…/31665; …/56850)",
    )
    .ex(&[("QUSB_BULK_CID:0410_SN:49CBD7EF", C::Any), ("Problem Code 28", C::Any)]),
    // --- bkerler/edl (USERS.md §2.4) ---
    rule(
        "edl_no_loader",
        All(&["couldn't find a loader"]),
        S::Error,
        "No known programmer for this chip and signing key",
        "edl's loader collection has none for this HWID and PK hash",
        "Use the programmer inside this module's firmware package",
        "USERS.md §2.4 (bkerler/Loaders#122; bkerler/edl#96)",
    )
    .ex(&[("Couldn't find a loader for given hwid and pkhash (…_[FHPRG/ENPRG].bin) :(", C::Any)]),
    rule(
        "programmer_rejected",
        Any(&[
            "failed to verify hash for a given segment of elf image",
            "signature of loader wasn't accepted",
        ]),
        S::Fatal,
        "The modem refused this programmer (not signed for it)",
        "Secure boot checks the programmer against this modem's key",
        "Use the programmer from this module's own firmware package; nothing was written",
        "USERS.md §2.4 (bkerler/edl#764, #96)",
    )
    .ex(&[
        ("Error: Failed to verify hash for a given segment of ELF image", C::Any),
        ("Unexpected error on uploading, maybe signature of loader wasn't accepted ?", C::Any),
    ]),
    rule(
        "edl_program_headers",
        Any(&["cannot receive specified number of program headers"]),
        S::Error,
        "The programmer upload failed: wrong programmer, or a newer Sahara version",
        "A misleading message (its maintainer says so): usually an old client meeting Sahara v3, or the wrong loader",
        "Use the programmer from this module's package with a current tool",
        "USERS.md §2.4 (bkerler/Loaders#128; bkerler/edl#468)",
    )
    .ex(&[("Error: Cannot receive specified number of program headers", C::Any)]),
    rule(
        "edl_uploading",
        All(&["firehose mode detected, uploading"]),
        S::Info,
        "Uploading the programmer",
        "If it stays here, the programmer never started: probably the wrong one for this chip",
        "If nothing happens within a few seconds, power-cycle and use the programmer from this module's package",
        "USERS.md §2.4 (bkerler/edl#684, #544)",
    )
    .ex(&[("sahara - Firehose mode detected, uploading...", C::Any)]),
    rule(
        "edl_sahara_error_state",
        Any(&["device is in sahara error state", "usberror(5"]),
        S::Error,
        "Download mode is stuck",
        "The boot ROM's Sahara state machine is broken for this power-up",
        "Power-cycle or replug the modem",
        "USERS.md §2.4 (bkerler/edl#335)",
    )
    .ex(&[
        ("Device is in Sahara error state, please reboot the device.", C::Any),
        ("USBError(5, 'Input/Output Error')", C::Any),
    ]),
    rule(
        "edl_lib_timeout",
        All(&["[lib]: timed out"]),
        S::Warning,
        "The tool's read timed out",
        "A few after a reply are reads past its end; an endless loop of them means download mode is stuck",
        "If it loops, power-cycle the modem",
        "USERS.md §2.4 (bkerler/edl#335); realdata edl_bkerler_sessions.txt (bkerler/edl#269)",
    )
    .ex(&[("DeviceClass - [LIB]: Timed out", C::Any)]),
    rule(
        "edl_nop_failed",
        All(&["nop failed"]),
        S::Benign,
        "The programmer doesn't answer NOP (not needed for flashing)",
        "Old or limited programmers leave NOP out",
        "Nothing to do",
        "USERS.md §2.4 (bkerler/edl#59, #88)",
    )
    .ex(&[("firehose - [LIB]: Nop failed.", C::Any)]),
    rule(
        "edl_optional_field",
        Any(&["couldn't detect maxpayloadsizefromtargetinbytes", "couldn't detect targetname"]),
        S::Benign,
        "The programmer's reply lacks an optional field",
        "edl notes fields the configure answer did not carry and goes on with defaults",
        "Nothing to do",
        "realdata edl_bkerler_sessions.txt (bkerler/edl#269, #713)",
    )
    .ex(&[
        ("firehose - [LIB]: Couldn't detect MaxPayloadSizeFromTargetinBytes", C::Any),
        ("firehose - [LIB]: Couldn't detect TargetName", C::Any),
    ]),
    rule(
        "crash_dump_mode",
        Any(&["device is in memory dump mode", "error: invalid mode switch"]),
        S::Error,
        "The modem is in crash-dump mode (900e), not flash mode",
        "Its boot chain is failing (\"900e means that the sbl/lk is broken/damaged\"); the boot ROM offers RAM, not flashing",
        "Save the dump (qrescue ramdump), or power-cycle into 9008 to flash",
        "USERS.md §2.4 (bkerler/edl#404, #405)",
    )
    .ex(&[
        ("Device is in memory dump mode, dumping memory", C::Any),
        ("Error: Invalid mode switch", C::Any),
    ]),
    rule(
        "usb_overflow",
        Any(&["usb overflow"]),
        S::Error,
        "USB transfer errors",
        "The host saw more data than it asked for: link or host-controller trouble",
        "Change cable and port (no hubs) and try again",
        "USERS.md §2.4 (bkerler/edl#563)",
    )
    .ex(&[("USB Overflow", C::Any)]),
    // --- qdl (USERS.md §2.5) ---
    rule(
        "qdl_bulk_write_timeout",
        All(&["bulk write failed", "timed out"]),
        S::Error,
        "A USB write timed out",
        "The modem stopped taking data: link trouble, or it crashed",
        "Power-cycle the modem; change cable and port if it repeats",
        "USERS.md §2.5 (linux-msm/qdl#76)",
    )
    .ex(&[("bulk write failed: Operation timed out", C::Any)]),
    rule(
        "qdl_firehose_timeout",
        All(&["firehose operation timed out"]),
        S::Warning,
        "A programmer reply took longer than the tool waited",
        "At start-up this is the payload-size renegotiation (costs ~10 s, harmless); during a write, a large image can take longer than qdl's 30 s",
        "At start-up nothing to do; during a write use a tool without a fixed 30 s limit (qrescue scales it with the image)",
        "USERS.md §2.5 (linux-msm/qdl#20, #163)",
    )
    .ex(&[("qdl: firehose operation timed out", C::Any)]),
    rule(
        "qdl_waiting_for_edl",
        All(&["waiting for edl device"]),
        S::Warning,
        "Waiting for a download-mode device",
        "If lsusb shows 05c6:9008 meanwhile, the tool lacks permission to open it",
        "Install the udev rules (qrescue udev-rules) or run as root",
        "USERS.md §2.5 (linux-msm/qdl#15)",
    )
    .ex(&[("Waiting for EDL device", C::Any)]),
    rule(
        "qdl_flashing_failed",
        Func(qdl_flashing_failed),
        S::Error,
        "Writing a partition failed",
        "qdl gives up after its 30 s Firehose read timeout; one large image can take longer (~35 s)",
        "Re-run with a tool whose timeout follows the image size (qrescue does)",
        "USERS.md §2.5 (linux-msm/qdl#163)",
    )
    .ex(&[("flashing of SAIL_SW1 failed", C::Any)]),
    // --- fwupd (USERS.md §2.6) ---
    rule(
        "fwupd_no_firehose_port",
        Any(&["no firehose port provided"]),
        S::Error,
        "The modem switched to download mode but its Firehose port did not appear",
        "On PCIe modems the EDL port is /dev/wwan0firehose0; it was not matched",
        "Check that the MHI/WWAN driver made the firehose port (ls /dev/wwan*); qrescue list shows the ports",
        "USERS.md §2.6 (fwupd/fwupd#8382)",
    )
    .ex(&[("failed to write-firmware: no firehose port provided for filename", C::Any)]),
    rule(
        "port_open_not_permitted",
        All(&["failed to open /dev/", "operation not permitted"]),
        S::Error,
        "Can't open the modem's port (permission, or another program holds it)",
        "The DIAG/AT port used to switch modes could not be opened",
        "qrescue preflight shows who holds the port; install the udev rules or run as root",
        "USERS.md §2.6 (fwupd/fwupd#8223)",
    )
    .ex(&[("failed after 30 retries: failed to open /dev/wwan0qcdm0: Operation not permitted", C::Any)]),
    rule(
        "fwupd_no_port",
        Any(&["suitable port not found"]),
        S::Error,
        "No AT or DIAG port to switch the modem's mode",
        "The modem exposes no usable port in its current composition",
        "Try the test-point method to enter download mode; qrescue list shows which ports exist",
        "USERS.md §2.6 (fwupd/fwupd#8752)",
    )
    .ex(&[("failed to detach: failed to detach using modem_manager: suitable port not found", C::Any)]),
    rule(
        "daemon_crashed",
        Any(&["disconnected from message bus without replying"]),
        S::Error,
        "A system service crashed during the update",
        "fwupd or ModemManager went away mid-job",
        "Check the modem's state (qrescue list) before retrying; keep ModemManager off the modem during the job",
        "USERS.md §2.6 (fwupd/fwupd#6498; the-modem-distro/pinephone_modem_sdk#122)",
    )
    .ex(&[("Message recipient disconnected from message bus without replying", C::Any)]),
    rule(
        "reenumeration_missed",
        Any(&["did not come back", "device has been removed"]),
        S::Warning,
        "The modem re-appeared but the tool did not recognise it",
        "After the mode switch the modem comes back with another ID and port",
        "Follow it by VID:PID and port (qrescue watch); retrying the job usually works",
        "USERS.md §2.6 (fwupd/fwupd#4394)",
    )
    .ex(&[
        ("failed to wait for detach replug: device … did not come back", C::Any),
        ("Device has been removed", C::Any),
    ]),
    rule(
        "fastboot_dropped",
        All(&["18d1:d00d", "no such device"]),
        S::Error,
        "The modem left fastboot mode during the write",
        "The EG25 fastboot path drops off the bus with fast writes",
        "Re-enter fastboot (AT+QFASTBOOT, then fastboot oem stay) and retry",
        "USERS.md §2.6 (fwupd/fwupd#3968)",
    )
    .ex(&[(
        "USB error on device 18d1:d00d : No such device (it may have been disconnected) [-4]",
        C::Any,
    )]),
    // --- qmi-firmware-update [analogy] (USERS.md §2.7) ---
    rule(
        "port_not_in_download_mode",
        Any(&["hdlc trailing control character not found", "unexpected response received in dload sdp"]),
        S::Error,
        "This port is not in download mode (yet)",
        "A download-mode command went to a port still in normal mode, or too early",
        "Start right after the download-mode device appears (qrescue watch)",
        QMIFW,
    )
    .ex(&[
        ("error creating device: HDLC trailing control character not found", C::Any),
        ("unexpected response received in dload sdp: 0x70", C::Any),
    ]),
    rule(
        "tty_never_appeared",
        Any(&["error waiting for tty"]),
        S::Error,
        "The modem did not re-appear in download mode",
        "The download-mode tty never showed up after the switch",
        "Check power and the port; qrescue watch shows what the modem does",
        "USERS.md §2.7 [analogy] (geerlingguy/pi-router#1)",
    )
    .ex(&[("error waiting for TTY: waiting for device at '…' timed out", C::Any)]),
    // --- Link errors by errno (after the context-specific rules above) ---
    rule(
        "usb_timeout_handshake",
        Errno(&[110]),
        S::Error,
        "No answer from the modem over USB (timeout)",
        "Nothing arrived during the handshake: a consumed HELLO, or a bad cable or port",
        "Power-cycle the modem, then try another cable and port (a USB 3 cable and port for RM551E; no hubs)",
        LINK,
    )
    .only(&[C::Sahara])
    .capture(Capture::Errno)
    .ex(&[(
        "[005.415]: inf[0] ep_in -1/4096, errno = 110 (Connection timed out), timeout=5000",
        C::Sahara,
    )]),
    rule(
        "usb_timeout",
        Errno(&[110]),
        S::Warning,
        "A USB read or write timed out",
        "The modem did not answer in time; repeated timeouts point at the cable, port or power",
        "If it repeats, change cable and port (no hubs) and check the power supply",
        LINK,
    )
    .capture(Capture::Errno)
    .ex(&[
        ("[005.415]: qusb_noblock_read read=0, errno: 110 (Connection timed out)", C::Any),
        ("[Errno 110] Operation timed out", C::Any),
    ]),
    rule(
        "usb_protocol_error",
        Errno(&[71]),
        S::Error,
        "USB protocol errors (errno 71)",
        "Cable, power or the modem's USB firmware garble the transfers",
        "Change cable and port (no hubs) and check the power supply",
        LINK,
    )
    .capture(Capture::Errno)
    .ex(&[("inf[0] ep_in -1/1024, errno = 71 (Protocol error)", C::Any)]),
    rule(
        "usb_link_gone",
        Errno(&[108, 19]),
        S::Warning,
        "The USB link went away",
        "The modem left the bus (a reboot, a crash or an unplug)",
        "If nobody reset it, check power and cable; qrescue watch shows whether it comes back",
        LINK,
    )
    .capture(Capture::Errno)
    .ex(&[("errno = 108 (Cannot send after socket shutdown)", C::Any)]),
    // --- Kernel (USERS.md §2.8) ---
    rule(
        "kernel_descriptor_error",
        Func(kernel_descriptor),
        S::Error,
        "The device on this port does not answer enumeration (error {code})",
        "Something is on the port but not answering: power, a half-dead boot state, or the cable",
        "Check power first, then cable and port (no hubs); if it repeats on a fixed period, qrescue watch shows the loop",
        "USERS.md §2.8 (forth32/qtools#28) and §4.2 (the-modem-distro/pinephone_modem_sdk#9)",
    )
    .capture(Capture::KernelError)
    .ex(&[
        ("usb 1-3: device descriptor read/64, error -110", C::Kernel),
        ("[ 3757.200542] usb 4-1: device descriptor read/64, error -62", C::Any),
    ]),
    rule(
        "kernel_broken_descriptor",
        Any(&["has an invalid interface number", "has no interface number"]),
        S::Error,
        "The application firmware is corrupt (broken USB descriptor); this is not download mode",
        "The modem boots far enough to enumerate but describes its interfaces wrongly",
        "Enter download mode (9008) to recover it",
        "USERS.md §2.8 (…/56850)",
    )
    .ex(&[
        ("config 1 has an invalid interface number: 1 but max is 0", C::Kernel),
        ("config 1 has no interface number 0", C::Kernel),
    ]),
    rule(
        "kernel_port_power_cycle",
        Any(&["attempt power cycle"]),
        S::Warning,
        "The kernel power-cycled the USB port after failed enumeration",
        "Enumeration failed repeatedly (seen after an EG25-G firmware crash)",
        "Watch whether the modem comes back (qrescue watch); if not, remove power completely",
        KERNEL_LOG,
    )
    .ex(&[("[ 3758.420772] usb usb4-port1: attempt power cycle", C::Any)]),
    rule(
        "kernel_port_reset_failed",
        Any(&[
            ": cannot reset (err",
            "cannot enable. maybe the usb cable is bad",
            "cannot enable port",
            "unable to enumerate usb device",
        ]),
        S::Error,
        "The USB port could not bring the device up",
        "The hub failed to reset or enable the port: cable, power, or a device that stopped responding",
        "Change the cable and port (no hubs), check the power supply, then replug",
        KERNEL_HUB,
    )
    .capture(Capture::KernelError)
    .ex(&[
        ("[ 70.969426] usb 2-1-port4: cannot reset (err = -110)", C::Any),
        ("[   83.737413] usb usb5-port1: Cannot enable. Maybe the USB cable is bad?", C::Any),
        ("[ 7310.694233] hub 1-0:1.0: unable to enumerate USB device on port 7", C::Any),
    ]),
    rule(
        "kernel_urb_error",
        Func(kernel_urb),
        S::Warning,
        "A USB transfer on the modem's port failed",
        "The driver reported a failed transfer",
        "If these repeat, change cable and port and check the power supply",
        KERNEL_WWAN,
    )
    .only(&[C::Kernel, C::Rebooting])
    .capture(Capture::KernelError)
    .ex(&[
        ("option1 ttyUSB2: usb_wwan_indat_callback: resubmit read urb failed. (-19)", C::Kernel),
        ("option1 ttyUSB2: usb_wwan_indat_callback: nonzero status: -71 on endpoint 83.", C::Kernel),
    ]),
    rule(
        "kernel_usb_disconnect",
        All(&["usb disconnect, device number"]),
        S::Info,
        "The device left the bus (device number {code})",
        "A disconnect on its own is a reboot, mode switch or unplug; recurring at a fixed period it is a boot loop",
        "qrescue watch reports a loop and its period",
        "USERS.md §2.8 (…/55880; community.teltonika.lt …/7083)",
    )
    .capture(Capture::After(&["device number"]))
    .ex(&[("[ 3756.220927] usb 2-1: USB disconnect, device number 3", C::Any)]),
    rule(
        "kernel_usb_connect",
        All(&["usb device number", "using"]),
        S::Info,
        "A device enumerated (device number {code})",
        "The kernel found a new device on the port; the device number grows at every enumeration",
        "Nothing to do",
        KERNEL_LOG,
    )
    .only(&[C::Kernel])
    .capture(Capture::After(&["device number"]))
    .ex(&[("[18527.625891] usb 3-1: new high-speed USB device number 4 using ehci-platform", C::Any)]),
    rule(
        "kernel_new_device",
        Func(kernel_new_device),
        S::Info,
        "A USB device appeared",
        "The kernel read the device's identity",
        "Nothing to do",
        "USERS.md §5 (enumeration signatures)",
    )
    .only(&[C::Kernel])
    .ex(&[(
        "usb 3-1: New USB device found, idVendor=05c6, idProduct=9008, bcdDevice= 0.00",
        C::Kernel,
    )]),
    rule(
        "kernel_serial_attached",
        Any(&["converter now attached to tty", "converter detected"]),
        S::Info,
        "A serial driver (option/qcserial) took one of the modem's interfaces",
        "Each AT/DM/NMEA interface becomes a ttyUSB port; in download mode qcserial may take 9008 (qrescue detaches it)",
        "Nothing to do",
        KERNEL_LOG,
    )
    .only(&[C::Kernel])
    .ex(&[
        ("[33232.942233] usb 2-1: GSM modem (1-port) converter now attached to ttyUSB1", C::Any),
        ("[33232.936035] option 2-1:1.1: GSM modem (1-port) converter detected", C::Any),
    ]),
    rule(
        "kernel_serial_detached",
        Any(&["converter now disconnected from tty", ": device disconnected", "unregister 'qmi_wwan'"]),
        S::Info,
        "A driver released one of the modem's interfaces",
        "The modem left the bus; its ttyUSB ports and network device go away with it",
        "Nothing to do on its own; see the disconnect line",
        KERNEL_LOG,
    )
    .only(&[C::Kernel])
    .ex(&[
        ("[ 3756.235524] option1 ttyUSB0: GSM modem (1-port) converter now disconnected from ttyUSB0", C::Any),
        ("[ 3756.251643] option 2-1:1.0: device disconnected", C::Any),
        ("[ 3756.318657] qmi_wwan 2-1:1.4 wwan0: unregister 'qmi_wwan' usb-1c1b000.usb-1, WWAN/QMI device", C::Any),
    ]),
    rule(
        "kernel_eproto",
        Any(&["error -71"]),
        S::Error,
        "USB protocol errors on this port (error -71)",
        "Cable, power or the modem's USB firmware garble transfers",
        "Change cable and port (no hubs) and check the power supply",
        KERNEL,
    )
    .capture(Capture::KernelError)
    .ex(&[("error -71", C::Kernel)]),
    // --- AT port (USERS.md §2.9) ---
    rule("at_cfun", Func(at_cfun), S::Info, "Functionality level", "", "", AT).ex(&[
        ("+CFUN: 5", C::At),
        ("+CFUN: 7", C::Any),
    ]),
    rule("at_cme_error", Func(at_cme), S::Warning, "+CME ERROR", "", "", CME).ex(&[
        ("+CME ERROR: 3", C::At),
        ("+CME ERROR: 0 (phone failure)", C::Any),
        ("+CME ERROR: memory failure", C::Any),
        ("+CME ERROR: 10", C::At),
    ]),
    rule(
        "at_no_signal",
        All(&["+csq: 99,99"]),
        S::Warning,
        "No signal measured (+CSQ: 99,99)",
        "The radio reports no signal; together with +CFUN: 5 the calibration is missing",
        "Check AT+CFUN?; if it is 1, check antenna and SIM",
        AT,
    )
    .ex(&[("+CSQ: 99,99", C::At)]),
    rule(
        "mm_device_not_ready",
        All(&["devicenotready"]),
        S::Error,
        "ModemManager can't bring the modem online (DeviceNotReady)",
        "The same state as +CFUN: 5, seen through ModemManager: calibration missing",
        "Restore this unit's calibration backup",
        "USERS.md §2.9 (…/27476)",
    )
    .ex(&[(
        "Couldn't set operating mode: QMI protocol error (52): 'DeviceNotReady'",
        C::Any,
    )]),
    rule(
        "mm_failed_state",
        All(&["modem in failed state"]),
        S::Error,
        "ModemManager gave up on the modem",
        "ModemManager could not initialise it (SIM, firmware or calibration)",
        "qrescue's own checks follow: identity (AT+CGSN, AT+QGMR) and functionality (AT+CFUN?)",
        "USERS.md §2.9 (the-modem-distro/pinephone_modem_sdk#71)",
    )
    .ex(&[("error: modem in failed state", C::Any)]),
    rule(
        "at_plain_error",
        Func(at_plain_error),
        S::Benign,
        "The command is not supported by this firmware",
        "Very old firmware lacks some commands (e.g. AT+QGMR)",
        "For the firmware version use AT+CGMR instead",
        "USERS.md §2.9 (forums.quectel.com …/25138)",
    )
    .only(&[C::At])
    .ex(&[("ERROR", C::At)]),
    // --- Host errors (os errors as Rust prints them, and common tool wording) ---
    rule(
        "port_busy",
        Any(&["device or resource busy", "os error 16"]),
        S::Error,
        "Another program holds the modem's port",
        "ModemManager, a router daemon, a terminal or another flasher has it open; two programs on one download-mode port can wedge the boot ROM",
        "qrescue preflight names the program and how to stop it; then retry",
        HOLDERS,
    )
    .ex(&[("Device or resource busy (os error 16)", C::Any)]),
    rule(
        "permission_denied",
        Any(&["permission denied", "os error 13"]),
        S::Error,
        "Permission denied on the modem's port",
        "This user may not open the device node",
        "Install the udev rules (qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules) or run as root",
        "USERS.md §2.7 [analogy] and §2.5 (danielewood/sierra-wireless-modems#25; linux-msm/qdl#15)",
    )
    .ex(&[("error opening serial device: Permission denied", C::Any)]),
];

// ---------------------------------------------------------------------------------------------
// Programmer `<log>` lines: the Firehose table (one meaning per message, in one place).

/// Severity and source for the Firehose table's entries.
fn programmer_meta(id: &str, advice: Advice) -> (Severity, &'static str) {
    match id {
        "nand_start_sector_unaligned" => (
            Severity::Fatal,
            "USERS.md §2.1 and §1 problem 16 (Biktorgj/quectel_eg25_recovery#29)",
        ),
        "nand_erase_beyond_end" => (
            Severity::Fatal,
            "USERS.md §2.1 and §1 problem 16 (the-modem-distro/pinephone_modem_sdk#249)",
        ),
        "nand_pages_per_block_mismatch" => {
            (Severity::Fatal, "USERS.md §1 problem 16 (bkerler/edl#522)")
        }
        "nand_open_failed" => (
            Severity::Fatal,
            "USERS.md §2.1 (forums.quectel.com …/25556?page=3)",
        ),
        "payload_too_large" => (
            Severity::Benign,
            "USERS.md §2.5 (linux-msm/qdl#20); PROTOCOLS.md §9.12",
        ),
        "nand_bad_block" => (
            Severity::Benign,
            "USERS.md §2.1 (Biktorgj/quectel_eg25_recovery#25)",
        ),
        "authentication_required" => (
            Severity::Fatal,
            "PROTOCOLS.md §2.3–2.4 (protocol::firehose::explain)",
        ),
        _ => (
            match advice {
                Advice::Benign | Advice::Renegotiate => Severity::Benign,
                Advice::Retry => Severity::Warning,
                Advice::Stop => Severity::Error,
            },
            "PROTOCOLS.md §2.3–2.4 (protocol::firehose::explain)",
        ),
    }
}

fn programmer(line: &Line, ctx: Context) -> Option<Explanation> {
    if matches!(ctx, Context::Kernel | Context::At) {
        return None;
    }
    let f = explain_log(line.raw)?;
    let (severity, source) = programmer_meta(f.id, f.advice);
    let next = match severity {
        Severity::Fatal | Severity::Error => format!(
            "{} ({SAFE_AGAIN} once the cause is fixed)",
            f.next.trim_end_matches('.')
        ),
        _ => f.next,
    };
    Some(Explanation {
        id: f.id,
        severity,
        title: f.what,
        cause: f.why,
        next,
        source,
        code: None,
        generic: false,
    })
}

/// Explain `line` read in `ctx`: the first matching rule, else the Firehose table.
pub(crate) fn lookup(line: &Line, ctx: Context) -> Option<Explanation> {
    RULES
        .iter()
        .find_map(|r| r.try_match(line, ctx))
        .or_else(|| programmer(line, ctx))
}

/// The ids of every rule in the table (the Firehose table's ids are not included).
pub fn rule_ids() -> Vec<&'static str> {
    RULES.iter().map(|r| r.id).collect()
}

#[cfg(test)]
pub(crate) fn rules() -> &'static [Rule] {
    RULES
}
