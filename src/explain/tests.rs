use super::table::{
    errno_of as test_errno_of, fail_macro as test_fail_macro,
    kernel_error_of as test_kernel_error_of, rules,
};
use super::*;
use proptest::prelude::*;

#[test]
fn every_rule_has_a_real_example_and_explains_it() {
    let mut ids = std::collections::HashSet::new();
    for r in rules() {
        assert!(ids.insert(r.id), "duplicate id {}", r.id);
        assert!(!r.examples.is_empty(), "{} has no example", r.id);
        assert!(
            r.source.contains("USERS.md")
                || r.source.contains("PROTOCOLS.md")
                || r.source.contains("realdata"),
            "{} cites no document: {}",
            r.id,
            r.source
        );
        for (text, ctx) in r.examples {
            let e =
                explain(text, *ctx).unwrap_or_else(|| panic!("{}: {text:?} not explained", r.id));
            assert_eq!(e.id, r.id, "{text:?} in {ctx:?}");
            assert!(!e.title.is_empty() && !e.source.is_empty(), "{}", r.id);
            assert!(!e.title.contains("{code}"), "{}: {}", r.id, e.title);
        }
    }
}

/// Programmer messages (USERS.md §2.1, §2.5, §1 problem 16) come from the Firehose table.
#[test]
fn programmer_messages_use_the_firehose_table() {
    let cases: &[(&str, &str, Severity)] = &[
        (
            r#"<log value="start_sector unaligned"/>"#,
            "nand_start_sector_unaligned",
            Severity::Fatal,
        ),
        (
            "Block erase request exceeding total number of blocks",
            "nand_erase_beyond_end",
            Severity::Fatal,
        ),
        (
            "ERROR: Failed to open device, type:nand, slot:0, lun:0 error:4",
            "nand_open_failed",
            Severity::Fatal,
        ),
        (
            "WARN: [205]NAND Error -2 (4)",
            "nand_open_failed",
            Severity::Fatal,
        ),
        (
            "Attribute 'PAGES_PER_BLOCK'=2048 must be equal to disk pages per block 64",
            "nand_pages_per_block_mismatch",
            Severity::Fatal,
        ),
        (
            "LOG: Host's payload to target size is too large",
            "payload_too_large",
            Severity::Benign,
        ),
        (
            "10:35:36.407 [DEBUG] DEVPRG LOG: Host's payload to target size is too large",
            "payload_too_large",
            Severity::Benign,
        ),
        ("bad block", "nand_bad_block", Severity::Benign),
    ];
    for (text, id, sev) in cases {
        let e = explain(text, Context::Firehose).unwrap_or_else(|| panic!("{text}"));
        assert_eq!((e.id, e.severity), (*id, *sev), "{text}");
        assert!(e.source.contains(".md"), "{}", e.source);
        // The same text from an unknown origin means the same.
        assert_eq!(explain(text, Context::Any).unwrap().id, *id);
        // A kernel or AT line is never read as a programmer message.
        assert!(explain(text, Context::At).is_none_or(|e| e.id != *id));
    }
}

#[test]
fn the_same_timeout_means_different_things_by_context() {
    let t = "errno = 110 (Connection timed out)";
    let by = |c| explain(t, c).unwrap();
    assert_eq!(by(Context::AfterWelcome).severity, Severity::Benign);
    assert_eq!(by(Context::Rebooting).severity, Severity::Info);
    assert_eq!(by(Context::Sahara).severity, Severity::Error);
    assert_eq!(by(Context::Any).severity, Severity::Warning);
    assert_eq!(by(Context::Any).code, Some(110));
    let p = "inf[0] ep_in -1/1024, errno = 71 (Protocol error)";
    assert_eq!(
        explain(p, Context::Rebooting).unwrap().severity,
        Severity::Info
    );
    assert_eq!(
        explain(p, Context::Firehose).unwrap().severity,
        Severity::Error
    );
    let f = "firehose_protocol.c fh_recv_cmd 294 fail";
    assert_eq!(
        explain(f, Context::AfterWelcome).unwrap().severity,
        Severity::Benign
    );
    let e = explain(f, Context::Firehose).unwrap();
    assert_eq!(
        (e.severity, e.generic, e.code),
        (Severity::Error, true, Some(294))
    );
    assert!(e.title.contains("firehose_protocol.c:294"), "{}", e.title);
    let u = "fail to fopen /sys/bus/usb/devices/2-1/uevent, errno: 2 (No such file or directory)";
    assert_eq!(
        explain(u, Context::Rebooting).unwrap().severity,
        Severity::Info
    );
    assert_eq!(
        explain(u, Context::Any).unwrap().severity,
        Severity::Warning
    );
}

