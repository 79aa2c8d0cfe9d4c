//! Sahara packets: parsed and built, little-endian, with length checks (PROTOCOLS.md §1.1).
//!
//! Every packet starts with `cmd: u32, length: u32`, where length includes the 8-byte header.
//! [`Packet::parse`] works on a prefix of a byte stream: it reports how many more bytes it needs
//! (`ParseError::Incomplete`) so stream transports can reassemble by the length field, and it
//! rejects lengths that no Sahara packet has, so a broken or hostile peer cannot make a reader wait
//! for gigabytes.

use std::fmt;

pub const CMD_HELLO: u32 = 0x01;
pub const CMD_HELLO_RESP: u32 = 0x02;
pub const CMD_READ_DATA: u32 = 0x03;
pub const CMD_END_OF_IMAGE: u32 = 0x04;
pub const CMD_DONE: u32 = 0x05;
pub const CMD_DONE_RESP: u32 = 0x06;
pub const CMD_RESET: u32 = 0x07;
pub const CMD_RESET_RESP: u32 = 0x08;
pub const CMD_MEMORY_DEBUG: u32 = 0x09;
pub const CMD_MEMORY_READ: u32 = 0x0A;
pub const CMD_CMD_READY: u32 = 0x0B;
pub const CMD_SWITCH_MODE: u32 = 0x0C;
pub const CMD_EXECUTE: u32 = 0x0D;
pub const CMD_EXECUTE_RESP: u32 = 0x0E;
pub const CMD_EXECUTE_DATA: u32 = 0x0F;
pub const CMD_MEMORY_DEBUG64: u32 = 0x10;
pub const CMD_MEMORY_READ64: u32 = 0x11;
pub const CMD_READ_DATA64: u32 = 0x12;
pub const CMD_RESET_STATE_MACHINE: u32 = 0x13;
pub const CMD_WRITE_DATA: u32 = 0x14;

/// Size of the common header.
pub const HEADER_LEN: usize = 8;
/// The largest packet any Sahara command has (HELLO / HELLO_RESP, 0x30 bytes).
pub const MAX_PACKET_LEN: usize = 0x30;

/// Sahara modes (HELLO.mode, HELLO_RESP.mode, SWITCH_MODE.mode).
pub mod mode {
    pub const IMAGE_TX_PENDING: u32 = 0;
    pub const IMAGE_TX_COMPLETE: u32 = 1;
    pub const MEMORY_DEBUG: u32 = 2;
    pub const COMMAND: u32 = 3;

    /// A word for a mode number, for messages.
    pub fn name(mode: u32) -> &'static str {
        match mode {
            IMAGE_TX_PENDING => "image transfer",
            IMAGE_TX_COMPLETE => "image transfer complete",
            MEMORY_DEBUG => "memory debug (crash dump)",
            COMMAND => "command",
            _ => "unknown mode",
        }
    }
}

/// Client commands of command mode (EXECUTE.client_cmd), PROTOCOLS.md §1.4.
pub mod exec {
    pub const NOP: u32 = 0x00;
    pub const SERIAL_NUM: u32 = 0x01;
    pub const MSM_HW_ID: u32 = 0x02;
    pub const OEM_PK_HASH: u32 = 0x03;
    pub const SWITCH_DMSS: u32 = 0x04;
    pub const SWITCH_STREAMING: u32 = 0x05;
    pub const READ_DEBUG_DATA: u32 = 0x06;
    pub const SBL_SW_VERSION: u32 = 0x07;
    pub const CMD_ID_LIST: u32 = 0x08;
    pub const TRAINING_DATA: u32 = 0x09;
    pub const CHIP_ID_V3: u32 = 0x0A;
}

/// Image ID of the Firehose programmer (EHOSTDL).
pub const IMAGE_ID_EHOSTDL: u32 = 0x0D;

