//! The `Date` header: IMF-fixdate text, formatted at most once per second.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Length of an IMF-fixdate: `Sun, 06 Nov 1994 08:49:37 GMT`.
pub const DATE_LEN: usize = 29;

/// A cache of the `Date` header value (RFC 9110 §5.6.7, IMF-fixdate).
///
/// Formatting a date costs a few divisions; a server answering a million
/// requests a second needs it once a second. Keep one per loop (thread),
/// call [`HttpDate::refresh`] with the monotonic time of the current event,
/// and hand the text to the codec through [`Now`]. The wall clock is read
/// only when the cached second may have passed, through the closure, so
/// that the codec itself never reads a clock.
///
/// # Examples
///
/// ```
/// use myriad_http::HttpDate;
/// use std::time::{Duration, Instant, UNIX_EPOCH};
///
/// let mut date = HttpDate::new();
/// let now = Instant::now();
/// let text = date.refresh(now, || UNIX_EPOCH + Duration::from_secs(784_111_777));
/// assert_eq!(&text, b"Sun, 06 Nov 1994 08:49:37 GMT");
/// // Within the same second the wall clock is not read again.
/// let again = date.refresh(now, || unreachable!());
/// assert_eq!(text, again);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct HttpDate {
    text: [u8; DATE_LEN],
    valid_until: Option<Instant>,
}

impl Default for HttpDate {
    fn default() -> Self {
        Self::new()
    }
}

impl HttpDate {
    /// An empty cache: the first [`HttpDate::refresh`] formats.
    pub const fn new() -> Self {
        HttpDate {
            text: *b"Thu, 01 Jan 1970 00:00:00 GMT",
            valid_until: None,
        }
    }

    /// Returns the date text for `now`, calling `wall` (and formatting) only
    /// when the second cached last time may have ended.
    pub fn refresh(&mut self, now: Instant, wall: impl FnOnce() -> SystemTime) -> [u8; DATE_LEN] {
        if self.valid_until.is_none_or(|v| now >= v) {
            let since = wall().duration_since(UNIX_EPOCH).unwrap_or_default();
            self.text = format_imf_fixdate(since.as_secs());
            // Valid until the wall clock's next whole second, measured on the
            // monotonic clock: at most one format per second.
            let rest = Duration::from_secs(1) - Duration::from_nanos(since.subsec_nanos() as u64);
            self.valid_until = Some(now + rest);
        }
        self.text
    }
}

/// The time of the event being handled, as the codec needs it: a monotonic
/// instant for deadlines and the `Date` text for responses.
///
/// # Examples
///
/// ```
/// use myriad_http::Now;
/// use std::time::Instant;
/// let now = Now::new(Instant::now(), *b"Sun, 06 Nov 1994 08:49:37 GMT");
/// assert_eq!(now.date(), b"Sun, 06 Nov 1994 08:49:37 GMT");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct Now {
    instant: Instant,
    date: [u8; DATE_LEN],
}

impl Now {
    /// A moment: `instant` from a monotonic clock, `date` from an
    /// [`HttpDate`] (or any IMF-fixdate text).
    pub const fn new(instant: Instant, date: [u8; DATE_LEN]) -> Self {
        Now { instant, date }
    }

    /// The monotonic instant.
    pub const fn instant(&self) -> Instant {
        self.instant
    }

    /// The `Date` header value.
    pub const fn date(&self) -> &[u8; DATE_LEN] {
        &self.date
    }
}

/// Formats seconds since the Unix epoch as IMF-fixdate.
pub(crate) fn format_imf_fixdate(secs: u64) -> [u8; DATE_LEN] {
    const DAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let days = secs / 86_400;
    let sod = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let mut out = *b"Thu, 01 Jan 1970 00:00:00 GMT";
    out[..3].copy_from_slice(DAYS[(days % 7) as usize]);
    two(&mut out[5..7], d as u64);
    out[8..11].copy_from_slice(MONTHS[(m - 1) as usize]);
    // Years past 9999 do not fit the format; clamp rather than overflow.
    let y = y.clamp(0, 9999) as u64;
    two(&mut out[12..14], y / 100);
    two(&mut out[14..16], y % 100);
    two(&mut out[17..19], sod / 3600);
    two(&mut out[20..22], sod / 60 % 60);
    two(&mut out[23..25], sod % 60);
    out
}

