//! The command line (clap). One variant per subcommand; runners live beside this file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::sim::faults::Fault;

#[derive(Debug, Parser)]
#[command(
    name = "qrescue",
    version,
    about = "Recovery console for Quectel (Qualcomm-based) cellular modems",
    long_about = "Recovery console for Quectel (Qualcomm-based) cellular modems.\n\n\
        Talks Sahara and Firehose to modems in emergency download mode (05c6:9008) and crash-dump \
        mode (05c6:900e), and ships an emulated modem (`qrescue sim`, `qrescue demo`) so anything \
        can be rehearsed without hardware.\n\n\
        Exit codes: 0 ok, 1 failure, 2 usage, 3 no device, 4 permission, 5 verification mismatch, \
        6 device lost, 130 interrupted."
)]
pub struct Cli {
    /// Print machine-readable JSON (one object per line) instead of human text.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log detail on stderr (or in --log-file): -v info, -vv debug, -vvv trace.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,

    /// Write logs to this file instead of stderr.
    #[arg(long, global = true, value_name = "FILE")]
    pub log_file: Option<PathBuf>,

    /// Record the session (device traffic, phases; serials and IMEIs redacted, images only as
    /// length + sha256) to this new JSONL file, for a bug report or `qrescue replay`.
    #[arg(long, global = true, value_name = "FILE")]
    pub record: Option<PathBuf>,

    /// Colours: `auto` (at a terminal, unless NO_COLOR is set to something), `always`, `never`.
    #[arg(long, global = true, value_enum, default_value_t = ColorArg::Auto, value_name = "WHEN")]
    pub color: ColorArg,

    /// The console prints plain lines (or --json events) instead of its full screen, as it does
    /// when stdout is not a terminal (cron jobs, scripts, pipes).
    #[arg(long, global = true)]
    pub no_tui: bool,

    /// Never ring the terminal bell.
    #[arg(long, global = true)]
    pub no_bell: bool,

    /// The console's options (`qrescue` without a subcommand).
    #[command(flatten)]
    pub console: ConsoleArgs,

    /// Without a subcommand, `qrescue` opens the console: every modem on USB, live, with a
    /// guided rescue.
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// When to use colours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorArg {
    Auto,
    Always,
    Never,
}

