//! Storage profiles of the emulated programmer and the storage built from them: NAND (Quectel
//! layouts with a MIBIB at sector 640) or a block device (eMMC with 512-byte sectors, UFS with
//! 4096-byte sectors and several LUNs), each with a partition table created at start.

use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::gpt::{self, GptPartSpec};
use super::mibib::{self, NandPartSpec, NandPartition, MIBIB_SECTOR};
use super::nand::{Nand, NandGeometry};
use super::sparse::SparseStore;
use crate::package::expr::ExprEnv;

/// Regions larger than this are not hashed in a report: hashing the zeros of a big untouched
/// userdata region took seconds per report on a loaded machine and tests wait for the report.
pub const REPORT_HASH_LIMIT: u64 = 64 << 20;

/// Factory bad blocks of a NAND profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum BadBlocks {
    None,
    /// Exactly these blocks (block 0 is ignored: it is guaranteed good).
    Explicit(Vec<u32>),
    /// `count` distinct blocks drawn from `seed` among the last 64 blocks of the device (never
    /// its very last block), where filesystem images of the last partition rarely reach, so
    /// packages that fill their partitions still flash.
    Seeded {
        seed: u64,
        count: u32,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NandSpec {
    pub name: String,
    /// TargetName in the configure answer.
    pub target_name: String,
    /// prod_name in getstorageinfo.
    pub prod_name: String,
    pub geometry: NandGeometry,
    pub layout: Vec<NandPartSpec>,
    pub bad_blocks: BadBlocks,
    /// Refuse program/erase/configure whose PAGES_PER_BLOCK differs from the geometry. The
    /// EG25 "256K blocks" profile turns this off: the real 9x07 programmer on that part let the
    /// p2K_b128K package through until "start_sector unaligned" (USERS.md §2.1 #16; inferred).
    pub check_pages_per_block: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum BlockMemory {
    #[serde(rename = "eMMC")]
    Emmc,
    #[serde(rename = "UFS")]
    Ufs,
}

/// One physical partition (eMMC user/boot area, UFS LUN).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LunSpec {
    pub num_sectors: u64,
    /// GPT entry slots and partitions; `None` = no partition table (eMMC boot areas).
    pub gpt: Option<(u32, Vec<GptPartSpec>)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockSpec {
    pub name: String,
    pub target_name: String,
    pub prod_name: String,
    pub memory: BlockMemory,
    pub sector_size: u32,
    pub luns: Vec<LunSpec>,
}

/// What storage an emulated programmer serves.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StorageProfile {
    Nand(NandSpec),
    Block(BlockSpec),
}

const DEFAULT_BAD: BadBlocks = BadBlocks::Seeded {
    seed: 0x5EED_BAD0,
    count: 2,
};

impl StorageProfile {
    /// Every profile name accepted by [`StorageProfile::by_name`].
    pub const NAMES: &'static [&'static str] = &[
        "nand-em12g",
        "nand-ec25e",
        "nand-eg25g",
        "nand-eg25g-256k-blocks",
        "nand-eg25g-128m",
        "emmc-msm8916",
        "ufs-qcs6490",
    ];

    pub fn by_name(name: &str) -> Option<Self> {
        Some(match name {
            "nand-em12g" => Self::nand_em12g(),
            "nand-ec25e" => Self::nand_ec25e(),
            "nand-eg25g" => Self::nand_eg25g(),
            "nand-eg25g-256k-blocks" => Self::nand_eg25g_256k_blocks(),
            "nand-eg25g-128m" => Self::nand_eg25g_128m(),
            "emmc-msm8916" => Self::emmc_msm8916(),
            "ufs-qcs6490" => Self::ufs_qcs6490(),
            _ => return None,
        })
    }

    pub fn name(&self) -> &str {
        match self {
            StorageProfile::Nand(n) => &n.name,
            StorageProfile::Block(b) => &b.name,
        }
    }

    /// Quectel EM12-G (SDX20): 4 KiB pages, 64 pages per block, 2048 blocks = 512 MiB.
    pub fn nand_em12g() -> Self {
        StorageProfile::Nand(NandSpec {
            name: "nand-em12g".into(),
            target_name: "SDX20".into(),
            prod_name: "MT29F4G08ABBFA".into(),
            geometry: NandGeometry {
                page_size: 4096,
                pages_per_block: 64,
                num_blocks: 2048,
            },
            layout: mibib::layout_em12g(),
            bad_blocks: DEFAULT_BAD,
            check_pages_per_block: true,
        })
    }

    /// Quectel EC25-E (MDM9207): 4K/256K, 512 MiB, the real MIBIB table from an EC25EFA-512.
    pub fn nand_ec25e() -> Self {
        StorageProfile::Nand(NandSpec {
            name: "nand-ec25e".into(),
            target_name: "9x07".into(),
            prod_name: "KSLCMBL2VA2M2A".into(),
            geometry: NandGeometry {
                page_size: 4096,
                pages_per_block: 64,
                num_blocks: 2048,
            },
            layout: mibib::layout_ec25e(),
            bad_blocks: DEFAULT_BAD,
            check_pages_per_block: true,
        })
    }

    /// Quectel EG25-G (MDM9607): 2 KiB pages, 64 pages per block (128 KiB), 2048 blocks =
    /// 256 MiB, the layout of the real partition_nand.xml.
    pub fn nand_eg25g() -> Self {
        StorageProfile::Nand(NandSpec {
            name: "nand-eg25g".into(),
            target_name: "9x07".into(),
            prod_name: "MT29F2G08ABBGA".into(),
            geometry: NandGeometry {
                page_size: 2048,
                pages_per_block: 64,
                num_blocks: 2048,
            },
            layout: mibib::layout_eg25g(),
            bad_blocks: DEFAULT_BAD,
            check_pages_per_block: true,
        })
    }

    /// An EG25 part with 2 KiB pages but 128 pages per block (256 KiB), 512 MiB: a p2K_b128K
    /// package fails on it with "start_sector unaligned" (Biktorgj/quectel_eg25_recovery#29).
    pub fn nand_eg25g_256k_blocks() -> Self {
        StorageProfile::Nand(NandSpec {
            name: "nand-eg25g-256k-blocks".into(),
            target_name: "9x07".into(),
            prod_name: "MT29F4G08ABBFA".into(),
            geometry: NandGeometry {
                page_size: 2048,
                pages_per_block: 128,
                num_blocks: 2048,
            },
            layout: mibib::layout_eg25g(),
            bad_blocks: DEFAULT_BAD,
            check_pages_per_block: false,
        })
    }

    /// A 128 MiB EG25 part (2K/128K, 1024 blocks): a full EG25-G package erases past its end
    /// ("Block erase request exceeding total number of blocks").
    pub fn nand_eg25g_128m() -> Self {
        StorageProfile::Nand(NandSpec {
            name: "nand-eg25g-128m".into(),
            target_name: "9x07".into(),
            prod_name: "MT29F1G08ABBFA".into(),
            geometry: NandGeometry {
                page_size: 2048,
                pages_per_block: 64,
                num_blocks: 1024,
            },
            layout: mibib::layout_eg25g_128m(),
            bad_blocks: DEFAULT_BAD,
            check_pages_per_block: true,
        })
    }

    /// eMMC, 512-byte sectors, 7,634,944 sectors (a "4 GB" part) with the GPT of the real
    /// MSM8916 ptool package (29 partitions, userdata grows); physical partitions 1 and 2 are the
    /// 4 MiB boot areas without a partition table.
    pub fn emmc_msm8916() -> Self {
        let user = gpt::spec(&[
            ("modem", 131072, 131072),
            ("fsc", 262144, 2),
            ("ssd", 262146, 16),
            ("sbl1", 262162, 1024),
            ("sbl1bak", 263186, 1024),
            ("rpm", 264210, 1024),
            ("rpmbak", 265234, 1024),
            ("tz", 266258, 1024),
            ("tzbak", 267282, 1024),
            ("hyp", 268306, 1024),
            ("hypbak", 269330, 1024),
            ("modemst1", 270354, 3072),
            ("modemst2", 273426, 3072),
            ("DDR", 393216, 64),
            ("fsg", 393280, 3072),
            ("sec", 396352, 32),
            ("aboot", 396384, 2048),
            ("abootbak", 398432, 2048),
            ("boot", 400480, 65536),
            ("recovery", 466016, 65536),
            ("devinfo", 531552, 2048),
            ("system", 533600, 2516584),
            ("cache", 3145728, 524288),
            ("persist", 3670016, 65536),
            ("misc", 3735552, 2048),
            ("keystore", 3737600, 1024),
            ("config", 3738624, 1024),
            ("oem", 3739648, 131072),
            ("userdata", 3870720, 0),
        ]);
        StorageProfile::Block(BlockSpec {
            name: "emmc-msm8916".into(),
            target_name: "8916".into(),
            prod_name: "KMQ7X000SA".into(),
            memory: BlockMemory::Emmc,
            sector_size: 512,
            luns: vec![
                LunSpec {
                    num_sectors: 7_634_944,
                    gpt: Some((32, user)),
                },
                LunSpec {
                    num_sectors: 8192,
                    gpt: None,
                },
                LunSpec {
                    num_sectors: 8192,
                    gpt: None,
                },
            ],
        })
    }

    /// UFS, 4096-byte sectors, LUNs 0..5 each with its own GPT (64 entries). LUN 4 carries the
    /// 52 partitions of the real QCS6490 (RUBIK Pi 3) rawprogram4.xml; LUN 0 is 128 GiB so the
    /// real whole-LUN rawprogram0.xml entry fits.
    pub fn ufs_qcs6490() -> Self {
        let lun4 = gpt::spec(&[
            ("aop_a", 6, 128),
            ("dtb_a", 134, 16384),
            ("apdp_a", 16518, 64),
            ("xbl_ramdump_a", 16582, 512),
            ("uefi_a", 17094, 1280),
            ("tz_a", 18374, 1024),
            ("hyp_a", 19398, 2048),
            ("mdtpsecapp_a", 21446, 1024),
            ("mdtp_a", 22470, 8192),
            ("devcfg_a", 30662, 32),
            ("qupfw_a", 30694, 20),
            ("uefisecapp_a", 30714, 512),
            ("imagefv_a", 31226, 512),
            ("shrm_a", 31738, 32),
            ("multiimgoem_a", 31770, 8),
            ("cpucp_a", 31778, 256),
            ("qweslicstore_a", 32034, 64),
            ("aop_b", 32098, 128),
            ("apdp_b", 32226, 64),
            ("dtb_b", 32290, 16384),
            ("xbl_ramdump_b", 48674, 512),
            ("uefi_b", 49186, 1280),
            ("tz_b", 50466, 1024),
            ("hyp_b", 51490, 2048),
            ("mdtpsecapp_b", 53538, 1024),
            ("mdtp_b", 54562, 8192),
            ("devcfg_b", 62754, 32),
            ("qupfw_b", 62786, 20),
            ("uefisecapp_b", 62806, 512),
            ("imagefv_b", 63318, 512),
            ("shrm_b", 63830, 32),
            ("multiimgoem_b", 63862, 8),
            ("cpucp_b", 63870, 256),
            ("qweslicstore_b", 64126, 64),
            ("SYSFW_VERSION", 64190, 1),
            ("recoveryinfo", 64191, 1),
            ("devinfo", 64192, 1),
            ("questdatafv", 64193, 4096),
            ("qmcs", 68289, 7680),
            ("dip", 75969, 256),
            ("splash", 76225, 8356),
            ("limits", 84581, 1),
            ("limits-cdsp", 84582, 1),
            ("toolsfv", 84583, 256),
            ("logfs", 84839, 2048),
            ("quantumsdk", 86887, 10240),
            ("logdump", 97127, 131072),
            ("secdata", 228199, 7),
            ("quantumfv", 228206, 128),
            ("catecontentfv", 228334, 256),
            ("vm-data", 228590, 8356),
            ("last_parti", 236946, 0),
        ]);
        let lun = |num_sectors, parts: &[(&str, u64, u64)]| LunSpec {
            num_sectors,
            gpt: Some((64, gpt::spec(parts))),
        };
        StorageProfile::Block(BlockSpec {
            name: "ufs-qcs6490".into(),
            target_name: "QCS6490".into(),
            prod_name: "KLUDG4UHDC-B0E1".into(),
            memory: BlockMemory::Ufs,
            sector_size: 4096,
            luns: vec![
                lun(
                    33_554_432,
                    &[("ssd", 6, 2), ("persist", 8, 8192), ("userdata", 8200, 0)],
                ),
                lun(2048, &[("xbl_a", 6, 900), ("xbl_config_a", 906, 128)]),
                lun(2048, &[("xbl_b", 6, 900), ("xbl_config_b", 906, 128)]),
                lun(
                    2048,
                    &[
                        ("ALIGN_TO_128K_2", 6, 26),
                        ("cdt", 32, 32),
                        ("ddr", 64, 256),
                    ],
                ),
                LunSpec {
                    num_sectors: 262_144,
                    gpt: Some((64, lun4)),
                },
                lun(
                    16384,
                    &[
                        ("ALIGN_TO_128K_1", 6, 26),
                        ("modemst1", 32, 512),
                        ("modemst2", 544, 512),
                        ("fsg", 1056, 512),
                        ("fsc", 1568, 32),
                    ],
                ),
            ],
        })
    }
}

