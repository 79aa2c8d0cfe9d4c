//! DIAG commands and responses (frame payloads, without HDLC framing): the Quectel switch to
//! EDL, extended build ID, NV item read, error responses, and reply matching. Sans-IO.
//!
//! Every message has an `encode` and a `parse`, so the host session and the emulated modem use
//! the same code. Parsers take a whole frame payload, never panic, and turn an error response
//! (0x13 bad command, 0x14 bad parameters, 0x15 bad length, 0x18 bad mode, 0x42 SPC locked,
//! 0x47 security required) into [`DiagError::Rejected`].
//!
//! Sources (PROTOCOLS.md §6 unless noted): switch to EDL `4B 65 01 00`, echoed on success;
//! extended build ID 0x7C (cmd, version, reserved[2], msm u32, model u32, NUL-terminated
//! software revision); NV read 0x26 (item u16, 128 data bytes, status u16). The error codes
//! 0x18/0x42/0x47 and the NV status names come from bkerler/edl `qc_diag.py` (`diag_cmds`,
//! `decodestatus`, `DecodeNVItems`) and iamromulan/qfenix `diag.h` (`NV_*_S`); facts only.

use std::fmt;

use serde::Serialize;

/// DIAG command codes (first payload byte).
pub mod cmd {
    /// Error response: the command code is not known.
    pub const BAD_CMD: u8 = 0x13;
    /// Error response: the parameters are invalid.
    pub const BAD_PARM: u8 = 0x14;
    /// Error response: the packet length is wrong.
    pub const BAD_LEN: u8 = 0x15;
    /// Error response: not allowed in this mode (online vs offline).
    pub const BAD_MODE: u8 = 0x18;
    /// NV item read.
    pub const NV_READ: u8 = 0x26;
    /// NV item write (named for completeness; qrescue never writes NV).
    pub const NV_WRITE: u8 = 0x27;
    /// Legacy DMSS download mode (`3A A1 6E 7E`).
    pub const DLOAD: u8 = 0x3A;
    /// Error response: NV read/write refused because the SPC is locked.
    pub const BAD_SPC_MODE: u8 = 0x42;
    /// Error response: security privileges required.
    pub const BAD_SEC_MODE: u8 = 0x47;
    /// Subsystem dispatch: `4B <subsystem u8> <command u16 LE> …`.
    pub const SUBSYS: u8 = 0x4B;
    /// Extended build ID.
    pub const EXT_BUILD_ID: u8 = 0x7C;
}

/// Subsystem IDs used with [`cmd::SUBSYS`].
pub mod subsys {
    /// EFS2, the standard ID.
    pub const EFS2: u8 = 0x13;
    /// EFS2 on an alternate ID some firmwares use (iamromulan/qfenix `DIAG_SUBSYS_EFS_ALT`).
    pub const EFS2_ALT: u8 = 0x3E;
    /// The subsystem of the Quectel/Qualcomm switch to EDL (command 0x0001).
    pub const EDL: u8 = 0x65;
}

/// The switch-to-EDL request payload; the frame on the wire is `4B 65 01 00 54 0F 7E`.
pub const SWITCH_TO_EDL: [u8; 4] = [cmd::SUBSYS, subsys::EDL, 0x01, 0x00];

/// Bytes of the original request kept from an error response.
pub const MAX_ECHO: usize = 64;

/// Longest text field taken from a build ID reply (characters).
pub const MAX_TEXT: usize = 256;

/// Data bytes of one NV item.
pub const NV_DATA_LEN: usize = 128;
/// Length of an NV read request and response: cmd, item u16, data, status u16.
pub const NV_PACKET_LEN: usize = 1 + 2 + NV_DATA_LEN + 2;

/// What kind of error response the modem sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectKind {
    /// 0x13: the modem does not know the command.
    BadCommand,
    /// 0x14: the parameters were refused.
    BadParameters,
    /// 0x15: the packet length was wrong.
    BadLength,
    /// 0x18: not allowed in the modem's current mode (online vs offline).
    BadMode,
    /// 0x42: refused because the SPC (service programming code) is locked.
    SpcLocked,
    /// 0x47: security privileges are required.
    SecurityRequired,
}