/// Options of the console (`qrescue` without a subcommand).
#[derive(Debug, Args)]
pub struct ConsoleArgs {
    /// The firmware package (folder or .zip) to offer for a rescue.
    #[arg(long, value_name = "PATH")]
    pub package: Option<PathBuf>,
    /// The modem's current firmware revision (what AT+QGMR prints), for the compatibility check.
    #[arg(long, value_name = "REV")]
    pub modem_revision: Option<String>,
    /// Also follow an emulator: the socket named in the first line of `qrescue sim`
    /// (repeatable).
    #[arg(long, value_name = "SOCKET")]
    pub sim: Vec<PathBuf>,
    /// Do not watch this host's USB.
    #[arg(long)]
    pub no_usb: bool,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the built-in emulated modem and walk through a rescue against it.
    Demo(DemoArgs),
    /// Start an emulated modem (boot ROM + Firehose programmer) and expose it as a pty.
    Sim(SimArgs),
    /// Who the modem is: in normal mode model, revision, IMEI, ICCID, CFUN, USB composition
    /// (AT) and the revision over DIAG; in download mode (EDL 9008 / 900e) the boot ROM's
    /// version, serial, HW ID and PK hash (Sahara).
    Info(InfoArgs),
    /// Save the RAM regions of a crashed modem (900e, Sahara memory debug) with a sha256 manifest.
    Ramdump(RamdumpArgs),
    /// Upload a Firehose programmer over Sahara and leave the modem in Firehose.
    SaharaUpload(UploadArgs),
    /// Flash a firmware package (folder or .zip) through Firehose, after checking it; or, for
    /// experts, a rawprogram/patch XML pair.
    Flash(FlashArgs),
    /// Read a partition or a sector range back to a file.
    Read(ReadArgs),
    /// Ask the programmer about the storage (geometry, size, type).
    StorageInfo(StorageInfoArgs),
    /// Measure upload and flash throughput, CPU time and memory against the emulator.
    Bench(BenchArgs),
    /// Play back a recording (`--record FILE`): its device timeline, streams and phases.
    Replay(ReplayArgs),
    /// Follow modems live: every appear/vanish with its mode and identity, boot loops with
    /// their period, window and the next predicted window.
    Watch(WatchArgs),
    /// List the modems plugged in: mode (EDL, crash dump, normal …), model, serial, speed and
    /// ports by interface number.
    List(ListArgs),
    /// Print udev rules (access for EDL/Quectel/fastboot devices, ModemManager kept off EDL
    /// and DM ports) with how to install them.
    UdevRules,
    /// Before a flash or backup: which programs hold the modem's ports (ModemManager, gpsd,
    /// router daemons, terminals, another qrescue) and how to free each, and the free space
    /// for backups.
    Preflight(PreflightArgs),
    /// Firmware packages: what a package holds and what it would do to a modem.
    #[command(subcommand)]
    Package(PackageCommand),
    /// Recent flashes and how they ended (running, finished, failed, cancelled, interrupted),
    /// also those that ran on after the terminal went away.
    Status(StatusArgs),
    /// Back up the modem's own data (calibration, IMEI: efs2 / modemst1 / modemst2 / fsg …, or
    /// every partition with --full), verified and kept with its identity; `backup list`,
    /// `backup verify BACKUP`.
    Backup(BackupArgs),
    /// Write a backup back to the modem it was taken from (same unit only), after showing the
    /// plan and a typed confirmation.
    Restore(RestoreArgs),
    /// The guided workflow to a verdict, picked by the modem's mode: update a working modem
    /// (normal mode: identify, check, back up, switch to EDL, flash, verify), unbrick one in
    /// 9008, or save a crashed one's RAM dump (900e) and bring it to EDL.
    Update(UpdateArgs),
    /// Switch a modem in normal mode to download mode (EDL, 05c6:9008) over DIAG and print the
    /// port it comes back on.
    Edl(EdlArgs),
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// How many runs to show, newest first.
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub limit: usize,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    /// The recording (a .jsonl file written with --record).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Playback speed of the device timeline: 1 real time, 10 ten times faster, 0 at once.
    #[arg(long, default_value_t = 1.0, value_name = "X")]
    pub speed: f64,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Also list devices that are not modems.
    #[arg(long)]
    pub all: bool,
    /// Classify a pasted `lsusb -v`, `lsusb`, `usb-devices` or dmesg text instead of this
    /// host's USB (`-` reads stdin).
    #[arg(long, value_name = "FILE")]
    pub from_text: Option<PathBuf>,
    /// Read the devices from the sysfs tree under DIR instead of this host's USB (tests).
    #[arg(long, value_name = "DIR", hide = true, conflicts_with = "from_text")]
    pub sysfs_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PreflightArgs {
    /// A port to check (repeatable), e.g. /dev/ttyUSB2. Default: every modem plugged in, with
    /// all its ttys and its USB device node.
    #[arg(long, value_name = "PATH")]
    pub port: Vec<PathBuf>,
    /// The folder backups will go to; its free space is checked.
    #[arg(long, value_name = "DIR", default_value = ".")]
    pub backup_dir: PathBuf,
    /// Space the backup needs (e.g. 512M, 2G, or bytes); without it the free space is only
    /// reported.
    #[arg(long, value_name = "SIZE", value_parser = crate::preflight::space::parse_size)]
    pub need: Option<u64>,
    /// Read sys/, proc/ and dev/ under DIR instead of this host's (tests).
    #[arg(long, value_name = "DIR", hide = true)]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Smaller sizes and fewer repetitions (for a quick look; the README figures use the full run).
    #[arg(long)]
    pub quick: bool,
    /// Measure only the console figures (terminal bytes/s, first frame, render time).
    #[arg(long)]
    pub console_only: bool,
    /// Measure only station scaling (1, 4, 8, 16 emulated modems at 4 MB/s each, in parallel).
    #[arg(long, conflicts_with = "console_only")]
    pub station_only: bool,
}

#[derive(Debug, Args)]
pub struct PortArgs {
    /// The modem's port: a tty such as /dev/ttyUSB0, the pty printed by `qrescue sim --pty`, or
    /// USB: `usb` (the one modem in download/crash-dump mode), `usb:3-1.2` (location),
    /// `usb:serial=49CBD7EF`, `usb:bus=3,addr=5`.
    #[arg(long, value_name = "PATH|usb[:WHICH]", value_parser = crate::cli::port::PortSpec::parse)]
    pub port: crate::cli::port::PortSpec,
    /// USB: no zero-length packet after writes that are a multiple of the packet size (needed
    /// on MT7621 routers and SDX20 modems).
    #[arg(long)]
    pub no_zlp: bool,
    /// USB: write chunk size in bytes, rounded down to whole packets (default 1048576).
    #[arg(long, value_name = "BYTES", value_parser = clap::value_parser!(u32).range(1..=(64 << 20)))]
    pub usb_chunk: Option<u32>,
}

/// How to reach a modem without naming its download-mode port: its normal-mode ports, an
/// emulator, or the one modem on this host's USB.
#[derive(Debug, Clone, Args)]
pub struct FindArgs {
    /// Normal mode: the modem's AT port (e.g. /dev/ttyUSB2: interface 2 on most Quectel
    /// modules; `qrescue list` shows each port by interface).
    #[arg(long, value_name = "TTY")]
    pub at: Option<PathBuf>,
    /// Normal mode: the modem's DM (DIAG) port (e.g. /dev/ttyUSB0: interface 0).
    #[arg(long, value_name = "TTY")]
    pub dm: Option<PathBuf>,
    /// The one modem of a running emulator: the socket named in the first line of `qrescue sim`.
    #[arg(long, value_name = "SOCKET", conflicts_with_all = ["at", "dm"])]
    pub sim: Option<PathBuf>,
    /// Read the USB devices from the sysfs tree under DIR instead of this host's USB (tests).
    #[arg(long, value_name = "DIR", hide = true, conflicts_with_all = ["at", "dm", "sim"])]
    pub sysfs_root: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    // Without --port, info finds the modem (or uses --at/--dm); "-" stands for "not given".
    mut_arg("port", |a| a
        .required(false)
        .default_value("-")
        .hide_default_value(true)
        .conflicts_with_all(["at", "dm", "sim", "sysfs_root"])),
    after_help = "Without --port, --at or --dm, qrescue finds the one modem (on USB, or with --sim \
        on a running `qrescue sim`) and asks it in the way its mode allows. In normal mode only \
        reading commands are sent (ATI, AT+QGMR, AT+CGSN, AT+QCCID, AT+CFUN?, AT+QCFG=\"usbnet\", \
        AT+QSECBOOT?, DIAG 7C); nothing changes the USB composition.\n\n\
        Exit codes: 0 identified, 1 failed, 2 usage (e.g. several modems: name one), 3 no modem, \
        4 permission, 6 the modem was lost."
)]
pub struct InfoArgs {
    #[command(flatten)]
    pub port: PortArgs,
    #[command(flatten)]
    pub find: FindArgs,
}

