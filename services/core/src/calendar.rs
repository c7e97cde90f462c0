//! UTC calendar arithmetic on the protocol's time unit (milliseconds since
//! the Unix epoch), for the stores' day and month partitions and anything
//! else that names a date. Pure: "now" is always a parameter, so every
//! function here can be tested on the first and last day of any month.
//!
//! Never step through months by a fixed number of days: months are 28 to
//! 31 days long, and a 27-day stride once skipped the current month for
//! half of every month (issue 15). Walk [`Month`] values instead.
//!
//! The conversions between instants and dates are `jiff`'s; this module
//! only gives the stores the two small value types they partition by.
//! Instants beyond `jiff`'s range (years -9999 to 9999) are clamped to it.

use std::fmt;

use jiff::tz::Offset;
use jiff::{Timestamp, civil};

pub const DAY_MS: i64 = 86_400_000;

/// A UTC calendar date.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    pub year: i32,
    /// 1..=12
    pub month: u8,
    /// 1..=31
    pub day: u8,
}

/// A UTC calendar month.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    pub year: i32,
    /// 1..=12
    pub month: u8,
}

/// Days since 1970-01-01 → civil date.
pub fn date_of_days(days: i64) -> Date {
    date_of_millis(days.saturating_mul(DAY_MS))
}

/// Civil date → days since 1970-01-01.
pub fn days_of_date(date: Date) -> i64 {
    millis_of_date(date).div_euclid(DAY_MS)
}

/// The UTC date of an instant.
pub fn date_of_millis(millis: i64) -> Date {
    let instant = Timestamp::from_millisecond(millis).unwrap_or(if millis < 0 {
        Timestamp::MIN
    } else {
        Timestamp::MAX
    });
    let date = Offset::UTC.to_datetime(instant).date();
    Date {
        year: i32::from(date.year()),
        month: date.month() as u8,
        day: date.day() as u8,
    }
}

/// Midnight UTC starting `date` (a day past the month's end counts as its
/// last day).
pub fn millis_of_date(date: Date) -> i64 {
    let year = date.year.clamp(-9999, 9999) as i16;
    let month = date.month.clamp(1, 12) as i8;
    let first = civil::Date::new(year, month, 1).expect("clamped into range");
    let civil = civil::Date::new(year, month, date.day.clamp(1, 31) as i8)
        .unwrap_or_else(|_| first.last_of_month());
    Offset::UTC
        .to_timestamp(civil.to_datetime(civil::Time::midnight()))
        .map(|t| t.as_millisecond())
        .unwrap_or(if date.year < 1970 { i64::MIN } else { i64::MAX })
}

/// The UTC month of an instant.
pub fn month_of_millis(millis: i64) -> Month {
    let d = date_of_millis(millis);
    Month {
        year: d.year,
        month: d.month,
    }
}

impl Month {
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    pub fn first_day(self) -> Date {
        Date {
            year: self.year,
            month: self.month,
            day: 1,
        }
    }
}

/// Every month from the one holding `from` to the one holding `to`, oldest
/// first, each once; empty when `from` is after `to`.
pub fn months_between(from: i64, to: i64) -> Vec<Month> {
    let mut out = Vec::new();
    if from > to {
        return out;
    }
    let last = month_of_millis(to);
    let mut m = month_of_millis(from);
    while m <= last {
        out.push(m);
        m = m.next();
    }
    out
}

/// `YYYY-MM`
impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// `YYYY-MM-DD`
impl fmt::Display for Date {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ymd(year: i32, month: u8, day: u8) -> Date {
        Date { year, month, day }
    }

    fn days_in_month(year: i32, month: u8) -> u8 {
        match month {
            2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            _ => 31,
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(date_of_millis(0), ymd(1970, 1, 1));
        assert_eq!(date_of_millis(-1), ymd(1969, 12, 31));
        // 2026-12-01T00:00:00Z, the day a 27-day stride hid the month.
        assert_eq!(date_of_millis(1_796_083_200_000), ymd(2026, 12, 1));
        assert_eq!(date_of_millis(1_796_083_200_000 - 1), ymd(2026, 11, 30));
        assert_eq!(millis_of_date(ymd(2028, 2, 29)), 1_835_395_200_000);
        assert_eq!(month_of_millis(1_796_083_200_000).to_string(), "2026-12");
        assert_eq!(ymd(2027, 1, 9).to_string(), "2027-01-09");
    }

    /// Every day from 1968 to 2104 (leap years, 2100 not leap), counted
    /// independently of the conversion under test.
    #[test]
    fn every_day_round_trips_and_follows_the_previous() {
        let mut expected = ymd(1968, 1, 1);
        let mut days = days_of_date(expected);
        while expected.year < 2105 {
            assert_eq!(date_of_days(days), expected, "day {days}");
            assert_eq!(days_of_date(expected), days);
            assert_eq!(date_of_millis(days * DAY_MS + DAY_MS - 1), expected);
            days += 1;
            expected = if expected.day < days_in_month(expected.year, expected.month) {
                ymd(expected.year, expected.month, expected.day + 1)
            } else {
                Month {
                    year: expected.year,
                    month: expected.month,
                }
                .next()
                .first_day()
            };
        }
    }

    /// For every instant of a year and a leap year, an hour apart, a year's
    /// look-back enumerates consecutive months ending with the current
    /// one: 366 days always span 13 or 14 months.
    #[test]
    fn a_years_look_back_always_ends_with_the_current_month() {
        let start = millis_of_date(ymd(2026, 1, 1));
        let end = millis_of_date(ymd(2029, 1, 1));
        let lookback = 366 * DAY_MS;
        let mut now = start;
        while now < end {
            let months = months_between(now - lookback, now);
            assert_eq!(months.last(), Some(&month_of_millis(now)), "at {now}");
            assert_eq!(months[0], month_of_millis(now - lookback));
            for pair in months.windows(2) {
                assert_eq!(pair[0].next(), pair[1], "consecutive at {now}");
            }
            assert!((13..=14).contains(&months.len()), "at {now}");
            now += 3_600_000;
        }
    }

    #[test]
    fn boundaries_of_months_and_years() {
        let cases = [
            (ymd(2026, 11, 30), ymd(2026, 12, 1), "2026-11", "2026-12"),
            (ymd(2026, 12, 31), ymd(2027, 1, 1), "2026-12", "2027-01"),
            (ymd(2028, 2, 28), ymd(2028, 2, 29), "2028-02", "2028-02"),
            (ymd(2028, 2, 29), ymd(2028, 3, 1), "2028-02", "2028-03"),
        ];
        for (last, first, a, b) in cases {
            let midnight = millis_of_date(first);
            assert_eq!(date_of_millis(midnight - 1), last);
            assert_eq!(date_of_millis(midnight), first);
            assert_eq!(month_of_millis(midnight - 1).to_string(), a);
            assert_eq!(month_of_millis(midnight).to_string(), b);
            let months: Vec<String> = months_between(midnight - 1, midnight)
                .iter()
                .map(ToString::to_string)
                .collect();
            let want: Vec<&str> = if a == b { vec![a] } else { vec![a, b] };
            assert_eq!(months, want);
        }
        assert!(months_between(10, 9).is_empty());
    }
}
