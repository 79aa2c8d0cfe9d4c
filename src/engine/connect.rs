//! The one connect step every Firehose user goes through: find out whether the modem is in the
//! boot ROM (Sahara) or already runs a programmer, upload the programmer if needed, and hand back
//! a Firehose session that is ready for `configure`.
//!
//! Decisions (PROTOCOLS.md §1.3, §9.1):
//! - **Peek first, for [`PEEK_WAIT`].** A boot ROM queues its HELLO once, as soon as the
//!   interface is up, so it is already waiting when the port opens; a programmer that is still
//!   announcing itself sends `<?xml`. HELLO (or any Sahara packet) → upload; `<?xml` → attach.
//! - **Silence → a `<nop/>` probe** (what edl does when nothing is queued): a running programmer
//!   that already said its welcome to an earlier process answers it at once. The answer is
//!   consumed here, so the first real command never sees a stale ACK.
//! - **No answer to the probe** → with a programmer, the Sahara path with its unsolicited
//!   HELLO_RESP (qdl's recovery for a HELLO that something else consumed; boot ROMs skip the XML
//!   bytes of the probe while they wait for HELLO_RESP, PROTOCOLS.md §9.1); without one, an
//!   error that says what to pass.
//! - **No byte is lost between the layers.** Everything read while deciding goes back into a
//!   [`Pushback`] (for Sahara) or into the session's pending bytes (for Firehose); only the
//!   probe's own answer is consumed.
//! - **The session comes back ready**: after an upload its welcome logs have been collected
//!   ([`FirehoseSession::wait_ready`]); when attaching, either the welcome in progress was
//!   collected or the probe proved the programmer answers. Callers go straight to `configure`.

use std::time::{Duration, Instant};

use crate::engine::firehose::{FirehoseOptions, FirehoseSession};
use crate::engine::sahara::{SaharaConfig, SaharaSession, UploadReport};
use crate::error::{Error, ErrorKind};
use crate::protocol::firehose::xml::{host_document, DocumentSplitter};
use crate::protocol::firehose::{parse_device_document, DeviceMessage, FirehoseCommand, Nop};
use crate::protocol::sahara::packet::looks_like_xml;
use crate::protocol::sahara::{Packet, ParseError};
use crate::transport::{Pushback, Transport, TransportError};

/// How long to look for a HELLO (or `<?xml`) before deciding the port is silent.
///
/// A boot ROM sends HELLO once, the moment its interface comes up, so by the time a host opens
/// the port the 48 bytes sit in the bulk-in endpoint (USB) or arrive with the first read URB
/// after the open (qcserial tty): one transfer, milliseconds. 400 ms covers a loaded host, a hub
/// and pty scheduling with a wide margin, stays under the 1 s edl and qdl wait, and is what every
/// command pays against an idle programmer (the earlier 1.5 s peek was paid on every command).
pub const PEEK_WAIT: Duration = Duration::from_millis(400);

/// How long a silent port gets to answer the `<nop/>` probe when a programmer file is at hand.
///
/// A running programmer answers a nop from RAM without touching storage: a few milliseconds on
/// USB, well under 100 ms through a pty. 1 s is generous for that, and short because the
/// fallback (the Sahara recovery) is still to come. A programmer slower than this is not lost:
/// the Sahara layer then sees its XML and reports it as running.
pub const PROBE_WAIT: Duration = Duration::from_secs(1);

/// When attaching after the Sahara layer saw XML: stop reading stale documents after this much
/// quiet, and after [`SETTLE_LIMIT`] in any case.
const SETTLE_QUIET: Duration = Duration::from_millis(300);
const SETTLE_LIMIT: Duration = Duration::from_secs(3);

/// The HELLO wait of the Sahara fallback: peek and probe already listened for longer than the
/// 1 s qdl waits before its unsolicited HELLO_RESP.
const FALLBACK_HELLO_WAIT: Duration = Duration::from_millis(100);

