//! The station view (many modems at once) as whole-screen snapshots at 80×24 without colour
//! (NO_COLOR's theme): sixteen modems mid-run (flashing, restarting, verified, failed, waiting;
//! twelve rows in view, the selected one's pane), the confirmation, and the summary at the end.
//! Models are built through `update` from emulated snapshots and scripted station events; no
//! clock is read. Plus a sweep that no station screen panics at any size.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::backend::TestBackend;
use ratatui::buffer::Buffer;
use ratatui::layout::Rect;
use ratatui::style::{Color, Modifier};
use ratatui::Terminal;

use qrescue::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
use qrescue::engine::events::{EngineEvent, StepInfo, StepKind};
use qrescue::engine::station::{DeviceState, Note, Outcome, StationEvent, Summary, SummaryRow};
use qrescue::sim::fleet::unit_profile;
use qrescue::sim::usb_ids::boot_rom_snapshot;
use qrescue::tui::model::{Config, DemoInfo, Model, Overlay};
use qrescue::tui::msg::{Effect, JobId, Msg, Problem, StationDone};
use qrescue::tui::update::update;
use qrescue::tui::view::{render, view};

const UNITS: u32 = 16;
const MIB: u64 = 1 << 20;

fn key(c: char) -> Msg {
    Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
}

fn edl(i: u32) -> DeviceSnapshot {
    let p = unit_profile("ec25", 0x5A17_C000 + i).unwrap();
    let mut s = boot_rom_snapshot(&p, None, 2 + i as u8);
    // Two hubs of eight, each behind a port of its own.
    s.ports = vec![1 + (i / 8) as u8, 1 + (i % 8) as u8];
    s
}

fn dev_key(i: u32) -> String {
    format!("SN:{:08X}", 0x5A17_C000 + i)
}

/// The demo's bench: sixteen EC25s in 9008, mono theme.
fn bench() -> Model {
    let mut m = Model::new(Config {
        package: Some(PathBuf::from("/tmp/qrescue-station/ec25-bench-package")),
        source: "emulated bench (16 modems, 2 hubs)".into(),
        demo: Some(DemoInfo {
            scenario: "station".into(),
            about: "A production bench of sixteen emulated EC25s in 9008.".into(),
        }),
        color: false,
        ..Config::default()
    });
    for i in 0..UNITS {
        update(
            &mut m,
            Msg::Device {
                event: DeviceEvent {
                    t_ms: 10 + u64::from(i),
                    change: DeviceChange::Appear { device: edl(i) },
                },
                initial: true,
            },
        );
    }
    m
}

fn ev(m: &mut Model, run: JobId, i: u32, note: Note, t_ms: u64) {
    update(
        m,
        Msg::Station {
            run,
            event: StationEvent {
                t_ms,
                device: dev_key(i),
                note,
            },
            t_ms,
        },
    );
}

fn steps() -> Vec<StepInfo> {
    ["sbl", "aboot", "boot", "modem", "system"]
        .iter()
        .enumerate()
        .map(|(i, n)| StepInfo {
            index: i,
            kind: StepKind::Program,
            name: (*n).into(),
            bytes: if *n == "modem" || *n == "system" {
                6 * MIB
            } else {
                MIB
            },
            lun: None,
            start_sector: None,
            sectors: None,
        })
        .collect()
}

fn summary_row(i: u32, outcome: Outcome) -> SummaryRow {
    let (detail, next) = match outcome {
        Outcome::Verified => (
            format!(
                "flashed and verified (back in normal mode; IMEI 86123405{:07}; +CFUN: 1)",
                i
            ),
            None,
        ),
        _ => (
            "the link dropped during modem and the modem did not come back within 60 s".into(),
            Some(format!(
                "Power-cycle it into 9008 and run again with --devices usb:serial={:08X}",
                0x5A17_C000 + i
            )),
        ),
    };
    SummaryRow {
        device: dev_key(i),
        edl_serial: Some(format!("{:08X}", 0x5A17_C000 + i)),
        usb_serial: None,
        imei: None,
        bus: "emulated hub 1".into(),
        location: format!("99-{}", 1 + i % 8),
        package: "/tmp/qrescue-station/ec25-bench-package".into(),
        outcome,
        verdict: None,
        detail,
        next,
        started: "2025-01-02T12:00:00Z".into(),
        duration_ms: 41_200 + u64::from(i) * 300,
        bytes: if outcome == Outcome::Verified {
            15 * MIB
        } else {
            4 * MIB
        },
        attempts: if i == 5 { 2 } else { 1 },
        log: format!(
            "/var/lib/qrescue/station/run/SN_{:08X}.log",
            0x5A17_C000 + i
        )
        .into(),
        recording: None,
        journal: Some(format!("sn-0x{:08x}", 0x5A17_C000 + i)),
        resumed: i == 5,
        bytes_resent: if i == 5 { MIB } else { 0 },
    }
}