/// One Sahara packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Hello {
        version: u32,
        version_supported: u32,
        max_cmd_len: u32,
        mode: u32,
        reserved: [u32; 6],
    },
    HelloResp {
        version: u32,
        version_supported: u32,
        status: u32,
        mode: u32,
        reserved: [u32; 6],
    },
    ReadData {
        image_id: u32,
        offset: u32,
        length: u32,
    },
    EndOfImage {
        image_id: u32,
        status: u32,
    },
    Done,
    DoneResp {
        /// 0 = more images pending, 1 = transfer complete.
        status: u32,
    },
    Reset,
    ResetResp,
    MemoryDebug {
        table_addr: u32,
        table_len: u32,
    },
    MemoryRead {
        addr: u32,
        len: u32,
    },
    CmdReady,
    SwitchMode {
        mode: u32,
    },
    Execute {
        cmd: u32,
    },
    ExecuteResp {
        cmd: u32,
        data_len: u32,
    },
    ExecuteData {
        cmd: u32,
    },
    MemoryDebug64 {
        table_addr: u64,
        table_len: u64,
    },
    MemoryRead64 {
        addr: u64,
        len: u64,
    },
    ReadData64 {
        image_id: u64,
        offset: u64,
        length: u64,
    },
    ResetStateMachine,
}

/// Why bytes could not be parsed as a Sahara packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not enough bytes yet; `needed` is the total number of bytes the packet will take.
    Incomplete { needed: usize },
    /// The bytes are the start of a Firehose XML document: a programmer is already running.
    FirehoseRunning,
    /// A command number Sahara does not define (or WRITE_DATA, which no device implements).
    UnknownCommand { cmd: u32, length: u32 },
    /// The length field does not fit the command.
    BadLength {
        cmd: u32,
        length: u32,
        expected: u32,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Incomplete { needed } => {
                write!(f, "incomplete packet ({needed} bytes needed)")
            }
            ParseError::FirehoseRunning => {
                write!(f, "received Firehose XML instead of a Sahara packet")
            }
            ParseError::UnknownCommand { cmd, length } => {
                write!(f, "unknown Sahara command {cmd:#x} (length {length})")
            }
            ParseError::BadLength {
                cmd,
                length,
                expected,
            } => write!(
                f,
                "Sahara command {cmd:#x} ({}) has length {length}, expected {expected}",
                command_name(*cmd)
            ),
        }
    }
}

impl std::error::Error for ParseError {}

/// The fixed length of each command's packet, header included.
pub fn expected_len(cmd: u32) -> Option<u32> {
    Some(match cmd {
        CMD_HELLO | CMD_HELLO_RESP => 0x30,
        CMD_READ_DATA => 0x14,
        CMD_END_OF_IMAGE => 0x10,
        CMD_DONE | CMD_RESET | CMD_RESET_RESP | CMD_CMD_READY | CMD_RESET_STATE_MACHINE => 0x08,
        CMD_DONE_RESP => 0x0C,
        CMD_MEMORY_DEBUG | CMD_MEMORY_READ => 0x10,
        CMD_SWITCH_MODE | CMD_EXECUTE | CMD_EXECUTE_DATA => 0x0C,
        CMD_EXECUTE_RESP => 0x10,
        CMD_MEMORY_DEBUG64 | CMD_MEMORY_READ64 => 0x18,
        CMD_READ_DATA64 => 0x20,
        _ => return None,
    })
}

