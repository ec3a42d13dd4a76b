//! RFC 3339 UTC timestamps for bundles, journals and provenance.
//!
//! Only formatting from [`SystemTime`] is needed, so this avoids a date-time
//! dependency: the civil date comes from Howard Hinnant's days-to-civil
//! algorithm, exact for the proleptic Gregorian calendar.

use std::time::{SystemTime, UNIX_EPOCH};

/// The current time as `2024-05-01T12:34:56.789Z`.
pub fn now_rfc3339() -> String {
    rfc3339(SystemTime::now())
}

/// `t` as RFC 3339 UTC with millisecond precision (`…T12:34:56.789Z`).
/// Times before 1970 are formatted correctly too (clocks can be wrong).
pub fn rfc3339(t: SystemTime) -> String {
    let (secs, millis) = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, d.subsec_millis() as i64),
        Err(e) => {
            // Before the epoch: floor to whole seconds, keeping millis >= 0.
            let d = e.duration();
            let mut secs = -(d.as_secs() as i64);
            let mut millis = -(d.subsec_millis() as i64);
            if millis < 0 {
                secs -= 1;
                millis += 1000;
            }
            (secs, millis)
        }
    };
    format_unix_millis(secs, millis)
}

fn format_unix_millis(secs: i64, millis: i64) -> String {
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

/// Days since 1970-01-01 → (year, month 1..=12, day 1..=31).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097); // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000Z");
        // 2000-02-29 (leap day of a century leap year) 23:59:59.5
        let t = UNIX_EPOCH + Duration::from_millis(951_868_799_500);
        assert_eq!(rfc3339(t), "2000-02-29T23:59:59.500Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_709_251_200); // 2024-03-01
        assert_eq!(rfc3339(t), "2024-03-01T00:00:00.000Z");
        let t = UNIX_EPOCH + Duration::from_secs(4_107_542_400); // 2100-03-01
        assert_eq!(rfc3339(t), "2100-03-01T00:00:00.000Z");
        let t = UNIX_EPOCH - Duration::from_millis(1);
        assert_eq!(rfc3339(t), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn now_is_well_formed() {
        let s = now_rfc3339();
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z') && s.as_bytes()[10] == b'T', "{s}");
    }
}
