//! The error explainer against real logs (tests/data/reallogs, copies of shared/realdata/logs):
//! what it finds, what it names as the cause, and that harmless lines stay harmless.

use qrescue::explain::{explain_all, first_cause, worst, Context, Finding, Severity};

/// The log's lines without the `#` annotations the data folder adds.
fn findings(name: &str) -> Vec<Finding> {
    let path = format!("{}/tests/data/reallogs/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    explain_all(text.lines().filter(|l| !l.starts_with('#')))
}

fn ids(f: &[Finding]) -> Vec<&'static str> {
    f.iter().map(|f| f.explanation.id).collect()
}

#[test]
fn rm551e_handshake_failure_names_the_consumed_hello() {
    let f = findings("qfirehose_rm551e_sahara_unexpected_cmd4.txt");
    assert_eq!(
        ids(&f),
        [
            "usb_timeout",
            "usb_timeout",
            "sahara_past_handshake",
            "sahara_protocol_error",
            "qfh_upgrade_failed"
        ]
    );
    assert!(f[..2]
        .iter()
        .all(|f| f.explanation.severity == Severity::Warning && f.explanation.code == Some(110)));
    let cause = first_cause(&f).unwrap();
    assert_eq!(cause.explanation.id, "sahara_past_handshake");
    assert_eq!(cause.explanation.code, Some(4));
    assert_eq!(cause.context, Context::Sahara);
    assert!(cause.explanation.next.contains("Power-cycle"));
    assert!(f[3].explanation.generic && f[4].explanation.generic);
    assert_eq!(worst(&f), Some(Severity::Error));
}

#[test]
fn rg500q_switch_to_edl_is_normal_progress() {
    let f = findings("qfirehose_rg500q_sdx55_switch_to_edl_and_sahara.txt");
    assert_eq!(
        ids(&f),
        [
            "qfh_poll_timeout",
            "qfh_edl_switch",
            "qfh_edl_switch",
            "qfh_wait_reenumeration"
        ]
    );
    assert_eq!(f[0].explanation.severity, Severity::Benign);
    // The module left the bus because it was told to: read in the rebooting phase, not a fault.
    assert_eq!(f[3].context, Context::Rebooting);
    assert!(
        f.iter().all(|f| !f.explanation.severity.is_problem()),
        "{f:#?}"
    );
    assert!(first_cause(&f).is_none());
}

#[test]
fn eg25g_md5_pass_then_generic_fail() {
    let f = findings("qfirehose_eg25g_pinephone_runs.txt");
    assert_eq!(ids(&f), ["qfh_md5_totals", "qfh_fail_location"]);
    assert_eq!(f[0].explanation.severity, Severity::Info);
    assert!(f[0].explanation.title.contains("18 files"));
    let fail = &f[1].explanation;
    assert!(fail.generic);
    assert_eq!(fail.code, Some(366));
    assert!(fail.title.contains("qfirehose.c:366"), "{}", fail.title);
    // Nothing more specific in the log: the generic line is all there is.
    assert_eq!(first_cause(&f).unwrap().explanation.id, "qfh_fail_location");
}

#[test]
fn eg25_crash_kernel_log() {
    let f = findings("dmesg_eg25_crash_reenumeration.txt");
    assert!(f.iter().all(|f| f.context == Context::Kernel));
    let descriptor: Vec<&Finding> = f
        .iter()
        .filter(|f| f.explanation.id == "kernel_descriptor_error")
        .collect();
    assert_eq!(descriptor.len(), 4);
    assert!(descriptor
        .iter()
        .all(|d| d.explanation.code == Some(-62) && d.explanation.severity == Severity::Error));
    let power = f
        .iter()
        .filter(|f| f.explanation.id == "kernel_port_power_cycle")
        .count();
    assert_eq!(power, 1);
    let disconnects: Vec<Option<i64>> = f
        .iter()
        .filter(|f| f.explanation.id == "kernel_usb_disconnect")
        .map(|f| f.explanation.code)
        .collect();
    assert_eq!(disconnects, [Some(3), Some(3)]);
    // Driver attach/detach chatter is information, never a failure; unrelated lines are skipped.
    assert!(f
        .iter()
        .filter(|f| f.explanation.id.starts_with("kernel_serial"))
        .all(|f| f.explanation.severity == Severity::Info));
    assert!(!f.iter().any(|f| f.line.contains("inv-mpu6050")));
    assert_eq!(
        first_cause(&f).unwrap().explanation.id,
        "kernel_descriptor_error"
    );
}

#[test]
fn edl_sessions_have_only_harmless_noise() {
    let f = findings("edl_bkerler_sessions.txt");
    assert!(
        f.iter()
            .all(|f| f.explanation.severity <= Severity::Warning),
        "{f:#?}"
    );
    let benign: Vec<&str> = f
        .iter()
        .filter(|f| f.explanation.severity == Severity::Benign)
        .map(|f| f.explanation.id)
        .collect();
    assert_eq!(
        benign,
        [
            "edl_optional_field",
            "edl_optional_field",
            "payload_too_large"
        ]
    );
    assert!(ids(&f).contains(&"edl_lib_timeout"));
}

#[test]
fn qsaharaserver_reading_xml_is_recognised() {
    let f = findings("sahara_firehose_host_logs_fwupd_qdl.txt");
    assert_eq!(
        ids(&f),
        [
            "sahara_packet_length",
            "sahara_protocol_error",
            "sahara_upload_failed",
            "win_download_fail"
        ]
    );
    let cause = first_cause(&f).unwrap();
    assert_eq!(cause.explanation.code, Some(1_702_240_364));
    assert!(cause.explanation.title.contains("already running"));
    assert!(f[1..].iter().all(|f| f.explanation.generic));
}
