//! The fault campaign ([`qrescue::sim::campaign`]): seeded whole flashes against the emulated
//! modem with random faults (link drops, NAKs, garbled XML, hangs, boot-loop windows, a slow
//! device …), the real engine (prepare with the device-unique-data guard and a backup ledger,
//! then the flash), and the invariants checked after every run.
//!
//! The default is small enough for CI. A larger or replayed campaign:
//!
//! ```text
//! QRESCUE_CAMPAIGN_RUNS=500 QRESCUE_CAMPAIGN_SEED=7 cargo test --release --test fault_campaign
//! QRESCUE_CAMPAIGN_SEED=7 QRESCUE_CAMPAIGN_RUNS=500 QRESCUE_CAMPAIGN_ONLY=123 cargo test --test fault_campaign
//! ```
//!
//! `QRESCUE_CAMPAIGN_REPORT=FILE` writes the whole report as JSON.

use qrescue::sim::campaign::{run_campaign, AttemptResult, CampaignConfig, RunEnd};

/// Runs of the default campaign.
const DEFAULT_RUNS: u32 = 24;
/// Seed of the default campaign.
const DEFAULT_SEED: u64 = 0x5eed_0008;

fn env_u64(name: &str) -> Option<u64> {
    let v = std::env::var(name).ok()?;
    let v = v.trim();
    match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    }
}

#[test]
fn the_fault_campaign_keeps_every_invariant() {
    let cfg = CampaignConfig {
        runs: env_u64("QRESCUE_CAMPAIGN_RUNS").map_or(DEFAULT_RUNS, |n| n as u32),
        seed: env_u64("QRESCUE_CAMPAIGN_SEED").unwrap_or(DEFAULT_SEED),
        only: env_u64("QRESCUE_CAMPAIGN_ONLY").map(|n| n as u32),
        ..CampaignConfig::default()
    };
    let report = run_campaign(&cfg);
    if let Ok(path) = std::env::var("QRESCUE_CAMPAIGN_REPORT") {
        let json = serde_json::to_string_pretty(&report).expect("the report serialises");
        std::fs::write(&path, json).expect("write the campaign report");
    }
    eprintln!("{}", report.summary());
    assert!(
        report.passed(),
        "{}\nReplay one run with QRESCUE_CAMPAIGN_SEED={:#x} QRESCUE_CAMPAIGN_RUNS={} QRESCUE_CAMPAIGN_ONLY=<run> cargo test --test fault_campaign",
        report.summary(),
        cfg.seed,
        cfg.runs
    );

    let expected_runs = if cfg.only.is_some() {
        1
    } else {
        cfg.runs as usize
    };
    assert_eq!(report.runs.len(), expected_runs, "every run reported");
    for run in &report.runs {
        assert!(!run.faults.is_empty(), "run {} drew no fault", run.run);
        assert!(
            matches!(run.end, RunEnd::Verified | RunEnd::Refused),
            "run {} ended {:?} without a violation",
            run.run,
            run.end
        );
        if run.end == RunEnd::Verified {
            assert!(
                run.verified_partitions > 0,
                "run {} compared nothing",
                run.run
            );
            assert!(matches!(
                run.attempts.last().map(|a| &a.result),
                Some(AttemptResult::Flashed)
            ));
        }
    }
    // The default campaign really exercised what it is for: faults that made attempts fail
    // and runs that recovered from them, on both kinds of storage, and the guard's refusals.
    if cfg.only.is_none() && cfg.runs >= DEFAULT_RUNS {
        let recovered = report
            .runs
            .iter()
            .filter(|r| r.end == RunEnd::Verified && r.attempts.len() > 1)
            .count();
        assert!(
            recovered >= 3,
            "only {recovered} runs recovered from a failure"
        );
        for storage in ["nand", "emmc"] {
            assert!(
                report
                    .runs
                    .iter()
                    .any(|r| r.end == RunEnd::Verified && r.storage.starts_with(storage)),
                "no verified {storage} run"
            );
        }
        assert!(
            report.outcomes.get("refused").copied().unwrap_or(0) > 0,
            "no factory set was refused"
        );
        assert!(report.faults_drawn.len() >= 8, "{:?}", report.faults_drawn);
    }
}
