//! Whole-session tests: the programmer runs on its own thread behind a channel transport and a
//! hand-written host drives it with the documents real tools send.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread::JoinHandle;
use std::time::Duration;

use proptest::prelude::*;
use sha2::{Digest, Sha256};

use super::gpt;
use super::storage::{BadBlocks, Storage, StorageProfile};
use super::{Programmer, ProgrammerOptions};
use crate::protocol::firehose::xml::{parse_elements, DocumentSplitter, Element, Limits};
use crate::sim::faults::{Fault, FaultPlan};
use crate::sim::profile::UnitIdentity;
use crate::sim::{AfterUpload, ProgrammerExit};
use crate::transport::{Transport, TransportError};

/// One end of an in-memory byte link: every write is one message; reads may return part of a
/// message (the rest is kept), like a stream transport.
struct ChanLink {
    tx: Sender<Vec<u8>>,
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

fn link_pair() -> (ChanLink, ChanLink) {
    let (a_tx, a_rx) = mpsc::channel();
    let (b_tx, b_rx) = mpsc::channel();
    (
        ChanLink {
            tx: a_tx,
            rx: b_rx,
            pending: Vec::new(),
        },
        ChanLink {
            tx: b_tx,
            rx: a_rx,
            pending: Vec::new(),
        },
    )
}

impl Transport for ChanLink {
    fn read(&mut self, buf: &mut [u8], timeout: Duration) -> Result<usize, TransportError> {
        if self.pending.is_empty() {
            match self.rx.recv_timeout(timeout) {
                Ok(d) => self.pending = d,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(TransportError::Timeout {
                        op: "read",
                        after: timeout,
                    })
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(TransportError::Disconnected("peer closed".into()))
                }
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }

    fn write(&mut self, data: &[u8], _timeout: Duration) -> Result<(), TransportError> {
        self.tx
            .send(data.to_vec())
            .map_err(|_| TransportError::Disconnected("peer closed".into()))
    }

    fn describe(&self) -> String {
        "test channel".into()
    }
}

fn unit() -> UnitIdentity {
    UnitIdentity {
        serial: 0x0cf9_4c64,
        hw_id: 0x0004_80e1_0000_0000,
        pk_hash: vec![0xcc; 32],
        sbl_version: 0,
    }
}

/// What the host side reads: a device document or raw bytes.
struct Host {
    link: ChanLink,
    /// Every message as the device wrote it (for checking write boundaries).
    writes: Vec<Vec<u8>>,
    splitter: DocumentSplitter,
    handle: Option<JoinHandle<(Programmer, ProgrammerExit)>>,
}

#[derive(Debug)]
struct Reply {
    logs: Vec<String>,
    response: Element,
}

impl Reply {
    fn ack(&self) -> bool {
        self.response.get("value") == Some("ACK")
    }
    fn has_log(&self, needle: &str) -> bool {
        self.logs.iter().any(|l| l.contains(needle))
    }
}

const T: Duration = Duration::from_secs(20);

fn start(prog: Programmer) -> Host {
    let (host, mut dev) = link_pair();
    let handle = std::thread::spawn(move || {
        let mut prog = prog;
        let exit = prog.serve(&mut dev, &unit());
        (prog, exit)
    });
    Host {
        link: host,
        writes: Vec::new(),
        splitter: DocumentSplitter::new(1 << 20),
        handle: Some(handle),
    }
}

fn quiet() -> ProgrammerOptions {
    ProgrammerOptions {
        welcome: false,
        welcome_delay: Duration::ZERO,
        ..Default::default()
    }
}

fn with_faults(faults: Vec<Fault>) -> ProgrammerOptions {
    ProgrammerOptions {
        faults: FaultPlan::new(faults, 1),
        ..quiet()
    }
}

fn doc(cmd: &str) -> Vec<u8> {
    format!("<?xml version=\"1.0\" encoding=\"UTF-8\" ?><data>{cmd}</data>").into_bytes()
}

impl Host {
    fn send(&mut self, bytes: &[u8]) {
        self.link.write(bytes, T).unwrap();
    }

    /// Next message from the device (one device write).
    fn recv_msg(&mut self) -> Vec<u8> {
        let m = self.link.rx.recv_timeout(T).expect("device message");
        self.writes.push(m.clone());
        m
    }

    /// Next device document.
    fn next_doc(&mut self) -> Element {
        loop {
            if let Some(d) = self.splitter.next_document().unwrap() {
                let els = parse_elements(&d, Limits::WIRE).unwrap_or_else(|e| {
                    panic!("device sent bad XML {e}: {}", String::from_utf8_lossy(&d))
                });
                assert_eq!(els[0].name, "data");
                return els[1].clone();
            }
            let m = self.recv_msg();
            assert!(
                m.ends_with(b"</data>"),
                "device document must end at </data>: {:?}",
                String::from_utf8_lossy(&m)
            );
            self.splitter.push(&m);
        }
    }

    /// Logs up to and including the next response.
    fn reply(&mut self) -> Reply {
        let mut logs = Vec::new();
        loop {
            let e = self.next_doc();
            match e.name.as_str() {
                "log" => logs.push(e.get("value").unwrap_or("").to_string()),
                "response" => return Reply { logs, response: e },
                other => panic!("unexpected element {other}"),
            }
        }
    }

    fn command(&mut self, cmd: &str) -> Reply {
        self.send(&doc(cmd));
        self.reply()
    }

    /// Raw bytes after an ACK rawmode="true"; each device write must be raw only.
    fn raw(&mut self, n: usize) -> Vec<u8> {
        assert_eq!(
            self.splitter.pending(),
            0,
            "raw data must start in a new write"
        );
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let m = self.recv_msg();
            assert!(
                out.len() + m.len() <= n,
                "raw data and XML mixed in one write"
            );
            out.extend_from_slice(&m);
        }
        out
    }