/// A partition (or fixed region) of the storage as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Region {
    pub lun: u32,
    pub name: String,
    pub start_sector: u64,
    pub num_sectors: u64,
    /// "mibib", "gpt", or "fixed" when no table could be read.
    pub source: String,
}

/// The emulated storage.
#[derive(Debug, Clone)]
pub enum Storage {
    Nand {
        spec: NandSpec,
        nand: Nand,
    },
    Block {
        spec: BlockSpec,
        luns: Vec<SparseStore>,
    },
}

/// Why a direct storage access was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("physical partition {0} does not exist")]
    NoSuchLun(u32),
    #[error("sectors {start}..{end} are beyond the end of the storage ({total} sectors)")]
    OutOfRange { start: u64, end: u64, total: u64 },
}

impl Storage {
    /// Build the storage of a profile: erased media plus the factory partition table (NAND: SBL
    /// stub and MIBIB; eMMC/UFS: a GPT on every LUN that has one).
    pub fn new(profile: &StorageProfile) -> Self {
        match profile {
            StorageProfile::Nand(spec) => {
                let geo = spec.geometry;
                let bad: Vec<u32> = match &spec.bad_blocks {
                    BadBlocks::None => Vec::new(),
                    BadBlocks::Explicit(v) => v.clone(),
                    BadBlocks::Seeded { seed, count } => {
                        let lo = geo.num_blocks.saturating_sub(65).max(1);
                        let hi = geo.num_blocks.saturating_sub(1);
                        let span = hi.saturating_sub(lo) as usize;
                        let mut rng = ChaCha8Rng::seed_from_u64(*seed);
                        sample(&mut rng, span, (*count as usize).min(span))
                            .into_iter()
                            .map(|i| lo + i as u32)
                            .collect()
                    }
                };
                let mut nand = Nand::new(geo, bad);
                let ps = geo.page_size as usize;
                nand.factory_write_page(0, &mibib::sbl_stub_page(ps));
                let parts = mibib::resolve(&spec.layout, geo.block_bytes(), geo.num_blocks);
                if let Ok(plan) = nand.plan(MIBIB_SECTOR, 2, None, false) {
                    let ppb = geo.pages_per_block;
                    if let (Some(p0), Some(p1)) = (plan.phys_page(0, ppb), plan.phys_page(1, ppb)) {
                        nand.factory_write_page(p0, &mibib::mibib_header_page(ps));
                        nand.factory_write_page(p1, &mibib::table_page(ps, &parts));
                    }
                }
                Storage::Nand {
                    spec: spec.clone(),
                    nand,
                }
            }
            StorageProfile::Block(spec) => {
                let ss = u64::from(spec.sector_size);
                let luns = spec
                    .luns
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        let mut s = SparseStore::new(l.num_sectors * ss, 0);
                        if let Some((entries, parts)) = &l.gpt {
                            gpt::create(
                                &mut s,
                                spec.sector_size,
                                *entries,
                                parts,
                                &format!("{}/{i}", spec.name),
                            );
                        }
                        s
                    })
                    .collect();
                Storage::Block {
                    spec: spec.clone(),
                    luns,
                }
            }
        }
    }

    pub fn profile_name(&self) -> &str {
        match self {
            Storage::Nand { spec, .. } => &spec.name,
            Storage::Block { spec, .. } => &spec.name,
        }
    }

    pub fn is_nand(&self) -> bool {
        matches!(self, Storage::Nand { .. })
    }

    /// MemoryName as the programmer reports it ("nand", "eMMC", "UFS").
    pub fn memory_name(&self) -> &'static str {
        match self {
            Storage::Nand { .. } => "nand",
            Storage::Block { spec, .. } => match spec.memory {
                BlockMemory::Emmc => "eMMC",
                BlockMemory::Ufs => "UFS",
            },
        }
    }

    pub fn target_name(&self) -> &str {
        match self {
            Storage::Nand { spec, .. } => &spec.target_name,
            Storage::Block { spec, .. } => &spec.target_name,
        }
    }

    pub fn sector_size(&self) -> u32 {
        match self {
            Storage::Nand { spec, .. } => spec.geometry.page_size,
            Storage::Block { spec, .. } => spec.sector_size,
        }
    }

    pub fn num_physical(&self) -> u32 {
        match self {
            Storage::Nand { .. } => 1,
            Storage::Block { luns, .. } => luns.len() as u32,
        }
    }

    pub fn num_sectors(&self, lun: u32) -> Option<u64> {
        match self {
            Storage::Nand { spec, .. } => (lun == 0).then(|| spec.geometry.total_pages()),
            Storage::Block { spec, luns } => luns
                .get(lun as usize)
                .map(|s| s.len() / u64::from(spec.sector_size)),
        }
    }

    pub fn pages_per_block(&self) -> Option<u32> {
        match self {
            Storage::Nand { spec, .. } => Some(spec.geometry.pages_per_block),
            Storage::Block { .. } => None,
        }
    }

    /// NUM_DISK_SECTORS / NUM_DISK_BLOCKS of a physical partition.
    pub fn expr_env(&self, lun: u32) -> Option<ExprEnv> {
        Some(ExprEnv {
            num_disk_sectors: self.num_sectors(lun)?,
            num_disk_blocks: match self {
                Storage::Nand { spec, .. } => Some(u64::from(spec.geometry.num_blocks)),
                Storage::Block { .. } => None,
            },
        })
    }

    /// Bytes of RAM the written data holds.
    pub fn allocated_bytes(&self) -> u64 {
        match self {
            Storage::Nand { nand, .. } => nand.allocated_bytes(),
            Storage::Block { luns, .. } => luns.iter().map(SparseStore::allocated_bytes).sum(),
        }
    }

    fn check(&self, lun: u32, start: u64, count: u64) -> Result<(), AccessError> {
        let total = self.num_sectors(lun).ok_or(AccessError::NoSuchLun(lun))?;
        let end = start.saturating_add(count);
        if end > total {
            return Err(AccessError::OutOfRange { start, end, total });
        }
        Ok(())
    }

    /// Read sectors the way a `<read>` without last_sector sees them (NAND: through the
    /// bad-block mapping from `start` to the end of the device).
    pub fn read_sectors(&self, lun: u32, start: u64, count: u64) -> Result<Vec<u8>, AccessError> {
        self.read_sectors_in(lun, start, count, None)
    }

    /// As [`Storage::read_sectors`], with a NAND `last_sector` bounding the bad-block mapping.
    pub fn read_sectors_in(
        &self,
        lun: u32,
        start: u64,
        count: u64,
        last_sector: Option<u64>,
    ) -> Result<Vec<u8>, AccessError> {
        self.check(lun, start, count)?;
        let ss = u64::from(self.sector_size());
        let mut out = vec![0u8; (count * ss) as usize];
        match self {
            Storage::Nand { nand, .. } => {
                let total = nand.geometry().total_pages();
                let plan = nand.plan(start, count, last_sector, true).map_err(|_| {
                    AccessError::OutOfRange {
                        start,
                        end: start + count,
                        total,
                    }
                })?;
                nand.read_pages(&plan, 0, &mut out);
            }
            Storage::Block { luns, .. } => luns[lun as usize].read(start * ss, &mut out),
        }
        Ok(out)
    }

    /// SHA-256 of sectors as [`Storage::read_sectors_in`] returns them, without holding them all.
    pub fn sha256_of(
        &self,
        lun: u32,
        start: u64,
        count: u64,
        last_sector: Option<u64>,
    ) -> Result<[u8; 32], AccessError> {
        self.check(lun, start, count)?;
        let ss = u64::from(self.sector_size());
        let mut h = Sha256::new();
        match self {
            Storage::Nand { nand, .. } => {
                let total = nand.geometry().total_pages();
                let plan = nand.plan(start, count, last_sector, true).map_err(|_| {
                    AccessError::OutOfRange {
                        start,
                        end: start + count,
                        total,
                    }
                })?;
                let step = 64u64;
                let mut buf = vec![0u8; (step * ss) as usize];
                let mut k = 0;
                while k < count {
                    let n = step.min(count - k);
                    let b = &mut buf[..(n * ss) as usize];
                    nand.read_pages(&plan, k, b);
                    h.update(&*b);
                    k += n;
                }
            }
            Storage::Block { luns, .. } => {
                luns[lun as usize].for_each_piece(start * ss, count * ss, |p| h.update(p));
            }
        }
        Ok(h.finalize().into())
    }

    /// SHA-256 of the physical bytes of a region (NAND: bad blocks included as they are, never
    /// written so erased), or `None` when the region is outside the storage or too large.
    pub fn physical_sha256(&self, lun: u32, start: u64, count: u64) -> Option<String> {
        self.check(lun, start, count).ok()?;
        let ss = u64::from(self.sector_size());
        let bytes = count.checked_mul(ss)?;
        if bytes > REPORT_HASH_LIMIT {
            return None;
        }
        let mut h = Sha256::new();
        match self {
            Storage::Nand { nand, .. } => nand.for_each_piece(start * ss, bytes, |p| h.update(p)),
            Storage::Block { luns, .. } => {
                luns[lun as usize].for_each_piece(start * ss, bytes, |p| h.update(p))
            }
        }
        Some(hex::encode(h.finalize()))
    }

    /// The NAND partition table as stored in the MIBIB now.
    pub fn mibib_partitions(&self) -> Option<Vec<NandPartition>> {
        let Storage::Nand { nand, .. } = self else {
            return None;
        };
        let geo = nand.geometry();
        let plan = nand.plan(MIBIB_SECTOR, 2, None, false).ok()?;
        let mut pg = vec![0u8; geo.page_size as usize];
        nand.read_pages(&plan, 1, &mut pg);
        mibib::parse_table(&pg).ok()
    }

    /// Partitions from the tables on the storage now (MIBIB / GPT per LUN); a LUN whose table
    /// cannot be read is listed as one fixed region.
    pub fn regions(&self) -> Vec<Region> {
        match self {
            Storage::Nand { spec, .. } => {
                let ppb = u64::from(spec.geometry.pages_per_block);
                let total = spec.geometry.total_pages();
                match self.mibib_partitions() {
                    Some(parts) => parts
                        .iter()
                        .map(|p| Region {
                            lun: 0,
                            name: p.label().to_string(),
                            start_sector: u64::from(p.first_block) * ppb,
                            num_sectors: u64::from(p.num_blocks) * ppb,
                            source: "mibib".into(),
                        })
                        .collect(),
                    None => vec![Region {
                        lun: 0,
                        name: "nand".into(),
                        start_sector: 0,
                        num_sectors: total,
                        source: "fixed".into(),
                    }],
                }
            }
            Storage::Block { spec, luns } => {
                let mut out = Vec::new();
                for (i, s) in luns.iter().enumerate() {
                    match gpt::read_any(s, spec.sector_size) {
                        Ok(info) => out.extend(info.entries.iter().map(|e| Region {
                            lun: i as u32,
                            name: e.name.clone(),
                            start_sector: e.first_lba,
                            num_sectors: e.last_lba.saturating_add(1).saturating_sub(e.first_lba),
                            source: "gpt".into(),
                        })),
                        Err(_) => out.push(Region {
                            lun: i as u32,
                            name: format!("lun{i}"),
                            start_sector: 0,
                            num_sectors: s.len() / u64::from(spec.sector_size),
                            source: "fixed".into(),
                        }),
                    }
                }
                out
            }
        }
    }

    /// The getstorageinfo JSON of a physical partition.
    pub fn storage_info(&self, lun: u32) -> Option<serde_json::Value> {
        let info = match self {
            Storage::Nand { spec, .. } => {
                if lun != 0 {
                    return None;
                }
                serde_json::json!({
                    "total_blocks": spec.geometry.num_blocks,
                    "block_size": spec.geometry.block_bytes(),
                    "page_size": spec.geometry.page_size,
                    "num_physical": 1,
                    "manufacturer_id": 44,
                    "serial_num": 0,
                    "fw_version": "",
                    "mem_type": "NAND",
                    "prod_name": spec.prod_name,
                })
            }
            Storage::Block { spec, .. } => {
                let total = self.num_sectors(lun)?;
                let mut v = serde_json::json!({
                    "total_blocks": total,
                    "block_size": spec.sector_size,
                    "page_size": spec.sector_size,
                    "num_physical": self.num_physical(),
                    "manufacturer_id": 206,
                    "serial_num": 0,
                    "fw_version": "0100",
                    "mem_type": self.memory_name(),
                    "prod_name": spec.prod_name,
                });
                if spec.memory == BlockMemory::Ufs {
                    v["bNumberLu"] = serde_json::json!(self.num_physical());
                }
                v
            }
        };
        Some(serde_json::json!({ "storage_info": info }))
    }

    /// Write bytes at a byte offset of a block-device LUN (patch).
    pub(crate) fn block_store_mut(&mut self, lun: u32) -> Option<&mut SparseStore> {
        match self {
            Storage::Block { luns, .. } => luns.get_mut(lun as usize),
            Storage::Nand { .. } => None,
        }
    }

    pub(crate) fn block_store(&self, lun: u32) -> Option<&SparseStore> {
        match self {
            Storage::Block { luns, .. } => luns.get(lun as usize),
            Storage::Nand { .. } => None,
        }
    }

    pub(crate) fn nand_mut(&mut self) -> Option<&mut Nand> {
        match self {
            Storage::Nand { nand, .. } => Some(nand),
            Storage::Block { .. } => None,
        }
    }

    pub fn nand(&self) -> Option<&Nand> {
        match self {
            Storage::Nand { nand, .. } => Some(nand),
            Storage::Block { .. } => None,
        }
    }

    pub(crate) fn nand_spec(&self) -> Option<&NandSpec> {
        match self {
            Storage::Nand { spec, .. } => Some(spec),
            Storage::Block { .. } => None,
        }
    }
}
