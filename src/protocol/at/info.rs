//! Typed parsers for the identity and state replies qrescue reads in normal mode: ATI,
//! AT+QGMR/AT+CGMR, AT+CGSN, AT+QCCID (+ICCID/+CCID), AT+CFUN?, AT+CSQ, AT+QCFG="usbnet" and
//! AT+QSECBOOT. Each takes a complete [`Reply`]; a reply whose final result is not `OK` is
//! [`AtError::Failed`].

use serde::{Deserialize, Serialize};

use super::command::split_args;
use super::reply::{strip_prefix_ci, FinalResult, Reply};
use crate::package::revision::Revision;

/// Why a reply did not give the expected value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AtError {
    /// The modem answered with an error (or another non-OK final result).
    #[error("{command} was answered with {result}")]
    Failed {
        command: String,
        result: FinalResult,
    },
    /// The reply lacks the expected line.
    #[error("the reply to {command} has no {what}")]
    Missing { command: String, what: &'static str },
    /// The expected line is there but does not parse.
    #[error("the reply to {command} has a malformed {what}: {line:?}")]
    Malformed {
        command: String,
        what: &'static str,
        line: String,
    },
    /// A command line qrescue refuses to send.
    #[error("{text:?} cannot be sent: {reason}")]
    BadCommand { text: String, reason: &'static str },
}

fn ok(reply: &Reply) -> Result<(), AtError> {
    if reply.is_ok() {
        Ok(())
    } else {
        Err(AtError::Failed {
            command: reply.command.clone(),
            result: reply.result.clone(),
        })
    }
}

fn missing(reply: &Reply, what: &'static str) -> AtError {
    AtError::Missing {
        command: reply.command.clone(),
        what,
    }
}

fn malformed(reply: &Reply, what: &'static str, line: &str) -> AtError {
    AtError::Malformed {
        command: reply.command.clone(),
        what,
        line: line.chars().take(120).collect(),
    }
}

/// The value after one of `prefixes` on the first line that has it, else the first line.
fn value<'a>(reply: &'a Reply, prefixes: &[&str]) -> Option<&'a str> {
    prefixes
        .iter()
        .find_map(|p| reply.find(p))
        .or_else(|| reply.lines.first().map(|l| l.trim()))
}

/// The Luhn check over a string of digits.
pub fn luhn_ok(digits: &str) -> bool {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return false;
    }
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(i, b)| {
            let d = u32::from(b - b'0');
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

// ----- ATI ------------------------------------------------------------------------------------

/// What `ATI` says: `Quectel`, `EC25`, `Revision: EC25EFAR06A17M4G`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ati {
    pub manufacturer: Option<String>,
    pub model: Option<String>,
    pub revision: Option<String>,
}

pub fn parse_ati(reply: &Reply) -> Result<Ati, AtError> {
    ok(reply)?;
    let mut ati = Ati::default();
    for line in &reply.lines {
        if let Some(r) = strip_prefix_ci(line, "Revision:") {
            ati.revision.get_or_insert_with(|| r.trim().to_string());
        } else if ati.manufacturer.is_none() {
            ati.manufacturer = Some(line.clone());
        } else if ati.model.is_none() {
            ati.model = Some(line.clone());
        }
    }
    if ati == Ati::default() {
        return Err(missing(reply, "identification lines"));
    }
    Ok(ati)
}

// ----- firmware revision ------------------------------------------------------------------------

/// A firmware revision as reported (AT+QGMR, AT+CGMR or ATI's `Revision:` line).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirmwareRevision {
    /// The text as sent (`EC25EFAR06A17M4G_20.200.20.200`).
    pub text: String,
}

impl FirmwareRevision {
    /// The revision parsed by the package rules, when it follows Quectel's naming.
    pub fn parsed(&self) -> Option<Revision> {
        Revision::from_at_reply(&self.text)
    }
}

/// Parse the reply to `AT+QGMR` or `AT+CGMR` (a bare line, `Revision: …` or `+CGMR: …`).
pub fn parse_revision(reply: &Reply) -> Result<FirmwareRevision, AtError> {
    ok(reply)?;
    let v = value(reply, &["Revision:", "+QGMR:", "+CGMR:", "+GMR:"])
        .ok_or_else(|| missing(reply, "revision line"))?;
    let text = v.trim_matches('"').trim();
    if text.is_empty() {
        return Err(malformed(reply, "revision line", v));
    }
    Ok(FirmwareRevision {
        text: text.to_string(),
    })
}

// ----- IMEI and ICCID ---------------------------------------------------------------------------

/// An IMEI (`AT+CGSN`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Imei {
    /// The 15 digits.
    pub digits: String,
    /// Whether the last digit is a valid Luhn check digit.
    pub luhn_ok: bool,
}