#[test]
fn numbers_are_captured() {
    let e = explain(
        "usb 1-3: device descriptor read/64, error -110",
        Context::Kernel,
    )
    .unwrap();
    assert_eq!(e.code, Some(-110));
    assert!(e.title.contains("-110"), "{}", e.title);
    assert!(e.cause.contains("did not answer in time"), "{}", e.cause);
    let e = explain("+CME ERROR: 10", Context::At).unwrap();
    assert_eq!((e.code, e.severity), (Some(10), Severity::Warning));
    assert!(e.title.contains("SIM"));
    let e = explain("+CME ERROR: memory failure", Context::At).unwrap();
    assert_eq!(e.severity, Severity::Error);
    assert!(e.title.contains("IMEI"));
    let e = explain(
        "Received a different q_cmd: 4 while waiting for hello packet",
        Context::Any,
    )
    .unwrap();
    assert_eq!(e.code, Some(4));
    assert!(e.title.contains("command 4"));
    let e = explain(
        "Firmware update verify was unsuccessful... ErrorCode: 174",
        Context::Any,
    )
    .unwrap();
    assert_eq!(e.code, Some(174));
    let e = explain(
        "Totals checking 18 files md5 value, 2 file fail!",
        Context::Any,
    )
    .unwrap();
    assert_eq!((e.severity, e.code), (Severity::Error, Some(2)));
    let e = explain(
        "Totals checking 18 files md5 value, 0 file fail!",
        Context::Any,
    )
    .unwrap();
    assert_eq!(e.severity, Severity::Info);
    assert!(e.title.contains("18 files"));
    let e = explain(
        "Command packet length 1702240364 too large to fit",
        Context::Any,
    )
    .unwrap();
    assert!(e.title.contains("already running"), "{}", e.title);
    let e = explain("Command packet length 99999 too large to fit", Context::Any).unwrap();
    assert!(e.title.contains("Garbled"), "{}", e.title);
    assert_eq!(explain("+CFUN: 5", Context::At).unwrap().code, Some(5));
    assert_eq!(
        explain("+CFUN: 1", Context::At).unwrap().severity,
        Severity::Info
    );
    assert_eq!(
        explain("+CFUN: 7", Context::At).unwrap().severity,
        Severity::Error
    );
    let e = explain(
        "usb 3-1: New USB device found, idVendor=2c7c, idProduct=0125, bcdDevice= 3.18",
        Context::Kernel,
    )
    .unwrap();
    assert!(
        e.title.contains("2c7c:0125") && e.title.contains("Quectel"),
        "{}",
        e.title
    );
}

#[test]
fn helper_readers() {
    assert_eq!(test_errno_of("errno = 110 (x)"), Some(110));
    assert_eq!(test_errno_of("errno: 2 (no such file)"), Some(2));
    assert_eq!(test_errno_of("[errno 110] operation timed out"), Some(110));
    assert_eq!(test_errno_of("errno"), None);
    assert_eq!(test_errno_of("errnoerrno = x errno 5"), Some(5));
    assert_eq!(
        test_kernel_error_of("cannot reset (err = -110)"),
        Some(-110)
    );
    assert_eq!(
        test_kernel_error_of("resubmit read urb failed. (-19)"),
        Some(-19)
    );
    assert_eq!(test_kernel_error_of("usb 2-1-port4: x"), None);
    assert_eq!(test_kernel_error_of("error -"), None);
    assert_eq!(
        test_fail_macro("[000.001]: src/firehose/qfirehose.c main 366 fail"),
        Some(("src/firehose/qfirehose.c", "main", 366))
    );
    assert_eq!(
        test_fail_macro("Totals checking 18 files md5 value, 0 file fail!"),
        None
    );
    assert_eq!(test_fail_macro("x.c main fail"), None);
}

#[test]
fn every_sahara_status_is_read() {
    for code in 0u32..=0x30 {
        let line = format!("END_OF_IMAGE (image 13, status {code:#04x}: x)");
        let e = explain(&line, Context::Sahara).unwrap();
        assert_eq!(e.id, "sahara_status");
        assert_eq!(e.code, Some(code as i64));
        let expect = match code {
            0 => Severity::Info,
            0x21..=0x23 | 0x25 | 0x26 => Severity::Fatal,
            _ => e.severity,
        };
        assert_eq!(e.severity, expect, "{code:#x}");
    }
    // A bare status line means a Sahara status only during Sahara.
    assert_eq!(
        explain("status 0x25", Context::Sahara).unwrap().severity,
        Severity::Fatal
    );
    assert!(explain("status 0x25", Context::Firehose).is_none());
}