/// A name for a command number, for logs and messages.
pub fn command_name(cmd: u32) -> &'static str {
    match cmd {
        CMD_HELLO => "HELLO",
        CMD_HELLO_RESP => "HELLO_RESP",
        CMD_READ_DATA => "READ_DATA",
        CMD_END_OF_IMAGE => "END_OF_IMAGE",
        CMD_DONE => "DONE",
        CMD_DONE_RESP => "DONE_RESP",
        CMD_RESET => "RESET",
        CMD_RESET_RESP => "RESET_RESP",
        CMD_MEMORY_DEBUG => "MEMORY_DEBUG",
        CMD_MEMORY_READ => "MEMORY_READ",
        CMD_CMD_READY => "CMD_READY",
        CMD_SWITCH_MODE => "SWITCH_MODE",
        CMD_EXECUTE => "EXECUTE",
        CMD_EXECUTE_RESP => "EXECUTE_RESP",
        CMD_EXECUTE_DATA => "EXECUTE_DATA",
        CMD_MEMORY_DEBUG64 => "MEMORY_DEBUG64",
        CMD_MEMORY_READ64 => "MEMORY_READ64",
        CMD_READ_DATA64 => "READ_DATA64",
        CMD_RESET_STATE_MACHINE => "RESET_STATE_MACHINE",
        CMD_WRITE_DATA => "WRITE_DATA",
        _ => "unknown",
    }
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// True when `buf` starts like a Firehose XML document (`<?xml`), possibly after whitespace.
pub fn looks_like_xml(buf: &[u8]) -> bool {
    let trimmed = buf
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .map(|p| &buf[p..])
        .unwrap_or(&[]);
    let probe = b"<?xml";
    let n = trimmed.len().min(probe.len());
    n > 0 && trimmed[..n] == probe[..n] && (n == probe.len() || trimmed.len() < probe.len())
}

impl Packet {
    /// The command number of this packet.
    pub fn cmd(&self) -> u32 {
        match self {
            Packet::Hello { .. } => CMD_HELLO,
            Packet::HelloResp { .. } => CMD_HELLO_RESP,
            Packet::ReadData { .. } => CMD_READ_DATA,
            Packet::EndOfImage { .. } => CMD_END_OF_IMAGE,
            Packet::Done => CMD_DONE,
            Packet::DoneResp { .. } => CMD_DONE_RESP,
            Packet::Reset => CMD_RESET,
            Packet::ResetResp => CMD_RESET_RESP,
            Packet::MemoryDebug { .. } => CMD_MEMORY_DEBUG,
            Packet::MemoryRead { .. } => CMD_MEMORY_READ,
            Packet::CmdReady => CMD_CMD_READY,
            Packet::SwitchMode { .. } => CMD_SWITCH_MODE,
            Packet::Execute { .. } => CMD_EXECUTE,
            Packet::ExecuteResp { .. } => CMD_EXECUTE_RESP,
            Packet::ExecuteData { .. } => CMD_EXECUTE_DATA,
            Packet::MemoryDebug64 { .. } => CMD_MEMORY_DEBUG64,
            Packet::MemoryRead64 { .. } => CMD_MEMORY_READ64,
            Packet::ReadData64 { .. } => CMD_READ_DATA64,
            Packet::ResetStateMachine => CMD_RESET_STATE_MACHINE,
        }
    }

