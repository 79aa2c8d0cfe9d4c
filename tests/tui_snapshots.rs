//! Whole-screen snapshots of the console's views (ratatui TestBackend) at 80×24 and 160×48,
//! each with the key strings asserted, plus a sweep over sizes from 1×1 to 300×100 that no view
//! panics on. Models are built through `update` from emulated device snapshots where the
//! skeleton handles it (devices, ticks), and set directly for flows and flashes.
//!
//! This is its own test binary: tui-logger's global buffer is never initialised here, so the
//! log pane is always empty ("no log lines yet") and the screens are deterministic.

use std::path::{Path, PathBuf};

use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

use qrescue::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
use qrescue::engine::at::NormalIdentity;
use qrescue::engine::events::StepKind;
use qrescue::engine::plan::{PlanSummary, StepSummary};
use qrescue::engine::prepare::{
    CompatReport, GuardReport, Reason, Stage as CheckStage, UniqueTouch, Verdict,
};
use qrescue::package::compat::{Allow, Rule};
use qrescue::protocol::at::info::{Cfun, FirmwareRevision, Imei};
use qrescue::protocol::firehose::commands::StorageKind;
use qrescue::sim::profile::Profile;
use qrescue::sim::usb_ids::{boot_rom_snapshot, normal_mode_snapshot};
use qrescue::tui::model::{
    AtIdentity, Config, DemoInfo, FlashView, Model, Outcome, Overlay, PartRow, RowState, Stage,
};
use qrescue::tui::msg::{JobId, Msg, PlanReview, Problem};
use qrescue::tui::update::update;
use qrescue::tui::view::{pin_screen_showing, render, view};
use qrescue::workflow::verdict as wv;

// ---------------------------------------------------------------- fixtures

fn device(model: &mut Model, t_ms: u64, change: DeviceChange, initial: bool) {
    update(
        model,
        Msg::Device {
            event: DeviceEvent { t_ms, change },
            initial,
        },
    );
}

fn appear(model: &mut Model, t_ms: u64, snap: &DeviceSnapshot) {
    device(
        model,
        t_ms,
        DeviceChange::Appear {
            device: snap.clone(),
        },
        false,
    );
}

fn vanish(model: &mut Model, t_ms: u64, snap: &DeviceSnapshot) {
    device(
        model,
        t_ms,
        DeviceChange::Vanish {
            location: snap.location(),
            last: Some(snap.clone()),
        },
        false,
    );
}

fn tick(model: &mut Model, now_ms: u64) {
    update(model, Msg::Tick { now_ms });
}

fn demo_config() -> Config {
    Config {
        package: Some(PathBuf::from("/tmp/qrescue-demo/RM502QAEAAR13A02M4G.zip")),
        source: "emulated modem".into(),
        demo: Some(DemoInfo {
            scenario: "unbrick".into(),
            about: "An RM502Q stuck in a 14 s download-mode loop: catch its window and flash it."
                .into(),
        }),
        log_file: Some(PathBuf::from("/tmp/qrescue-demo/qrescue.log")),
        ..Config::default()
    }
}

fn edl_snapshot() -> DeviceSnapshot {
    let p = Profile::by_name("rm502q").unwrap();
    boot_rom_snapshot(&p, Some(Path::new("/dev/pts/7")), 5)
}

/// No device at all.
fn empty() -> Model {
    Model::new(Config::default())
}

/// An RM502Q in a 14 s 9008 loop (present 10 s each time), seen through `update`, with an
/// EC25 in normal mode that was already there when the console began. Now is 3 s into the
/// fifth window.
fn bootloop() -> Model {
    let mut m = Model::new(demo_config());
    let mut ec25 = normal_mode_snapshot(&Profile::by_name("ec25").unwrap(), 3).unwrap();
    // Another port than the RM502Q (the emulator derives both from the unit serial).
    ec25.ports = vec![9];
    device(
        &mut m,
        0,
        DeviceChange::Appear {
            device: ec25.clone(),
        },
        true,
    );
    let edl = edl_snapshot();
    for k in 0..5u64 {
        let t = 1_000 + k * 14_000;
        appear(&mut m, t, &edl);
        if k < 4 {
            vanish(&mut m, t + 10_000, &edl);
        }
    }
    tick(&mut m, 60_000);
    // Select the looping modem (the EC25 came first).
    m.selected = m
        .devices()
        .into_iter()
        .find(|d| d.device.pid == 0x9008)
        .map(|d| d.id);
    m
}

