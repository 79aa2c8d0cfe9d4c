//! Emulated enumeration: one emulated unit that appears on the emulated bus ([`UsbHub`]) as a new
//! pty, serves Sahara (and Firehose after an upload) while it is there, and vanishes — once, or
//! again and again in a boot loop ([`BootLoop`]: it appears every PERIOD and stays WINDOW).
//! With [`Schedule::normal`] (or [`Schedule::normal_first`]) the unit first boots from its
//! storage: in normal mode when the storage boots ([`super::normal::boot`]), serving its DM, NMEA,
//! AT and modem ports on four ptys, until a host switches it to its boot ROM (DIAG `4B 65 01 00`:
//! 05c6:9008 [`SWITCH_GAP`] after the command, on the high-speed bus: see [`run_on_usb`]).
//!
//! Each appearance is a fresh [`PtyDevice`] with a fresh boot ROM (a fresh HELLO); the storage
//! behind the programmer persists, like a real unit's flash. When an appearance ends, the pty is
//! closed first (a host mid-transfer sees the link drop, as with a pulled cable), then the
//! `Vanish` is published. The previous ptys' numbers stay taken ([`PtyDevice::keep_number`]), so
//! consecutive appearances never share a path.

use std::collections::VecDeque;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::device::sim_wire::BootLoopInfo;
use crate::device::DeviceEvent;
use crate::transport::pty::PtyDevice;
use crate::transport::TransportError;

use super::device::{self, DeviceConfig, RunOutcome};
use super::hub::UsbHub;
use super::normal::{self, ports, ports::NormalExit};
use super::stoplink::StopLink;
use super::usb_ids;
use super::AfterUpload;

/// `--boot-loop PERIOD:WINDOW`: the unit appears every `period` and stays `window` (< period).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BootLoop {
    pub period: Duration,
    pub window: Duration,
}

/// Shortest accepted window and gap (anything shorter is below what a host can even notice).
const MIN_SPAN: Duration = Duration::from_millis(1);
/// Longest accepted period: one day.
const MAX_PERIOD: Duration = Duration::from_secs(86_400);