    /// The packet's name, for logs.
    pub fn name(&self) -> &'static str {
        command_name(self.cmd())
    }

    /// Serialise to wire bytes (header included).
    pub fn encode(&self) -> Vec<u8> {
        let cmd = self.cmd();
        let len = expected_len(cmd).expect("every Packet variant has a fixed length");
        let mut out = Vec::with_capacity(len as usize);
        out.extend_from_slice(&cmd.to_le_bytes());
        out.extend_from_slice(&len.to_le_bytes());
        let mut w32 = |v: u32| out.extend_from_slice(&v.to_le_bytes());
        match *self {
            Packet::Hello {
                version,
                version_supported,
                max_cmd_len,
                mode,
                reserved,
            } => {
                w32(version);
                w32(version_supported);
                w32(max_cmd_len);
                w32(mode);
                reserved.iter().for_each(|r| w32(*r));
            }
            Packet::HelloResp {
                version,
                version_supported,
                status,
                mode,
                reserved,
            } => {
                w32(version);
                w32(version_supported);
                w32(status);
                w32(mode);
                reserved.iter().for_each(|r| w32(*r));
            }
            Packet::ReadData {
                image_id,
                offset,
                length,
            } => {
                w32(image_id);
                w32(offset);
                w32(length);
            }
            Packet::EndOfImage { image_id, status } => {
                w32(image_id);
                w32(status);
            }
            Packet::DoneResp { status } => w32(status),
            Packet::MemoryDebug {
                table_addr,
                table_len,
            } => {
                w32(table_addr);
                w32(table_len);
            }
            Packet::MemoryRead { addr, len } => {
                w32(addr);
                w32(len);
            }
            Packet::SwitchMode { mode } => w32(mode),
            Packet::Execute { cmd } | Packet::ExecuteData { cmd } => w32(cmd),
            Packet::ExecuteResp { cmd, data_len } => {
                w32(cmd);
                w32(data_len);
            }
            Packet::MemoryDebug64 {
                table_addr,
                table_len,
            } => {
                out.extend_from_slice(&table_addr.to_le_bytes());
                out.extend_from_slice(&table_len.to_le_bytes());
            }
            Packet::MemoryRead64 { addr, len } => {
                out.extend_from_slice(&addr.to_le_bytes());
                out.extend_from_slice(&len.to_le_bytes());
            }
            Packet::ReadData64 {
                image_id,
                offset,
                length,
            } => {
                out.extend_from_slice(&image_id.to_le_bytes());
                out.extend_from_slice(&offset.to_le_bytes());
                out.extend_from_slice(&length.to_le_bytes());
            }
            Packet::Done
            | Packet::Reset
            | Packet::ResetResp
            | Packet::CmdReady
            | Packet::ResetStateMachine => {}
        }
        debug_assert_eq!(out.len(), len as usize);
        out
    }

    /// Parse one packet from the start of `buf`. On success returns the packet and the number of
    /// bytes it took; bytes after it are left for the next call.
    pub fn parse(buf: &[u8]) -> Result<(Packet, usize), ParseError> {
        if looks_like_xml(buf) {
            return Err(ParseError::FirehoseRunning);
        }
        if buf.len() < HEADER_LEN {
            return Err(ParseError::Incomplete { needed: HEADER_LEN });
        }
        let cmd = u32_at(buf, 0);
        let length = u32_at(buf, 4);
        let expected = match expected_len(cmd) {
            Some(e) => e,
            None => return Err(ParseError::UnknownCommand { cmd, length }),
        };
        if length != expected {
            return Err(ParseError::BadLength {
                cmd,
                length,
                expected,
            });
        }
        let len = length as usize;
        if buf.len() < len {
            return Err(ParseError::Incomplete { needed: len });
        }
        let b = &buf[..len];
        let r6 = |start: usize| {
            let mut r = [0u32; 6];
            for (i, slot) in r.iter_mut().enumerate() {
                *slot = u32_at(b, start + 4 * i);
            }
            r
        };
        let p = match cmd {
            CMD_HELLO => Packet::Hello {
                version: u32_at(b, 8),
                version_supported: u32_at(b, 12),
                max_cmd_len: u32_at(b, 16),
                mode: u32_at(b, 20),
                reserved: r6(24),
            },
            CMD_HELLO_RESP => Packet::HelloResp {
                version: u32_at(b, 8),
                version_supported: u32_at(b, 12),
                status: u32_at(b, 16),
                mode: u32_at(b, 20),
                reserved: r6(24),
            },
            CMD_READ_DATA => Packet::ReadData {
                image_id: u32_at(b, 8),
                offset: u32_at(b, 12),
                length: u32_at(b, 16),
            },
            CMD_END_OF_IMAGE => Packet::EndOfImage {
                image_id: u32_at(b, 8),
                status: u32_at(b, 12),
            },
            CMD_DONE => Packet::Done,
            CMD_DONE_RESP => Packet::DoneResp {
                status: u32_at(b, 8),
            },
            CMD_RESET => Packet::Reset,
            CMD_RESET_RESP => Packet::ResetResp,
            CMD_MEMORY_DEBUG => Packet::MemoryDebug {
                table_addr: u32_at(b, 8),
                table_len: u32_at(b, 12),
            },
            CMD_MEMORY_READ => Packet::MemoryRead {
                addr: u32_at(b, 8),
                len: u32_at(b, 12),
            },
            CMD_CMD_READY => Packet::CmdReady,
            CMD_SWITCH_MODE => Packet::SwitchMode { mode: u32_at(b, 8) },
            CMD_EXECUTE => Packet::Execute { cmd: u32_at(b, 8) },
            CMD_EXECUTE_RESP => Packet::ExecuteResp {
                cmd: u32_at(b, 8),
                data_len: u32_at(b, 12),
            },
            CMD_EXECUTE_DATA => Packet::ExecuteData { cmd: u32_at(b, 8) },
            CMD_MEMORY_DEBUG64 => Packet::MemoryDebug64 {
                table_addr: u64_at(b, 8),
                table_len: u64_at(b, 16),
            },
            CMD_MEMORY_READ64 => Packet::MemoryRead64 {
                addr: u64_at(b, 8),
                len: u64_at(b, 16),
            },
            CMD_READ_DATA64 => Packet::ReadData64 {
                image_id: u64_at(b, 8),
                offset: u64_at(b, 16),
                length: u64_at(b, 24),
            },
            CMD_RESET_STATE_MACHINE => Packet::ResetStateMachine,
            _ => unreachable!("expected_len covers exactly the parsed commands"),
        };
        Ok((p, len))
    }
}

