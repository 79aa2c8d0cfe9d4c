//! The station run from the console: `A` offers to flash every modem in download mode at once
//! (a confirmation with the count and the package), `y` starts it; its events fill one row per
//! modem; ↑/↓ choose the row whose pane is shown; `c`, `q` or Ctrl-C ask, then stop every modem
//! at its next safe point; the end shows the summary until Esc goes back to the devices.
//!
//! Redraws are coalesced: the run's events (and device events while it runs) only mark the
//! view pending; the tick draws at most one frame per
//! [`STATION_FRAME_MS`](crate::tui::station::STATION_FRAME_MS).

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

use crate::tui::model::{Flow, Model, Overlay, StationView};
use crate::tui::msg::{Effect, JobId, Problem, StationDone};

use super::{bell, quit};

/// `A`: offer the station run, or say why it is not offered.
pub(super) fn offer(model: &mut Model) {
    if let Some(count) = model.station_offer() {
        model.overlay = Overlay::ConfirmStation { count };
        return;
    }
    model.notice = Some(if model.config.package.is_none() {
        "To flash several modems at once, start the console with --package PACKAGE".into()
    } else if model.flow_busy() {
        "Finish or stop the rescue of the selected modem first".into()
    } else {
        format!(
            "Flashing at once needs two or more modems in download mode (9008); {} here",
            model.edl_present().len()
        )
    });
}

/// `y` on the confirmation: start the run with every modem in download mode now.
pub(super) fn confirm(model: &mut Model, fx: &mut Vec<Effect>) {
    model.overlay = Overlay::None;
    let Some(package) = model.config.package.clone() else {
        return;
    };
    let devices: Vec<_> = model.edl_present().into_iter().map(|d| d.device).collect();
    if devices.len() < 2 {
        model.notice = Some(format!(
            "Only {} modem(s) left in download mode: nothing started",
            devices.len()
        ));
        return;
    }
    let run = JobId(model.next_job);
    model.next_job += 1;
    // The flow of one modem starts over afterwards: nothing of it may act during the run.
    model.flow = Flow::default();
    model.station = Some(StationView::new(
        run,
        package.clone(),
        devices.len(),
        model.now_ms,
    ));
    fx.push(Effect::StartStation {
        run,
        package,
        modem_revision: model.config.modem_revision.clone(),
        devices,
    });
}

fn stop(model: &mut Model, fx: &mut Vec<Effect>) {
    if let Some(st) = model.station.as_mut().filter(|s| s.running()) {
        st.stop_requested = true;
        fx.push(Effect::Cancel { job: st.run });
    }
}

/// SIGTERM/SIGINT while a run goes: stop every modem, then leave.
pub(super) fn terminate(model: &mut Model, fx: &mut Vec<Effect>) {
    stop(model, fx);
    quit(model, true, fx);
}

/// The stop confirmation's keys.
pub(super) fn on_stop_key(model: &mut Model, key: KeyEvent, ctrl_c: bool, fx: &mut Vec<Effect>) {
    match key.code {
        KeyCode::Char('y') | KeyCode::Char('Y') if !ctrl_c => {
            model.overlay = Overlay::None;
            stop(model, fx);
        }
        KeyCode::Esc | KeyCode::Char('n') | KeyCode::Char('N') => model.overlay = Overlay::None,
        _ => {}
    }
}

/// `q` or Ctrl-C while the station view is up.
fn request_quit(model: &mut Model, fx: &mut Vec<Effect>) {
    match model.station.as_ref() {
        Some(st) if st.running() && !st.stop_requested => {
            model.overlay = Overlay::ConfirmStationStop
        }
        // Stopping already: leave as soon as every modem has stopped.
        Some(st) if st.running() => quit(model, true, fx),
        _ => quit(model, false, fx),
    }
}

