//! The host side of Sahara as a sans-IO state machine (PROTOCOLS.md §1, §9.1–9.5).
//!
//! No I/O, no clocks, no sleeps: the driver (`engine::sahara`) reads packets and feeds them in
//! with [`HostMachine::feed`], hands over raw bytes it was asked to read with
//! [`HostMachine::feed_raw`], and reports "nothing arrived in time" with
//! [`HostMachine::on_timeout`]. The machine answers with [`Action`]s. How long to wait is the
//! driver's business; the machine only says which kind of wait applies ([`HostMachine::wait`]).
//!
//! Three goals:
//! - [`Goal::Upload`]: serve READ_DATA / READ_DATA64 requests (any order, exactly the requested
//!   slice, never padding), END_OF_IMAGE, DONE / DONE_RESP with the "pending" quirk.
//! - [`Goal::Info`]: command mode (HELLO_RESP mode 3, CMD_READY, EXECUTE …), then SWITCH_MODE(0)
//!   and stop at the re-sent HELLO, which is left unanswered for the next goal.
//! - [`Goal::MemoryDump`]: memory-debug mode: region table, regions in 512 KiB reads, RESET.
//!
//! Recoveries: a missed HELLO gets one unsolicited HELLO_RESP (qdl's recovery); a device that is
//! past the handshake (a non-HELLO packet while waiting for HELLO) gets one
//! RESET_STATE_MACHINE, and if no HELLO follows the machine fails with [`HostError::PastHandshake`].
//!
//! Every input is bounded: a packet budget, a cap on bytes served per upload, a cap on table
//! entries and on the total dump size. Once the machine has emitted `Done` or `Fail` it ignores
//! all further input.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use super::info::{self, DeviceInfo};
use super::memdebug::{self, Region, TableError, TableFormat};
use super::packet::{exec, mode, status_text, Packet};

/// Image IDs for which a DONE_RESP status 0 ("pending") is accepted as complete (qdl for 13; QFH
/// and fwupd for 7, 13 and 21).
pub const PENDING_QUIRK_IDS: [u32; 3] = [7, 13, 21];
/// Most packets one machine accepts before it gives up.
pub const MAX_PACKETS: u64 = 1_000_000;
/// How often an upload answers a repeated HELLO.
pub const MAX_REPEATED_HELLOS: u32 = 8;
/// Largest EXECUTE data a device may announce (the real items are at most a few hundred bytes).
pub const MAX_EXEC_DATA: u32 = 64 * 1024;

/// The images to upload, by image ID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadSet {
    images: BTreeMap<u32, Vec<u8>>,
    /// With a single image: serve it whatever ID the device asks for (as qdlrs and QFH do).
    single_serves_any_id: bool,
}

impl UploadSet {
    /// One Firehose programmer. It is registered as image 13 but served for any image ID the
    /// device asks for (AG35 asks for 21, NAND programmers may be 7).
    pub fn programmer(bytes: Vec<u8>) -> Self {
        let mut images = BTreeMap::new();
        images.insert(super::packet::IMAGE_ID_EHOSTDL, bytes);
        UploadSet {
            images,
            single_serves_any_id: true,
        }
    }

    /// Several images, each served only for its own ID.
    pub fn multi(images: BTreeMap<u32, Vec<u8>>) -> Self {
        UploadSet {
            images,
            single_serves_any_id: false,
        }
    }

    pub fn total_len(&self) -> u64 {
        self.images.values().map(|v| v.len() as u64).sum()
    }

    fn lookup(&self, id: u64) -> Option<(u32, &[u8])> {
        if let Ok(id32) = u32::try_from(id) {
            if let Some(img) = self.images.get(&id32) {
                return Some((id32, img));
            }
        }
        if self.single_serves_any_id && self.images.len() == 1 {
            let (k, v) = self.images.iter().next()?;
            return Some((*k, v));
        }
        None
    }
}

/// Limits for a memory dump.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DumpLimits {
    pub max_entries: usize,
    /// Refuse a table whose regions add up to more than this.
    pub max_total_bytes: u64,
    /// Size of one MEMORY_READ.
    pub chunk: u64,
}

impl Default for DumpLimits {
    fn default() -> Self {
        DumpLimits {
            max_entries: memdebug::DEFAULT_MAX_ENTRIES,
            max_total_bytes: 16 << 30,
            chunk: memdebug::READ_CHUNK,
        }
    }
}

/// What the host wants from this Sahara session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Goal {
    Upload(UploadSet),
    Info,
    MemoryDump(DumpLimits),
}

impl Goal {
    fn hello_mode(&self) -> u32 {
        match self {
            Goal::Upload(_) => mode::IMAGE_TX_PENDING,
            Goal::Info => mode::COMMAND,
            Goal::MemoryDump(_) => mode::MEMORY_DEBUG,
        }
    }
}

/// What the raw bytes of a [`Action::ReadRaw`] are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawPurpose {
    /// The data of an EXECUTE command.
    ExecData { cmd: u32 },
    /// The memory-debug region table.
    Table,
    /// A piece of region `index` starting `offset` bytes into the region.
    Region { index: usize, offset: u64 },
}

/// Which kind of wait applies now; the driver maps it to a duration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The first HELLO (short, ~1 s): on timeout an unsolicited HELLO_RESP is sent.
    Hello,
    /// After the unsolicited HELLO_RESP, or after a recovery: the device's first answer.
    Handshake,
    /// An ordinary reply packet or small raw data.
    Reply,
    /// One chunk of a memory region (long, ~30 s).
    DumpChunk,
    /// The machine is finished; nothing to wait for.
    Nothing,
}

/// Something the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Write this packet (one packet per write).
    Send(Packet),
    /// Write `len` bytes of the image `image_id` starting at `offset`, as raw bytes in one write
    /// (fetch them with [`HostMachine::image_slice`]).
    SendImage {
        image_id: u32,
        offset: u64,
        len: u64,
    },
    /// Read exactly `len` raw bytes (no header) and pass them to [`HostMachine::feed_raw`]
    /// (for regions: the driver stores them and may pass them in one call per action).
    ReadRaw { len: u64, purpose: RawPurpose },
    /// The region table is known; the driver prepares its output before data arrives.
    Regions(Vec<Region>),
    /// The goal is reached.
    Done(Box<Outcome>),
    /// The goal cannot be reached.
    Fail(HostError),
}

/// Summary of a finished upload.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UploadSummary {
    /// Raw image bytes sent (requests may overlap, so this can exceed the image size).
    pub bytes_sent: u64,
    pub requests: u64,
    /// Image IDs the device asked for, in first-request order.
    pub image_ids_requested: Vec<u64>,
    /// DONE_RESP said "pending" and was accepted by the quirk rule.
    pub pending_quirk: bool,
    pub notes: Vec<String>,
}

/// Summary of a finished memory dump (the data itself went to the driver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DumpSummary {
    pub format: Option<TableFormat>,
    pub regions: Vec<Region>,
    /// Regions the device refused to read, with the reason.
    pub failed: Vec<(usize, String)>,
    pub reset_acknowledged: bool,
    pub info: DeviceInfo,
    pub notes: Vec<String>,
}

/// The result of a goal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Uploaded(UploadSummary),
    /// `<?xml` arrived instead of HELLO: a Firehose programmer is already running.
    AlreadyRunning,
    Info(DeviceInfo),
    Dumped(DumpSummary),
}