fn edl_id(m: &Model) -> qrescue::device::identity::DeviceId {
    m.devices()
        .into_iter()
        .find(|d| d.device.pid == 0x9008)
        .unwrap()
        .id
}

fn review(flashable: bool) -> PlanReview {
    let compat = if flashable {
        CompatReport::Allowed {
            modem: "RM502QAEAAR11A03M4G".into(),
            package: "RM502QAEAAR13A02M4G".into(),
            rule: Allow::Upgrade,
            note: "a later release on the same baseline".into(),
        }
    } else {
        CompatReport::Refused {
            modem: "RM502QGLAAR11A03M4G".into(),
            package: Some("RM502QAEAAR13A02M4G".into()),
            rule: Some(Rule::VariantMismatch),
            title: "firmware for another variant of this model".into(),
            why: "the modem is an RM502Q-GL, the package is for the RM502Q-AE".into(),
            next: "use the package for RM502Q-GL".into(),
            override_phrase: Some("flash RM502QAE onto RM502QGL".into()),
        }
    };
    let reasons = if flashable {
        vec![]
    } else {
        vec![Reason {
            stage: CheckStage::Compatibility,
            what: "the package is for the RM502Q-AE, the modem is an RM502Q-GL".into(),
            why: "another variant's RF configuration can leave the modem without signal".into(),
            next: "use the RM502Q-GL package, or type the override phrase with a backup".into(),
        }]
    };
    let steps: Vec<StepSummary> = [
        ("sbl", StepKind::Program, 600 << 10),
        ("tz", StepKind::Program, 1 << 20),
        ("modem", StepKind::Program, 58 << 20),
        ("cache", StepKind::Erase, 0),
        ("system", StepKind::Program, 12 << 20),
    ]
    .into_iter()
    .enumerate()
    .map(|(index, (name, kind, bytes))| StepSummary {
        index,
        name: name.into(),
        kind,
        lun: Some(0),
        start_sector: None,
        sectors: None,
        bytes,
        files: vec![format!("{name}.mbn")],
        host_patched: false,
        destructive: true,
    })
    .collect();
    PlanReview {
        plan: 1,
        package: PathBuf::from("/tmp/qrescue-demo/RM502QAEAAR13A02M4G.zip"),
        package_revision: Some("RM502QAEAAR13A02M4G".into()),
        verdict: Verdict {
            flashable,
            summary: if flashable {
                "flashable: 5 steps, 71.59 MiB to write, nothing refused".into()
            } else {
                "refused (compatibility)".into()
            },
            reasons,
        },
        compat,
        guard: Some(GuardReport {
            allowed: true,
            table_source: Some("update/firehose/partition_complete_p4K_b256K.mbn (MIBIB)".into()),
            table_partitions: vec![],
            device_unique: vec![
                "modemst1".into(),
                "modemst2".into(),
                "fsg".into(),
                "fsc".into(),
            ],
            touched: vec![],
            blocked: vec![],
            notes: vec![],
        }),
        summary: Some(PlanSummary {
            package: "RM502QAEAAR13A02M4G.zip".into(),
            storage: StorageKind::Nand,
            total_bytes: steps.iter().map(|s| s.bytes).sum(),
            steps,
            skipped: vec![],
            notes: vec![],
            host_patches: vec![],
            needs_device_geometry: false,
        }),
        programmer: Some("update/firehose/prog_firehose_sdx55.mbn".into()),
        warnings: vec![],
    }
}

/// The person confirmed and holds USB_BOOT: waiting for 9008 (the modem is away).
fn pins_waiting() -> Model {
    let mut m = bootloop();
    let edl = edl_snapshot();
    vanish(&mut m, 61_000, &edl);
    tick(&mut m, 74_500);
    m.flow.device = Some(edl_id(&m));
    m.flow.review = Some(review(true));
    m.flow.stage = Stage::Armed {
        since_ms: 62_200,
        pins: true,
    };
    m
}

/// 9008 appeared 0.8 s ago: release now.
fn pins_seen() -> Model {
    let mut m = pins_waiting();
    appear(&mut m, 75_000, &edl_snapshot());
    tick(&mut m, 75_800);
    m.flow.seen_ms = Some(75_000);
    m.flow.stage = Stage::Flashing {
        job: JobId(1),
        pins: true,
    };
    m
}