    fn program(&mut self, attrs: &str, data: &[u8], merged: bool) -> Reply {
        let d = doc(&format!("<program {attrs} />"));
        if merged {
            let mut all = d;
            all.extend_from_slice(data);
            self.send(&all);
            let r = self.reply();
            assert!(r.ack(), "program refused: {:?}", r);
            assert_eq!(r.response.get("rawmode"), Some("true"));
        } else {
            self.send(&d);
            let r = self.reply();
            if !r.ack() {
                return r;
            }
            assert_eq!(r.response.get("rawmode"), Some("true"));
            for c in data.chunks(8192) {
                self.send(c);
            }
        }
        self.reply()
    }

    fn read(&mut self, attrs: &str, bytes: usize) -> (Reply, Vec<u8>) {
        let r = self.command(&format!("<read {attrs} />"));
        if !r.ack() {
            return (r, Vec::new());
        }
        assert_eq!(r.response.get("rawmode"), Some("true"));
        let data = self.raw(bytes);
        let end = self.reply();
        assert_eq!(end.response.get("rawmode"), Some("false"));
        (end, data)
    }

    fn finish(mut self) -> (Programmer, ProgrammerExit) {
        let h = self.handle.take().unwrap();
        drop(self);
        h.join().unwrap()
    }
}

fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| ((i as u32).wrapping_mul(2_654_435_761) >> 13) as u8 ^ seed)
        .collect()
}

fn sha(d: &[u8]) -> String {
    hex::encode(Sha256::digest(d))
}

fn nand_em12g_clean() -> StorageProfile {
    match StorageProfile::nand_em12g() {
        StorageProfile::Nand(mut n) => {
            n.bad_blocks = BadBlocks::None;
            StorageProfile::Nand(n)
        }
        p => p,
    }
}

#[test]
fn welcome_logs_and_nand_configure_like_a_real_programmer() {
    let opts = ProgrammerOptions {
        welcome_delay: Duration::from_millis(20),
        ..Default::default()
    };
    let mut h = start(Programmer::new(&StorageProfile::nand_em12g(), opts));
    let mut lines = Vec::new();
    loop {
        let e = h.next_doc();
        assert_eq!(e.name, "log");
        let v = e.get("value").unwrap().to_string();
        let end = v.starts_with("INFO: End of supported functions");
        lines.push(v);
        if end {
            break;
        }
    }
    assert!(h.writes.iter().all(|w| w.ends_with(b"</data>")));
    assert_eq!(h.writes.len(), lines.len(), "one document per write");
    assert!(lines[0].starts_with("INFO: Binary build date: "));
    assert_eq!(lines[1], "INFO: Chip serial num: 217664612 (0xcf94c64)");
    assert_eq!(lines[2], "INFO: Supported Functions (15):");
    let funcs: Vec<&str> = lines[3..18]
        .iter()
        .map(|l| l.trim_start_matches("INFO: "))
        .collect();
    assert_eq!(funcs, super::SUPPORTED_FUNCTIONS.to_vec());
    assert_eq!(lines[18], "INFO: End of supported functions 15");
    assert_eq!(lines.len(), 19);

    // QFH's NAND configure (double space, ZlpAwareHost spelling).
    let r = h.command("<configure MemoryName=\"nand\" Verbose=\"0\" AlwaysValidate=\"0\" MaxDigestTableSizeInBytes=\"2048\" MaxPayloadSizeToTargetInBytes=\"8192\"  ZlpAwareHost=\"1\" SkipStorageInit=\"0\" />");
    assert_eq!(
        r.logs,
        vec![
            "INFO: Calling handler for configure",
            "INFO: Storage type set to value nand"
        ]
    );
    let g = |k: &str| r.response.get(k).unwrap().to_string();
    assert!(r.ack());
    assert_eq!(g("MemoryName"), "nand");
    assert_eq!(g("MinVersionSupported"), "1");
    assert_eq!(g("Version"), "1");
    assert_eq!(g("MaxPayloadSizeToTargetInBytes"), "8192");
    assert_eq!(g("MaxPayloadSizeToTargetInBytesSupported"), "8192");
    assert_eq!(g("MaxXMLSizeInBytes"), "4096");
    assert!(r.response.get("MaxPayloadSizeFromTargetInBytes").is_some());
    assert!(r.response.get("DateTime").is_some());
    assert_eq!(g("TargetName"), "SDX20");

    // A larger request is granted at the supported size.
    let r =
        h.command("<configure MemoryName=\"nand\" MaxPayloadSizeToTargetInBytes=\"1048576\" />");
    assert!(r.ack());
    assert_eq!(
        r.response.get("MaxPayloadSizeToTargetInBytes"),
        Some("8192")
    );
    // edl's PAGES_PER_BLOCK is checked.
    let r = h.command("<configure MemoryName=\"nand\" PAGES_PER_BLOCK=\"2048\" />");
    assert!(!r.ack());
    assert!(r.has_log("Attribute 'PAGES_PER_BLOCK'=2048 must be equal to disk pages per block 64"));
    // A storage type the device does not have.
    let r = h.command("<configure MemoryName=\"eMMC\" />");
    assert!(!r.ack());
    assert!(r.has_log("Not support configure MemoryName eMMC"));

    // getstorageinfo JSON.
    let r = h.command("<getstorageinfo physical_partition_number=\"0\" />");
    assert!(r.ack());
    let json = r.logs.iter().find(|l| l.contains("storage_info")).unwrap();
    let v: serde_json::Value = serde_json::from_str(json.trim_start_matches("INFO: ")).unwrap();
    let si = &v["storage_info"];
    assert_eq!(si["total_blocks"], 2048);
    assert_eq!(si["block_size"], 262144);
    assert_eq!(si["page_size"], 4096);
    assert_eq!(si["num_physical"], 1);
    assert_eq!(si["mem_type"], "NAND");
    assert!(si["prod_name"].is_string());

    let r = h.command("<power value=\"reset\" DelayInSeconds=\"10\" />");
    assert!(r.ack());
    assert!(r.has_log("Will issue reset/power off 100 useconds"));
    let (_, exit) = h.finish();
    assert_eq!(exit, ProgrammerExit::Reset);
}

