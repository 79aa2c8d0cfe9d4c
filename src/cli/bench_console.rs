//! Console figures for `qrescue bench`: what the full-screen console costs a slow SSH link and the
//! host. The real binary runs `qrescue demo` on a pty of 80×24 (a child process with the pty as
//! its controlling terminal); every byte it writes to the terminal is counted with its arrival
//! time. Frame render time is measured in this process on a test backend.

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use ratatui::Terminal;

use crate::device::identity::DeviceId;
use crate::engine::events::{EngineEvent, StepInfo, StepKind};
use crate::tui::model::{Config, FlashView, Model, Stage};
use crate::tui::msg::{JobId, Msg};
use crate::tui::{update::update, view::view};
use crate::Error;

/// What the pty reader saw: (arrival, bytes) per read, and the screen those bytes drew (as a
/// terminal would show it: ratatui only rewrites the cells that changed, so the byte stream
/// itself cannot be searched for text).
struct Seen {
    reads: Vec<(Instant, usize)>,
    screen: vt100::Parser,
    /// When each watched text was first on screen.
    first: Vec<(Vec<u8>, Instant)>,
}

type Log = Arc<Mutex<Seen>>;

const ROWS: std::num::NonZeroU16 = std::num::NonZeroU16::new(24).expect("24 > 0");
const COLS: std::num::NonZeroU16 = std::num::NonZeroU16::new(80).expect("80 > 0");

struct Console {
    child: Child,
    master: std::fs::File,
    log: Log,
    started: Instant,
    _data: tempfile::TempDir,
}

fn err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::failure(
        format!("console bench: {what}"),
        e.to_string(),
        "Run `qrescue bench` from a normal shell on Linux (it needs ptys)",
    )
}