fn row(index: usize, name: &str, kind: StepKind, bytes: u64, state: RowState) -> PartRow {
    let done = match state {
        RowState::Done { .. } => bytes,
        _ => 0,
    };
    PartRow {
        index,
        kind,
        name: name.into(),
        bytes,
        done,
        bytes_per_s: 0.0,
        eta_s: None,
        state,
    }
}

fn done(ms: u64, rate: f64) -> RowState {
    RowState::Done {
        elapsed_ms: ms,
        bytes_per_s: rate,
    }
}

/// A flash of twelve steps, the seventh (modem, 58 MiB) 62 % written.
fn flashing() -> Model {
    let mut m = bootloop();
    let id = edl_id(&m);
    tick(&mut m, 90_000);
    m.flow.device = Some(id);
    m.flow.review = Some(review(true));
    m.flow.stage = Stage::Flashing {
        job: JobId(1),
        pins: false,
    };
    let mut rows = vec![
        row(
            0,
            "programmer",
            StepKind::SaharaUpload,
            600 << 10,
            done(310, 1_980_000.0),
        ),
        row(1, "configure", StepKind::Configure, 0, done(40, 0.0)),
        row(
            2,
            "sbl",
            StepKind::Program,
            640 << 10,
            done(220, 2_900_000.0),
        ),
        row(3, "tz", StepKind::Program, 1 << 20, done(330, 3_100_000.0)),
        row(
            4,
            "rpm",
            StepKind::Program,
            256 << 10,
            done(90, 2_800_000.0),
        ),
        row(5, "cache", StepKind::Erase, 0, done(120, 0.0)),
        row(6, "modem", StepKind::Program, 58 << 20, RowState::Active),
        row(7, "system", StepKind::Program, 12 << 20, RowState::Pending),
        row(8, "recovery", StepKind::Program, 8 << 20, RowState::Pending),
        row(9, "patch", StepKind::Patch, 0, RowState::Pending),
        row(10, "bootable", StepKind::SetBootable, 0, RowState::Pending),
        row(11, "reset", StepKind::Reset, 0, RowState::Pending),
    ];
    rows[6].done = (58 << 20) * 62 / 100;
    rows[6].bytes_per_s = 3_830_000.0;
    rows[6].eta_s = Some(6.0);
    let total_bytes = rows.iter().map(|r| r.bytes).sum();
    m.flash = Some(FlashView {
        job: JobId(1),
        device: id,
        rows,
        total_bytes,
        overall: 0.55,
        started_ms: 76_000,
        ended_ms: None,
        ok: None,
        device_log: vec!["INFO: Writing modem".into()],
    });
    m
}

/// The flash failed on the modem partition: the outcome with what / why / next.
fn failed() -> Model {
    let mut m = flashing();
    let problem = Problem {
        what: "writing modem failed at 36.0 MiB: the programmer answered NAK".into(),
        why: "the programmer refused the write (\"Failed to write sector\"), so modem is half written and the modem will not boot".into(),
        next: "power-cycle the modem into EDL and flash again; if it repeats, try another USB cable or port".into(),
    };
    if let Some(f) = m.flash.as_mut() {
        f.rows[6].state = RowState::Failed {
            problem: problem.clone(),
        };
        for r in &mut f.rows[7..] {
            r.state = RowState::Skipped;
        }
        f.ended_ms = Some(89_000);
        f.ok = Some(false);
    }
    m.flow.problem = Some(problem.clone());
    m.flow.stage = Stage::Finished(Outcome::Failed { problem });
    m
}

/// Written, but the modem did not come back: NOT verified.
fn not_verified() -> Model {
    let mut m = flashing();
    if let Some(f) = m.flash.as_mut() {
        for r in &mut f.rows {
            r.state = done(100, 3_000_000.0);
        }
        f.overall = 1.0;
        f.ended_ms = Some(95_000);
        f.ok = Some(true);
    }
    m.flow.stage = Stage::Finished(Outcome::NotVerified {
        what_failed: "the modem did not come back in normal mode within 2 min".into(),
        next: "power-cycle it and run qrescue watch; if it stays in 9008, flash again".into(),
    });
    m
}

const IMEI: &str = "867962041234561";

/// What an RM502Q says over AT.
fn at_identity(imei: Option<&str>, cfun: u8, revision: &str) -> NormalIdentity {
    NormalIdentity {
        manufacturer: Some("Quectel".into()),
        model: Some("RM502Q-AE".into()),
        revision: Some(FirmwareRevision {
            text: revision.into(),
        }),
        imei: imei.map(|d| Imei {
            digits: d.into(),
            luhn_ok: true,
        }),
        cfun: Some(Cfun::new(cfun)),
        ..NormalIdentity::default()
    }
}

