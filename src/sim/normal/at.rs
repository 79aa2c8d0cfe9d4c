//! The AT side of an emulated unit in normal mode: a sans-IO responder per AT port (bytes in,
//! bytes and effects out) over one [`ModemState`] the ports share.
//!
//! Framing as Quectel modules answer (V.250 verbose result codes): an echo of every received byte
//! while echo is on (`ATE1`, the default), information text as `\r\n<line>[\r\n<line>…]\r\n`,
//! then `\r\nOK\r\n`, `\r\nERROR\r\n` or `\r\n+CME ERROR: <n>\r\n`. So `AT+CSQ\r` gives
//! `AT+CSQ\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n` with echo on, as gammu's traces of real modems show
//! (gammu/gammu#126: `AT+CPIN?\r\r\n+CPIN: READY\r\n\r\nOK\r\n`). Commands are read up to `\r`;
//! `\n` is ignored, backspace (0x08) deletes, text before `AT` is ignored (V.250 §5.2.1), and
//! several commands may share a line (`AT+CFUN?;+CSQ`). Lines longer than [`MAX_LINE`] are
//! answered `ERROR`.
//!
//! `+CME ERROR` follows `AT+CMEE` (0: plain `ERROR`, 1 numeric — the default here — , 2 verbose),
//! with the codes of 3GPP TS 27.007 §9.2: 0 phone failure (`AT+CFUN=1` in `+CFUN: 7`), 3
//! operation not allowed (`AT+CFUN=1` in factory-test mode `+CFUN: 5`), 13 SIM failure (SIM
//! commands with the SIM powered off in `+CFUN: 0`), 23 memory failure (`AT+CGSN` without an IMEI
//! in NV). USERS.md §2.9 lists the real module's answers this follows.
//!
//! Supported: `AT`, `ATE0/1`, `ATI`, `ATZ`, `AT&F`, `ATV1`, `ATQ0`, `+GMI/+CGMI`, `+GMM/+CGMM`,
//! `+GMR/+CGMR` (short revision), `+QGMR` (full revision), `+GSN/+CGSN` (IMEI), `+QCCID`,
//! `+CFUN` (read, test, write with reset), `+CSQ`, `+CREG?`, `+CPIN?`, `+CMEE`,
//! `+QCFG="usbnet"` (read; a write takes effect at the next reset, as on real modules), `+QPOWD`.
//! Everything else answers `ERROR`, as real firmware does for commands it does not know —
//! including `AT+QFASTBOOT` and `AT+QDOWNLOAD`: the emulator has no fastboot personality
//! (PROTOCOLS.md §5.1 names 18d1:d00d), so it answers like firmware without those commands
//! rather than pretending to reboot into a mode it cannot serve.

use super::state::NormalBoot;
use super::unit::short_revision;

/// Longest command line accepted.
pub const MAX_LINE: usize = 2048;
/// `AT+CSQ` with the radio on: RSSI 21 (−71 dBm), BER unknown.
pub const CSQ_ON: &str = "21,99";

/// What a unit in normal mode is doing now, shared by its AT ports and its DM port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModemState {
    /// How it booted (revision, IMEI, operating mode after boot, EFS).
    pub boot: NormalBoot,
    /// ICCID of the emulated SIM.
    pub iccid: String,
    /// Current `+CFUN`.
    pub cfun: u8,
    /// `AT+QCFG="usbnet"` as saved (0 RMNET/QMI, 1 ECM, 2 MBIM, 3 RNDIS): what the read shows
    /// and what the next boot enumerates.
    pub usbnet: u8,
    /// The composition enumerated now.
    pub usbnet_active: u8,
    /// MSM HW ID (as the boot ROM reports it), for DIAG's extended build ID.
    pub hw_id: u64,
}

impl ModemState {
    /// A unit as it booted, with `usbnet` the saved USB network mode.
    pub fn new(boot: NormalBoot, iccid: String, usbnet: u8) -> Self {
        ModemState {
            cfun: boot.cfun,
            boot,
            iccid,
            usbnet,
            usbnet_active: usbnet,
            hw_id: 0,
        }
    }

    /// `profile`'s unit as it booted: its SIM's ICCID and HW ID from the profile.
    pub fn for_unit(profile: &crate::sim::profile::Profile, boot: NormalBoot, usbnet: u8) -> Self {
        let mut s = ModemState::new(boot, super::unit::unit_iccid(profile), usbnet);
        s.hw_id = profile.identity.hw_id;
        s
    }
}

