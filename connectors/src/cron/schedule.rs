//! Five-field cron expressions in UTC and their next fire time.
//!
//! `minute hour day-of-month month day-of-week`, each a comma-separated list
//! of `*`, `N`, `A-B`, `*/S`, `A-B/S` or `N/S` (from N to the field's
//! maximum in steps of S). Ranges: minute 0-59, hour 0-23, day-of-month
//! 1-31, month 1-12, day-of-week 0-7 (0 and 7 are Sunday). As in Vixie
//! cron, when both day fields are restricted (neither starts with `*`) a day
//! matches if either does; otherwise both must.

use std::fmt;
use std::str::FromStr;

use super::civil::{civil_from_days, days_from_civil, weekday};

/// Days searched for the next fire: more than the 8 years between two
/// 29 Februaries across a non-leap century year.
const SEARCH_DAYS: i64 = 366 * 9;

const MS_PER_MINUTE: i64 = 60_000;
const MINUTES_PER_DAY: i64 = 1_440;

/// One field's name and range.
struct Field {
    name: &'static str,
    min: u32,
    max: u32,
}

const FIELDS: [Field; 5] = [
    Field {
        name: "minute",
        min: 0,
        max: 59,
    },
    Field {
        name: "hour",
        min: 0,
        max: 23,
    },
    Field {
        name: "day-of-month",
        min: 1,
        max: 31,
    },
    Field {
        name: "month",
        min: 1,
        max: 12,
    },
    Field {
        name: "day-of-week",
        min: 0,
        max: 7,
    },
];

/// A parsed cron expression: one bit per allowed value of each field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    text: String,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    /// The day-of-month field starts with `*`.
    any_day: bool,
    /// The day-of-week field starts with `*`.
    any_weekday: bool,
}

impl Schedule {
    /// Parses a five-field expression. The error says which field is wrong
    /// and why.
    pub fn parse(expr: &str) -> Result<Schedule, String> {
        let fields: Vec<&str> = expr.split_whitespace().collect();
        if fields.len() != 5 {
            return Err(format!(
                "expected 5 fields (minute hour day-of-month month day-of-week), found {}",
                fields.len()
            ));
        }
        let mut bits = [0u64; 5];
        for ((text, field), out) in fields.iter().zip(&FIELDS).zip(&mut bits) {
            *out = parse_field(text, field)?;
        }
        if bits[4] & (1 << 7) != 0 {
            bits[4] = (bits[4] & !(1 << 7)) | 1;
        }
        let schedule = Schedule {
            text: fields.join(" "),
            minutes: bits[0],
            hours: bits[1],
            days: bits[2],
            months: bits[3],
            weekdays: bits[4],
            any_day: fields[2].starts_with('*'),
            any_weekday: fields[4].starts_with('*'),
        };
        schedule.check_reachable(fields[2])?;
        Ok(schedule)
    }

    /// Rejects day-of-month values that no selected month has (`30 2`).
    fn check_reachable(&self, days: &str) -> Result<(), String> {
        if !self.any_day && !self.any_weekday {
            return Ok(()); // either day field may match
        }
        let reachable = (1..=12u32)
            .filter(|m| self.months & (1 << m) != 0)
            .any(|month| {
                let longest = match month {
                    2 => 29,
                    4 | 6 | 9 | 11 => 30,
                    _ => 31,
                };
                (1..=longest).any(|day| self.days & (1 << day) != 0)
            });
        if reachable {
            Ok(())
        } else {
            Err(format!("the schedule never fires: day-of-month `{days}` does not occur in the selected months"))
        }
    }

    /// The first fire time strictly after `after_ms` (ms since the epoch,
    /// UTC), on a whole minute; `None` if there is none within 9 years.
    pub fn next_after(&self, after_ms: i64) -> Option<i64> {
        let minute = after_ms.div_euclid(MS_PER_MINUTE).checked_add(1)?;
        let mut day = minute.div_euclid(MINUTES_PER_DAY);
        let mut from = minute.rem_euclid(MINUTES_PER_DAY) as u32;
        let last = day.checked_add(SEARCH_DAYS)?;
        while day < last {
            let (year, month, day_of_month) = civil_from_days(day);
            if self.months & (1 << month) == 0 {
                // skip to the first of the next month
                day = if month == 12 {
                    days_from_civil(year + 1, 1, 1)
                } else {
                    days_from_civil(year, month + 1, 1)
                };
                from = 0;
                continue;
            }
            if self.day_matches(day, day_of_month) {
                if let Some(minute_of_day) = self.first_minute_from(from) {
                    let minutes = day
                        .checked_mul(MINUTES_PER_DAY)?
                        .checked_add(i64::from(minute_of_day))?;
                    return minutes.checked_mul(MS_PER_MINUTE);
                }
            }
            day += 1;
            from = 0;
        }
        None
    }

