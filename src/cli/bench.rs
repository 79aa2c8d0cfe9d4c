//! `qrescue bench`: measures what the issues ask for and prints a table (never a pass/fail):
//! Sahara upload of a 600 KiB programmer in-process and over a pty; flash throughput of a
//! 64 MiB image in-process and over a pty with SHA-256 on (journaled, as `qrescue flash`
//! runs) and in-process without (MB/s and CPU seconds per GiB); peak RSS of `qrescue flash
//! PACKAGE` writing a 1 GiB package through a pty to `qrescue sim` (it must stream, not load
//! images); the latency from an emulated device's appearance to its first Sahara packet
//! answered, over 200 appearances of a boot loop followed through the emulator's announcement
//! socket; the resume cost ([`super::bench_resume`]); station scaling
//! ([`super::bench_station`]); and the console's figures ([`super::bench_console`]).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::cli::args::BenchArgs;
use crate::cli::output::{self, Output};
use crate::device::sim_source::SimSource;
use crate::device::sim_wire::SimHeader;
use crate::device::{DeviceChange, DeviceSource};
use crate::engine::events::{EngineEvent, StepKind};
use crate::engine::flash::{self, FlashJob, FlashPlan};
use crate::engine::journal::JournalStore;
use crate::engine::resume::{flash_resumable, Link, ResumeOptions};
use crate::engine::sahara::{SaharaConfig, SaharaSession};
use crate::protocol::sahara::packet::Packet;
use crate::sim::announce::Announcer;
use crate::sim::device::DeviceConfig;
use crate::sim::elf::{self, ElfClass};
use crate::sim::enumerate::{self, BootLoop, Schedule, UsbNotice};
use crate::sim::firehose::programmer::{Programmer, ProgrammerOptions};
use crate::sim::firehose::storage::StorageProfile;
use crate::sim::hub::UsbHub;
use crate::sim::inproc::InProcessModem;
use crate::sim::profile::Profile;
use crate::transport::pipe;
use crate::transport::pty::PtyDevice;
use crate::transport::serial::SerialTransport;
use crate::transport::{read_exact, Framing, Transport};
use crate::{Error, ErrorKind};

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub detail: String,
}

fn fig(name: &str, value: f64, unit: &str, detail: String) -> Figure {
    Figure {
        name: name.into(),
        value,
        unit: unit.into(),
        detail,
    }
}

fn bench_error(what: impl Into<String>, e: impl std::fmt::Display) -> Error {
    Error::new(
        ErrorKind::Failure,
        what,
        format!("the benchmark could not run: {e}"),
        "Run with -v for details",
    )
}

