//! Answers that arrive as log text: `<getstorageinfo>` (PROTOCOLS.md §2.9) and
//! `<getsha256digest>`.
//!
//! getstorageinfo comes in two styles:
//! - JSON in a log: `{"storage_info": {"total_blocks": …, "block_size": …, "page_size": …,
//!   "num_physical": …, "mem_type": "…", "prod_name": "…", …}}` (numbers may also be strings,
//!   decimal or 0x-hex). A JSON object split over several consecutive logs is joined.
//! - Older `key=value` / `key: value` logs: `num_partition_sectors=131072`,
//!   `SECTOR_SIZE_IN_BYTES=512`, and edl's `Device Total Logical Blocks: 0x…`,
//!   `Device Block Size in Bytes: 0x…`, `Device Total Physical Partitions: 0x…`.

use std::collections::BTreeMap;

use super::response::{parse_number, Response};
use super::welcome::strip_level;

/// Storage geometry as the programmer reports it. Every field is optional: programmers differ.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct StorageInfo {
    pub total_blocks: Option<u64>,
    pub block_size: Option<u64>,
    pub page_size: Option<u64>,
    pub num_physical: Option<u64>,
    pub manufacturer_id: Option<u64>,
    pub serial_num: Option<u64>,
    pub fw_version: Option<String>,
    pub mem_type: Option<String>,
    pub prod_name: Option<String>,
    /// Older style: `SECTOR_SIZE_IN_BYTES=…`.
    pub sector_size: Option<u64>,
    /// Older style: `num_partition_sectors=…`.
    pub num_partition_sectors: Option<u64>,
    /// Every key seen with its value as text (JSON values or log `key=value` pairs).
    pub raw: BTreeMap<String, String>,
}

impl StorageInfo {
    /// Whether anything useful was found.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Size in bytes of the physical partition: total_blocks × block_size, or
    /// num_partition_sectors × SECTOR_SIZE_IN_BYTES.
    pub fn total_bytes(&self) -> Option<u64> {
        match (self.total_blocks, self.block_size) {
            (Some(b), Some(s)) => b.checked_mul(s),
            _ => self.num_partition_sectors?.checked_mul(self.sector_size?),
        }
    }

    /// NAND: pages per erase block (block_size / page_size) when both are given in bytes and
    /// divide evenly.
    pub fn pages_per_block(&self) -> Option<u64> {
        let (b, p) = (self.block_size?, self.page_size?);
        (p > 0 && b >= p && b % p == 0).then(|| b / p)
    }

    fn set(&mut self, key: &str, value: &str) {
        let k = key.trim().to_ascii_lowercase();
        let v = value.trim().trim_matches('"').trim();
        if k.is_empty() || self.raw.len() >= 256 {
            return;
        }
        let num = parse_number(v);
        match k.as_str() {
            "total_blocks" | "device total logical blocks" => self.total_blocks = num,
            "block_size" | "device block size in bytes" => self.block_size = num,
            "page_size" => self.page_size = num,
            "num_physical" | "device total physical partitions" => self.num_physical = num,
            "manufacturer_id" | "device manufacturer id" => self.manufacturer_id = num,
            "serial_num" | "device serial number" => self.serial_num = num,
            "fw_version" => self.fw_version = Some(v.to_string()),
            "mem_type" => self.mem_type = Some(v.to_string()),
            "prod_name" | "product name" => self.prod_name = Some(v.to_string()),
            "sector_size_in_bytes" => self.sector_size = num,
            "num_partition_sectors" => self.num_partition_sectors = num,
            _ => {}
        }
        self.raw
            .insert(k.chars().take(64).collect(), v.chars().take(256).collect());
    }
}

fn json_text(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Parse the first JSON object in `text` (text around it is ignored).
fn first_json_object(text: &str) -> Option<serde_json::Map<String, serde_json::Value>> {
    let start = text.find('{')?;
    let mut it =
        serde_json::Deserializer::from_str(&text[start..]).into_iter::<serde_json::Value>();
    match it.next() {
        Some(Ok(serde_json::Value::Object(m))) => Some(m),
        _ => None,
    }
}

fn from_json(text: &str) -> Option<StorageInfo> {
    let top = first_json_object(text)?;
    let inner = match top.get("storage_info") {
        Some(serde_json::Value::Object(m)) => m.clone(),
        _ => top,
    };
    let mut info = StorageInfo::default();
    for (k, v) in inner.iter().take(256) {
        if let Some(t) = json_text(v) {
            info.set(k, &t);
        }
    }
    (!info.is_empty()).then_some(info)
}

/// Parse getstorageinfo logs (either style). None when nothing recognisable was found.
pub fn parse_storage_info<S: AsRef<str>>(logs: &[S]) -> Option<StorageInfo> {
    // JSON in one log, or spread over consecutive logs starting at the one with '{'.
    for (i, l) in logs.iter().enumerate() {
        let l = strip_level(l.as_ref());
        if !l.contains('{') {
            continue;
        }
        if let Some(info) = from_json(l) {
            return Some(info);
        }
        let mut joined = String::new();
        for part in logs[i..].iter().take(64) {
            joined.push_str(strip_level(part.as_ref()));
            if let Some(info) = from_json(&joined) {
                return Some(info);
            }
        }
    }
    // Older key=value / key: value lines.
    let mut info = StorageInfo::default();
    for l in logs {
        let l = strip_level(l.as_ref());
        let split = l.split_once('=').or_else(|| l.split_once(':'));
        if let Some((k, v)) = split {
            let known = matches!(
                k.trim().to_ascii_lowercase().as_str(),
                "num_partition_sectors"
                    | "sector_size_in_bytes"
                    | "total_blocks"
                    | "block_size"
                    | "page_size"
                    | "num_physical"
                    | "mem_type"
                    | "prod_name"
                    | "device total logical blocks"
                    | "device block size in bytes"
                    | "device total physical partitions"
                    | "device manufacturer id"
                    | "device serial number"
            );
            if known {
                info.set(k, v);
            }
        }
    }
    (!info.is_empty()).then_some(info)
}

fn hex_digest(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    let mut found = None;
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_hexdigit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i - start == 64 {
                let mut out = [0u8; 32];
                if hex::decode_to_slice(&s[start..i], &mut out).is_ok() {
                    found = Some(out);
                }
            }
        } else {
            i += 1;
        }
    }
    found
}