/// The verdict after a flash, from what the modem said before and after.
fn judged(after: NormalIdentity) -> Model {
    let mut m = not_verified();
    let before = at_identity(Some(IMEI), 1, "RM502QAEAAR13A01M4G_01.001.01.001");
    let expect = wv::Expectation {
        imei: Some(IMEI.into()),
        revision: Some("RM502QAEAAR13A02M4G".into()),
        calibrated_before: Some(true),
        backup: Some("5A17C0DE-20250102T101500Z".into()),
    };
    let v = wv::judge(&expect, &wv::Return::Normal(Box::new(after.clone())));
    m.flow.before = Some(before);
    // The identity the verdict judged is the modem's latest.
    let id = m.flow.device.expect("the flashed modem");
    m.at_identities.insert(
        id,
        AtIdentity {
            id: after,
            t_ms: 120_000,
        },
    );
    m.flow.stage = Stage::Finished(match &v {
        wv::Verdict::Verified { checks } => Outcome::Verified {
            detail: checks.join("; "),
        },
        wv::Verdict::NotVerified { failures, next } => Outcome::NotVerified {
            what_failed: failures
                .iter()
                .map(|f| f.what())
                .collect::<Vec<_>>()
                .join("; "),
            next: next.join(" "),
        },
    });
    m.flow.verdict = Some(v);
    m
}

/// An RM502Q running in normal mode with its ports, identified over AT, package checked.
fn normal_ready() -> Model {
    let mut m = Model::new(Config {
        demo: Some(DemoInfo {
            scenario: "update".into(),
            about: "A working RM502Q and a newer package.".into(),
        }),
        ..demo_config()
    });
    let p = Profile::by_name("rm502q").unwrap();
    let mut snap = normal_mode_snapshot(&p, 4).unwrap();
    for i in snap.interfaces.iter_mut().filter(|i| i.number < 4) {
        i.tty = Some(format!("/dev/ttyUSB{}", i.number));
    }
    appear(&mut m, 1_000, &snap);
    tick(&mut m, 4_000);
    let id = m.selected.expect("selected");
    let before = at_identity(Some(IMEI), 1, "RM502QAEAAR13A01M4G_01.001.01.001");
    m.at_identities.insert(
        id,
        AtIdentity {
            id: before.clone(),
            t_ms: 2_000,
        },
    );
    m.flow.device = Some(id);
    m.flow.before = Some(before);
    m.flow.review = Some(review(true));
    m.flow.stage = Stage::Ready;
    m
}

/// The package was refused (wrong variant) with an override offered.
fn refused() -> Model {
    let mut m = bootloop();
    m.flow.device = m.selected;
    m.flow.review = Some(review(false));
    m.flow.stage = Stage::Refused;
    m
}

/// The modem went away while being identified; the last attempt failed with a reason.
fn checking_problem() -> Model {
    let mut m = bootloop();
    vanish(&mut m, 67_000, &edl_snapshot());
    tick(&mut m, 68_800);
    m.flow.device = m.selected;
    m.flow.stage = Stage::Checking;
    m.flow.problem = Some(Problem {
        what: "the modem did not say HELLO within 5 s".into(),
        why: "another program (ModemManager) probably opened the port first and used up the boot ROM's one HELLO".into(),
        next: "stop ModemManager (sudo systemctl stop ModemManager); qrescue tries again in the next window".into(),
    });
    m
}

/// Armed without pins: waiting for the next window.
fn armed() -> Model {
    let mut m = bootloop();
    vanish(&mut m, 67_000, &edl_snapshot());
    tick(&mut m, 68_800);
    m.flow.device = m.selected;
    m.flow.review = Some(review(true));
    m.flow.stage = Stage::Armed {
        since_ms: 66_000,
        pins: false,
    };
    m
}

fn finished(o: Outcome) -> Model {
    let mut m = not_verified();
    m.flow.stage = Stage::Finished(o);
    m
}

fn verifying() -> Model {
    let mut m = not_verified();
    tick(&mut m, 125_000);
    m.flow.stage = Stage::Verifying { since_ms: 95_000 };
    m
}

fn with_overlay(mut m: Model, o: Overlay) -> Model {
    m.overlay = o;
    m
}

fn mono(mut m: Model) -> Model {
    m.config.color = false;
    m
}