/// Why a goal failed, in terms the engine turns into a people-facing error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostError {
    /// Nothing at all arrived, even after the unsolicited HELLO_RESP.
    NoResponse,
    /// The first packet was not HELLO (`cmd`), and RESET_STATE_MACHINE brought no HELLO.
    PastHandshake { cmd: u32 },
    /// END_OF_IMAGE with a non-zero status: the device refused an image.
    Refused { image_id: u32, status: u32 },
    /// A read request outside the supplied image.
    OutOfRange {
        image_id: u64,
        offset: u64,
        len: u64,
        image_len: u64,
    },
    /// The device asked for an image that was not supplied.
    ImageNotSupplied { image_id: u64 },
    /// `<?xml` where Sahara was expected, for a goal that needs the boot ROM.
    FirehoseRunning,
    /// The device offers a mode the goal cannot use.
    WrongMode { offered: u32, goal: &'static str },
    /// A packet that makes no sense here.
    Unexpected {
        waiting_for: &'static str,
        got: String,
    },
    /// Nothing arrived in time.
    Timeout { waiting_for: &'static str },
    /// Bytes that are not Sahara.
    Garbled { what: String },
    /// The link went away.
    LinkLost { during: &'static str },
    /// A device-controlled size or count above qrescue's limit.
    Limit { what: String },
    /// The memory-debug region table is unusable.
    BadTable(TableError),
    /// The device refused a memory-debug step with an END_OF_IMAGE status.
    DumpRefused { status: u32, during: &'static str },
}

impl fmt::Display for HostError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostError::NoResponse => write!(f, "the device sent nothing, even after an unsolicited HELLO_RESP"),
            HostError::PastHandshake { cmd } => write!(
                f,
                "the device sent command {cmd} ({}) instead of HELLO and did not restart the handshake",
                super::packet::command_name(*cmd)
            ),
            HostError::Refused { image_id, status } => write!(
                f,
                "the device refused image {image_id}: status {status:#04x} ({})",
                status_text(*status).0
            ),
            HostError::OutOfRange {
                image_id,
                offset,
                len,
                image_len,
            } => write!(
                f,
                "the device asked for bytes {offset:#x}..{:#x} of image {image_id}, which is only {image_len:#x} bytes long",
                offset.saturating_add(*len)
            ),
            HostError::ImageNotSupplied { image_id } => {
                write!(f, "the device asked for image {image_id}, which was not supplied")
            }
            HostError::FirehoseRunning => write!(f, "a Firehose programmer is already running"),
            HostError::WrongMode { offered, goal } => write!(
                f,
                "the device offers mode {offered} ({}), which a {goal} cannot use",
                mode::name(*offered)
            ),
            HostError::Unexpected { waiting_for, got } => {
                write!(f, "expected {waiting_for}, got {got}")
            }
            HostError::Timeout { waiting_for } => write!(f, "timed out waiting for {waiting_for}"),
            HostError::Garbled { what } => write!(f, "garbled data from the device: {what}"),
            HostError::LinkLost { during } => write!(f, "the link went away during {during}"),
            HostError::Limit { what } => write!(f, "{what}"),
            HostError::BadTable(e) => write!(f, "{e}"),
            HostError::DumpRefused { status, during } => write!(
                f,
                "the device refused {during}: status {status:#04x} ({})",
                status_text(*status).0
            ),
        }
    }
}

impl std::error::Error for HostError {}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    /// Waiting for the first HELLO; `unsolicited` once the recovery HELLO_RESP went out.
    WaitHello {
        unsolicited: bool,
    },
    /// Sent RESET_STATE_MACHINE after `cmd` arrived instead of HELLO.
    Recovering {
        cmd: u32,
    },
    // --- upload ---
    Transfer,
    WaitDoneResp,
    // --- info ---
    WaitCmdReady,
    WaitExecResp {
        cmd: u32,
    },
    WaitExecData {
        cmd: u32,
        len: u32,
    },
    WaitHelloAfterSwitch,
    // --- memory dump ---
    WaitMemDebug,
    WaitTable {
        format: TableFormat,
        len: u64,
    },
    WaitRegion {
        index: usize,
        offset: u64,
        len: u64,
    },
    WaitResetResp,
    Finished,
}

/// The Sahara host state machine.
#[derive(Debug)]
pub struct HostMachine {
    goal: Goal,
    state: State,
    info: DeviceInfo,
    /// The last HELLO the machine did not answer (left for the next goal).
    unanswered_hello: Option<Packet>,
    /// A READ_DATA request that arrived in an info pass (left for the upload that follows).
    pending_request: Option<Packet>,
    packets: u64,
    // upload
    upload: UploadSummary,
    served: BTreeSet<u32>,
    byte_budget: u64,
    // info
    queue: Vec<u32>,
    unanswered_in_a_row: u32,
    hellos_answered: u32,
    // dump
    dump: DumpSummary,
    dump_format: TableFormat,
}

impl HostMachine {
    pub fn new(goal: Goal) -> Self {
        let byte_budget = match &goal {
            Goal::Upload(set) => set.total_len().saturating_mul(64).saturating_add(1 << 20),
            _ => 0,
        };
        HostMachine {
            goal,
            state: State::WaitHello { unsolicited: false },
            info: DeviceInfo::default(),
            unanswered_hello: None,
            pending_request: None,
            packets: 0,
            upload: UploadSummary::default(),
            served: BTreeSet::new(),
            byte_budget,
            queue: Vec::new(),
            unanswered_in_a_row: 0,
            hellos_answered: 0,
            dump: DumpSummary::default(),
            dump_format: TableFormat::Bits32,
        }
    }

    /// Start an upload whose HELLO was already answered with mode 0 by an earlier goal (for
    /// example an info pass whose device ignored command mode and asked for the image at once).
    pub fn assume_transfer_started(&mut self) {
        if matches!(self.goal, Goal::Upload(_)) && matches!(self.state, State::WaitHello { .. }) {
            self.state = State::Transfer;
        }
    }

