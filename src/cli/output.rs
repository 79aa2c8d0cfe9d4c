//! Human and `--json` output. Machine output goes to stdout, one JSON object per line; human
//! output goes to stdout as plain lines; logs never go to stdout.

use std::io::Write;

use serde::Serialize;

/// Where a command's results go.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub json: bool,
}

impl Output {
    /// Print one JSON object as a line (only in `--json` mode).
    pub fn json_line<T: Serialize>(&self, value: &T) {
        if self.json {
            let mut out = std::io::stdout().lock();
            // A closed stdout (e.g. `| head`) is not an error worth dying over.
            let _ = serde_json::to_writer(&mut out, value);
            let _ = writeln!(out);
            let _ = out.flush();
        }
    }

    /// Print a human line (only without `--json`).
    pub fn line(&self, text: impl AsRef<str>) {
        if !self.json {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", text.as_ref());
            let _ = out.flush();
        }
    }

    /// Always print a JSON line, whatever the mode (e.g. `sim`'s announcements, which scripts
    /// and tests parse).
    pub fn always_json<T: Serialize>(&self, value: &T) {
        let mut out = std::io::stdout().lock();
        let _ = serde_json::to_writer(&mut out, value);
        let _ = writeln!(out);
        let _ = out.flush();
    }
}

/// Human-readable byte count.
pub fn bytes(n: u64) -> String {
    const K: f64 = 1024.0;
    let f = n as f64;
    if f >= K * K * K {
        format!("{:.2} GiB", f / (K * K * K))
    } else if f >= K * K {
        format!("{:.2} MiB", f / (K * K))
    } else if f >= K {
        format!("{:.1} KiB", f / K)
    } else {
        format!("{n} B")
    }
}

/// Human-readable rate.
pub fn rate(bytes_per_s: f64) -> String {
    if bytes_per_s >= 1e6 {
        format!("{:.2} MB/s", bytes_per_s / 1e6)
    } else {
        format!("{:.1} kB/s", bytes_per_s / 1e3)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn sizes_and_rates_read_well() {
        assert_eq!(super::bytes(512), "512 B");
        assert_eq!(super::bytes(600 * 1024), "600.0 KiB");
        assert_eq!(super::bytes(64 << 20), "64.00 MiB");
        assert_eq!(super::rate(3_830_000.0), "3.83 MB/s");
        assert_eq!(super::rate(170_000.0), "170.0 kB/s");
    }
}