impl RejectKind {
    /// All kinds, in code order.
    pub const ALL: [RejectKind; 6] = [
        RejectKind::BadCommand,
        RejectKind::BadParameters,
        RejectKind::BadLength,
        RejectKind::BadMode,
        RejectKind::SpcLocked,
        RejectKind::SecurityRequired,
    ];

    /// The kind for an error-response command code.
    pub fn from_code(code: u8) -> Option<RejectKind> {
        Some(match code {
            cmd::BAD_CMD => RejectKind::BadCommand,
            cmd::BAD_PARM => RejectKind::BadParameters,
            cmd::BAD_LEN => RejectKind::BadLength,
            cmd::BAD_MODE => RejectKind::BadMode,
            cmd::BAD_SPC_MODE => RejectKind::SpcLocked,
            cmd::BAD_SEC_MODE => RejectKind::SecurityRequired,
            _ => return None,
        })
    }

    /// The command code of this error response.
    pub fn code(self) -> u8 {
        match self {
            RejectKind::BadCommand => cmd::BAD_CMD,
            RejectKind::BadParameters => cmd::BAD_PARM,
            RejectKind::BadLength => cmd::BAD_LEN,
            RejectKind::BadMode => cmd::BAD_MODE,
            RejectKind::SpcLocked => cmd::BAD_SPC_MODE,
            RejectKind::SecurityRequired => cmd::BAD_SEC_MODE,
        }
    }

    /// Plain words.
    pub fn describe(self) -> &'static str {
        match self {
            RejectKind::BadCommand => "the modem does not support this DIAG command",
            RejectKind::BadParameters => "the modem refused the command's parameters",
            RejectKind::BadLength => "the modem says the command has the wrong length",
            RejectKind::BadMode => "the command is not allowed in the modem's current mode",
            RejectKind::SpcLocked => "the modem's service programming code (SPC) is locked",
            RejectKind::SecurityRequired => "the modem requires DIAG security privileges",
        }
    }
}

/// An error response: its kind and the start of the request it echoes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rejection {
    pub kind: RejectKind,
    /// The first bytes of the refused request as the modem echoed them (at most [`MAX_ECHO`]).
    pub echo: Vec<u8>,
}

impl Rejection {
    /// Parse an error response; `None` when `frame` is not one.
    pub fn parse(frame: &[u8]) -> Option<Rejection> {
        let (&code, rest) = frame.split_first()?;
        let kind = RejectKind::from_code(code)?;
        Some(Rejection {
            kind,
            echo: rest[..rest.len().min(MAX_ECHO)].to_vec(),
        })
    }

    /// The error response a modem sends for `request` (code, then the request, capped).
    pub fn encode(kind: RejectKind, request: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(1 + request.len().min(MAX_ECHO));
        out.push(kind.code());
        out.extend_from_slice(&request[..request.len().min(MAX_ECHO)]);
        out
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} (error response {:#04x}",
            self.kind.describe(),
            self.kind.code()
        )?;
        if let Some(c) = self.echo.first() {
            write!(f, " to command {c:#04x}")?;
        }
        write!(f, ")")
    }
}