fn seconds(what: &str, text: &str) -> Result<Duration, String> {
    let v: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{what} '{text}' is not a number of seconds (e.g. 10 or 0.8)"))?;
    if !v.is_finite() || v <= 0.0 {
        return Err(format!(
            "{what} must be a positive number of seconds, not '{text}'"
        ));
    }
    if v > MAX_PERIOD.as_secs_f64() {
        return Err(format!("{what} of {v} s is longer than a day"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl FromStr for BootLoop {
    type Err = String;

    fn from_str(spec: &str) -> Result<Self, Self::Err> {
        let (p, w) = spec.split_once(':').ok_or_else(|| {
            format!(
                "expected PERIOD:WINDOW in seconds, e.g. 10:4 (appears every 10 s, stays 4 s), not '{spec}'"
            )
        })?;
        let period = seconds("PERIOD", p)?;
        let window = seconds("WINDOW", w)?;
        if window >= period {
            return Err(format!(
                "WINDOW ({} s) must be shorter than PERIOD ({} s): the modem has to be gone for a while before it comes back",
                window.as_secs_f64(),
                period.as_secs_f64()
            ));
        }
        if window < MIN_SPAN || period - window < MIN_SPAN {
            return Err("WINDOW and PERIOD - WINDOW must each be at least 1 ms".into());
        }
        Ok(BootLoop { period, window })
    }
}

/// Parse a positive number of seconds (fractions allowed, at most a day), e.g. for
/// `qrescue sim --normal-for SECONDS`.
pub fn parse_seconds(text: &str) -> Result<Duration, String> {
    let d = seconds("SECONDS", text)?;
    if d < MIN_SPAN {
        return Err("SECONDS must be at least 0.001".into());
    }
    Ok(d)
}

/// How long a unit is off the bus while it switches from normal mode to its boot ROM. The real
/// RG500Q in QFirehose's log: the switch command at 2.271 s, its SuperSpeed node 4-1 gone at
/// 3.272 s, 05c6:9008 found at 3-1 at 4.273 s (../realdata/logs, PROTOCOLS.md §5.2).
pub const SWITCH_GAP: Duration = Duration::from_secs(2);

/// How long a normal-mode unit stays on the bus after a host commanded a switch or reset (its
/// ports still open, answering nothing more), so the host reads the echo: the RG500Q's node went
/// 1.0 s after the command in the same log. A commanded switch then stays off the bus for
/// `SWITCH_GAP - SWITCH_LINGER`, so 9008 appears [`SWITCH_GAP`] after the command.
pub const SWITCH_LINGER: Duration = Duration::from_secs(1);

/// How long switches and reboots keep the unit off the bus ([`Schedule::switch`]): the real
/// [`SWITCH_GAP`] and [`SWITCH_LINGER`] by default; tests scale them down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SwitchTiming {
    /// From a host's switch command to the boot ROM's appearance (and, minus `linger`, the time
    /// off the bus during a reboot).
    pub gap: Duration,
    /// How long the normal-mode unit stays on the bus after a host's command.
    pub linger: Duration,
}

impl Default for SwitchTiming {
    fn default() -> Self {
        SwitchTiming {
            gap: SWITCH_GAP,
            linger: SWITCH_LINGER,
        }
    }
}

impl SwitchTiming {
    /// A tenth of the real timing, for tests and rehearsals.
    pub fn quick() -> SwitchTiming {
        SwitchTiming {
            gap: SWITCH_GAP / 10,
            linger: SWITCH_LINGER / 10,
        }
    }

    /// Off the bus during a reboot (or after a commanded switch, once the linger is over).
    fn off(&self) -> Duration {
        self.gap.saturating_sub(self.linger)
    }
}

impl BootLoop {
    /// As announced in the socket header.
    pub fn info(&self) -> BootLoopInfo {
        BootLoopInfo {
            period_ms: u64::try_from(self.period.as_millis()).unwrap_or(u64::MAX),
            window_ms: u64::try_from(self.window.as_millis()).unwrap_or(u64::MAX),
        }
    }
}

/// What happens on the emulated bus, for the caller to print or record.
#[derive(Debug)]
pub enum UsbNotice<'a> {
    /// Appearance number `index` (from 0) on `pty`.
    Appear {
        index: u64,
        pty: &'a Path,
        event: &'a DeviceEvent,
    },
    /// The unit appeared in normal mode, serving its DM, NMEA, AT and modem ports on ptys (their
    /// paths are the `tty` of interfaces 0..3 in the event's snapshot).
    NormalAppear { event: &'a DeviceEvent },
    /// A host made the normal-mode unit switch to its boot ROM, reset or power down (it leaves
    /// the bus [`SWITCH_LINGER`] later).
    NormalEnded(NormalExit),
    /// The normal-mode unit left the bus (its ptys are closed).
    NormalVanish { event: &'a DeviceEvent },
    /// The unit's run ended on its own while it was present (powered off, link dropped, crash
    /// unit reset), not by the window closing or a stop.
    Ended(RunOutcome),
    /// The appearance on `pty` is over; its pty is already closed.
    Vanish {
        index: u64,
        pty: &'a Path,
        event: &'a DeviceEvent,
    },
}

/// How [`run_on_usb`] schedules appearances.
#[derive(Debug, Clone, Copy, Default)]
pub struct Schedule {
    /// `None`: one appearance that lasts until stopped.
    pub boot_loop: Option<BootLoop>,
    /// Stop after this many appearances (benchmarks, tests); `None`: until stopped.
    pub limit: Option<u64>,
    /// Boot first from storage (as [`Schedule::normal`]), and if the unit comes up in normal
    /// mode, switch to the boot ROM by itself after this long (vanish, then the schedule above
    /// [`SWITCH_GAP`] later), unless a host commands it earlier.
    pub normal_first: Option<Duration>,
    /// Boot from the programmer's storage ([`AfterUpload::boot_storage`], the factory firmware
    /// without one): normal mode when it boots ([`super::normal::boot`]), serving ports until a
    /// host switches it to EDL, resets it (normal mode again) or powers it down; the boot ROM
    /// otherwise. A programmer `<power value="reset"/>` boots from storage again. A profile
    /// without a normal-mode description never boots to normal mode.
    pub normal: bool,
    /// A crashing firmware (implies [`Schedule::normal`]): the modem image the storage holds at
    /// the start crashes this long after every boot to normal mode — the unit drops off the bus
    /// and comes back in its crash-dump personality (05c6:900e) [`SwitchTiming::gap`] later —
    /// unless a host switches it to EDL first (DIAG `4B 65 01 00`). A RAM dump's reset boots
    /// it from storage again. A flash that rewrites the modem image cures it.
    pub crash_after: Option<Duration>,
    /// Switch and reboot times (the real ones by default).
    pub switch: SwitchTiming,
}

/// How many retired pty numbers stay taken (a normal-mode appearance retires four).
const KEEP_NUMBERS: usize = 6;

pub(crate) struct Appearance {
    pub(crate) index: u64,
    pub(crate) pty: PtyDevice,
    pub(crate) path: PathBuf,
    pub(crate) location: String,
}

pub(crate) struct Bus<'a> {
    pub(crate) hub: &'a UsbHub,
    /// The unit as it enumerates next (EDL or crash-dump personality, USB ids).
    pub(crate) profile: &'a super::profile::Profile,
    next_address: u8,
    kept: VecDeque<OwnedFd>,
    /// How long a normal-mode unit stays after a host's command ([`SwitchTiming::linger`]).
    linger: Duration,
}

impl<'a> Bus<'a> {
    pub(crate) fn new(hub: &'a UsbHub, profile: &'a super::profile::Profile) -> Self {
        Bus {
            hub,
            profile,
            next_address: 2,
            kept: VecDeque::new(),
            linger: SWITCH_LINGER,
        }
    }

    /// Device numbers count up at every enumeration on a real bus (1 is the root hub).
    pub(crate) fn next_address(&mut self) -> u8 {
        let address = self.next_address;
        self.next_address = if address >= 127 { 2 } else { address + 1 };
        address
    }

    fn keep(&mut self, pty: &PtyDevice) {
        match pty.keep_number() {
            Ok(fd) => {
                self.kept.push_back(fd);
                if self.kept.len() > KEEP_NUMBERS {
                    self.kept.pop_front();
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not keep the pty number"),
        }
    }

    /// Boot from `storage`: `None` when the unit does not come up in normal mode; otherwise the
    /// unit in normal mode, serving its ports until an exit (`stay` bounds it), then off the bus
    /// (after [`SWITCH_LINGER`] when a host commanded the exit).
    fn normal_mode(
        &mut self,
        storage: Option<&super::firehose::storage::Storage>,
        usbnet: &mut u8,
        stay: Option<Duration>,
        stop: &AtomicBool,
        notify: &mut dyn FnMut(UsbNotice),
    ) -> Result<Option<NormalExit>, TransportError> {
        let boot = match storage {
            Some(s) => normal::boot(s, self.profile),
            None => match normal::state::factory_boot(self.profile) {
                Some(b) => normal::Boot::Normal(Box::new(b)),
                None => normal::Boot::BootRom {
                    why: "no application firmware for this model".into(),
                },
            },
        };
        let booted = match boot {
            normal::Boot::Normal(b) => *b,
            normal::Boot::BootRom { why } => {
                tracing::info!(%why, "the unit does not boot to normal mode");
                return Ok(None);
            }
        };
        let address = self.next_address();
        let Some(mut snapshot) = ports::normal_snapshot(self.profile, address, *usbnet) else {
            return Ok(None);
        };
        let mut ptys = ports::NormalPtys::open()?;
        ptys.annotate(&mut snapshot);
        let location = snapshot.location();
        let event = self.hub.appear(snapshot);
        notify(UsbNotice::NormalAppear { event: &event });
        let mut unit = normal::at::ModemState::for_unit(self.profile, booted, *usbnet);
        let opts = ports::ServeOptions {
            deadline: stay.map(|d| Instant::now() + d),
            ..ports::ServeOptions::default()
        };
        let exit = ports::serve_ports(ptys.ports(), &mut unit, stop, &opts);
        *usbnet = unit.usbnet;
        if matches!(
            exit,
            NormalExit::SwitchToEdl | NormalExit::Reset | NormalExit::PowerDown
        ) {
            notify(UsbNotice::NormalEnded(exit));
            sleep_until(Instant::now() + self.linger, stop);
        }
        for (_, _, pty) in &ptys.ptys {
            self.keep(pty);
        }
        // Close the ptys before announcing: whoever sees the vanish finds the ports gone.
        drop(ptys);
        if let Some(event) = self.hub.vanish(&location) {
            notify(UsbNotice::NormalVanish { event: &event });
        }
        Ok(Some(exit))
    }

    pub(crate) fn appear(
        &mut self,
        index: u64,
        notify: &mut dyn FnMut(UsbNotice),
    ) -> Result<Appearance, TransportError> {
        let pty = PtyDevice::open()?;
        let path = pty.slave_path().to_path_buf();
        let address = self.next_address();
        let snapshot = usb_ids::boot_rom_snapshot(self.profile, Some(&path), address);
        let location = snapshot.location();
        let event = self.hub.appear(snapshot);
        notify(UsbNotice::Appear {
            index,
            pty: &path,
            event: &event,
        });
        Ok(Appearance {
            index,
            pty,
            path,
            location,
        })
    }

    pub(crate) fn vanish(&mut self, a: Appearance, notify: &mut dyn FnMut(UsbNotice)) {
        self.keep(&a.pty);
        // Close the pty before announcing: whoever sees the vanish finds the port gone.
        drop(a.pty);
        if let Some(event) = self.hub.vanish(&a.location) {
            notify(UsbNotice::Vanish {
                index: a.index,
                pty: &a.path,
                event: &event,
            });
        }
    }
}

/// Serve one appearance until the unit's run ends, `stop` is set, or `deadline` passes. Returns
/// the run's outcome and whether the deadline ended it.
fn serve(
    pty: &mut PtyDevice,
    cfg: &mut DeviceConfig,
    programmer: &mut dyn AfterUpload,
    stop: &AtomicBool,
    deadline: Option<Instant>,
) -> (RunOutcome, bool) {
    let unit_stop = AtomicBool::new(false);
    let window_closed = AtomicBool::new(false);
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|s| {
        let (us, wc) = (&unit_stop, &window_closed);
        s.spawn(move || loop {
            if stop.load(Ordering::SeqCst) {
                us.store(true, Ordering::SeqCst);
                return;
            }
            let mut wait = Duration::from_millis(20);
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    wc.store(true, Ordering::SeqCst);
                    us.store(true, Ordering::SeqCst);
                    return;
                }
                wait = wait.min(left);
            }
            match done_rx.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
        });
        let outcome = {
            let mut link = StopLink::new(pty, &unit_stop);
            device::run(&mut link, cfg, programmer, &unit_stop)
        };
        drop(done_tx);
        (outcome, window_closed.load(Ordering::SeqCst))
    })
}

/// The first page of the modem image on `storage` (what a flash of the firmware rewrites).
fn modem_head(storage: Option<&super::firehose::storage::Storage>) -> Option<Vec<u8>> {
    let s = storage?;
    let r = normal::state::find_region(s, "modem")?;
    normal::state::read_region(s, &r, 4096)
}

pub(crate) fn sleep_until(t: Instant, stop: &AtomicBool) {
    while !stop.load(Ordering::SeqCst) {
        let left = t.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return;
        }
        std::thread::sleep(left.min(Duration::from_millis(20)));
    }
}

/// Run the unit of `cfg` on the emulated bus `hub` as `schedule` says, until `stop` is set (or
/// the schedule's limit is reached). `notify` hears every appearance, vanish and run end (the
/// library never prints). Returns the last run's own end (`Stopped` when it was stopped, or in a
/// boot loop), or the pty error that kept the unit from appearing.
///
/// Without a boot loop the unit appears once: a run that ends on its own is reported
/// ([`UsbNotice::Ended`]); after a lost or dropped link the unit vanishes (the pty closes),
/// otherwise it stays present, silent, until stopped — as `qrescue sim` always behaved. In a
/// boot loop, an appearance ends when its window closes or its run ends, whichever comes first.
///
/// With [`Schedule::normal`] or [`Schedule::normal_first`], the unit first boots from storage;
/// in normal mode it appears as its model's composite (SuperSpeed for RM5xx;
/// [`UsbNotice::NormalAppear`]) with its ports served on ptys. A host's DIAG EDL switch makes it
/// vanish [`SWITCH_LINGER`] later and come back [`SWITCH_GAP`] after the command in its boot ROM
/// on the high-speed bus — another location, as a USB 3 module re-enumerates as USB 2 in EDL
/// (PROTOCOLS.md §5.2); `normal_first`'s time running out does the same, [`SWITCH_GAP`] after
/// the vanish. `AT+CFUN=x,1` reboots it (off the bus for `SWITCH_GAP - SWITCH_LINGER`, then it
/// boots from storage again); `AT+QPOWD` ends the run ([`RunOutcome::PoweredOff`]). With
/// [`Schedule::normal`], a Firehose reset whose storage boots ends the boot-ROM appearance and
/// the unit comes up in normal mode the same way. With [`Schedule::crash_after`], a unit that
/// still runs its crashing modem image drops off the bus that long after booting and comes back
/// as 05c6:900e; the reset at the end of a RAM dump boots it again.
pub fn run_on_usb(
    cfg: &mut DeviceConfig,
    programmer: &mut dyn AfterUpload,
    hub: &UsbHub,
    schedule: Schedule,
    stop: &AtomicBool,
    notify: &mut dyn FnMut(UsbNotice),
) -> Result<RunOutcome, TransportError> {
    let mut profile = cfg.profile.clone();
    profile.personality = cfg.personality;
    profile.usb_pid = match cfg.personality {
        super::profile::Personality::Edl => 0x9008,
        super::profile::Personality::CrashDump => 0x900e,
    };
    let home = cfg.personality;
    let mut crash_profile = profile.clone();
    crash_profile.personality = super::profile::Personality::CrashDump;
    crash_profile.usb_pid = 0x900e;
    let normal = schedule.normal || schedule.crash_after.is_some();
    let timing = schedule.switch;
    let mut bus = Bus::new(hub, &profile);
    bus.linger = timing.linger;
    cfg.boot_from_storage |= normal;
    // The firmware that crashes: the modem image the storage holds now.
    let crashing = schedule
        .crash_after
        .map(|_| modem_head(programmer.boot_storage()));
    let mut usbnet = 0u8;
    let mut normal_stay = match (schedule.normal_first, normal) {
        (Some(d), _) => Some(Some(d)),
        (None, true) => Some(None),
        (None, false) => None,
    };
    // The next boot-ROM appearance is the crash-dump personality (after a crash).
    let mut crashed = false;
    let mut index = 0u64;
    loop {
        if let Some(stay) = normal_stay.take() {
            let crash = match (&crashing, schedule.crash_after) {
                (Some(head), Some(after)) if modem_head(programmer.boot_storage()) == *head => {
                    Some(after)
                }
                _ => None,
            };
            let stay = match (stay, crash) {
                (Some(s), Some(c)) => Some(s.min(c)),
                (s, c) => s.or(c),
            };
            let exit =
                bus.normal_mode(programmer.boot_storage(), &mut usbnet, stay, stop, notify)?;
            let off = match exit {
                None => Duration::ZERO,
                Some(NormalExit::Stopped) => return Ok(RunOutcome::Stopped),
                Some(NormalExit::PowerDown) => {
                    notify(UsbNotice::Ended(RunOutcome::PoweredOff));
                    if schedule.limit.is_none() {
                        sleep_until(Instant::now() + MAX_PERIOD, stop);
                    }
                    return Ok(RunOutcome::PoweredOff);
                }
                Some(NormalExit::Reset) => {
                    sleep_until(Instant::now() + timing.off(), stop);
                    normal_stay = Some(None);
                    if stop.load(Ordering::SeqCst) {
                        return Ok(RunOutcome::Stopped);
                    }
                    continue;
                }
                Some(NormalExit::SwitchToEdl) => timing.off(),
                Some(NormalExit::Deadline) => {
                    // The firmware crashed (or `normal_first` ran out): off the bus at once.
                    crashed = crash.is_some();
                    if crashed {
                        tracing::info!("the emulated firmware crashed: the unit comes back in its crash-dump personality");
                    }
                    timing.gap
                }
            };
            sleep_until(Instant::now() + off, stop);
            if stop.load(Ordering::SeqCst) {
                return Ok(RunOutcome::Stopped);
            }
        }
        if schedule.boot_loop.is_some() {
            break;
        }
        if crashed {
            bus.profile = &crash_profile;
            cfg.personality = super::profile::Personality::CrashDump;
        } else {
            bus.profile = &profile;
            cfg.personality = home;
        }
        crashed = false;
        let mut a = bus.appear(index, notify)?;
        index += 1;
        let outcome = match serve(&mut a.pty, cfg, programmer, stop, None).0 {
            _ if stop.load(Ordering::SeqCst) => RunOutcome::Stopped,
            o => o,
        };
        cfg.personality = home;
        if outcome == RunOutcome::Stopped {
            bus.vanish(a, notify);
            return Ok(outcome);
        }
        notify(UsbNotice::Ended(outcome));
        if outcome == RunOutcome::Rebooted && normal {
            // Out of the boot ROM: off the bus while it reboots, then up from storage.
            bus.vanish(a, notify);
            sleep_until(Instant::now() + timing.off(), stop);
            if stop.load(Ordering::SeqCst) {
                return Ok(RunOutcome::Stopped);
            }
            normal_stay = Some(None);
            continue;
        }
        let mut present = Some(a);
        if matches!(outcome, RunOutcome::LinkDropped | RunOutcome::LinkLost) {
            // Like a pulled cable: the port disappears for the host. The pty never reports a
            // host closing the slave, so a lost link here means the emulated device vanished
            // (e.g. drop-in-raw): the host must see it go, not wait for an answer.
            if let Some(a) = present.take() {
                bus.vanish(a, notify);
            }
        }
        if schedule.limit.is_none() {
            while !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if let Some(a) = present {
            bus.vanish(a, notify);
        }
        return Ok(outcome);
    }
    let Some(bl) = schedule.boot_loop else {
        return Ok(RunOutcome::Stopped);
    };
    let start = Instant::now();
    let mut index = 0u64;
    loop {
        if stop.load(Ordering::SeqCst) || schedule.limit.is_some_and(|l| index >= l) {
            return Ok(RunOutcome::Stopped);
        }
        // Appearances keep to the schedule (no drift); a late one starts at once.
        let due = start
            + bl.period
                .saturating_mul(u32::try_from(index).unwrap_or(u32::MAX));
        sleep_until(due, stop);
        if stop.load(Ordering::SeqCst) {
            return Ok(RunOutcome::Stopped);
        }
        let mut a = bus.appear(index, notify)?;
        let deadline = Instant::now() + bl.window;
        let (outcome, window_closed) = serve(&mut a.pty, cfg, programmer, stop, Some(deadline));
        if !stop.load(Ordering::SeqCst) && !window_closed && outcome != RunOutcome::Stopped {
            notify(UsbNotice::Ended(outcome));
        }
        bus.vanish(a, notify);
        index += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::{DeviceChange, DeviceSource};
    use crate::protocol::sahara::packet::Packet;
    use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
    use crate::sim::firehose::storage::StorageProfile;
    use crate::sim::profile::Profile;
    use crate::transport::serial::SerialTransport;
    use crate::transport::{read_exact, Transport};

    #[test]
    fn boot_loop_spec_parses_and_explains_mistakes() {
        let b: BootLoop = "1.2:0.8".parse().unwrap();
        assert_eq!(b.period, Duration::from_millis(1200));
        assert_eq!(b.window, Duration::from_millis(800));
        assert_eq!(
            b.info(),
            BootLoopInfo {
                period_ms: 1200,
                window_ms: 800
            }
        );
        assert!("10:4".parse::<BootLoop>().is_ok());
        for (bad, says) in [
            ("10", "PERIOD:WINDOW"),
            ("4:10", "shorter than PERIOD"),
            ("4:4", "shorter than PERIOD"),
            ("x:1", "not a number"),
            ("1:-0.5", "positive"),
            ("0:0", "positive"),
            ("inf:1", "positive"),
            ("NaN:1", "positive"),
            ("100000:1", "longer than a day"),
            ("1:0.9999", "at least 1 ms"),
        ] {
            let e = bad.parse::<BootLoop>().unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    fn programmer() -> Programmer {
        Programmer::new(
            &StorageProfile::by_name("nand-ec25e").unwrap(),
            ProgrammerOptions::default(),
        )
    }

    /// Answer the HELLO on `pty` and return the device's first answer.
    fn first_answer(pty: &str) -> Packet {
        let mut host = SerialTransport::open(Path::new(pty)).unwrap();
        let mut hello = [0u8; 48];
        read_exact(&mut host, &mut hello, Duration::from_secs(10)).unwrap();
        assert!(matches!(
            Packet::parse(&hello).unwrap().0,
            Packet::Hello { .. }
        ));
        let resp = Packet::HelloResp {
            version: 2,
            version_supported: 1,
            status: 0,
            mode: 0,
            reserved: [0; 6],
        };
        host.write(&resp.encode(), Duration::from_secs(10)).unwrap();
        let mut rd = [0u8; 20];
        read_exact(&mut host, &mut rd, Duration::from_secs(10)).unwrap();
        Packet::parse(&rd).unwrap().0
    }

    #[test]
    fn a_boot_loop_appears_and_vanishes_with_new_ptys_and_serves_each_time() {
        let hub = UsbHub::new();
        let mut src = hub.source();
        let profile = Profile::by_name("ec25").unwrap();
        let mut cfg = DeviceConfig::new(profile.clone());
        let stop = AtomicBool::new(false);
        // Windows long enough for a host on a loaded machine; nothing below depends on them.
        let schedule = Schedule {
            boot_loop: Some("0.6:0.5".parse().unwrap()),
            limit: Some(3),
            ..Schedule::default()
        };
        let host = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut answered = 0;
            while let Some(e) = src.next_event(Duration::from_secs(20)).unwrap() {
                if let DeviceChange::Appear { device } = &e.change {
                    let tty = device.interface(0).unwrap().tty.clone().unwrap();
                    if answered == 0 {
                        assert!(matches!(first_answer(&tty), Packet::ReadData { .. }));
                        answered += 1;
                    }
                }
                seen.push(e);
            }
            seen
        });
        let mut notices = Vec::new();
        let outcome = run_on_usb(
            &mut cfg,
            &mut programmer(),
            &hub,
            schedule,
            &stop,
            &mut |n| {
                notices.push(match n {
                    UsbNotice::Appear { index, pty, .. } => {
                        format!("appear {index} {}", pty.display())
                    }
                    UsbNotice::Vanish { index, pty, .. } => {
                        format!("vanish {index} {}", pty.display())
                    }
                    UsbNotice::Ended(o) => format!("ended {o:?}"),
                    UsbNotice::NormalAppear { .. }
                    | UsbNotice::NormalVanish { .. }
                    | UsbNotice::NormalEnded(_) => "normal".into(),
                })
            },
        )
        .unwrap();
        hub.close();
        assert_eq!(outcome, RunOutcome::Stopped);
        let seen = host.join().unwrap();
        let appear: Vec<_> = seen
            .iter()
            .filter(|e| matches!(e.change, DeviceChange::Appear { .. }))
            .collect();
        assert_eq!(appear.len(), 3);
        assert_eq!(seen.len(), 6);
        for (i, e) in seen.iter().enumerate() {
            assert_eq!(matches!(e.change, DeviceChange::Appear { .. }), i % 2 == 0);
            assert_eq!(e.location(), seen[0].location());
        }
        assert!(seen.windows(2).all(|w| w[0].t_ms <= w[1].t_ms));
        let ttys: Vec<_> = appear
            .iter()
            .map(|e| match &e.change {
                DeviceChange::Appear { device } => {
                    (device.interface(0).unwrap().tty.clone(), device.address)
                }
                _ => unreachable!(),
            })
            .collect();
        assert!(ttys.windows(2).all(|w| w[0] != w[1]), "{ttys:?}");
        // Every pty is gone once its appearance is over.
        for (tty, _) in &ttys {
            assert!(!Path::new(tty.as_ref().unwrap()).exists());
        }
        assert_eq!(notices.len(), 6, "{notices:?}");
        assert!(notices[0].starts_with("appear 0 ") && notices[5].starts_with("vanish 2 "));
    }

    #[test]
    fn normal_first_switches_to_edl_on_the_high_speed_bus_and_stays_one_device() {
        use crate::device::monitor::Monitor;
        use crate::sim::usb_ids::{SIM_BUS, SIM_BUS_SUPER};
        let hub = UsbHub::new();
        let mut src = hub.source();
        let mut cfg = DeviceConfig::new(Profile::by_name("rm502q").unwrap().for_unit(4));
        let mut programmer = programmer();
        normal::seed_factory(programmer.storage_mut(), &cfg.profile).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        // Stop once the unit is back in EDL; collect everything until the hub closes.
        let watcher = std::thread::spawn(move || {
            let mut seen = Vec::new();
            while let Some(e) = src.next_event(Duration::from_secs(20)).unwrap() {
                if let DeviceChange::Appear { device } = &e.change {
                    if device.id() == "05c6:9008" {
                        s2.store(true, Ordering::SeqCst);
                    }
                }
                seen.push(e);
            }
            seen
        });
        let schedule = Schedule {
            normal_first: Some(Duration::from_millis(50)),
            ..Schedule::default()
        };
        let mut notices = Vec::new();
        let outcome = run_on_usb(&mut cfg, &mut programmer, &hub, schedule, &stop, &mut |n| {
            notices.push(match n {
                UsbNotice::NormalAppear { .. } => "normal appear",
                UsbNotice::NormalEnded(_) => "normal ended",
                UsbNotice::NormalVanish { .. } => "normal vanish",
                UsbNotice::Appear { .. } => "appear",
                UsbNotice::Vanish { .. } => "vanish",
                UsbNotice::Ended(_) => "ended",
            })
        })
        .unwrap();
        hub.close();
        assert_eq!(outcome, RunOutcome::Stopped);
        assert_eq!(
            notices,
            ["normal appear", "normal vanish", "appear", "vanish"]
        );
        let seen = watcher.join().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        let DeviceChange::Appear { device: normal } = &seen[0].change else {
            panic!("{seen:?}")
        };
        let DeviceChange::Appear { device: edl } = &seen[2].change else {
            panic!("{seen:?}")
        };
        assert_eq!(normal.id(), "2c7c:0800");
        assert_eq!(normal.bus, SIM_BUS_SUPER);
        // DM, NMEA, AT and modem are served, each on its own pty.
        let ttys: Vec<_> = normal
            .interfaces
            .iter()
            .filter_map(|i| i.tty.clone())
            .collect();
        assert_eq!(ttys.len(), 4);
        assert!(
            ttys.iter().all(|t| !Path::new(t).exists()),
            "closed after the switch"
        );
        assert_eq!(edl.id(), "05c6:9008");
        assert_eq!((edl.bus, &edl.ports), (SIM_BUS, &normal.ports));
        assert_ne!(edl.location(), normal.location());
        assert!(edl.interface(0).unwrap().tty.is_some());
        // Off the bus for the whole switch gap (a lower bound: sleeping guarantees it).
        assert!(seen[2].t_ms - seen[1].t_ms >= SWITCH_GAP.as_millis() as u64);
        let mut m = Monitor::default();
        let ups: Vec<_> = seen.iter().map(|e| m.observe(e)).collect();
        assert!(ups.iter().all(|u| u.id == ups[0].id && u.id.is_some()));
        assert!(
            matches!(
                ups[2].matched.rule,
                crate::device::identity::MatchRule::CompanionPort { .. }
            ),
            "{:?}",
            ups[2].matched
        );
    }

    #[test]
    fn the_diag_edl_command_on_the_dm_pty_switches_the_unit_to_9008() {
        use crate::device::classify::{classify, PortRole};
        let hub = UsbHub::new();
        let mut src = hub.source();
        let mut cfg = DeviceConfig::new(Profile::by_name("ec25").unwrap().for_unit(6));
        let mut programmer = programmer();
        normal::seed_factory(programmer.storage_mut(), &cfg.profile).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (s2, clock) = (stop.clone(), hub.clone());
        let host = std::thread::spawn(move || {
            let mut seen = Vec::new();
            let mut commanded_at = None;
            while let Some(e) = src.next_event(Duration::from_secs(20)).unwrap() {
                if let DeviceChange::Appear { device } = &e.change {
                    if device.id() == "2c7c:0125" {
                        let c = classify(device);
                        let at = c.port(PortRole::At).unwrap().tty.clone().unwrap();
                        let mut at = SerialTransport::open(Path::new(&at)).unwrap();
                        let mut urcs = [0u8; 7];
                        read_exact(&mut at, &mut urcs, Duration::from_secs(10)).unwrap();
                        assert_eq!(&urcs, b"\r\nRDY\r\n");
                        let dm = c.port(PortRole::Dm).unwrap().tty.clone().unwrap();
                        let mut dm = SerialTransport::open(Path::new(&dm)).unwrap();
                        commanded_at = Some(clock.t_ms());
                        let edl = [0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E];
                        dm.write(&edl, Duration::from_secs(10)).unwrap();
                        let mut echo = [0u8; 7];
                        read_exact(&mut dm, &mut echo, Duration::from_secs(10)).unwrap();
                        assert_eq!(echo, edl);
                    }
                    if device.id() == "05c6:9008" {
                        s2.store(true, Ordering::SeqCst);
                    }
                }
                seen.push(e);
            }
            (seen, commanded_at.unwrap())
        });
        let schedule = Schedule {
            normal: true,
            ..Schedule::default()
        };
        let mut notices = Vec::new();
        let outcome = run_on_usb(&mut cfg, &mut programmer, &hub, schedule, &stop, &mut |n| {
            notices.push(match n {
                UsbNotice::NormalAppear { .. } => "normal appear".to_string(),
                UsbNotice::NormalEnded(e) => format!("normal ended {e:?}"),
                UsbNotice::NormalVanish { .. } => "normal vanish".into(),
                UsbNotice::Appear { .. } => "appear".into(),
                UsbNotice::Vanish { .. } => "vanish".into(),
                UsbNotice::Ended(o) => format!("ended {o:?}"),
            })
        })
        .unwrap();
        hub.close();
        assert_eq!(outcome, RunOutcome::Stopped);
        assert_eq!(
            notices,
            [
                "normal appear",
                "normal ended SwitchToEdl",
                "normal vanish",
                "appear",
                "vanish"
            ]
        );
        let (seen, commanded_at) = host.join().unwrap();
        assert_eq!(seen.len(), 4, "{seen:?}");
        let DeviceChange::Appear { device: edl } = &seen[2].change else {
            panic!("{seen:?}")
        };
        assert_eq!(edl.id(), "05c6:9008");
        // Lower bounds only (the sleeps guarantee them): on the bus until SWITCH_LINGER after
        // the command, 9008 no sooner than SWITCH_GAP after it.
        assert!(seen[1].t_ms >= commanded_at + SWITCH_LINGER.as_millis() as u64);
        assert!(seen[2].t_ms >= commanded_at + SWITCH_GAP.as_millis() as u64);
    }

    #[test]
    fn a_crashing_firmware_boots_to_normal_mode_then_drops_to_900e() {
        let hub = UsbHub::new();
        let mut src = hub.source();
        let mut cfg = DeviceConfig::new(Profile::by_name("ec25").unwrap().for_unit(8));
        let mut programmer = programmer();
        normal::seed_factory(programmer.storage_mut(), &cfg.profile).unwrap();
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let watcher = std::thread::spawn(move || {
            let mut ids = Vec::new();
            while let Some(e) = src.next_event(Duration::from_secs(20)).unwrap() {
                if let DeviceChange::Appear { device } = &e.change {
                    ids.push(device.id());
                    if device.id() == "05c6:900e" {
                        s2.store(true, Ordering::SeqCst);
                    }
                }
            }
            ids
        });
        let schedule = Schedule {
            crash_after: Some(Duration::from_millis(30)),
            switch: SwitchTiming::quick(),
            ..Schedule::default()
        };
        let outcome = run_on_usb(
            &mut cfg,
            &mut programmer,
            &hub,
            schedule,
            &stop,
            &mut |_| {},
        )
        .unwrap();
        hub.close();
        assert_eq!(outcome, RunOutcome::Stopped);
        assert_eq!(watcher.join().unwrap(), ["2c7c:0125", "05c6:900e"]);
        // The unit keeps its own personality for the next run.
        assert_eq!(cfg.personality, crate::sim::profile::Personality::Edl);
    }

    #[test]
    fn an_unbootable_storage_comes_up_in_the_boot_rom_directly() {
        let hub = UsbHub::new();
        let mut src = hub.source();
        let mut cfg = DeviceConfig::new(Profile::by_name("ec25").unwrap());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let watcher = std::thread::spawn(move || {
            let first = src.next_event(Duration::from_secs(20)).unwrap().unwrap();
            s2.store(true, Ordering::SeqCst);
            first
        });
        let schedule = Schedule {
            normal: true,
            ..Schedule::default()
        };
        // Erased storage: no boot chain.
        run_on_usb(
            &mut cfg,
            &mut programmer(),
            &hub,
            schedule,
            &stop,
            &mut |_| {},
        )
        .unwrap();
        let first = watcher.join().unwrap();
        let DeviceChange::Appear { device } = &first.change else {
            panic!("{first:?}")
        };
        assert_eq!(device.id(), "05c6:9008");
    }

    #[test]
    fn a_single_appearance_lasts_until_stopped_and_then_vanishes() {
        let hub = UsbHub::new();
        let mut src = hub.source();
        let mut cfg = DeviceConfig::new(Profile::by_name("rm502q-crash").unwrap());
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let watcher = std::thread::spawn(move || {
            let first = src.next_event(Duration::from_secs(20)).unwrap().unwrap();
            let device = match &first.change {
                DeviceChange::Appear { device } => device.clone(),
                c => panic!("{c:?}"),
            };
            s2.store(true, Ordering::SeqCst);
            let second = src.next_event(Duration::from_secs(20)).unwrap().unwrap();
            (device, second)
        });
        let outcome = run_on_usb(
            &mut cfg,
            &mut programmer(),
            &hub,
            Schedule::default(),
            &stop,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(outcome, RunOutcome::Stopped);
        let (device, second) = watcher.join().unwrap();
        assert_eq!(device.id(), "05c6:900e");
        assert!(matches!(second.change, DeviceChange::Vanish { .. }));
        assert!(hub.present().is_empty());
    }
}