#[test]
fn emmc_session_program_merged_read_back_digest_patch_report() {
    let mut h = start(Programmer::new(&StorageProfile::emmc_msm8916(), quiet()));
    // qdlrs's configure.
    let r = h.command("<configure AckRawDataEveryNumPackets=\"0\" SkipWrite=\"0\" SkipStorageInit=\"0\" MemoryName=\"emmc\" AlwaysValidate=\"0\" Verbose=\"0\" MaxDigestTableSizeInBytes=\"8192\" MaxPayloadSizeToTargetInBytes=\"1048576\" ZLPAwareHost=\"1\" />");
    assert!(r.ack());
    assert_eq!(r.response.get("MemoryName"), Some("eMMC"));
    assert_eq!(
        r.response.get("MaxPayloadSizeToTargetInBytes"),
        Some("1048576")
    );

    // edl's sector-1 read with the declaration variant and trailing newline inside <data>.
    h.send(b"<?xml version=\"1.0\" ?><data><read SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"1\" physical_partition_number=\"0\" start_sector=\"1\"/>\n</data>\n");
    let r = h.reply();
    assert_eq!(r.response.get("rawmode"), Some("true"));
    let hdr = h.raw(512);
    assert_eq!(&hdr[..8], b"EFI PART");
    assert!(h.reply().ack());

    // Program 1 MiB into boot with the raw data in the same write as the XML (qdlrs attrs).
    let data = pattern(1 << 20, 7);
    let r = h.program(
        "SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2048\" slot=\"0\" physical_partition_number=\"0\" start_sector=\"400480\" read_back_verify=\"0\"",
        &data,
        true,
    );
    assert!(r.ack(), "{r:?}");
    assert_eq!(r.response.get("rawmode"), Some("false"));

    // Whitespace after </data> and a qfil-style document with newlines inside <data>.
    h.send(b"\n\r\n");
    let (r, back) = h.read(
        "SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2048\" physical_partition_number=\"0\" start_sector=\"400480\"",
        data.len(),
    );
    assert!(r.ack());
    assert_eq!(sha(&back), sha(&data));
    h.send(b"<?xml version=\"1.0\" ?><data>\n <getsha256digest SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2048\" physical_partition_number=\"0\" start_sector=\"400480\" />\n   </data>");
    let r = h.reply();
    assert!(r.ack());
    assert!(r.has_log(&sha(&data).to_uppercase()));

    // A host-side file patch is ignored; a DISK patch lands little-endian.
    let r = h.command("<patch SECTOR_SIZE_IN_BYTES=\"512\" byte_offset=\"40\" filename=\"gpt_main0.bin\" physical_partition_number=\"0\" size_in_bytes=\"8\" start_sector=\"9\" value=\"NUM_DISK_SECTORS-34.\" />");
    assert!(r.ack() && r.has_log("ignored"));
    let r = h.command("<patch SECTOR_SIZE_IN_BYTES=\"512\" byte_offset=\"4\" filename=\"DISK\" physical_partition_number=\"0\" size_in_bytes=\"4\" start_sector=\"400480\" value=\"0x11223344\" what=\"test\" />");
    assert!(r.ack(), "{r:?}");
    // Unknown tags are refused, nop and setbootablestoragedrive are accepted.
    let r = h.command("<peek address64=\"0\" size_in_bytes=\"4\" />");
    assert!(!r.ack() && r.has_log("peek"));
    assert!(h.command("<NOP value=\"ping\" />").ack());
    assert!(h.command("<setbootablestoragedrive value=\"0\" />").ack());
    // Read past the end and a wrong LUN are refused.
    let (r, _) = h.read("SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2\" physical_partition_number=\"0\" start_sector=\"NUM_DISK_SECTORS-1.\"", 0);
    assert!(!r.ack());
    let (r, _) = h.read("SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"1\" physical_partition_number=\"7\" start_sector=\"0\"", 0);
    assert!(!r.ack() && r.has_log("Invalid physical partition 7"));
    assert!(h
        .command("<power value=\"reset_to_edl\" DelayInSeconds=\"0\" />")
        .ack());
    let (prog, exit) = h.finish();
    assert_eq!(exit, ProgrammerExit::ResetToEdl);

    let mut expected = data.clone();
    expected[4..8].copy_from_slice(&0x1122_3344u32.to_le_bytes());
    assert_eq!(prog.read_sectors(0, 400_480, 2048).unwrap(), expected);
    assert_eq!(prog.sha256_of(0, 400_480..402_528).unwrap(), sha(&expected));
    let report = prog.report();
    let boot = report
        .partitions
        .iter()
        .find(|p| p.region.name == "boot")
        .unwrap();
    let mut whole = expected.clone();
    whole.resize(65536 * 512, 0);
    assert_eq!(boot.sha256.as_deref(), Some(sha(&whole).as_str()));
    assert_eq!(boot.region.source, "gpt");
    assert_eq!(
        report
            .partitions
            .iter()
            .filter(|p| p.region.lun == 0)
            .count(),
        29
    );
    assert_eq!(report.storage.memory, "eMMC");
    let tags: Vec<&str> = report.commands.iter().map(|c| c.tag.as_str()).collect();
    assert_eq!(tags[..3], ["configure", "read", "program"]);
    assert_eq!(
        report.commands[2]
            .attrs
            .get("start_sector")
            .map(String::as_str),
        Some("400480")
    );
    assert!(!report.commands[2].attrs.contains_key("slot"));
    assert_eq!(report.commands.last().unwrap().tag, "power");
    assert!(serde_json::to_string(&report).unwrap().contains("\"boot\""));
    // Storage persists across serve calls.
    let mut h = start(prog);
    let (_, back) = h.read("SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2048\" physical_partition_number=\"0\" start_sector=\"400480\"", data.len());
    assert_eq!(back, expected);
    let (prog, exit) = h.finish();
    assert_eq!(exit, ProgrammerExit::LinkLost);
    assert_eq!(prog.report().sessions, 2);
}