/// What a command line made the unit do beyond answering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AtEffect {
    /// `AT+CFUN=<fun>,1`: the module resets (it leaves the bus and boots again).
    Reset,
    /// `AT+QPOWD`: the module powers down (it leaves the bus).
    PowerDown,
}

/// The bytes to send back, and an effect once the answer is out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AtReply {
    pub bytes: Vec<u8>,
    pub effect: Option<AtEffect>,
}

/// The unsolicited result codes a module prints on its AT port when it has booted: `RDY`, then
/// with the radio on `+CFUN: 1`, `+CPIN: READY`, `+QUSIM: 1`, `+QIND: SMS DONE`,
/// `+QIND: PB DONE`; in factory-test or wrong-variant mode only `+CFUN: <n>`.
pub fn boot_urcs(unit: &ModemState) -> Vec<u8> {
    let mut lines = vec!["RDY".to_string(), format!("+CFUN: {}", unit.cfun)];
    if unit.cfun == 1 {
        lines.extend(
            [
                "+CPIN: READY",
                "+QUSIM: 1",
                "+QIND: SMS DONE",
                "+QIND: PB DONE",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
    }
    lines
        .iter()
        .flat_map(|l| format!("\r\n{l}\r\n").into_bytes())
        .collect()
}

/// One AT port's line discipline and settings.
#[derive(Debug, Clone)]
pub struct AtPort {
    echo: bool,
    cmee: u8,
    line: Vec<u8>,
    overflow: bool,
    /// An effect is under way: further input is ignored.
    done: bool,
}

impl Default for AtPort {
    fn default() -> Self {
        Self::new()
    }
}

enum Fail {
    Error,
    Cme(u16),
}

type Outcome = Result<Vec<String>, Fail>;

fn cme_text(code: u16) -> &'static str {
    match code {
        0 => "phone failure",
        3 => "operation not allowed",
        4 => "operation not supported",
        13 => "SIM failure",
        23 => "memory failure",
        _ => "unknown",
    }
}

/// Split the text after `AT` into commands: extended ones (`+NAME…`) up to `;` outside quotes,
/// basic ones (`E0`, `I`, `&F`) as a letter (optionally after `&`) and its digits.
fn split_commands(rest: &str) -> Result<Vec<String>, ()> {
    let b = rest.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b';' | b' ' => i += 1,
            b'+' => {
                let start = i;
                let mut quoted = false;
                while i < b.len() && (quoted || b[i] != b';') {
                    if b[i] == b'"' {
                        quoted = !quoted;
                    }
                    i += 1;
                }
                out.push(rest[start..i].trim_end().to_string());
            }
            c if c == b'&' || c.is_ascii_alphabetic() => {
                let start = i;
                i += 1;
                if c == b'&' {
                    if i >= b.len() || !b[i].is_ascii_alphabetic() {
                        return Err(());
                    }
                    i += 1;
                }
                while i < b.len() && b[i].is_ascii_digit() {
                    i += 1;
                }
                out.push(rest[start..i].to_string());
            }
            _ => return Err(()),
        }
    }
    Ok(out)
}

impl AtPort {
    /// A port with echo on and numeric `+CME ERROR`s.
    pub fn new() -> Self {
        AtPort {
            echo: true,
            cmee: 1,
            line: Vec::new(),
            overflow: false,
            done: false,
        }
    }

    /// Echo is on.
    pub fn echo(&self) -> bool {
        self.echo
    }

    fn fail(&self, f: Fail) -> String {
        match (f, self.cmee) {
            (Fail::Error, _) | (_, 0) => "\r\nERROR\r\n".into(),
            (Fail::Cme(c), 2) => format!("\r\n+CME ERROR: {}\r\n", cme_text(c)),
            (Fail::Cme(c), _) => format!("\r\n+CME ERROR: {c}\r\n"),
        }
    }