pub fn parse_imei(reply: &Reply) -> Result<Imei, AtError> {
    ok(reply)?;
    let v = value(reply, &["+CGSN:", "+GSN:"]).ok_or_else(|| missing(reply, "IMEI line"))?;
    let digits = v.trim_matches('"').trim();
    if digits.len() != 15 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed(reply, "IMEI (15 digits)", v));
    }
    Ok(Imei {
        digits: digits.to_string(),
        luhn_ok: luhn_ok(digits),
    })
}

/// A SIM card's ICCID (`AT+QCCID`, `AT+ICCID`, `AT+CCID`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Iccid {
    /// 18–22 characters: digits, on some cards with a trailing hex filler (`F`).
    pub value: String,
    /// The Luhn check over the digits, when the value is all digits.
    pub luhn_ok: Option<bool>,
}

pub fn parse_iccid(reply: &Reply) -> Result<Iccid, AtError> {
    ok(reply)?;
    let v = value(reply, &["+QCCID:", "+ICCID:", "+CCID:"])
        .ok_or_else(|| missing(reply, "ICCID line"))?;
    let s = v.trim_matches('"').trim();
    let len_ok = (18..=22).contains(&s.len());
    if !len_ok || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed(reply, "ICCID", v));
    }
    let all_digits = s.bytes().all(|b| b.is_ascii_digit());
    Ok(Iccid {
        value: s.to_ascii_uppercase(),
        luhn_ok: all_digits.then(|| luhn_ok(s)),
    })
}

// ----- CFUN ------------------------------------------------------------------------------------

/// The functionality level meanings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CfunState {
    /// 0: minimum functionality.
    Minimum,
    /// 1: full functionality.
    Full,
    /// 4: transmit and receive RF circuits disabled (airplane mode).
    RfOff,
    /// 5: factory test mode (FTM).
    FactoryTest,
    /// 7: offline.
    Offline,
    /// Any other level.
    Other,
}

/// The reply to `AT+CFUN?`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cfun {
    pub level: u8,
    pub state: CfunState,
}

impl Cfun {
    pub fn new(level: u8) -> Cfun {
        let state = match level {
            0 => CfunState::Minimum,
            1 => CfunState::Full,
            4 => CfunState::RfOff,
            5 => CfunState::FactoryTest,
            7 => CfunState::Offline,
            _ => CfunState::Other,
        };
        Cfun { level, state }
    }

    /// Plain words for the level (0, 1, 4 are 3GPP TS 27.007; 5 and 7 are how Quectel/Qualcomm
    /// modems report factory test and offline modes, see USERS.md §1 and §2.9).
    pub fn describe(&self) -> &'static str {
        match self.state {
            CfunState::Minimum => "minimum functionality",
            CfunState::Full => "full functionality",
            CfunState::RfOff => "radio off (airplane mode)",
            CfunState::FactoryTest => "factory test mode (FTM)",
            CfunState::Offline => "offline mode",
            CfunState::Other => "a manufacturer-specific level",
        }
    }

    /// What the level means for a person rescuing the modem, when it signals a problem
    /// (USERS.md §2.9).
    pub fn advice(&self) -> Option<&'static str> {
        match self.state {
            CfunState::FactoryTest => Some(
                "The modem is in factory-test mode, typically because its RF calibration (NV/QCN) is missing; restore this unit's own backup",
            ),
            CfunState::Offline => Some(
                "The modem stays offline, as seen after flashing firmware of another variant or baseline; flash the firmware that matches this module",
            ),
            _ => None,
        }
    }
}

pub fn parse_cfun(reply: &Reply) -> Result<Cfun, AtError> {
    ok(reply)?;
    let v = reply
        .find("+CFUN:")
        .ok_or_else(|| missing(reply, "+CFUN: line"))?;
    let first = split_args(v).into_iter().next().unwrap_or_default();
    let level = first
        .parse::<u8>()
        .map_err(|_| malformed(reply, "+CFUN: level", v))?;
    Ok(Cfun::new(level))
}

// ----- CSQ -------------------------------------------------------------------------------------

/// The reply to `AT+CSQ`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Csq {
    /// 0–31, or 99 for unknown.
    pub rssi: u8,
    /// 0–7, or 99 for unknown.
    pub ber: u8,
}

impl Csq {
    /// The signal strength in dBm (27.007: 0 = −113 or less, 2–30 = −109…−53, 31 = −51 or
    /// more); `None` for 99 (unknown) or values out of range.
    pub fn dbm(&self) -> Option<i32> {
        (self.rssi <= 31).then(|| -113 + 2 * i32::from(self.rssi))
    }
}