/// Largest Firehose document buffered while probing.
const MAX_DOCUMENT: usize = 64 * 1024;

/// How the session was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attach {
    /// The modem was in the boot ROM; the programmer was uploaded.
    Uploaded(UploadReport),
    /// A programmer was already running; nothing was uploaded.
    AlreadyRunning,
}

/// What the first bytes from the port look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    /// Nothing yet, or too little to tell.
    Nothing,
    Sahara,
    Xml,
    /// Neither a Sahara packet nor XML.
    Garbage,
}

fn classify(buf: &[u8], final_look: bool) -> Seen {
    if buf.is_empty() {
        return Seen::Nothing;
    }
    match Packet::parse(buf) {
        Ok(_) => Seen::Sahara,
        Err(ParseError::FirehoseRunning) => {
            let body = buf.iter().filter(|b| !b.is_ascii_whitespace()).count();
            // Decide on "<?xml" only once all five bytes are in, unless time is up.
            if body >= 5 || final_look {
                Seen::Xml
            } else {
                Seen::Nothing
            }
        }
        Err(ParseError::Incomplete { .. }) if !final_look => Seen::Nothing,
        Err(ParseError::Incomplete { .. }) if looks_like_xml(buf) => Seen::Xml,
        Err(_) => Seen::Garbage,
    }
}

fn link_error(e: TransportError, during: &str, port: &str) -> Error {
    match e {
        TransportError::Disconnected(why) => Error::new(
            ErrorKind::DeviceLost,
            format!("The modem dropped off the bus while {during}"),
            format!("The link on {port} is gone ({why})"),
            "Wait for it to come back (in download mode it is safe to start again); if it does not return, power-cycle the modem",
        ),
        TransportError::Permission(why) => Error::new(
            ErrorKind::Permission,
            format!("Permission denied while {during}"),
            why,
            "Give your user access to the device (udev rule for 05c6:9008) or run with the needed rights",
        ),
        TransportError::Busy(why) => Error::failure(
            format!("{port} is busy while {during}"),
            why,
            "Close other programs that hold the modem's port (ModemManager, another flasher) and retry",
        ),
        other => Error::failure(
            format!("An I/O error on {port} while {during}"),
            other.to_string(),
            "Check the cable and port, power-cycle the modem into download mode and run again",
        ),
    }
}

/// Read into `buf` until `until`, stopping as soon as `classify` can tell what it is.
fn listen<T: Transport>(
    t: &mut Pushback<T>,
    buf: &mut Vec<u8>,
    until: Instant,
    during: &str,
) -> crate::Result<Seen> {
    let mut tmp = [0u8; 4096];
    loop {
        let seen = classify(buf, false);
        if seen != Seen::Nothing {
            return Ok(seen);
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(classify(buf, true));
        }
        match t.read(&mut tmp, left) {
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(TransportError::Timeout { .. }) => return Ok(classify(buf, true)),
            Err(e) => return Err(link_error(e, during, &t.describe())),
        }
    }
}

fn needs_programmer() -> Error {
    Error::new(
        ErrorKind::Usage,
        "The modem is in download mode and waiting for a programmer",
        "Firehose commands need the programmer running first",
        "Pass --programmer FILE (prog_*.mbn from the modem's firmware package)",
    )
}

fn nothing_answered(port: &str, waited: Duration) -> Error {
    Error::new(
        ErrorKind::NoDevice,
        format!(
            "Nothing answered on {port} ({:.1} s without a HELLO or a reply to a nop)",
            waited.as_secs_f64()
        ),
        "A modem in download mode greets once with HELLO; if something else read it, or a programmer is hung, the port stays silent",
        "Pass --programmer FILE so qrescue can restart the Sahara handshake; otherwise power-cycle the modem into download mode (9008) and run again",
    )
}