fn fixtures() -> Vec<(&'static str, Model)> {
    vec![
        ("empty", empty()),
        ("bootloop", bootloop()),
        ("pins_waiting", pins_waiting()),
        ("pins_seen", pins_seen()),
        ("flashing", flashing()),
        ("failed", failed()),
        ("not_verified", not_verified()),
        ("refused", refused()),
        ("checking_problem", checking_problem()),
        ("armed", armed()),
        ("verifying", verifying()),
        (
            "verified",
            judged(at_identity(
                Some(IMEI),
                1,
                "RM502QAEAAR13A02M4G_01.001.01.001",
            )),
        ),
        (
            "calibration_lost",
            judged(at_identity(None, 5, "RM502QAEAAR13A02M4G_01.001.01.001")),
        ),
        ("normal_ready", normal_ready()),
        (
            "confirm_switch",
            with_overlay(normal_ready(), Overlay::ConfirmSwitch),
        ),
        (
            "cancelled",
            finished(Outcome::Cancelled {
                detail: "stopped before modem was written; the modem is still in EDL".into(),
            }),
        ),
        ("help", with_overlay(bootloop(), Overlay::Help)),
        (
            "confirm_flash",
            with_overlay(
                {
                    let mut m = bootloop();
                    m.flow.device = m.selected;
                    let mut r = review(true);
                    // The plan rewrites fsg, covered by a verified backup of this unit.
                    if let Some(g) = r.guard.as_mut() {
                        g.touched.push(UniqueTouch {
                            step: 4,
                            partition: "fsg".into(),
                            holds: "the factory copy of the modem's RF calibration".into(),
                            covered: true,
                            backup: Some("backups/5A17C0DE-2025-01-02".into()),
                        });
                    }
                    m.flow.review = Some(r);
                    m.flow.stage = Stage::Ready;
                    m
                },
                Overlay::ConfirmFlash,
            ),
        ),
        (
            "override",
            with_overlay(
                refused(),
                Overlay::OverrideInput {
                    typed: "flash RM502QAE on".into(),
                },
            ),
        ),
        (
            "confirm_quit",
            with_overlay(flashing(), Overlay::ConfirmQuit),
        ),
        ("mono_bootloop", mono(bootloop())),
        ("mono_flashing", mono(flashing())),
    ]
}

// ---------------------------------------------------------------- helpers

fn draw(m: &Model, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut term = Terminal::new(TestBackend::new(w, h)).unwrap();
    term.draw(|f| view(m, f)).unwrap();
    term
}

fn text(buf: &Buffer) -> String {
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

fn screen(m: &Model, w: u16, h: u16) -> (String, Buffer) {
    let term = draw(m, w, h);
    let buf = term.backend().buffer().clone();
    (text(&buf), buf)
}

fn has_all(s: &str, needles: &[&str]) {
    for n in needles {
        assert!(s.contains(n), "missing {n:?} in\n{s}");
    }
}

fn snap(name: &str, m: &Model) -> (String, String) {
    let small = draw(m, 80, 24);
    let big = draw(m, 160, 48);
    insta::assert_snapshot!(format!("{name}_80x24"), small.backend());
    insta::assert_snapshot!(format!("{name}_160x48"), big.backend());
    (text(small.backend().buffer()), text(big.backend().buffer()))
}

fn fixture(name: &str) -> Model {
    fixtures()
        .into_iter()
        .find(|(n, _)| *n == name)
        .map(|(_, m)| m)
        .unwrap()
}

// ---------------------------------------------------------------- screens

#[test]
fn empty_screen_says_how_to_start_the_demo() {
    let (small, big) = snap("empty", &fixture("empty"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "qrescue",
                "USB",
                "No modem seen",
                "qrescue demo",
                "? help",
                "no log lines yet",
            ],
        );
    }
}

#[test]
fn boot_loop_shows_period_window_countdown_and_triage() {
    let (small, big) = snap("bootloop", &fixture("bootloop"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "demo: unbrick",
                "05c6:9008",
                "LOOP 14 s",
                "EDL",
                "normal EC25/EG25",
                "here",
                "LOOP every 14 s, present 10 s",
                "window open: closes in 7.0 s",
                "download-mode (9008) loop",
                "█",
                "│",
                "now",
                "Log → /tmp/qrescue-demo/qrescue.log",
            ],
        );
    }
    // The roomy layout adds the advice and the legend, and shows the tty.
    has_all(
        &big,
        &["recoverable", "░ predicted window", "/dev/pts/7", "VID:PID"],
    );
    // The selected row is marked, not only highlighted.
    assert!(small
        .lines()
        .any(|l| l.contains('▶') && l.contains("05c6:9008")));
}