#[derive(Debug, Args)]
pub struct RamdumpArgs {
    #[command(flatten)]
    pub port: PortArgs,
    /// Folder for the region files and manifest.json (created if missing).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct UploadArgs {
    #[command(flatten)]
    pub port: PortArgs,
    /// The Firehose programmer (prog_*.mbn / *.elf from the modem's own firmware package).
    #[arg(value_name = "PROGRAMMER")]
    pub programmer: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    Nand,
    Emmc,
    Ufs,
}

#[derive(Debug, Args)]
pub struct FirehoseArgs {
    #[command(flatten)]
    pub port: PortArgs,
    /// The programmer to upload if the modem is still in Sahara (default: prog_*.mbn / *.elf next
    /// to the rawprogram XML). Not needed when a programmer is already running.
    #[arg(long, value_name = "FILE")]
    pub programmer: Option<PathBuf>,
    /// Storage type (default: derived from the XML, or NAND).
    #[arg(long, value_enum)]
    pub storage: Option<StorageArg>,
}

#[derive(Debug, Args)]
#[command(
    // --dry-run needs no port: the plan runs against an emulated modem in this process.
    // --all / --devices (station) find their modems themselves.
    mut_arg("port", |a| a
        .required(false)
        .required_unless_present_any(["dry_run", "sim", "all", "devices"])
        .conflicts_with_all(["dry_run", "sim", "all", "devices"])
        .default_value_ifs([
            ("dry_run", clap::builder::ArgPredicate::IsPresent, Some("-")),
            ("sim", clap::builder::ArgPredicate::IsPresent, Some("-")),
            ("all", clap::builder::ArgPredicate::IsPresent, Some("-")),
            ("devices", clap::builder::ArgPredicate::IsPresent, Some("-")),
        ])),
    after_help = "Exit codes: 0 flashed (or dry run finished), 1 refused or failed (nothing is sent \
        when the package is refused), 2 usage (e.g. the package holds several XML sets: choose \
        one with --set)."
)]
pub struct FlashArgs {
    #[command(flatten)]
    pub fh: FirehoseArgs,
    /// The firmware package: its folder (the one with md5.txt and update/) or its .zip. It is
    /// checked in full first (md5.txt, the plan, compatibility, the device-unique-data guard).
    #[arg(value_name = "PACKAGE", conflicts_with = "rawprogram")]
    pub package: Option<PathBuf>,
    #[command(flatten)]
    pub choice: PackageChoiceArgs,
    /// Run the whole plan against an emulated modem whose flash matches the package (no port,
    /// nothing leaves this computer) and show every step a real flash would take.
    #[arg(long)]
    pub dry_run: bool,
    /// Expert form instead of PACKAGE: a rawprogram XML (e.g.
    /// update/firehose/rawprogram_nand_p4K_b256K_update.xml), flashed without the package checks.
    #[arg(long, value_name = "XML", required_unless_present = "package")]
    pub rawprogram: Option<PathBuf>,
    /// With --rawprogram: the patch XML applied after programming (only DISK patches go to the
    /// device).
    #[arg(long, value_name = "XML", requires = "rawprogram")]
    pub patch: Option<PathBuf>,
    /// Do not reset the modem at the end.
    #[arg(long)]
    pub no_reset: bool,
    /// Instead of --port: follow an emulator (the socket named in the first line of `qrescue
    /// sim --pty`); the flash starts the moment its unit appears in download mode and goes on
    /// when it comes back (drops, boot-loop windows). With --all / --devices: repeatable, every
    /// emulator's modems are candidates.
    #[arg(
        long,
        value_name = "SOCKET",
        requires = "package",
        conflicts_with = "dry_run"
    )]
    pub sim: Vec<PathBuf>,
    /// Ignore this modem's flash journal and start from the first step (by default a flash
    /// that was interrupted continues where it stopped, skipping the finished steps).
    #[arg(long, requires = "package", conflicts_with = "dry_run")]
    pub fresh: bool,
    /// Many modems at once (`--all`, `--devices`).
    #[command(flatten)]
    pub station: StationArgs,
}

