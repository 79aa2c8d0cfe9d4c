//! Serving a normal-mode unit's ports over any [`Transport`]s: ptys (one per interface, like
//! `/dev/ttyUSB0..3`) or in-process pipe ends.
//!
//! - [`serve_ports`]: one thread per port (DM → [`DiagPort`], AT and modem → [`AtPort`]s sharing
//!   the unit's [`ModemState`], NMEA → read and discarded: GNSS is off, so a real module prints
//!   nothing there), until a host commands a switch, reset or power-down, a deadline passes or
//!   the unit is stopped. The AT port gets the boot URCs first.
//! - [`NormalPtys`]: the four ptys, with their paths written into the normal-mode
//!   [`DeviceSnapshot`] ([`InterfaceSnapshot::tty`] of interfaces 0..3), so
//!   `crate::device::classify` finds the DM and AT ports by interface number.
//! - [`InProcessNormal`]: a normal-mode unit on a thread with pipe ends for the host.
//! - [`normal_snapshot`]: the composite as enumerated, with the `AT+QCFG="usbnet"` network
//!   function.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::device::classify::PortRole;
use crate::device::{DeviceSnapshot, EndpointSnapshot, InterfaceSnapshot, TransferType};
use crate::sim::profile::Profile;
use crate::sim::usb_ids;
use crate::transport::pipe::{self, PipeEnd};
use crate::transport::pty::PtyDevice;
use crate::transport::{Framing, Transport, TransportError};

use super::at::{boot_urcs, AtEffect, AtPort, ModemState};
use super::diag::{DiagEffect, DiagPort};
use super::state::NormalBoot;

/// Why a normal-mode appearance ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum NormalExit {
    /// DIAG `4B 65 01 00`: the unit resets into its boot ROM (05c6:9008).
    SwitchToEdl,
    /// `AT+CFUN=<fun>,1`: the unit reboots (normal mode again if its storage boots).
    Reset,
    /// `AT+QPOWD`: the unit is off.
    PowerDown,
    /// The deadline given to [`serve_ports`] passed.
    Deadline,
    /// The stop flag was set, or every port's host side is gone.
    Stopped,
}

/// How [`serve_ports`] runs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    /// Longest single read (bounds how long a stop goes unnoticed).
    pub poll: Duration,
    /// Bound of each write; a host that does not read loses the bytes (logged).
    pub write_timeout: Duration,
    /// Print `RDY` and the other boot URCs on the AT port first.
    pub boot_urcs: bool,
    /// End with [`NormalExit::Deadline`] at this instant.
    pub deadline: Option<Instant>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            poll: Duration::from_millis(20),
            write_timeout: Duration::from_secs(1),
            boot_urcs: true,
            deadline: None,
        }
    }
}

/// One port of the unit: its role and the device side of its link.
pub struct Port<'a> {
    pub role: PortRole,
    pub link: &'a mut dyn Transport,
}

enum Responder {
    Dm(DiagPort),
    At(AtPort),
    Sink,
}

fn write(link: &mut dyn Transport, bytes: &[u8], timeout: Duration) -> Result<(), ()> {
    if bytes.is_empty() {
        return Ok(());
    }
    match link.write(bytes, timeout) {
        Ok(()) => Ok(()),
        Err(TransportError::Timeout { .. }) => {
            tracing::debug!(
                len = bytes.len(),
                "host did not read the emulated port; bytes dropped"
            );
            Ok(())
        }
        Err(_) => Err(()),
    }
}