#[test]
fn countdown_before_the_next_window() {
    let mut m = fixture("bootloop");
    let edl = edl_snapshot();
    vanish(&mut m, 67_000, &edl);
    tick(&mut m, 68_800);
    let (s, _) = screen(&m, 80, 24);
    has_all(&s, &["next window in 2.2 s", "gone"]);
}

#[test]
fn pin_screen_waiting() {
    let m = fixture("pins_waiting");
    assert!(pin_screen_showing(&m));
    let (small, big) = snap("pins_waiting", &m);
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "PIN BRIDGING",
                "WAITING for 9008 — 12.3 s since armed",
                "USB_BOOT held to 1.8 V",
                "b bridge pins + power-cycle",
            ],
        );
        // Big letters.
        assert!(s.matches('█').count() > 40, "{s}");
    }
    has_all(
        &big,
        &[
            "'USB_BOOT' to 1.8 V before",
            "forums.quectel.com/t/unbrick-quectel-rm502q-gl-in-900e/32031",
            "no public source",
        ],
    );
}

#[test]
fn pin_screen_shows_the_models_quirk_with_its_source() {
    let mut m = fixture("pins_waiting");
    // The EC25 in normal mode is the modem being forced into EDL.
    m.flow.device = m
        .devices()
        .into_iter()
        .find(|d| d.device.pid == 0x0125)
        .map(|d| d.id);
    let (s, _) = screen(&m, 160, 48);
    has_all(
        &s,
        &[
            "Quirk: EC25-E",
            "suspended and resumed",
            "forums.quectel.com/t/modem-stuck-in-firmware-update/36394",
            "no public source",
        ],
    );
}

#[test]
fn pin_screen_seen_says_release_now() {
    let m = fixture("pins_seen");
    assert!(pin_screen_showing(&m));
    let (small, big) = snap("pins_seen", &m);
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "9008 SEEN — RELEASE NOW (seen 0.8 s ago)",
                "Let go of USB_BOOT now",
            ],
        );
    }
    // At 160×48 both "9008 SEEN" and "RELEASE NOW" are big: more block cells than at 80×24.
    assert!(big.matches('█').count() > small.matches('█').count());
    // The band is high contrast in both themes.
    let (_, buf) = screen(&mono(m), 80, 24);
    assert!(buf[(0, 3)].modifier.contains(Modifier::REVERSED));
}

#[test]
fn pin_screen_goes_after_the_upload() {
    let mut m = fixture("pins_seen");
    m.flow.uploaded_ms = Some(76_000);
    tick(&mut m, 77_000);
    assert!(pin_screen_showing(&m));
    let (s, _) = screen(&m, 80, 24);
    has_all(&s, &["PROGRAMMER UPLOADED 1.0 s ago"]);
    tick(&mut m, 80_000);
    assert!(!pin_screen_showing(&m));
    let (s, _) = screen(&m, 80, 24);
    assert!(!s.contains("PIN BRIDGING"));
    has_all(&s, &["FLASHING"]);
}

#[test]
fn flash_in_progress_keeps_the_active_row_in_view() {
    let (small, big) = snap("flashing", &fixture("flashing"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "▶5 Flash",
                "✓4 Catch",
                "FLASHING modem",
                "overall",
                "ETA",
                "modem",
                "writing",
                "58.00 MiB",
                "3.83 MB/s",
                "done",
                "pending",
                "step 6/12",
            ],
        );
    }
    // All twelve rows at 160×48; at 80×24 the pane scrolls and says which rows show.
    has_all(&big, &["programmer", "reset"]);
    assert!(small.contains(" of 12 "), "{small}");
    let active = small.lines().find(|l| l.contains("writing")).unwrap();
    assert!(active.contains('▶') && active.contains("modem"), "{active}");
}

#[test]
fn failed_flash_explains_what_why_next() {
    let (small, big) = snap("failed", &fixture("failed"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "FLASH FAILED",
                "writing modem failed at 36.0 MiB",
                "why:",
                "next:",
                "FAILED",
                "skipped",
                "stopped after",
            ],
        );
        assert!(!s.contains("VERIFIED"));
    }
}

#[test]
fn a_write_alone_is_not_success() {
    let (small, big) = snap("not_verified", &fixture("not_verified"));
    for s in [&small, &big] {
        has_all(
            s,
            &["FLASHED, NOT VERIFIED", "what failed:", "did not come back"],
        );
        assert!(!s.to_lowercase().contains("success"));
    }
}

