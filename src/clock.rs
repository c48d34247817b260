//! Unix seconds now: keyward's one clock, at the bottom of the crate, so
//! that every layer (the store, the audit budget, the admin functions, the
//! CLI) reads the same one without depending on another; and the one
//! civil calendar (UTC dates), pure: usage plans' months, webhook events'
//! timestamps, the CLI's times.
//!
//! The store measures it against Redis's `TIME` (see
//! `store::Store::clock_skew`): past `KEYWARD_MAX_CLOCK_SKEW_MS`, an
//! instance is not ready and answers no validation, so no instance decides
//! expiry or a rotation's grace on a clock of its own.

/// Unix seconds now, with a fraction.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Unix seconds now, as a document keeps them: to the microsecond. RedisJSON
/// writes a number back with 16 significant digits, so a time with more
/// (`1796627387.0222933`) would read back as another (`1796627387.022293`)
/// than the one answered when it was written.
pub fn stamp() -> f64 {
    (now() * 1e6).round() / 1e6
}

/// Unix seconds as RFC 3339 in UTC with milliseconds,
/// `2026-12-02T05:40:01.123Z` (webhook events' `timestamp`).
pub fn rfc3339(secs: f64) -> String {
    let ms = (secs.max(0.0) * 1000.0).round() as i64;
    let (days, ms_of_day) = (ms.div_euclid(86_400_000), ms.rem_euclid(86_400_000));
    let (year, month, day) = civil_from_days(days);
    let (h, m) = (ms_of_day / 3_600_000, ms_of_day / 60_000 % 60);
    let (s, milli) = (ms_of_day / 1000 % 60, ms_of_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{milli:03}Z")
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian:
/// Howard Hinnant's `civil_from_days`.
pub fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// (year, month, day) to days since 1970-01-01; `days_from_civil`.
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_rfc3339_in_utc() {
        assert_eq!(rfc3339(0.0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(1_796_189_401.123_4), "2026-12-02T05:30:01.123Z");
    }
}