/// Why a DIAG exchange did not give the expected result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiagError {
    /// The modem answered with an error response.
    #[error("{0}")]
    Rejected(Rejection),
    /// The reply is for another command.
    #[error("expected a reply to DIAG command {expected:#04x}, got {found}")]
    WrongReply { expected: u8, found: String },
    /// The reply is shorter than its layout.
    #[error("the DIAG {what} reply has {len} bytes, at least {need} expected")]
    Truncated {
        what: &'static str,
        len: usize,
        need: usize,
    },
    /// The switch-to-EDL reply is not the echo of the request.
    #[error("the switch-to-download-mode reply {got:02x?} is not the echo of the request")]
    NotEchoed { got: Vec<u8> },
    /// The NV reply is for another item.
    #[error("asked for NV item {asked}, the reply is for item {got}")]
    ItemMismatch { asked: u16, got: u16 },
    /// An EFS2 operation failed on the modem with an errno.
    #[error("EFS2 {op} failed on the modem: {}", crate::protocol::diag::efs::errno_name(*errno))]
    Efs { op: &'static str, errno: i32 },
    /// An EFS2 path qrescue refuses to send.
    #[error("EFS2 path {path:?} cannot be used: {reason}")]
    BadPath { path: String, reason: &'static str },
    /// A well-framed reply whose contents make no sense.
    #[error("the DIAG {what} reply is malformed: {detail}")]
    Malformed { what: &'static str, detail: String },
}

/// What one received frame means for a pending request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// The response to the request.
    Response(&'a [u8]),
    /// An error response to the request.
    Rejected(Rejection),
    /// Something else: log, event or message output, or a reply to an earlier request.
    Unrelated,
}

/// How many leading bytes identify the response to `request`: the subsystem header (4 bytes)
/// for subsystem commands, the command code otherwise.
fn key_len(request: &[u8]) -> usize {
    if request.first() == Some(&cmd::SUBSYS) {
        request.len().min(4)
    } else {
        request.len().min(1)
    }
}

/// Classify `frame` as the response to `request`, an error response to it, or unrelated
/// output. An error response matches when the bytes it echoes agree with the request (or it
/// echoes nothing).
pub fn match_reply<'a>(request: &[u8], frame: &'a [u8]) -> Reply<'a> {
    let Some(&first) = frame.first() else {
        return Reply::Unrelated;
    };
    if request.first() != Some(&first) {
        if let Some(rej) = Rejection::parse(frame) {
            let agrees = rej.echo.iter().zip(request).all(|(a, b)| a == b);
            return if agrees {
                Reply::Rejected(rej)
            } else {
                Reply::Unrelated
            };
        }
    }
    let key = key_len(request);
    if key > 0 && frame.len() >= key && frame[..key] == request[..key] {
        Reply::Response(frame)
    } else {
        Reply::Unrelated
    }
}

/// Check that `frame` is a response starting with `prefix` and at least `need` bytes long.
fn expect<'a>(
    frame: &'a [u8],
    prefix: &[u8],
    need: usize,
    what: &'static str,
) -> Result<&'a [u8], DiagError> {
    if frame.first() != prefix.first() {
        if let Some(rej) = Rejection::parse(frame) {
            return Err(DiagError::Rejected(rej));
        }
    }
    if !frame.starts_with(prefix) {
        return Err(DiagError::WrongReply {
            expected: prefix.first().copied().unwrap_or(0),
            found: describe_frame(frame),
        });
    }
    if frame.len() < need {
        return Err(DiagError::Truncated {
            what,
            len: frame.len(),
            need,
        });
    }
    Ok(frame)
}

/// A short description of a frame for messages: its first bytes in hex.
pub fn describe_frame(frame: &[u8]) -> String {
    match frame.len() {
        0 => "an empty frame".to_string(),
        n if n <= 8 => format!("{frame:02x?}"),
        n => format!("{:02x?}… ({n} bytes)", &frame[..8]),
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Text from device bytes for display: lossy UTF-8, control characters dropped, trimmed,
/// at most [`MAX_TEXT`] characters.
pub fn clean_text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_TEXT)
        .collect::<String>()
        .trim()
        .to_string()
}

// ----- switch to EDL ------------------------------------------------------------------------

/// The switch-to-EDL request payload (`4B 65 01 00`).
pub fn switch_to_edl_request() -> Vec<u8> {
    SWITCH_TO_EDL.to_vec()
}

/// Check the reply to the switch: `Ok` when it is the echo of the request (how QFirehose and
/// fwupd recognise success), [`DiagError::Rejected`] for an error response.
pub fn parse_switch_to_edl(frame: &[u8]) -> Result<(), DiagError> {
    let f = expect(frame, &SWITCH_TO_EDL[..1], 1, "switch to download mode")?;
    if f == SWITCH_TO_EDL {
        Ok(())
    } else {
        Err(DiagError::NotEchoed {
            got: f[..f.len().min(MAX_ECHO)].to_vec(),
        })
    }
}