/// `qrescue flash PACKAGE --all | --devices SEL…`: every matching modem flashed in parallel.
#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("station_mode").args(["all", "devices"]).multiple(false)))]
pub struct StationArgs {
    /// Flash every modem found (in download mode 9008, or in normal mode: switched to 9008
    /// first), in parallel, each verified after its reset.
    #[arg(long, requires = "package", conflicts_with_all = ["devices", "dry_run", "no_reset"])]
    pub all: bool,
    /// Flash these modems in parallel: usb:3-1.2, usb:serial=49CBD7EF, usb:bus=3,addr=5, usb
    /// (every modem on this host's USB), sim (every modem of the --sim emulators), sim:N.
    #[arg(long, value_name = "SEL", num_args = 1.., requires = "package",
        conflicts_with_all = ["dry_run", "no_reset"],
        value_parser = clap::builder::ValueParser::new(|s: &str| s.parse::<crate::engine::station::Selector>()))]
    pub devices: Vec<crate::engine::station::Selector>,
    /// Do not look at this host's USB (only the --sim emulators).
    #[arg(requires = "station_mode", long)]
    pub no_usb: bool,
    /// Also write the run's summary (one row per modem) to FILE: CSV for `.csv`, else JSON
    /// (repeatable). It is always written to the run folder too.
    #[arg(requires = "station_mode", long, value_name = "FILE")]
    pub summary: Vec<PathBuf>,
    /// The run folder for each modem's log and recording and the summary (default: a new
    /// folder under $QRESCUE_DATA_DIR/station, else ~/.local/share/qrescue/station).
    #[arg(requires = "station_mode", long, value_name = "DIR")]
    pub logs: Option<PathBuf>,
    /// Record each modem's traffic to its own recording in the run folder.
    #[arg(requires = "station_mode", long)]
    pub record_each: bool,
    /// Most time to wait for each modem to come back in normal mode after its reset.
    #[arg(
        requires = "station_mode",
        long,
        value_name = "SECONDS",
        default_value_t = 120.0
    )]
    pub return_wait: f64,
}