    /// Feed bytes from the host; returns what the module sends back (echo and answers) and an
    /// effect. After an effect the port ignores further input (the module is going away).
    pub fn feed(&mut self, input: &[u8], unit: &mut ModemState) -> AtReply {
        let mut reply = AtReply::default();
        for &b in input {
            if self.done {
                break;
            }
            if self.echo {
                reply.bytes.push(b);
            }
            match b {
                b'\r' => {
                    let line = std::mem::take(&mut self.line);
                    let overflow = std::mem::replace(&mut self.overflow, false);
                    if overflow {
                        reply.bytes.extend_from_slice(b"\r\nERROR\r\n");
                        continue;
                    }
                    let (bytes, effect) = self.line(&line, unit);
                    reply.bytes.extend_from_slice(bytes.as_bytes());
                    if effect.is_some() {
                        reply.effect = effect;
                        self.done = true;
                    }
                }
                b'\n' => {}
                0x08 | 0x7f => {
                    self.line.pop();
                }
                _ if self.line.len() >= MAX_LINE => self.overflow = true,
                _ => self.line.push(b),
            }
        }
        reply
    }

    /// Answer one command line (without its `\r`).
    fn line(&mut self, raw: &[u8], unit: &mut ModemState) -> (String, Option<AtEffect>) {
        let text = String::from_utf8_lossy(raw);
        let upper = text.to_ascii_uppercase();
        let Some(at) = upper.find("AT") else {
            // No command: nothing to answer (V.250 ignores text before "AT").
            return (String::new(), None);
        };
        let rest = &text[at + 2..];
        let Ok(commands) = split_commands(rest.trim()) else {
            return (self.fail(Fail::Error), None);
        };
        let mut out = String::new();
        let mut effect = None;
        for cmd in &commands {
            match self.command(cmd, unit, &mut effect) {
                Ok(lines) => {
                    if !lines.is_empty() {
                        out.push_str("\r\n");
                        out.push_str(&lines.join("\r\n"));
                        out.push_str("\r\n");
                    }
                }
                Err(f) => {
                    out.push_str(&self.fail(f));
                    return (out, None);
                }
            }
        }
        out.push_str("\r\nOK\r\n");
        if effect == Some(AtEffect::PowerDown) {
            out.push_str("\r\nPOWERED DOWN\r\n");
        }
        (out, effect)
    }

    fn command(
        &mut self,
        cmd: &str,
        unit: &mut ModemState,
        effect: &mut Option<AtEffect>,
    ) -> Outcome {
        let upper = cmd.to_ascii_uppercase();
        if !upper.starts_with('+') {
            return self.basic(&upper, unit);
        }
        // Name, then the form: "", "?", "=?", "=<args>".
        let name_end = upper.find(['=', '?']).unwrap_or(upper.len());
        let name = &upper[1..name_end];
        let form = &cmd[name_end..];
        let none = || Ok(Vec::new());
        let one = |s: String| Ok(vec![s]);
        let test = form == "=?";
        match name {
            "GMI" | "CGMI" if form.is_empty() => one("Quectel".into()),
            "GMM" | "CGMM" if form.is_empty() => one(unit.boot.model.clone()),
            "GMR" | "CGMR" if form.is_empty() => {
                one(short_revision(&unit.boot.revision).to_string())
            }
            "QGMR" if form.is_empty() => one(unit.boot.revision.clone()),
            "GMI" | "CGMI" | "GMM" | "CGMM" | "GMR" | "CGMR" | "QGMR" | "GSN" | "CGSN" if test => {
                none()
            }
            "GSN" | "CGSN" if form.is_empty() => match &unit.boot.imei {
                Some(imei) => one(imei.clone()),
                None => Err(Fail::Cme(23)),
            },
            "QCCID" if form.is_empty() => {
                if unit.cfun == 0 {
                    Err(Fail::Cme(13))
                } else {
                    one(format!("+QCCID: {}", unit.iccid))
                }
            }
            "QCCID" if test => none(),
            "CPIN" if form == "?" => {
                if unit.cfun == 0 {
                    Err(Fail::Cme(13))
                } else {
                    one("+CPIN: READY".into())
                }
            }
            "CPIN" if test => none(),
            "CSQ" if form.is_empty() => {
                let v = if unit.cfun == 1 { CSQ_ON } else { "99,99" };
                one(format!("+CSQ: {v}"))
            }
            "CSQ" if test => one("+CSQ: (0-31,99),(0-7,99)".into()),
            "CREG" if form == "?" => {
                let stat = if unit.cfun == 1 { 1 } else { 0 };
                one(format!("+CREG: 0,{stat}"))
            }
            "CMEE" if form == "?" => one(format!("+CMEE: {}", self.cmee)),
            "CMEE" if test => one("+CMEE: (0-2)".into()),
            "CMEE" => match form.strip_prefix('=').map(str::trim) {
                Some(v @ ("0" | "1" | "2")) => {
                    self.cmee = v.parse().unwrap_or(1);
                    none()
                }
                _ => Err(Fail::Error),
            },
            "CFUN" if form == "?" => one(format!("+CFUN: {}", unit.cfun)),
            "CFUN" if test => one("+CFUN: (0,1,4),(0-1)".into()),
            "CFUN" => self.cfun_write(form, unit, effect),
            "QCFG" => self.qcfg(form, unit),
            "QPOWD" if form.is_empty() || matches!(form, "=0" | "=1") => {
                *effect = Some(AtEffect::PowerDown);
                none()
            }
            _ => Err(Fail::Error),
        }
    }