// ----- extended build ID --------------------------------------------------------------------

/// The extended build ID request payload (`7C`; frame `7C 93 49 7E`).
pub fn build_id_request() -> Vec<u8> {
    vec![cmd::EXT_BUILD_ID]
}

/// The extended build ID reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BuildId {
    /// Layout version byte.
    pub version: u8,
    /// The MSM hardware version word.
    pub msm_hw_version: u32,
    /// The mobile model number word.
    pub mobile_model: u32,
    /// The software revision (`RM500QGLAAR01A01M4G_BETA_20200428F`), cleaned for display.
    pub sw_revision: String,
    /// A second string some firmwares append (the model name), when present and not empty.
    pub model_string: Option<String>,
}

/// Fixed part of the build ID reply.
const BUILD_ID_FIXED: usize = 12;

impl BuildId {
    /// Parse a build ID reply (or the error response to the request).
    pub fn parse(frame: &[u8]) -> Result<BuildId, DiagError> {
        let f = expect(frame, &[cmd::EXT_BUILD_ID], BUILD_ID_FIXED, "build ID")?;
        let mut strings = f[BUILD_ID_FIXED..].split(|&b| b == 0);
        let sw_revision = clean_text(strings.next().unwrap_or_default());
        let model_string = strings.next().map(clean_text).filter(|s| !s.is_empty());
        Ok(BuildId {
            version: f[1],
            msm_hw_version: u32_at(f, 4),
            mobile_model: u32_at(f, 8),
            sw_revision,
            model_string,
        })
    }

    /// The reply payload a modem sends (strings NUL-terminated).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![cmd::EXT_BUILD_ID, self.version, 0, 0];
        out.extend_from_slice(&self.msm_hw_version.to_le_bytes());
        out.extend_from_slice(&self.mobile_model.to_le_bytes());
        out.extend(self.sw_revision.bytes().filter(|&b| b != 0));
        out.push(0);
        if let Some(m) = self.model_string.as_deref().filter(|m| !m.is_empty()) {
            out.extend(m.bytes().filter(|&b| b != 0));
            out.push(0);
        }
        out
    }
}

// ----- NV items -----------------------------------------------------------------------------

/// The status word of an NV reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NvStatus {
    /// 0: read done.
    Done,
    /// 1: busy (internal use).
    Busy,
    /// 2: unrecognised command.
    BadCommand,
    /// 3: NV memory full.
    Full,
    /// 4: the command failed.
    Fail,
    /// 5: the item is inactive (never written).
    Inactive,
    /// 6: bad parameter.
    BadParameter,
    /// 7: the item is read-only.
    ReadOnly,
    /// 8: the item is not defined for this target.
    NotDefined,
    /// 9: no free memory.
    NoMemory,
    /// 10: internal use.
    InternalUse,
    /// Any other value.
    Other(u16),
}

impl NvStatus {
    pub fn from_u16(v: u16) -> NvStatus {
        match v {
            0 => NvStatus::Done,
            1 => NvStatus::Busy,
            2 => NvStatus::BadCommand,
            3 => NvStatus::Full,
            4 => NvStatus::Fail,
            5 => NvStatus::Inactive,
            6 => NvStatus::BadParameter,
            7 => NvStatus::ReadOnly,
            8 => NvStatus::NotDefined,
            9 => NvStatus::NoMemory,
            10 => NvStatus::InternalUse,
            v => NvStatus::Other(v),
        }
    }

    pub fn to_u16(self) -> u16 {
        match self {
            NvStatus::Done => 0,
            NvStatus::Busy => 1,
            NvStatus::BadCommand => 2,
            NvStatus::Full => 3,
            NvStatus::Fail => 4,
            NvStatus::Inactive => 5,
            NvStatus::BadParameter => 6,
            NvStatus::ReadOnly => 7,
            NvStatus::NotDefined => 8,
            NvStatus::NoMemory => 9,
            NvStatus::InternalUse => 10,
            NvStatus::Other(v) => v,
        }
    }

