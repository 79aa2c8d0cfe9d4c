//! The log pane with real log lines: tui-logger fed through its tracing layer (its own test
//! binary, because tui-logger's buffer is process-wide). Levels are shown; scrolling back with
//! `model.log_scroll` shows older lines and stops at the top.

use ratatui::backend::TestBackend;
use ratatui::Terminal;
use tracing_subscriber::layer::SubscriberExt;

use qrescue::tui::model::{Config, Focus, Model};
use qrescue::tui::view::view;

fn screen(m: &Model) -> String {
    let mut term = Terminal::new(TestBackend::new(80, 24)).unwrap();
    term.draw(|f| view(m, f)).unwrap();
    let buf = term.backend().buffer();
    let mut s = String::new();
    for y in 0..buf.area.height {
        for x in 0..buf.area.width {
            s.push_str(buf[(x, y)].symbol());
        }
        s.push('\n');
    }
    s
}

#[test]
fn log_lines_show_their_level_and_scroll_back() {
    tui_logger::set_default_level(tui_logger::LevelFilter::Trace);
    let subscriber = tracing_subscriber::registry().with(tui_logger::TuiTracingSubscriberLayer);
    tracing::subscriber::with_default(subscriber, || {
        tracing::warn!("ModemManager holds the port");
        for i in 0..60 {
            tracing::info!("line {i:02} of the session");
        }
        tracing::error!("Sahara: no HELLO within 5 s");
    });
    tui_logger::move_events();

    let mut m = Model::new(Config {
        log_file: Some("/var/log/qrescue.log".into()),
        ..Config::default()
    });
    let end = screen(&m);
    assert!(end.contains("Log → /var/log/qrescue.log"), "{end}");
    let line = |s: &str, needle: &str| s.lines().find(|l| l.contains(needle)).map(str::to_string);
    let err = line(&end, "Sahara: no HELLO within 5 s").expect("the error line");
    assert!(err.contains("ERROR"), "{err}");
    assert!(line(&end, "line 59 of the session")
        .unwrap()
        .contains("INFO"));
    assert!(!end.contains("no log lines yet"));

    // A little back: the newest line is out of view, older ones are in.
    m.focus = Focus::Log;
    m.log_scroll = 6;
    let back = screen(&m);
    assert!(!back.contains("Sahara: no HELLO"), "{back}");
    assert!(back.contains("of the session"), "{back}");
    assert!(back.contains("6 lines back, PgDn to follow"), "{back}");

    // Far back: stops at the top (the first line), never wraps around to the end.
    m.log_scroll = 1000;
    let top = screen(&m);
    assert!(
        line(&top, "ModemManager holds the port")
            .unwrap()
            .contains("WARN"),
        "{top}"
    );
    assert!(!top.contains("Sahara: no HELLO"), "{top}");
}