    fn basic(&mut self, cmd: &str, unit: &ModemState) -> Outcome {
        match cmd {
            "E" | "E0" => {
                self.echo = false;
                Ok(Vec::new())
            }
            "E1" => {
                self.echo = true;
                Ok(Vec::new())
            }
            "I" | "I0" => Ok(vec![
                "Quectel".into(),
                unit.boot.model.clone(),
                format!("Revision: {}", short_revision(&unit.boot.revision)),
            ]),
            "Z" | "Z0" | "&F" | "&F0" => {
                self.echo = true;
                self.cmee = 1;
                Ok(Vec::new())
            }
            "V1" | "Q0" => Ok(Vec::new()),
            _ => Err(Fail::Error),
        }
    }

    fn cfun_write(
        &mut self,
        form: &str,
        unit: &mut ModemState,
        effect: &mut Option<AtEffect>,
    ) -> Outcome {
        let Some(args) = form.strip_prefix('=') else {
            return Err(Fail::Error);
        };
        let mut it = args.split(',').map(str::trim);
        let fun = match it.next() {
            Some("0") => 0,
            Some("1") => 1,
            Some("4") => 4,
            _ => return Err(Fail::Error),
        };
        let reset = match it.next() {
            None | Some("0") => false,
            Some("1") => true,
            Some(_) => return Err(Fail::Error),
        };
        if it.next().is_some() {
            return Err(Fail::Error);
        }
        if fun == 1 {
            match unit.boot.cfun {
                5 => return Err(Fail::Cme(3)),
                7 => return Err(Fail::Cme(0)),
                _ => {}
            }
        }
        unit.cfun = fun;
        if reset {
            *effect = Some(AtEffect::Reset);
        }
        Ok(Vec::new())
    }

