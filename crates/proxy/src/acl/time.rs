//! The `time` ACL: `acl NAME time [SMTWHFA|D...] [h1:m1-h2:m2]`, in the proxy's local time
//! (Squid's letters: S Sunday, M Monday, T Tuesday, W Wednesday, H Thursday, F Friday,
//! A Saturday, D the weekdays Monday to Friday).

/// One day set and time window: matches when the local day is in `days` (bit 0 = Sunday)
/// and the minute of the day is within `from..=to`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimeSpan {
    days: u8,
    from: u16,
    to: u16,
}

const ALL_DAYS: u8 = 0b111_1111;
const WHOLE_DAY: (u16, u16) = (0, 24 * 60);

/// Adds one value of an `acl ... time` line: a day-letter word starts a span (the whole day
/// until a window follows it); a window completes the span just started, or is every day's.
pub(super) fn add(spans: &mut Vec<TimeSpan>, value: &str) -> Result<(), String> {
    if let Some((from, to)) = value.split_once('-') {
        let (from, to) = (minute(from, value)?, minute(to, value)?);
        if from > to {
            return Err(format!(
                "'{value}': the window must start before it ends (Squid: reversed time range)"
            ));
        }
        match spans.last_mut() {
            Some(span) if (span.from, span.to) == WHOLE_DAY && span.days != ALL_DAYS => {
                span.from = from;
                span.to = to;
            }
            _ => spans.push(TimeSpan {
                days: ALL_DAYS,
                from,
                to,
            }),
        }
        return Ok(());
    }
    let mut days = 0u8;
    for c in value.chars() {
        days |= match c {
            'S' => 1,
            'M' => 1 << 1,
            'T' => 1 << 2,
            'W' => 1 << 3,
            'H' => 1 << 4,
            'F' => 1 << 5,
            'A' => 1 << 6,
            'D' => 0b011_1110,
            _ => {
                return Err(format!(
                    "'{value}' is neither day letters (SMTWHFA, D for weekdays) nor a window \
                     h1:m1-h2:m2"
                ))
            }
        };
    }
    spans.push(TimeSpan {
        days,
        from: WHOLE_DAY.0,
        to: WHOLE_DAY.1,
    });
    Ok(())
}

fn minute(text: &str, value: &str) -> Result<u16, String> {
    let bad = || format!("'{value}' is not a window h1:m1-h2:m2 (24-hour clock)");
    let (h, m) = text.split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if h > 24 || m > 59 || (h == 24 && m > 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl TimeSpan {
    fn contains(&self, weekday: u8, minute: u16) -> bool {
        self.days & (1 << weekday) != 0 && self.from <= minute && minute <= self.to
    }
}

/// Whether the local time now is within one of the spans.
pub(super) fn now_within(spans: &[TimeSpan]) -> bool {
    let (weekday, minute) = local_now();
    spans.iter().any(|s| s.contains(weekday, minute))
}

/// (day of week, 0 = Sunday; minute of the day) in the local time zone.
fn local_now() -> (u8, u16) {
    // SAFETY: localtime_r writes the whole `tm` before it is read.
    unsafe {
        let now = libc::time(std::ptr::null_mut());
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&now, &mut tm);
        (tm.tm_wday as u8, (tm.tm_hour * 60 + tm.tm_min) as u16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spans(values: &[&str]) -> Vec<TimeSpan> {
        let mut out = Vec::new();
        for v in values {
            add(&mut out, v).unwrap();
        }
        out
    }

    #[test]
    fn days_and_windows() {
        let office = spans(&["MTWHF", "08:00-17:30"]);
        assert_eq!(office.len(), 1);
        let at =
            |s: &[TimeSpan], day, h: u16, m: u16| s.iter().any(|x| x.contains(day, h * 60 + m));
        assert!(at(&office, 1, 8, 0));
        // Both ends are included, as in Squid.
        assert!(at(&office, 5, 17, 30));
        assert!(!at(&office, 5, 17, 31));
        assert!(!at(&office, 0, 12, 0), "Sunday");
        let weekend = spans(&["SA"]);
        assert!(at(&weekend, 6, 23, 59) && !at(&weekend, 3, 12, 0));
        let nights = spans(&["00:00-06:00"]);
        assert!(at(&nights, 3, 6, 0) && !at(&nights, 3, 6, 1));
        assert!(at(&spans(&["D"]), 1, 0, 0) && !at(&spans(&["D"]), 6, 0, 0));
    }

    #[test]
    fn bad_values() {
        let mut out = Vec::new();
        assert!(add(&mut out, "MX").unwrap_err().contains("day letters"));
        assert!(add(&mut out, "17:00-08:00")
            .unwrap_err()
            .contains("start before"));
        assert!(add(&mut out, "8-17").unwrap_err().contains("24-hour clock"));
        assert!(add(&mut out, "08:00-25:00")
            .unwrap_err()
            .contains("24-hour clock"));
    }
}