#[test]
fn ufs_sector_size_probe_and_luns() {
    let mut h = start(Programmer::new(&StorageProfile::ufs_qcs6490(), quiet()));
    let (r, _) = h.read("SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"1\" physical_partition_number=\"0\" start_sector=\"1\"", 0);
    assert!(
        !r.ack(),
        "a 512-byte probe on 4096-byte UFS must be refused"
    );
    let (r, d) = h.read("SECTOR_SIZE_IN_BYTES=\"4096\" num_partition_sectors=\"1\" physical_partition_number=\"0\" start_sector=\"1\"", 4096);
    assert!(r.ack());
    assert_eq!(&d[..8], b"EFI PART");
    for lun in 0..6 {
        let (r, d) = h.read(&format!("SECTOR_SIZE_IN_BYTES=\"4096\" num_partition_sectors=\"1\" physical_partition_number=\"{lun}\" start_sector=\"NUM_DISK_SECTORS-1.\""), 4096);
        assert!(r.ack());
        assert_eq!(&d[..8], b"EFI PART", "backup header of LUN {lun}");
    }
    let r = h.command("<getstorageinfo physical_partition_number=\"4\" />");
    assert!(r.has_log("\"total_blocks\":262144") && r.has_log("\"mem_type\":\"UFS\""));
    // The real rawprogram4 BackupGPT entry: symbolic start sector on LUN 4.
    let backup = pattern(5 * 4096, 3);
    let r = h.program("start_sector=\"NUM_DISK_SECTORS-5.\" size_in_KB=\"20.0\" physical_partition_number=\"4\" partofsingleimage=\"true\" file_sector_offset=\"0\" num_partition_sectors=\"5\" readbackverify=\"false\" filename=\"gpt_backup4.bin\" sparse=\"false\" start_byte_hex=\"(4096*NUM_DISK_SECTORS)-20480.\" SECTOR_SIZE_IN_BYTES=\"4096\" label=\"BackupGPT\"", &backup, false);
    assert!(r.ack());
    let (prog, _) = h.finish();
    assert_eq!(prog.read_sectors(4, 262_144 - 5, 5).unwrap(), backup);
    let rep = prog.report();
    assert_eq!(rep.storage.physical_partitions.len(), 6);
    assert!(rep
        .partitions
        .iter()
        .any(|p| p.region.lun == 4 && p.region.name == "last_parti"));
    // LUN 4's GPT is now broken (backup overwritten) but the primary still reads.
    let whole = rep
        .partitions
        .iter()
        .find(|p| p.region.lun == 0 && p.region.name == "userdata")
        .unwrap();
    assert_eq!(whole.sha256, None, "a 128 GiB region is not hashed");
}

/// A real package XML from tests/data/realxml (byte-identical copies of ../shared/realdata/xml).
fn real_xml(name: &str) -> Vec<Element> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/realxml")
        .join(name);
    let text = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    parse_elements(&text, Limits::FILE)
        .unwrap()
        .into_iter()
        .filter(|e| e.depth == 1)
        .collect()
}