#[test]
fn refusal_shows_every_reason_and_the_override_key() {
    let (small, big) = snap("refused", &fixture("refused"));
    for s in [&small, &big] {
        has_all(s, &["REFUSED", "✗2 Check package", "press o"]);
    }
    has_all(
        &big,
        &[
            "the package is for the RM502Q-AE, the modem is an RM502Q-GL",
            "untouched: modemst1, modemst2, fsg, fsc",
        ],
    );
}

#[test]
fn a_problem_while_checking_is_explained_in_plain_words() {
    let m = fixture("checking_problem");
    let (small, big) = (screen(&m, 80, 24).0, screen(&m, 160, 48).0);
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "▶1 Identify",
                "✗ PROBLEM: the modem did not say HELLO within 5 s",
                "why:",
                "next:",
                "Waiting for the modem's next window",
                "gone",
            ],
        );
    }
}

#[test]
fn armed_counts_down_to_the_window() {
    let (small, big) = snap("armed", &fixture("armed"));
    for s in [&small, &big] {
        has_all(
            s,
            &["▶4 Catch", "ARMED", "next window in 2.2 s", "c disarms"],
        );
    }
}

#[test]
fn verifying_waits_for_normal_mode() {
    let (s, _) = screen(&fixture("verifying"), 80, 24);
    has_all(
        &s,
        &[
            "▶6 Verify",
            "Waiting for the modem to come back in normal mode",
            "a write alone is",
            "30.0 s of 2 min 00 s waited",
        ],
    );
    assert!(!s.contains("VERIFIED"));
}

#[test]
fn verified_and_cancelled_outcomes_are_unambiguous() {
    let (small, big) = snap("verified", &fixture("verified"));
    for s in [&small, &big] {
        has_all(s, &["✓6 Verify", "VERIFIED", "✓ back in normal mode"]);
    }
    has_all(
        &big,
        &[
            "✓ same IMEI 867962041234561",
            "✓ +CFUN: 1 (calibrated, full function)",
            "✓ runs RM502QAEAAR13A02M4G_01.001.01.001",
        ],
    );
    let (s, _) = screen(&fixture("cancelled"), 80, 24);
    has_all(&s, &["CANCELLED", "the modem is still in EDL"]);
    assert!(!s.contains("VERIFIED"));
}

#[test]
fn a_lost_calibration_is_not_verified_and_says_restore_the_backup() {
    let (small, big) = snap("calibration_lost", &fixture("calibration_lost"));
    for s in [&small, &big] {
        has_all(
            s,
            &["FLASHED, NOT VERIFIED", "✗ the modem did not give its IMEI"],
        );
        assert!(!s.contains("✓6 Verify"), "{s}");
        assert!(!s.to_lowercase().contains("success"));
    }
    has_all(
        &big,
        &[
            "✗ +CFUN: 5 — the RF calibration is gone",
            "next: restore the backup with `qrescue restore 5A17C0DE-20250102T101500Z`",
        ],
    );
}

#[test]
fn a_running_modem_shows_what_it_said_over_at_and_the_switch_is_explained() {
    let (small, big) = snap("normal_ready", &fixture("normal_ready"));
    for s in [&small, &big] {
        has_all(s, &["f", "over DIAG"]);
    }
    has_all(
        &big,
        &["over AT    RM502QAEAAR13A01M4G_01.001.01.001 · IMEI 867962041234561 · +CFUN: 1"],
    );
    let (small, big) = snap("confirm_switch", &fixture("confirm_switch"));
    for s in [&small, &big] {
        has_all(s, &["Switch to download mode?", "4B 65 01 00", "05c6:9008"]);
    }
    has_all(&big, &["to bridge the pins instead"]);
}

#[test]
fn help_lists_every_key() {
    let (small, big) = snap("help", &fixture("help"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "↑/↓  j/k",
                "Enter",
                "f",
                "y",
                "o",
                "p",
                "Esc",
                "c",
                "Tab",
                "PgUp/PgDn",
                "?",
                "q",
                "bridge the pins and power-cycle",
                "release the pins",
            ],
        );
    }
}

