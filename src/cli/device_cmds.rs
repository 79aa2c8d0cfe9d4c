//! `qrescue list` (what is plugged in: mode, model, serial, ports by interface) and
//! `qrescue udev-rules` (device access and ModemManager kept off EDL and DM ports).

use std::io::Read;
use std::path::Path;

use crate::cli::args::ListArgs;
use crate::cli::output::Output;
use crate::device::classify::{classify, Classification, Port};
use crate::device::enumerate::{self, Sysfs};
use crate::device::lsusb::{self, DumpError};
use crate::device::models::{
    QualcommKind, FASTBOOT_PID, GOOGLE_VID, QUALCOMM_IDS, QUALCOMM_VID, QUECTEL_MODELS, QUECTEL_VID,
};
use crate::device::{kernlog, DeviceChange, DeviceSnapshot};
use crate::{Error, ErrorKind};

/// The largest text file `list --from-text` reads.
const MAX_TEXT_FILE: u64 = lsusb::MAX_TEXT as u64;

/// One listed device: the snapshot, what it is, and notes about where the description came
/// from (a cut dump, an inferred speed).
struct Listed {
    snap: DeviceSnapshot,
    class: Classification,
    source_notes: Vec<String>,
}

pub fn list(args: &ListArgs, out: &Output) -> crate::Result<()> {
    let (devices, warnings) = match (&args.from_text, &args.sysfs_root) {
        (Some(path), _) => from_text(path)?,
        (None, Some(root)) => (no_notes(Sysfs::new(root).devices()), Vec::new()),
        (None, None) => (
            no_notes(enumerate::list_devices(&Sysfs::host())?),
            Vec::new(),
        ),
    };
    for w in &warnings {
        tracing::warn!("{w}");
    }
    let total = devices.len();
    let listed: Vec<Listed> = devices
        .into_iter()
        .map(|(snap, source_notes)| Listed {
            class: classify(&snap),
            snap,
            source_notes,
        })
        .filter(|l| args.all || l.class.mode.is_relevant())
        .collect();
    let modems = listed.iter().filter(|l| l.class.mode.is_relevant()).count();
    for l in &listed {
        out.json_line(&device_json(l));
        for line in human(l) {
            out.line(line);
        }
    }
    let source = match &args.from_text {
        Some(p) => format!("in {}", p.display()),
        None => "on this host".to_string(),
    };
    if modems == 0 {
        out.line(format!(
            "No modem found among {total} USB device(s) {source}. A modem in emergency download \
             shows as 05c6:9008; a Quectel module in normal mode as 2c7c:xxxx.{}",
            if args.all || total == 0 {
                ""
            } else {
                " `--all` lists every device."
            }
        ));
    } else {
        out.line(format!(
            "{modems} modem(s) among {total} USB device(s) {source}."
        ));
    }
    Ok(())
}

/// A device with notes about its description.
type Noted = (DeviceSnapshot, Vec<String>);

fn no_notes(devices: Vec<DeviceSnapshot>) -> Vec<Noted> {
    devices.into_iter().map(|d| (d, Vec::new())).collect()
}

/// Read and parse a pasted dump (`-` = stdin): lsusb, lsusb -v, usb-devices, or a kernel log.
fn from_text(path: &Path) -> crate::Result<(Vec<Noted>, Vec<String>)> {
    let mut text = String::new();
    let read = if path == Path::new("-") {
        std::io::stdin()
            .lock()
            .take(MAX_TEXT_FILE + 1)
            .read_to_string(&mut text)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(MAX_TEXT_FILE + 1).read_to_string(&mut text))
    };
    read.map_err(|e| {
        Error::new(
            ErrorKind::Usage,
            format!("cannot read {}", path.display()),
            "`--from-text` needs a readable text file (lsusb -v, usb-devices or dmesg output)",
            "check the path, or pipe the text in with `--from-text -`",
        )
        .with_source(e)
    })?;
    match lsusb::parse_dump(&text) {
        Ok(d) => Ok((
            d.devices
                .into_iter()
                .map(|p| {
                    let notes = p.dump_notes();
                    (p.snapshot, notes)
                })
                .collect(),
            d.warnings,
        )),
        Err(DumpError::NoDevices) => {
            // Perhaps a kernel log: the devices still present at its end.
            let events = kernlog::timeline(&kernlog::parse_kernel_log(&text), None);
            let mut present: Vec<DeviceSnapshot> = Vec::new();
            for e in events {
                match e.change {
                    DeviceChange::Appear { device } => {
                        present.retain(|d| d.location() != device.location());
                        present.push(device);
                    }
                    DeviceChange::Vanish { location, .. } => {
                        present.retain(|d| d.location() != location)
                    }
                }
            }
            let seen = present.len();
            present.retain(|d| d.vid != 0 || d.pid != 0);
            if present.is_empty() && seen > 0 {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!(
                        "the kernel log in {} shows {seen} USB device(s) but not their IDs",
                        path.display()
                    ),
                    "without the `New USB device found, idVendor=…` lines a device cannot be \
                     classified",
                    "pass the whole `dmesg` output, or `lsusb -v` / `usb-devices` instead",
                ));
            }
            if present.is_empty() {
                return Err(Error::new(
                    ErrorKind::Usage,
                    format!("no USB device description found in {}", path.display()),
                    "qrescue reads `lsusb`, `lsusb -v`, `usb-devices` and kernel log (dmesg) text",
                    "paste the output of `lsusb -v` (or `usb-devices`) into the file",
                ));
            }
            let note = "from the kernel log: devices present at its end".to_string();
            Ok((
                present
                    .into_iter()
                    .map(|d| (d, vec![note.clone()]))
                    .collect(),
                Vec::new(),
            ))
        }
        Err(e @ DumpError::TooLarge(_)) => Err(Error::new(
            ErrorKind::Usage,
            format!("{} is too large to be a USB listing", path.display()),
            e.to_string(),
            "pass only the lsusb/usb-devices output",
        )),
    }
}