pub fn parse_csq(reply: &Reply) -> Result<Csq, AtError> {
    ok(reply)?;
    let v = reply
        .find("+CSQ:")
        .ok_or_else(|| missing(reply, "+CSQ: line"))?;
    let a = split_args(v);
    let num = |i: usize| a.get(i).and_then(|s| s.parse::<u8>().ok());
    match (num(0), num(1)) {
        (Some(rssi), Some(ber)) => Ok(Csq { rssi, ber }),
        _ => Err(malformed(reply, "+CSQ: values", v)),
    }
}

// ----- usbnet ------------------------------------------------------------------------------------

/// The network interface mode from `AT+QCFG="usbnet"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsbNet {
    pub mode: u8,
}

impl UsbNet {
    /// 0 RmNet (QMI/PPP, the default), 1 ECM, 2 MBIM, 3 RNDIS
    /// (forum.openwrt.org/t/qmi-and-mbim-interface-issue-with-modem/202922; RNDIS:
    /// forum.gl-inet.com/t/x750-need-help-4g-modem-no-working/28294, where the module then
    /// bound to rndis_host).
    pub fn name(&self) -> &'static str {
        match self.mode {
            0 => "RmNet (QMI/PPP)",
            1 => "ECM",
            2 => "MBIM",
            3 => "RNDIS",
            _ => "unknown",
        }
    }

    /// Whether this mode moves the DM and AT ports off their usual interfaces (RNDIS puts DM
    /// on interface 2 and AT on 4; forums.quectel.com/t/…/47332).
    pub fn moves_ports(&self) -> bool {
        self.mode == 3
    }
}

pub fn parse_usbnet(reply: &Reply) -> Result<UsbNet, AtError> {
    ok(reply)?;
    let v = reply
        .find("+QCFG:")
        .ok_or_else(|| missing(reply, "+QCFG: line"))?;
    let a = split_args(v);
    if !a.first().is_some_and(|k| k.eq_ignore_ascii_case("usbnet")) {
        return Err(malformed(reply, "usbnet setting", v));
    }
    let mode = a
        .get(1)
        .and_then(|m| m.parse::<u8>().ok())
        .ok_or_else(|| malformed(reply, "usbnet mode", v))?;
    Ok(UsbNet { mode })
}

// ----- QSECBOOT --------------------------------------------------------------------------------

/// The reply to `AT+QSECBOOT…`. Neither PROTOCOLS.md nor USERS.md documents its fields, so
/// they are kept as sent and not interpreted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QSecBoot {
    /// The comma-separated values after `+QSECBOOT:`, unquoted.
    pub fields: Vec<String>,
}