/// END_OF_IMAGE / protocol status codes (PROTOCOLS.md §1.6, from edl-ng's table) with a short
/// name and a plain-words explanation for people.
pub fn status_text(code: u32) -> (&'static str, &'static str) {
    match code {
        0x00 => ("success", "the device accepted the image"),
        0x01 => ("invalid command", "the device received a command it did not expect at this point"),
        0x02 => ("protocol mismatch", "the host and the device disagree on the Sahara version"),
        0x03 => ("invalid target protocol", "the device does not support this protocol version"),
        0x04 => ("invalid host protocol", "the device does not accept the host's protocol version"),
        0x05 => ("invalid packet size", "a packet had the wrong size; the link may be garbling data"),
        0x06 => ("unexpected image ID", "the device asked for or received an image it did not expect"),
        0x07 => ("invalid header size", "the image's header has the wrong size: this file is not a programmer for this device"),
        0x08 => ("invalid data size", "the image data has the wrong size"),
        0x09 => ("invalid image type", "the file is not an image type this device boots"),
        0x0A => ("invalid TX length", "the device sent a wrong amount of data"),
        0x0B => ("invalid RX length", "the device received a wrong amount of data; the file may be truncated"),
        0x0C => ("general TX/RX error", "the USB link failed while transferring; check the cable and port"),
        0x0D => ("READ_DATA error", "the device could not read the image data it asked for"),
        0x0E => ("unsupported number of program headers", "the programmer's ELF layout is not accepted by this device"),
        0x0F => ("invalid program-header size", "the programmer's ELF program headers are malformed"),
        0x10 => ("multiple shared segments", "the programmer's ELF layout is not accepted by this device"),
        0x11 => ("uninitialised program-header location", "the programmer's ELF layout is not accepted by this device"),
        0x12 => ("invalid destination address", "the programmer is built for a different chip (its load address is wrong here)"),
        0x13 => ("invalid image-header data size", "the image header is inconsistent"),
        0x14 => ("invalid ELF header", "the file is not a valid ELF programmer"),
        0x15 => ("unknown host error", "the device reported an unknown host error"),
        0x16 => ("RX timeout", "the device waited too long for data from the host"),
        0x17 => ("TX timeout", "the device timed out sending data to the host"),
        0x18 => ("invalid host mode", "the host asked for a mode the device does not support"),
        0x19 => ("invalid memory read", "the host asked to read memory outside the allowed regions"),
        0x1A => ("invalid data-size request", "a read request had an invalid size"),
        0x1B => ("memory debug not supported", "this device does not offer memory debug (RAM dumps)"),
        0x1C => ("invalid mode switch", "the device refused the requested mode switch"),
        0x1D => ("command exec failure", "the device could not execute the command"),
        0x1E => ("exec invalid parameter", "a command parameter was invalid"),
        0x1F => ("exec unsupported", "the device does not support this command"),
        0x20 => ("exec-data invalid client command", "EXECUTE_DATA named a different command than EXECUTE"),
        0x21 => ("hash table auth failure", "the modem refused this programmer: it is not signed for this device"),
        0x22 => ("hash verification failure", "the modem refused this programmer: a segment failed its hash check (wrong or corrupted programmer)"),
        0x23 => ("hash table not found", "the programmer has no signature hash table: it is not a signed programmer for this device"),
        0x24 => ("target init failure", "the device failed to initialise the target"),
        0x25 => ("image auth failure", "the modem refused this programmer: it is not signed for this device's key"),
        0x26 => ("invalid image hash-table size", "the programmer's hash table is malformed"),
        0x27 => ("enumeration failure", "USB enumeration failed on the device side"),
        0x28 => ("HW bulk transfer error", "a USB bulk transfer failed; check the cable and port"),
        _ => ("unknown status", "the device reported a status code qrescue does not know"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn all_samples() -> Vec<Packet> {
        vec![
            Packet::Hello {
                version: 2,
                version_supported: 1,
                max_cmd_len: 0x400,
                mode: 0,
                reserved: [0; 6],
            },
            Packet::HelloResp {
                version: 2,
                version_supported: 1,
                status: 0,
                mode: 3,
                reserved: [1, 2, 3, 4, 5, 6],
            },
            Packet::ReadData {
                image_id: 13,
                offset: 0x1000,
                length: 0x1000,
            },
            Packet::EndOfImage {
                image_id: 13,
                status: 0,
            },
            Packet::Done,
            Packet::DoneResp { status: 1 },
            Packet::Reset,
            Packet::ResetResp,
            Packet::MemoryDebug {
                table_addr: 0x1000,
                table_len: 52 * 3,
            },
            Packet::MemoryRead {
                addr: 0x8000_0000,
                len: 0x80000,
            },
            Packet::CmdReady,
            Packet::SwitchMode { mode: 0 },
            Packet::Execute { cmd: 1 },
            Packet::ExecuteResp {
                cmd: 1,
                data_len: 4,
            },
            Packet::ExecuteData { cmd: 1 },
            Packet::MemoryDebug64 {
                table_addr: 0x1_0000_0000,
                table_len: 128,
            },
            Packet::MemoryRead64 {
                addr: 0x1_0000_0000,
                len: 0x80000,
            },
            Packet::ReadData64 {
                image_id: 13,
                offset: 0x878,
                length: 0x1000,
            },
            Packet::ResetStateMachine,
        ]
    }

    #[test]
    fn every_packet_round_trips() {
        for p in all_samples() {
            let bytes = p.encode();
            assert_eq!(bytes.len() as u32, expected_len(p.cmd()).unwrap());
            let (q, used) = Packet::parse(&bytes).unwrap();
            assert_eq!(p, q);
            assert_eq!(used, bytes.len());
        }
    }

    #[test]
    fn real_hello_bytes_parse() {
        // v3 HELLO from bkerler/edl issue #813 (PROTOCOLS.md §1.3).
        let hex = "010000003000000003000000010000000004000000000000\
                   000000000000000000000000000000000000000000000000";
        let b = hex::decode(hex).unwrap();
        let (p, n) = Packet::parse(&b).unwrap();
        assert_eq!(n, 0x30);
        assert_eq!(
            p,
            Packet::Hello {
                version: 3,
                version_supported: 1,
                max_cmd_len: 0x400,
                mode: 0,
                reserved: [0; 6]
            }
        );
    }

    #[test]
    fn edl_hello_resp_with_reserved_words_parses() {
        let hex = "020000003000000002000000010000000000000003000000\
                   010000000200000003000000040000000500000006000000";
        let b = hex::decode(hex).unwrap();
        let (p, _) = Packet::parse(&b).unwrap();
        assert!(matches!(
            p,
            Packet::HelloResp {
                mode: 3,
                reserved: [1, 2, 3, 4, 5, 6],
                ..
            }
        ));
    }

    #[test]
    fn stream_reassembly_by_length() {
        let a = Packet::ReadData {
            image_id: 13,
            offset: 0,
            length: 0x34,
        }
        .encode();
        assert_eq!(
            Packet::parse(&a[..3]),
            Err(ParseError::Incomplete { needed: 8 })
        );
        assert_eq!(
            Packet::parse(&a[..10]),
            Err(ParseError::Incomplete { needed: 0x14 })
        );
        let mut two = a.clone();
        two.extend(Packet::Done.encode());
        let (_, used) = Packet::parse(&two).unwrap();
        assert_eq!(Packet::parse(&two[used..]).unwrap().0, Packet::Done);
    }

    #[test]
    fn xml_is_detected_instead_of_a_bogus_length() {
        // A Windows host reads bytes 4..7 of "<?xml ve" as a length of 1,702,240,364.
        let xml = b"<?xml version=\"1.0\" encoding=\"UTF-8\" ?><data><log value=\"x\"/></data>";
        assert_eq!(Packet::parse(xml), Err(ParseError::FirehoseRunning));
        assert_eq!(Packet::parse(b"<?x"), Err(ParseError::FirehoseRunning));
        assert_eq!(Packet::parse(b"\n<?xml"), Err(ParseError::FirehoseRunning));
    }

    #[test]
    fn bad_lengths_and_unknown_commands_are_errors() {
        let mut b = Packet::Done.encode();
        b[4] = 0x30;
        assert!(matches!(
            Packet::parse(&b),
            Err(ParseError::BadLength { .. })
        ));
        let mut u = vec![0u8; 8];
        u[0] = 0x77;
        assert!(matches!(
            Packet::parse(&u),
            Err(ParseError::UnknownCommand { cmd: 0x77, .. })
        ));
        let mut w = vec![0u8; 8];
        w[0] = CMD_WRITE_DATA as u8;
        assert!(matches!(
            Packet::parse(&w),
            Err(ParseError::UnknownCommand { .. })
        ));
    }

    #[test]
    fn status_codes_have_plain_words() {
        assert_eq!(status_text(0x25).0, "image auth failure");
        assert!(status_text(0x22).1.contains("refused"));
        assert_eq!(status_text(0x999).0, "unknown status");
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_is_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            match Packet::parse(&bytes) {
                Ok((p, used)) => {
                    prop_assert!(used <= bytes.len());
                    prop_assert!(used <= MAX_PACKET_LEN);
                    prop_assert_eq!(p.encode(), bytes[..used].to_vec());
                }
                Err(ParseError::Incomplete { needed }) => {
                    prop_assert!(needed > bytes.len());
                    prop_assert!(needed <= MAX_PACKET_LEN);
                }
                Err(_) => {}
            }
        }

        #[test]
        fn valid_headers_with_random_bodies_round_trip(cmd in 1u32..=0x13, body in proptest::collection::vec(any::<u8>(), 40)) {
            let len = expected_len(cmd).unwrap() as usize;
            let mut b = Vec::new();
            b.extend_from_slice(&cmd.to_le_bytes());
            b.extend_from_slice(&(len as u32).to_le_bytes());
            b.extend_from_slice(&body[..len - 8]);
            let (p, used) = Packet::parse(&b).unwrap();
            prop_assert_eq!(used, len);
            prop_assert_eq!(p.encode(), b);
        }
    }
}