/// Sixteen modems 30 s into the run: 0–3 verified, 4 failed, 5 restarting after its second
/// attempt, 6–12 flashing at different points, 13–15 waiting for their link to come back.
fn mid_run() -> (Model, JobId) {
    let mut m = bench();
    update(&mut m, key('A'));
    assert_eq!(m.overlay, Overlay::ConfirmStation { count: 16 });
    let fx = update(&mut m, key('y'));
    let run = match &fx[..] {
        [Effect::StartStation { run, devices, .. }] => {
            assert_eq!(devices.len(), 16);
            *run
        }
        other => panic!("{other:?}"),
    };
    for i in 0..UNITS {
        ev(
            &mut m,
            run,
            i,
            Note::Selected {
                bus: format!("emulated hub {}", 1 + i / 8),
                location: format!("99-{}", 1 + i % 8),
                usb_id: "05c6:9008".into(),
                mode: "edl".into(),
                log: format!(
                    "/var/lib/qrescue/station/run/SN_{:08X}.log",
                    0x5A17_C000 + i
                )
                .into(),
            },
            400,
        );
        ev(
            &mut m,
            run,
            i,
            Note::State {
                state: DeviceState::Flashing,
                detail: format!("attempt 1 at 99-{}", 1 + i % 8),
            },
            500,
        );
        if i >= 13 {
            ev(
                &mut m,
                run,
                i,
                Note::State {
                    state: DeviceState::Waiting,
                    detail: "its link dropped; waiting for it to come back in 9008".into(),
                },
                9_000,
            );
            continue;
        }
        ev(
            &mut m,
            run,
            i,
            Note::Engine {
                engine: EngineEvent::Plan {
                    steps: steps(),
                    total_bytes: 15 * MIB,
                },
            },
            600,
        );
        let upto = if i < 6 { 5 } else { 3 + (i as usize % 2) };
        for (k, s) in steps().into_iter().enumerate().take(upto) {
            ev(
                &mut m,
                run,
                i,
                Note::Engine {
                    engine: EngineEvent::StepStarted {
                        index: k,
                        kind: s.kind,
                        name: s.name.clone(),
                        bytes: s.bytes,
                    },
                },
                1_000 + k as u64 * 1_000,
            );
            let last = k + 1 == upto && i >= 6;
            let done = if last {
                s.bytes * u64::from(i) / 16
            } else {
                s.bytes
            };
            ev(
                &mut m,
                run,
                i,
                Note::Engine {
                    engine: EngineEvent::Progress {
                        index: k,
                        done,
                        total: s.bytes,
                        bytes_per_s: 3.8e6 + f64::from(i) * 10_000.0,
                        eta_s: Some(1.0),
                        overall: 0.05 + 0.18 * k as f64 + 0.01 * f64::from(i % 5),
                    },
                },
                1_500 + k as u64 * 1_000,
            );
            if !last {
                ev(
                    &mut m,
                    run,
                    i,
                    Note::Engine {
                        engine: EngineEvent::StepFinished {
                            index: k,
                            bytes: s.bytes,
                            elapsed_ms: 1_600,
                            bytes_per_s: 3.8e6,
                        },
                    },
                    1_900 + k as u64 * 1_000,
                );
            }
        }
        if i < 6 {
            ev(
                &mut m,
                run,
                i,
                Note::Engine {
                    engine: EngineEvent::Done {
                        ok: true,
                        bytes: 15 * MIB,
                        elapsed_ms: 4_100,
                    },
                },
                6_000,
            );
        }
        match i {
            0..=3 => ev(
                &mut m,
                run,
                i,
                Note::Finished {
                    row: Box::new(summary_row(i, Outcome::Verified)),
                },
                20_000,
            ),
            4 => {
                ev(
                    &mut m,
                    run,
                    i,
                    Note::Engine {
                        engine: EngineEvent::StepFailed {
                            index: 3,
                            what: "The link dropped while modem was written".into(),
                            why: "the modem stopped answering after 4.0 MiB (a cable, hub or power fault)".into(),
                            next: "Check the cable and hub, power-cycle the modem into 9008, and run again".into(),
                        },
                    },
                    7_000,
                );
                ev(
                    &mut m,
                    run,
                    i,
                    Note::Finished {
                        row: Box::new(summary_row(i, Outcome::Failed)),
                    },
                    21_000,
                );
            }
            5 => ev(
                &mut m,
                run,
                i,
                Note::State {
                    state: DeviceState::Restarting,
                    detail: "written and reset; waiting for it in normal mode".into(),
                },
                22_000,
            ),
            _ => {}
        }
    }
    // The person looks at modem 9 (mid-write).
    for _ in 0..9 {
        update(&mut m, key('j'));
    }
    update(&mut m, Msg::Tick { now_ms: 30_000 });
    (m, run)
}

