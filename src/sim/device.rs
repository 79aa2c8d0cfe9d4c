//! The device runner: one whole emulated modem over any [`Transport`] (the device side of a pipe,
//! a pty, …). It drives the sans-IO [`BootRom`] and, after a successful upload, hands the link to
//! the emulated programmer ([`AfterUpload`]).
//!
//! - Every wait is bounded (reads of at most [`DeviceConfig::poll`]) and the `stop` flag is polled
//!   in every loop, so a runner thread ends promptly.
//! - Every [`Action::Send`] is written with one `write` call: one Sahara packet or one raw block.
//! - Faults (from [`DeviceConfig::faults`]): `consume-hello`, `mid-session[:MS]` (default 5000 ms),
//!   `refuse-programmer[:STATUS]`, `done-pending` act in the boot ROM; `delay:MS` delays every
//!   write (boot ROM and programmer); `drop-after[:N]` (N drawn from the seeded plan if missing)
//!   counts bytes in both directions over the whole session, then closes the link, runs
//!   [`DeviceConfig::on_link_drop`] (e.g. a pipe cutter) and ends with
//!   [`RunOutcome::LinkDropped`] — a pty owner closes the pty on that outcome.
//! - After the programmer returns: `ResetToEdl` → the unit re-enumerates and the boot ROM sends a
//!   fresh HELLO (after [`DeviceConfig::reboot_delay`]). `Reset` does the same, unless
//!   [`DeviceConfig::boot_from_storage`] is set and the storage boots to normal mode: then the
//!   run ends with [`RunOutcome::Rebooted`] and the runner ([`super::enumerate`]) brings the
//!   unit up in normal mode ([`super::normal`]).
//!   `PowerOff` → [`RunOutcome::PoweredOff`]; `LinkLost` → [`RunOutcome::LinkLost`] (or
//!   `LinkDropped` when the drop fault fired); `Hung` → the unit stays silent (reads and discards)
//!   until stopped or disconnected.
//! - A crash-dump unit that gets RESET ends the run with [`RunOutcome::Rebooted`].

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use crate::transport::{Framing, Transport, TransportError};

use super::bootrom::{Action, BootRom, BootRomOptions};
use super::faults::FaultPlan;
use super::linkfault::{DropHook, LinkFault};
pub use super::profile::Personality;
use super::profile::Profile;
use super::{AfterUpload, ProgrammerExit};

/// Default silence of the `mid-session` fault when no delay is given (the real log shows 5 s).
pub const DEFAULT_MID_SESSION_MS: u64 = 5000;

/// How to run one emulated unit.
pub struct DeviceConfig {
    /// Model and identity (use [`Profile::for_unit`] for distinct units).
    pub profile: Profile,
    /// EDL (9008) or crash dump (900e); overrides the profile's own personality.
    pub personality: Personality,
    /// Faults to inject, with the seeded RNG for numbers not given.
    pub faults: FaultPlan,
    /// Seed of generated contents (crash-dump regions).
    pub seed: u64,
    /// Longest single read; bounds how long a stop request can go unnoticed.
    pub poll: Duration,
    /// Bound of each write (a write that times out is logged and dropped, not fatal).
    pub write_timeout: Duration,
    /// Time between a reset (RESET, or the programmer's power reset) and the fresh HELLO.
    pub reboot_delay: Duration,
    /// Run once when the drop-after fault drops the link, to cut the host's side too.
    pub on_link_drop: Option<DropHook>,
    /// After the programmer's `<power value="reset"/>`, boot from the programmer's storage
    /// ([`super::normal::boot`]): when it boots to normal mode the run ends with
    /// [`RunOutcome::Rebooted`] (the runner then brings the unit up in normal mode); otherwise
    /// the boot ROM sends a fresh HELLO as before. Off by default.
    pub boot_from_storage: bool,
}

impl DeviceConfig {
    /// A unit of `profile` in its own personality, no faults, seed 0.
    pub fn new(profile: Profile) -> Self {
        DeviceConfig {
            personality: profile.personality,
            profile,
            faults: FaultPlan::none(),
            seed: 0,
            poll: Duration::from_millis(50),
            write_timeout: Duration::from_secs(10),
            reboot_delay: Duration::from_millis(100),
            on_link_drop: None,
            boot_from_storage: false,
        }
    }

    pub fn with_faults(mut self, faults: FaultPlan) -> Self {
        self.seed = faults.seed;
        self.faults = faults;
        self
    }