fn attrs_of(e: &Element, override_num: Option<u64>) -> String {
    e.attrs
        .iter()
        .map(|(k, v)| {
            if k == "num_partition_sectors" {
                if let Some(n) = override_num {
                    return format!("{k}=\"{n}\"");
                }
            }
            format!("{k}=\"{}\"", v.replace('&', "&amp;").replace('"', "&quot;"))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The ptool patch sequence, DISK entries in file order, leaves a valid GPT — also when the GPT
/// on the disk was written for another disk size (as a gpt_main0.bin image is).
#[test]
fn real_ptool_patch0_sequence_keeps_the_gpt_valid() {
    let patches = real_xml("qcom_emmc_msm8916_ptool__patch0.xml");
    let disk: Vec<&Element> = patches
        .iter()
        .filter(|e| e.get("filename") == Some("DISK"))
        .collect();
    assert_eq!(disk.len(), 13);
    let mut prog = Programmer::new(&StorageProfile::emmc_msm8916(), quiet());
    let n = prog.storage().num_sectors(0).unwrap();
    // Make the GPT look like ptool's image for a smaller disk: wrong last LBAs/locations and stale
    // CRCs.
    {
        let s = prog.storage_mut().block_store_mut(0).unwrap();
        s.write(9 * 512 + 40, &1_000_000u64.to_le_bytes());
        s.write(512 + 48, &1_000_000u64.to_le_bytes());
        s.write(512 + 32, &1_000_033u64.to_le_bytes());
        assert!(gpt::validate(s, 512).is_err());
        // The backup header where a fresh BackupGPT program puts it.
        let mut backup = vec![0u8; 33 * 512];
        s.read((n - 33) * 512, &mut backup);
        backup[32 * 512 + 24..32 * 512 + 32].copy_from_slice(&32u64.to_le_bytes());
        s.write((n - 33) * 512, &backup);
    }
    let mut h = start(prog);
    for p in &disk {
        let r = h.command(&format!("<patch {} />", attrs_of(p, None)));
        assert!(r.ack(), "{:?}: {r:?}", p.attrs);
    }
    let (prog, _) = h.finish();
    let s = prog.storage().block_store(0).unwrap();
    let info = gpt::validate(s, 512).expect("GPT valid after the real patch sequence");
    assert_eq!(info.entries.len(), 29);
    assert_eq!(info.entries[28].name, "userdata");
    assert_eq!(info.entries[28].last_lba, n - 34);
    assert_eq!(info.last_usable, n - 34);
    // And on the factory GPT the same sequence changes nothing but stays valid.
    let fresh = Programmer::new(&StorageProfile::emmc_msm8916(), quiet());
    let before = fresh.storage().read_sectors(0, 0, 34).unwrap();
    let mut h = start(fresh);
    for p in &disk {
        assert!(h.command(&format!("<patch {} />", attrs_of(p, None))).ack());
    }
    let (prog, _) = h.finish();
    assert!(gpt::validate(prog.storage().block_store(0).unwrap(), 512).is_ok());
    assert_eq!(prog.storage().read_sectors(0, 0, 34).unwrap(), before);
}

#[test]
fn real_ufs_patch4_sequence_keeps_lun4_valid() {
    let patches = real_xml("qcom_ufs_qcs6490_rubikpi3__patch4.xml");
    let mut h = start(Programmer::new(&StorageProfile::ufs_qcs6490(), quiet()));
    for p in patches.iter().filter(|e| e.name == "patch") {
        let r = h.command(&format!("<patch {} />", attrs_of(p, None)));
        assert!(r.ack(), "{:?}: {r:?}", p.attrs);
    }
    let (prog, _) = h.finish();
    let info = gpt::validate(prog.storage().block_store(4).unwrap(), 4096).unwrap();
    assert_eq!(info.entries.len(), 52);
    assert_eq!(info.entries[51].last_lba, 262_144 - 6);
}

/// Run a real Quectel NAND rawprogram file in QFirehose's order (PROTOCOLS.md §8) with small
/// images, as QFH sends num_partition_sectors from the file size.
fn run_nand_package(
    profile: StorageProfile,
    xml: &str,
    image_pages: u64,
) -> (Programmer, Vec<(String, Reply)>) {
    let els = real_xml(xml);
    let is0 = |e: &Element| e.get("start_sector") == Some("0");
    let mut order: Vec<&Element> = Vec::new();
    order.extend(els.iter().filter(|e| e.name == "erase" && is0(e)));
    order.extend(els.iter().filter(|e| e.name == "erase" && !is0(e)));
    order.extend(els.iter().filter(|e| e.name == "program" && !is0(e)));
    order.extend(els.iter().filter(|e| e.name == "program" && is0(e)));
    let ps = match &profile {
        StorageProfile::Nand(n) => n.geometry.page_size as usize,
        _ => unreachable!(),
    };
    let mut h = start(Programmer::new(&profile, quiet()));
    assert!(h
        .command("<configure MemoryName=\"nand\" MaxPayloadSizeToTargetInBytes=\"8192\" ZlpAwareHost=\"1\" />")
        .ack());
    let mut out = Vec::new();
    for (i, e) in order.iter().enumerate() {
        let r = if e.name == "erase" {
            h.command(&format!("<erase {} />", attrs_of(e, None)))
        } else {
            let data = pattern(image_pages as usize * ps, i as u8);
            h.program(&attrs_of(e, Some(image_pages)), &data, false)
        };
        let ok = r.ack();
        out.push((format!("{} {}", e.name, e.get("start_sector").unwrap()), r));
        if !ok {
            break;
        }
    }
    let (prog, _) = h.finish();
    (prog, out)
}

#[test]
fn real_quectel_nand_packages_flash_on_matching_profiles() {
    for (profile, xml) in [
        (
            StorageProfile::nand_em12g(),
            "quectel_em12g_sdx20__rawprogram_nand_p4K_b256K_update.xml",
        ),
        (
            StorageProfile::nand_eg25g(),
            "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
        ),
    ] {
        let name = profile.name().to_string();
        let (prog, out) = run_nand_package(profile, xml, 70);
        for (what, r) in &out {
            assert!(r.ack(), "{name}: {what}: {r:?}");
        }
        // The MIBIB was reprogrammed by the package image; the report falls back cleanly.
        let rep = prog.report();
        assert!(!rep.partitions.is_empty());
        assert_eq!(rep.storage.bad_blocks.len(), 2);
    }
}

#[test]
fn geometry_mismatches_fail_like_real_modems() {
    // EG25GGB-256 (2K pages, 256K blocks) with a p2K_b128K package: start_sector unaligned.
    let (_, out) = run_nand_package(
        StorageProfile::nand_eg25g_256k_blocks(),
        "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
        1,
    );
    let (what, last) = out.last().unwrap();
    assert!(!last.ack(), "{what}");
    assert_eq!(
        last.logs.last().map(String::as_str),
        Some("start_sector unaligned"),
        "{what}"
    );
    // A 128 MiB part with the 256 MiB package: the erase runs past the end.
    let (_, out) = run_nand_package(
        StorageProfile::nand_eg25g_128m(),
        "quectel_eg25g_mdm9607__rawprogram_nand_p2K_b128K_update.xml",
        1,
    );
    let (_, last) = out.last().unwrap();
    assert!(!last.ack());
    assert!(last.has_log("Block erase request exceeding total number of blocks"));
    // A 4K/256K package on a 2K/128K part: PAGES_PER_BLOCK agrees but the sector size does not.
    let (_, out) = run_nand_package(
        StorageProfile::nand_eg25g(),
        "quectel_em12g_sdx20__rawprogram_nand_p4K_b256K_update.xml",
        1,
    );
    assert!(!out[0].1.ack() && out[0].1.has_log("SECTOR_SIZE_IN_BYTES=4096"));
}

#[test]
fn nand_rules_over_the_wire() {
    let mut h = start(Programmer::new(&nand_em12g_clean(), quiet()));
    let a = "PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" physical_partition_number=\"0\"";
    // The factory MIBIB is at sector 640 and the SBL codeword at sector 0.
    let (_, s0) = h.read(
        &format!("{a} num_partition_sectors=\"1\" start_sector=\"0\""),
        4096,
    );
    assert_eq!(&s0[..4], &0x844B_DCD1u32.to_le_bytes());
    let (_, mib) = h.read(
        &format!("{a} num_partition_sectors=\"2\" start_sector=\"640\""),
        8192,
    );
    assert_eq!(&mib[4096..4100], &0x55EE_73AAu32.to_le_bytes());
    // Unaligned program.
    let r = h.command(&format!(
        "<program {a} num_partition_sectors=\"1\" start_sector=\"13\" />"
    ));
    assert!(!r.ack());
    assert_eq!(
        r.logs,
        [
            "INFO: Calling handler for program",
            "INFO: NAND was previously open, returning existing handle 0.",
            "start_sector unaligned"
        ]
    );
    // Unaligned erase.
    let r = h.command(&format!(
        "<erase {a} num_partition_sectors=\"64\" start_sector=\"100\" />"
    ));
    assert!(!r.ack() && r.has_log("start_sector unaligned"));
    // Erase past the end.
    let r = h.command(&format!(
        "<erase {a} num_partition_sectors=\"640\" start_sector=\"130944\" />"
    ));
    assert!(!r.ack());
    assert_eq!(
        r.logs.last().map(String::as_str),
        Some("Block erase request exceeding total number of blocks")
    );
    // PAGES_PER_BLOCK mismatch on program.
    let r = h.command("<program PAGES_PER_BLOCK=\"128\" SECTOR_SIZE_IN_BYTES=\"4096\" num_partition_sectors=\"1\" start_sector=\"9984\" />");
    assert!(!r.ack() && r.has_log("must be equal to disk pages per block 64"));
    // Program over the factory MIBIB without erasing: refused before any data flows.
    let r = h.command(&format!(
        "<program {a} num_partition_sectors=\"2\" start_sector=\"640\" last_sector=\"1279\" />"
    ));
    assert!(!r.ack() && r.has_log("is not erased"), "{r:?}");
    // Erase, program, read back; program again without erase is refused.
    assert!(h.command(&format!("<erase {a} last_sector=\"10751\" num_partition_sectors=\"768\" start_sector=\"9984\" />")).ack());
    let data = pattern(100 * 4096, 5);
    let r = h.program(&format!("{a} last_sector=\"10751\" num_partition_sectors=\"100\" start_sector=\"9984\" filename=\"..\\appsboot.mbn\" label=\"aboot\""), &data, false);
    assert!(r.ack(), "{r:?}");
    let (_, back) = h.read(
        &format!("{a} num_partition_sectors=\"100\" start_sector=\"9984\""),
        data.len(),
    );
    assert_eq!(back, data);
    let r = h.command(&format!(
        "<program {a} num_partition_sectors=\"1\" start_sector=\"9984\" />"
    ));
    assert!(!r.ack() && r.has_log("NAND page 9984 (block 156) is not erased"));
    // Whole-device erase without num/start, then the device reads erased.
    assert!(h
        .command("<erase SECTOR_SIZE_IN_BYTES=\"4096\" physical_partition_number=\"0\" />")
        .ack());
    let (_, back) = h.read(
        &format!("{a} num_partition_sectors=\"1\" start_sector=\"9984\""),
        4096,
    );
    assert_eq!(back, vec![0xFF; 4096]);
    // DISK patches make no sense on NAND; host-side MIBIB patches are ignored.
    let r = h.command("<patch SECTOR_SIZE_IN_BYTES=\"4096\" byte_offset=\"568\" filename=\"partition_complete_p4K_b256K.mbn\" physical_partition_number=\"0\" size_in_bytes=\"4\" start_sector=\"1\" value=\"NUM_DISK_BLOCKS-1904.\" />");
    assert!(r.ack() && r.has_log("ignored"));
    let (prog, _) = h.finish();
    let rep = prog.report();
    assert_eq!(rep.partitions.len(), 1, "MIBIB erased: one fixed region");
    assert_eq!(rep.partitions[0].region.source, "fixed");
}

#[test]
fn nand_bad_blocks_are_skipped_over_the_wire() {
    let profile = match StorageProfile::nand_em12g() {
        StorageProfile::Nand(mut n) => {
            n.bad_blocks = BadBlocks::Explicit(vec![157, 159]);
            StorageProfile::Nand(n)
        }
        p => p,
    };
    let mut h = start(Programmer::new(&profile, quiet()));
    let a = "PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" physical_partition_number=\"0\" last_sector=\"10751\" start_sector=\"9984\"";
    let r = h.command(&format!("<erase {a} num_partition_sectors=\"768\" />"));
    assert!(r.ack() && r.has_log("Skipping bad block 157"));
    let data = pattern(4 * 64 * 4096, 1);
    let r = h.program(&format!("{a} num_partition_sectors=\"256\""), &data, false);
    assert!(r.ack(), "{r:?}");
    let (_, back) = h.read(&format!("{a} num_partition_sectors=\"256\""), data.len());
    assert_eq!(back, data, "read-back through the same mapping");
    // 11 good blocks remain in the 12-block range minus 2 bad = 10 good: 11 blocks do not fit.
    assert!(h
        .command(&format!("<erase {a} num_partition_sectors=\"768\" />"))
        .ack());
    let r = h.command(&format!("<program {a} num_partition_sectors=\"704\" />"));
    assert!(!r.ack() && r.has_log("Too many bad blocks"), "{r:?}");
    let (prog, _) = h.finish();
    let nand = prog.storage().nand().unwrap();
    let mut b = vec![0u8; 4096];
    nand.read_physical(157 * 64 * 4096, &mut b);
    assert_eq!(b, vec![0xFF; 4096], "bad block untouched");
    assert_eq!(prog.report().storage.bad_blocks, vec![157, 159]);
}

#[test]
fn fault_nak_and_garbled_and_hang() {
    let mut h = start(Programmer::new(
        &StorageProfile::emmc_msm8916(),
        with_faults(vec![
            Fault::Nak(Some(2)),
            Fault::GarbledXml(Some(3)),
            Fault::Hang(Some(5)),
        ]),
    ));
    assert!(h.command("<nop />").ack());
    let r = h.command("<nop />");
    assert!(!r.ack() && r.has_log("nak:2"));
    h.send(&doc("<nop />"));
    let m = h.recv_msg();
    assert!(m.ends_with(b"</data>"));
    assert!(parse_elements(&m, Limits::WIRE).is_err(), "garbled answer");
    assert!(h.command("<nop />").ack());
    h.send(&doc("<nop />"));
    let (prog, exit) = h.finish();
    assert_eq!(exit, ProgrammerExit::Hung);
    let outcomes: Vec<&str> = prog.commands().iter().map(|c| c.outcome.as_str()).collect();
    assert_eq!(outcomes, ["ACK", "NAK", "garbled", "ACK", "hung"]);
    // One-shot: the next session is clean.
    let mut h = start(prog);
    for _ in 0..6 {
        assert!(h.command("<nop />").ack());
    }
    h.finish();
}

#[test]
fn fault_payload_too_large_then_retry() {
    let mut h = start(Programmer::new(
        &StorageProfile::emmc_msm8916(),
        with_faults(vec![Fault::PayloadTooLarge]),
    ));
    let r =
        h.command("<configure MemoryName=\"emmc\" MaxPayloadSizeToTargetInBytes=\"1048576\" />");
    assert!(!r.ack());
    assert!(r.has_log("Host's payload to target size is too large"));
    let size = r
        .response
        .get("MaxPayloadSizeToTargetInBytes")
        .unwrap()
        .to_string();
    assert_eq!(size, "131072");
    let r = h.command(&format!(
        "<configure MemoryName=\"emmc\" MaxPayloadSizeToTargetInBytes=\"{size}\" />"
    ));
    assert!(r.ack());
    assert_eq!(
        r.response.get("MaxPayloadSizeToTargetInBytes"),
        Some(size.as_str())
    );
    h.finish();
    // NAND: 8192 → 4096 (one page).
    let mut h = start(Programmer::new(
        &StorageProfile::nand_em12g(),
        with_faults(vec![Fault::PayloadTooLarge]),
    ));
    let r = h.command("<configure MemoryName=\"nand\" MaxPayloadSizeToTargetInBytes=\"8192\" />");
    assert!(!r.ack());
    assert_eq!(
        r.response.get("MaxPayloadSizeToTargetInBytes"),
        Some("4096")
    );
    h.finish();
}

#[test]
fn fault_drop_in_raw_program_and_read() {
    let mut h = start(Programmer::new(
        &StorageProfile::emmc_msm8916(),
        with_faults(vec![Fault::DropInRaw(Some(100_000))]),
    ));
    let r = h.command("<program SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2048\" physical_partition_number=\"0\" start_sector=\"400480\" />");
    assert_eq!(r.response.get("rawmode"), Some("true"));
    for c in pattern(1 << 20, 1).chunks(65536) {
        if h.link.write(c, T).is_err() {
            break;
        }
    }
    let (prog, exit) = h.finish();
    assert_eq!(exit, ProgrammerExit::LinkLost);
    assert_eq!(prog.commands()[0].outcome, "link-lost");

    let mut h = start(Programmer::new(
        &StorageProfile::emmc_msm8916(),
        with_faults(vec![Fault::DropInRaw(Some(5000))]),
    ));
    let r = h.command("<read SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"64\" physical_partition_number=\"0\" start_sector=\"0\" />");
    assert_eq!(r.response.get("rawmode"), Some("true"));
    let part = h.recv_msg();
    assert_eq!(part.len(), 5000);
    let (_, exit) = h.finish();
    assert_eq!(exit, ProgrammerExit::LinkLost);
}

#[test]
fn fault_nand_write_fail() {
    let mut h = start(Programmer::new(
        &nand_em12g_clean(),
        with_faults(vec![Fault::NandWriteFail(Some(1))]),
    ));
    let a = "PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" physical_partition_number=\"0\" num_partition_sectors=\"64\" start_sector=\"9984\"";
    assert!(h.command(&format!("<erase {a} />")).ack());
    let r = h.program(a, &pattern(64 * 4096, 2), false);
    assert!(!r.ack());
    assert!(r.has_log("NAND write failure at page 10016"), "{r:?}");
    // The second program (after an erase) works: the fault is one-shot.
    assert!(h.command(&format!("<erase {a} />")).ack());
    assert!(h.program(a, &pattern(64 * 4096, 2), false).ack());
    h.finish();
}

#[test]
fn storage_writes_are_logged_and_counted_per_partition() {
    use super::programmer::{writes_per_region, WriteKind};
    let mut h = start(Programmer::new(&nand_em12g_clean(), quiet()));
    let a = "PAGES_PER_BLOCK=\"64\" SECTOR_SIZE_IN_BYTES=\"4096\" physical_partition_number=\"0\" last_sector=\"10751\" start_sector=\"9984\"";
    assert!(h
        .command(&format!("<erase {a} num_partition_sectors=\"768\" />"))
        .ack());
    let data = pattern(100 * 4096, 3);
    assert!(h
        .program(&format!("{a} num_partition_sectors=\"100\""), &data, false)
        .ack());
    // Refused commands and reads change nothing and are not logged.
    assert!(!h
        .command(&format!("<program {a} num_partition_sectors=\"1\" />"))
        .ack());
    h.read(&format!("{a} num_partition_sectors=\"1\""), 4096);
    let (prog, _) = h.finish();
    let log = prog.writes();
    assert_eq!(log.len(), 2, "{log:?}");
    assert_eq!((log[0].kind, log[0].num_sectors), (WriteKind::Erase, 768));
    assert_eq!(
        (log[1].kind, log[1].bytes),
        (WriteKind::Program, data.len() as u64)
    );
    assert_eq!(log[1].session, 1);
    let regions = prog.storage().regions();
    let counts = writes_per_region(log, &regions);
    let hit: Vec<_> = counts
        .iter()
        .filter(|c| c.programs + c.erases > 0)
        .collect();
    assert!(!hit.is_empty());
    for c in &hit {
        assert!(
            c.start_sector < 10752 && c.start_sector + c.num_sectors > 9984,
            "{c:?}"
        );
    }
    let programmed: Vec<_> = hit.iter().filter(|c| c.programs > 0).collect();
    assert_eq!(programmed.len(), 1, "{programmed:?}");
    assert_eq!(
        (programmed[0].programs, programmed[0].bytes),
        (1, data.len() as u64)
    );
    // An interrupted program is logged with the bytes that reached the storage.
    let mut h = start(Programmer::new(
        &StorageProfile::emmc_msm8916(),
        with_faults(vec![Fault::DropInRaw(Some(3 << 20))]),
    ));
    let r = h.command("<program SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"16384\" physical_partition_number=\"0\" start_sector=\"400480\" />");
    assert_eq!(r.response.get("rawmode"), Some("true"));
    for c in pattern(8 << 20, 1).chunks(1 << 20) {
        if h.link.write(c, T).is_err() {
            break;
        }
    }
    let (prog, _) = h.finish();
    let log = prog.writes();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].kind, WriteKind::Program);
    assert!(log[0].bytes > 0 && log[0].bytes < 8 << 20, "{:?}", log[0]);
}

#[test]
fn throughput_limit_slows_raw_data() {
    let opts = ProgrammerOptions {
        throughput_limit: Some(4 << 20),
        ..quiet()
    };
    let mut h = start(Programmer::new(&StorageProfile::emmc_msm8916(), opts));
    let t0 = std::time::Instant::now();
    let (r, _) = h.read("SECTOR_SIZE_IN_BYTES=\"512\" num_partition_sectors=\"2048\" physical_partition_number=\"0\" start_sector=\"0\"", 1 << 20);
    assert!(r.ack());
    assert!(
        t0.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t0.elapsed()
    );
    h.finish();
}

#[test]
fn factory_storage_is_cheap_and_tables_are_valid() {
    for name in StorageProfile::NAMES {
        let p = StorageProfile::by_name(name).unwrap();
        let s = Storage::new(&p);
        assert!(
            s.allocated_bytes() <= 8 << 20,
            "{name}: {}",
            s.allocated_bytes()
        );
        let regions = s.regions();
        assert!(
            regions.iter().all(|r| r.source != "fixed" || !s.is_nand()),
            "{name}"
        );
        if let Storage::Block { spec, luns } = &s {
            for (i, l) in spec.luns.iter().enumerate() {
                if l.gpt.is_some() {
                    gpt::validate(&luns[i], spec.sector_size)
                        .unwrap_or_else(|e| panic!("{name} lun {i}: {e}"));
                }
            }
        }
    }
    // The EM12-G layout lists the MIBIB at sector 640 and usrfs last.
    let s = Storage::new(&StorageProfile::nand_em12g());
    let r = s.regions();
    assert_eq!(r[1].name, "MIBIB");
    assert_eq!(r[1].start_sector, 640);
    assert_eq!(r.last().unwrap().name, "usrfs");
    assert_eq!(r.last().unwrap().start_sector, 121_856);
}

fn xmlish() -> impl Strategy<Value = Vec<u8>> {
    let tag = prop_oneof![
        Just("program"),
        Just("read"),
        Just("erase"),
        Just("patch"),
        Just("configure"),
        Just("getstorageinfo"),
        Just("getsha256digest"),
        Just("nop"),
        Just("power"),
        Just("bogus"),
    ];
    let key = prop_oneof![
        Just("SECTOR_SIZE_IN_BYTES"),
        Just("start_sector"),
        Just("num_partition_sectors"),
        Just("physical_partition_number"),
        Just("last_sector"),
        Just("byte_offset"),
        Just("size_in_bytes"),
        Just("value"),
        Just("filename"),
        Just("MemoryName"),
        Just("MaxPayloadSizeToTargetInBytes"),
        Just("PAGES_PER_BLOCK"),
    ];
    let val = prop_oneof![
        (0u64..70).prop_map(|v| v.to_string()),
        Just("512".to_string()),
        Just("4096".to_string()),
        Just("DISK".to_string()),
        Just("NUM_DISK_SECTORS-1.".to_string()),
        Just("CRC32(1,92)".to_string()),
        Just("CRC32(NUM_DISK_SECTORS-1.,99999999999)".to_string()),
        Just("18446744073709551615".to_string()),
        "[a-z0-9()*+-]{0,12}",
    ];
    (
        tag,
        proptest::collection::vec((key, val), 0..6),
        proptest::collection::vec(any::<u8>(), 0..64),
    )
        .prop_map(|(t, attrs, raw)| {
            let a: String = attrs.iter().map(|(k, v)| format!(" {k}=\"{v}\"")).collect();
            let mut d = doc(&format!("<{t}{a} />"));
            d.extend_from_slice(&raw);
            d
        })
}

fn feed(profile: &StorageProfile, chunks: Vec<Vec<u8>>) {
    let (mut host, mut dev) = link_pair();
    for c in chunks {
        host.write(&c, T).unwrap();
    }
    let ChanLink { tx, rx, .. } = host;
    drop(tx);
    let mut prog = Programmer::new(
        profile,
        ProgrammerOptions {
            raw_idle_timeout: Duration::from_millis(300),
            ..quiet()
        },
    );
    let exit = prog.serve(&mut dev, &unit());
    assert!(matches!(
        exit,
        ProgrammerExit::LinkLost
            | ProgrammerExit::Reset
            | ProgrammerExit::ResetToEdl
            | ProgrammerExit::PowerOff
    ));
    drop(rx);
    let _ = prog.commands();
}

proptest! {
    // 64 cases by default (each builds a programmer); PROPTEST_CASES raises it.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(64),
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_never_panic(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..300), 0..6)) {
        feed(&StorageProfile::emmc_msm8916(), chunks);
    }

    #[test]
    fn random_documents_never_panic(docs in proptest::collection::vec(xmlish(), 1..8), nand in any::<bool>()) {
        let p = if nand { StorageProfile::nand_eg25g() } else { StorageProfile::emmc_msm8916() };
        feed(&p, docs);
    }
}