/// A key while the station view is up (no overlay).
pub(super) fn on_key(model: &mut Model, key: KeyEvent, ctrl_c: bool, fx: &mut Vec<Effect>) {
    if ctrl_c {
        request_quit(model, fx);
        return;
    }
    if !key.modifiers.difference(KeyModifiers::SHIFT).is_empty() {
        return;
    }
    let page = model.height.saturating_sub(12).max(1) as isize;
    let Some(st) = model.station.as_mut() else {
        return;
    };
    match key.code {
        KeyCode::Up | KeyCode::Char('k') => st.move_selection(-1),
        KeyCode::Down | KeyCode::Char('j') => st.move_selection(1),
        KeyCode::PageUp => st.move_selection(-page),
        KeyCode::PageDown => st.move_selection(page),
        KeyCode::Home => st.move_selection(isize::MIN / 2),
        KeyCode::End => st.move_selection(isize::MAX / 2),
        KeyCode::Char('?') | KeyCode::F(1) => model.overlay = Overlay::Help,
        KeyCode::Char('q') => request_quit(model, fx),
        KeyCode::Char('c') if st.running() && !st.stop_requested => {
            model.overlay = Overlay::ConfirmStationStop
        }
        KeyCode::Esc if !st.running() => {
            let done = st.done.as_ref().map(|d| d.folder.display().to_string());
            model.station = None;
            model.notice = done.map(|f| format!("The station run's summary is in {f}"));
        }
        KeyCode::Esc | KeyCode::Char('c') => {
            model.notice = Some(if st.stop_requested {
                "Stopping: every modem stops at its next safe point".into()
            } else {
                "The run goes on: c stops every modem at its next safe point".into()
            })
        }
        _ => {
            if st.running() {
                model.notice =
                    Some("A station run flashes these modems: wait for it, or c to stop".into());
            }
        }
    }
}

/// One event of run `run`.
pub(super) fn on_event(model: &mut Model, run: JobId, event: crate::engine::station::StationEvent) {
    if let Some(st) = model.station.as_mut().filter(|s| s.run == run) {
        st.apply(event);
    }
}

/// Run `run` ended.
pub(super) fn on_ended(
    model: &mut Model,
    run: JobId,
    result: Result<Box<StationDone>, Problem>,
    fx: &mut Vec<Effect>,
) {
    let now = model.now_ms;
    let Some(st) = model.station.as_mut().filter(|s| s.run == run) else {
        return;
    };
    st.end(result.map(|b| *b), now);
    if model.overlay == Overlay::ConfirmStationStop {
        model.overlay = Overlay::None;
    }
    model.dirty = true;
    bell(model, fx);
}