    pub fn with_personality(mut self, personality: Personality) -> Self {
        self.personality = personality;
        self
    }

    pub fn with_link_drop_hook(mut self, hook: DropHook) -> Self {
        self.on_link_drop = Some(hook);
        self
    }
}

impl std::fmt::Debug for DeviceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceConfig")
            .field("profile", &self.profile.name)
            .field("personality", &self.personality)
            .field("faults", &self.faults.faults)
            .field("seed", &self.seed)
            .finish_non_exhaustive()
    }
}

/// Why [`run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunOutcome {
    /// The stop flag was set.
    Stopped,
    /// The programmer executed `<power value="off"/>`.
    PoweredOff,
    /// The host side of the link went away.
    LinkLost,
    /// The drop-after fault dropped the link.
    LinkDropped,
    /// The unit left its boot ROM: a crash-dump unit was reset, or (with
    /// [`DeviceConfig::boot_from_storage`]) the programmer reset a unit whose storage boots to
    /// normal mode.
    Rebooted,
}

/// A transport that first returns bytes already received (what the boot ROM read past DONE),
/// then reads from the inner link.
struct Prefixed<'a> {
    pre: Vec<u8>,
    pos: usize,
    inner: &'a mut dyn Transport,
}

impl Transport for Prefixed<'_> {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        if self.pos < self.pre.len() && !buf.is_empty() {
            let n = (self.pre.len() - self.pos).min(buf.len());
            buf[..n].copy_from_slice(&self.pre[self.pos..self.pos + n]);
            self.pos += n;
            return Ok(n);
        }
        self.inner.read(buf, timeout)
    }
    fn write(&mut self, data: &[u8], timeout: Duration) -> Result<(), TransportError> {
        self.inner.write(data, timeout)
    }
    fn describe(&self) -> String {
        self.inner.describe()
    }
    fn framing(&self) -> Framing {
        self.inner.framing()
    }
}

fn stopped(stop: &AtomicBool) -> bool {
    stop.load(Ordering::Relaxed)
}