    /// Plain words.
    pub fn describe(self) -> &'static str {
        match self {
            NvStatus::Done => "read",
            NvStatus::Busy => "the NV task is busy",
            NvStatus::BadCommand => "the NV task did not recognise the command",
            NvStatus::Full => "NV memory is full",
            NvStatus::Fail => "the NV command failed",
            NvStatus::Inactive => "the item is inactive (never written on this unit)",
            NvStatus::BadParameter => "bad parameter",
            NvStatus::ReadOnly => "the item is read-only",
            NvStatus::NotDefined => "the item is not defined for this modem",
            NvStatus::NoMemory => "no free NV memory",
            NvStatus::InternalUse => "internal use",
            NvStatus::Other(_) => "unknown NV status",
        }
    }
}

/// The NV read request payload for `item`: 133 bytes, data and status zero.
pub fn nv_read_request(item: u16) -> Vec<u8> {
    let mut out = vec![0u8; NV_PACKET_LEN];
    out[0] = cmd::NV_READ;
    out[1..3].copy_from_slice(&item.to_le_bytes());
    out
}

/// An NV item as the modem returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NvItem {
    pub item: u16,
    /// The 128 data bytes (meaningful only when `status` is [`NvStatus::Done`]).
    pub data: Vec<u8>,
    pub status: NvStatus,
}

impl NvItem {
    /// Parse an NV read reply (or the error response to the request).
    pub fn parse(frame: &[u8]) -> Result<NvItem, DiagError> {
        let f = expect(frame, &[cmd::NV_READ], NV_PACKET_LEN, "NV read")?;
        Ok(NvItem {
            item: u16_at(f, 1),
            data: f[3..3 + NV_DATA_LEN].to_vec(),
            status: NvStatus::from_u16(u16_at(f, 3 + NV_DATA_LEN)),
        })
    }

    /// Whether the item was read.
    pub fn is_ok(&self) -> bool {
        self.status == NvStatus::Done
    }

    /// The reply payload a modem sends (data padded or cut to 128 bytes).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![0u8; NV_PACKET_LEN];
        out[0] = cmd::NV_READ;
        out[1..3].copy_from_slice(&self.item.to_le_bytes());
        let n = self.data.len().min(NV_DATA_LEN);
        out[3..3 + n].copy_from_slice(&self.data[..n]);
        out[3 + NV_DATA_LEN..].copy_from_slice(&self.status.to_u16().to_le_bytes());
        out
    }
}

// ----- requests, as a modem sees them -------------------------------------------------------

/// A host request, parsed (what the emulated modem needs to answer).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `4B 65 01 00`.
    SwitchToEdl,
    /// `3A`.
    Dload,
    /// `7C`.
    BuildId,
    /// `26 item …`.
    NvRead { item: u16 },
    /// An EFS2 subsystem command on `subsys` (0x13 or 0x3E).
    Efs {
        subsys: u8,
        request: super::efs::EfsRequest,
    },
    /// A command qrescue does not model; a modem answers [`RejectKind::BadCommand`] or ignores it.
    Unknown { code: u8 },
}

impl Request {
    /// Parse a request payload. A known command with a wrong length is
    /// [`DiagError::Truncated`] (a modem answers [`RejectKind::BadLength`]).
    pub fn parse(payload: &[u8]) -> Result<Request, DiagError> {
        let Some(&code) = payload.first() else {
            return Err(DiagError::Truncated {
                what: "request",
                len: 0,
                need: 1,
            });
        };
        match code {
            cmd::SUBSYS if payload.len() >= 4 && payload[..4] == SWITCH_TO_EDL => {
                Ok(Request::SwitchToEdl)
            }
            cmd::SUBSYS
                if payload.len() >= 2
                    && (payload[1] == subsys::EFS2 || payload[1] == subsys::EFS2_ALT) =>
            {
                let (subsys, request) = super::efs::EfsRequest::parse(payload)?;
                Ok(Request::Efs { subsys, request })
            }
            cmd::DLOAD => Ok(Request::Dload),
            cmd::EXT_BUILD_ID => Ok(Request::BuildId),
            cmd::NV_READ => {
                if payload.len() < 3 {
                    return Err(DiagError::Truncated {
                        what: "NV read request",
                        len: payload.len(),
                        need: NV_PACKET_LEN,
                    });
                }
                Ok(Request::NvRead {
                    item: u16_at(payload, 1),
                })
            }
            code => Ok(Request::Unknown { code }),
        }
    }