impl Console {
    /// Start `qrescue demo ARGS` on a fresh 80×24 pty.
    fn start(args: &[&str]) -> crate::Result<Console> {
        let size = nix::pty::Winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).map_err(|e| err("openpty", e))?;
        let exe = std::env::current_exe().map_err(|e| err("current_exe", e))?;
        let data = tempfile::tempdir().map_err(|e| err("tempdir", e))?;
        let slave: OwnedFd = pty.slave;
        let io = |fd: &OwnedFd| -> crate::Result<Stdio> {
            Ok(Stdio::from(fd.try_clone().map_err(|e| err("dup", e))?))
        };
        let mut cmd = Command::new(exe);
        cmd.arg("demo")
            .args(args)
            .env("TERM", "xterm-256color")
            .env("QRESCUE_DATA_DIR", data.path())
            .env_remove("NO_COLOR")
            .stdin(io(&slave)?)
            .stdout(io(&slave)?)
            .stderr(io(&slave)?);
        // SAFETY: only async-signal-safe calls between fork and exec: a new session with the pty
        // (stdin) as its controlling terminal, so crossterm finds /dev/tty.
        unsafe {
            cmd.pre_exec(|| {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let started = Instant::now();
        let child = cmd.spawn().map_err(|e| err("spawn qrescue demo", e))?;
        drop(slave);
        let master = std::fs::File::from(pty.master);
        let log: Log = Arc::new(Mutex::new(Seen {
            reads: Vec::new(),
            screen: vt100::Parser::new(ROWS, COLS, 0),
            first: Vec::new(),
        }));
        let mut reader = master.try_clone().map_err(|e| err("dup", e))?;
        let sink = log.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                let now = Instant::now();
                let mut l = sink.lock().unwrap_or_else(|p| p.into_inner());
                l.reads.push((now, n));
                l.screen.process(&buf[..n]);
                let screen = l.screen.screen().contents().into_bytes();
                l.first.push((screen, now));
            }
        });
        Ok(Console {
            child,
            master,
            log,
            started,
            _data: data,
        })
    }

    fn keys(&mut self, keys: &[u8]) -> crate::Result<()> {
        use std::io::Write;
        self.master
            .write_all(keys)
            .map_err(|e| err("write keys", e))
    }

    /// When `needle` was first on screen after `since`, waiting at most `limit`.
    fn wait_for(&self, needle: &[u8], since: Instant, limit: Duration) -> crate::Result<Instant> {
        let deadline = Instant::now() + limit;
        loop {
            {
                let mut l = self.log.lock().unwrap_or_else(|p| p.into_inner());
                let found = l
                    .first
                    .iter()
                    .filter(|(_, t)| *t >= since)
                    .find(|(screen, _)| screen.windows(needle.len()).any(|w| w == needle))
                    .map(|(_, t)| *t);
                // Screens older than `since` are not needed again.
                l.first.retain(|(_, t)| *t >= since);
                if let Some(t) = found {
                    return Ok(t);
                }
            }
            if Instant::now() > deadline {
                return Err(err(
                    &format!("waiting for {:?}", String::from_utf8_lossy(needle)),
                    format!("not seen within {limit:?}"),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Press `q` and wait (bounded) for the console to end.
    fn quit(&mut self, limit: Duration) -> bool {
        let _ = self.keys(b"q");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// Frames and messages the ended console reported in its log file (in its data folder).
    fn frames_logged(&self) -> Option<(u64, u64)> {
        let logs = std::fs::read_dir(self._data.path().join("logs")).ok()?;
        for entry in logs.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            if let Some(found) = frames_in_log(&text) {
                return Some(found);
            }
        }
        None
    }

    /// Bytes that arrived in [from, to).
    fn bytes_between(&self, from: Instant, to: Instant) -> u64 {
        let l = self.log.lock().unwrap_or_else(|p| p.into_inner());
        l.reads
            .iter()
            .filter(|(t, _)| *t >= from && *t < to)
            .map(|(_, n)| *n as u64)
            .sum()
    }
}

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.keys(b"q");
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = self.master.as_raw_fd();
    }
}

/// `the console drew N frames for M messages` in a console log.
fn frames_in_log(text: &str) -> Option<(u64, u64)> {
    let rest = text
        .rsplit("the console drew ")
        .next()
        .filter(|_| text.contains("the console drew "))?;
    let mut words = rest.split_whitespace();
    let frames = words.next()?.parse().ok()?;
    let messages = words.nth(2)?.parse().ok()?;
    Some((frames, messages))
}

/// What the console wrote to its terminal during a station run.
pub struct StationFigures {
    pub modems: u16,
    pub bytes_per_s: f64,
    pub bytes: u64,
    /// From the confirmation (`y`) until the summary was on screen.
    pub secs: f64,
    /// Frames and messages of the whole console session, from its log (when found).
    pub frames: Option<(u64, u64)>,
}

/// `qrescue demo --scenario station --units N --fast` on an 80×24 pty: press `A`, confirm,
/// and count the terminal's bytes until the summary is on screen.
pub fn measure_station(modems: u16) -> crate::Result<StationFigures> {
    let units = modems.to_string();
    let mut c = Console::start(&["--scenario", "station", "--units", &units, "--fast"])?;
    c.wait_for(b"flash all", c.started, Duration::from_secs(60))?;
    // A key sent before the console reads its input can be lost: press again until the
    // confirmation is up (bounded).
    let mut asked = false;
    for _ in 0..6 {
        c.keys(b"A")?;
        if c.wait_for(b"modems at once?", c.started, Duration::from_secs(3))
            .is_ok()
        {
            asked = true;
            break;
        }
    }
    if !asked {
        return Err(err(
            "waiting for the station confirmation",
            "no answer to A",
        ));
    }
    let from = Instant::now();
    c.keys(b"y")?;
    let to = c.wait_for(b"summary.json", from, Duration::from_secs(300))?;
    let b = c.bytes_between(from, to);
    let secs = (to - from).as_secs_f64().max(1e-6);
    let frames = if c.quit(Duration::from_secs(20)) {
        c.frames_logged()
    } else {
        None
    };
    Ok(StationFigures {
        modems,
        bytes_per_s: b as f64 / secs,
        bytes: b,
        secs,
        frames,
    })
}

/// The console's figures.
pub struct ConsoleFigures {
    pub first_frame_ms: f64,
    pub idle_bytes_per_s: f64,
    pub idle_secs: f64,
    pub flash_bytes_per_s: f64,
    pub flash_secs: f64,
    pub flash_bytes: u64,
    pub render_median_us: f64,
    pub render_p99_us: f64,
    pub partitions: usize,
}

/// Run the console benches; `idle` is how long the idle screen is watched.
pub fn measure(idle: Duration, frames: usize) -> crate::Result<ConsoleFigures> {
    // Idle: a working modem in normal mode, nothing animating.
    let (first_frame_ms, idle_bytes_per_s, idle_secs) = {
        let c = Console::start(&["--scenario", "update"])?;
        let first = c.wait_for(b"Devices", c.started, Duration::from_secs(20))?;
        // Let the modem's appearance settle, then watch.
        c.wait_for(b"normal", c.started, Duration::from_secs(20))?;
        std::thread::sleep(Duration::from_millis(1500));
        let from = Instant::now();
        std::thread::sleep(idle);
        let to = Instant::now();
        let b = c.bytes_between(from, to);
        (
            (first - c.started).as_secs_f64() * 1000.0,
            b as f64 / (to - from).as_secs_f64(),
            (to - from).as_secs_f64(),
        )
    };

    // A flash of the demo package (throttled like real NAND, ~4 MB/s) through the console.
    let (flash_bytes_per_s, flash_secs, flash_bytes) = {
        let mut c = Console::start(&[])?;
        // Key names are styled apart from the words around them: wait for the plain words.
        c.wait_for(b"9008", c.started, Duration::from_secs(30))?;
        // A key sent before the console reads its input can be lost: press again until the
        // check answers (bounded).
        let mut checked = None;
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(1000));
            c.keys(b"\r")?;
            if let Ok(t) = c.wait_for(b"to see the plan", c.started, Duration::from_secs(10)) {
                checked = Some(t);
                break;
            }
        }
        if checked.is_none() {
            return Err(err("waiting for the package check", "no answer to Enter"));
        }
        c.keys(b"f")?;
        c.wait_for(b" to flash, ", c.started, Duration::from_secs(10))?;
        let from = Instant::now();
        c.keys(b"y")?;
        let to = c.wait_for(b"all written in", from, Duration::from_secs(60))?;
        let b = c.bytes_between(from, to);
        let secs = (to - from).as_secs_f64().max(1e-6);
        (b as f64 / secs, secs, b)
    };

    let (render_median_us, render_p99_us, partitions) = render_times(frames)?;
    Ok(ConsoleFigures {
        first_frame_ms,
        idle_bytes_per_s,
        idle_secs,
        flash_bytes_per_s,
        flash_secs,
        flash_bytes,
        render_median_us,
        render_p99_us,
        partitions,
    })
}