/// Serve `ports` for `unit` until an exit (see [`NormalExit`]). The answer that causes an exit
/// is written before this returns; the caller keeps the links open a moment so a host can read it
/// (a real module echoes the EDL switch and leaves the bus about a second later).
pub fn serve_ports(
    ports: Vec<Port<'_>>,
    unit: &mut ModemState,
    stop: &AtomicBool,
    opts: &ServeOptions,
) -> NormalExit {
    let shared = Mutex::new(unit.clone());
    let exit: Mutex<Option<NormalExit>> = Mutex::new(None);
    let ending = AtomicBool::new(false);
    let alive = std::sync::atomic::AtomicUsize::new(ports.len());
    let result = std::thread::scope(|s| {
        for port in ports {
            let (shared, exit, ending, alive) = (&shared, &exit, &ending, &alive);
            let opts = opts.clone();
            s.spawn(move || {
                serve_one(port, shared, exit, ending, stop, &opts);
                alive.fetch_sub(1, Ordering::SeqCst);
            });
        }
        let result = loop {
            if let Some(e) = *exit.lock().unwrap_or_else(|p| p.into_inner()) {
                break e;
            }
            if stop.load(Ordering::SeqCst) || alive.load(Ordering::SeqCst) == 0 {
                break NormalExit::Stopped;
            }
            if opts.deadline.is_some_and(|d| Instant::now() >= d) {
                break NormalExit::Deadline;
            }
            std::thread::sleep(opts.poll.min(Duration::from_millis(20)));
        };
        // The port threads see this within one read and end; the scope waits for them.
        ending.store(true, Ordering::SeqCst);
        result
    });
    *unit = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    result
}

fn serve_one(
    port: Port<'_>,
    shared: &Mutex<ModemState>,
    exit: &Mutex<Option<NormalExit>>,
    ending: &AtomicBool,
    stop: &AtomicBool,
    opts: &ServeOptions,
) {
    let Port { role, link } = port;
    let mut responder = match role {
        PortRole::Dm => Responder::Dm(DiagPort::new()),
        PortRole::At | PortRole::Modem => Responder::At(AtPort::new()),
        _ => Responder::Sink,
    };
    if role == PortRole::At && opts.boot_urcs {
        let urcs = boot_urcs(&shared.lock().unwrap_or_else(|p| p.into_inner()));
        if write(link, &urcs, opts.write_timeout).is_err() {
            return;
        }
    }
    let mut buf = vec![0u8; 16 * 1024];
    let finished = |exit: &Mutex<Option<NormalExit>>| {
        ending.load(Ordering::SeqCst)
            || stop.load(Ordering::SeqCst)
            || exit.lock().unwrap_or_else(|p| p.into_inner()).is_some()
    };
    while !finished(exit) {
        let n = match link.read(&mut buf, opts.poll) {
            Ok(n) => n,
            Err(TransportError::Timeout { .. }) => continue,
            Err(e) => {
                tracing::debug!(?role, error = %e, "emulated port's host side gone");
                return;
            }
        };
        let (bytes, effect) = {
            let mut unit = shared.lock().unwrap_or_else(|p| p.into_inner());
            match &mut responder {
                Responder::Dm(d) => {
                    let r = d.feed(&buf[..n], &unit);
                    let e = r
                        .effect
                        .map(|DiagEffect::SwitchToEdl| NormalExit::SwitchToEdl);
                    (r.bytes, e)
                }
                Responder::At(a) => {
                    let r = a.feed(&buf[..n], &mut unit);
                    let e = r.effect.map(|e| match e {
                        AtEffect::Reset => NormalExit::Reset,
                        AtEffect::PowerDown => NormalExit::PowerDown,
                    });
                    (r.bytes, e)
                }
                Responder::Sink => (Vec::new(), None),
            }
        };
        if write(link, &bytes, opts.write_timeout).is_err() {
            return;
        }
        if let Some(e) = effect {
            exit.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get_or_insert(e);
            return;
        }
    }
}

/// The interface numbers of the served ports and their roles (PROTOCOLS.md §5.2: DM on 0, NMEA
/// on 1, AT on 2, the PPP modem on 3 for every modelled composite).
pub const SERVED: [(u8, PortRole); 4] = [
    (0, PortRole::Dm),
    (1, PortRole::Nmea),
    (2, PortRole::At),
    (3, PortRole::Modem),
];

fn bulk(address: u8, mps: u16) -> EndpointSnapshot {
    EndpointSnapshot {
        address,
        transfer: TransferType::Bulk,
        max_packet_size: mps,
    }
}