#[test]
fn confirm_flash_shows_the_plan() {
    let (small, big) = snap("confirm_flash", &fixture("confirm_flash"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "Flash this plan?",
                "prog_firehose_sdx55.mbn",
                "5 (4 program, 1 erase, 0 patch)",
                "71.59 MiB",
                "cache",
                "untouched: modemst1, modemst2, fsc",
                "TOUCHED: fsg",
                "verified backup",
                "press y to flash, Esc to go back",
            ],
        );
    }
}

#[test]
fn override_shows_the_phrase_and_the_typing() {
    let (small, big) = snap("override", &fixture("override"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "Type exactly:",
                "flash RM502QAE onto RM502QGL",
                "flash RM502QAE on▏",
                "17 of 28 characters",
            ],
        );
    }
}

#[test]
fn confirm_quit_says_what_happens_to_the_modem() {
    let (small, big) = snap("confirm_quit", &fixture("confirm_quit"));
    for s in [&small, &big] {
        has_all(
            s,
            &[
                "A flash is running.",
                "will not boot normally",
                "press y to quit anyway",
            ],
        );
    }
}

#[test]
fn monochrome_carries_everything_without_colour() {
    for name in ["mono_bootloop", "mono_flashing"] {
        let m = fixture(name);
        let (small, big) = snap(name, &m);
        for (s, (w, h)) in [(&small, (80, 24)), (&big, (160, 48))] {
            let (_, buf) = screen(&m, w, h);
            for c in buf.content.iter() {
                assert!(
                    matches!(c.fg, Color::Reset) && matches!(c.bg, Color::Reset),
                    "{name} has colour {c:?}"
                );
            }
            // Selection and states are words, glyphs and modifiers.
            if name == "mono_bootloop" {
                has_all(s, &["▶", "LOOP 14 s", "here"]);
                let y = s
                    .lines()
                    .position(|l| l.contains('▶') && l.contains("9008"))
                    .unwrap();
                let x = s
                    .lines()
                    .nth(y)
                    .unwrap()
                    .chars()
                    .position(|c| c == '▶')
                    .unwrap();
                assert!(buf[(x as u16, y as u16)]
                    .modifier
                    .contains(Modifier::REVERSED));
            } else {
                has_all(s, &["writing", "done", "pending"]);
            }
        }
    }
}

#[test]
fn too_small_says_what_it_needs() {
    let (s, _) = screen(&fixture("bootloop"), 79, 24);
    has_all(&s, &["terminal too small: need 80×24", "now 79×24"]);
    let (s, _) = screen(&fixture("bootloop"), 120, 23);
    has_all(&s, &["terminal too small: need 80×24"]);
}

#[test]
fn headless_draws_nothing() {
    let mut m = fixture("bootloop");
    m.headless = true;
    let (s, _) = screen(&m, 80, 24);
    assert!(s.chars().all(|c| c == ' ' || c == '\n'));
}

#[test]
fn log_scroll_without_a_logger_does_not_panic() {
    let mut m = fixture("bootloop");
    m.log_scroll = 500;
    m.focus = qrescue::tui::model::Focus::Log;
    let (s, _) = screen(&m, 80, 24);
    has_all(&s, &["no log lines yet", "500 lines back", "▸ Log"]);
    assert!(!s.contains("▸ Devices"));
    m.focus = qrescue::tui::model::Focus::Devices;
    let (s, _) = screen(&m, 80, 24);
    assert!(s.contains("▸ Devices") && !s.contains("▸ Log"));
}

#[test]
fn no_view_panics_at_any_size() {
    // Every edge of the layouts (too small, compact, roomy) and a spread up to 300×100.
    let widths: [u16; 21] = [
        1, 2, 3, 5, 8, 13, 21, 34, 55, 79, 80, 81, 100, 119, 120, 121, 159, 160, 200, 250, 300,
    ];
    let heights: [u16; 16] = [1, 2, 3, 5, 8, 13, 23, 24, 25, 35, 36, 47, 48, 60, 80, 100];
    let mut buf = Buffer::empty(Rect::new(0, 0, 1, 1));
    for (name, m) in fixtures() {
        for &w in &widths {
            for &h in &heights {
                let area = Rect::new(0, 0, w, h);
                buf.resize(area);
                buf.reset();
                let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    render(&m, area, &mut buf);
                }));
                assert!(r.is_ok(), "{name} panicked at {w}×{h}");
            }
        }
        // Odd origins too (a view drawn into part of a larger screen).
        let mut big = Buffer::empty(Rect::new(0, 0, 200, 60));
        render(&m, Rect::new(7, 3, 150, 50), &mut big);
        render(&m, Rect::new(190, 50, 40, 40), &mut big);
    }
}