    fn qcfg(&mut self, form: &str, unit: &mut ModemState) -> Outcome {
        if form == "=?" {
            return Ok(vec!["+QCFG: \"usbnet\",(0-3)".into()]);
        }
        let Some(args) = form.strip_prefix('=') else {
            return Err(Fail::Error);
        };
        let mut parts = args.split(',').map(str::trim);
        let name = parts.next().unwrap_or("");
        if !name.eq_ignore_ascii_case("\"usbnet\"") {
            return Err(Fail::Error);
        }
        match (parts.next(), parts.next()) {
            (None, None) => Ok(vec![format!("+QCFG: \"usbnet\",{}", unit.usbnet)]),
            (Some(v @ ("0" | "1" | "2" | "3")), None) => {
                unit.usbnet = v.parse().unwrap_or(0);
                Ok(Vec::new())
            }
            _ => Err(Fail::Error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state(cfun: u8, imei: Option<&str>) -> ModemState {
        let boot = NormalBoot {
            model: "EC25".into(),
            revision: "EC25EFAR06A17M4G_20.200.20.200".into(),
            marked: true,
            factory_revision: "EC25EFAR06A17M4G_20.200.20.200".into(),
            cfun,
            imei: imei.map(str::to_string),
            calibrated: cfun == 1,
            efs_partition: Some("EFS2".into()),
            efs: None,
        };
        ModemState::new(boot, "89490000000000000013".into(), 0)
    }

    fn talk(port: &mut AtPort, unit: &mut ModemState, host: &str) -> String {
        String::from_utf8(port.feed(host.as_bytes(), unit).bytes).unwrap()
    }

    #[test]
    fn identity_transcript_with_echo_exact_bytes() {
        let mut u = state(1, Some("861234050000017"));
        let mut p = AtPort::new();
        assert_eq!(talk(&mut p, &mut u, "AT\r"), "AT\r\r\nOK\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "ATI\r"),
            "ATI\r\r\nQuectel\r\nEC25\r\nRevision: EC25EFAR06A17M4G\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "AT+QGMR\r\n"),
            // The LF after the CR is echoed after the answer to the line the CR ended.
            "AT+QGMR\r\r\nEC25EFAR06A17M4G_20.200.20.200\r\n\r\nOK\r\n\n"
        );
        assert_eq!(talk(&mut p, &mut u, "ATE0\r"), "ATE0\r\r\nOK\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "AT+CGMR\r"),
            "\r\nEC25EFAR06A17M4G\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "at+cgsn\r"),
            "\r\n861234050000017\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "AT+GSN\r"),
            "\r\n861234050000017\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "AT+QCCID\r"),
            "\r\n+QCCID: 89490000000000000013\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "AT+CPIN?\r"),
            "\r\n+CPIN: READY\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "AT+CFUN?;+CSQ\r"),
            "\r\n+CFUN: 1\r\n\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+BOGUS\r"), "\r\nERROR\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+QFASTBOOT\r"), "\r\nERROR\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+QDOWNLOAD=1\r"), "\r\nERROR\r\n");
        assert_eq!(talk(&mut p, &mut u, "\r"), "");
        assert_eq!(talk(&mut p, &mut u, "ATE1\r"), "\r\nOK\r\n");
        // Split across reads, with a typo fixed by backspace.
        assert_eq!(talk(&mut p, &mut u, "AT+CS"), "AT+CS");
        assert_eq!(
            talk(&mut p, &mut u, "X\x08Q\r"),
            "X\x08Q\r\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
        );
    }