/// How to read a package: which XML set, against which modem revision.
#[derive(Debug, Args)]
pub struct PackageChoiceArgs {
    /// The XML set to use when the package holds several: `update` (leaves the modem's own
    /// data alone), `factory`, a geometry such as `p4K_b256K`, or a set id.
    #[arg(long, value_name = "NAME")]
    pub set: Option<String>,
    /// The modem's current firmware revision (what AT+QGMR prints, e.g.
    /// EC25EFAR06A08M4G_01.001.01.001): the package is checked against it (model, variant,
    /// baseline, downgrade, anti-rollback family). Without it compatibility is not checked.
    #[arg(long, value_name = "REV")]
    pub modem_revision: Option<String>,
    /// Do not check md5.txt (the sha256 of every file used is still recorded and checked).
    #[arg(long)]
    pub skip_md5: bool,
    /// Flash a package the compatibility check refused: type the exact phrase the refusal
    /// shows. Accepted only with a verified backup of this modem on file.
    #[arg(long = "override", value_name = "PHRASE")]
    pub override_phrase: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum PackageCommand {
    /// Check a package (folder or .zip) and show what it would do: identity, programmer,
    /// md5.txt, the XML sets, the plan step by step, the device-unique data it touches,
    /// compatibility with the modem, and the verdict.
    #[command(
        after_help = "Exit codes: 0 the package is flashable, 1 it is refused (the reasons are \
        printed; with --json the report is one JSON object, followed by the error object), \
        2 usage (e.g. the package holds several XML sets: choose one with --set)."
    )]
    Inspect(InspectArgs),
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The package: its folder (the one with md5.txt and update/) or its .zip.
    #[arg(value_name = "PATH")]
    pub path: PathBuf,
    #[command(flatten)]
    pub choice: PackageChoiceArgs,
    /// A programmer file to use instead of the package's own.
    #[arg(long, value_name = "FILE")]
    pub programmer: Option<PathBuf>,
    /// Storage type, when the XML does not make it clear.
    #[arg(long, value_enum)]
    pub storage: Option<StorageArg>,
}

