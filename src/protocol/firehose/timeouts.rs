//! How long to wait for each Firehose step. Pure arithmetic, no clocks.
//!
//! Fixed limits fail large images (linux-msm/qdl#163: a 30 s limit killed a ~35 s image), so
//! anything that moves or touches data scales with its size:
//!
//! `timeout = base + bytes / min_throughput`
//!
//! `min_throughput` is a floor far below what real devices do (Quectel NAND writes ≈ 2.3–4 MB/s,
//! PROTOCOLS.md §10), so a healthy device never hits it while a hung one is still noticed.
//! The defaults (see [`Timeouts::default`]) were chosen from the per-tool table in §2.10, taking
//! the generous end (QFirehose raised erase/patch to 15 s for SDX55 and 8+8 MCP parts).

use std::time::Duration;

/// Every wait of a Firehose session. All fields are public so tests and options can shrink or
/// stretch them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Timeouts {
    /// One XML write.
    pub xml_write: Duration,
    /// The first welcome log after the programmer starts (QFirehose: 3 s).
    pub welcome_first: Duration,
    /// Once welcome logs flow, this long without one ends the welcome (QFirehose: 1 s slices).
    pub welcome_quiet: Duration,
    /// Upper bound on the whole welcome phase, however chatty the device.
    pub welcome_total: Duration,
    /// Answer to a nop probe.
    pub nop: Duration,
    /// Answer to one configure.
    pub configure: Duration,
    /// Short commands: patch, setbootablestoragedrive, getstorageinfo.
    pub short_command: Duration,
    /// `ACK rawmode="true"` after program/read (NAND programmers may erase first).
    pub raw_setup: Duration,
    /// Fixed part of every data-scaled wait.
    pub data_base: Duration,
    /// Fixed part of an erase wait.
    pub erase_base: Duration,
    /// Floor for data moved over the link (program chunks, read data, final program ACK).
    pub min_transfer_bytes_per_s: u64,
    /// Floor for erases (bytes erased per second).
    pub min_erase_bytes_per_s: u64,
    /// Floor for on-device hashing (getsha256digest).
    pub min_hash_bytes_per_s: u64,
    /// With no data at all for this long, a read is stalled.
    pub read_idle: Duration,
    /// The ACK to a power command.
    pub power_ack: Duration,
    /// How long logs are drained after a power ACK.
    pub power_drain: Duration,
    /// How long logs are drained after a NAK or a write timeout (db410c quirk: 100 ms).
    pub drain: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            xml_write: Duration::from_secs(2),
            welcome_first: Duration::from_secs(3),
            welcome_quiet: Duration::from_secs(1),
            welcome_total: Duration::from_secs(15),
            nop: Duration::from_secs(3),
            configure: Duration::from_secs(5),
            short_command: Duration::from_secs(15),
            raw_setup: Duration::from_secs(15),
            data_base: Duration::from_secs(15),
            erase_base: Duration::from_secs(30),
            min_transfer_bytes_per_s: 256 * 1024,
            min_erase_bytes_per_s: 4 * 1024 * 1024,
            min_hash_bytes_per_s: 2 * 1024 * 1024,
            read_idle: Duration::from_secs(15),
            power_ack: Duration::from_secs(5),
            power_drain: Duration::from_secs(1),
            drain: Duration::from_millis(100),
        }
    }
}

/// `base + bytes / rate`, saturating, with rate 0 treated as 1 byte/s.
pub fn scaled(base: Duration, bytes: u64, bytes_per_s: u64) -> Duration {
    let rate = bytes_per_s.max(1);
    let whole = bytes / rate;
    let frac_ns = ((bytes % rate) as u128 * 1_000_000_000u128 / rate as u128) as u64;
    base.saturating_add(Duration::from_secs(whole))
        .saturating_add(Duration::from_nanos(frac_ns))
}

impl Timeouts {
    /// Writing one raw chunk of `len` bytes.
    pub fn raw_chunk(&self, len: usize) -> Duration {
        scaled(self.data_base, len as u64, self.min_transfer_bytes_per_s)
    }

    /// The final `ACK rawmode="false"` after streaming `total` bytes of a program: programmers
    /// may buffer and commit at the end (NAND pages, eMMC cache), so this scales with the image.
    pub fn program_final_ack(&self, total: u64) -> Duration {
        scaled(self.data_base, total, self.min_transfer_bytes_per_s)
    }

    /// Whole read of `total` bytes (an overall bound on top of [`Timeouts::read_idle`]).
    pub fn read_total(&self, total: u64) -> Duration {
        scaled(self.data_base, total, self.min_transfer_bytes_per_s)
    }

    /// An erase of `bytes` (None: whole partition or unknown size — count as 1 GiB).
    pub fn erase(&self, bytes: Option<u64>) -> Duration {
        scaled(
            self.erase_base,
            bytes.unwrap_or(1 << 30),
            self.min_erase_bytes_per_s,
        )
    }

    /// getsha256digest over `bytes`.
    pub fn sha256(&self, bytes: u64) -> Duration {
        scaled(self.data_base, bytes, self.min_hash_bytes_per_s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_with_size_and_never_fixed_30s_for_large_images() {
        let t = Timeouts::default();
        // A 76 MB NON-HLOS.ubi that really took 19.9 s at 3.8 MB/s.
        let big = t.program_final_ack(76_283_904);
        assert!(big > Duration::from_secs(250), "{big:?}");
        assert!(t.program_final_ack(0) == t.data_base);
        assert!(t.program_final_ack(2_000_000_000) > t.program_final_ack(1_000_000_000));
        assert!(t.raw_chunk(1 << 20) >= Duration::from_secs(19));
        assert!(t.erase(Some(256 << 20)) > t.erase(Some(1 << 20)));
        assert!(t.erase(None) > t.erase_base);
        assert!(t.sha256(512 << 20) > Duration::from_secs(256));
    }

    #[test]
    fn scaled_is_saturating_and_exact() {
        assert_eq!(scaled(Duration::ZERO, 3, 2), Duration::from_millis(1500));
        assert_eq!(
            scaled(Duration::from_secs(1), 10, 0),
            Duration::from_secs(11)
        );
        let _ = scaled(Duration::MAX, u64::MAX, 1);
    }
}
