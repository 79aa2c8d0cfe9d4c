//! The device side of Sahara: the emulated boot ROM (PBL) as a state machine that does no I/O.
//!
//! Feed it the bytes the host wrote ([`BootRom::feed`]) and it returns [`Action`]s: bytes to send
//! (always exactly one Sahara packet, or one raw data block, per [`Action::Send`] — the runner
//! must write each in one write), timer requests, and the hand-over to the programmer. The runner
//! ([`super::device`]) does the I/O; tests drive this directly with captured host bytes.
//!
//! Behaviour, from what real hosts send and expect (PROTOCOLS.md §1 and §9):
//! - **Attach** ([`BootRom::attach`]): HELLO (0x30 bytes; mode 0 for EDL, 2 for crash dump, never
//!   mode 1) is queued at once, before any host reads. With `consume_hello` (first attach only) nothing
//!   is queued, but a HELLO_RESP is still answered (the host never read a HELLO).
//! - **HELLO_RESP**: any version, status and reserved words are accepted; only the mode is acted
//!   on. Mode 3 → CMD_READY; mode 0 (EDL) → programmer upload; mode 2 (crash dump) → MEMORY_DEBUG
//!   (or MEMORY_DEBUG64). Mode 2 on an EDL unit → END_OF_IMAGE 0x1B (memory debug not supported);
//!   any other mode → END_OF_IMAGE 0x18 (invalid host mode).
//! - **Before HELLO_RESP** bytes that do not form a known Sahara packet (a 1-byte poke, an XML
//!   `<nop/>`, an HDLC probe) are skipped one byte at a time until a packet lines up; well-formed
//!   packets other than HELLO_RESP and RESET get END_OF_IMAGE 0x01.
//! - **Command mode**: any number of EXECUTE → EXECUTE_RESP, EXECUTE_DATA → exactly `data_len`
//!   bytes in one write. Serial (4 bytes LE), HW ID (8 bytes LE; *not* on Sahara v3 profiles), PK
//!   hash (the hash three times: 96 bytes for SHA-256, as qdlrs expects), SBL version (4 bytes),
//!   command list (u32 per supported command), chip ID v3 (48 bytes, v3 profiles only: MSM_ID at
//!   36, OEM_ID at 40, MODEL_ID at 42, the OEM_ID again at 44). NOP answers EXECUTE_RESP with
//!   length 0 and sends nothing for its EXECUTE_DATA. **Unsupported commands** (HW ID on v3,
//!   chip ID v3 on v2, the DLOAD switches, debug/training data) are answered with END_OF_IMAGE
//!   status 0x1F (exec unsupported) and the ROM stays in command mode. EXECUTE_DATA naming
//!   another command than the last EXECUTE → END_OF_IMAGE 0x20. SWITCH_MODE (whatever mode it
//!   names) → HELLO again; the next HELLO_RESP decides the mode.
//! - **Upload**: like a real ROM, READ_DATA (READ_DATA64 on `read64` profiles) for the ELF header
//!   first, then — knowing where they are — the program headers, then each loaded segment in 4 KiB
//!   steps with a short last chunk ([`elf::request_plan`]). Raw answers are consumed by exact
//!   length. Header and program-header problems are reported as soon as they are read; hash and
//!   signature are checked when the image is complete ([`elf::validate`]). END_OF_IMAGE(13,
//!   status): 0 → wait for DONE; otherwise the refusal code and the ROM waits for RESET. DONE →
//!   DONE_RESP status 1 (0 with `done_pending`) and [`Action::HandOver`].
//! - **Crash dump**: MEMORY_READ / MEMORY_READ64 inside the region table or one region → the raw
//!   bytes in one write (region contents are generated on the fly from the unit seed and region
//!   index, never stored); anything else → END_OF_IMAGE 0x19 (invalid memory read); a zero
//!   length → 0x1A.
//! - **RESET** at any time (also as the first 8 bytes where raw image data is expected) →
//!   RESET_RESP. EDL: the unit power-cycles and sends a fresh HELLO after `reboot_delay` (a timer).
//!   Crash dump: the unit reboots out of the dump mode ([`Action::Rebooted`]).
//!   RESET_STATE_MACHINE → a fresh HELLO at once, no RESET_RESP.
//! - **Errors**: unknown or out-of-order packets → END_OF_IMAGE status 0x01 (0x05 for a known
//!   command with a wrong length field), and the rest of the bytes received so far are dropped.
//!   After a failed END_OF_IMAGE of the upload the ROM only answers RESET.
//! - **mid-session** fault: on attach the ROM stays silent for the delay, swallowing what the host
//!   writes (it believes it is inside an earlier session), then sends END_OF_IMAGE(13, 0x16 RX
//!   timeout) instead of HELLO and answers everything except RESET with END_OF_IMAGE 0x01. RESET
//!   recovers it (the fault is one-shot).

use std::time::Duration;

use crate::protocol::sahara::packet::{self, exec, Packet, ParseError, IMAGE_ID_EHOSTDL};

use super::elf::{self, ElfHeader};
use super::profile::{DumpRegion, Personality, Profile};

/// What the runner must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write these bytes to the host in ONE write (one Sahara packet or one raw data block).
    Send(Vec<u8>),
    /// Call [`BootRom::on_timer`] once this much time has passed (replaces an earlier timer).
    Timer(Duration),
    /// DONE_RESP has been sent: hand the link over to the programmer.
    HandOver,
    /// The crash-dump unit was reset and reboots out of the boot ROM.
    Rebooted,
}

/// Behaviour switches of one boot ROM (the Sahara-side faults of [`super::faults`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootRomOptions {
    /// `consume-hello`: queue no HELLO at the first attach.
    pub consume_hello: bool,
    /// `mid-session[:MS]`: silence for this long, then END_OF_IMAGE instead of HELLO.
    pub mid_session: Option<Duration>,
    /// `refuse-programmer[:STATUS]`: refuse every programmer with this status.
    pub refuse_programmer: Option<u32>,
    /// `done-pending`: DONE_RESP reports 0 (more images pending).
    pub done_pending: bool,
    /// Time between RESET_RESP and the fresh HELLO (the power cycle).
    pub reboot_delay: Duration,
    /// Seed of the crash-dump region contents.
    pub seed: u64,
}