fn where_text(s: &DeviceSnapshot) -> String {
    if s.ports.is_empty() && s.bus == 0 && s.address == 0 {
        "-".to_string()
    } else if s.ports.is_empty() {
        format!("bus {} dev {}", s.bus, s.address)
    } else {
        s.location()
    }
}

fn port_text(p: &Port) -> String {
    let mut t = format!("if{} {}", p.interface, p.role.label());
    match (&p.tty, &p.driver) {
        (Some(tty), _) => t.push_str(&format!(" {tty}")),
        (None, Some(d)) => t.push_str(&format!(" ({d})")),
        _ => {}
    }
    if !p.seen {
        t.push_str(" (expected)");
    }
    t
}

fn human(l: &Listed) -> Vec<String> {
    let s = &l.snap;
    let c = &l.class;
    let mut head = format!("{}  {}  {}", where_text(s), s.id(), c.label);
    if let Some(m) = c.model() {
        if !c.label.contains(m) {
            head.push_str(&format!("  {m}"));
        }
    }
    if let Some(serial) = c.serial(s) {
        head.push_str(&format!("  serial {serial}"));
    }
    if let Some(sp) = s.speed {
        head.push_str(&format!("  {}", sp.label()));
    }
    let mut lines = vec![head];
    if !c.ports.is_empty() {
        let ports: Vec<String> = c.ports.iter().map(port_text).collect();
        lines.push(format!("    ports: {}", ports.join(", ")));
    }
    for n in c.notes.iter().chain(&l.source_notes) {
        lines.push(format!("    note: {n}"));
    }
    lines
}

fn device_json(l: &Listed) -> serde_json::Value {
    let s = &l.snap;
    let mut v = serde_json::json!({
        "event": "device",
        // A dump without port numbers (lsusb) has no location.
        "location": (!s.ports.is_empty()).then(|| s.location()),
        "bus": s.bus,
        "address": s.address,
        "usb_id": s.id(),
        "vid": format!("{:04x}", s.vid),
        "pid": format!("{:04x}", s.pid),
        "bcd_device": s.bcd_text(),
        "manufacturer": s.manufacturer,
        "product": s.product,
        "serial": l.class.serial(s),
        "speed": s.speed,
        "source_notes": l.source_notes,
    });
    if let (Some(obj), Ok(serde_json::Value::Object(c))) =
        (v.as_object_mut(), serde_json::to_value(&l.class))
    {
        obj.extend(c);
    }
    v
}