/// The normal-mode composite of `profile`'s unit ([`usb_ids::normal_mode_snapshot`]) with the
/// network function `usbnet` selects: 0 keeps the QMI/rmnet interface 4; 1 (ECM), 2 (MBIM) and 3
/// (RNDIS) put a CDC communication interface on 4 and its data interface on 5 (an ADB interface
/// moves to 6), the shape of those functions in USB CDC and Microsoft's RNDIS class codes
/// (02/06 ECM, 02/0e MBIM, e0/01/03 RNDIS; data class 0a). `None` for a profile without a
/// normal-mode description.
pub fn normal_snapshot(profile: &Profile, address: u8, usbnet: u8) -> Option<DeviceSnapshot> {
    let mut s = usb_ids::normal_mode_snapshot(profile, address)?;
    let (class, sub, proto, driver, data_proto) = match usbnet {
        1 => (0x02, 0x06, 0x00, "cdc_ether", 0x00),
        2 => (0x02, 0x0e, 0x00, "cdc_mbim", 0x02),
        3 => (0xe0, 0x01, 0x03, "rndis_host", 0x00),
        _ => return Some(s),
    };
    let mps = s
        .interface(0)
        .and_then(|i| i.bulk_pair())
        .map(|(i, _)| i.max_packet_size)
        .unwrap_or(512);
    let Some(pos) = s.interfaces.iter().position(|i| i.number == 4) else {
        return Some(s);
    };
    let irq = s.interfaces[pos]
        .endpoints
        .iter()
        .find(|e| e.transfer == TransferType::Interrupt)
        .cloned();
    let data_eps: Vec<_> = s.interfaces[pos]
        .endpoints
        .iter()
        .filter(|e| e.transfer == TransferType::Bulk)
        .cloned()
        .collect();
    let comm = &mut s.interfaces[pos];
    comm.class = class;
    comm.subclass = sub;
    comm.protocol = proto;
    comm.driver = Some(driver.into());
    comm.endpoints = irq.into_iter().collect();
    for i in s.interfaces.iter_mut().filter(|i| i.number >= 5) {
        i.number += 1;
    }
    let data = InterfaceSnapshot {
        number: 5,
        alt: 0,
        class: 0x0a,
        subclass: 0,
        protocol: data_proto,
        endpoints: if data_eps.is_empty() {
            vec![bulk(0x8e, mps), bulk(0x0f, mps)]
        } else {
            data_eps
        },
        driver: Some(driver.into()),
        tty: None,
    };
    s.interfaces.insert(pos + 1, data);
    Some(s)
}

/// The four ptys of a normal-mode appearance, by interface number.
pub struct NormalPtys {
    pub ptys: Vec<(u8, PortRole, PtyDevice)>,
}

impl NormalPtys {
    /// Open one pty per served port.
    pub fn open() -> Result<NormalPtys, TransportError> {
        let mut ptys = Vec::with_capacity(SERVED.len());
        for (n, role) in SERVED {
            ptys.push((n, role, PtyDevice::open()?));
        }
        Ok(NormalPtys { ptys })
    }

    /// Write each pty's path into the interface it serves.
    pub fn annotate(&self, snapshot: &mut DeviceSnapshot) {
        for (n, _, pty) in &self.ptys {
            if let Some(i) = snapshot
                .interfaces
                .iter_mut()
                .find(|i| i.number == *n && i.alt == 0)
            {
                i.tty = Some(pty.slave_path().display().to_string());
            }
        }
    }

    /// The ports to hand to [`serve_ports`].
    pub fn ports(&mut self) -> Vec<Port<'_>> {
        self.ptys
            .iter_mut()
            .map(|(_, role, pty)| Port {
                role: *role,
                link: pty as &mut dyn Transport,
            })
            .collect()
    }
}

/// Host ends of an in-process normal-mode unit's ports.
#[derive(Debug)]
pub struct HostPorts {
    pub dm: PipeEnd,
    pub nmea: PipeEnd,
    pub at: PipeEnd,
    pub modem: PipeEnd,
}