#[derive(Debug, Args)]
pub struct ReadArgs {
    #[command(flatten)]
    pub fh: FirehoseArgs,
    /// Partition label to read (looked up in the device's partition table).
    #[arg(long, conflicts_with_all = ["start", "count"])]
    pub label: Option<String>,
    /// First sector to read.
    #[arg(long, requires = "count")]
    pub start: Option<u64>,
    /// Number of sectors to read.
    #[arg(long, requires = "start")]
    pub count: Option<u64>,
    /// Physical partition (LUN).
    #[arg(long, default_value_t = 0)]
    pub lun: u32,
    /// Output file (must not exist).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Debug, Args)]
pub struct StorageInfoArgs {
    #[command(flatten)]
    pub fh: FirehoseArgs,
    /// Physical partition (LUN).
    #[arg(long, default_value_t = 0)]
    pub lun: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimMode {
    /// Emergency download mode (05c6:9008): the boot ROM waits for a programmer.
    Edl,
    /// Crash-dump mode (05c6:900e): the boot ROM offers its RAM over Sahara memory debug.
    Crash,
    /// Normal mode: the unit leaves the factory flashed (boot chain, firmware, EFS with its IMEI
    /// and RF calibration), boots from its storage and serves its DM (DIAG), NMEA, AT and modem
    /// ports on four ptys. The DIAG EDL command switches it to 05c6:9008; a Firehose reset boots
    /// it from storage again (+CFUN: 5 with the calibration erased, 7 with another variant's
    /// firmware).
    Normal,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    /// Which personality the emulated boot ROM has.
    #[arg(long, value_enum, default_value_t = SimMode::Edl)]
    pub mode: SimMode,
    /// Unit profile (e.g. ec25, rm502q, rm520n).
    #[arg(long, default_value = "rm502q")]
    pub profile: String,
    /// Seed for everything random (unit identity, bad blocks, fault positions).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the model's OEM signing key (PK hash) whatever --seed says, as real units of one
    /// OEM share it: one package's programmer then loads on every such unit (e.g. several
    /// `qrescue sim` for a `qrescue flash PACKAGE --all` rehearsal).
    #[arg(long)]
    pub model_key: bool,
    /// Inject a fault (repeatable), e.g. drop-after:4096, refuse-programmer, consume-hello,
    /// mid-session, delay:50, done-pending, nak:3, payload-too-large, garbled-xml:2,
    /// drop-in-raw:100000, hang:4, nand-write-fail.
    #[arg(long = "fault", value_name = "SPEC")]
    pub faults: Vec<Fault>,
    /// Expose the emulated modem as a pseudo-terminal (its path is printed as JSON).
    #[arg(long)]
    pub pty: bool,
    /// Storage behind the emulated programmer (default: the profile's).
    #[arg(long, value_enum)]
    pub storage: Option<StorageArg>,
    /// Exact emulated storage layout (overrides --storage): nand-em12g, nand-ec25e, nand-eg25g,
    /// nand-eg25g-256k-blocks, nand-eg25g-128m, emmc-msm8916, ufs-qcs6490.
    #[arg(long, value_name = "NAME")]
    pub storage_profile: Option<String>,
    /// Limit storage throughput in bytes/s (e.g. 4000000 for real NAND timing).
    #[arg(long, value_name = "BYTES_PER_S")]
    pub throttle: Option<u64>,
    /// On exit, write a JSON report (sha256 of every partition region, commands seen).
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Write a fake Firehose programmer signed for this unit to FILE and exit.
    #[arg(long, value_name = "FILE")]
    pub write_programmer: Option<PathBuf>,
    /// Write a complete fake Quectel-layout firmware package for this profile into DIR and exit.
    #[arg(long, value_name = "DIR")]
    pub emit_package: Option<PathBuf>,
    /// With --emit-package: total size of the partition images in MiB.
    #[arg(long, value_name = "MIB", default_value_t = 8)]
    pub package_mib: u64,
    /// Make the modem come and go like one in a boot loop: it appears every PERIOD seconds and
    /// stays WINDOW seconds (fractions allowed, WINDOW < PERIOD), each time on a new pty.
    #[arg(long, value_name = "PERIOD:WINDOW")]
    pub boot_loop: Option<crate::sim::enumerate::BootLoop>,
    /// Appear first in normal mode (the profile's Quectel composite, e.g. 2c7c:0800 on a
    /// SuperSpeed bus, serving its DM/NMEA/AT/modem ports as with --mode normal) for at most
    /// SECONDS, then switch: vanish and come back 2 s later as 05c6:9008 (900e with --mode
    /// crash) on the high-speed bus at another location, serving Sahara on a new pty (and looping
    /// if --boot-loop is given). A host's DIAG EDL command switches it earlier.
    #[arg(long, value_name = "SECONDS", value_parser = crate::sim::enumerate::parse_seconds)]
    pub normal_for: Option<std::time::Duration>,
    /// The Unix socket that announces appear/vanish events to watchers (`qrescue watch --sim`).
    /// Default: a fresh path in $XDG_RUNTIME_DIR or the temp folder; the first JSON line names it.
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DemoScenario {
    /// A modem in a 14 s 9008 boot loop (broken boot chain): catch a window, identify, check the
    /// package, flash, read back, and see it come back in normal mode.
    Unbrick,
    /// A working modem in normal mode and a newer package: bridge the test pins to get it into
    /// 9008, flash, and see it come back.
    Update,
    /// A crashed modem (900e): save its RAM dump.
    Crash,
    /// A package built for another variant of the modem's model: refused.
    WrongVariant,
    /// A _factory package that rewrites the modem's EFS: blocked without a verified backup.
    Factory,
    /// A production bench: several modems (--units) in 9008 on emulated hubs and a package;
    /// flash them all at once (a station run) and read the summary.
    Station,
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// What to rehearse.
    #[arg(long, value_enum, default_value_t = DemoScenario::Unbrick)]
    pub scenario: DemoScenario,
    /// Emulated storage for the demo.
    #[arg(long, value_enum, default_value_t = StorageArg::Nand)]
    pub storage: StorageArg,
    /// Unit profile.
    #[arg(long, default_value = "rm502q")]
    pub profile: String,
    /// No pauses, no NAND speed limit, and fast reboots (for scripts and tests); the boot
    /// loop keeps its real 14 s / 10 s.
    #[arg(long)]
    pub fast: bool,
    /// Keep the crash scenario's RAM dump (the factory scenario's backup) in this folder
    /// (default: a temporary one, removed).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// How many emulated modems the station scenario's bench has (2 to 32).
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=32))]
    pub units: u16,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// Also follow an emulator: the socket named in the first line of `qrescue sim`
    /// (repeatable).
    #[arg(long, value_name = "SOCKET")]
    pub sim: Vec<PathBuf>,
    /// Do not watch this host's USB.
    #[arg(long)]
    pub no_usb: bool,
    /// Ring the terminal bell when a device appears in download mode (9008).
    #[arg(long)]
    pub bell: bool,
    /// Also show devices that are not modems.
    #[arg(long)]
    pub all: bool,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(long = "for", value_name = "SECONDS")]
    pub for_secs: Option<f64>,
}