/// The udev rules text.
pub fn udev_rules_text() -> String {
    let mut r = String::new();
    let mut line = |s: &str| {
        r.push_str(s);
        r.push('\n');
    };
    line(&format!(
        "# qrescue udev rules (generated by `qrescue udev-rules`, qrescue {}).",
        env!("CARGO_PKG_VERSION")
    ));
    line("#");
    line("# Install:");
    line("#   qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules && sudo udevadm control --reload && sudo udevadm trigger");
    line("#");
    line("# What they do:");
    line("#  - the logged-in user (uaccess) may open modems in emergency download (05c6:9008), crash");
    line(
        "#    dump (05c6:900e), the other Qualcomm download IDs, every Quectel device (2c7c:*) and",
    );
    line("#    fastboot (18d1:d00d): the USB device node and its ttys;");
    line(
        "#  - ModemManager leaves download and crash-dump devices alone (ID_MM_DEVICE_IGNORE): its",
    );
    line("#    probing breaks Sahara, and two programs opening 9008 can wedge the boot ROM;");
    line("#  - ModemManager ignores the DM (DIAG) port of Quectel modules in normal mode");
    line("#    (ID_MM_PORT_IGNORE), chosen by interface number per model.");
    line("# On a host without a login seat (router, SSH-only box) uaccess grants nothing: add");
    line("# GROUP=\"plugdev\" (or your group) to the MODE rules, or run qrescue as root.");
    line("");
    line("ACTION==\"remove\", GOTO=\"qrescue_end\"");
    line("SUBSYSTEMS==\"usb\", ATTRS{bInterfaceNumber}==\"?*\", ENV{.QRESCUE_IFNUM}=\"$attr{bInterfaceNumber}\"");
    let access = |line: &mut dyn FnMut(&str), vid: u16, pid: Option<u16>| {
        let pid_dev = pid
            .map(|p| format!(", ATTR{{idProduct}}==\"{p:04x}\""))
            .unwrap_or_default();
        let pid_tty = pid
            .map(|p| format!(", ATTRS{{idProduct}}==\"{p:04x}\""))
            .unwrap_or_default();
        line(&format!(
            "SUBSYSTEM==\"usb\", ENV{{DEVTYPE}}==\"usb_device\", ATTR{{idVendor}}==\"{vid:04x}\"{pid_dev}, MODE=\"0660\", TAG+=\"uaccess\""
        ));
        line(&format!(
            "SUBSYSTEM==\"tty\", ATTRS{{idVendor}}==\"{vid:04x}\"{pid_tty}, MODE=\"0660\", TAG+=\"uaccess\""
        ));
    };
    line("");
    line("# Qualcomm boot ROM and download identities");
    for q in QUALCOMM_IDS {
        line(&format!("# {:04x}:{:04x} {}", QUALCOMM_VID, q.pid, q.label));
        access(&mut line, QUALCOMM_VID, Some(q.pid));
        if q.kind != QualcommKind::Diag {
            line(&format!(
                "ATTRS{{idVendor}}==\"{QUALCOMM_VID:04x}\", ATTRS{{idProduct}}==\"{:04x}\", ENV{{ID_MM_DEVICE_IGNORE}}=\"1\"",
                q.pid
            ));
        }
    }
    line("");
    line("# Quectel: every module, in any mode");
    access(&mut line, QUECTEL_VID, None);
    line("# The broken boot state on the Quectel ID (product QHSUSB__BULK): not a modem to probe");
    line(&format!(
        "ATTRS{{idVendor}}==\"{QUECTEL_VID:04x}\", ATTRS{{product}}==\"QHSUSB__BULK\", ENV{{ID_MM_DEVICE_IGNORE}}=\"1\""
    ));
    line("");
    line("# Quectel modules on other vendor IDs");
    for m in QUECTEL_MODELS.iter().filter(|m| m.vid != QUECTEL_VID) {
        line(&format!("# {:04x}:{:04x} {}", m.vid, m.pid, m.names));
        access(&mut line, m.vid, Some(m.pid));
    }
    line("");
    line("# Fastboot (Quectel modules enter it with AT+QFASTBOOT)");
    access(&mut line, GOOGLE_VID, Some(FASTBOOT_PID));
    line("");
    line("# ModemManager: leave the DM (DIAG) port alone, by interface number");
    for m in QUECTEL_MODELS {
        if let Some(dm) = m.layout.dm {
            line(&format!(
                "# {} ({:04x}:{:04x}): DM on interface {dm}",
                m.names, m.vid, m.pid
            ));
            line(&format!(
                "ATTRS{{idVendor}}==\"{:04x}\", ATTRS{{idProduct}}==\"{:04x}\", ENV{{.QRESCUE_IFNUM}}==\"{dm:02x}\", ENV{{ID_MM_PORT_IGNORE}}=\"1\"",
                m.vid, m.pid
            ));
        }
    }
    line("");
    line("LABEL=\"qrescue_end\"");
    r
}