    /// Which kind of wait applies now.
    pub fn wait(&self) -> Wait {
        match self.state {
            State::WaitHello { unsolicited: false } => Wait::Hello,
            State::WaitHello { unsolicited: true } | State::Recovering { .. } => Wait::Handshake,
            State::WaitRegion { .. } => Wait::DumpChunk,
            State::Finished => Wait::Nothing,
            _ => Wait::Reply,
        }
    }

    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// A short description of what the machine waits for, for logs and errors.
    pub fn waiting_for(&self) -> &'static str {
        match self.state {
            State::WaitHello { .. } => "HELLO",
            State::Recovering { .. } => "HELLO after RESET_STATE_MACHINE",
            State::Transfer => "the next READ_DATA request",
            State::WaitDoneResp => "DONE_RESP",
            State::WaitCmdReady => "CMD_READY",
            State::WaitExecResp { .. } => "EXECUTE_RESP",
            State::WaitExecData { .. } => "command data",
            State::WaitHelloAfterSwitch => "HELLO after SWITCH_MODE",
            State::WaitMemDebug => "MEMORY_DEBUG",
            State::WaitTable { .. } => "the region table",
            State::WaitRegion { .. } => "memory region data",
            State::WaitResetResp => "RESET_RESP",
            State::Finished => "nothing",
        }
    }

    /// What the machine learned about the device so far.
    pub fn info(&self) -> &DeviceInfo {
        &self.info
    }

    /// The last HELLO that was not answered: the next goal should start from it.
    pub fn take_unanswered_hello(&mut self) -> Option<Packet> {
        self.unanswered_hello.take()
    }

    /// A READ_DATA request an info pass received because the device skipped command mode. The
    /// next upload should call [`Self::assume_transfer_started`] and feed it.
    pub fn take_pending_request(&mut self) -> Option<Packet> {
        self.pending_request.take()
    }

    fn note(&mut self, s: &str) {
        self.info.note(s);
        if !self.upload.notes.iter().any(|n| n == s) {
            self.upload.notes.push(s.to_string());
        }
        if !self.dump.notes.iter().any(|n| n == s) {
            self.dump.notes.push(s.to_string());
        }
    }

    /// The bytes of a [`Action::SendImage`].
    pub fn image_slice(&self, image_id: u32, offset: u64, len: u64) -> Option<&[u8]> {
        let Goal::Upload(set) = &self.goal else {
            return None;
        };
        let img = set.images.get(&image_id)?;
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        img.get(start..end)
    }

    fn finish(&mut self, a: Action) -> Vec<Action> {
        self.state = State::Finished;
        vec![a]
    }

    fn fail(&mut self, e: HostError) -> Vec<Action> {
        self.finish(Action::Fail(e))
    }

    fn unexpected(&mut self, p: &Packet) -> Vec<Action> {
        let waiting_for = self.waiting_for();
        let got = describe_packet(p);
        self.fail(HostError::Unexpected { waiting_for, got })
    }

    fn hello_resp(&self, m: u32) -> Packet {
        // Echo the device's version (as edl and QFH do) when it is known, else 2 (qdl, qdlrs).
        let version = self.info.sahara_version.unwrap_or(2).clamp(2, 3);
        Packet::HelloResp {
            version,
            version_supported: 1,
            status: 0,
            mode: m,
            reserved: [0; 6],
        }
    }

    // ------------------------------------------------------------------ events

    /// A packet arrived.
    pub fn feed(&mut self, p: Packet) -> Vec<Action> {
        if self.state == State::Finished {
            return Vec::new();
        }
        self.packets += 1;
        if self.packets > MAX_PACKETS {
            return self.fail(HostError::Limit {
                what: format!("the device sent more than {MAX_PACKETS} packets in one session"),
            });
        }
        tracing::debug!(packet = ?p, state = ?self.state, "sahara host: packet in");
        match self.state.clone() {
            State::WaitHello { unsolicited } => self.in_wait_hello(p, unsolicited),
            State::Recovering { cmd } => match p {
                Packet::Hello { .. } => {
                    self.note("The modem was past the handshake; RESET_STATE_MACHINE restarted it");
                    self.on_hello(p)
                }
                _ => self.fail(HostError::PastHandshake { cmd }),
            },
            State::Transfer => self.in_transfer(p),
            State::WaitDoneResp => self.in_wait_done_resp(p),
            State::WaitCmdReady => self.in_wait_cmd_ready(p),
            State::WaitExecResp { cmd } => self.in_wait_exec_resp(p, cmd),
            State::WaitExecData { cmd, .. } => match p {
                Packet::EndOfImage { status, .. } => {
                    self.not_available(
                        cmd,
                        &format!("status {status:#04x}, {}", status_text(status).0),
                    );
                    self.next_command()
                }
                _ => self.unexpected(&p),
            },
            State::WaitHelloAfterSwitch => match p {
                Packet::Hello { .. } => {
                    self.unanswered_hello = Some(p);
                    let info = self.info.clone();
                    self.finish(Action::Done(Box::new(Outcome::Info(info))))
                }
                _ => self.unexpected(&p),
            },
            State::WaitMemDebug => self.in_wait_mem_debug(p),
            State::WaitTable { .. } => match p {
                Packet::EndOfImage { status, .. } => self.fail(HostError::DumpRefused {
                    status,
                    during: "to send its region table",
                }),
                _ => self.unexpected(&p),
            },
            State::WaitRegion { index, .. } => match p {
                Packet::EndOfImage { status, .. } => {
                    let why = format!("status {status:#04x}, {}", status_text(status).0);
                    tracing::info!(region = index, %why, "device refused a region read");
                    self.dump.failed.push((index, why));
                    self.start_region(index + 1)
                }
                _ => self.unexpected(&p),
            },
            State::WaitResetResp => match p {
                Packet::ResetResp => {
                    self.dump.reset_acknowledged = true;
                    self.finish_dump()
                }
                _ => self.unexpected(&p),
            },
            State::Finished => Vec::new(),
        }
    }

    /// Raw bytes asked for by the last [`Action::ReadRaw`].
    pub fn feed_raw(&mut self, data: &[u8]) -> Vec<Action> {
        match self.state.clone() {
            State::WaitExecData { cmd, len } => {
                if data.len() != len as usize {
                    return self.fail(HostError::Garbled {
                        what: format!(
                            "command {cmd:#x} sent {} bytes, announced {len}",
                            data.len()
                        ),
                    });
                }
                self.decode_exec(cmd, data);
                self.next_command()
            }
            State::WaitTable { format, len } => {
                if data.len() as u64 != len {
                    return self.fail(HostError::Garbled {
                        what: format!("region table of {} bytes, asked for {len}", data.len()),
                    });
                }
                self.on_table(format, data)
            }
            State::WaitRegion { index, offset, len } => {
                if data.len() as u64 != len {
                    return self.fail(HostError::Garbled {
                        what: format!("memory read returned {} bytes, asked for {len}", data.len()),
                    });
                }
                self.next_chunk(index, offset + len)
            }
            State::Finished => Vec::new(),
            _ => self.fail(HostError::Garbled {
                what: format!("{} raw bytes that nothing asked for", data.len()),
            }),
        }
    }

    /// Nothing arrived within the wait the driver chose for [`Self::wait`].
    pub fn on_timeout(&mut self) -> Vec<Action> {
        let waiting_for = self.waiting_for();
        match self.state.clone() {
            State::WaitHello { unsolicited: false } => {
                let m = self.goal.hello_mode();
                tracing::info!(
                    mode = m,
                    "no HELLO within the hello wait; sending an unsolicited HELLO_RESP"
                );
                self.note("HELLO was not seen; recovered with an unsolicited HELLO_RESP");
                self.state = State::WaitHello { unsolicited: true };
                vec![Action::Send(self.hello_resp(m))]
            }
            State::WaitHello { unsolicited: true } => self.fail(HostError::NoResponse),
            State::Recovering { cmd } => self.fail(HostError::PastHandshake { cmd }),
            State::WaitCmdReady => {
                self.info
                    .note("The modem did not answer the request for command mode");
                let info = self.info.clone();
                self.finish(Action::Done(Box::new(Outcome::Info(info))))
            }
            State::WaitExecResp { cmd } | State::WaitExecData { cmd, .. } => {
                self.not_available(cmd, "no answer");
                self.unanswered_in_a_row += 1;
                if self.unanswered_in_a_row >= 2 {
                    self.queue.clear();
                }
                self.next_command()
            }
            State::WaitHelloAfterSwitch => {
                self.info.note(
                    "The modem did not re-send HELLO after leaving command mode; replug it before uploading",
                );
                let info = self.info.clone();
                self.finish(Action::Done(Box::new(Outcome::Info(info))))
            }
            State::WaitResetResp => {
                self.dump
                    .notes
                    .push("The modem did not acknowledge RESET (no RESET_RESP)".into());
                self.finish_dump()
            }
            State::Finished => Vec::new(),
            _ => self.fail(HostError::Timeout { waiting_for }),
        }
    }

    /// The driver saw `<?xml` where a Sahara packet was expected.
    pub fn on_firehose_detected(&mut self) -> Vec<Action> {
        match self.state {
            State::WaitHello { .. } | State::Recovering { .. } => match self.goal {
                Goal::Upload(_) => {
                    tracing::info!(
                        "Firehose XML instead of HELLO: a programmer is already running"
                    );
                    self.finish(Action::Done(Box::new(Outcome::AlreadyRunning)))
                }
                _ => self.fail(HostError::FirehoseRunning),
            },
            State::WaitDoneResp => {
                self.upload
                    .notes
                    .push("The programmer started before DONE_RESP arrived".into());
                let s = self.upload.clone();
                self.finish(Action::Done(Box::new(Outcome::Uploaded(s))))
            }
            State::Finished => Vec::new(),
            _ => {
                let waiting_for = self.waiting_for();
                self.fail(HostError::Unexpected {
                    waiting_for,
                    got: "Firehose XML".into(),
                })
            }
        }
    }

    /// The driver got bytes that are not a Sahara packet (unknown command, bad length).
    pub fn on_garbage(&mut self, what: String) -> Vec<Action> {
        match self.state {
            State::WaitHello { .. } => {
                tracing::info!(%what, "garbage instead of HELLO; trying RESET_STATE_MACHINE");
                self.state = State::Recovering { cmd: 0 };
                vec![Action::Send(Packet::ResetStateMachine)]
            }
            State::Finished => Vec::new(),
            _ => self.fail(HostError::Garbled { what }),
        }
    }

    /// The link went away.
    pub fn on_link_lost(&mut self) -> Vec<Action> {
        match self.state {
            State::WaitResetResp => {
                self.dump
                    .notes
                    .push("The modem left the bus after RESET (expected)".into());
                self.finish_dump()
            }
            State::Finished => Vec::new(),
            _ => {
                let during = match self.goal {
                    Goal::Upload(_) => "the programmer upload",
                    Goal::Info => "the identity query",
                    Goal::MemoryDump(_) => "the memory dump",
                };
                self.fail(HostError::LinkLost { during })
            }
        }
    }

    // ------------------------------------------------------------------ handshake

    fn in_wait_hello(&mut self, p: Packet, unsolicited: bool) -> Vec<Action> {
        if let Packet::Hello { .. } = p {
            return self.on_hello(p);
        }
        if unsolicited {
            // The answer to our unsolicited HELLO_RESP.
            match (&self.goal, &p) {
                (Goal::Upload(_), Packet::ReadData { .. } | Packet::ReadData64 { .. }) => {
                    self.state = State::Transfer;
                    return self.in_transfer(p);
                }
                (
                    Goal::Info,
                    Packet::CmdReady | Packet::ReadData { .. } | Packet::ReadData64 { .. },
                ) => {
                    self.state = State::WaitCmdReady;
                    return self.in_wait_cmd_ready(p);
                }
                (
                    Goal::MemoryDump(_),
                    Packet::MemoryDebug { .. } | Packet::MemoryDebug64 { .. },
                ) => {
                    self.state = State::WaitMemDebug;
                    return self.in_wait_mem_debug(p);
                }
                (Goal::Upload(_), Packet::MemoryDebug { .. } | Packet::MemoryDebug64 { .. }) => {
                    return self.fail(HostError::WrongMode {
                        offered: mode::MEMORY_DEBUG,
                        goal: "programmer upload",
                    });
                }
                _ => {}
            }
        }
        let cmd = p.cmd();
        tracing::info!(
            cmd,
            packet = p.name(),
            "non-HELLO packet while waiting for HELLO; sending RESET_STATE_MACHINE"
        );
        self.state = State::Recovering { cmd };
        vec![Action::Send(Packet::ResetStateMachine)]
    }

    fn on_hello(&mut self, p: Packet) -> Vec<Action> {
        let Packet::Hello {
            version,
            version_supported,
            max_cmd_len,
            mode: m,
            ..
        } = p
        else {
            return self.unexpected(&p);
        };
        self.info
            .set_hello(version, version_supported, max_cmd_len, m);
        tracing::info!(version, version_supported, mode = m, "Sahara HELLO");
        match &self.goal {
            Goal::Upload(_) => {
                if m == mode::MEMORY_DEBUG {
                    self.unanswered_hello = Some(p);
                    return self.fail(HostError::WrongMode {
                        offered: m,
                        goal: "programmer upload",
                    });
                }
                self.state = State::Transfer;
                vec![Action::Send(self.hello_resp(mode::IMAGE_TX_PENDING))]
            }
            Goal::Info => {
                if m == mode::MEMORY_DEBUG || !(m == mode::IMAGE_TX_PENDING || m == mode::COMMAND) {
                    self.info.note(format!(
                        "The modem offers {} mode; command mode (identity) is not available there",
                        info::offered_mode_word(m)
                    ));
                    self.unanswered_hello = Some(p);
                    let info = self.info.clone();
                    return self.finish(Action::Done(Box::new(Outcome::Info(info))));
                }
                self.state = State::WaitCmdReady;
                vec![Action::Send(self.hello_resp(mode::COMMAND))]
            }
            Goal::MemoryDump(_) => {
                if m != mode::MEMORY_DEBUG {
                    self.unanswered_hello = Some(p);
                    return self.fail(HostError::WrongMode {
                        offered: m,
                        goal: "memory dump",
                    });
                }
                self.state = State::WaitMemDebug;
                vec![Action::Send(self.hello_resp(mode::MEMORY_DEBUG))]
            }
        }
    }

    // ------------------------------------------------------------------ upload

    fn in_transfer(&mut self, p: Packet) -> Vec<Action> {
        match p {
            Packet::ReadData {
                image_id,
                offset,
                length,
            } => self.serve(u64::from(image_id), u64::from(offset), u64::from(length)),
            Packet::ReadData64 {
                image_id,
                offset,
                length,
            } => self.serve(image_id, offset, length),
            Packet::EndOfImage { image_id, status } => {
                if status != 0 {
                    return self.fail(HostError::Refused { image_id, status });
                }
                tracing::info!(image_id, "END_OF_IMAGE: image accepted");
                self.state = State::WaitDoneResp;
                vec![Action::Send(Packet::Done)]
            }
            // A device greets again after a "pending" DONE_RESP (multi-image), or when our
            // HELLO_RESP crossed its HELLO; answer again, a bounded number of times.
            Packet::Hello { .. } if self.hellos_answered < MAX_REPEATED_HELLOS => {
                self.hellos_answered += 1;
                if let Packet::Hello {
                    version,
                    version_supported,
                    max_cmd_len,
                    mode: m,
                    ..
                } = p
                {
                    self.info
                        .set_hello(version, version_supported, max_cmd_len, m);
                }
                vec![Action::Send(self.hello_resp(mode::IMAGE_TX_PENDING))]
            }
            Packet::MemoryDebug { .. } | Packet::MemoryDebug64 { .. } => {
                self.fail(HostError::WrongMode {
                    offered: mode::MEMORY_DEBUG,
                    goal: "programmer upload",
                })
            }
            _ => self.unexpected(&p),
        }
    }

    fn serve(&mut self, image_id: u64, offset: u64, len: u64) -> Vec<Action> {
        let Goal::Upload(set) = &self.goal else {
            return self.unexpected(&Packet::ReadData64 {
                image_id,
                offset,
                length: len,
            });
        };
        let Some((key, img)) = set.lookup(image_id) else {
            return self.fail(HostError::ImageNotSupplied { image_id });
        };
        let image_len = img.len() as u64;
        match offset.checked_add(len) {
            Some(end) if end <= image_len => {}
            _ => {
                return self.fail(HostError::OutOfRange {
                    image_id,
                    offset,
                    len,
                    image_len,
                })
            }
        }
        if self.upload.bytes_sent.saturating_add(len) > self.byte_budget {
            return self.fail(HostError::Limit {
                what: format!(
                    "the device asked for more than {} bytes in total for {} bytes of images",
                    self.byte_budget,
                    set.total_len()
                ),
            });
        }
        if !self.upload.image_ids_requested.contains(&image_id) {
            if u64::from(key) != image_id {
                self.upload.notes.push(format!(
                    "The modem asked for image {image_id}; the programmer was sent for it"
                ));
            }
            self.upload.image_ids_requested.push(image_id);
        }
        self.served.insert(key);
        self.upload.bytes_sent += len;
        self.upload.requests += 1;
        vec![Action::SendImage {
            image_id: key,
            offset,
            len,
        }]
    }

    fn in_wait_done_resp(&mut self, p: Packet) -> Vec<Action> {
        let Packet::DoneResp { status } = p else {
            return self.unexpected(&p);
        };
        if status == mode::IMAGE_TX_COMPLETE {
            tracing::info!("DONE_RESP: transfer complete");
            let s = self.upload.clone();
            return self.finish(Action::Done(Box::new(Outcome::Uploaded(s))));
        }
        let Goal::Upload(set) = &self.goal else {
            return self.unexpected(&p);
        };
        let all_served = set.images.keys().all(|k| self.served.contains(k));
        let quirk_ids = self
            .upload
            .image_ids_requested
            .iter()
            .all(|id| PENDING_QUIRK_IDS.iter().any(|q| u64::from(*q) == *id))
            && set.images.keys().all(|k| PENDING_QUIRK_IDS.contains(k));
        if all_served && quirk_ids {
            tracing::info!("DONE_RESP says pending; accepted (known quirk for image 7/13/21)");
            self.upload.pending_quirk = true;
            self.upload.notes.push(
                "The modem reported more images pending after the programmer; accepted as complete (known quirk)".into(),
            );
            let s = self.upload.clone();
            return self.finish(Action::Done(Box::new(Outcome::Uploaded(s))));
        }
        tracing::info!(status, "DONE_RESP: more images pending");
        self.state = State::Transfer;
        Vec::new()
    }

    // ------------------------------------------------------------------ command mode

    fn in_wait_cmd_ready(&mut self, p: Packet) -> Vec<Action> {
        match p {
            Packet::CmdReady => {
                let v = self.info.sahara_version;
                let mut q = vec![exec::SERIAL_NUM];
                if matches!(v, Some(v) if v < 3) {
                    q.push(exec::MSM_HW_ID);
                }
                q.push(exec::OEM_PK_HASH);
                if matches!(v, Some(v) if v >= 3) {
                    q.push(exec::CHIP_ID_V3);
                }
                q.push(exec::SBL_SW_VERSION);
                if v.is_none() {
                    // Version unknown (HELLO was missed): the HW ID may go unanswered on v3
                    // devices, so ask it last.
                    q.push(exec::MSM_HW_ID);
                }
                q.reverse();
                self.queue = q;
                self.next_command()
            }
            Packet::ReadData { .. } | Packet::ReadData64 { .. } => {
                self.info.note(
                    "The modem does not offer command mode; it asked for the programmer at once",
                );
                self.unanswered_hello = None;
                // The request is kept for the upload that follows.
                self.pending_request = Some(p);
                let info = self.info.clone();
                self.finish(Action::Done(Box::new(Outcome::Info(info))))
            }
            Packet::EndOfImage { status, .. } => {
                self.info.note(format!(
                    "The modem refused command mode (status {status:#04x}, {})",
                    status_text(status).0
                ));
                let info = self.info.clone();
                self.finish(Action::Done(Box::new(Outcome::Info(info))))
            }
            _ => self.unexpected(&p),
        }
    }

    fn next_command(&mut self) -> Vec<Action> {
        match self.queue.pop() {
            Some(cmd) => {
                self.state = State::WaitExecResp { cmd };
                vec![Action::Send(Packet::Execute { cmd })]
            }
            None => {
                self.state = State::WaitHelloAfterSwitch;
                vec![Action::Send(Packet::SwitchMode {
                    mode: mode::IMAGE_TX_PENDING,
                })]
            }
        }
    }

    fn in_wait_exec_resp(&mut self, p: Packet, cmd: u32) -> Vec<Action> {
        match p {
            Packet::ExecuteResp { cmd: c, data_len } if c == cmd => {
                self.unanswered_in_a_row = 0;
                if data_len > MAX_EXEC_DATA {
                    return self.fail(HostError::Limit {
                        what: format!(
                            "the modem announced {data_len} bytes for command {cmd:#x}; the limit is {MAX_EXEC_DATA}"
                        ),
                    });
                }
                if data_len == 0 {
                    self.not_available(cmd, "empty answer");
                    // Keep lock-step: EXECUTE_DATA is still sent, but no data follows.
                    let mut a = vec![Action::Send(Packet::ExecuteData { cmd })];
                    a.extend(self.next_command());
                    return a;
                }
                self.state = State::WaitExecData { cmd, len: data_len };
                vec![
                    Action::Send(Packet::ExecuteData { cmd }),
                    Action::ReadRaw {
                        len: u64::from(data_len),
                        purpose: RawPurpose::ExecData { cmd },
                    },
                ]
            }
            Packet::ExecuteResp { cmd: c, .. } => self.fail(HostError::Unexpected {
                waiting_for: "EXECUTE_RESP",
                got: format!("EXECUTE_RESP for command {c:#x} (asked {cmd:#x})"),
            }),
            Packet::EndOfImage { status, .. } => {
                self.unanswered_in_a_row = 0;
                self.not_available(
                    cmd,
                    &format!("status {status:#04x}, {}", status_text(status).0),
                );
                if cmd == exec::MSM_HW_ID
                    && self.info.sahara_version.is_none()
                    && self.info.chip_id_v3.is_none()
                {
                    // Version unknown (HELLO was missed) and the HW ID refused: a v3 device,
                    // which reports its chip through chip ID v3 instead.
                    self.queue.push(exec::CHIP_ID_V3);
                }
                self.next_command()
            }
            _ => self.unexpected(&p),
        }
    }

    fn not_available(&mut self, cmd: u32, why: &str) {
        tracing::info!(cmd, why, "command-mode item not available");
        self.info
            .note(format!("{} not available ({why})", exec_item_name(cmd)));
    }

    fn decode_exec(&mut self, cmd: u32, d: &[u8]) {
        let short =
            |me: &mut Self| me.not_available(cmd, &format!("short answer of {} bytes", d.len()));
        match cmd {
            exec::SERIAL_NUM => match info::decode_serial(d) {
                Some(s) => {
                    self.info.serial = Some(s);
                    self.info.serial_hex = Some(format!("0x{s:08x}"));
                }
                None => short(self),
            },
            exec::MSM_HW_ID => match info::decode_hw_id(d) {
                Some(h) => self.info.hw_id = Some(h),
                None => short(self),
            },
            exec::OEM_PK_HASH => {
                let t = info::trim_pk_hash(d);
                if t.iter().all(|&b| b == 0) {
                    self.info
                        .note("The OEM public-key hash is all zeros (no key fused?)");
                }
                self.info.pk_hash = Some(hex::encode(t));
            }
            exec::SBL_SW_VERSION => match info::decode_sbl_version(d) {
                Some(v) => {
                    self.info.sbl_version = Some(v);
                    self.info.sbl_version_hex = Some(format!("0x{v:08x}"));
                }
                None => short(self),
            },
            exec::CHIP_ID_V3 => match info::decode_chip_id_v3(d) {
                Some(c) => self.info.chip_id_v3 = Some(c),
                None => short(self),
            },
            _ => {}
        }
    }

    // ------------------------------------------------------------------ memory debug

    fn in_wait_mem_debug(&mut self, p: Packet) -> Vec<Action> {
        let Goal::MemoryDump(limits) = self.goal else {
            return self.unexpected(&p);
        };
        let (format, addr, len) = match p {
            Packet::MemoryDebug {
                table_addr,
                table_len,
            } => (
                TableFormat::Bits32,
                u64::from(table_addr),
                u64::from(table_len),
            ),
            Packet::MemoryDebug64 {
                table_addr,
                table_len,
            } => (TableFormat::Bits64, table_addr, table_len),
            Packet::EndOfImage { status, .. } => {
                return self.fail(HostError::DumpRefused {
                    status,
                    during: "memory debug",
                })
            }
            _ => return self.unexpected(&p),
        };
        let entries = memdebug::entry_count(len, format);
        if entries == 0 {
            return self.fail(HostError::BadTable(TableError::Empty {
                len: usize::try_from(len).unwrap_or(usize::MAX),
            }));
        }
        if entries > limits.max_entries as u64 {
            return self.fail(HostError::BadTable(TableError::TooManyEntries {
                entries: usize::try_from(entries).unwrap_or(usize::MAX),
                max: limits.max_entries,
            }));
        }
        // Read whole entries only: a trailing fragment is of no use.
        let len = entries * format.entry_len() as u64;
        tracing::info!(?format, addr, len, "MEMORY_DEBUG: reading the region table");
        self.dump_format = format;
        self.dump.format = Some(format);
        self.state = State::WaitTable { format, len };
        vec![
            Action::Send(self.mem_read(addr, len)),
            Action::ReadRaw {
                len,
                purpose: RawPurpose::Table,
            },
        ]
    }

    fn mem_read(&self, addr: u64, len: u64) -> Packet {
        match self.dump_format {
            TableFormat::Bits64 => Packet::MemoryRead64 { addr, len },
            // Addresses were checked against the 32-bit space when the table was parsed.
            TableFormat::Bits32 => Packet::MemoryRead {
                addr: addr as u32,
                len: len as u32,
            },
        }
    }

    fn on_table(&mut self, format: TableFormat, data: &[u8]) -> Vec<Action> {
        let Goal::MemoryDump(limits) = self.goal else {
            return Vec::new();
        };
        let table = match memdebug::parse_table(data, format, limits.max_entries) {
            Ok(t) => t,
            Err(e) => return self.fail(HostError::BadTable(e)),
        };
        let total = table.total_len();
        if total > limits.max_total_bytes {
            return self.fail(HostError::Limit {
                what: format!(
                    "the modem offers {total} bytes of memory regions, more than the limit of {} bytes",
                    limits.max_total_bytes
                ),
            });
        }
        tracing::info!(regions = table.regions.len(), total, "region table parsed");
        self.dump.regions = table.regions.clone();
        let mut a = vec![Action::Regions(table.regions)];
        a.extend(self.start_region(0));
        a
    }

    fn start_region(&mut self, index: usize) -> Vec<Action> {
        let mut i = index;
        while let Some(r) = self.dump.regions.get(i) {
            if r.length > 0 {
                return self.next_chunk(i, 0);
            }
            i += 1;
        }
        tracing::info!("all regions read; sending RESET");
        self.state = State::WaitResetResp;
        vec![Action::Send(Packet::Reset)]
    }

    fn next_chunk(&mut self, index: usize, offset: u64) -> Vec<Action> {
        let Goal::MemoryDump(limits) = self.goal else {
            return Vec::new();
        };
        let Some(r) = self.dump.regions.get(index) else {
            return self.start_region(index);
        };
        if offset >= r.length {
            return self.start_region(index + 1);
        }
        let len = (r.length - offset).min(limits.chunk.max(1));
        let addr = r.base + offset;
        self.state = State::WaitRegion { index, offset, len };
        vec![
            Action::Send(self.mem_read(addr, len)),
            Action::ReadRaw {
                len,
                purpose: RawPurpose::Region { index, offset },
            },
        ]
    }

    fn finish_dump(&mut self) -> Vec<Action> {
        let mut d = self.dump.clone();
        d.info = self.info.clone();
        self.finish(Action::Done(Box::new(Outcome::Dumped(d))))
    }
}

