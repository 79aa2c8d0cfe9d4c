//! `qrescue list` and `qrescue udev-rules` through the real binary: pasted dumps (real
//! descriptors), a fake sysfs tree, errors and exit codes.

mod common;

use std::fs;
use std::path::Path;
use std::time::Duration;

use common::{code, describe, json_lines, qrescue, s, stdout, tempdir};

const T: Duration = Duration::from_secs(30);

fn real(name: &str) -> String {
    format!("{}/tests/data/reallogs/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn list_from_a_real_lsusb_dump_names_the_model_and_the_ports() {
    let f = real("lsusb_v_quectel_rm500q_2c7c_0800_normal_mode.txt");
    let out = qrescue(&["list", "--from-text", &f], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("bus 4 dev 7  2c7c:0800  normal mode  RM500Q/RM5xx (SDX55)"),
        "{text}"
    );
    assert!(text.contains("serial 40046d60"), "{text}");
    assert!(
        text.contains("ports: if0 DM, if1 NMEA, if2 AT, if3 modem, if4 net, if5 adb"),
        "{text}"
    );
    assert!(text.contains("1 modem(s) among 1 USB device(s)"), "{text}");
}

#[test]
fn list_json_gives_one_object_per_device_with_the_short_mode_tag() {
    let f = real("usb_ids_edl_900e_and_descriptor_snippets.txt");
    let out = qrescue(&["list", "--json", "--from-text", &f], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let lines = json_lines(&out);
    let modes: Vec<&str> = lines.iter().map(|j| j["mode"].as_str().unwrap()).collect();
    assert_eq!(
        modes,
        ["edl", "edl", "edl", "normal", "normal", "normal", "normal"]
    );
    let qfh = &lines[1];
    assert_eq!(qfh["location"], "3-1");
    assert_eq!(qfh["usb_id"], "05c6:9008");
    assert_eq!(qfh["ports"][0]["role"], "sahara");
    assert_eq!(qfh["ports"][0]["driver"], "qcserial");
    assert_eq!(qfh["ports"][0]["class"], "ff/ff/11");
    assert_eq!(lines[0]["location"], serde_json::Value::Null);
    assert!(lines.iter().all(|j| j["event"] == "device"));
}

/// A fake sysfs tree with an EG25-G (ttys on interfaces 0-3) and a mouse.
fn fake_tree(root: &Path) {
    let dev = common::fake_eg25g_sysfs(root);
    let put = common::put_attrs;
    put(
        &dev.join("1-2"),
        &[("idVendor", "046d"), ("idProduct", "c52b"), ("speed", "12")],
    );
}

#[test]
fn list_reads_the_host_tree_and_shows_ttys_by_interface() {
    let tmp = tempdir();
    fake_tree(tmp.path());
    let out = qrescue(&["list", "--sysfs-root", s(tmp.path())], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(
        text.contains("1-4  2c7c:0125  normal mode  EC25/EG25  serial d1098243  480M"),
        "{text}"
    );
    assert!(text.contains("if0 DM /dev/ttyUSB0"), "{text}");
    assert!(text.contains("if2 AT /dev/ttyUSB2"), "{text}");
    assert!(!text.contains("046d:c52b"), "{text}");
    assert!(text.contains("1 modem(s) among 2 USB device(s)"), "{text}");

    let out = qrescue(
        &["list", "--all", "--json", "--sysfs-root", s(tmp.path())],
        T,
    );
    let lines = json_lines(&out);
    assert_eq!(lines.len(), 2, "{}", describe(&out));
    assert_eq!(lines[0]["location"], "1-2");
    assert_eq!(lines[0]["mode"], "other");
    assert_eq!(lines[1]["ports"][2]["tty"], "/dev/ttyUSB2");
}

#[test]
fn list_without_a_modem_says_what_to_look_for() {
    let tmp = tempdir();
    fs::create_dir_all(tmp.path().join("sys/bus/usb/devices")).unwrap();
    let out = qrescue(&["list", "--sysfs-root", s(tmp.path())], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    assert!(stdout(&out).contains("No modem found among 0 USB device(s)"));
    assert!(stdout(&out).contains("05c6:9008"));
}

#[test]
fn list_from_text_refuses_unreadable_and_unrecognised_files() {
    let tmp = tempdir();
    let missing = tmp.path().join("missing.txt");
    let out = qrescue(&["list", "--from-text", s(&missing)], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(common::stderr(&out).contains("cannot read"));
    let junk = tmp.path().join("junk.txt");
    fs::write(&junk, "hello, this is not lsusb\n").unwrap();
    let out = qrescue(&["list", "--from-text", s(&junk)], T);
    assert_eq!(code(&out), 2, "{}", describe(&out));
    assert!(common::stderr(&out).contains("no USB device description"));
}

#[test]
fn udev_rules_print_install_steps_and_rules() {
    let out = qrescue(&["udev-rules"], T);
    assert_eq!(code(&out), 0, "{}", describe(&out));
    let text = stdout(&out);
    assert!(text.starts_with("# qrescue udev rules"), "{text}");
    assert!(text.contains("sudo tee /etc/udev/rules.d/51-qrescue.rules"));
    assert!(text.contains(
        "ATTRS{idVendor}==\"05c6\", ATTRS{idProduct}==\"9008\", ENV{ID_MM_DEVICE_IGNORE}=\"1\""
    ));
    assert!(text.contains(
        "ATTRS{idVendor}==\"2c7c\", ATTRS{idProduct}==\"0514\", ENV{.QRESCUE_IFNUM}==\"02\", ENV{ID_MM_PORT_IGNORE}=\"1\""
    ));
    assert!(text.trim_end().ends_with("LABEL=\"qrescue_end\""));

    let out = qrescue(&["udev-rules", "--json"], T);
    let j = common::last_json(&out);
    assert_eq!(j["event"], "udev-rules");
    assert_eq!(j["text"].as_str().unwrap().trim_end(), text.trim_end());
}