#[test]
fn unknown_and_unrelated_lines_are_not_explained() {
    for l in [
        "",
        "[18532.505113] inv-mpu6050-i2c 1-0068: fifo overflow reset",
        "[000.001]: md5 checking: ./contents.xml pass",
        "[004.281]: STATE <-- SAHARA_WAIT_HELLO",
        "[011.421]: <log value=\"INFO: Calling handler for program\" />",
        "Cannot reset strikers",
        "OK",
    ] {
        assert!(explain(l, Context::Any).is_none(), "{l:?}");
    }
    // A bare ERROR is only an AT reply on an AT port.
    assert!(explain("ERROR", Context::Any).is_none());
    assert_eq!(explain("ERROR", Context::At).unwrap().id, "at_plain_error");
}

#[test]
fn tracker_follows_the_phase() {
    let mut t = Tracker::new(Context::Any);
    assert_eq!(
        t.step("[004.281]: STATE <-- SAHARA_WAIT_HELLO"),
        Context::Sahara
    );
    assert_eq!(t.step("errno = 110"), Context::Sahara);
    assert_eq!(
        t.step(r#"<log value="INFO: End of supported functions 15" />"#),
        Context::Firehose
    );
    assert_eq!(t.current(), Context::AfterWelcome);
    assert_eq!(
        t.step("firehose_protocol.c fh_recv_cmd 294 fail"),
        Context::AfterWelcome
    );
    assert_eq!(
        t.step(r#"<configure MemoryName="nand" />"#),
        Context::Firehose
    );
    assert_eq!(t.step(r#"<power value="reset" />"#), Context::Firehose);
    assert_eq!(t.step(r#"<response value="ACK" />"#), Context::Rebooting);
    assert_eq!(
        t.step("[ 3756.220927] usb 2-1: USB disconnect, device number 3"),
        Context::Kernel
    );
    assert_eq!(t.current(), Context::Rebooting);
    assert_eq!(t.step("AT+CFUN?"), Context::At);
    assert_eq!(t.step("+CFUN: 5"), Context::At);
}

#[test]
fn explain_all_and_first_cause() {
    let log = [
        "[000.294]: tmp=/sys/bus/usb/devices/usb3/../driver",
        "[005.415]: inf[0] ep_in -1/4096, errno = 110 (Connection timed out), timeout=5000",
        "[005.415]: Received a different q_cmd: 4 while waiting for hello packet",
        "[005.415]: Sahara protocol error",
        "[005.415]: Upgrade module failed.",
    ];
    let f = explain_all(log);
    assert_eq!(f.len(), 4);
    assert_eq!(f[0].line_no, 1);
    let cause = first_cause(&f).unwrap();
    assert_eq!(cause.explanation.id, "sahara_past_handshake");
    assert_eq!(worst(&f), Some(Severity::Error));
    assert!(first_cause(&[]).is_none());
    let j = serde_json::to_value(&f[3]).unwrap();
    assert_eq!(j["explanation"]["severity"], "error");
    assert_eq!(j["explanation"]["generic"], true);
    assert_eq!(j["context"], "sahara");
    let one = f[2].explanation.one_line();
    assert!(
        one.starts_with("meaning: ") && one.contains("next: "),
        "{one}"
    );
}

#[test]
fn long_lines_are_cut_on_a_char_boundary() {
    let long = format!("{}é{}", "x".repeat(MAX_LINE - 1), "errno = 71");
    // The errno lies beyond the cut: not seen.
    assert!(explain(&long, Context::Any).is_none());
    let f = explain_all([long.as_str()]);
    assert!(f.is_empty());
    let near = format!("{} errno = 71", "y".repeat(100));
    assert_eq!(explain(&near, Context::Any).unwrap().code, Some(71));
}

proptest! {
    #[test]
    fn explain_never_panics(s in ".{0,300}", c in 0usize..7) {
        let ctx = [Context::Any, Context::Sahara, Context::Firehose, Context::AfterWelcome,
            Context::Rebooting, Context::Kernel, Context::At][c];
        let _ = explain(&s, ctx);
    }

    #[test]
    fn explain_never_panics_on_near_misses(
        parts in proptest::collection::vec(prop_oneof![
            Just("errno"), Just(" = "), Just("-"), Just("0x"), Just("status"), Just("+CME ERROR:"),
            Just("+CFUN:"), Just("fail"), Just(".c"), Just(" "), Just("9999999999999999999999"),
            Just("end_of_image"), Just("packet length"), Just("too large"), Just("error -"),
            Just("idVendor="), Just("New USB device found"), Just("Totals checking"), Just("md5"),
            Just("value,"), Just("flashing of "), Just(" failed"), Just("é"), Just("["), Just("]:"),
            Just("[ 1.5] "), Just("urb"), Just("nonzero status"),
        ], 0..40)
    ) {
        let s: String = parts.concat();
        for ctx in [Context::Any, Context::Sahara, Context::Kernel, Context::At, Context::AfterWelcome] {
            let _ = explain(&s, ctx);
        }
        let _ = explain_all(s.split(' '));
    }

    #[test]
    fn long_lines_are_bounded(unit in "[ -~]{1,16}", n in 1usize..20_000) {
        let s = unit.repeat(n);
        let e = explain(&s, Context::Any);
        // Whatever is found was found within the first MAX_LINE bytes.
        if let Some(e) = e {
            prop_assert!(!e.id.is_empty());
        }
        let f = explain_all([s.as_str()]);
        prop_assert!(f.iter().all(|f| f.line.len() <= MAX_LINE));
    }
}

#[test]
fn errors_get_an_explanation_only_when_it_adds_something() {
    let busy = crate::Error::failure(
        "could not open /dev/ttyUSB0",
        "qrescue needs the port to talk to the modem",
        "close other programs",
    )
    .with_source(std::io::Error::from_raw_os_error(16));
    let x = explain_error(&busy).unwrap();
    assert_eq!(x.id, "port_busy");
    assert!(x.next.contains("qrescue preflight"));
    // An error made from the Firehose table already says what the table says.
    let nak =
        crate::protocol::firehose::explain_nak("program", &["start_sector unaligned"]).to_error();
    assert!(explain_error(&nak).is_none());
    let plain = crate::Error::usage("say what to flash", "e.g. qrescue flash PKG");
    assert!(explain_error(&plain).is_none());
}

#[test]
fn log_events_carry_an_explanation_in_json() {
    use crate::engine::events::EngineEvent;
    let known = EngineEvent::Log {
        message: "ERROR: Failed to open device, type:nand, slot:0, lun:0 error:4".into(),
    };
    let j = event_json(&known);
    assert_eq!(j["event"], "log");
    assert_eq!(j["explanation"]["id"], "nand_open_failed");
    assert_eq!(j["explanation"]["severity"], "fatal");
    assert!(j["explanation"]["source"]
        .as_str()
        .unwrap()
        .contains("USERS.md"));
    // Harmless and unknown lines, and other events, are printed as they are.
    for e in [
        EngineEvent::Log {
            message: "bad block at 0x40".into(),
        },
        EngineEvent::Log {
            message: "Configured NAND: 8192 bytes per transfer".into(),
        },
        EngineEvent::Done {
            ok: true,
            bytes: 1,
            elapsed_ms: 1,
        },
    ] {
        let j = event_json(&e);
        assert!(j.get("explanation").is_none(), "{j}");
        assert_eq!(j, serde_json::to_value(&e).unwrap());
    }
}

#[test]
fn errors_are_explained_only_by_device_or_os_text_never_by_our_own_sentences() {
    use crate::protocol::at::{AtError, CmeError, FinalResult};
    // qrescue's own warning names +CFUN: 5 (what *would* happen): no second meaning.
    let ours = crate::Error::failure(
        "qrescue stopped before sending anything: step 14 would destroy EFS2",
        "Without its RF calibration and IMEI the modem would sit in +CFUN: 5 with no signal",
        "Back up EFS2 first",
    );
    assert!(explain_error(&ours).is_none());
    // The same text in a qrescue error nested as the cause, or in our own wrapped io::Error,
    // is still ours.
    let nested = crate::Error::failure("the update stopped", "see the cause", "retry").with_source(
        crate::Error::failure("x", "the modem answered +CFUN: 5", "y"),
    );
    assert!(explain_error(&nested).is_none());
    let wrapped = crate::Error::failure("x", "y", "z")
        .with_source(std::io::Error::other("the modem would sit in +CFUN: 5"));
    assert!(explain_error(&wrapped).is_none());
    // The modem's own AT answer is explained.
    let at = crate::Error::failure("The modem refused AT+CFUN=1", "see the answer", "retry")
        .with_source(AtError::Failed {
            command: "AT+CFUN=1".into(),
            result: FinalResult::CmeError(CmeError::parse("3")),
        });
    let x = explain_error(&at).expect("the +CME ERROR is the modem's");
    assert_eq!(x.id, "at_cme_error");
    // An OS error below a qrescue error is still found (the chain is followed).
    let deep = crate::Error::failure("the backup failed", "see the cause", "retry").with_source(
        crate::Error::failure("cannot open", "ours", "ours")
            .with_source(std::io::Error::from_raw_os_error(16)),
    );
    assert_eq!(explain_error(&deep).unwrap().id, "port_busy");
}
