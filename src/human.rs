//! Numbers as people write them: `12,345 records`, `64 MiB`, `1m 20s`, the way job files
//! write sizes and durations.

use std::time::Duration;

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// `1536` → `1.5 KiB`; whole bytes below a KiB.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut value = n as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match value < 10.0 {
        true => format!("{value:.1} {}", UNITS[unit]),
        false => format!("{value:.0} {}", UNITS[unit]),
    }
}

/// `0.25 s` → `250ms`, `8.42 s` → `8.4s`, `80 s` → `1m 20s`, `900 s` → `15m`, `3725 s` →
/// `1h 2m`: as a job file writes a duration, zero parts left out.
pub fn duration(d: Duration) -> String {
    let seconds = d.as_secs_f64();
    if seconds < 1.0 {
        return format!("{}ms", d.as_millis());
    }
    if seconds < 60.0 {
        let tenths = (seconds * 10.0).round() as u64;
        return match tenths % 10 {
            0 => format!("{}s", tenths / 10),
            _ => format!("{seconds:.1}s"),
        };
    }
    let whole = d.as_secs();
    let (h, m, s) = (whole / 3600, whole / 60 % 60, whole % 60);
    match (h, m, s) {
        (0, m, 0) => format!("{m}m"),
        (0, m, s) => format!("{m}m {s}s"),
        (h, 0, _) => format!("{h}h"),
        (h, m, _) => format!("{h}h {m}m"),
    }
}

/// `12.5` → `12.5`, `1234.5` → `1,235`: a rate, with a decimal only while it matters.
pub fn rate(per_second: f64) -> String {
    match per_second < 100.0 {
        true => format!("{per_second:.1}"),
        false => count(per_second.round() as u64),
    }
}

/// `1 record`, `2 records`.
pub fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", count(n), if n == 1 { one } else { many })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_sizes_and_durations_read_as_written() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(64 << 20), "64 MiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
        assert_eq!(duration(Duration::from_millis(250)), "250ms");
        assert_eq!(duration(Duration::from_millis(8420)), "8.4s");
        assert_eq!(duration(Duration::from_secs(80)), "1m 20s");
        assert_eq!(duration(Duration::from_secs(3725)), "1h 2m");
        assert_eq!(duration(Duration::ZERO), "0ms");
        assert_eq!(duration(Duration::from_secs(3)), "3s");
        assert_eq!(duration(Duration::from_secs(900)), "15m");
        assert_eq!(duration(Duration::from_secs(7200)), "2h");
        assert_eq!(duration(Duration::from_secs(9000)), "2h 30m");
        assert_eq!(rate(12.54), "12.5");
        assert_eq!(rate(1234.5), "1,235");
        assert_eq!(plural(1, "page", "pages"), "1 page");
        assert_eq!(plural(2000, "page", "pages"), "2,000 pages");
    }
}