impl Default for BootRomOptions {
    fn default() -> Self {
        BootRomOptions {
            consume_hello: false,
            mid_session: None,
            refuse_programmer: None,
            done_pending: false,
            reboot_delay: Duration::from_millis(100),
            seed: 0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Stage {
    Header,
    Phdrs(ElfHeader),
    Segments,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Upload {
    stage: Stage,
    /// The request being answered: (offset, length), and how many bytes of it arrived.
    pending: (u64, u64),
    got: u64,
    queue: std::collections::VecDeque<(u64, u64)>,
    /// The image as read so far (sparse: bytes not requested stay zero).
    image: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Not attached yet.
    Off,
    /// Waiting for HELLO_RESP (HELLO sent, or about to be sent after a reboot, or consumed).
    WaitHelloResp,
    /// Command mode; the last EXECUTE's command, if any.
    Command(Option<u32>),
    Upload(Box<Upload>),
    WaitDone,
    MemoryDebug,
    /// After a failed END_OF_IMAGE: only RESET helps.
    Failed,
    /// mid-session fault, before the END_OF_IMAGE.
    MidSessionSilent,
    /// mid-session fault, after the END_OF_IMAGE: only RESET helps.
    Stuck,
    /// The programmer runs.
    HandedOver,
    /// Crash-dump unit rebooted.
    Rebooted,
}

/// The emulated boot ROM of one unit.
#[derive(Debug, Clone)]
pub struct BootRom {
    profile: Profile,
    opts: BootRomOptions,
    state: State,
    rx: Vec<u8>,
    attached_before: bool,
    /// A HELLO is due when the reboot timer fires.
    hello_due: bool,
    table: Vec<u8>,
}

const RESET_BYTES: [u8; 8] = [7, 0, 0, 0, 8, 0, 0, 0];
/// Commands answered in command mode (for EXECUTE 0x08).
const V2_COMMANDS: &[u32] = &[
    exec::NOP,
    exec::SERIAL_NUM,
    exec::MSM_HW_ID,
    exec::OEM_PK_HASH,
    exec::SBL_SW_VERSION,
    exec::CMD_ID_LIST,
];
const V3_COMMANDS: &[u32] = &[
    exec::NOP,
    exec::SERIAL_NUM,
    exec::OEM_PK_HASH,
    exec::SBL_SW_VERSION,
    exec::CMD_ID_LIST,
    exec::CHIP_ID_V3,
];

/// Status codes the boot ROM sends that [`elf::status`] does not define.
pub mod status {
    pub const SUCCESS: u32 = 0x00;
    pub const INVALID_COMMAND: u32 = 0x01;
    pub const INVALID_PACKET_SIZE: u32 = 0x05;
    pub const RX_TIMEOUT: u32 = 0x16;
    pub const INVALID_HOST_MODE: u32 = 0x18;
    pub const INVALID_MEMORY_READ: u32 = 0x19;
    pub const INVALID_DATA_SIZE_REQUEST: u32 = 0x1A;
    pub const MEMORY_DEBUG_NOT_SUPPORTED: u32 = 0x1B;
    pub const EXEC_UNSUPPORTED: u32 = 0x1F;
    pub const EXEC_DATA_INVALID_CMD: u32 = 0x20;
}

impl BootRom {
    pub fn new(profile: Profile, opts: BootRomOptions) -> Self {
        let table = region_table(&profile.regions, profile.memory_debug64);
        BootRom {
            profile,
            opts,
            state: State::Off,
            rx: Vec::new(),
            attached_before: false,
            hello_due: false,
            table,
        }
    }

    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// A short name of the current state, for logs and tests.
    pub fn state_name(&self) -> &'static str {
        match &self.state {
            State::Off => "off",
            State::WaitHelloResp => "wait-hello-resp",
            State::Command(_) => "command",
            State::Upload(_) => "upload",
            State::WaitDone => "wait-done",
            State::MemoryDebug => "memory-debug",
            State::Failed => "failed",
            State::MidSessionSilent => "mid-session-silent",
            State::Stuck => "stuck",
            State::HandedOver => "handed-over",
            State::Rebooted => "rebooted",
        }
    }

    /// True once DONE_RESP was sent and the programmer owns the link.
    pub fn handed_over(&self) -> bool {
        self.state == State::HandedOver
    }

    /// Bytes the host sent that the ROM did not consume (for the programmer after a hand-over).
    pub fn take_rx(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.rx)
    }

    /// The unit appears on the bus (power-on, or re-enumeration after the programmer's reset).
    /// Queues HELLO unless a fault says otherwise.
    pub fn attach(&mut self) -> Vec<Action> {
        self.rx.clear();
        self.hello_due = false;
        let first = !self.attached_before;
        self.attached_before = true;
        if first {
            if let Some(d) = self.opts.mid_session.take() {
                self.state = State::MidSessionSilent;
                return vec![Action::Timer(d)];
            }
        }
        self.state = State::WaitHelloResp;
        if first && self.opts.consume_hello {
            return Vec::new();
        }
        vec![Action::Send(self.hello())]
    }

    /// The timer requested by an [`Action::Timer`] expired.
    pub fn on_timer(&mut self) -> Vec<Action> {
        match self.state {
            State::MidSessionSilent => {
                self.state = State::Stuck;
                self.rx.clear();
                vec![Action::Send(eoi(IMAGE_ID_EHOSTDL, status::RX_TIMEOUT))]
            }
            State::WaitHelloResp if self.hello_due => {
                self.hello_due = false;
                vec![Action::Send(self.hello())]
            }
            _ => Vec::new(),
        }
    }

    fn hello(&self) -> Vec<u8> {
        Packet::Hello {
            version: self.profile.sahara_version,
            version_supported: self.profile.version_supported,
            max_cmd_len: self.profile.max_cmd_len,
            mode: self.profile.hello_mode(),
            reserved: [0; 6],
        }
        .encode()
    }

    /// Bytes written by the host arrive.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<Action> {
        let mut out = Vec::new();
        match self.state {
            State::Off | State::Rebooted => return out,
            _ => {}
        }
        self.rx.extend_from_slice(bytes);
        loop {
            if self.rx.is_empty() {
                break;
            }
            match &self.state {
                State::HandedOver | State::Off | State::Rebooted => break,
                State::Upload(_) => {
                    if !self.take_raw(&mut out) {
                        break;
                    }
                    continue;
                }
                State::MidSessionSilent => {
                    // Swallowed, except a RESET.
                    if self.rx.len() >= 8 && self.rx[..8] == RESET_BYTES {
                        self.rx.drain(..8);
                        self.on_packet(Packet::Reset, &mut out);
                        continue;
                    }
                    if RESET_BYTES.starts_with(&self.rx) {
                        break;
                    }
                    self.rx.clear();
                    break;
                }
                _ => {}
            }
            match Packet::parse(&self.rx) {
                Ok((p, n)) => {
                    self.rx.drain(..n);
                    self.on_packet(p, &mut out);
                }
                Err(ParseError::Incomplete { .. }) => break,
                Err(e) => {
                    if self.state == State::WaitHelloResp {
                        // A poke or other noise before HELLO_RESP: resynchronise.
                        self.rx.remove(0);
                        continue;
                    }
                    let code = match e {
                        ParseError::BadLength { .. } => status::INVALID_PACKET_SIZE,
                        _ => status::INVALID_COMMAND,
                    };
                    self.rx.clear();
                    out.push(Action::Send(eoi(self.image_id(), code)));
                }
            }
        }
        out
    }

    fn image_id(&self) -> u32 {
        match self.state {
            State::Upload(_) | State::WaitDone | State::Failed | State::Stuck => IMAGE_ID_EHOSTDL,
            _ => 0,
        }
    }

    /// Consume raw image bytes for the pending READ_DATA. Returns false when more bytes are
    /// needed.
    fn take_raw(&mut self, out: &mut Vec<Action>) -> bool {
        let State::Upload(up) = &mut self.state else {
            return false;
        };
        let (off, len) = up.pending;
        if up.got == 0 && len >= 8 {
            // A RESET instead of data (a host giving up).
            if self.rx.len() >= 8 && self.rx[..8] == RESET_BYTES {
                self.rx.drain(..8);
                self.on_packet(Packet::Reset, out);
                return true;
            }
            if self.rx.len() < 8 && RESET_BYTES.starts_with(&self.rx) {
                return false;
            }
        }
        let need = (len - up.got) as usize;
        let take = need.min(self.rx.len());
        let at = (off + up.got) as usize;
        if up.image.len() < at + take {
            up.image.resize(at + take, 0);
        }
        up.image[at..at + take].copy_from_slice(&self.rx[..take]);
        self.rx.drain(..take);
        up.got += take as u64;
        if up.got == len {
            self.chunk_done(out);
        }
        true
    }

    fn request(&self, off: u64, len: u64) -> Vec<u8> {
        if self.profile.read64 {
            Packet::ReadData64 {
                image_id: u64::from(IMAGE_ID_EHOSTDL),
                offset: off,
                length: len,
            }
            .encode()
        } else {
            Packet::ReadData {
                image_id: IMAGE_ID_EHOSTDL,
                offset: off as u32,
                length: len as u32,
            }
            .encode()
        }
    }

    fn start_upload(&mut self, out: &mut Vec<Action>) {
        let len = self.profile.elf_class.header_len() as u64;
        self.state = State::Upload(Box::new(Upload {
            stage: Stage::Header,
            pending: (0, len),
            got: 0,
            queue: Default::default(),
            image: Vec::new(),
        }));
        out.push(Action::Send(self.request(0, len)));
    }

    /// The pending request is complete: decide the next one.
    fn chunk_done(&mut self, out: &mut Vec<Action>) {
        let State::Upload(up) = &mut self.state else {
            return;
        };
        let next: Result<Option<(u64, u64)>, u32> = match up.stage.clone() {
            Stage::Header => match elf::parse_header(&up.image) {
                Ok(h) if h.class != self.profile.elf_class => Err(elf::status::INVALID_ELF_HEADER),
                Ok(h) => {
                    let (o, l) = h.phdr_table();
                    up.stage = Stage::Phdrs(h);
                    Ok(Some((o, l)))
                }
                Err(code) => Err(code),
            },
            Stage::Phdrs(h) => {
                let (o, l) = h.phdr_table();
                let table = &up.image[o as usize..(o + l) as usize];
                match elf::parse_phdrs(&h, table).and_then(|s| elf::segment_requests(&s)) {
                    Ok(reqs) => {
                        up.queue = reqs.into();
                        up.stage = Stage::Segments;
                        Ok(up.queue.pop_front())
                    }
                    Err(code) => Err(code),
                }
            }
            Stage::Segments => Ok(up.queue.pop_front()),
        };
        match next {
            Ok(Some((o, l))) => {
                up.pending = (o, l);
                up.got = 0;
                let pkt = self.request(o, l);
                out.push(Action::Send(pkt));
            }
            Ok(None) => {
                let verdict = match self.opts.refuse_programmer {
                    Some(code) => code,
                    None => match elf::validate(&up.image, &self.profile.identity.pk_hash) {
                        Ok(()) => status::SUCCESS,
                        Err(code) => code,
                    },
                };
                self.state = if verdict == status::SUCCESS {
                    State::WaitDone
                } else {
                    State::Failed
                };
                out.push(Action::Send(eoi(IMAGE_ID_EHOSTDL, verdict)));
            }
            Err(code) => {
                self.state = State::Failed;
                out.push(Action::Send(eoi(IMAGE_ID_EHOSTDL, code)));
            }
        }
    }

    fn reset(&mut self, out: &mut Vec<Action>) {
        out.push(Action::Send(Packet::ResetResp.encode()));
        self.rx.clear();
        match self.profile.personality {
            Personality::Edl => {
                self.state = State::WaitHelloResp;
                self.hello_due = true;
                out.push(Action::Timer(self.opts.reboot_delay));
            }
            Personality::CrashDump => {
                self.state = State::Rebooted;
                out.push(Action::Rebooted);
            }
        }
    }

    fn on_packet(&mut self, p: Packet, out: &mut Vec<Action>) {
        match (&self.state, p) {
            (_, Packet::Reset) => self.reset(out),
            (State::Stuck, _) => {
                out.push(Action::Send(eoi(IMAGE_ID_EHOSTDL, status::INVALID_COMMAND)))
            }
            (_, Packet::ResetStateMachine) => {
                self.state = State::WaitHelloResp;
                self.hello_due = false;
                out.push(Action::Send(self.hello()));
            }
            (State::WaitHelloResp, Packet::HelloResp { mode, .. }) => {
                self.hello_due = false;
                self.on_mode(mode, out);
            }
            (State::Command(pending), Packet::Execute { cmd }) => {
                let pending = *pending;
                match self.exec_answer(cmd) {
                    Some(data) => {
                        out.push(Action::Send(
                            Packet::ExecuteResp {
                                cmd,
                                data_len: data.len() as u32,
                            }
                            .encode(),
                        ));
                        self.state = State::Command(Some(cmd));
                    }
                    None => {
                        self.state = State::Command(pending);
                        out.push(Action::Send(eoi(0, status::EXEC_UNSUPPORTED)));
                    }
                }
            }
            (State::Command(pending), Packet::ExecuteData { cmd }) => {
                if *pending == Some(cmd) {
                    self.state = State::Command(None);
                    let data = self.exec_answer(cmd).unwrap_or_default();
                    if !data.is_empty() {
                        out.push(Action::Send(data));
                    }
                } else {
                    out.push(Action::Send(eoi(0, status::EXEC_DATA_INVALID_CMD)));
                }
            }
            (State::Command(_), Packet::SwitchMode { .. }) => {
                self.state = State::WaitHelloResp;
                out.push(Action::Send(self.hello()));
            }
            (State::WaitDone, Packet::Done) => {
                let st = if self.opts.done_pending { 0 } else { 1 };
                self.state = State::HandedOver;
                out.push(Action::Send(Packet::DoneResp { status: st }.encode()));
                out.push(Action::HandOver);
            }
            (State::MemoryDebug, Packet::MemoryRead { addr, len }) => {
                self.memory_read(u64::from(addr), u64::from(len), out)
            }
            (State::MemoryDebug, Packet::MemoryRead64 { addr, len }) => {
                self.memory_read(addr, len, out)
            }
            _ => {
                let id = self.image_id();
                out.push(Action::Send(eoi(id, status::INVALID_COMMAND)));
            }
        }
    }

    fn on_mode(&mut self, mode: u32, out: &mut Vec<Action>) {
        use packet::mode as m;
        match (mode, self.profile.personality) {
            (m::COMMAND, _) => {
                self.state = State::Command(None);
                out.push(Action::Send(Packet::CmdReady.encode()));
            }
            (m::IMAGE_TX_PENDING, Personality::Edl) => self.start_upload(out),
            (m::MEMORY_DEBUG, Personality::CrashDump) => {
                self.state = State::MemoryDebug;
                let len = self.table.len() as u64;
                let addr = self.profile.table_addr;
                let pkt = if self.profile.memory_debug64 {
                    Packet::MemoryDebug64 {
                        table_addr: addr,
                        table_len: len,
                    }
                } else {
                    Packet::MemoryDebug {
                        table_addr: addr as u32,
                        table_len: len as u32,
                    }
                };
                out.push(Action::Send(pkt.encode()));
            }
            (m::MEMORY_DEBUG, Personality::Edl) => {
                self.state = State::Failed;
                out.push(Action::Send(eoi(0, status::MEMORY_DEBUG_NOT_SUPPORTED)));
            }
            _ => {
                self.state = State::Failed;
                out.push(Action::Send(eoi(0, status::INVALID_HOST_MODE)));
            }
        }
    }

    /// The EXECUTE_DATA payload for a client command, or None when unsupported.
    pub fn exec_answer(&self, cmd: u32) -> Option<Vec<u8>> {
        let id = &self.profile.identity;
        let v3 = self.profile.is_v3();
        match cmd {
            exec::NOP => Some(Vec::new()),
            exec::SERIAL_NUM => Some(id.serial.to_le_bytes().to_vec()),
            exec::MSM_HW_ID if !v3 => Some(id.hw_id.to_le_bytes().to_vec()),
            exec::OEM_PK_HASH => Some(id.pk_hash.repeat(3)),
            exec::SBL_SW_VERSION => Some(id.sbl_version.to_le_bytes().to_vec()),
            exec::CMD_ID_LIST => {
                let list = if v3 { V3_COMMANDS } else { V2_COMMANDS };
                Some(list.iter().flat_map(|c| c.to_le_bytes()).collect())
            }
            exec::CHIP_ID_V3 if v3 => {
                let mut d = vec![0u8; 48];
                // Chip identifier (offset 0): emulated, the serial number.
                d[0..4].copy_from_slice(&id.serial.to_le_bytes());
                d[36..40].copy_from_slice(&id.msm_id().to_le_bytes());
                d[40..42].copy_from_slice(&id.oem_id().to_le_bytes());
                d[42..44].copy_from_slice(&id.model_id().to_le_bytes());
                d[44..46].copy_from_slice(&id.oem_id().to_le_bytes());
                Some(d)
            }
            _ => None,
        }
    }

    fn memory_read(&mut self, addr: u64, len: u64, out: &mut Vec<Action>) {
        match self.read_memory(addr, len) {
            Ok(bytes) => out.push(Action::Send(bytes)),
            Err(code) => out.push(Action::Send(eoi(0, code))),
        }
    }

    /// The bytes a MEMORY_READ of `len` bytes at `addr` returns, or the refusal status.
    pub fn read_memory(&self, addr: u64, len: u64) -> Result<Vec<u8>, u32> {
        if len == 0 {
            return Err(status::INVALID_DATA_SIZE_REQUEST);
        }
        let end = addr.checked_add(len).ok_or(status::INVALID_MEMORY_READ)?;
        let t0 = self.profile.table_addr;
        if addr >= t0 && end <= t0 + self.table.len() as u64 {
            return Ok(self.table[(addr - t0) as usize..(end - t0) as usize].to_vec());
        }
        for (i, r) in self.profile.regions.iter().enumerate() {
            if addr >= r.base && end <= r.base + r.len {
                return Ok(region_bytes(self.opts.seed, i, addr - r.base, len));
            }
        }
        Err(status::INVALID_MEMORY_READ)
    }

    /// The region table as the crash-dump ROM serves it.
    pub fn table(&self) -> &[u8] {
        &self.table
    }
}

fn eoi(image_id: u32, status: u32) -> Vec<u8> {
    Packet::EndOfImage { image_id, status }.encode()
}

fn name20(s: &str) -> [u8; 20] {
    let mut a = [0u8; 20];
    let b = s.as_bytes();
    let n = b.len().min(20);
    a[..n].copy_from_slice(&b[..n]);
    a
}

/// Build the memory-debug region table: 52-byte entries (save_pref, base, len as u32, desc[20],
/// filename[20]) or, for 64-bit tables, 64-byte entries (type, addr, len as u64, region[20],
/// filename[20]).
pub fn region_table(regions: &[DumpRegion], wide: bool) -> Vec<u8> {
    let mut t = Vec::new();
    for r in regions {
        if wide {
            t.extend_from_slice(&u64::from(r.save_pref).to_le_bytes());
            t.extend_from_slice(&r.base.to_le_bytes());
            t.extend_from_slice(&r.len.to_le_bytes());
        } else {
            t.extend_from_slice(&r.save_pref.to_le_bytes());
            t.extend_from_slice(&(r.base as u32).to_le_bytes());
            t.extend_from_slice(&(r.len as u32).to_le_bytes());
        }
        t.extend_from_slice(&name20(&r.desc));
        t.extend_from_slice(&name20(&r.filename));
    }
    t
}

fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Contents of region `index` at `offset..offset+len`, generated on the fly: each 8-byte word is a
/// hash of (seed, region index, word number), so any slice can be produced without the rest.
pub fn region_bytes(seed: u64, index: usize, offset: u64, len: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(len as usize);
    let key = splitmix64(seed ^ ((index as u64) << 56) ^ 0x4352_4153_4844_4d50);
    let mut pos = offset;
    let end = offset + len;
    while pos < end {
        let word = pos / 8;
        let bytes = splitmix64(key ^ word).to_le_bytes();
        let from = (pos % 8) as usize;
        let to = ((end - word * 8).min(8)) as usize;
        out.extend_from_slice(&bytes[from..to]);
        pos = word * 8 + to as u64;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sahara::packet::mode;
    use crate::sim::elf::ElfClass;
    use proptest::prelude::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s.replace(' ', "")).unwrap()
    }

