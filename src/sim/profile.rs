//! Emulated unit profiles: identity (serial, HWID, PK hash) and Sahara behaviour per model.

/// The identity a boot ROM reports in command mode. Per-unit: two emulated modems differ.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UnitIdentity {
    /// Sahara serial number (EXECUTE 0x01), also shown in the USB product string after `_SN:`.
    pub serial: u32,
    /// MSM HW ID (EXECUTE 0x02): msm_id bits 63..32, oem_id 31..16, model_id 15..0.
    pub hw_id: u64,
    /// OEM public-key hash (32, 48 or 64 bytes); programmers are "signed" against it.
    pub pk_hash: Vec<u8>,
    /// SBL software version (EXECUTE 0x07).
    pub sbl_version: u32,
}