fn sleep_unless_stopped(d: Duration, stop: &AtomicBool) {
    let end = Instant::now() + d;
    while !stopped(stop) {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

fn lost<T: Transport>(link: &LinkFault<'_, T>) -> RunOutcome {
    if link.is_dropped() {
        RunOutcome::LinkDropped
    } else {
        RunOutcome::LinkLost
    }
}

/// Run one emulated unit on `link` until it is stopped, powered off, reset out of crash dump, or
/// the link is gone. Usable from a test thread and from `qrescue sim`.
pub fn run(
    link: &mut dyn Transport,
    cfg: &mut DeviceConfig,
    programmer: &mut dyn AfterUpload,
    stop: &AtomicBool,
) -> RunOutcome {
    let range = 64..(cfg.profile.programmer_size as u64 + 64 * 1024).max(65);
    let drop_after = cfg.faults.drop_after(range);
    let delay = Duration::from_millis(cfg.faults.delay_ms());
    let mut link = LinkFault::new(link)
        .drop_after(drop_after)
        .delay(delay)
        .on_drop(cfg.on_link_drop.take())
        .stop_flag(stop);

    let mut profile = cfg.profile.clone();
    profile.personality = cfg.personality;
    let opts = BootRomOptions {
        consume_hello: cfg.faults.consume_hello(),
        mid_session: cfg
            .faults
            .mid_session_ms(DEFAULT_MID_SESSION_MS)
            .map(Duration::from_millis),
        refuse_programmer: cfg.faults.refuse_programmer(),
        done_pending: cfg.faults.done_pending(),
        reboot_delay: cfg.reboot_delay,
        seed: cfg.seed,
    };
    let mut rom = BootRom::new(profile, opts);
    let identity = rom.profile().identity.clone();
    tracing::info!(
        profile = %rom.profile().name,
        personality = ?cfg.personality,
        faults = ?cfg.faults.faults,
        drop_after = ?drop_after,
        link = %link.describe(),
        "emulated unit attached"
    );

    let mut timer: Option<Instant> = None;
    let mut buf = vec![0u8; 64 * 1024];
    let mut todo: VecDeque<Action> = rom.attach().into();
    loop {
        while let Some(action) = todo.pop_front() {
            if stopped(stop) {
                return RunOutcome::Stopped;
            }
            match action {
                Action::Send(bytes) => match link.write(&bytes, cfg.write_timeout) {
                    Ok(()) => {}
                    Err(TransportError::Timeout { .. }) => {
                        tracing::warn!(
                            len = bytes.len(),
                            "host did not take the device's bytes in time"
                        );
                    }
                    Err(e) => {
                        tracing::info!(error = %e, "link gone while writing");
                        return lost(&link);
                    }
                },
                Action::Timer(d) => timer = Some(Instant::now() + d),
                Action::Rebooted => {
                    tracing::info!("crash-dump unit reset: rebooting out of the boot ROM");
                    return RunOutcome::Rebooted;
                }
                Action::HandOver => {
                    timer = None;
                    let leftover = rom.take_rx();
                    tracing::info!("programmer accepted; handing over to Firehose");
                    let exit = {
                        let mut t = Prefixed {
                            pre: leftover,
                            pos: 0,
                            inner: &mut link,
                        };
                        programmer.serve(&mut t, &identity)
                    };
                    tracing::info!(?exit, "programmer stopped");
                    match exit {
                        ProgrammerExit::Reset
                            if cfg.boot_from_storage
                                && !link.is_dropped()
                                && programmer.boot_storage().is_some_and(|s| {
                                    super::normal::boot(s, &cfg.profile).is_normal()
                                }) =>
                        {
                            tracing::info!("reset with a bootable storage: leaving the boot ROM");
                            return RunOutcome::Rebooted;
                        }
                        ProgrammerExit::ResetToEdl | ProgrammerExit::Reset => {
                            if link.is_dropped() {
                                return RunOutcome::LinkDropped;
                            }
                            sleep_unless_stopped(cfg.reboot_delay, stop);
                            todo.extend(rom.attach());
                        }
                        ProgrammerExit::PowerOff => return RunOutcome::PoweredOff,
                        ProgrammerExit::LinkLost => return lost(&link),
                        ProgrammerExit::Hung => return stay_silent(&mut link, cfg.poll, stop),
                    }
                }
            }
        }
        if stopped(stop) {
            return RunOutcome::Stopped;
        }
        let mut wait = cfg.poll;
        if let Some(t) = timer {
            wait = wait.min(t.saturating_duration_since(Instant::now()));
        }
        match link.read(&mut buf, wait.max(Duration::from_millis(1))) {
            Ok(n) => todo.extend(rom.feed(&buf[..n])),
            Err(TransportError::Timeout { .. }) => {}
            Err(e) => {
                tracing::info!(error = %e, "link gone while reading");
                return lost(&link);
            }
        }
        if timer.is_some_and(|t| Instant::now() >= t) {
            timer = None;
            todo.extend(rom.on_timer());
        }
    }
}

/// A hung unit: reads and discards until stopped or disconnected, never answers.
fn stay_silent<T: Transport>(
    link: &mut LinkFault<'_, T>,
    poll: Duration,
    stop: &AtomicBool,
) -> RunOutcome {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if stopped(stop) {
            return RunOutcome::Stopped;
        }
        match link.read(&mut buf, poll) {
            Ok(_) | Err(TransportError::Timeout { .. }) => {}
            Err(_) => return lost(link),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::sahara::packet::Packet;
    use crate::sim::elf;
    use crate::sim::faults::Fault;
    use crate::sim::profile::UnitIdentity;
    use crate::transport::pipe::{self, PipeEnd};
    use std::sync::{Arc, Mutex};
    use std::thread::JoinHandle;

    const T: Duration = Duration::from_secs(3);

    /// Test double for the programmer: writes a marker naming the unit, then exits as scripted.
    struct Double {
        exits: Vec<ProgrammerExit>,
        served: Arc<Mutex<u32>>,
    }

    impl AfterUpload for Double {
        fn serve(&mut self, link: &mut dyn Transport, unit: &UnitIdentity) -> ProgrammerExit {
            *self.served.lock().unwrap() += 1;
            let marker = format!(
                "<?xml ?><data><log value=\"DOUBLE {:#x}\"/></data>",
                unit.serial
            );
            if link.write(marker.as_bytes(), T).is_err() {
                return ProgrammerExit::LinkLost;
            }
            if self.exits.is_empty() {
                ProgrammerExit::PowerOff
            } else {
                self.exits.remove(0)
            }
        }
    }

    struct Unit {
        host: Host,
        stop: Arc<AtomicBool>,
        served: Arc<Mutex<u32>>,
        thread: JoinHandle<RunOutcome>,
    }

    impl Unit {
        fn start(mut cfg: DeviceConfig, exits: Vec<ProgrammerExit>, framing: Framing) -> Unit {
            let (mut dev, host) = pipe::pair(framing);
            let cutter = host.cutter();
            cfg.on_link_drop = Some(Box::new(move || cutter.cut()));
            let stop = Arc::new(AtomicBool::new(false));
            let served = Arc::new(Mutex::new(0));
            let (s2, served2) = (Arc::clone(&stop), Arc::clone(&served));
            let thread = std::thread::spawn(move || {
                let mut double = Double {
                    exits,
                    served: served2,
                };
                run(&mut dev, &mut cfg, &mut double, &s2)
            });
            Unit {
                host: Host {
                    end: host,
                    buf: Vec::new(),
                },
                stop,
                served,
                thread,
            }
        }

        fn finish(self) -> RunOutcome {
            self.stop.store(true, Ordering::SeqCst);
            self.thread.join().unwrap()
        }
    }

    /// A host that reassembles packets by length (works on stream and packet framing).
    struct Host {
        end: PipeEnd,
        buf: Vec<u8>,
    }

    impl Host {
        fn fill(&mut self) -> Result<(), TransportError> {
            let mut b = [0u8; 8192];
            let n = self.end.read(&mut b, T)?;
            self.buf.extend_from_slice(&b[..n]);
            Ok(())
        }

        fn packet(&mut self) -> Packet {
            loop {
                match Packet::parse(&self.buf) {
                    Ok((p, n)) => {
                        self.buf.drain(..n);
                        return p;
                    }
                    Err(crate::protocol::sahara::ParseError::Incomplete { .. }) => {
                        self.fill().unwrap()
                    }
                    Err(e) => panic!("host got garbage: {e}"),
                }
            }
        }

        fn text_until(&mut self, needle: &str) -> String {
            loop {
                let s = String::from_utf8_lossy(&self.buf).to_string();
                if let Some(i) = s.find(needle) {
                    self.buf.drain(..i + needle.len());
                    return s;
                }
                self.fill().unwrap();
            }
        }

        fn send(&mut self, p: Packet) {
            self.end.write(&p.encode(), T).unwrap();
        }

        fn hello_resp(&mut self, mode: u32) {
            self.send(Packet::HelloResp {
                version: 2,
                version_supported: 1,
                status: 0,
                mode,
                reserved: [0; 6],
            });
        }

        /// Serve READ_DATA(64) until END_OF_IMAGE; returns its status.
        fn upload(&mut self, image: &[u8]) -> u32 {
            loop {
                let (o, l) = match self.packet() {
                    Packet::ReadData { offset, length, .. } => (offset as usize, length as usize),
                    Packet::ReadData64 { offset, length, .. } => (offset as usize, length as usize),
                    Packet::EndOfImage { status, .. } => return status,
                    p => panic!("unexpected {p:?}"),
                };
                self.end.write(&image[o..o + l], T).unwrap();
            }
        }
    }

    fn cfg(name: &str, faults: &[&str]) -> DeviceConfig {
        let f = faults.iter().map(|s| s.parse::<Fault>().unwrap()).collect();
        let mut c =
            DeviceConfig::new(Profile::by_name(name).unwrap()).with_faults(FaultPlan::new(f, 1));
        c.reboot_delay = Duration::from_millis(10);
        c
    }

    fn full_flash(u: &mut Unit, prog: &[u8]) {
        assert!(matches!(u.host.packet(), Packet::Hello { mode: 0, .. }));
        u.host.hello_resp(3);
        assert_eq!(u.host.packet(), Packet::CmdReady);
        u.host.send(Packet::Execute { cmd: 1 });
        assert!(matches!(
            u.host.packet(),
            Packet::ExecuteResp {
                cmd: 1,
                data_len: 4
            }
        ));
        u.host.send(Packet::ExecuteData { cmd: 1 });
        let mut serial = [0u8; 4];
        crate::transport::read_exact(&mut u.host.end, &mut serial, T).unwrap();
        u.host.send(Packet::SwitchMode { mode: 0 });
        assert!(matches!(u.host.packet(), Packet::Hello { .. }));
        u.host.hello_resp(0);
        assert_eq!(u.host.upload(prog), 0);
        u.host.send(Packet::Done);
        assert_eq!(u.host.packet(), Packet::DoneResp { status: 1 });
    }

    #[test]
    fn upload_over_a_packet_pipe_reaches_the_programmer() {
        let c = cfg("ec25", &[]);
        let prog = c.profile.programmer(1);
        let mut u = Unit::start(
            c,
            vec![],
            Framing::Packet {
                max_packet_size: 512,
            },
        );
        full_flash(&mut u, &prog);
        let text = u.host.text_until("</data>");
        assert!(text.contains("DOUBLE 0xcf94c64"), "{text}");
        assert_eq!(u.thread.join().unwrap(), RunOutcome::PoweredOff);
        assert_eq!(*u.served.lock().unwrap(), 1);
    }

    #[test]
    fn reset_to_edl_gives_a_fresh_hello_on_a_stream_pipe() {
        let c = cfg("rm520n", &[]);
        let prog = c.profile.programmer(2);
        let mut u = Unit::start(c, vec![ProgrammerExit::ResetToEdl], Framing::Stream);
        assert!(matches!(u.host.packet(), Packet::Hello { version: 3, .. }));
        u.host.hello_resp(0);
        assert_eq!(u.host.upload(&prog), 0);
        u.host.send(Packet::Done);
        assert_eq!(u.host.packet(), Packet::DoneResp { status: 1 });
        u.host.text_until("</data>");
        // Back in the boot ROM: a fresh HELLO, and a second upload works.
        assert!(matches!(u.host.packet(), Packet::Hello { mode: 0, .. }));
        u.host.hello_resp(0);
        assert_eq!(u.host.upload(&prog), 0);
        u.host.send(Packet::Done);
        assert_eq!(u.host.packet(), Packet::DoneResp { status: 1 });
        u.host.text_until("</data>");
        assert_eq!(u.thread.join().unwrap(), RunOutcome::PoweredOff);
        assert_eq!(*u.served.lock().unwrap(), 2);
    }

    #[test]
    fn stop_flag_ends_an_idle_runner_promptly() {
        let u = Unit::start(cfg("ec25", &[]), vec![], Framing::Stream);
        std::thread::sleep(Duration::from_millis(100));
        let t = Instant::now();
        assert_eq!(u.finish(), RunOutcome::Stopped);
        assert!(t.elapsed() < Duration::from_millis(500));
    }

    #[test]
    fn host_going_away_is_link_lost() {
        let u = Unit::start(cfg("ec25", &[]), vec![], Framing::Stream);
        let Unit { host, thread, .. } = u;
        drop(host);
        assert_eq!(thread.join().unwrap(), RunOutcome::LinkLost);
    }

    #[test]
    fn drop_after_cuts_both_sides() {
        let c = cfg("ec25", &["drop-after:1000"]);
        let prog = c.profile.programmer(1);
        let mut u = Unit::start(
            c,
            vec![],
            Framing::Packet {
                max_packet_size: 512,
            },
        );
        assert!(matches!(u.host.packet(), Packet::Hello { .. }));
        u.host.hello_resp(0);
        // The host serves requests until its link breaks.
        let mut err = None;
        for _ in 0..100 {
            let mut b = [0u8; 64];
            match u.host.end.read(&mut b, T) {
                Ok(n) => {
                    if let Ok((Packet::ReadData { offset, length, .. }, _)) = Packet::parse(&b[..n])
                    {
                        let s = &prog[offset as usize..(offset + length) as usize];
                        if let Err(e) = u.host.end.write(s, T) {
                            err = Some(e);
                            break;
                        }
                    }
                }
                Err(e) => {
                    err = Some(e);
                    break;
                }
            }
        }
        assert!(
            matches!(err, Some(TransportError::Disconnected(_))),
            "{err:?}"
        );
        assert_eq!(u.thread.join().unwrap(), RunOutcome::LinkDropped);
    }

    #[test]
    fn drop_after_without_a_number_is_seeded() {
        let mut a = FaultPlan::new(vec![Fault::DropAfter(None)], 42);
        let mut b = FaultPlan::new(vec![Fault::DropAfter(None)], 42);
        assert_eq!(a.drop_after(64..1000), b.drop_after(64..1000));
    }

    #[test]
    fn consume_hello_answers_an_unsolicited_hello_resp() {
        let mut u = Unit::start(cfg("ec25", &["consume-hello"]), vec![], Framing::Stream);
        let mut b = [0u8; 64];
        assert!(u
            .host
            .end
            .read(&mut b, Duration::from_millis(300))
            .unwrap_err()
            .is_timeout());
        u.host.hello_resp(0);
        assert!(matches!(
            u.host.packet(),
            Packet::ReadData {
                offset: 0,
                length: 0x34,
                ..
            }
        ));
        assert_eq!(u.finish(), RunOutcome::Stopped);
    }

    #[test]
    fn mid_session_sends_end_of_image_then_recovers_on_reset() {
        let mut u = Unit::start(cfg("ec25", &["mid-session:0"]), vec![], Framing::Stream);
        assert_eq!(
            u.host.packet(),
            Packet::EndOfImage {
                image_id: 13,
                status: 0x16
            }
        );
        u.host.send(Packet::Reset);
        assert_eq!(u.host.packet(), Packet::ResetResp);
        assert!(matches!(u.host.packet(), Packet::Hello { mode: 0, .. }));
        assert_eq!(u.finish(), RunOutcome::Stopped);
    }

    #[test]
    fn refuse_programmer_and_done_pending() {
        let c = cfg("ec25", &["refuse-programmer"]);
        let prog = c.profile.programmer(1);
        let mut u = Unit::start(c, vec![], Framing::Stream);
        u.host.packet();
        u.host.hello_resp(0);
        assert_eq!(u.host.upload(&prog), 0x25);
        assert_eq!(u.finish(), RunOutcome::Stopped);

        let c = cfg("ec25", &["done-pending"]);
        let prog = c.profile.programmer(1);
        let mut u = Unit::start(c, vec![], Framing::Stream);
        u.host.packet();
        u.host.hello_resp(0);
        assert_eq!(u.host.upload(&prog), 0);
        u.host.send(Packet::Done);
        assert_eq!(u.host.packet(), Packet::DoneResp { status: 0 });
        u.host.text_until("DOUBLE");
        assert_eq!(u.thread.join().unwrap(), RunOutcome::PoweredOff);
    }

    #[test]
    fn delay_fault_slows_answers() {
        let mut u = Unit::start(cfg("ec25", &["delay:60"]), vec![], Framing::Stream);
        u.host.packet();
        let t = Instant::now();
        u.host.hello_resp(3);
        assert_eq!(u.host.packet(), Packet::CmdReady);
        assert!(t.elapsed() >= Duration::from_millis(60));
        assert_eq!(u.finish(), RunOutcome::Stopped);
    }

    #[test]
    fn hung_programmer_keeps_the_link_silent_until_stopped() {
        let c = cfg("ec25", &[]);
        let prog = c.profile.programmer(1);
        let mut u = Unit::start(c, vec![ProgrammerExit::Hung], Framing::Stream);
        full_flash(&mut u, &prog);
        u.host.text_until("</data>");
        u.host.end.write(b"<?xml?><data><nop/></data>", T).unwrap();
        let mut b = [0u8; 64];
        assert!(u
            .host
            .end
            .read(&mut b, Duration::from_millis(300))
            .unwrap_err()
            .is_timeout());
        assert_eq!(u.finish(), RunOutcome::Stopped);
    }

    #[test]
    fn crash_dump_unit_dumps_and_reboots() {
        let c = cfg("ec25-crash", &[]);
        let mut u = Unit::start(c, vec![], Framing::Stream);
        assert!(matches!(u.host.packet(), Packet::Hello { mode: 2, .. }));
        u.host.hello_resp(2);
        let (addr, len) = match u.host.packet() {
            Packet::MemoryDebug {
                table_addr,
                table_len,
            } => (table_addr, table_len),
            p => panic!("{p:?}"),
        };
        u.host.send(Packet::MemoryRead { addr, len });
        let mut table = vec![0u8; len as usize];
        crate::transport::read_exact(&mut u.host.end, &mut table, T).unwrap();
        let ddr_base = u32::from_le_bytes(table[4..8].try_into().unwrap());
        u.host.send(Packet::MemoryRead {
            addr: ddr_base,
            len: 0x80000,
        });
        let mut block = vec![0u8; 0x80000];
        crate::transport::read_exact(&mut u.host.end, &mut block, T).unwrap();
        u.host.send(Packet::Reset);
        assert_eq!(u.host.packet(), Packet::ResetResp);
        assert_eq!(u.thread.join().unwrap(), RunOutcome::Rebooted);
    }

    #[test]
    fn programmer_for_a_different_unit_is_refused_end_to_end() {
        let c = DeviceConfig::new(Profile::by_name("ec25").unwrap().for_unit(3));
        let other = Profile::by_name("ec25").unwrap().for_unit(4);
        let prog =
            elf::generate_programmer(&other.identity.pk_hash, 50_000, elf::ElfClass::Elf32, 1);
        let mut u = Unit::start(c, vec![], Framing::Stream);
        u.host.packet();
        u.host.hello_resp(0);
        assert_eq!(u.host.upload(&prog), 0x25);
        assert_eq!(u.finish(), RunOutcome::Stopped);
    }
}