/// Outcome of the probe.
enum Probe {
    /// The programmer answered; these bytes followed its answer.
    Answered(Vec<u8>),
    /// No XML answer; these bytes were read (to be given back).
    NoAnswer(Vec<u8>, Seen),
}

/// Send `<nop/>` and wait up to `wait` for a Firehose answer. The answer's response (ACK or NAK:
/// either proves a programmer runs) and the logs before it are consumed.
fn probe<T: Transport>(
    t: &mut Pushback<T>,
    fh: &FirehoseOptions,
    wait: Duration,
) -> crate::Result<Probe> {
    let port = t.describe();
    let doc = host_document(&Nop.to_element());
    match t.write(&doc, fh.timeouts.xml_write) {
        Ok(()) => {}
        // A port that does not even take 60 bytes: treat it as silent.
        Err(TransportError::Timeout { .. }) => {
            return Ok(Probe::NoAnswer(Vec::new(), Seen::Nothing))
        }
        Err(e) => return Err(link_error(e, "probing for a running programmer", &port)),
    }
    let start = Instant::now();
    let mut buf = Vec::new();
    let seen = listen(
        t,
        &mut buf,
        start + wait,
        "probing for a running programmer",
    )?;
    if seen != Seen::Xml {
        return Ok(Probe::NoAnswer(buf, seen));
    }
    // XML is coming: read documents until the response, within the session's nop bound.
    let until = Instant::now() + fh.timeouts.nop.max(wait);
    let mut splitter = DocumentSplitter::new(MAX_DOCUMENT);
    splitter.push(&buf);
    let mut tmp = [0u8; 4096];
    loop {
        match splitter.next_document() {
            Ok(Some(doc)) => {
                match parse_device_document(&doc) {
                    Ok(msgs) => {
                        let mut answered = false;
                        for m in msgs {
                            match m {
                                DeviceMessage::Log(l) => {
                                    tracing::debug!(target: "qrescue::connect", "probe log: {l}")
                                }
                                DeviceMessage::Response(r) => {
                                    tracing::debug!(target: "qrescue::connect", "probe answered: {:?}", r.attrs);
                                    answered = true;
                                }
                            }
                        }
                        if answered {
                            return Ok(Probe::Answered(splitter.take_rest()));
                        }
                    }
                    Err(e) => {
                        tracing::debug!(target: "qrescue::connect", "unreadable document while probing: {e:?}")
                    }
                }
                continue;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::debug!(target: "qrescue::connect", "dropping bytes while probing: {e}");
                splitter.take_rest();
            }
        }
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            // XML without a response in time: a programmer is there but did not finish its
            // answer. Hand what arrived to the session; it skips what it cannot use.
            tracing::info!(target: "qrescue::connect", "the programmer's answer to the probe did not end in time");
            return Ok(Probe::Answered(splitter.take_rest()));
        }
        match t.read(&mut tmp, left) {
            Ok(n) => splitter.push(&tmp[..n]),
            Err(TransportError::Timeout { .. }) => {}
            Err(e) => return Err(link_error(e, "probing for a running programmer", &port)),
        }
    }
}

/// Send `<nop/>` on a port that said nothing and wait up to `wait` for a Firehose answer: `true`
/// when a programmer answered (its answer is consumed), `false` otherwise. Every other byte read
/// is pushed back. A boot ROM waiting for HELLO_RESP skips the probe's XML (PROTOCOLS.md §9.1),
/// so this is safe to send to either.
pub fn probe_programmer<T: Transport>(
    t: &mut Pushback<T>,
    fh: &FirehoseOptions,
    wait: Duration,
) -> crate::Result<bool> {
    match probe(t, fh, wait)? {
        Probe::Answered(rest) => {
            t.unread(&rest);
            Ok(true)
        }
        Probe::NoAnswer(bytes, _) => {
            t.unread(&bytes);
            Ok(false)
        }
    }
}