    /// Whether the day fields allow `day` (its month already matched).
    fn day_matches(&self, day: i64, day_of_month: u32) -> bool {
        let by_date = self.days & (1 << day_of_month) != 0;
        let by_weekday = self.weekdays & (1 << weekday(day)) != 0;
        if self.any_day || self.any_weekday {
            by_date && by_weekday
        } else {
            by_date || by_weekday
        }
    }

    /// The first allowed minute of a day at or after minute `from`.
    fn first_minute_from(&self, from: u32) -> Option<u32> {
        let (first_hour, first_minute) = (from / 60, from % 60);
        (first_hour..24)
            .filter(|h| self.hours & (1 << h) != 0)
            .find_map(|hour| {
                let start = if hour == first_hour { first_minute } else { 0 };
                let minutes = self.minutes & (u64::MAX << start);
                (minutes != 0).then(|| hour * 60 + minutes.trailing_zeros())
            })
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Schedule::parse(s)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

/// Parses one field into a bit set of its allowed values.
fn parse_field(text: &str, field: &Field) -> Result<u64, String> {
    let bad = |why: String| format!("{} field `{text}`: {why}", field.name);
    let mut bits = 0u64;
    for item in text.split(',') {
        if item.is_empty() {
            return Err(bad("empty list item".to_string()));
        }
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => (range, Some(number(step).map_err(&bad)?)),
            None => (item, None),
        };
        if step == Some(0) {
            return Err(bad("a step must be at least 1".to_string()));
        }
        let (lo, hi) = if range == "*" {
            (field.min, field.max)
        } else if let Some((a, b)) = range.split_once('-') {
            (number(a).map_err(&bad)?, number(b).map_err(&bad)?)
        } else {
            let n = number(range).map_err(&bad)?;
            (n, if step.is_some() { field.max } else { n })
        };
        for value in [lo, hi] {
            if value < field.min || value > field.max {
                return Err(bad(format!(
                    "{value} is out of range {}-{}",
                    field.min, field.max
                )));
            }
        }
        if lo > hi {
            return Err(bad(format!("range {lo}-{hi} goes backwards")));
        }
        for value in (lo..=hi).step_by(step.unwrap_or(1) as usize) {
            bits |= 1 << value;
        }
    }
    Ok(bits)
}

/// A decimal number of at most a few digits.
fn number(text: &str) -> Result<u32, String> {
    if text.is_empty() || text.len() > 4 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("`{text}` is not a number"));
    }
    text.parse()
        .map_err(|_| format!("`{text}` is not a number"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, mo: u32, d: u32, h: i64, mi: i64, s: i64) -> i64 {
        ((days_from_civil(y, mo, d) * 24 + h) * 60 + mi) * 60_000 + s * 1000
    }

    fn next(expr: &str, after: i64) -> i64 {
        Schedule::parse(expr).unwrap().next_after(after).unwrap()
    }

    #[test]
    fn every_minute_is_strictly_after() {
        assert_eq!(
            next("* * * * *", ms(2024, 1, 1, 0, 0, 30)),
            ms(2024, 1, 1, 0, 1, 0)
        );
        assert_eq!(
            next("* * * * *", ms(2024, 1, 1, 0, 1, 0)),
            ms(2024, 1, 1, 0, 2, 0)
        );
        assert_eq!(
            next("* * * * *", ms(2024, 12, 31, 23, 59, 59)),
            ms(2025, 1, 1, 0, 0, 0)
        );
    }

    #[test]
    fn steps_ranges_and_lists() {
        assert_eq!(
            next("*/15 * * * *", ms(2024, 5, 5, 10, 7, 0)),
            ms(2024, 5, 5, 10, 15, 0)
        );
        assert_eq!(
            next("*/15 * * * *", ms(2024, 5, 5, 10, 45, 0)),
            ms(2024, 5, 5, 11, 0, 0)
        );
        assert_eq!(
            next("5/20 * * * *", ms(2024, 5, 5, 10, 26, 0)),
            ms(2024, 5, 5, 10, 45, 0)
        );
        assert_eq!(
            next("0-10/5,30 * * * *", ms(2024, 5, 5, 10, 10, 0)),
            ms(2024, 5, 5, 10, 30, 0)
        );
        assert_eq!(
            next("0 8-18/2 * * *", ms(2024, 5, 5, 18, 0, 0)),
            ms(2024, 5, 6, 8, 0, 0)
        );
    }

    #[test]
    fn weekdays_months_and_dates() {
        // Friday 2024-06-07 → Monday 2024-06-10
        assert_eq!(
            next("0 9 * * 1-5", ms(2024, 6, 7, 10, 0, 0)),
            ms(2024, 6, 10, 9, 0, 0)
        );
        // 7 is Sunday too: 2024-06-09
        assert_eq!(
            next("0 0 * * 7", ms(2024, 6, 7, 0, 0, 0)),
            ms(2024, 6, 9, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 1 1 *", ms(2023, 12, 31, 23, 59, 59)),
            ms(2024, 1, 1, 0, 0, 0)
        );
        assert_eq!(
            next("59 23 31 12 *", ms(2024, 1, 1, 0, 0, 0)),
            ms(2024, 12, 31, 23, 59, 0)
        );
        assert_eq!(
            next("0 0 31 * *", ms(2024, 4, 1, 0, 0, 0)),
            ms(2024, 5, 31, 0, 0, 0)
        );
        assert_eq!(
            next("0 0 * 2 *", ms(2024, 3, 1, 0, 0, 0)),
            ms(2025, 2, 1, 0, 0, 0)
        );
    }

    #[test]
    fn leap_days() {
        assert_eq!(
            next("30 2 29 2 *", ms(2024, 3, 1, 0, 0, 0)),
            ms(2028, 2, 29, 2, 30, 0)
        );
        // 2100 is not a leap year: 2096 → 2104
        assert_eq!(
            next("0 0 29 2 *", ms(2096, 3, 1, 0, 0, 0)),
            ms(2104, 2, 29, 0, 0, 0)
        );
    }

    #[test]
    fn restricted_day_fields_match_either() {
        // the 13th or a Friday: Sunday 2024-09-01 → Friday 2024-09-06
        assert_eq!(
            next("0 12 13 * 5", ms(2024, 9, 1, 0, 0, 0)),
            ms(2024, 9, 6, 12, 0, 0)
        );
        // a day-of-month step starts with `*`: both must match (odd days that are Mondays)
        assert_eq!(
            next("0 0 */2 * 1", ms(2024, 9, 1, 0, 0, 0)),
            ms(2024, 9, 9, 0, 0, 0)
        );
    }

    #[test]
    fn before_the_epoch_and_at_the_limits() {
        assert_eq!(next("0 0 * * *", -1), 0);
        assert_eq!(
            Schedule::parse("* * * * *").unwrap().next_after(i64::MAX),
            None
        );
        assert!(Schedule::parse("* * * * *")
            .unwrap()
            .next_after(i64::MIN)
            .is_some());
    }

    #[test]
    fn invalid_expressions_say_what_is_wrong() {
        let cases = [
            (
                "* * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 4",
            ),
            (
                "* * * * * *",
                "expected 5 fields (minute hour day-of-month month day-of-week), found 6",
            ),
            ("61 * * * *", "minute field `61`: 61 is out of range 0-59"),
            ("* 24 * * *", "hour field `24`: 24 is out of range 0-23"),
            (
                "* * 0 * *",
                "day-of-month field `0`: 0 is out of range 1-31",
            ),
            ("* * * 13 *", "month field `13`: 13 is out of range 1-12"),
            ("* * * * 8", "day-of-week field `8`: 8 is out of range 0-7"),
            (
                "*/0 * * * *",
                "minute field `*/0`: a step must be at least 1",
            ),
            (
                "5-1 * * * *",
                "minute field `5-1`: range 5-1 goes backwards",
            ),
            ("a * * * *", "minute field `a`: `a` is not a number"),
            ("-1 * * * *", "minute field `-1`: `` is not a number"),
            (
                "1-2-3 * * * *",
                "minute field `1-2-3`: `2-3` is not a number",
            ),
            ("1,,2 * * * *", "minute field `1,,2`: empty list item"),
            (
                "99999999999 * * * *",
                "minute field `99999999999`: `99999999999` is not a number",
            ),
            (
                "* * 30 2 *",
                "the schedule never fires: day-of-month `30` does not occur in the selected months",
            ),
        ];
        for (expr, want) in cases {
            assert_eq!(Schedule::parse(expr).unwrap_err(), want, "{expr}");
        }
        assert!(
            Schedule::parse("* * 30 2 1").is_ok(),
            "a weekday can still match"
        );
        assert_eq!(
            Schedule::parse(" 0  9 * * 1-5 ").unwrap().to_string(),
            "0 9 * * 1-5"
        );
    }
}