/// Parses an HTTP-date (RFC 9110 §5.6.7) into seconds since the Unix
/// epoch: IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`) and, because a
/// recipient must accept them, the obsolete RFC 850
/// (`Sunday, 06-Nov-94 08:49:37 GMT`) and asctime
/// (`Sun Nov  6 08:49:37 1994`) forms. The day name is not checked against
/// the date (a mismatch is the sender's mistake, not ambiguity). `None`
/// for anything else, including dates before 1970.
///
/// # Examples
///
/// ```
/// use myriad_http::parse_http_date;
/// assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
/// assert_eq!(parse_http_date(b"Sunday, 06-Nov-94 08:49:37 GMT"), Some(784_111_777));
/// assert_eq!(parse_http_date(b"Sun Nov  6 08:49:37 1994"), Some(784_111_777));
/// assert_eq!(parse_http_date(b"yesterday"), None);
/// ```
pub fn parse_http_date(v: &[u8]) -> Option<u64> {
    let v = crate::request::trim_ows(v);
    let comma = v.iter().position(|&b| b == b',');
    let (day, month, year, time) = match comma {
        // IMF-fixdate: "Sun, 06 Nov 1994 08:49:37 GMT".
        Some(3) => {
            let r = v.get(4..)?;
            if r.len() != 25 || r[0] != b' ' || r[3] != b' ' || r[7] != b' ' || r[12] != b' ' {
                return None;
            }
            if &r[21..] != b" GMT" {
                return None;
            }
            (
                num(&r[1..3])?,
                month(&r[4..7])?,
                num(&r[8..12])?,
                &r[13..21],
            )
        }
        // RFC 850: "Sunday, 06-Nov-94 08:49:37 GMT"; two-digit years are
        // read as the closest century (RFC 9110: 50 years into the future
        // at most; 1970..2069 is close enough for file dates).
        Some(_) => {
            let r = v.get(comma? + 1..)?;
            if r.len() != 23 || r[0] != b' ' || r[3] != b'-' || r[7] != b'-' || r[10] != b' ' {
                return None;
            }
            if &r[19..] != b" GMT" {
                return None;
            }
            let yy = num(&r[8..10])?;
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (num(&r[1..3])?, month(&r[4..7])?, year, &r[11..19])
        }
        // asctime: "Sun Nov  6 08:49:37 1994".
        None => {
            if v.len() != 24 || v[3] != b' ' || v[7] != b' ' || v[10] != b' ' || v[19] != b' ' {
                return None;
            }
            let day = if v[8] == b' ' {
                num(&v[9..10])?
            } else {
                num(&v[8..10])?
            };
            (day, month(&v[4..7])?, num(&v[20..24])?, &v[11..19])
        }
    };
    if time[2] != b':' || time[5] != b':' {
        return None;
    }
    let (h, m, s) = (num(&time[0..2])?, num(&time[3..5])?, num(&time[6..8])?);
    // 60 is a leap second (RFC 5322 allows it).
    if !(1..=31).contains(&day) || year < 1970 || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(year as i64, month, day as u32);
    if days < 0 {
        return None;
    }
    Some(days as u64 * 86_400 + h * 3600 + m * 60 + s)
}

/// ASCII digits only (no sign, no spaces).
fn num(d: &[u8]) -> Option<u64> {
    if d.is_empty() || !d.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(d.iter().fold(0, |n, &b| n * 10 + (b - b'0') as u64))
}

fn month(m: &[u8]) -> Option<u32> {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    MONTHS.iter().position(|&x| x == m).map(|i| i as u32 + 1)
}

/// (year, month 1..=12, day 1..=31) to days since 1970-01-01; Howard
/// Hinnant's `days_from_civil`, the inverse of [`civil_from_days`].
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = if m > 2 { m - 3 } else { m + 9 } as i64;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn two(out: &mut [u8], v: u64) {
    out[0] = b'0' + (v / 10 % 10) as u8;
    out[1] = b'0' + (v % 10) as u8;
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31); Howard
/// Hinnant's `civil_from_days`.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(&format_imf_fixdate(0), b"Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(
            &format_imf_fixdate(784_111_777),
            b"Sun, 06 Nov 1994 08:49:37 GMT"
        );
        // A leap day and the turn of a century that is a leap year.
        assert_eq!(
            &format_imf_fixdate(951_782_400),
            b"Tue, 29 Feb 2000 00:00:00 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(1_735_689_599),
            b"Tue, 31 Dec 2024 23:59:59 GMT"
        );
        assert_eq!(
            &format_imf_fixdate(4_102_444_800),
            b"Fri, 01 Jan 2100 00:00:00 GMT"
        );
    }

    #[test]
    fn parse_round_trips() {
        for secs in [0u64, 784_111_777, 951_782_400, 1_735_689_599, 4_102_444_800] {
            assert_eq!(parse_http_date(&format_imf_fixdate(secs)), Some(secs));
        }
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 08:49:37 UTC"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1994 25:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Foo 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, 06 Nov 1969 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b"Sun, +6 Nov 1994 08:49:37 GMT"), None);
        assert_eq!(parse_http_date(b""), None);
        assert_eq!(parse_http_date(b","), None);
    }

    #[test]
    fn refresh_once_per_second() {
        let mut d = HttpDate::new();
        let t0 = Instant::now();
        let mut reads = 0;
        let wall = UNIX_EPOCH + Duration::from_millis(784_111_777_250);
        d.refresh(t0, || {
            reads += 1;
            wall
        });
        // 0.75 s remain in that second.
        d.refresh(t0 + Duration::from_millis(700), || {
            reads += 1;
            wall
        });
        assert_eq!(reads, 1);
        let t = d.refresh(t0 + Duration::from_millis(750), || {
            reads += 1;
            wall + Duration::from_millis(750)
        });
        assert_eq!(reads, 2);
        assert_eq!(&t, b"Sun, 06 Nov 1994 08:49:38 GMT");
    }
}
