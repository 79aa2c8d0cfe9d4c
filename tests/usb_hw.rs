//! The USB transport end to end.
//!
//! Without hardware: `qrescue info --port usb` on a host with no modem in download mode exits
//! with the "no device" code (3) and says what to do.
//!
//! With hardware (opt-in): set `QRESCUE_HW_USB` to a `--port` value naming a modem in download
//! mode (`usb`, `usb:3-1.2`, `usb:serial=49CBD7EF`), e.g.
//! `QRESCUE_HW_USB=usb cargo test --test usb_hw -- --nocapture`. The tests then open the device,
//! check that a second opener is refused while it is held, and read its identity over Sahara.
//! Without the variable they print a note and skip.

mod common;

use std::time::Duration;

use common::{code, describe, last_json, qrescue, stderr};
use qrescue::transport::usb::{UsbOptions, UsbSelector, UsbTransport, QUALCOMM_VID, SAHARA_PIDS};
use qrescue::transport::{Framing, Transport};

const QUICK: Duration = Duration::from_secs(30);
const HW_ENV: &str = "QRESCUE_HW_USB";

/// The `--port` value of the hardware under test, or `None` (with a note) to skip.
fn hw_port(test: &str) -> Option<String> {
    match std::env::var(HW_ENV) {
        Ok(v) if !v.trim().is_empty() => Some(v.trim().to_string()),
        _ => {
            eprintln!("skipping {test}: set {HW_ENV}=usb (or usb:3-1.2, usb:serial=…) to run it against a modem in download mode");
            None
        }
    }
}

/// Whether this host has a Qualcomm Sahara device plugged in (then the no-device test cannot
/// run: it would talk to it).
fn sahara_device_present() -> bool {
    let Ok(dir) = std::fs::read_dir("/sys/bus/usb/devices") else {
        return false;
    };
    dir.filter_map(Result::ok).any(|e| {
        let read = |f: &str| {
            std::fs::read_to_string(e.path().join(f))
                .ok()
                .and_then(|s| u16::from_str_radix(s.trim(), 16).ok())
        };
        read("idVendor") == Some(QUALCOMM_VID)
            && read("idProduct").is_some_and(|p| SAHARA_PIDS.contains(&p))
    })
}

#[test]
fn info_over_usb_without_a_modem_says_no_device() {
    if sahara_device_present() {
        eprintln!("skipping: a Qualcomm download-mode device is plugged in; this test needs a host without one");
        return;
    }
    let out = qrescue(&["info", "--port", "usb"], QUICK);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let err = stderr(&out);
    assert!(
        err.contains("No modem in download (05c6:9008)"),
        "{}",
        describe(&out)
    );
    assert!(err.contains("next:"), "{}", describe(&out));

    let out = qrescue(&["--json", "info", "--port", "usb:serial=0000DEAD"], QUICK);
    assert_eq!(code(&out), 3, "{}", describe(&out));
    let v = last_json(&out);
    assert_eq!(v["error"]["kind"], "no_device", "{}", describe(&out));
    assert!(v["error"]["what"]
        .as_str()
        .unwrap()
        .contains("usb:serial=0000DEAD"));
}

#[test]
fn a_bad_usb_selector_is_a_usage_error() {
    let out = qrescue(&["info", "--port", "usb:here"], QUICK);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(stderr(&out).contains("usb:3-1.2"), "{}", describe(&out));
}

#[test]
fn hw_the_device_opens_once_and_speaks_sahara() {
    let Some(port) = hw_port("hw_the_device_opens_once_and_speaks_sahara") else {
        return;
    };
    let sel = UsbSelector::parse_port(&port)
        .unwrap_or_else(|| panic!("{HW_ENV}={port} does not name USB"))
        .unwrap_or_else(|e| panic!("{HW_ENV}={port}: {e}"));

    // Held by this process: a second qrescue must be refused without touching the device.
    {
        let t = UsbTransport::open(&sel, UsbOptions::default()).expect("open the USB modem");
        match t.framing() {
            Framing::Packet { max_packet_size } => {
                assert!(
                    [64, 512, 1024].contains(&max_packet_size),
                    "{max_packet_size}"
                )
            }
            other => panic!("USB must be a packet transport, got {other:?}"),
        }
        eprintln!("opened {}", t.describe());
        assert!(t.describe().starts_with(&format!("USB {}", t.location())));
        let out = qrescue(&["info", "--port", &port], QUICK);
        assert_eq!(code(&out), 1, "{}", describe(&out));
        assert!(
            stderr(&out).contains(&format!("PID {}", std::process::id())),
            "{}",
            describe(&out)
        );
    }

    // Released: the identity reads over Sahara.
    let out = qrescue(&["--json", "info", "--port", &port], QUICK);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let v = last_json(&out);
    assert_eq!(v["event"], "info", "{}", describe(&out));
    assert!(v["info"].is_object(), "{}", describe(&out));
    eprintln!("{}", v["info"]);
}