fn ended() -> Model {
    let (mut m, run) = mid_run();
    let rows: Vec<SummaryRow> = (0..UNITS)
        .map(|i| {
            summary_row(
                i,
                if i == 4 {
                    Outcome::Failed
                } else {
                    Outcome::Verified
                },
            )
        })
        .collect();
    for i in 5..UNITS {
        ev(
            &mut m,
            run,
            i,
            Note::Finished {
                row: Box::new(rows[i as usize].clone()),
            },
            50_000 + u64::from(i),
        );
    }
    let summary = Summary::new(
        "/tmp/qrescue-station/ec25-bench-package".into(),
        "2025-01-02T12:00:00Z".into(),
        52_400,
        rows,
    );
    update(
        &mut m,
        Msg::StationEnded {
            run,
            result: Ok(Box::new(StationDone {
                summary,
                folder: "/var/lib/qrescue/station/20250102T120000Z-4242".into(),
            })),
            t_ms: 52_500,
        },
    );
    // The person looks at the modem that failed.
    for _ in 0..5 {
        update(&mut m, key('k'));
    }
    m
}

fn screen(m: &Model) -> (String, Terminal<TestBackend>) {
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    term.draw(|f| view(m, f)).unwrap();
    let buf = term.backend().buffer().clone();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    (s, term)
}

fn has_all(s: &str, needles: &[&str]) {
    for n in needles {
        assert!(s.contains(n), "{n:?} missing from:\n{s}");
    }
}

fn no_colour(term: &Terminal<TestBackend>) {
    for c in term.backend().buffer().content.iter() {
        assert!(
            matches!(c.fg, Color::Reset) && matches!(c.bg, Color::Reset),
            "colour {c:?}"
        );
    }
}

#[test]
fn the_bench_offers_to_flash_every_modem_and_asks_first() {
    let mut m = bench();
    let (s, _) = screen(&m);
    has_all(
        &s,
        &[
            "16 present",
            "A flash all in 9008",
            "press A to flash all 16",
        ],
    );
    update(&mut m, key('A'));
    let (s, term) = screen(&m);
    insta::assert_snapshot!("station_confirm_80x24", term.backend());
    has_all(
        &s,
        &[
            "Flash 16 modems at once?",
            "ec25-bench-package",
            "16 in download mode (9008): SN:5A17C000",
            "and 12 more",
            "press y to flash all 16",
        ],
    );
}