/// Draw a flash-in-progress screen (8 partitions) `frames` times at 80×24, a progress event
/// between frames so every frame has changes to diff; median and p99 in µs.
fn render_times(frames: usize) -> crate::Result<(f64, f64, usize)> {
    let mut m = Model::new(Config::default());
    let names = [
        "sbl", "mibib", "tz", "rpm", "aboot", "boot", "modem", "system",
    ];
    let mut steps = vec![StepInfo {
        index: 0,
        kind: StepKind::SaharaUpload,
        name: "programmer".into(),
        bytes: 300 << 10,
        lun: None,
        start_sector: None,
        sectors: None,
    }];
    for (i, n) in names.iter().enumerate() {
        steps.push(StepInfo {
            index: i + 1,
            kind: StepKind::Program,
            name: (*n).into(),
            bytes: 4 << 20,
            lun: Some(0),
            start_sector: Some("0".into()),
            sectors: Some(64),
        });
    }
    let total: u64 = steps.iter().map(|s| s.bytes).sum();
    let job = JobId(1);
    m.flash = Some(FlashView {
        job,
        device: DeviceId(1),
        rows: Vec::new(),
        total_bytes: 0,
        overall: 0.0,
        started_ms: 0,
        ended_ms: None,
        ok: None,
        device_log: Vec::new(),
    });
    m.flow.device = Some(DeviceId(1));
    m.flow.stage = Stage::Flashing { job, pins: false };
    let feed = |m: &mut Model, event: EngineEvent, t_ms: u64| {
        let _ = update(m, Msg::Engine { job, event, t_ms });
    };
    feed(
        &mut m,
        EngineEvent::Plan {
            steps,
            total_bytes: total,
        },
        1,
    );
    feed(
        &mut m,
        EngineEvent::StepStarted {
            index: 6,
            kind: StepKind::Program,
            name: "boot".into(),
            bytes: 4 << 20,
        },
        2,
    );
    let mut terminal = Terminal::new(TestBackend::new(80, 24)).map_err(|e| err("terminal", e))?;
    let mut times = Vec::with_capacity(frames);
    for i in 0..frames {
        let done = ((i as u64 + 1) * 4096).min(4 << 20);
        feed(
            &mut m,
            EngineEvent::Progress {
                index: 6,
                done,
                total: 4 << 20,
                bytes_per_s: 4.0e6,
                eta_s: Some(1.0),
                overall: 0.5,
            },
            3 + i as u64,
        );
        let t = Instant::now();
        terminal.draw(|f| view(&m, f)).map_err(|e| err("draw", e))?;
        times.push(t.elapsed().as_secs_f64() * 1e6);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    Ok((q(0.5), q(0.99), names.len()))
}

#[cfg(test)]
mod tests {
    use super::frames_in_log;

    #[test]
    fn frames_are_read_from_the_last_report_in_a_log() {
        let log = "x\n2025 INFO the console drew 12 frames for 340 messages (9 ticks)\n\
                   2025 INFO the console drew 57 frames for 1200 messages (80 ticks)\n";
        assert_eq!(frames_in_log(log), Some((57, 1200)));
        assert_eq!(frames_in_log("nothing here"), None);
        assert_eq!(frames_in_log("the console drew many frames"), None);
    }
}