    /// The request payload a host sends.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Request::SwitchToEdl => switch_to_edl_request(),
            Request::Dload => vec![cmd::DLOAD],
            Request::BuildId => build_id_request(),
            Request::NvRead { item } => nv_read_request(*item),
            Request::Efs { subsys, request } => request.encode(*subsys),
            Request::Unknown { code } => vec![*code],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::diag::hdlc;
    use proptest::prelude::*;

    #[test]
    fn edl_switch_round_trip_and_echo() {
        assert_eq!(
            hdlc::encode(&switch_to_edl_request()),
            [0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E]
        );
        assert_eq!(parse_switch_to_edl(&SWITCH_TO_EDL), Ok(()));
        assert!(matches!(
            parse_switch_to_edl(&[0x4B, 0x65, 0x01, 0x00, 0x01]),
            Err(DiagError::NotEchoed { .. })
        ));
        let rej = Rejection::encode(RejectKind::BadCommand, &SWITCH_TO_EDL);
        assert_eq!(rej, [0x13, 0x4B, 0x65, 0x01, 0x00]);
        match parse_switch_to_edl(&rej) {
            Err(DiagError::Rejected(r)) => assert_eq!(r.kind, RejectKind::BadCommand),
            other => panic!("{other:?}"),
        }
        assert_eq!(Request::parse(&SWITCH_TO_EDL), Ok(Request::SwitchToEdl));
    }

    #[test]
    fn build_id_parses_qfirehose_layout() {
        let mut f = vec![0x7C, 0x02, 0x00, 0x00];
        f.extend_from_slice(&0x0000_1234u32.to_le_bytes());
        f.extend_from_slice(&0x0000_00FFu32.to_le_bytes());
        f.extend_from_slice(b"RM500QGLAAR01A01M4G_BETA_20200428F\0RM500Q-GL\0");
        let b = BuildId::parse(&f).unwrap();
        assert_eq!(b.version, 2);
        assert_eq!(b.msm_hw_version, 0x1234);
        assert_eq!(b.mobile_model, 0xFF);
        assert_eq!(b.sw_revision, "RM500QGLAAR01A01M4G_BETA_20200428F");
        assert_eq!(b.model_string.as_deref(), Some("RM500Q-GL"));
        assert_eq!(b.encode(), f);
        // No terminator, control characters removed.
        let mut g = f[..12].to_vec();
        g.extend_from_slice(b"EC25\x1b[2JEFAR06A17M4G");
        assert_eq!(
            BuildId::parse(&g).unwrap().sw_revision,
            "EC25[2JEFAR06A17M4G"
        );
        assert!(matches!(
            BuildId::parse(&f[..11]),
            Err(DiagError::Truncated { need: 12, .. })
        ));
        assert!(matches!(
            BuildId::parse(&[0x13, 0x7C]),
            Err(DiagError::Rejected(Rejection {
                kind: RejectKind::BadCommand,
                ..
            }))
        ));
        assert!(matches!(
            BuildId::parse(&[0x26, 0x00]),
            Err(DiagError::WrongReply { expected: 0x7C, .. })
        ));
    }