#[test]
fn sixteen_modems_mid_run_fit_80x24_with_the_selected_ones_pane() {
    let (m, _) = mid_run();
    let (s, term) = screen(&m);
    insta::assert_snapshot!("station_running_80x24", term.backend());
    no_colour(&term);
    has_all(
        &s,
        &[
            "Station · ec25-bench-package · 16 modems · 0:30",
            "7 flashing · 1 checking · 4 verified · 1 failed · 3 waiting",
            "rows 4–16 of 16",
            "VERIFIED",
            "FAILED",
            "restarting",
            "c stop all",
        ],
    );
    // The selected row is marked and reversed (it reads the same without colour), and its
    // pane says what it does now.
    let buf = term.backend().buffer();
    let y = s
        .lines()
        .position(|l| l.starts_with("▶ SN:5A17C009"))
        .expect("selected row in view");
    assert!(buf[(0, y as u16)].modifier.contains(Modifier::REVERSED));
    has_all(
        &s,
        &[
            "SN:5A17C009 · 99-2",
            "now   writing modem 3.38 MiB of 6.00 MiB (step 4/5)",
            "log ",
        ],
    );
}

#[test]
fn the_selection_scrolls_the_rows() {
    let (mut m, _) = mid_run();
    update(
        &mut m,
        Msg::Key(KeyEvent::new(KeyCode::Home, KeyModifiers::NONE)),
    );
    let (s, _) = screen(&m);
    has_all(&s, &["▶ SN:5A17C000", "rows 1–13 of 16"]);
    assert!(!s.contains("SN:5A17C00F"), "{s}");
    for _ in 0..20 {
        update(&mut m, key('j'));
    }
    let (s, _) = screen(&m);
    has_all(
        &s,
        &[
            "▶ SN:5A17C00F",
            "rows 4–16 of 16",
            "waiting for it to come back",
        ],
    );
    assert!(!s.contains("SN:5A17C000 "), "{s}");
}

#[test]
fn stopping_asks_first_and_says_what_happens_to_each_modem() {
    let (mut m, run) = mid_run();
    update(&mut m, key('c'));
    let (s, _) = screen(&m);
    has_all(
        &s,
        &[
            "Stop the station run?",
            "11 modem(s) are still being worked on",
            "half-written",
            "press y to stop them all",
        ],
    );
    assert_eq!(update(&mut m, key('y')), [Effect::Cancel { job: run }]);
    let (s, _) = screen(&m);
    has_all(&s, &["stopping every modem at its next safe point"]);
}

#[test]
fn the_end_shows_the_summary_and_the_failed_modems_what_why_next() {
    let m = ended();
    let (s, term) = screen(&m);
    insta::assert_snapshot!("station_summary_80x24", term.backend());
    no_colour(&term);
    has_all(
        &s,
        &[
            "NOT ALL VERIFIED",
            "15 of 16 verified",
            "summary.json,summary.csv",
            "▶ SN:5A17C004",
            "what  FAILED: The link dropped while modem was written",
            "why   the modem stopped answering",
            "next  Power-cycle it into 9008",
            "Esc back to the devices",
        ],
    );
}

#[test]
fn a_run_that_could_not_start_says_what_why_next() {
    let (mut m, run) = mid_run();
    m.station.as_mut().unwrap().rows.clear();
    m.station.as_mut().unwrap().selected = None;
    update(
        &mut m,
        Msg::StationEnded {
            run,
            result: Err(Problem {
                what: "No modem matches usb:serial=5A17C003".into(),
                why: "present: no modem at all".into(),
                next: "Check the cables and hubs, then press A again".into(),
            }),
            t_ms: 31_000,
        },
    );
    let (s, _) = screen(&m);
    has_all(
        &s,
        &[
            "COULD NOT RUN",
            "The station run could not start",
            "what  No modem matches",
            "next  Check the cables",
        ],
    );
}

#[test]
fn no_station_screen_panics_at_any_size() {
    let (running, _) = mid_run();
    let mut confirm = bench();
    update(&mut confirm, key('A'));
    let mut stop = mid_run().0;
    update(&mut stop, key('q'));
    let models = [running, ended(), confirm, stop];
    let sizes: [u16; 12] = [1, 3, 8, 23, 24, 25, 36, 48, 60, 80, 120, 300];
    let mut buf = Buffer::empty(Rect::new(0, 0, 1, 1));
    for m in &models {
        for &w in &sizes {
            for &h in &sizes {
                let area = Rect::new(0, 0, w, h);
                buf.resize(area);
                buf.reset();
                render(m, area, &mut buf);
            }
        }
    }
}