pub fn parse_qsecboot(reply: &Reply) -> Result<QSecBoot, AtError> {
    ok(reply)?;
    let v = reply
        .find("+QSECBOOT:")
        .ok_or_else(|| missing(reply, "+QSECBOOT: line"))?;
    Ok(QSecBoot {
        fields: split_args(v).into_iter().take(32).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::at::cme::CmeError;
    use proptest::prelude::*;

    fn reply(cmd: &str, lines: &[&str], result: FinalResult) -> Reply {
        Reply {
            command: cmd.to_string(),
            echoed: false,
            lines: lines.iter().map(|s| s.to_string()).collect(),
            result,
            urcs: Vec::new(),
            truncated: false,
        }
    }

    #[test]
    fn ati_and_revisions() {
        let r = reply(
            "ATI",
            &["Quectel", "EC25", "Revision: EC25EFAR06A17M4G"],
            FinalResult::Ok,
        );
        let a = parse_ati(&r).unwrap();
        assert_eq!(a.manufacturer.as_deref(), Some("Quectel"));
        assert_eq!(a.model.as_deref(), Some("EC25"));
        assert_eq!(a.revision.as_deref(), Some("EC25EFAR06A17M4G"));
        let q = reply(
            "AT+QGMR",
            &["EC25EFAR06A17M4G_20.200.20.200"],
            FinalResult::Ok,
        );
        let rev = parse_revision(&q).unwrap();
        assert_eq!(rev.text, "EC25EFAR06A17M4G_20.200.20.200");
        assert_eq!(rev.parsed().unwrap().product_name(), "EC25-EFA");
        let c = reply("AT+CGMR", &["+CGMR: EG25GGBR07A08M2G"], FinalResult::Ok);
        assert_eq!(parse_revision(&c).unwrap().text, "EG25GGBR07A08M2G");
        // USERS.md §2.9: AT+QGMR answers ERROR on very old firmware.
        assert!(matches!(
            parse_revision(&reply("AT+QGMR", &[], FinalResult::Error)),
            Err(AtError::Failed { .. })
        ));
        assert!(matches!(
            parse_ati(&reply("ATI", &[], FinalResult::Ok)),
            Err(AtError::Missing { .. })
        ));
    }

    #[test]
    fn imei_iccid_luhn() {
        // 49015420323751 + check digit 8 is the classic Luhn example IMEI.
        let r = reply("AT+CGSN", &["490154203237518"], FinalResult::Ok);
        assert_eq!(
            parse_imei(&r).unwrap(),
            Imei {
                digits: "490154203237518".into(),
                luhn_ok: true
            }
        );
        let bad = reply("AT+CGSN", &["+CGSN: \"490154203237519\""], FinalResult::Ok);
        assert!(!parse_imei(&bad).unwrap().luhn_ok);
        assert!(matches!(
            parse_imei(&reply("AT+CGSN", &["12345"], FinalResult::Ok)),
            Err(AtError::Malformed { .. })
        ));
        let lost = reply(
            "AT+CGSN",
            &[],
            FinalResult::CmeError(CmeError::parse("memory failure")),
        );
        match parse_imei(&lost) {
            Err(AtError::Failed {
                result: FinalResult::CmeError(e),
                ..
            }) => assert!(e.is(23)),
            other => panic!("{other:?}"),
        }
        let i = reply(
            "AT+QCCID",
            &["+QCCID: 89860318740210183215"],
            FinalResult::Ok,
        );
        let id = parse_iccid(&i).unwrap();
        assert_eq!(id.value, "89860318740210183215");
        assert!(id.luhn_ok.is_some());
        let f = reply(
            "AT+QCCID",
            &["+QCCID: 8944110068256270054F"],
            FinalResult::Ok,
        );
        assert_eq!(parse_iccid(&f).unwrap().luhn_ok, None);
        assert!(parse_iccid(&reply("AT+QCCID", &["+QCCID: xyz"], FinalResult::Ok)).is_err());
        assert!(luhn_ok("79927398713"));
        assert!(!luhn_ok("79927398710"));
        assert!(!luhn_ok(""));
    }

    #[test]
    fn cfun_csq_usbnet_qsecboot() {
        let c = parse_cfun(&reply("AT+CFUN?", &["+CFUN: 5"], FinalResult::Ok)).unwrap();
        assert_eq!(c.state, CfunState::FactoryTest);
        assert!(c.advice().unwrap().contains("calibration"));
        let c = parse_cfun(&reply("AT+CFUN?", &["+CFUN: 7"], FinalResult::Ok)).unwrap();
        assert_eq!(c.state, CfunState::Offline);
        assert!(
            parse_cfun(&reply("AT+CFUN?", &["+CFUN: 1,0"], FinalResult::Ok))
                .unwrap()
                .advice()
                .is_none()
        );
        assert!(parse_cfun(&reply("AT+CFUN?", &["+CFUN: x"], FinalResult::Ok)).is_err());
        let q = parse_csq(&reply("AT+CSQ", &["+CSQ: 99,99"], FinalResult::Ok)).unwrap();
        assert_eq!(q.dbm(), None);
        let q = parse_csq(&reply("AT+CSQ", &["+CSQ: 20,0"], FinalResult::Ok)).unwrap();
        assert_eq!(q.dbm(), Some(-73));
        let u = parse_usbnet(&reply(
            "AT+QCFG=\"usbnet\"",
            &["+QCFG: \"usbnet\",3"],
            FinalResult::Ok,
        ))
        .unwrap();
        assert_eq!((u.mode, u.name(), u.moves_ports()), (3, "RNDIS", true));
        assert!(parse_usbnet(&reply(
            "AT+QCFG=\"usbnet\"",
            &["+QCFG: \"band\",3"],
            FinalResult::Ok
        ))
        .is_err());
        let s = parse_qsecboot(&reply(
            "AT+QSECBOOT?",
            &["+QSECBOOT: \"status\",1"],
            FinalResult::Ok,
        ))
        .unwrap();
        assert_eq!(s.fields, ["status", "1"]);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(lines in proptest::collection::vec("\\PC{0,80}", 0..5), ok in any::<bool>()) {
            let refs: Vec<&str> = lines.iter().map(String::as_str).collect();
            let r = reply("AT+X", &refs, if ok { FinalResult::Ok } else { FinalResult::Error });
            let _ = parse_ati(&r);
            if let Ok(rev) = parse_revision(&r) { let _ = rev.parsed(); }
            if let Ok(i) = parse_imei(&r) { prop_assert_eq!(i.digits.len(), 15); }
            if let Ok(i) = parse_iccid(&r) { prop_assert!((18..=22).contains(&i.value.len())); }
            let _ = parse_cfun(&r);
            if let Ok(c) = parse_csq(&r) { let _ = c.dbm(); }
            let _ = parse_usbnet(&r);
            let _ = parse_qsecboot(&r);
        }
    }
}
