//! An AT command line qrescue may send, with what it does to the USB side of the modem.
//!
//! Some commands change the USB composition (the set of interfaces the modem exposes) or
//! restart the modem, and a wrong value can lock a person out of the AT port: after
//! `AT+QCFG="usbnet",3` (RNDIS) a GL.iNet X750 had only ttyUSB0/1 left; after
//! `AT+QCFG="data_interface",0,0` an EM160R/RM500Q stopped answering on its AT port (USERS.md
//! §17; forums.quectel.com/t/cant-send-at-command-after-changing-data-interface-to-0-0/47332:
//! in RNDIS mode the DM port moves from interface 0 to 2 and AT from 2 to 4).
//! [`Command::usb_impact`] names these so a client can refuse or warn.

use std::time::Duration;

use serde::Serialize;

use super::info::AtError;
use super::reply::strip_prefix_ci;

/// Longest command line qrescue sends (characters, without the `\r`).
pub const MAX_COMMAND: usize = 512;

/// Default wait for a reply.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);
/// Wait for `AT+CFUN` (changing the functionality level switches the radio).
pub const CFUN_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait for commands that read the SIM.
pub const SIM_TIMEOUT: Duration = Duration::from_secs(2);

/// What a command does to the modem's USB side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "impact", rename_all = "snake_case")]
pub enum UsbImpact {
    /// Changes which USB interfaces the modem exposes (from its next start).
    Composition { reason: &'static str },
    /// Restarts or powers down the modem, or boots it into another mode: all ports go away.
    Restart { reason: &'static str },
}

impl UsbImpact {
    pub fn reason(&self) -> &'static str {
        match self {
            UsbImpact::Composition { reason } | UsbImpact::Restart { reason } => reason,
        }
    }
}

/// The form of one command in a line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `AT+X`
    Execute,
    /// `AT+X?`
    Read,
    /// `AT+X=?`
    Test,
    /// `AT+X=args`
    Set,
}

/// One command of a line (a line may chain several with `;`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    /// Upper-case name: `+CFUN`, `+QCFG`, `I`, `E0`.
    pub name: String,
    pub form: Form,
    /// Arguments of a set command, unquoted and trimmed.
    pub args: Vec<String>,
}

/// Split `a,"b,c", d` into `a`, `b,c`, `d` (quotes removed).
pub fn split_args(s: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    for c in s.chars() {
        match c {
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur).trim().to_string()),
            c => cur.push(c),
        }
    }
    out.push(cur.trim().to_string());
    out
}

/// Split a line at `;` outside quotes.
fn split_chain(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

fn parse_part(p: &str) -> Part {
    let p = p.trim();
    let (name, form, args) = if let Some(i) = p.find('=') {
        let rest = &p[i + 1..];
        if rest.trim() == "?" {
            (&p[..i], Form::Test, Vec::new())
        } else {
            (&p[..i], Form::Set, split_args(rest))
        }
    } else if let Some(n) = p.strip_suffix('?') {
        (n, Form::Read, Vec::new())
    } else {
        (p, Form::Execute, Vec::new())
    };
    Part {
        name: name.trim().to_ascii_uppercase(),
        form,
        args,
    }
}

/// A validated AT command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Command {
    text: String,
    parts: Vec<Part>,
}

impl Command {
    /// Validate `text`: starts with `AT`, printable ASCII only, at most [`MAX_COMMAND`]
    /// characters. The line end is added when sending.
    pub fn new(text: &str) -> Result<Command, AtError> {
        let text = text.trim();
        let bad = |reason: &'static str| AtError::BadCommand {
            text: text.chars().take(60).collect(),
            reason,
        };
        if text.len() > MAX_COMMAND {
            return Err(bad("it is longer than 512 characters"));
        }
        if !text.bytes().all(|b| (0x20..=0x7E).contains(&b)) {
            return Err(bad("it contains control or non-ASCII characters"));
        }
        let Some(body) = strip_prefix_ci(text, "AT") else {
            return Err(bad("AT commands start with \"AT\""));
        };
        let parts = if body.trim().is_empty() {
            Vec::new()
        } else {
            split_chain(body).into_iter().map(parse_part).collect()
        };
        Ok(Command {
            text: text.to_string(),
            parts,
        })
    }

    /// The command line as given (trimmed).
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The bytes to write: the line and `\r`.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = self.text.as_bytes().to_vec();
        b.push(b'\r');
        b
    }

    /// The commands in the line.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// The prefix of the information lines the (first) command answers with, for extended
    /// commands: `+CFUN:` for `AT+CFUN?`. `None` for basic commands such as `ATI`.
    pub fn info_prefix(&self) -> Option<String> {
        let p = self.parts.first()?;
        (p.name.starts_with('+') && p.name.len() > 1).then(|| format!("{}:", p.name))
    }

    /// How long to wait for the reply by default.
    pub fn default_timeout(&self) -> Duration {
        self.parts
            .iter()
            .map(|p| match p.name.as_str() {
                "+CFUN" => CFUN_TIMEOUT,
                "+QCCID" | "+ICCID" | "+CCID" | "+CPIN" | "+CIMI" => SIM_TIMEOUT,
                _ => DEFAULT_TIMEOUT,
            })
            .max()
            .unwrap_or(DEFAULT_TIMEOUT)
    }

    /// Whether the line changes the USB composition or restarts the modem.
    pub fn usb_impact(&self) -> Option<UsbImpact> {
        self.parts.iter().find_map(part_impact)
    }
}