#[derive(Debug, Args)]
#[command(
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    // Not needed for `list`/`verify`, nor in normal mode; "-" stands for "not given".
    mut_arg("port", |a| a
        .required(false)
        .default_value("-")
        .hide_default_value(true)
        .conflicts_with_all(["diag", "at", "dm", "sim", "sysfs_root"])),
    after_help = "Without --port, qrescue finds the modem (on USB, or with --sim on a running \
        `qrescue sim`; or use --at/--dm): in normal mode it makes an NV/EFS backup over DIAG \
        (the IMEI and other per-unit NV items, the EFS files of the NV and calibration trees), \
        kept for reference and manual recovery (`qrescue restore` does not write it back); in \
        download mode it backs up partitions as with --port.\n\n\
        Exit codes: 0 the backup was made and verified, 1 failed (nothing is recorded), \
        2 usage, 3 no modem, 5 a verification mismatch (two reads of the modem differ, or \
        `backup verify` found a damaged file), 6 the modem was lost."
)]
pub struct BackupArgs {
    #[command(subcommand)]
    pub command: Option<BackupCommand>,
    #[command(flatten)]
    pub fh: FirehoseArgs,
    /// Back up NV items and EFS files over DIAG (the modem in normal mode) instead of
    /// partitions; the default when the modem found is in normal mode.
    #[arg(long, conflicts_with = "full")]
    pub diag: bool,
    #[command(flatten)]
    pub find: FindArgs,
    /// Back up every partition and the partition table areas, not only the modem's own data.
    #[arg(long)]
    pub full: bool,
    /// The folder that keeps the backups (default: $QRESCUE_DATA_DIR/backups, else
    /// $XDG_DATA_HOME/qrescue/backups, else ~/.local/share/qrescue/backups). Each backup is a
    /// new folder inside it; nothing is overwritten.
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Do not reset the modem at the end (it stays in the programmer).
    #[arg(long)]
    pub no_reset: bool,
}