/// A tick while the station view is up: a frame only when one is due (coalescing).
pub(super) fn on_tick(model: &mut Model) {
    let now = model.now_ms;
    if let Some(st) = model.station.as_mut() {
        if st.frame_due(now) {
            model.dirty = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};

    use crate::device::{DeviceChange, DeviceEvent, DeviceSnapshot};
    use crate::engine::events::{EngineEvent, StepInfo, StepKind};
    use crate::engine::station::{DeviceState, Note, Outcome, StationEvent, Summary, SummaryRow};
    use crate::sim::fleet::unit_profile;
    use crate::sim::usb_ids::boot_rom_snapshot;
    use crate::tui::model::{Config, Model, Overlay, RowPhase, Stage};
    use crate::tui::msg::{Effect, JobId, Msg, StationDone};
    use crate::tui::update::update;

    fn key(c: char) -> Msg {
        Msg::Key(KeyEvent::new(KeyCode::Char(c), KeyModifiers::NONE))
    }

    fn code(c: KeyCode) -> Msg {
        Msg::Key(KeyEvent::new(c, KeyModifiers::NONE))
    }

    fn edl(i: u32) -> DeviceSnapshot {
        let p = unit_profile("ec25", 0x5A17_C000 + i).unwrap();
        let mut s = boot_rom_snapshot(&p, None, 2 + i as u8);
        // Each on its own port (the emulator's port repeats every 15 serials).
        s.ports = vec![1, 1 + i as u8];
        s
    }

    /// A console with a package and `n` modems in 9008.
    fn bench(n: u32, package: bool) -> Model {
        let mut m = Model::new(Config {
            package: package.then(|| PathBuf::from("/pkg/EC25EFAR06A08M4G")),
            ..Config::default()
        });
        for i in 0..n {
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

    /// A running station of `n` modems (started through the keys).
    fn running(n: u32) -> (Model, JobId) {
        let mut m = bench(n, true);
        update(&mut m, key('A'));
        let fx = update(&mut m, key('y'));
        let run = match &fx[..] {
            [Effect::StartStation { run, devices, .. }] => {
                assert_eq!(devices.len(), n as usize);
                *run
            }
            other => panic!("{other:?}"),
        };
        (m, run)
    }

    fn ev(m: &mut Model, run: JobId, device: &str, note: Note, t_ms: u64) {
        update(
            m,
            Msg::Station {
                run,
                event: StationEvent {
                    t_ms,
                    device: device.into(),
                    note,
                },
                t_ms,
            },
        );
    }

    fn plan() -> Note {
        Note::Engine {
            engine: EngineEvent::Plan {
                steps: vec![StepInfo {
                    index: 0,
                    kind: StepKind::Program,
                    name: "modem".into(),
                    bytes: 4 << 20,
                    lun: None,
                    start_sector: None,
                    sectors: None,
                }],
                total_bytes: 4 << 20,
            },
        }
    }

    fn progress(done: u64) -> Note {
        Note::Engine {
            engine: EngineEvent::Progress {
                index: 0,
                done,
                total: 4 << 20,
                bytes_per_s: 2.0e6,
                eta_s: Some(1.0),
                overall: done as f64 / f64::from(4u32 << 20),
            },
        }
    }

    fn flashing(m: &mut Model, run: JobId, device: &str, t: u64) {
        ev(
            m,
            run,
            device,
            Note::State {
                state: DeviceState::Flashing,
                detail: "uploading the programmer".into(),
            },
            t,
        );
        ev(m, run, device, plan(), t);
        ev(
            m,
            run,
            device,
            Note::Engine {
                engine: EngineEvent::StepStarted {
                    index: 0,
                    kind: StepKind::Program,
                    name: "modem".into(),
                    bytes: 4 << 20,
                },
            },
            t,
        );
    }

    fn row(device: &str, outcome: Outcome) -> SummaryRow {
        SummaryRow {
            device: device.into(),
            edl_serial: None,
            usb_serial: None,
            imei: None,
            bus: "hub".into(),
            location: "1-2".into(),
            package: "/pkg".into(),
            outcome,
            verdict: None,
            detail: "flashed and verified".into(),
            next: None,
            started: "t".into(),
            duration_ms: 1000,
            bytes: 4 << 20,
            attempts: 1,
            log: "/run/a.log".into(),
            recording: None,
            journal: None,
            resumed: false,
            bytes_resent: 0,
        }
    }

    #[test]
    fn the_offer_needs_a_package_and_two_modems_in_download_mode() {
        let mut m = bench(1, true);
        assert_eq!(m.station_offer(), None);
        update(&mut m, key('A'));
        assert_eq!(m.overlay, Overlay::None);
        assert!(
            m.notice.as_deref().unwrap().contains("two or more"),
            "{:?}",
            m.notice
        );

        let mut m = bench(3, false);
        assert_eq!(m.station_offer(), None);
        update(&mut m, key('A'));
        assert!(m.notice.as_deref().unwrap().contains("--package"));

        let mut m = bench(3, true);
        assert_eq!(m.station_offer(), Some(3));
        assert!(m.key_hints().iter().any(|h| h.key == "A"));
        update(&mut m, key('A'));
        assert_eq!(m.overlay, Overlay::ConfirmStation { count: 3 });
        // Esc goes back without starting anything.
        assert!(update(&mut m, code(KeyCode::Esc)).is_empty());
        assert_eq!(m.overlay, Overlay::None);
        assert!(m.station.is_none());
        // Not while a flash of one modem runs.
        m.flow.stage = Stage::Flashing {
            job: JobId(9),
            pins: false,
        };
        assert_eq!(m.station_offer(), None);
    }

    #[test]
    fn confirming_starts_one_run_with_every_modem_in_download_mode() {
        let (m, run) = running(4);
        let st = m.station.as_ref().unwrap();
        assert_eq!((st.run, st.asked), (run, 4));
        assert!(st.running() && m.station_running());
        assert_eq!(m.overlay, Overlay::None);
        assert_eq!(m.flow.stage, Stage::Idle);
        assert_eq!(
            m.tick_interval_ms(),
            Some(crate::tui::station::STATION_FRAME_MS)
        );
    }

    #[test]
    fn rows_follow_their_modem_in_key_order_and_the_selection_moves_and_clamps() {
        let (mut m, run) = running(3);
        for (i, d) in ["SN:C", "SN:A", "SN:B"].iter().enumerate() {
            ev(
                &mut m,
                run,
                d,
                Note::Selected {
                    bus: "hub".into(),
                    location: format!("1-{i}"),
                    usb_id: "05c6:9008".into(),
                    mode: "edl".into(),
                    log: format!("/run/{d}.log").into(),
                },
                5,
            );
        }
        let st = m.station.as_ref().unwrap();
        let keys: Vec<&str> = st.rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(keys, ["SN:A", "SN:B", "SN:C"]);
        // The first modem heard of is selected until the person moves.
        assert_eq!(st.selected.as_deref(), Some("SN:C"));
        update(&mut m, key('k'));
        update(&mut m, code(KeyCode::Up));
        update(&mut m, code(KeyCode::Up));
        assert_eq!(
            m.station.as_ref().unwrap().selected.as_deref(),
            Some("SN:A")
        );
        update(&mut m, key('j'));
        assert_eq!(
            m.station.as_ref().unwrap().selected.as_deref(),
            Some("SN:B")
        );
        update(&mut m, code(KeyCode::End));
        assert_eq!(
            m.station.as_ref().unwrap().selected.as_deref(),
            Some("SN:C")
        );
        // Keys of the one-modem flow do nothing here.
        assert!(update(&mut m, code(KeyCode::Enter)).is_empty());
        assert!(m.station_running());
        // Events of another run are ignored.
        ev(&mut m, JobId(999), "SN:Z", plan(), 6);
        assert_eq!(m.station.as_ref().unwrap().rows.len(), 3);
    }

    #[test]
    fn counts_and_the_aggregate_rate_follow_the_rows() {
        let (mut m, run) = running(4);
        flashing(&mut m, run, "SN:1", 10);
        flashing(&mut m, run, "SN:2", 10);
        ev(&mut m, run, "SN:1", progress(1 << 20), 20);
        ev(&mut m, run, "SN:2", progress(2 << 20), 20);
        ev(
            &mut m,
            run,
            "SN:3",
            Note::State {
                state: DeviceState::Restarting,
                detail: "reset sent".into(),
            },
            20,
        );
        ev(
            &mut m,
            run,
            "SN:4",
            Note::Finished {
                row: Box::new(row("SN:4", Outcome::Verified)),
            },
            20,
        );
        let st = m.station.as_ref().unwrap();
        let c = st.counts();
        assert_eq!(
            (c.flashing, c.checking, c.verified, c.failed, c.waiting),
            (2, 1, 1, 0, 0)
        );
        assert!((st.bytes_per_s() - 4.0e6).abs() < 1.0);
        let r = &st.rows[1];
        assert_eq!(r.attempts, 1);
        assert!((r.overall - 0.5).abs() < 1e-9);
        // 2 MiB left at 2 MB/s.
        assert!((r.eta_s().unwrap() - 1.048_576).abs() < 1e-3);
        assert_eq!(st.rows[3].finished().unwrap().outcome, Outcome::Verified);
    }

    #[test]
    fn engine_events_are_coalesced_into_at_most_one_frame_per_interval() {
        let (mut m, run) = running(16);
        m.dirty = false;
        let start = m.now_ms;
        // Sixteen modems, a hundred progress events each, all before the next tick.
        for d in 0..16 {
            flashing(&mut m, run, &format!("SN:{d:02}"), start);
        }
        for k in 0..100u64 {
            for d in 0..16 {
                ev(
                    &mut m,
                    run,
                    &format!("SN:{d:02}"),
                    progress(k * 4096),
                    start + 1,
                );
            }
        }
        for d in 0..16 {
            update(
                &mut m,
                Msg::Device {
                    event: DeviceEvent {
                        t_ms: start + 2,
                        change: DeviceChange::Vanish {
                            location: edl(d).location(),
                            last: Some(edl(d)),
                        },
                    },
                    initial: false,
                },
            );
        }
        assert!(!m.dirty, "no event draws by itself");
        assert!(m.station.as_ref().unwrap().pending);
        // A tick sooner than the interval after the last frame waits.
        update(&mut m, Msg::Tick { now_ms: start + 50 });
        assert!(!m.dirty);
        update(
            &mut m,
            Msg::Tick {
                now_ms: start + 100,
            },
        );
        assert!(m.dirty, "the tick draws what is pending");
        m.dirty = false;
        // Nothing new and the same second: no frame.
        update(
            &mut m,
            Msg::Tick {
                now_ms: start + 200,
            },
        );
        assert!(!m.dirty);
        // A new elapsed second is shown (the header's clock).
        update(
            &mut m,
            Msg::Tick {
                now_ms: start + 1000,
            },
        );
        assert!(m.dirty);
        m.dirty = false;
        // Keys still draw at once.
        update(&mut m, key('j'));
        assert!(m.dirty);
    }

    #[test]
    fn stopping_asks_first_and_then_stops_every_modem() {
        let (mut m, run) = running(2);
        update(&mut m, key('q'));
        assert_eq!(m.overlay, Overlay::ConfirmStationStop);
        assert!(update(&mut m, code(KeyCode::Esc)).is_empty());
        assert_eq!(m.overlay, Overlay::None);
        // Ctrl-C asks too.
        update(
            &mut m,
            Msg::Key(KeyEvent::new(KeyCode::Char('c'), KeyModifiers::CONTROL)),
        );
        assert_eq!(m.overlay, Overlay::ConfirmStationStop);
        update(&mut m, code(KeyCode::Esc));
        update(&mut m, key('c'));
        assert_eq!(m.overlay, Overlay::ConfirmStationStop);
        let fx = update(&mut m, key('y'));
        assert_eq!(fx, [Effect::Cancel { job: run }]);
        assert!(m.station.as_ref().unwrap().stop_requested);
        // Stopping: q leaves once every modem has stopped (the runtime waits for the run).
        let fx = update(&mut m, key('q'));
        assert_eq!(fx, [Effect::Quit { cancel_jobs: true }]);
    }

    #[test]
    fn a_signal_stops_the_run_and_a_hangup_waits_for_it() {
        let (mut m, run) = running(2);
        update(&mut m, Msg::Hangup);
        assert!(!m.quit_sent, "the run goes on without a screen");
        let fx = update(&mut m, Msg::Terminate);
        assert_eq!(
            fx,
            [
                Effect::Cancel { job: run },
                Effect::Quit { cancel_jobs: true }
            ]
        );
    }

    #[test]
    fn the_end_shows_the_summary_until_esc_goes_back() {
        let (mut m, run) = running(2);
        flashing(&mut m, run, "SN:1", 10);
        ev(
            &mut m,
            run,
            "SN:1",
            Note::Finished {
                row: Box::new(row("SN:1", Outcome::Verified)),
            },
            20,
        );
        m.dirty = false;
        let summary = Summary::new(
            "/pkg".into(),
            "t".into(),
            2000,
            vec![row("SN:1", Outcome::Verified), row("SN:2", Outcome::Failed)],
        );
        update(
            &mut m,
            Msg::StationEnded {
                run,
                result: Ok(Box::new(StationDone {
                    summary,
                    folder: "/run".into(),
                })),
                t_ms: 30,
            },
        );
        assert!(m.dirty, "the end draws at once");
        let st = m.station.as_ref().unwrap();
        assert!(!st.running() && !m.station_running());
        // The modem whose job never reported takes its summary row.
        assert!(matches!(&st.rows[1].phase, RowPhase::Finished(r) if r.outcome == Outcome::Failed));
        let c = st.counts();
        assert_eq!((c.verified, c.failed), (1, 1));
        assert_eq!(m.tick_interval_ms(), None, "nothing animates after the run");
        // q leaves at once now.
        let mut q = m.station.clone();
        update(&mut m, code(KeyCode::Esc));
        assert!(m.station.is_none());
        assert!(m.notice.as_deref().unwrap().contains("/run"));
        m.station = q.take();
        assert_eq!(
            update(&mut m, key('q')),
            [Effect::Quit { cancel_jobs: false }]
        );
    }

    #[test]
    fn a_run_that_cannot_start_says_why() {
        let (mut m, run) = running(2);
        update(
            &mut m,
            Msg::StationEnded {
                run,
                result: Err(crate::tui::msg::Problem {
                    what: "No modem matches usb:serial=X".into(),
                    why: "present: none".into(),
                    next: "Check the modems".into(),
                }),
                t_ms: 30,
            },
        );
        let st = m.station.as_ref().unwrap();
        assert!(!st.running());
        assert_eq!(st.problem.as_ref().unwrap().next, "Check the modems");
    }
}