/// After the Sahara layer met XML instead of HELLO (a programmer that answered the probe late, or
/// the recovery HELLO_RESP): drop the documents still arriving until the port is quiet, so the
/// first real command gets its own answer. Returns bytes of an unfinished document.
fn settle<T: Transport>(t: &mut Pushback<T>, pending: Vec<u8>) -> crate::Result<Vec<u8>> {
    let port = t.describe();
    let mut splitter = DocumentSplitter::new(MAX_DOCUMENT);
    splitter.push(&pending);
    let limit = Instant::now() + SETTLE_LIMIT;
    let mut quiet_until = Instant::now() + SETTLE_QUIET;
    let mut tmp = [0u8; 4096];
    loop {
        loop {
            match splitter.next_document() {
                Ok(Some(doc)) => tracing::debug!(
                    target: "qrescue::connect",
                    "dropping a stale document: {}",
                    String::from_utf8_lossy(&doc[..doc.len().min(200)])
                ),
                Ok(None) => break,
                Err(_) => {
                    splitter.take_rest();
                    break;
                }
            }
        }
        let now = Instant::now();
        let until = quiet_until.min(limit);
        if now >= until {
            return Ok(splitter.take_rest());
        }
        match t.read(&mut tmp, until - now) {
            Ok(n) => {
                splitter.push(&tmp[..n]);
                quiet_until = Instant::now() + SETTLE_QUIET;
            }
            Err(TransportError::Timeout { .. }) => return Ok(splitter.take_rest()),
            Err(e) => return Err(link_error(e, "attaching to the running programmer", &port)),
        }
    }
}

/// Upload over Sahara (bytes already read are in `t`'s pushback), then hand the link to a
/// Firehose session that has collected the programmer's welcome.
fn upload<T: Transport>(
    t: Pushback<T>,
    programmer: &[u8],
    sahara: SaharaConfig,
    fh: FirehoseOptions,
    progress: &mut dyn FnMut(u64),
) -> crate::Result<(FirehoseSession<Pushback<T>>, Attach)> {
    let mut s = SaharaSession::new(t, sahara);
    let report = s.upload(programmer, &mut |p| progress(p.bytes_sent))?;
    // Unconsumed Sahara bytes come first, then anything still pushed back below them.
    let (mut t, rest) = s.into_transport().into_parts();
    if report.already_running {
        tracing::info!(target: "qrescue::connect", "the Sahara layer found a programmer running");
        let rest = settle(&mut t, rest)?;
        return Ok((FirehoseSession::new(t, rest, fh), Attach::AlreadyRunning));
    }
    let mut session = FirehoseSession::new(t, rest, fh);
    session.wait_ready()?;
    Ok((session, Attach::Uploaded(report)))
}