/// A plain name for a command-mode item.
pub fn exec_item_name(cmd: u32) -> &'static str {
    match cmd {
        exec::SERIAL_NUM => "Serial number",
        exec::MSM_HW_ID => "MSM hardware ID",
        exec::OEM_PK_HASH => "OEM public-key hash",
        exec::SBL_SW_VERSION => "SBL version",
        exec::CHIP_ID_V3 => "Chip ID (v3)",
        exec::CMD_ID_LIST => "Command list",
        _ => "Command-mode item",
    }
}

fn describe_packet(p: &Packet) -> String {
    match p {
        Packet::EndOfImage { image_id, status } => format!(
            "END_OF_IMAGE (image {image_id}, status {status:#04x}: {})",
            status_text(*status).0
        ),
        Packet::Hello { mode: m, .. } => format!("HELLO (mode {m})"),
        other => other.name().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sahara::packet::IMAGE_ID_EHOSTDL;
    use proptest::prelude::*;

    fn hello(version: u32, m: u32) -> Packet {
        Packet::Hello {
            version,
            version_supported: 1,
            max_cmd_len: 0x400,
            mode: m,
            reserved: [0; 6],
        }
    }

    fn resp(version: u32, m: u32) -> Action {
        Action::Send(Packet::HelloResp {
            version,
            version_supported: 1,
            status: 0,
            mode: m,
            reserved: [0; 6],
        })
    }

    fn programmer(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 + 3) as u8).collect()
    }

    fn upload_machine(n: usize) -> HostMachine {
        HostMachine::new(Goal::Upload(UploadSet::programmer(programmer(n))))
    }

    fn done(actions: &[Action]) -> Option<&Outcome> {
        actions.iter().find_map(|a| match a {
            Action::Done(o) => Some(&**o),
            _ => None,
        })
    }

    fn failed(actions: &[Action]) -> Option<&HostError> {
        actions.iter().find_map(|a| match a {
            Action::Fail(e) => Some(e),
            _ => None,
        })
    }

    #[test]
    fn upload_out_of_order_with_exact_slices() {
        let mut m = upload_machine(0x3000);
        assert_eq!(m.wait(), Wait::Hello);
        assert_eq!(m.feed(hello(2, 0)), vec![resp(2, 0)]);
        let reqs = [
            (0u32, 0x34u32),
            (0x34, 0x80),
            (0x2000, 0x1000),
            (0x1000, 0x1000),
            (0x2ff0, 0x10),
        ];
        for (off, len) in reqs {
            let a = m.feed(Packet::ReadData {
                image_id: 13,
                offset: off,
                length: len,
            });
            assert_eq!(
                a,
                vec![Action::SendImage {
                    image_id: 13,
                    offset: u64::from(off),
                    len: u64::from(len)
                }]
            );
            let s = m.image_slice(13, u64::from(off), u64::from(len)).unwrap();
            assert_eq!(s, &programmer(0x3000)[off as usize..(off + len) as usize]);
        }
        assert_eq!(
            m.feed(Packet::EndOfImage {
                image_id: 13,
                status: 0
            }),
            vec![Action::Send(Packet::Done)]
        );
        let a = m.feed(Packet::DoneResp { status: 1 });
        let Some(Outcome::Uploaded(s)) = done(&a) else {
            panic!("{a:?}")
        };
        assert_eq!(s.requests, 5);
        assert_eq!(s.bytes_sent, 0x34 + 0x80 + 0x1000 + 0x1000 + 0x10);
        assert!(!s.pending_quirk);
        assert!(m.is_finished());
        assert!(m.feed(Packet::DoneResp { status: 1 }).is_empty());
    }

    #[test]
    fn read_data64_with_segment_offsets() {
        let mut m = upload_machine(0x82000);
        m.feed(hello(3, 0));
        for (off, len) in [(0x81540u64, 0x878u64), (0x81dc0, 0x240)] {
            let a = m.feed(Packet::ReadData64 {
                image_id: 13,
                offset: off,
                length: len,
            });
            assert_eq!(
                a,
                vec![Action::SendImage {
                    image_id: 13,
                    offset: off,
                    len
                }]
            );
        }
        // Past the end: an error, never padding.
        let a = m.feed(Packet::ReadData64 {
            image_id: 13,
            offset: 0x81f00,
            length: 0x1000,
        });
        assert!(matches!(
            failed(&a),
            Some(HostError::OutOfRange {
                image_id: 13,
                offset: 0x81f00,
                len: 0x1000,
                image_len: 0x82000
            })
        ));
    }

    #[test]
    fn overflowing_request_is_out_of_range() {
        let mut m = upload_machine(16);
        m.feed(hello(3, 0));
        let a = m.feed(Packet::ReadData64 {
            image_id: 13,
            offset: u64::MAX,
            length: 2,
        });
        assert!(matches!(failed(&a), Some(HostError::OutOfRange { .. })));
    }

    #[test]
    fn pending_quirk_for_single_programmer() {
        let mut m = upload_machine(0x100);
        m.feed(hello(2, 0));
        m.feed(Packet::ReadData {
            image_id: 13,
            offset: 0,
            length: 0x100,
        });
        m.feed(Packet::EndOfImage {
            image_id: 13,
            status: 0,
        });
        let a = m.feed(Packet::DoneResp { status: 0 });
        let Some(Outcome::Uploaded(s)) = done(&a) else {
            panic!("{a:?}")
        };
        assert!(s.pending_quirk);
    }

    #[test]
    fn pending_with_unserved_images_waits_for_more() {
        let mut imgs = BTreeMap::new();
        imgs.insert(13u32, programmer(0x40));
        imgs.insert(36u32, vec![9u8; 0x20]);
        let mut m = HostMachine::new(Goal::Upload(UploadSet::multi(imgs)));
        m.feed(hello(2, 0));
        m.feed(Packet::ReadData {
            image_id: 13,
            offset: 0,
            length: 0x40,
        });
        m.feed(Packet::EndOfImage {
            image_id: 13,
            status: 0,
        });
        assert!(m.feed(Packet::DoneResp { status: 0 }).is_empty());
        assert!(!m.is_finished());
        // The device greets again and asks for image 36.
        assert_eq!(m.feed(hello(2, 0)), vec![resp(2, 0)]);
        assert_eq!(
            m.feed(Packet::ReadData {
                image_id: 36,
                offset: 0,
                length: 0x20
            }),
            vec![Action::SendImage {
                image_id: 36,
                offset: 0,
                len: 0x20
            }]
        );
        // An image that was not supplied is an error in a multi-image set.
        let a = m.feed(Packet::ReadData {
            image_id: 99,
            offset: 0,
            length: 4,
        });
        assert!(matches!(
            failed(&a),
            Some(HostError::ImageNotSupplied { image_id: 99 })
        ));
    }

    #[test]
    fn single_programmer_served_for_image_21_with_quirk() {
        let mut m = upload_machine(0x20);
        m.feed(hello(2, 0));
        let a = m.feed(Packet::ReadData {
            image_id: 21,
            offset: 0,
            length: 0x20,
        });
        assert_eq!(
            a,
            vec![Action::SendImage {
                image_id: IMAGE_ID_EHOSTDL,
                offset: 0,
                len: 0x20
            }]
        );
        m.feed(Packet::EndOfImage {
            image_id: 21,
            status: 0,
        });
        let a = m.feed(Packet::DoneResp { status: 0 });
        assert!(
            matches!(done(&a), Some(Outcome::Uploaded(s)) if s.pending_quirk && !s.notes.is_empty())
        );
    }

    #[test]
    fn refused_programmer_names_the_status() {
        let mut m = upload_machine(0x100);
        m.feed(hello(2, 0));
        m.feed(Packet::ReadData {
            image_id: 13,
            offset: 0,
            length: 0x34,
        });
        let a = m.feed(Packet::EndOfImage {
            image_id: 13,
            status: 0x25,
        });
        let e = failed(&a).unwrap();
        assert_eq!(
            *e,
            HostError::Refused {
                image_id: 13,
                status: 0x25
            }
        );
        assert!(e.to_string().contains("image auth failure"));
    }

    #[test]
    fn missed_hello_gets_one_unsolicited_hello_resp() {
        let mut m = upload_machine(0x10);
        let a = m.on_timeout();
        assert_eq!(a, vec![resp(2, 0)]);
        assert_eq!(m.wait(), Wait::Handshake);
        // The device proceeds with a read request.
        let a = m.feed(Packet::ReadData {
            image_id: 13,
            offset: 0,
            length: 0x10,
        });
        assert!(matches!(a[0], Action::SendImage { .. }));

        let mut m = upload_machine(0x10);
        m.on_timeout();
        assert_eq!(failed(&m.on_timeout()), Some(&HostError::NoResponse));
    }

    #[test]
    fn mid_session_device_gets_one_reset_state_machine() {
        let mut m = upload_machine(0x10);
        let a = m.feed(Packet::EndOfImage {
            image_id: 13,
            status: 0,
        });
        assert_eq!(a, vec![Action::Send(Packet::ResetStateMachine)]);
        assert_eq!(
            failed(&m.on_timeout()),
            Some(&HostError::PastHandshake { cmd: 4 })
        );

        // After the unsolicited HELLO_RESP too.
        let mut m = upload_machine(0x10);
        m.on_timeout();
        let a = m.feed(Packet::EndOfImage {
            image_id: 13,
            status: 1,
        });
        assert_eq!(a, vec![Action::Send(Packet::ResetStateMachine)]);
        let a = m.feed(Packet::ResetResp);
        assert_eq!(failed(&a), Some(&HostError::PastHandshake { cmd: 4 }));

        // A device that restarts the handshake is served.
        let mut m = upload_machine(0x10);
        m.feed(Packet::CmdReady);
        assert_eq!(m.feed(hello(2, 0)), vec![resp(2, 0)]);
        assert!(m
            .info()
            .notes
            .iter()
            .any(|n| n.contains("RESET_STATE_MACHINE")));
    }

    #[test]
    fn firehose_running() {
        let mut m = upload_machine(0x10);
        assert_eq!(
            m.on_firehose_detected(),
            vec![Action::Done(Box::new(Outcome::AlreadyRunning))]
        );
        let mut m = HostMachine::new(Goal::Info);
        assert_eq!(
            failed(&m.on_firehose_detected()),
            Some(&HostError::FirehoseRunning)
        );
    }

    /// Run an info machine through a scripted device: for each EXECUTE, the answer given by
    /// `answer` (None = END_OF_IMAGE status 0x1F).
    fn run_info(
        version: u32,
        answer: impl Fn(u32) -> Option<Vec<u8>>,
    ) -> (DeviceInfo, Vec<u32>, HostMachine) {
        let mut m = HostMachine::new(Goal::Info);
        assert_eq!(m.feed(hello(version, 0)), vec![resp(version, 3)]);
        let mut asked = Vec::new();
        let mut actions = m.feed(Packet::CmdReady);
        for _ in 0..20 {
            match actions.as_slice() {
                [Action::Send(Packet::Execute { cmd })] => {
                    let cmd = *cmd;
                    asked.push(cmd);
                    match answer(cmd) {
                        Some(d) => {
                            let a = m.feed(Packet::ExecuteResp {
                                cmd,
                                data_len: d.len() as u32,
                            });
                            if d.is_empty() {
                                assert_eq!(a[0], Action::Send(Packet::ExecuteData { cmd }));
                                actions = a[1..].to_vec();
                                continue;
                            }
                            assert_eq!(
                                a,
                                vec![
                                    Action::Send(Packet::ExecuteData { cmd }),
                                    Action::ReadRaw {
                                        len: d.len() as u64,
                                        purpose: RawPurpose::ExecData { cmd }
                                    }
                                ]
                            );
                            actions = m.feed_raw(&d);
                        }
                        None => {
                            actions = m.feed(Packet::EndOfImage {
                                image_id: 0,
                                status: 0x1F,
                            })
                        }
                    }
                }
                [Action::Send(Packet::SwitchMode { mode: 0 })] => {
                    let a = m.feed(hello(version, 0));
                    let Some(Outcome::Info(i)) = done(&a) else {
                        panic!("{a:?}")
                    };
                    return (i.clone(), asked, m);
                }
                other => panic!("unexpected actions {other:?}"),
            }
        }
        panic!("command mode did not end");
    }

    #[test]
    fn command_mode_v2() {
        let pk = hex::decode("cc3153a80293939b90d02d3bf8b23e0292e452fef662c74998421adad42a380f")
            .unwrap();
        let pk3: Vec<u8> = pk.iter().chain(&pk).chain(&pk).copied().collect();
        let (info, asked, mut m) = run_info(2, |cmd| match cmd {
            exec::SERIAL_NUM => Some(hex::decode("644cf90c").unwrap()),
            exec::MSM_HW_ID => Some(hex::decode("00000000e1800400").unwrap()),
            exec::OEM_PK_HASH => Some(pk3.clone()),
            _ => None,
        });
        assert_eq!(asked, vec![1, 2, 3, 7]);
        assert_eq!(info.serial, Some(0x0cf9_4c64));
        assert_eq!(info.serial_hex.as_deref(), Some("0x0cf94c64"));
        let hw = info.hw_id.unwrap();
        assert_eq!(hw.msm_id, 0x0004_80e1);
        assert_eq!(info.pk_hash.as_deref(), Some(hex::encode(&pk).as_str()));
        assert!(info.sbl_version.is_none());
        assert!(info
            .notes
            .iter()
            .any(|n| n.contains("SBL version not available")));
        assert_eq!(info.mode_name.as_deref(), Some("download"));
        // The re-sent HELLO is left for the upload.
        assert_eq!(m.take_unanswered_hello(), Some(hello(2, 0)));
    }

    #[test]
    fn command_mode_v3_asks_chip_id_instead_of_hw_id() {
        let mut chip = vec![0u8; 48];
        chip[36..40].copy_from_slice(&0x0019_60e1u32.to_le_bytes());
        chip[44..46].copy_from_slice(&0x0051u16.to_le_bytes());
        let (info, asked, _) = run_info(3, |cmd| match cmd {
            exec::SERIAL_NUM => Some(vec![1, 2, 3, 4]),
            exec::OEM_PK_HASH => Some(vec![0xAB; 64]),
            exec::CHIP_ID_V3 => Some(chip.clone()),
            exec::SBL_SW_VERSION => Some(vec![]),
            _ => None,
        });
        assert_eq!(asked, vec![1, 3, 0x0A, 7]);
        assert!(info.hw_id.is_none());
        let c = info.chip_id_v3.unwrap();
        assert_eq!(c.msm_id, 0x0019_60e1);
        assert_eq!(c.oem_id, Some(0x51));
        // 64 bytes of 0xAB: a 32-byte hash repeated twice.
        assert_eq!(info.pk_hash.unwrap().len(), 64);
        assert!(info
            .notes
            .iter()
            .any(|n| n.contains("SBL version not available (empty answer)")));
    }

    #[test]
    fn command_mode_with_unknown_version_falls_back_to_chip_id_v3() {
        let mut chip = vec![0u8; 48];
        chip[36..40].copy_from_slice(&0x001a_60e1u32.to_le_bytes());
        let answer = |cmd| match cmd {
            exec::SERIAL_NUM => Some(vec![1, 2, 3, 4]),
            exec::CHIP_ID_V3 => Some(chip.clone()),
            _ => None,
        };
        // HELLO was missed: the unsolicited HELLO_RESP (mode 3) gets CMD_READY.
        let mut m = HostMachine::new(Goal::Info);
        assert_eq!(m.on_timeout(), vec![resp(2, 3)]);
        let mut asked = Vec::new();
        let mut a = m.feed(Packet::CmdReady);
        while let [Action::Send(Packet::Execute { cmd })] = a.as_slice() {
            let cmd = *cmd;
            asked.push(cmd);
            a = match answer(cmd) {
                Some(d) => {
                    m.feed(Packet::ExecuteResp {
                        cmd,
                        data_len: d.len() as u32,
                    });
                    m.feed_raw(&d)
                }
                None => m.feed(Packet::EndOfImage {
                    image_id: 0,
                    status: 0x1F,
                }),
            };
        }
        // The HW ID (asked last) was refused, so chip ID v3 was asked after it.
        assert_eq!(asked, vec![1, 3, 7, 2, 0x0A]);
        assert_eq!(a, vec![Action::Send(Packet::SwitchMode { mode: 0 })]);
        let a = m.feed(hello(3, 0));
        let Some(Outcome::Info(i)) = done(&a) else {
            panic!("{a:?}")
        };
        assert!(i.hw_id.is_none());
        assert_eq!(i.chip_id_v3.as_ref().unwrap().msm_id, 0x001a_60e1);

        // A v2 device that answers the HW ID is not asked for chip ID v3.
        let mut m = HostMachine::new(Goal::Info);
        m.on_timeout();
        let mut asked = Vec::new();
        let mut a = m.feed(Packet::CmdReady);
        while let [Action::Send(Packet::Execute { cmd })] = a.as_slice() {
            let cmd = *cmd;
            asked.push(cmd);
            a = if cmd == exec::MSM_HW_ID {
                m.feed(Packet::ExecuteResp { cmd, data_len: 8 });
                m.feed_raw(&0x0004_80e1_0000_0000u64.to_le_bytes())
            } else {
                m.feed(Packet::EndOfImage {
                    image_id: 0,
                    status: 0x1F,
                })
            };
        }
        assert_eq!(asked, vec![1, 3, 7, 2]);
    }

    #[test]
    fn command_mode_timeouts_are_not_fatal() {
        let mut m = HostMachine::new(Goal::Info);
        m.feed(hello(2, 3));
        m.feed(Packet::CmdReady);
        // Serial: no answer.
        assert_eq!(
            m.on_timeout(),
            vec![Action::Send(Packet::Execute { cmd: 2 })]
        );
        // HW ID: no answer either: the rest is skipped.
        assert_eq!(
            m.on_timeout(),
            vec![Action::Send(Packet::SwitchMode { mode: 0 })]
        );
        let a = m.on_timeout();
        let Some(Outcome::Info(i)) = done(&a) else {
            panic!()
        };
        assert!(i.notes.iter().any(|n| n.contains("did not re-send HELLO")));
    }

    #[test]
    fn info_on_a_crash_dump_device_leaves_hello_unanswered() {
        let mut m = HostMachine::new(Goal::Info);
        let a = m.feed(hello(2, 2));
        let Some(Outcome::Info(i)) = done(&a) else {
            panic!()
        };
        assert_eq!(i.mode_name.as_deref(), Some("crash-dump"));
        assert_eq!(m.take_unanswered_hello(), Some(hello(2, 2)));
    }

    fn name20(s: &[u8]) -> [u8; 20] {
        let mut a = [0u8; 20];
        a[..s.len()].copy_from_slice(s);
        a
    }

    fn dump_run(wide: bool) {
        let limits = DumpLimits {
            chunk: 0x100,
            ..DumpLimits::default()
        };
        let mut m = HostMachine::new(Goal::MemoryDump(limits));
        assert_eq!(m.feed(hello(2, 2)), vec![resp(2, 2)]);
        let regions = [
            (0x1000u64, 0x250u64, b"DDRCS0.BIN".as_slice()),
            (0x9000, 0, b"EMPTY.BIN"),
            (0x8000, 0x80, b"../evil"),
        ];
        let mut table = Vec::new();
        for (base, len, name) in regions {
            if wide {
                table.extend(1u64.to_le_bytes());
                table.extend(base.to_le_bytes());
                table.extend(len.to_le_bytes());
            } else {
                table.extend(1u32.to_le_bytes());
                table.extend((base as u32).to_le_bytes());
                table.extend((len as u32).to_le_bytes());
            }
            table.extend(name20(b"desc"));
            table.extend(name20(name));
        }
        let first = if wide {
            Packet::MemoryDebug64 {
                table_addr: 0x1_0000_0000,
                table_len: table.len() as u64,
            }
        } else {
            Packet::MemoryDebug {
                table_addr: 0x2000,
                table_len: table.len() as u32,
            }
        };
        let a = m.feed(first);
        let tl = table.len() as u64;
        let expect_read = if wide {
            Packet::MemoryRead64 {
                addr: 0x1_0000_0000,
                len: tl,
            }
        } else {
            Packet::MemoryRead {
                addr: 0x2000,
                len: tl as u32,
            }
        };
        assert_eq!(
            a,
            vec![
                Action::Send(expect_read),
                Action::ReadRaw {
                    len: tl,
                    purpose: RawPurpose::Table
                }
            ]
        );
        let mut a = m.feed_raw(&table);
        let Action::Regions(rs) = a.remove(0) else {
            panic!()
        };
        assert_eq!(rs.len(), 3);
        assert_eq!(rs[2].file_name, "evil");
        let mut reads = Vec::new();
        loop {
            match a.as_slice() {
                [Action::Send(p), Action::ReadRaw {
                    len,
                    purpose: RawPurpose::Region { index, offset },
                }] => {
                    let addr = match *p {
                        Packet::MemoryRead { addr, .. } => u64::from(addr),
                        Packet::MemoryRead64 { addr, .. } => addr,
                        _ => panic!("{p:?}"),
                    };
                    reads.push((*index, *offset, addr, *len));
                    let data = vec![0u8; *len as usize];
                    a = m.feed_raw(&data);
                }
                [Action::Send(Packet::Reset)] => break,
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            reads,
            vec![
                (0, 0, 0x1000, 0x100),
                (0, 0x100, 0x1100, 0x100),
                (0, 0x200, 0x1200, 0x50),
                (2, 0, 0x8000, 0x80)
            ]
        );
        let a = m.feed(Packet::ResetResp);
        let Some(Outcome::Dumped(d)) = done(&a) else {
            panic!()
        };
        assert!(d.reset_acknowledged);
        assert!(d.failed.is_empty());
    }

    #[test]
    fn memory_debug_32_bit() {
        dump_run(false);
    }

    #[test]
    fn memory_debug_64_bit() {
        dump_run(true);
    }

    #[test]
    fn memory_debug_limits_and_refusals() {
        let mut m = HostMachine::new(Goal::MemoryDump(DumpLimits::default()));
        m.feed(hello(2, 2));
        let a = m.feed(Packet::MemoryDebug64 {
            table_addr: 0,
            table_len: u64::MAX,
        });
        assert!(matches!(
            failed(&a),
            Some(HostError::BadTable(TableError::TooManyEntries { .. }))
        ));

        // Total size over the cap.
        let mut m = HostMachine::new(Goal::MemoryDump(DumpLimits {
            max_total_bytes: 0x1000,
            ..DumpLimits::default()
        }));
        m.feed(hello(2, 2));
        m.feed(Packet::MemoryDebug {
            table_addr: 0,
            table_len: 52,
        });
        let mut t = vec![0u8; 52];
        t[8..12].copy_from_slice(&0x2000u32.to_le_bytes());
        assert!(matches!(
            failed(&m.feed_raw(&t)),
            Some(HostError::Limit { .. })
        ));

        // A refused region is skipped, the next one is read.
        let mut m = HostMachine::new(Goal::MemoryDump(DumpLimits::default()));
        m.feed(hello(2, 2));
        m.feed(Packet::MemoryDebug {
            table_addr: 0,
            table_len: 104,
        });
        let mut t = vec![0u8; 104];
        t[8..12].copy_from_slice(&0x10u32.to_le_bytes());
        t[60..64].copy_from_slice(&0x20u32.to_le_bytes());
        m.feed_raw(&t);
        let a = m.feed(Packet::EndOfImage {
            image_id: 0,
            status: 0x19,
        });
        assert!(matches!(
            a[1],
            Action::ReadRaw {
                len: 0x20,
                purpose: RawPurpose::Region {
                    index: 1,
                    offset: 0
                }
            }
        ));
        m.feed_raw(&[0u8; 0x20]);
        // The device reboots instead of answering RESET.
        let a = m.on_link_lost();
        let Some(Outcome::Dumped(d)) = done(&a) else {
            panic!()
        };
        assert_eq!(d.failed.len(), 1);
        assert!(!d.reset_acknowledged);

        // Upload on a crash-dump device, dump on a download device: wrong mode.
        let mut m = upload_machine(4);
        assert!(matches!(
            failed(&m.feed(hello(2, 2))),
            Some(HostError::WrongMode { offered: 2, .. })
        ));
        assert!(m.take_unanswered_hello().is_some());
        let mut m = HostMachine::new(Goal::MemoryDump(DumpLimits::default()));
        assert!(matches!(
            failed(&m.feed(hello(2, 0))),
            Some(HostError::WrongMode { offered: 0, .. })
        ));
    }

    fn arb_packet() -> impl Strategy<Value = Packet> {
        (
            1u32..=0x13,
            proptest::collection::vec(any::<u8>(), 40),
            0u8..4,
        )
            .prop_map(|(cmd, body, small)| {
                let len = crate::protocol::sahara::packet::expected_len(cmd).unwrap() as usize;
                let mut b = Vec::new();
                b.extend(cmd.to_le_bytes());
                b.extend((len as u32).to_le_bytes());
                b.extend(&body[..len - 8]);
                // Keep some fields small so that real paths (valid offsets, modes) get exercised.
                if small > 0 && len >= 20 {
                    for i in (8..len).step_by(4) {
                        b[i + 1] = 0;
                        b[i + 2] = 0;
                        b[i + 3] = 0;
                        if small > 1 {
                            b[i] %= 16;
                        }
                    }
                }
                Packet::parse(&b).unwrap().0
            })
    }

    #[derive(Debug, Clone)]
    enum Ev {
        P(Packet),
        Raw(usize),
        Timeout,
        Xml,
        Garbage,
        Lost,
    }

    fn arb_event() -> impl Strategy<Value = Ev> {
        prop_oneof![
            6 => arb_packet().prop_map(Ev::P),
            2 => (0usize..600).prop_map(Ev::Raw),
            1 => Just(Ev::Timeout),
            1 => Just(Ev::Xml),
            1 => Just(Ev::Garbage),
            1 => Just(Ev::Lost),
        ]
    }

    proptest! {
        #[test]
        fn random_events_never_panic_and_terminate(goal in 0u8..3, evs in proptest::collection::vec(arb_event(), 0..60)) {
            let g = match goal {
                0 => Goal::Upload(UploadSet::programmer(programmer(0x300))),
                1 => Goal::Info,
                _ => Goal::MemoryDump(DumpLimits { max_total_bytes: 1 << 20, chunk: 0x100, ..DumpLimits::default() }),
            };
            let mut m = HostMachine::new(g);
            let mut finished = false;
            for e in evs {
                // Answer raw reads the way a driver would, with the requested size.
                let actions = match e {
                    Ev::P(p) => m.feed(p),
                    Ev::Raw(n) => m.feed_raw(&vec![0x5Au8; n]),
                    Ev::Timeout => m.on_timeout(),
                    Ev::Xml => m.on_firehose_detected(),
                    Ev::Garbage => m.on_garbage("x".into()),
                    Ev::Lost => m.on_link_lost(),
                };
                for a in &actions {
                    match a {
                        Action::SendImage { image_id, offset, len } => {
                            prop_assert!(m.image_slice(*image_id, *offset, *len).is_some());
                        }
                        Action::ReadRaw { len, .. } => prop_assert!(*len <= 1 << 20),
                        Action::Done(_) | Action::Fail(_) => finished = true,
                        _ => {}
                    }
                }
                if finished {
                    prop_assert!(m.is_finished());
                    prop_assert_eq!(m.wait(), Wait::Nothing);
                }
            }
            // Timeouts alone always bring any machine to an end.
            for _ in 0..64 {
                if m.is_finished() { break; }
                let _ = m.on_timeout();
            }
            prop_assert!(m.is_finished());
        }
    }
}