/// A normal-mode unit serving in-process pipes on its own thread. Dropping it stops the unit.
pub struct InProcessNormal {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<(NormalExit, ModemState)>>,
}

impl InProcessNormal {
    /// Run `profile`'s unit as it booted (`boot`, e.g. from [`super::boot`] of its storage) with
    /// the saved USB network mode `usbnet`; returns the unit and the host ends of its DM, NMEA,
    /// AT and modem ports (stream pipes, like ttys).
    pub fn start(
        profile: &Profile,
        boot: NormalBoot,
        usbnet: u8,
        opts: ServeOptions,
    ) -> (InProcessNormal, HostPorts) {
        let mut unit = ModemState::for_unit(profile, boot, usbnet);
        let pair = |name: &str| {
            pipe::pair_named(
                Framing::Stream,
                format!("emulated modem {name} port (host)"),
                format!("emulated modem {name} port"),
            )
        };
        let (h_dm, mut d_dm) = pair("DM");
        let (h_nmea, mut d_nmea) = pair("NMEA");
        let (h_at, mut d_at) = pair("AT");
        let (h_modem, mut d_modem) = pair("modem");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::Builder::new()
            .name("emulated-modem-normal".into())
            .spawn(move || {
                let ports = vec![
                    Port {
                        role: PortRole::Dm,
                        link: &mut d_dm,
                    },
                    Port {
                        role: PortRole::Nmea,
                        link: &mut d_nmea,
                    },
                    Port {
                        role: PortRole::At,
                        link: &mut d_at,
                    },
                    Port {
                        role: PortRole::Modem,
                        link: &mut d_modem,
                    },
                ];
                let exit = serve_ports(ports, &mut unit, &flag, &opts);
                (exit, unit)
            })
            .expect("spawn the emulated modem's thread");
        (
            InProcessNormal {
                stop,
                handle: Some(handle),
            },
            HostPorts {
                dm: h_dm,
                nmea: h_nmea,
                at: h_at,
                modem: h_modem,
            },
        )
    }

    /// The unit has stopped serving (a host commanded an exit, or it was stopped).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(|h| h.is_finished())
    }

    /// Stop the unit (if it still serves) and hand back why it ended and its final state.
    pub fn finish(mut self) -> Option<(NormalExit, ModemState)> {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.take().and_then(|h| h.join().ok())
    }
}

impl Drop for InProcessNormal {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::classify::classify;
    use crate::protocol::diag::hdlc;
    use crate::sim::firehose::storage::{Storage, StorageProfile};
    use crate::sim::normal::state;
    use crate::transport::read_exact;

    const T: Duration = Duration::from_secs(10);

    fn booted(p: &Profile) -> NormalBoot {
        let mut s = Storage::new(&StorageProfile::by_name("nand-em12g").unwrap());
        state::seed_factory(&mut s, p).unwrap();
        state::boot(&s, p).normal().cloned().unwrap()
    }

    /// Read until `needle` shows up; returns everything read.
    fn read_until(link: &mut PipeEnd, needle: &[u8]) -> Vec<u8> {
        let mut got = Vec::new();
        let mut buf = [0u8; 4096];
        while !got.windows(needle.len()).any(|w| w == needle) {
            let n = link.read(&mut buf, T).unwrap();
            got.extend_from_slice(&buf[..n]);
        }
        got
    }