/// Get a ready Firehose session on `transport`: upload `programmer` if the modem is in the boot
/// ROM, or attach to a programmer that is already running (see the module docs for how it
/// decides). `progress` gets the programmer bytes sent during an upload.
///
/// Errors: the boot ROM is waiting but no programmer was given ([`ErrorKind::Usage`]); nothing
/// answers and no programmer was given ([`ErrorKind::NoDevice`]); and whatever the Sahara upload
/// or the programmer's start reports.
pub fn attach_or_upload<T: Transport>(
    transport: T,
    programmer: Option<&[u8]>,
    sahara: &SaharaConfig,
    fh: FirehoseOptions,
    progress: &mut dyn FnMut(u64),
) -> crate::Result<(FirehoseSession<Pushback<T>>, Attach)> {
    let started = Instant::now();
    let mut t = Pushback::new(transport);
    let port = t.describe();
    let mut buf = Vec::new();
    let seen = listen(
        &mut t,
        &mut buf,
        started + PEEK_WAIT,
        "waiting for the modem to greet",
    )?;
    tracing::debug!(target: "qrescue::connect", ?seen, bytes = buf.len(), "peek");
    match seen {
        Seen::Sahara => {
            let Some(p) = programmer else {
                return Err(needs_programmer());
            };
            t.unread(&buf);
            return upload(t, p, sahara.clone(), fh, progress);
        }
        Seen::Xml => {
            // A programmer that is still announcing itself: collect the welcome.
            tracing::info!(target: "qrescue::connect", "a programmer is running and talking; attaching");
            let mut session = FirehoseSession::new(t, buf, fh);
            session.wait_ready()?;
            return Ok((session, Attach::AlreadyRunning));
        }
        Seen::Garbage => {
            if let Some(p) = programmer {
                // Sahara knows how to resynchronise a confused boot ROM.
                t.unread(&buf);
                return upload(t, p, sahara.clone(), fh, progress);
            }
            tracing::warn!(
                target: "qrescue::connect",
                "skipping {} bytes that are neither Sahara nor Firehose: {}",
                buf.len(),
                hex::encode(&buf[..buf.len().min(16)])
            );
        }
        Seen::Nothing => {}
    }
    // Silent (or noise): a programmer that already greeted an earlier process answers a nop.
    let wait = if programmer.is_some() {
        PROBE_WAIT
    } else {
        fh.timeouts.nop
    };
    match probe(&mut t, &fh, wait)? {
        Probe::Answered(rest) => {
            tracing::info!(
                target: "qrescue::connect",
                elapsed_ms = started.elapsed().as_millis() as u64,
                "a silent programmer answered the nop probe; attaching"
            );
            Ok((FirehoseSession::new(t, rest, fh), Attach::AlreadyRunning))
        }
        Probe::NoAnswer(bytes, seen) => {
            t.unread(&bytes);
            match (programmer, seen) {
                (None, Seen::Sahara) => Err(needs_programmer()),
                (None, _) => Err(nothing_answered(&port, started.elapsed())),
                (Some(p), _) => {
                    tracing::info!(
                        target: "qrescue::connect",
                        "no answer to the nop probe; trying Sahara (a HELLO may have been consumed)"
                    );
                    let cfg = SaharaConfig {
                        hello_wait: sahara.hello_wait.min(FALLBACK_HELLO_WAIT),
                        ..sahara.clone()
                    };
                    upload(t, p, cfg, fh, progress)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::firehose::{Read, StorageKind, Timeouts};
    use crate::sim::device::{self, DeviceConfig, RunOutcome};
    use crate::sim::faults::{Fault, FaultPlan};
    use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
    use crate::sim::firehose::storage::StorageProfile;
    use crate::sim::profile::Profile;
    use crate::transport::pipe::{self, PipeEnd};
    use crate::transport::Framing;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{mpsc, Arc};

    /// One emulated unit (boot ROM + emulated programmer over NAND) on its own thread.
    struct Unit {
        link: PipeEnd,
        stop: Arc<AtomicBool>,
        done: mpsc::Receiver<(RunOutcome, Programmer)>,
        programmer: Vec<u8>,
    }

    impl Unit {
        fn start(faults: Vec<Fault>) -> Unit {
            let profile = Profile::by_name("ec25").unwrap().for_unit(11);
            let programmer = profile.programmer(1);
            let storage = StorageProfile::by_name("nand-ec25e").unwrap();
            let (mut dev, host) = pipe::pair(Framing::Stream);
            let cutter = host.cutter();
            let mut cfg = DeviceConfig::new(profile)
                .with_faults(FaultPlan::new(faults, 5))
                .with_link_drop_hook(Box::new(move || cutter.cut()));
            let mut prog = Programmer::new(&storage, ProgrammerOptions::default());
            let stop = Arc::new(AtomicBool::new(false));
            let s2 = Arc::clone(&stop);
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let outcome = device::run(&mut dev, &mut cfg, &mut prog, &s2);
                drop(dev);
                let _ = tx.send((outcome, prog));
            });
            Unit {
                link: host,
                stop,
                done: rx,
                programmer,
            }
        }

        fn finish(self) -> Programmer {
            let Unit {
                link, stop, done, ..
            } = self;
            drop(link);
            stop.store(true, Ordering::SeqCst);
            done.recv_timeout(Duration::from_secs(10))
                .expect("the unit stops within 10 s")
                .1
        }
    }

    type Connected<'a> = (FirehoseSession<Pushback<&'a mut PipeEnd>>, Attach, Duration);

    fn connect<'a>(
        link: &'a mut PipeEnd,
        programmer: Option<&[u8]>,
    ) -> crate::Result<Connected<'a>> {
        let t0 = Instant::now();
        let mut sent = 0u64;
        let (s, a) = attach_or_upload(
            link,
            programmer,
            &SaharaConfig::default(),
            FirehoseOptions::default(),
            &mut |n| sent = n,
        )?;
        if let Attach::Uploaded(r) = &a {
            assert_eq!(sent, r.bytes_sent, "progress reports the bytes sent");
        }
        Ok((s, a, t0.elapsed()))
    }

    /// Configure and read a sector: the session is in step with the programmer (no stale ACK).
    fn use_session<T: Transport>(s: &mut FirehoseSession<T>) {
        let n = s.configure(StorageKind::Nand).expect("configure");
        assert!(n.max_payload_to_target > 0);
        let cmd = Read::new(4096, 2, 0, "0");
        let mut out = Vec::new();
        s.read(&cmd, &mut out, &mut |_| {}).expect("read");
        assert_eq!(out.len(), 8192);
    }

    fn tags(p: &Programmer) -> Vec<String> {
        p.commands().iter().map(|c| c.tag.clone()).collect()
    }

    #[test]
    fn a_fresh_boot_rom_gets_the_programmer_uploaded() {
        let mut u = Unit::start(vec![]);
        let prog = u.programmer.clone();
        let (mut s, a, took) = connect(&mut u.link, Some(&prog)).unwrap();
        match &a {
            Attach::Uploaded(r) => {
                assert!(r.bytes_sent > 0);
                assert!(!r.already_running);
            }
            other => panic!("{other:?}"),
        }
        let w = s.welcome().expect("the welcome was collected");
        assert!(w.ready && !w.via_nop_probe, "{w:?}");
        // The HELLO was queued: no peek timeout, no probe.
        assert!(took < Duration::from_secs(3), "{took:?}");
        use_session(&mut s);
        drop(s);
        let p = u.finish();
        assert_eq!(tags(&p), ["configure", "read"], "no nop probe was sent");
    }

    #[test]
    fn a_silent_running_programmer_is_attached_quickly_with_or_without_a_programmer_file() {
        let mut u = Unit::start(vec![]);
        let prog = u.programmer.clone();
        let (s, a, _) = connect(&mut u.link, Some(&prog)).unwrap();
        assert!(matches!(a, Attach::Uploaded(_)));
        // The welcome went to that session; the programmer is silent from now on.
        drop(s);
        for file in [Some(prog.as_slice()), None] {
            let (mut s, a, took) = connect(&mut u.link, file).unwrap();
            assert_eq!(a, Attach::AlreadyRunning);
            assert!(
                took < Duration::from_millis(1500),
                "attached in {took:?} (peek + one nop)"
            );
            use_session(&mut s);
        }
        let p = u.finish();
        assert_eq!(p.report().sessions, 1, "uploaded once");
        assert_eq!(
            tags(&p),
            ["nop", "configure", "read", "nop", "configure", "read"]
        );
    }

    #[test]
    fn a_programmer_still_announcing_itself_is_attached_and_its_welcome_collected() {
        let mut u = Unit::start(vec![]);
        let prog = u.programmer.clone();
        // Upload by hand and leave at once, before the welcome logs arrive.
        let mut sahara = SaharaSession::new(&mut u.link, SaharaConfig::default());
        let r = sahara.upload(&prog, &mut |_| {}).unwrap();
        assert!(!r.already_running);
        let (t, rest) = sahara.into_transport().into_parts();
        assert!(rest.is_empty() || looks_like_xml(&rest));
        // Whatever Sahara read past DONE_RESP is given back, as a next process would see it.
        let link: &mut PipeEnd = t;
        let mut pb = Pushback::new(&mut *link);
        pb.unread(&rest);
        let (mut s, a) = attach_or_upload(
            pb,
            Some(&prog),
            &SaharaConfig::default(),
            FirehoseOptions::default(),
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(a, Attach::AlreadyRunning);
        let w = s.welcome().expect("welcome collected");
        assert!(w.ready && !w.functions.is_empty(), "{w:?}");
        use_session(&mut s);
        drop(s);
        assert_eq!(tags(&u.finish()), ["configure", "read"]);
    }

    #[test]
    fn a_consumed_hello_is_recovered_through_sahara_after_the_probe() {
        let mut u = Unit::start(vec![Fault::ConsumeHello]);
        let prog = u.programmer.clone();
        let (mut s, a, took) = connect(&mut u.link, Some(&prog)).unwrap();
        assert!(matches!(a, Attach::Uploaded(_)), "{a:?}");
        // Peek + probe + the short fallback HELLO wait, then the upload itself.
        assert!(took >= PEEK_WAIT + PROBE_WAIT, "{took:?}");
        use_session(&mut s);
        drop(s);
        let p = u.finish();
        assert_eq!(p.report().sessions, 1);
        // The probe's XML went to the boot ROM, which skipped it: the programmer never saw it.
        assert_eq!(tags(&p), ["configure", "read"]);
    }

    #[test]
    fn without_a_programmer_file_a_boot_rom_asks_for_one_and_silence_is_no_device() {
        let mut u = Unit::start(vec![]);
        let e = connect(&mut u.link, None)
            .err()
            .expect("needs a programmer");
        assert_eq!(e.kind, ErrorKind::Usage);
        assert!(e.next.contains("--programmer"), "{e}");
        drop(u.finish());

        let mut u = Unit::start(vec![Fault::ConsumeHello]);
        let t0 = Instant::now();
        let e = attach_or_upload(
            &mut u.link,
            None,
            &SaharaConfig::default(),
            FirehoseOptions {
                timeouts: Timeouts {
                    nop: Duration::from_millis(300),
                    ..Timeouts::default()
                },
                ..FirehoseOptions::default()
            },
            &mut |_| {},
        )
        .err()
        .expect("nothing answered");
        assert_eq!(e.kind, ErrorKind::NoDevice);
        assert!(e.next.contains("--programmer"), "{e}");
        assert!(t0.elapsed() < Duration::from_secs(2));
        // The boot ROM is still waiting: a run with the programmer recovers it.
        let prog = u.programmer.clone();
        let (mut s, a, _) = connect(&mut u.link, Some(&prog)).unwrap();
        assert!(matches!(a, Attach::Uploaded(_)));
        use_session(&mut s);
        drop(s);
        drop(u.finish());
    }

    #[test]
    fn classify_waits_for_five_xml_bytes_and_names_noise() {
        assert_eq!(classify(b"", false), Seen::Nothing);
        assert_eq!(classify(b"<?x", false), Seen::Nothing);
        assert_eq!(classify(b"<?x", true), Seen::Xml);
        assert_eq!(classify(b"\n<?xml ver", false), Seen::Xml);
        let hello = Packet::Hello {
            version: 2,
            version_supported: 1,
            max_cmd_len: 0x400,
            mode: 0,
            reserved: [0; 6],
        }
        .encode();
        assert_eq!(classify(&hello[..20], false), Seen::Nothing);
        assert_eq!(classify(&hello, false), Seen::Sahara);
        assert_eq!(classify(&[0u8; 16], false), Seen::Garbage);
        assert_eq!(classify(&[1u8, 2], true), Seen::Garbage);
    }
}