    fn sends(actions: &[Action]) -> Vec<Vec<u8>> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Send(b) => Some(b.clone()),
                _ => None,
            })
            .collect()
    }

    fn one(actions: Vec<Action>) -> Vec<u8> {
        let s = sends(&actions);
        assert_eq!(s.len(), 1, "expected exactly one write, got {actions:?}");
        s[0].clone()
    }

    fn pkt(b: &[u8]) -> Packet {
        let (p, n) = Packet::parse(b).unwrap();
        assert_eq!(n, b.len(), "one packet per write");
        p
    }

    fn rom(name: &str) -> BootRom {
        BootRom::new(Profile::by_name(name).unwrap(), BootRomOptions::default())
    }

    const STUB_HELLO: &str = "010000003000000002000000010000000004000000000000\
                              000000000000000000000000000000000000000000000000";
    const QDLRS_RESP_CMD: &str = "020000003000000002000000010000000000000003000000\
                                  000000000000000000000000000000000000000000000000";
    const QDLRS_RESP_TX: &str = "020000003000000002000000010000000000000000000000\
                                 000000000000000000000000000000000000000000000000";
    const EDL_RESP_CMD: &str = "020000003000000002000000010000000000000003000000\
                                010000000200000003000000040000000500000006000000";
    const EDL_RESP_TX: &str = "020000003000000002000000010000000000000000000000\
                               010000000200000003000000040000000500000006000000";

    /// Answer READ_DATA requests from `image` until END_OF_IMAGE; returns the requests and the
    /// final status.
    fn upload(rom: &mut BootRom, first: Vec<u8>, image: &[u8]) -> (Vec<(u64, u64)>, u32) {
        let mut reqs = Vec::new();
        let mut next = first;
        loop {
            match pkt(&next) {
                Packet::ReadData {
                    image_id,
                    offset,
                    length,
                } => {
                    assert_eq!(image_id, 13);
                    reqs.push((u64::from(offset), u64::from(length)));
                }
                Packet::ReadData64 {
                    image_id,
                    offset,
                    length,
                } => {
                    assert_eq!(image_id, 13);
                    reqs.push((offset, length));
                }
                Packet::EndOfImage { image_id, status } => {
                    assert_eq!(image_id, 13);
                    return (reqs, status);
                }
                other => panic!("unexpected {other:?}"),
            }
            let (o, l) = *reqs.last().unwrap();
            next = one(rom.feed(&image[o as usize..(o + l) as usize]));
        }
    }

    #[test]
    fn qdlrs_three_hello_resps_with_command_mode_passes() {
        let mut r = rom("ec25");
        assert_eq!(one(r.attach()), h(STUB_HELLO));
        // Pass 1: serial.
        assert_eq!(one(r.feed(&h(QDLRS_RESP_CMD))), h("0b00000008000000"));
        assert_eq!(
            one(r.feed(&h("0d0000000c00000001000000"))),
            h("0e000000100000000100000004000000")
        );
        assert_eq!(one(r.feed(&h("0f0000000c00000001000000"))), h("644cf90c"));
        assert_eq!(one(r.feed(&h("0c0000000c00000000000000"))), h(STUB_HELLO));
        // Pass 2: PK hash, three times.
        assert_eq!(one(r.feed(&h(QDLRS_RESP_CMD))), h("0b00000008000000"));
        assert_eq!(
            one(r.feed(&h("0d0000000c00000003000000"))),
            h("0e000000100000000300000060000000")
        );
        let pk = one(r.feed(&h("0f0000000c00000003000000")));
        assert_eq!(pk.len(), 96);
        assert_eq!(
            hex::encode(&pk[..32]),
            "cc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380f"
        );
        assert_eq!(pk[..32], pk[32..64]);
        assert_eq!(pk[..32], pk[64..]);
        assert_eq!(one(r.feed(&h("0c0000000c00000000000000"))), h(STUB_HELLO));
        // Pass 3: upload.
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        assert_eq!(first, h("03000000140000000d0000000000000034000000"));
        let prog = r.profile().programmer(1);
        let (reqs, st) = upload(&mut r, first, &prog);
        assert_eq!(st, 0);
        assert_eq!(reqs, elf::request_plan(&prog));
        let done = r.feed(&h("0500000008000000"));
        assert_eq!(
            done,
            vec![
                Action::Send(h("060000000c00000001000000")),
                Action::HandOver
            ]
        );
        assert!(r.handed_over());
        // Whatever comes next belongs to the programmer.
        assert!(r.feed(b"<?xml version=\"1.0\" ?>").is_empty());
        assert_eq!(r.take_rx(), b"<?xml version=\"1.0\" ?>".to_vec());
    }

    #[test]
    fn edl_info_pass_with_reserved_words_and_switch_mode_3() {
        let mut r = rom("ec25");
        r.attach();
        assert_eq!(one(r.feed(&h(EDL_RESP_CMD))), h("0b00000008000000"));
        for (cmd, resp, data) in [
            (1, "0e000000100000000100000004000000", "644cf90c"),
            (2, "0e000000100000000200000008000000", "00000000e1800400"),
        ] {
            let c = format!("0d0000000c000000{:02x}000000", cmd);
            let d = format!("0f0000000c000000{:02x}000000", cmd);
            assert_eq!(one(r.feed(&h(&c))), h(resp));
            assert_eq!(one(r.feed(&h(&d))), h(data));
        }
        assert_eq!(
            one(r.feed(&h("0d0000000c00000003000000"))),
            h("0e000000100000000300000060000000")
        );
        assert_eq!(one(r.feed(&h("0f0000000c00000003000000"))).len(), 96);
        // edl leaves with SWITCH_MODE(3), not 0.
        assert_eq!(one(r.feed(&h("0c0000000c00000003000000"))), h(STUB_HELLO));
        let first = one(r.feed(&h(EDL_RESP_TX)));
        let prog = r.profile().programmer(2);
        let (_, st) = upload(&mut r, first, &prog);
        assert_eq!(st, 0);
        let acts = r.feed(&h("0500000008000000"));
        assert_eq!(acts.last(), Some(&Action::HandOver));
    }

    #[test]
    fn stray_poke_before_hello_resp_is_ignored() {
        let mut r = rom("ec25");
        r.attach();
        // QFH pokes a single byte when it sees no HELLO.
        assert!(r.feed(&[0x00]).is_empty());
        assert_eq!(one(r.feed(&h(QDLRS_RESP_CMD))), h("0b00000008000000"));
        // Also when the poke and HELLO_RESP arrive in one read, and with other poke values.
        for poke in [0x02u8, 0x41, 0x7e, 0xff] {
            let mut r = rom("ec25");
            r.attach();
            let mut b = vec![poke];
            b.extend(h(QDLRS_RESP_CMD));
            assert_eq!(one(r.feed(&b)), h("0b00000008000000"), "poke {poke:#x}");
        }
    }

    #[test]
    fn edl_xml_and_hdlc_probes_are_skipped_before_hello_resp() {
        let mut r = rom("ec25");
        r.attach();
        assert!(r
            .feed(b"<?xml version=\"1.0\" ?><data><nop /></data>")
            .is_empty());
        assert!(r
            .feed(&h("7e11001200a0e30000c1e50140a0e31eff2fe14bd97e"))
            .is_empty());
        assert_eq!(one(r.feed(&h(EDL_RESP_TX))).len(), 0x14);
    }

    #[test]
    fn hello_resp_without_reading_hello_consume_hello() {
        let opts = BootRomOptions {
            consume_hello: true,
            ..Default::default()
        };
        let mut r = BootRom::new(Profile::by_name("ec25").unwrap(), opts);
        assert!(r.attach().is_empty());
        // qdl's unsolicited HELLO_RESP after its 1 s timeout.
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        assert!(matches!(
            pkt(&first),
            Packet::ReadData {
                offset: 0,
                length: 0x34,
                ..
            }
        ));
        // A re-attach (after reset_to_edl) sends HELLO again.
        assert_eq!(one(r.attach()), h(STUB_HELLO));
    }

    #[test]
    fn any_version_and_status_in_hello_resp() {
        let mut r = rom("ec25");
        r.attach();
        let resp = Packet::HelloResp {
            version: 99,
            version_supported: 0,
            status: 7,
            mode: mode::COMMAND,
            reserved: [0xffff_ffff; 6],
        };
        assert_eq!(pkt(&one(r.feed(&resp.encode()))), Packet::CmdReady);
    }

    #[test]
    fn v3_profile_chip_id_and_unsupported_hwid() {
        let mut r = rom("rm520n");
        let hello = pkt(&one(r.attach()));
        assert!(matches!(
            hello,
            Packet::Hello {
                version: 3,
                mode: 0,
                max_cmd_len: 0x400,
                ..
            }
        ));
        r.feed(&h(EDL_RESP_CMD));
        // HW ID: exec unsupported, and the ROM stays in command mode.
        let e = pkt(&one(r.feed(&Packet::Execute { cmd: 2 }.encode())));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 0x1F
            }
        );
        let e = pkt(&one(r.feed(&Packet::Execute { cmd: 0x0A }.encode())));
        assert_eq!(
            e,
            Packet::ExecuteResp {
                cmd: 0x0A,
                data_len: 48
            }
        );
        let d = one(r.feed(&Packet::ExecuteData { cmd: 0x0A }.encode()));
        assert_eq!(d.len(), 48);
        let id = &r.profile().identity;
        assert_eq!(
            u32::from_le_bytes(d[36..40].try_into().unwrap()),
            id.msm_id()
        );
        assert_eq!(
            u16::from_le_bytes(d[40..42].try_into().unwrap()),
            id.oem_id()
        );
        assert_eq!(
            u16::from_le_bytes(d[42..44].try_into().unwrap()),
            id.model_id()
        );
        // EXECUTE_DATA for another command than the EXECUTE.
        r.feed(&Packet::Execute { cmd: 1 }.encode());
        let e = pkt(&one(r.feed(&Packet::ExecuteData { cmd: 3 }.encode())));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 0x20
            }
        );
        // v2 does not offer chip ID v3.
        let mut r2 = rom("ec25");
        r2.attach();
        r2.feed(&h(EDL_RESP_CMD));
        let e = pkt(&one(r2.feed(&Packet::Execute { cmd: 0x0A }.encode())));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 0x1F
            }
        );
    }

    #[test]
    fn read64_upload_follows_the_elf_layout() {
        let mut r = rom("rm520n");
        r.attach();
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        assert_eq!(
            pkt(&first),
            Packet::ReadData64 {
                image_id: 13,
                offset: 0,
                length: 0x40
            }
        );
        let prog = r.profile().programmer(3);
        assert_eq!(prog.len(), 600 * 1024);
        let (reqs, st) = upload(&mut r, first, &prog);
        assert_eq!(st, 0);
        assert_eq!(reqs, elf::request_plan(&prog));
        assert!(reqs.iter().skip(2).any(|(o, _)| o % 0x1000 != 0));
    }

    #[test]
    fn raw_data_split_and_merged_is_consumed_by_length() {
        let mut r = rom("ec25");
        r.attach();
        let mut req = one(r.feed(&h(QDLRS_RESP_TX)));
        let prog = r.profile().programmer(4);
        let mut n = 0;
        loop {
            match pkt(&req) {
                Packet::ReadData { offset, length, .. } => {
                    let s = &prog[offset as usize..(offset + length) as usize];
                    // Deliver in odd pieces.
                    let mut acts = Vec::new();
                    for piece in s.chunks(777) {
                        acts.extend(r.feed(piece));
                    }
                    req = one(acts);
                    n += 1;
                }
                Packet::EndOfImage { status, .. } => {
                    assert_eq!(status, 0);
                    break;
                }
                p => panic!("{p:?}"),
            }
        }
        assert!(n > 10);
    }

    #[test]
    fn refusals_wrong_unit_corrupt_and_fault() {
        // Signed for another unit: 0x25.
        let mut r = BootRom::new(
            Profile::by_name("ec25").unwrap().for_unit(5),
            BootRomOptions::default(),
        );
        r.attach();
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        let other = Profile::by_name("ec25").unwrap().for_unit(6).programmer(1);
        let (_, st) = upload(&mut r, first, &other);
        assert_eq!(st, 0x25);
        // After a refusal only RESET helps.
        let e = pkt(&one(r.feed(&h("0500000008000000"))));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 13,
                status: 1
            }
        );
        let acts = r.feed(&RESET_BYTES);
        assert_eq!(sends(&acts), vec![Packet::ResetResp.encode()]);
        assert!(acts.contains(&Action::Timer(Duration::from_millis(100))));
        assert_eq!(one(r.on_timer()), h(STUB_HELLO));

        // Not an ELF: refused right after the header.
        let mut r = rom("ec25");
        r.attach();
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        let junk = vec![0x4du8; 0x34];
        let (reqs, st) = upload(&mut r, first, &junk);
        assert_eq!((reqs.len(), st), (1, 0x14));

        // A 64-bit programmer on a 32-bit ROM.
        let mut r = rom("ec25");
        r.attach();
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        let p64 =
            elf::generate_programmer(&r.profile().identity.pk_hash, 20_000, ElfClass::Elf64, 1);
        assert_eq!(upload(&mut r, first, &p64).1, 0x14);

        // refuse-programmer fault.
        let opts = BootRomOptions {
            refuse_programmer: Some(0x21),
            ..Default::default()
        };
        let mut r = BootRom::new(Profile::by_name("ec25").unwrap(), opts);
        r.attach();
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        let prog = r.profile().programmer(1);
        assert_eq!(upload(&mut r, first, &prog).1, 0x21);
    }

    #[test]
    fn done_pending_fault() {
        let opts = BootRomOptions {
            done_pending: true,
            ..Default::default()
        };
        let mut r = BootRom::new(Profile::by_name("ec25").unwrap(), opts);
        r.attach();
        let first = one(r.feed(&h(QDLRS_RESP_TX)));
        let prog = r.profile().programmer(1);
        assert_eq!(upload(&mut r, first, &prog).1, 0);
        let acts = r.feed(&Packet::Done.encode());
        assert_eq!(pkt(&sends(&acts)[0]), Packet::DoneResp { status: 0 });
        assert_eq!(acts.last(), Some(&Action::HandOver));
    }

    #[test]
    fn reset_at_any_time_and_instead_of_raw_data() {
        let mut r = rom("ec25");
        r.attach();
        r.feed(&h(QDLRS_RESP_TX));
        // The host gives up in the middle of the upload.
        let acts = r.feed(&RESET_BYTES);
        assert_eq!(sends(&acts), vec![Packet::ResetResp.encode()]);
        assert_eq!(r.state_name(), "wait-hello-resp");
        // A HELLO_RESP before the reboot timer also works (the host did not wait).
        assert_eq!(one(r.feed(&h(QDLRS_RESP_CMD))), h("0b00000008000000"));
        assert!(r.on_timer().is_empty());
        // RESET_STATE_MACHINE: HELLO at once.
        assert_eq!(
            one(r.feed(&Packet::ResetStateMachine.encode())),
            h(STUB_HELLO)
        );
    }

    #[test]
    fn unknown_and_out_of_order_packets_are_invalid_command() {
        let mut r = rom("ec25");
        r.attach();
        // DONE before anything.
        let e = pkt(&one(r.feed(&Packet::Done.encode())));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 1
            }
        );
        r.feed(&h(QDLRS_RESP_CMD));
        // An unknown command in command mode.
        let mut u = vec![0x77, 0, 0, 0, 8, 0, 0, 0];
        let e = pkt(&one(r.feed(&u)));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 1
            }
        );
        // A known command with a wrong length.
        u = Packet::Execute { cmd: 1 }.encode();
        u[4] = 0x10;
        u.extend([0; 4]);
        let e = pkt(&one(r.feed(&u)));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 5
            }
        );
        // Still in command mode.
        assert_eq!(r.state_name(), "command");
        // A HELLO_RESP with mode 1.
        r.feed(&Packet::SwitchMode { mode: 0 }.encode());
        let resp = Packet::HelloResp {
            version: 2,
            version_supported: 1,
            status: 0,
            mode: 1,
            reserved: [0; 6],
        };
        let e = pkt(&one(r.feed(&resp.encode())));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 0x18
            }
        );
        // EDL unit asked for memory debug.
        let mut r = rom("ec25");
        r.attach();
        let resp = Packet::HelloResp {
            version: 2,
            version_supported: 1,
            status: 0,
            mode: 2,
            reserved: [0; 6],
        };
        let e = pkt(&one(r.feed(&resp.encode())));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 0,
                status: 0x1B
            }
        );
    }

    #[test]
    fn mid_session_fault() {
        let opts = BootRomOptions {
            mid_session: Some(Duration::from_millis(0)),
            ..Default::default()
        };
        let mut r = BootRom::new(Profile::by_name("ec25").unwrap(), opts);
        assert_eq!(r.attach(), vec![Action::Timer(Duration::ZERO)]);
        // The host's unsolicited HELLO_RESP is swallowed during the silence.
        assert!(r.feed(&h(QDLRS_RESP_TX)).is_empty());
        let e = pkt(&one(r.on_timer()));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 13,
                status: 0x16
            }
        );
        // Never a HELLO, whatever the host sends ...
        let e = pkt(&one(r.feed(&h(QDLRS_RESP_TX))));
        assert_eq!(
            e,
            Packet::EndOfImage {
                image_id: 13,
                status: 1
            }
        );
        // ... until a RESET.
        let acts = r.feed(&RESET_BYTES);
        assert_eq!(sends(&acts), vec![Packet::ResetResp.encode()]);
        assert_eq!(one(r.on_timer()), h(STUB_HELLO));
        // A later re-attach is normal.
        assert_eq!(one(r.attach()), h(STUB_HELLO));
    }

    fn parse_table(t: &[u8], wide: bool) -> Vec<(u64, u64, String, String)> {
        let n = if wide { 64 } else { 52 };
        assert_eq!(t.len() % n, 0);
        t.chunks(n)
            .map(|e| {
                let (base, len, rest) = if wide {
                    (
                        u64::from_le_bytes(e[8..16].try_into().unwrap()),
                        u64::from_le_bytes(e[16..24].try_into().unwrap()),
                        &e[24..],
                    )
                } else {
                    (
                        u64::from(u32::from_le_bytes(e[4..8].try_into().unwrap())),
                        u64::from(u32::from_le_bytes(e[8..12].try_into().unwrap())),
                        &e[12..],
                    )
                };
                let s = |b: &[u8]| {
                    String::from_utf8(b.iter().copied().take_while(|c| *c != 0).collect()).unwrap()
                };
                (base, len, s(&rest[..20]), s(&rest[20..40]))
            })
            .collect()
    }

    fn crash_session(name: &str, wide: bool) {
        let opts = BootRomOptions {
            seed: 77,
            ..Default::default()
        };
        let mut r = BootRom::new(Profile::by_name(name).unwrap(), opts);
        let hello = pkt(&one(r.attach()));
        assert!(matches!(hello, Packet::Hello { mode: 2, .. }));
        let resp = Packet::HelloResp {
            version: 2,
            version_supported: 1,
            status: 0,
            mode: 2,
            reserved: [0; 6],
        };
        let md = pkt(&one(r.feed(&resp.encode())));
        let (taddr, tlen) = match (md, wide) {
            (
                Packet::MemoryDebug {
                    table_addr,
                    table_len,
                },
                false,
            ) => (u64::from(table_addr), u64::from(table_len)),
            (
                Packet::MemoryDebug64 {
                    table_addr,
                    table_len,
                },
                true,
            ) => (table_addr, table_len),
            (p, _) => panic!("{p:?}"),
        };
        let read = |r: &mut BootRom, addr: u64, len: u64| {
            let p = if wide {
                Packet::MemoryRead64 { addr, len }.encode()
            } else {
                Packet::MemoryRead {
                    addr: addr as u32,
                    len: len as u32,
                }
                .encode()
            };
            one(r.feed(&p))
        };
        let table = read(&mut r, taddr, tlen);
        assert_eq!(table.len() as u64, tlen);
        let entries = parse_table(&table, wide);
        assert!(entries.len() >= 3);
        assert!(entries.iter().any(|e| e.2 == "DDR CS0" && e.1 == 8 << 20));
        assert!(entries.iter().any(|e| e.2 == "OCIMEM" && e.1 == 256 << 10));
        // Read DDR in 512 KiB requests, like qdl and edl; contents are deterministic.
        let (base, len, _, _) = entries.iter().find(|e| e.2 == "DDR CS0").unwrap().clone();
        let a = read(&mut r, base, 0x80000);
        assert_eq!(a.len(), 0x80000);
        let b = read(&mut r, base + len - 0x80000, 0x80000);
        assert_eq!(b.len(), 0x80000);
        assert_ne!(a, b);
        // Unaligned slice equals the same bytes of a bigger read.
        let c = read(&mut r, base + 3, 13);
        assert_eq!(c, a[3..16].to_vec());
        assert_eq!(a, region_bytes(77, 0, 0, 0x80000));
        // Reads outside any region, or crossing a region end.
        for (addr, l) in [(0x10u64, 16u64), (base + len - 8, 16), (taddr + tlen, 4)] {
            let e = pkt(&read(&mut r, addr, l));
            assert_eq!(
                e,
                Packet::EndOfImage {
                    image_id: 0,
                    status: 0x19
                }
            );
        }
        // RESET ends the dump: the unit reboots.
        let acts = r.feed(&RESET_BYTES);
        assert_eq!(
            acts,
            vec![Action::Send(Packet::ResetResp.encode()), Action::Rebooted]
        );
        assert!(r.feed(&RESET_BYTES).is_empty());
    }

    #[test]
    fn crash_dump_32_bit() {
        crash_session("ec25-crash", false);
    }

    #[test]
    fn crash_dump_64_bit() {
        crash_session("rm502q-crash", true);
    }

    #[test]
    fn crash_dump_hostile_names() {
        let r = BootRom::new(
            Profile::by_name("ec25-crash-hostile").unwrap(),
            BootRomOptions::default(),
        );
        let names: Vec<_> = parse_table(r.table(), false)
            .into_iter()
            .map(|e| e.3)
            .collect();
        for n in ["../../etc/passwd", "a/b.bin", "con\\x.bin", ""] {
            assert!(names.iter().any(|x| x == n), "{n} in {names:?}");
        }
    }

    #[test]
    fn region_bytes_any_slice_matches() {
        let whole = region_bytes(1, 2, 0, 100);
        for start in 0..20u64 {
            for len in 1..30u64 {
                assert_eq!(
                    region_bytes(1, 2, start, len),
                    whole[start as usize..(start + len) as usize].to_vec()
                );
            }
        }
        assert_ne!(region_bytes(1, 2, 0, 64), region_bytes(1, 3, 0, 64));
        assert_ne!(region_bytes(1, 2, 0, 64), region_bytes(2, 2, 0, 64));
    }

    fn arb_packet() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            (0u32..5).prop_map(|m| Packet::HelloResp {
                version: 2,
                version_supported: 1,
                status: 0,
                mode: m,
                reserved: [0; 6]
            }
            .encode()),
            (0u32..12).prop_map(|c| Packet::Execute { cmd: c }.encode()),
            (0u32..12).prop_map(|c| Packet::ExecuteData { cmd: c }.encode()),
            (0u32..5).prop_map(|m| Packet::SwitchMode { mode: m }.encode()),
            Just(Packet::Done.encode()),
            Just(Packet::Reset.encode()),
            Just(Packet::ResetStateMachine.encode()),
            (any::<u32>(), 0u32..0x100000).prop_map(|(a, l)| Packet::MemoryRead {
                addr: a,
                len: l
            }
            .encode()),
            (0x8000_0000u64..0x8100_0000, 0u64..0x100000).prop_map(|(a, l)| Packet::MemoryRead64 {
                addr: a,
                len: l
            }
            .encode()),
            proptest::collection::vec(any::<u8>(), 0..64),
        ]
    }

    proptest! {
        #[test]
        fn random_host_bytes_never_panic_and_output_is_bounded(
            name in prop::sample::select(vec!["ec25", "rm520n", "ec25-crash", "rm502q-crash"]),
            chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..40),
        ) {
            let mut r = rom(name);
            r.attach();
            for c in &chunks {
                let acts = r.feed(c);
                // At most two actions (an answer and a timer or marker) per 8 input bytes.
                prop_assert!(acts.len() <= c.len() / 4 + 2);
                for a in &acts {
                    if let Action::Send(b) = a {
                        prop_assert!(!b.is_empty() && b.len() <= 0x60);
                    }
                }
                r.on_timer();
            }
        }

        #[test]
        fn random_packet_sequences_never_panic(
            name in prop::sample::select(vec!["ec25", "rm520n", "ec25-crash", "rm502q-crash"]),
            pkts in proptest::collection::vec(arb_packet(), 0..30),
        ) {
            let mut r = rom(name);
            r.attach();
            for p in &pkts {
                let acts = r.feed(p);
                prop_assert!(acts.len() <= 3);
                for a in &acts {
                    if let Action::Send(b) = a {
                        // One packet, or one raw block no larger than the request.
                        prop_assert!(b.len() <= 0x100000);
                        if let Ok((_, n)) = Packet::parse(b) {
                            prop_assert!(n == b.len() || b.len() > 0x30);
                        }
                    }
                }
                if acts.contains(&Action::Rebooted) || acts.contains(&Action::HandOver) {
                    r.attach();
                }
            }
        }
    }
}