#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// List the backups on file (oldest first): unit, time, kind, size, partitions.
    List(BackupStoreArgs),
    /// Re-read every file of a backup and compare it with the sha256 in its manifest.
    Verify(BackupVerifyArgs),
}

#[derive(Debug, Args)]
pub struct BackupStoreArgs {
    /// The folder that keeps the backups (default as for `qrescue backup`).
    #[arg(long, value_name = "DIR")]
    pub store: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct BackupVerifyArgs {
    /// The backup: its name from `qrescue backup list`, or the path of its folder.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    #[command(flatten)]
    pub store: BackupStoreArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 restored and read back, 1 refused or failed (a refusal sends \
        nothing: another unit, a damaged backup, a changed partition table, no confirmation), \
        2 usage, 5 the read-back differs from the backup, 6 the modem was lost."
)]
pub struct RestoreArgs {
    /// The backup: its name from `qrescue backup list`, or the path of its folder.
    #[arg(value_name = "BACKUP")]
    pub backup: String,
    #[command(flatten)]
    pub port: PortArgs,
    /// The programmer to upload if the modem is still in Sahara.
    #[arg(long, value_name = "FILE")]
    pub programmer: Option<PathBuf>,
    /// Restore only these partitions of the backup (repeatable, or comma separated).
    #[arg(long, value_name = "NAME", value_delimiter = ',')]
    pub only: Vec<String>,
    /// Write without asking for the typed confirmation (for scripts). Without it, qrescue asks
    /// on a terminal and refuses when there is none.
    #[arg(long)]
    pub yes: bool,
    /// Do not reset the modem at the end (it stays in the programmer).
    #[arg(long)]
    pub no_reset: bool,
    #[command(flatten)]
    pub store: BackupStoreArgs,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 flashed and verified, 1 refused or failed (a refusal \
    before the switch to EDL leaves the modem untouched), 2 usage, 3 no modem found, \
    5 flashed but NOT verified (what failed is printed), 6 the modem was lost."
)]
pub struct UpdateArgs {
    /// The firmware package: a folder or a .zip.
    #[arg(value_name = "PACKAGE")]
    pub package: PathBuf,
    /// The XML set to use when the package holds several (`update` leaves the modem's own data
    /// alone).
    #[arg(long, value_name = "NAME")]
    pub set: Option<String>,
    /// A programmer file to use instead of the package's.
    #[arg(long, value_name = "FILE")]
    pub programmer: Option<PathBuf>,
    /// Also follow an emulator: the socket named in the first line of `qrescue sim`
    /// (repeatable).
    #[arg(long, value_name = "SOCKET")]
    pub sim: Vec<PathBuf>,
    /// Do not look at this host's USB.
    #[arg(long)]
    pub no_usb: bool,
    /// Answer yes to every question (the flash, the RAM dump, the pins being bridged).
    #[arg(long)]
    pub yes: bool,
    /// The backup store (default: the data folder's `backups`).
    #[arg(long, value_name = "DIR")]
    pub backup_dir: Option<PathBuf>,
    /// Where RAM dumps of a crashed modem go (default: the data folder's `ramdumps`).
    #[arg(long, value_name = "DIR")]
    pub dump_dir: Option<PathBuf>,
    /// How long to look for the modem, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 10.0)]
    pub find: f64,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 the modem is in EDL (its port is printed), 1 the switch \
    failed, 3 no modem in normal mode found, 6 it did not appear in EDL in time."
)]
pub struct EdlArgs {
    /// Also follow an emulator: the socket named in the first line of `qrescue sim`
    /// (repeatable).
    #[arg(long, value_name = "SOCKET")]
    pub sim: Vec<PathBuf>,
    /// Do not look at this host's USB.
    #[arg(long)]
    pub no_usb: bool,
    /// How long to wait for 05c6:9008 after the switch, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 30.0)]
    pub wait: f64,
}