    #[test]
    fn nv_read_request_and_reply() {
        let r = nv_read_request(550);
        assert_eq!(r.len(), 133);
        assert_eq!(&r[..3], &[0x26, 0x26, 0x02]);
        assert_eq!(Request::parse(&r), Ok(Request::NvRead { item: 550 }));
        let item = NvItem {
            item: 550,
            data: (0..128).map(|i| i as u8).collect(),
            status: NvStatus::Done,
        };
        let enc = item.encode();
        assert_eq!(NvItem::parse(&enc).unwrap(), item);
        let inactive = NvItem {
            status: NvStatus::Inactive,
            ..item.clone()
        };
        let p = NvItem::parse(&inactive.encode()).unwrap();
        assert!(!p.is_ok());
        assert_eq!(
            p.status.describe(),
            "the item is inactive (never written on this unit)"
        );
        assert!(matches!(
            NvItem::parse(&[0x14, 0x26, 0x26, 0x02]),
            Err(DiagError::Rejected(Rejection {
                kind: RejectKind::BadParameters,
                ..
            }))
        ));
        assert!(matches!(
            NvItem::parse(&enc[..100]),
            Err(DiagError::Truncated { .. })
        ));
        for v in 0..=12u16 {
            assert_eq!(NvStatus::from_u16(v).to_u16(), v);
        }
    }

    #[test]
    fn reply_matching() {
        let nv = nv_read_request(1);
        assert!(matches!(match_reply(&nv, &nv), Reply::Response(_)));
        // Log output (0x10) and a reply to another command are unrelated.
        assert_eq!(match_reply(&nv, &[0x10, 0, 0]), Reply::Unrelated);
        assert_eq!(match_reply(&nv, &[0x7C, 0, 0]), Reply::Unrelated);
        assert_eq!(match_reply(&nv, &[]), Reply::Unrelated);
        // Error responses: matching echo, empty echo, someone else's echo.
        assert!(matches!(
            match_reply(&nv, &[0x13, 0x26]),
            Reply::Rejected(_)
        ));
        assert!(matches!(match_reply(&nv, &[0x15]), Reply::Rejected(_)));
        assert_eq!(match_reply(&nv, &[0x13, 0x7C]), Reply::Unrelated);
        // Subsystem replies must match the whole 4-byte header.
        let efs = [0x4B, 0x13, 0x02, 0x00, 1, 2];
        assert!(matches!(
            match_reply(&efs, &[0x4B, 0x13, 0x02, 0x00, 9]),
            Reply::Response(_)
        ));
        assert_eq!(
            match_reply(&efs, &[0x4B, 0x13, 0x04, 0x00, 9]),
            Reply::Unrelated
        );
        assert_eq!(
            match_reply(&efs, &[0x4B, 0x65, 0x01, 0x00]),
            Reply::Unrelated
        );
        for k in RejectKind::ALL {
            assert_eq!(RejectKind::from_code(k.code()), Some(k));
        }
    }

    proptest! {
        #[test]
        fn parsers_never_panic(frame in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = parse_switch_to_edl(&frame);
            let _ = BuildId::parse(&frame);
            let _ = NvItem::parse(&frame);
            let _ = Rejection::parse(&frame);
            let _ = Request::parse(&frame);
            let _ = match_reply(&nv_read_request(3), &frame);
            let _ = match_reply(&SWITCH_TO_EDL, &frame);
            let _ = describe_frame(&frame);
            if let Ok(b) = BuildId::parse(&frame) {
                prop_assert!(b.sw_revision.chars().count() <= MAX_TEXT);
                prop_assert!(!b.sw_revision.chars().any(char::is_control));
            }
        }

        #[test]
        fn build_id_round_trip(
            version in any::<u8>(), msm in any::<u32>(), model in any::<u32>(),
            sw in "[A-Za-z0-9_.]{0,60}", name in proptest::option::of("[A-Za-z0-9-]{1,20}"),
        ) {
            let b = BuildId { version, msm_hw_version: msm, mobile_model: model, sw_revision: sw, model_string: name };
            prop_assert_eq!(BuildId::parse(&b.encode()), Ok(b));
        }

        #[test]
        fn nv_round_trip(item in any::<u16>(), data in proptest::collection::vec(any::<u8>(), 128), st in any::<u16>()) {
            let n = NvItem { item, data, status: NvStatus::from_u16(st) };
            prop_assert_eq!(NvItem::parse(&n.encode()), Ok(n));
            prop_assert_eq!(Request::parse(&nv_read_request(item)), Ok(Request::NvRead { item }));
        }
    }
}