    #[test]
    fn in_process_ports_answer_at_and_diag_and_the_edl_switch_ends_the_unit() {
        let p = Profile::by_name("rm502q").unwrap().for_unit(2);
        let (unit, mut host) = InProcessNormal::start(&p, booted(&p), 0, ServeOptions::default());
        let urcs = read_until(&mut host.at, b"+QIND: PB DONE\r\n");
        assert!(urcs.starts_with(b"\r\nRDY\r\n\r\n+CFUN: 1\r\n"));
        host.at.write(b"ATE0\r", T).unwrap();
        read_until(&mut host.at, b"OK\r\n");
        host.at.write(b"AT+CSQ\r", T).unwrap();
        assert_eq!(
            read_until(&mut host.at, b"OK\r\n"),
            b"\r\n+CSQ: 21,99\r\n\r\nOK\r\n"
        );
        // The modem port is an AT port too (echo on, no URCs).
        host.modem.write(b"AT\r", T).unwrap();
        assert_eq!(read_until(&mut host.modem, b"OK\r\n"), b"AT\r\r\nOK\r\n");
        host.dm.write(&[0x7E, 0x7C, 0x93, 0x49, 0x7E], T).unwrap();
        let build = read_until(&mut host.dm, &[0x7E]);
        assert_eq!(build[0], 0x7C);
        assert!(build.windows(19).any(|w| w == b"RM502QAEAAR13A02M4G"));
        assert!(!unit.is_finished());
        host.dm
            .write(&[0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E], T)
            .unwrap();
        let mut echo = [0u8; 7];
        read_exact(&mut host.dm, &mut echo, T).unwrap();
        assert_eq!(echo, [0x4B, 0x65, 0x01, 0x00, 0x54, 0x0F, 0x7E]);
        let (exit, _) = unit.finish().unwrap();
        assert_eq!(exit, NormalExit::SwitchToEdl);
        assert_eq!(hdlc::crc16(&[0x4B, 0x65, 0x01, 0x00]), 0x0F54);
    }

    #[test]
    fn at_reset_ends_the_unit_with_the_new_usbnet_saved() {
        let p = Profile::by_name("ec25").unwrap().for_unit(5);
        let opts = ServeOptions {
            boot_urcs: false,
            ..ServeOptions::default()
        };
        let (unit, mut host) = InProcessNormal::start(&p, booted(&p), 0, opts);
        host.at.write(b"ATE0\rAT+QCFG=\"usbnet\",1\r", T).unwrap();
        read_until(&mut host.at, b"OK\r\n\r\nOK\r\n");
        host.at.write(b"AT+CFUN=1,1\r", T).unwrap();
        read_until(&mut host.at, b"OK\r\n");
        while !unit.is_finished() {
            std::thread::sleep(Duration::from_millis(5));
        }
        let (exit, state) = unit.finish().unwrap();
        assert_eq!(
            (exit, state.usbnet, state.usbnet_active),
            (NormalExit::Reset, 1, 0)
        );
    }

    #[test]
    fn ptys_are_annotated_so_the_classifier_finds_dm_and_at_by_interface() {
        let p = Profile::by_name("ec25").unwrap();
        let ptys = NormalPtys::open().unwrap();
        let mut snap = normal_snapshot(&p, 3, 0).unwrap();
        ptys.annotate(&mut snap);
        let c = classify(&snap);
        let tty = |role| c.port(role).and_then(|p| p.tty.clone()).unwrap();
        assert_eq!(
            tty(PortRole::Dm),
            ptys.ptys[0].2.slave_path().display().to_string()
        );
        assert_eq!(
            tty(PortRole::At),
            ptys.ptys[2].2.slave_path().display().to_string()
        );
        assert!(snap.interfaces.iter().filter(|i| i.tty.is_some()).count() == 4);
    }

    #[test]
    fn usbnet_changes_the_network_interfaces_only() {
        let p = Profile::by_name("rm502q").unwrap();
        let qmi = normal_snapshot(&p, 3, 0).unwrap();
        assert_eq!(qmi, usb_ids::normal_mode_snapshot(&p, 3).unwrap());
        for (mode, class, driver) in [
            (1, 0x02, "cdc_ether"),
            (2, 0x02, "cdc_mbim"),
            (3, 0xe0, "rndis_host"),
        ] {
            let s = normal_snapshot(&p, 3, mode).unwrap();
            assert_eq!(&s.interfaces[..4], &qmi.interfaces[..4]);
            let comm = s.interface(4).unwrap();
            assert_eq!((comm.class, comm.driver.as_deref()), (class, Some(driver)));
            assert_eq!(s.interface(5).unwrap().class, 0x0a);
            // The RM502Q's ADB interface moves up.
            assert_eq!(s.interface(6).unwrap().subclass, 0x42);
        }
    }
}