pub fn udev_rules(out: &Output) -> crate::Result<()> {
    let text = udev_rules_text();
    out.json_line(&serde_json::json!({
        "event": "udev-rules",
        "install_path": "/etc/udev/rules.d/51-qrescue.rules",
        "text": text,
    }));
    out.line(text.trim_end());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::models::QUECTEL_MODELS;

    fn rules() -> Vec<String> {
        udev_rules_text()
            .lines()
            .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn every_model_with_a_known_dm_gets_one_port_ignore_rule_on_the_right_interface() {
        let rules = rules();
        for m in QUECTEL_MODELS {
            let prefix = format!(
                "ATTRS{{idVendor}}==\"{:04x}\", ATTRS{{idProduct}}==\"{:04x}\", ENV{{.QRESCUE_IFNUM}}==",
                m.vid, m.pid
            );
            let hits: Vec<&String> = rules
                .iter()
                .filter(|r| r.starts_with(&prefix) && r.contains("ID_MM_PORT_IGNORE"))
                .collect();
            match m.layout.dm {
                Some(dm) => {
                    assert_eq!(hits.len(), 1, "{}: {hits:?}", m.names);
                    assert!(
                        hits[0].contains(&format!("==\"{dm:02x}\"")),
                        "{}: {}",
                        m.names,
                        hits[0]
                    );
                }
                None => assert!(hits.is_empty(), "{}", m.names),
            }
        }
        // The exceptions, spelled out.
        let text = udev_rules_text();
        assert!(text.contains("ATTRS{idProduct}==\"0514\", ENV{.QRESCUE_IFNUM}==\"02\""));
        assert!(text.contains("ATTRS{idProduct}==\"030a\", ENV{.QRESCUE_IFNUM}==\"03\""));
        assert!(text.contains("ATTRS{idProduct}==\"0125\", ENV{.QRESCUE_IFNUM}==\"00\""));
    }

    #[test]
    fn download_and_crash_ids_are_kept_from_modemmanager_and_opened_by_the_user() {
        let rules = rules();
        for pid in ["9008", "900e", "901d", "90db", "9006", "9025"] {
            let id = format!("ATTRS{{idVendor}}==\"05c6\", ATTRS{{idProduct}}==\"{pid}\"");
            assert!(
                rules
                    .iter()
                    .any(|r| r.starts_with(&id) && r.contains("ID_MM_DEVICE_IGNORE}=\"1\"")),
                "{pid}"
            );
            assert!(rules.iter().any(|r| r.contains(&format!(
                "ATTR{{idVendor}}==\"05c6\", ATTR{{idProduct}}==\"{pid}\", MODE=\"0660\", TAG+=\"uaccess\""
            ))));
        }
        assert!(rules.iter().any(|r| r
            == "SUBSYSTEM==\"usb\", ENV{DEVTYPE}==\"usb_device\", ATTR{idVendor}==\"2c7c\", MODE=\"0660\", TAG+=\"uaccess\""));
        assert!(rules
            .iter()
            .any(|r| r.contains("ATTR{idVendor}==\"18d1\", ATTR{idProduct}==\"d00d\"")));
    }

    #[test]
    fn every_rule_line_is_well_formed() {
        let text = udev_rules_text();
        assert!(text.contains(
            "qrescue udev-rules | sudo tee /etc/udev/rules.d/51-qrescue.rules && sudo udevadm control --reload && sudo udevadm trigger"
        ));
        for r in rules() {
            assert_eq!(r.matches('"').count() % 2, 0, "{r}");
            for part in r.split(", ") {
                let ok = ["==", "!=", "+=", "="].iter().any(|op| part.contains(op));
                assert!(ok, "{r}: {part}");
                let key = part.split(['=', '!', '+']).next().unwrap();
                assert!(
                    key.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "{}._".contains(c)),
                    "{r}: key {key}"
                );
            }
        }
    }

    #[test]
    fn human_lines_name_ports_by_interface() {
        let f = crate::device::enumerate::tests::sample();
        let devs = f.sysfs().devices();
        let l = Listed {
            class: classify(&devs[0]),
            snap: devs[0].clone(),
            source_notes: vec![],
        };
        let lines = human(&l);
        assert!(
            lines[0].starts_with("3-1.2  2c7c:0125  normal mode  EC25/EG25"),
            "{lines:?}"
        );
        assert!(lines[1].contains("if0 DM /dev/ttyUSB0"), "{lines:?}");
        assert!(lines[1].contains("if2 AT /dev/ttyUSB2"), "{lines:?}");
        assert!(lines[1].contains("if4 net (qmi_wwan)"), "{lines:?}");
        let j = device_json(&l);
        assert_eq!(j["mode"], "normal");
        assert_eq!(j["model"], "EC25/EG25");
        assert_eq!(j["ports"][2]["tty"], "/dev/ttyUSB2");
    }
}