fn part_impact(p: &Part) -> Option<UsbImpact> {
    let first = p.args.first().map(|a| a.to_ascii_lowercase());
    match (p.name.as_str(), p.form) {
        ("+QCFG", Form::Set) if p.args.len() >= 2 => match first.as_deref()? {
            "usbnet" => Some(UsbImpact::Composition {
                reason: "AT+QCFG=\"usbnet\" switches the network interface (RmNet/ECM/MBIM/RNDIS); RNDIS moves the DM and AT ports to other interfaces",
            }),
            "usbcfg" => Some(UsbImpact::Composition {
                reason: "AT+QCFG=\"usbcfg\" enables or disables USB interfaces (DM, NMEA, AT, modem, network, ADB)",
            }),
            "data_interface" => Some(UsbImpact::Composition {
                reason: "AT+QCFG=\"data_interface\" moves the data path between USB and PCIe; a wrong value has left modems without a working AT port",
            }),
            _ => None,
        },
        ("+QUSBCFG", Form::Set) => Some(UsbImpact::Composition {
            reason: "AT+QUSBCFG changes the USB configuration",
        }),
        ("+CFUN", Form::Set) if p.args.get(1).map(String::as_str) == Some("1") => {
            Some(UsbImpact::Restart {
                reason: "AT+CFUN=<n>,1 resets the modem (about 30-60 s without ports)",
            })
        }
        ("+QPOWD", _) => Some(UsbImpact::Restart {
            reason: "AT+QPOWD powers the modem down",
        }),
        ("+QRST", Form::Set) => Some(UsbImpact::Restart {
            reason: "AT+QRST resets the modem",
        }),
        ("+QFASTBOOT", _) => Some(UsbImpact::Restart {
            reason: "AT+QFASTBOOT reboots the modem into fastboot (18d1:d00d)",
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn validation() {
        assert!(Command::new("ATI").is_ok());
        assert!(Command::new("at+csq").is_ok());
        assert!(Command::new("AT").is_ok());
        assert!(Command::new("+CSQ").is_err());
        assert!(Command::new("AT+CSQ\r\nATZ").is_err());
        assert!(Command::new(&format!("AT{}", "A".repeat(600))).is_err());
        assert!(Command::new("AT+CSQ\u{e9}").is_err());
        assert_eq!(Command::new(" AT+CSQ ").unwrap().to_bytes(), b"AT+CSQ\r");
    }

    #[test]
    fn forms_and_prefixes() {
        let c = Command::new("AT+QCFG=\"usbnet\"").unwrap();
        assert_eq!(c.parts()[0].name, "+QCFG");
        assert_eq!(c.parts()[0].form, Form::Set);
        assert_eq!(c.parts()[0].args, ["usbnet"]);
        assert_eq!(c.info_prefix().as_deref(), Some("+QCFG:"));
        assert_eq!(c.usb_impact(), None);
        assert_eq!(
            Command::new("AT+CFUN?").unwrap().parts()[0].form,
            Form::Read
        );
        assert_eq!(
            Command::new("AT+CFUN=?").unwrap().parts()[0].form,
            Form::Test
        );
        assert_eq!(Command::new("ATI").unwrap().info_prefix(), None);
        assert_eq!(
            Command::new("ATI").unwrap().default_timeout(),
            DEFAULT_TIMEOUT
        );
        assert_eq!(
            Command::new("AT+CFUN?").unwrap().default_timeout(),
            CFUN_TIMEOUT
        );
        assert_eq!(
            split_args("\"usbcfg\",0x2C7C, \"a,b\""),
            ["usbcfg", "0x2C7C", "a,b"]
        );
    }

    #[test]
    fn composition_changes_are_named() {
        for (cmd, comp) in [
            ("AT+QCFG=\"usbnet\",3", true),
            ("at+qcfg=\"USBNET\",1", true),
            ("AT+QCFG=\"usbcfg\",0x2C7C,0x0125,1,1,1,1,1,0,0", true),
            ("AT+QCFG=\"data_interface\",0,0", true),
            ("AT+QUSBCFG=1", true),
            ("AT+CSQ;+QCFG=\"usbnet\",2", true),
            ("AT+CFUN=1,1", false),
            ("AT+QPOWD", false),
            ("AT+QFASTBOOT", false),
        ] {
            let c = Command::new(cmd).unwrap();
            let i = c.usb_impact().unwrap_or_else(|| panic!("{cmd}"));
            assert_eq!(matches!(i, UsbImpact::Composition { .. }), comp, "{cmd}");
            assert!(!i.reason().is_empty());
        }
        for cmd in [
            "AT+QCFG=\"usbnet\"",
            "AT+QCFG=\"usbcfg\"",
            "AT+CFUN=1",
            "AT+CFUN?",
            "ATI",
            "AT+QCFG=\"band\",0,0",
        ] {
            assert_eq!(Command::new(cmd).unwrap().usb_impact(), None, "{cmd}");
        }
    }

    proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,600}") {
            if let Ok(c) = Command::new(&s) {
                let _ = c.usb_impact();
                let _ = c.info_prefix();
                let _ = c.default_timeout();
                prop_assert!(c.to_bytes().ends_with(b"\r"));
            }
            let _ = Command::new(&format!("AT{s}"));
        }
    }
}