/// The SHA-256 from a getsha256digest answer: a `Digest`/`SHA256`/`sha256` attribute on the
/// response wins; otherwise the last run of exactly 64 hex characters in the logs.
pub fn parse_sha256_digest<S: AsRef<str>>(
    response: Option<&Response>,
    logs: &[S],
) -> Option<[u8; 32]> {
    if let Some(r) = response {
        for k in ["Digest", "SHA256"] {
            if let Some(d) = r.get(k).and_then(hex_digest) {
                return Some(d);
            }
        }
    }
    logs.iter().rev().find_map(|l| hex_digest(l.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_style() {
        let log = r#"INFO: {"storage_info": {"total_blocks":2048, "block_size":131072, "page_size":2048, "num_physical":1, "manufacturer_id":44, "serial_num":0, "fw_version":"1","mem_type":"NAND","prod_name":"MT29F2G"}}"#;
        let i = parse_storage_info(&[log]).unwrap();
        assert_eq!(i.total_blocks, Some(2048));
        assert_eq!(i.block_size, Some(131072));
        assert_eq!(i.page_size, Some(2048));
        assert_eq!(i.pages_per_block(), Some(64));
        assert_eq!(i.total_bytes(), Some(2048 * 131072));
        assert_eq!(i.mem_type.as_deref(), Some("NAND"));
        assert_eq!(i.prod_name.as_deref(), Some("MT29F2G"));
        assert_eq!(i.num_physical, Some(1));
    }

    #[test]
    fn json_split_over_logs_and_string_numbers() {
        let logs = [
            "INFO: {\"storage_info\": {\"total_blocks\":\"0x1000\",",
            "\"block_size\":\"4096\", \"mem_type\":\"UFS\", \"bNumberLu\": 3}}",
        ];
        let i = parse_storage_info(&logs).unwrap();
        assert_eq!(i.total_blocks, Some(4096));
        assert_eq!(i.block_size, Some(4096));
        assert_eq!(i.raw.get("bnumberlu").map(String::as_str), Some("3"));
    }

    #[test]
    fn older_log_style() {
        let logs = [
            "INFO: num_partition_sectors=131072",
            "INFO: SECTOR_SIZE_IN_BYTES=512",
            "INFO: something else: 5",
        ];
        let i = parse_storage_info(&logs).unwrap();
        assert_eq!(i.num_partition_sectors, Some(131072));
        assert_eq!(i.sector_size, Some(512));
        assert_eq!(i.total_bytes(), Some(131072 * 512));
        assert_eq!(i.raw.len(), 2);
        assert!(parse_storage_info(&["INFO: Calling handler for getstorageinfo"]).is_none());
        let edl = [
            "Device Total Logical Blocks: 0x3a3e000",
            "Device Block Size in Bytes: 0x200",
        ];
        assert_eq!(
            parse_storage_info(&edl).unwrap().total_bytes(),
            Some(0x3a3e000 * 0x200)
        );
    }

    #[test]
    fn sha256_in_logs_or_attributes() {
        let hexs = "ab".repeat(32);
        let d = parse_sha256_digest(None, &[format!("INFO: Digest {hexs}")]).unwrap();
        assert_eq!(d, [0xab; 32]);
        let longer = "ab".repeat(33);
        assert!(parse_sha256_digest(None, &[longer]).is_none());
        let r = Response {
            ack: true,
            rawmode: None,
            attrs: vec![("sha256".into(), "01".repeat(32))],
        };
        assert_eq!(
            parse_sha256_digest(Some(&r), &[format!("x {hexs}")]),
            Some([1; 32])
        );
        assert!(parse_sha256_digest::<&str>(None, &[]).is_none());
    }

    proptest! {
        #[test]
        fn storage_info_never_panics(logs in proptest::collection::vec("[{}\":,=a-z_0-9 .x-]{0,60}", 0..8)) {
            let _ = parse_storage_info(&logs);
            let _ = parse_sha256_digest(None, &logs);
        }

        #[test]
        fn storage_info_never_panics_on_any_text(logs in proptest::collection::vec(any::<String>(), 0..6)) {
            let _ = parse_storage_info(&logs);
            let _ = parse_sha256_digest(None, &logs);
        }
    }
}