    #[test]
    fn factory_test_mode_answers_like_a_module_without_calibration() {
        let mut u = state(5, None);
        let mut p = AtPort::new();
        assert_eq!(talk(&mut p, &mut u, "ATE0\r"), "ATE0\r\r\nOK\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "AT+CFUN?\r"),
            "\r\n+CFUN: 5\r\n\r\nOK\r\n"
        );
        assert_eq!(
            talk(&mut p, &mut u, "AT+CSQ\r"),
            "\r\n+CSQ: 99,99\r\n\r\nOK\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=1\r"), "\r\n+CME ERROR: 3\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+CGSN\r"), "\r\n+CME ERROR: 23\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+CMEE=2\r"), "\r\nOK\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "AT+CGSN\r"),
            "\r\n+CME ERROR: memory failure\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+CMEE=0\r"), "\r\nOK\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=1\r"), "\r\nERROR\r\n");
        assert_eq!(u.cfun, 5);
    }

    #[test]
    fn wrong_variant_refuses_full_function_with_phone_failure() {
        let mut u = state(7, Some("861234050000017"));
        let mut p = AtPort::new();
        p.feed(b"ATE0\r", &mut u);
        assert_eq!(
            talk(&mut p, &mut u, "AT+CFUN?\r"),
            "\r\n+CFUN: 7\r\n\r\nOK\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=1\r"), "\r\n+CME ERROR: 0\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "AT+CSQ\r"),
            "\r\n+CSQ: 99,99\r\n\r\nOK\r\n"
        );
    }

    #[test]
    fn cfun_changes_and_resets() {
        let mut u = state(1, Some("861234050000017"));
        let mut p = AtPort::new();
        p.feed(b"ATE0\r", &mut u);
        assert_eq!(
            talk(&mut p, &mut u, "AT+CFUN=?\r"),
            "\r\n+CFUN: (0,1,4),(0-1)\r\n\r\nOK\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=4\r"), "\r\nOK\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "AT+CSQ\r"),
            "\r\n+CSQ: 99,99\r\n\r\nOK\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=0\r"), "\r\nOK\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+CPIN?\r"), "\r\n+CME ERROR: 13\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=1\r"), "\r\nOK\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT+CFUN=7\r"), "\r\nERROR\r\n");
        let r = p.feed(b"AT+CFUN=1,1\rAT\r", &mut u);
        assert_eq!(r.bytes, b"\r\nOK\r\n");
        assert_eq!(r.effect, Some(AtEffect::Reset));
        assert_eq!(p.feed(b"AT\r", &mut u), AtReply::default());
    }

    #[test]
    fn usbnet_is_saved_for_the_next_boot_and_powering_down_says_so() {
        let mut u = state(1, Some("861234050000017"));
        let mut p = AtPort::new();
        p.feed(b"ATE0\r", &mut u);
        assert_eq!(
            talk(&mut p, &mut u, "AT+QCFG=\"usbnet\"\r"),
            "\r\n+QCFG: \"usbnet\",0\r\n\r\nOK\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+QCFG=\"usbnet\",2\r"), "\r\nOK\r\n");
        assert_eq!(
            talk(&mut p, &mut u, "AT+QCFG=\"USBNET\"\r"),
            "\r\n+QCFG: \"usbnet\",2\r\n\r\nOK\r\n"
        );
        assert_eq!((u.usbnet, u.usbnet_active), (2, 0));
        assert_eq!(
            talk(&mut p, &mut u, "AT+QCFG=\"usbnet\",9\r"),
            "\r\nERROR\r\n"
        );
        assert_eq!(talk(&mut p, &mut u, "AT+QCFG=\"band\"\r"), "\r\nERROR\r\n");
        let r = p.feed(b"AT+QPOWD=1\r", &mut u);
        assert_eq!(r.bytes, b"\r\nOK\r\n\r\nPOWERED DOWN\r\n");
        assert_eq!(r.effect, Some(AtEffect::PowerDown));
    }

    #[test]
    fn boot_urcs_follow_the_mode() {
        assert_eq!(
            String::from_utf8(boot_urcs(&state(1, None))).unwrap(),
            "\r\nRDY\r\n\r\n+CFUN: 1\r\n\r\n+CPIN: READY\r\n\r\n+QUSIM: 1\r\n\r\n+QIND: SMS DONE\r\n\r\n+QIND: PB DONE\r\n"
        );
        assert_eq!(
            String::from_utf8(boot_urcs(&state(5, None))).unwrap(),
            "\r\nRDY\r\n\r\n+CFUN: 5\r\n"
        );
    }

    #[test]
    fn overlong_lines_and_junk_are_errors_not_panics() {
        let mut u = state(1, None);
        let mut p = AtPort::new();
        p.feed(b"ATE0\r", &mut u);
        let long = format!("AT{}\r", "A".repeat(MAX_LINE + 10));
        assert_eq!(talk(&mut p, &mut u, &long), "\r\nERROR\r\n");
        assert_eq!(talk(&mut p, &mut u, "AT\r"), "\r\nOK\r\n");
        assert_eq!(talk(&mut p, &mut u, "hello\r"), "");
        assert_eq!(talk(&mut p, &mut u, "AT!\r"), "\r\nERROR\r\n");
    }

    proptest! {
        #[test]
        fn arbitrary_input_never_panics_and_is_answered_per_line(
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..200), 0..8),
            cfun in prop_oneof![Just(1u8), Just(5u8), Just(7u8)],
        ) {
            let mut u = state(cfun, Some("861234050000017"));
            let mut p = AtPort::new();
            for c in &chunks {
                let r = p.feed(c, &mut u);
                prop_assert!(r.bytes.len() <= c.len() * 2 + 4096 * (c.iter().filter(|b| **b == b'\r').count() + 1));
            }
            prop_assert!(matches!(u.cfun, 0 | 1 | 4 | 5 | 7));
        }

        #[test]
        fn printable_commands_always_end_in_a_final_result(cmd in "[A-Za-z0-9+=?,\";&]{0,40}") {
            let mut u = state(1, Some("861234050000017"));
            let mut p = AtPort::new();
            p.feed(b"ATE0\r", &mut u);
            let r = p.feed(format!("AT{cmd}\r").as_bytes(), &mut u);
            let s = String::from_utf8(r.bytes).unwrap();
            prop_assert!(
                s.ends_with("\r\nOK\r\n") || s.ends_with("\r\nERROR\r\n")
                    || s.contains("+CME ERROR: ") || s.ends_with("POWERED DOWN\r\n"),
                "{s:?}"
            );
        }
    }
}