/// CPU seconds (user + system) of the calling thread.
fn thread_cpu() -> f64 {
    // SAFETY: getrusage only writes the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_THREAD, &mut ru);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// CPU seconds (user + system) of the whole process.
fn process_cpu() -> f64 {
    // SAFETY: as above.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

fn tv(t: libc::timeval) -> f64 {
    t.tv_sec as f64 + t.tv_usec as f64 / 1e6
}

/// An emulated unit on a thread serving `link`, unthrottled, with a short welcome delay.
fn unit<L: Transport + 'static>(
    link: L,
    profile: Profile,
    storage: StorageProfile,
) -> InProcessModem {
    let programmer = Programmer::new(
        &storage,
        ProgrammerOptions {
            welcome_delay: Duration::from_millis(20),
            ..ProgrammerOptions::default()
        },
    );
    InProcessModem::start(link, DeviceConfig::new(profile), programmer)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Upload a 600 KiB programmer `runs` times; returns the median seconds.
fn upload_bench(over_pty: bool, runs: usize) -> crate::Result<f64> {
    let profile = Profile::by_name("ec25").expect("built-in profile");
    let image = elf::generate_programmer(&profile.identity.pk_hash, 600 * 1024, ElfClass::Elf32, 7);
    let storage = StorageProfile::by_name("nand-ec25e").expect("built-in storage");
    let mut times = Vec::new();
    for _ in 0..runs {
        let secs = if over_pty {
            let dev = PtyDevice::open().map_err(|e| bench_error("cannot open a pty", e))?;
            let path = dev.slave_path().to_path_buf();
            let _unit = unit(dev, profile.clone(), storage.clone());
            let host =
                SerialTransport::open(&path).map_err(|e| bench_error("cannot open the pty", e))?;
            timed_upload(host, &image)?
        } else {
            let (host, dev) = pipe::pair(Framing::Stream);
            let _unit = unit(dev, profile.clone(), storage.clone());
            timed_upload(host, &image)?
        };
        times.push(secs);
    }
    Ok(median(times))
}

fn timed_upload<T: Transport>(t: T, image: &[u8]) -> crate::Result<f64> {
    let mut s = SaharaSession::new(t, SaharaConfig::default());
    let started = Instant::now();
    let r = s.upload(image, &mut |_| {})?;
    if r.notes.iter().any(|n| n.contains("HELLO was not seen")) {
        return Err(bench_error(
            "the benchmark missed the HELLO",
            "timing would include the 1 s recovery",
        ));
    }
    Ok(started.elapsed().as_secs_f64())
}

/// A one-image NAND package: erase + program of a 64 MiB image into the EM12-G "cache"
/// partition (760 blocks of 256 KiB).
fn one_image_package(dir: &Path, bytes: u64) -> crate::Result<PathBuf> {
    random_file(&dir.join("image.bin"), bytes, 3)?;
    let storage = crate::sim::firehose::storage::Storage::new(
        &StorageProfile::by_name("nand-em12g").expect("built-in storage"),
    );
    let cache = storage
        .mibib_partitions()
        .and_then(|t| t.into_iter().find(|p| p.label() == "cache"))
        .ok_or_else(|| bench_error("no cache partition in the emulated EM12-G table", "?"))?;
    let start = u64::from(cache.first_block) * 64;
    let n = u64::from(cache.num_blocks) * 64;
    let xml = format!(
        "<?xml version=\"1.0\" ?>\n<data>\n  <erase PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" label=\"cache\" last_sector=\"{}\" num_partition_sectors=\"{n}\" physical_partition_number=\"0\" start_sector=\"{start}\"/>\n  <program PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" filename=\"image.bin\" label=\"cache\" last_sector=\"{}\" num_partition_sectors=\"{n}\" physical_partition_number=\"0\" start_sector=\"{start}\"/>\n</data>\n",
        start + n - 1,
        start + n - 1
    );
    let p = dir.join("rawprogram_nand_p4K_b256K_update.xml");
    std::fs::write(&p, xml).map_err(|e| bench_error("cannot write the XML", e))?;
    Ok(p)
}

struct FlashFigures {
    mb_per_s: f64,
    host_cpu_s: f64,
    process_cpu_s: f64,
}

/// Flash the one-image package `xml` into an unthrottled emulated unit. With `journal`, as
/// `qrescue flash PACKAGE` does: through [`flash_resumable`] with a journal in that folder, so
/// every image byte is hashed (SHA-256) on its way and each finished step is recorded with its
/// digest; without, the bare engine ([`flash::run`]).
fn flash_bench(over_pty: bool, xml: &Path, journal: Option<&Path>) -> crate::Result<FlashFigures> {
    let profile = Profile::by_name("rm502q").expect("built-in profile");
    let storage = StorageProfile::by_name("nand-em12g").expect("built-in storage");
    let plan = FlashPlan::from_xml(xml, None, None)?;
    let job = FlashJob {
        programmer: Some(profile.programmer(1)),
        reset: None,
        ..FlashJob::default()
    };
    let (host, _unit): (Box<dyn Transport>, InProcessModem) = if over_pty {
        let dev = PtyDevice::open().map_err(|e| bench_error("cannot open a pty", e))?;
        let path = dev.slave_path().to_path_buf();
        let unit = unit(dev, profile.clone(), storage);
        let host =
            SerialTransport::open(&path).map_err(|e| bench_error("cannot open the pty", e))?;
        (Box::new(host), unit)
    } else {
        let (host, dev) = pipe::pair(Framing::Stream);
        (Box::new(host), unit(dev, profile.clone(), storage))
    };
    let mut program = None;
    let mut program_index = None;
    let mut on_event = |e: EngineEvent| {
        if let EngineEvent::StepStarted { index, kind, .. } = &e {
            if *kind == StepKind::Program {
                program_index = Some(*index);
            }
        }
        if let EngineEvent::StepFinished {
            index,
            bytes,
            elapsed_ms,
            ..
        } = e
        {
            if Some(index) == program_index {
                program = Some((bytes, elapsed_ms));
            }
        }
    };
    let cancel = AtomicBool::new(false);
    let cpu0 = thread_cpu();
    let pcpu0 = process_cpu();
    match journal {
        Some(dir) => {
            let store = JournalStore::at(dir);
            let mut link = Some(Link {
                transport: host,
                appeared: Instant::now(),
                window: None,
                port: "bench".into(),
            });
            let mut reconnect = |_w: Duration| -> crate::Result<Option<Link>> { Ok(link.take()) };
            let opts = ResumeOptions {
                package: "bench".into(),
                return_wait: Duration::from_secs(10),
                max_attempts: 1,
                ..ResumeOptions::default()
            };
            flash_resumable(
                &mut reconnect,
                &plan,
                &job,
                &store,
                &opts,
                &mut on_event,
                &mut |_| {},
                &cancel,
            )?;
        }
        None => {
            flash::run(host, &plan, &job, &mut on_event, &cancel)?;
        }
    }
    let host_cpu_s = thread_cpu() - cpu0;
    let process_cpu_s = process_cpu() - pcpu0;
    let (bytes, ms) = program.ok_or_else(|| bench_error("no program step ran", "?"))?;
    Ok(FlashFigures {
        mb_per_s: bytes as f64 / (ms.max(1) as f64 / 1000.0) / 1e6,
        host_cpu_s,
        process_cpu_s,
    })
}

/// Write `bytes` of seeded random data to `path` in 1 MiB pieces; returns its MD5 (upper-case
/// hex, as md5.txt lists it).
fn random_file(path: &Path, bytes: u64, seed: u64) -> crate::Result<String> {
    use md5::Digest;
    use rand::{RngCore, SeedableRng};
    let mut md5 = md5::Md5::new();
    let mut f = std::io::BufWriter::new(
        std::fs::File::create(path).map_err(|e| bench_error("cannot create an image", e))?,
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buf.len() as u64) as usize;
        rng.fill_bytes(&mut buf[..n]);
        md5.update(&buf[..n]);
        std::io::Write::write_all(&mut f, &buf[..n])
            .map_err(|e| bench_error("cannot write an image", e))?;
        left -= n as u64;
    }
    std::io::Write::flush(&mut f).map_err(|e| bench_error("cannot write an image", e))?;
    Ok(hex::encode_upper(md5.finalize()))
}

/// The high-water mark of a process's resident memory (KiB), from /proc. Unlike a child's
/// `ru_maxrss`, it is not inflated by the parent's memory at fork time.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Peak RSS (KiB) of `qrescue flash PACKAGE` writing a `mib` MiB package (one image on LUN 0
/// of the emulated UFS storage) through a pty to `qrescue sim`, both child processes of this
/// one. The package path is the one people use: md5.txt checked, the plan built, the flash
/// journaled (every byte hashed) in a data folder of its own.
fn rss_bench(dir: &Path, mib: u64) -> crate::Result<(u64, u64, f64)> {
    let exe = std::env::current_exe().map_err(|e| bench_error("cannot find qrescue", e))?;
    let pkg = dir.join("rss-package");
    std::fs::create_dir_all(&pkg).map_err(|e| bench_error("cannot create the package", e))?;
    let write = |name: &str, data: &[u8]| -> crate::Result<String> {
        use md5::Digest;
        std::fs::write(pkg.join(name), data)
            .map_err(|e| bench_error("cannot write the package", e))?;
        Ok(hex::encode_upper(md5::Md5::digest(data)))
    };
    let bytes = mib << 20;
    let mut listed = vec![(
        "system.img",
        random_file(&pkg.join("system.img"), bytes, 5)?,
    )];
    listed.push((
        "rawprogram0.xml",
        write(
            "rawprogram0.xml",
            b"<?xml version=\"1.0\" ?>\n<data>\n  <program SECTOR_SIZE_IN_BYTES=\"4096\" file_sector_offset=\"0\" filename=\"system.img\" label=\"system\" num_partition_sectors=\"0\" physical_partition_number=\"0\" start_sector=\"6\"/>\n</data>\n",
        )?,
    ));
    listed.push((
        "prog_firehose_sdx55.elf",
        write(
            "prog_firehose_sdx55.elf",
            &Profile::by_name("rm502q")
                .expect("built-in")
                .for_unit(1)
                .programmer(1),
        )?,
    ));
    let mut md5txt = String::from("VERSION:1.0\nFILE:START\n");
    for (name, md5) in &listed {
        md5txt.push_str(&format!("FILE:\\{name}:{md5}\n"));
    }
    md5txt.push_str("FILE:END\n");
    std::fs::write(pkg.join("md5.txt"), md5txt)
        .map_err(|e| bench_error("cannot write the package", e))?;
    let mut sim = Command::new(&exe)
        .args(["sim", "--pty", "--profile", "rm502q", "--storage", "ufs"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| bench_error("cannot start qrescue sim", e))?;
    let mut first = String::new();
    {
        use std::io::BufRead;
        let stdout = sim.stdout.take().expect("piped");
        let mut r = std::io::BufReader::new(stdout);
        r.read_line(&mut first)
            .map_err(|e| bench_error("qrescue sim did not start", e))?;
        std::thread::spawn(move || {
            let mut sink = String::new();
            while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
                sink.clear();
            }
        });
    }
    let ready: serde_json::Value =
        serde_json::from_str(&first).map_err(|e| bench_error("qrescue sim did not start", e))?;
    let pty = ready["pty"].as_str().unwrap_or_default().to_string();
    let started = Instant::now();
    let mut flash = Command::new(&exe)
        .arg("flash")
        .arg(&pkg)
        .args(["--port", &pty, "--no-reset"])
        .env(crate::engine::outcome::DATA_DIR_ENV, dir.join("rss-data"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| bench_error("cannot start qrescue flash", e))?;
    let mut peak = 0;
    let status = loop {
        if let Some(k) = vm_hwm_kib(flash.id()) {
            peak = peak.max(k);
        }
        match flash.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(bench_error("lost the flash process", e)),
        }
    };
    let secs = started.elapsed().as_secs_f64();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sim.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let _ = sim.wait();
    if !status.success() {
        return Err(bench_error(
            "qrescue flash failed during the RSS benchmark",
            status,
        ));
    }
    Ok((peak, bytes, secs))
}

/// Latencies of [`appearance_bench`], in seconds.
struct AppearanceFigures {
    /// Appearance → the device's first answer (READ_DATA after our HELLO_RESP), per appearance.
    answered: Vec<f64>,
    /// Appearance → the Appear event read from the socket.
    delivered: Vec<f64>,
    /// Appearances whose window closed before the host got its answer.
    missed: usize,
    boot_loop: BootLoop,
}

/// The value at quantile `q` (0..=1) of sorted `v` (nearest rank).
fn device_figures(
    args: &BenchArgs,
    dir: &Path,
    runs: usize,
    figures: &mut Vec<Figure>,
) -> crate::Result<()> {
    let up = upload_bench(false, runs)?;
    figures.push(fig(
        "sahara upload 600 KiB, in-process",
        up * 1000.0,
        "ms",
        format!("median of {runs}; {}", output::rate(600.0 * 1024.0 / up)),
    ));
    let up = upload_bench(true, runs)?;
    figures.push(fig(
        "sahara upload 600 KiB, over a pty",
        up * 1000.0,
        "ms",
        format!("median of {runs}; {}", output::rate(600.0 * 1024.0 / up)),
    ));

    let mib = if args.quick { 16 } else { 64 };
    let xml = one_image_package(dir, mib << 20)?;
    let runs = [
        (false, true, "in-process, SHA-256 on"),
        (true, true, "over a pty, SHA-256 on"),
        (false, false, "in-process, bare engine"),
    ];
    for (n, (pty, sha, name)) in runs.into_iter().enumerate() {
        let reps = if args.quick { 1 } else { 3 };
        let mut all = Vec::new();
        for r in 0..reps {
            let journal = dir.join(format!("journal-{n}-{r}"));
            all.push(flash_bench(pty, &xml, sha.then_some(journal.as_path()))?);
        }
        // The run with the median rate, whole (its CPU figures belong to it).
        all.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
        let f = &all[all.len() / 2];
        let how = if sha {
            "journaled as `qrescue flash` runs: every byte hashed, each step recorded"
        } else {
            "flash::run without a journal, nothing hashed"
        };
        figures.push(fig(
            &format!("flash {mib} MiB NAND image, {name}"),
            f.mb_per_s,
            "MB/s",
            format!(
                "median of {reps}; {how}; 8 KiB payloads; host thread CPU {:.2} s = {:.1} CPU s/GiB; whole process {:.2} s (incl. emulator)",
                f.host_cpu_s,
                f.host_cpu_s * 1024.0 / mib as f64,
                f.process_cpu_s
            ),
        ));
    }

    let rss_mib = if args.quick { 64 } else { 1024 };
    let (rss_kib, bytes, secs) = rss_bench(dir, rss_mib)?;
    figures.push(fig(
        &format!("peak RSS of qrescue flash, {rss_mib} MiB package"),
        rss_kib as f64 / 1024.0,
        "MiB",
        format!(
            "VmHWM; `qrescue flash PACKAGE` (md5.txt check, journal, SHA-256), one {} image on emulated UFS, through a pty to qrescue sim, in {:.1} s ({})",
            output::bytes(bytes),
            secs,
            output::rate(bytes as f64 / secs.max(1e-6))
        ),
    ));

    let appearances = if args.quick { 40 } else { 200 };
    let a = appearance_bench(dir, appearances)?;
    let ms = |v: f64| v * 1000.0;
    let n = a.answered.len();
    let how = format!(
        "{n} of {appearances} appearances answered ({} missed the window) of an in-process EC25 \
         boot loop ({} ms period, {} ms window), followed through its socket",
        a.missed,
        a.boot_loop.period.as_millis(),
        a.boot_loop.window.as_millis()
    );
    figures.push(fig(
        "appearance -> first Sahara answer, median",
        ms(quantile(&a.answered, 0.5)),
        "ms",
        format!(
            "{how}; min {:.2} ms, max {:.2} ms; event delivered after {:.2} ms (median)",
            ms(a.answered[0]),
            ms(a.answered[n - 1]),
            ms(quantile(&a.delivered, 0.5))
        ),
    ));
    figures.push(fig(
        "appearance -> first Sahara answer, p99",
        ms(quantile(&a.answered, 0.99)),
        "ms",
        format!(
            "open pty, read HELLO, send HELLO_RESP, get READ_DATA; event delivery p99 {:.2} ms",
            ms(quantile(&a.delivered, 0.99))
        ),
    ));

    Ok(())
}

fn quantile(v: &[f64], q: f64) -> f64 {
    let rank = (q * v.len() as f64).ceil() as usize;
    v[rank.clamp(1, v.len()) - 1]
}

/// The host's side of one appearance: open the pty, read HELLO, answer it, and return when the
/// device's first request (READ_DATA) arrived.
fn answer_first_packet(tty: &Path, within: Duration) -> Result<Instant, String> {
    let mut host = SerialTransport::open(tty).map_err(|e| e.to_string())?;
    let mut hello = [0u8; 0x30];
    read_exact(&mut host, &mut hello, within).map_err(|e| e.to_string())?;
    match Packet::parse(&hello) {
        Ok((Packet::Hello { .. }, _)) => {}
        other => return Err(format!("expected HELLO, got {other:?}")),
    }
    let resp = Packet::HelloResp {
        version: 2,
        version_supported: 1,
        status: 0,
        mode: 0,
        reserved: [0; 6],
    };
    host.write(&resp.encode(), within)
        .map_err(|e| e.to_string())?;
    let mut req = [0u8; 20];
    read_exact(&mut host, &mut req, within).map_err(|e| e.to_string())?;
    let at = Instant::now();
    match Packet::parse(&req) {
        Ok((Packet::ReadData { .. }, _)) => Ok(at),
        other => Err(format!("expected READ_DATA, got {other:?}")),
    }
}

/// An in-process EC25 in a boot loop (`count` appearances) on the emulated bus, announced on a
/// real socket; this thread follows the socket with [`SimSource`] like `qrescue watch --sim`
/// does, and for every appearance opens the pty as soon as the Appear arrives, reads HELLO,
/// sends HELLO_RESP and waits for READ_DATA.
fn appearance_bench(dir: &Path, count: u64) -> crate::Result<AppearanceFigures> {
    let boot_loop = BootLoop {
        period: Duration::from_millis(25),
        window: Duration::from_millis(20),
    };
    let profile = Profile::by_name("ec25").expect("built-in profile");
    let storage = StorageProfile::by_name("nand-ec25e").expect("built-in storage");
    let hub = UsbHub::new();
    let socket = dir.join("bench-sim.sock");
    let header = SimHeader::new(std::process::id(), "ec25", Some(boot_loop.info()));
    let announcer = Announcer::bind(&socket, &header, &hub)?;
    let mut source = SimSource::connect(&socket)?;
    // When each appearance was published (index = appearance number).
    let appeared: Arc<Mutex<Vec<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let unit = {
        let (hub, appeared, stop) = (hub.clone(), appeared.clone(), stop.clone());
        std::thread::Builder::new()
            .name("bench-boot-loop".into())
            .spawn(move || {
                let mut cfg = DeviceConfig::new(profile);
                // Short reads so a closing 20 ms window is noticed promptly (the default 50 ms
                // would stretch every appearance past its period).
                cfg.poll = Duration::from_millis(5);
                let mut programmer = Programmer::new(&storage, ProgrammerOptions::default());
                let schedule = Schedule {
                    boot_loop: Some(boot_loop),
                    limit: Some(count),
                    ..Schedule::default()
                };
                enumerate::run_on_usb(&mut cfg, &mut programmer, &hub, schedule, &stop, &mut |n| {
                    if let UsbNotice::Appear { .. } = n {
                        if let Ok(mut v) = appeared.lock() {
                            v.push(Instant::now());
                        }
                    }
                })
            })
            .map_err(|e| bench_error("cannot start the emulated boot loop", e))?
    };
    // Per appearance: when its event arrived, and when the device answered (None: missed).
    let mut seen: Vec<(Instant, Option<Instant>)> = Vec::new();
    let mut vanished = 0u64;
    let mut failure = None;
    while vanished < count {
        match source.next_event(Duration::from_secs(10)) {
            Ok(Some(e)) => match &e.change {
                DeviceChange::Appear { device } => {
                    let got = Instant::now();
                    let tty = device.interface(0).and_then(|i| i.tty.clone());
                    let answer = tty.and_then(|t| {
                        answer_first_packet(Path::new(&t), boot_loop.period)
                            .map_err(|e| tracing::debug!(error = %e, "missed an appearance"))
                            .ok()
                    });
                    seen.push((got, answer));
                }
                DeviceChange::Vanish { .. } => vanished += 1,
            },
            Ok(None) => {
                failure = Some(bench_error(
                    "the emulated boot loop stalled",
                    "no appear/vanish for 10 s",
                ));
                break;
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    stop.store(true, Ordering::SeqCst);
    let ended = unit.join();
    announcer.shutdown();
    if let Some(e) = failure {
        return Err(e);
    }
    match ended {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return Err(bench_error("the emulated boot loop failed", e)),
        Err(_) => return Err(bench_error("the emulated boot loop crashed", "panic")),
    }
    let appeared = appeared.lock().map(|v| v.clone()).unwrap_or_default();
    let mut figures = AppearanceFigures {
        answered: Vec::new(),
        delivered: Vec::new(),
        missed: 0,
        boot_loop,
    };
    for (at, (got, answer)) in appeared.iter().zip(&seen) {
        figures
            .delivered
            .push(got.saturating_duration_since(*at).as_secs_f64());
        match answer {
            Some(t) => figures
                .answered
                .push(t.saturating_duration_since(*at).as_secs_f64()),
            None => figures.missed += 1,
        }
    }
    if figures.answered.is_empty() {
        return Err(bench_error(
            "no emulated appearance was answered in time",
            format!("all {count} windows closed first (is the machine very busy?)"),
        ));
    }
    figures.answered.sort_by(|a, b| a.total_cmp(b));
    figures.delivered.sort_by(|a, b| a.total_cmp(b));
    Ok(figures)
}

pub fn run(args: &BenchArgs, out: &Output) -> crate::Result<()> {
    if args.station_only {
        return crate::cli::bench_station::run(args.quick, out);
    }
    let dir = tempfile::tempdir().map_err(|e| bench_error("cannot create a temp folder", e))?;
    let mut figures = Vec::new();
    let runs = if args.quick { 3 } else { 9 };
    out.line("Measuring (the emulator runs unthrottled, in this process unless noted)…");
    if !args.console_only {
        device_figures(args, dir.path(), runs, &mut figures)?;
        crate::cli::bench_resume::figures(args.quick, dir.path(), &mut figures)?;
        figures.extend(crate::cli::bench_station::figures(args.quick)?);
    }

    let idle = Duration::from_secs(if args.quick { 3 } else { 10 });
    let c = crate::cli::bench_console::measure(idle, if args.quick { 200 } else { 2000 })?;
    figures.push(fig(
        "console: time to first frame (demo, 80x24 pty)",
        c.first_frame_ms,
        "ms",
        "spawn of `qrescue demo` on a pty until the device pane is on the wire".into(),
    ));
    figures.push(fig(
        "console: terminal bytes/s while idle",
        c.idle_bytes_per_s,
        "B/s",
        format!(
            "80x24 pty, a normal-mode modem listed, nothing animating, watched {:.1} s",
            c.idle_secs
        ),
    ));
    figures.push(fig(
        "console: terminal bytes/s during a flash",
        c.flash_bytes_per_s,
        "B/s",
        format!(
            "80x24 pty, demo package (10 partitions, ~4 MB/s like real NAND) from y to the end: {} in {:.1} s",
            output::bytes(c.flash_bytes),
            c.flash_secs
        ),
    ));
    let st = crate::cli::bench_console::measure_station(16)?;
    figures.push(fig(
        "console: terminal bytes/s during a 16-device station run",
        st.bytes_per_s,
        "B/s",
        format!(
            "80x24 pty, `demo --scenario station --units {} --fast` from y to the summary: {} in {:.1} s{}",
            st.modems,
            output::bytes(st.bytes),
            st.secs,
            st.frames
                .map(|(f, m)| format!("; {f} frames for {m} messages in the session"))
                .unwrap_or_default()
        ),
    ));
    figures.push(fig(
        "console: frame render time, median",
        c.render_median_us,
        "us",
        format!(
            "view + diff of a flash screen with {} partitions at 80x24 (TestBackend), p99 {:.0} us",
            c.partitions, c.render_p99_us
        ),
    ));

    out.json_line(&serde_json::json!({ "event": "bench", "figures": figures }));
    out.line(format!("{:<58} {:>12}  detail", "figure", "value"));
    for f in &figures {
        out.line(format!(
            "{:<58} {:>8.2} {:<4} {}",
            f.name, f.value, f.unit, f.detail
        ));
    }
    Ok(())
}
