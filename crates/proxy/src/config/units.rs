//! Squid's `N unit` values: times (`connect_timeout 1 minute`) and sizes
//! (`request_header_max_size 64 KB`).
//!
//! Squid 5 demands a unit on times and only knows full unit names; proxyfleet also takes a
//! bare number (seconds) and the short forms `msec`, `sec` and `min`, so every file Squid
//! accepts reads the same here. Unit names ignore case, as in Squid.

use std::time::Duration;

/// Which of the two tokens is wrong, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnitError {
    Number(String),
    Unit(String),
}

const TIME_UNITS: &[(&[&str], f64)] = &[
    (&["msec", "msecs", "millisecond", "milliseconds"], 0.001),
    (&["sec", "secs", "second", "seconds"], 1.0),
    (&["min", "mins", "minute", "minutes"], 60.0),
    (&["hour", "hours"], 3600.0),
    (&["day", "days"], 86_400.0),
    (&["week", "weeks"], 7.0 * 86_400.0),
    (&["fortnight", "fortnights"], 14.0 * 86_400.0),
    (&["month", "months"], 30.0 * 86_400.0),
    // Squid counts 365.2522 days; a plain 365 is what people expect to read.
    (&["year", "years"], 365.0 * 86_400.0),
    (&["decade", "decades"], 3650.0 * 86_400.0),
];

const SIZE_UNITS: &[(&str, f64)] = &[
    ("bytes", 1.0),
    ("KB", 1024.0),
    ("MB", 1024.0 * 1024.0),
    ("GB", 1024.0 * 1024.0 * 1024.0),
];

/// `number [unit]`; no unit means seconds.
pub fn parse_time(number: &str, unit: Option<&str>) -> Result<Duration, UnitError> {
    let n = parse_number(number, "time")?;
    let scale = match unit {
        None => 1.0,
        Some(u) => TIME_UNITS
            .iter()
            .find(|(names, _)| names.iter().any(|n| n.eq_ignore_ascii_case(u)))
            .map(|(_, scale)| *scale)
            .ok_or_else(|| {
                UnitError::Unit(format!(
                    "unknown time unit '{u}' (expected milliseconds, seconds, minutes, hours, \
                     days, weeks, fortnights, months, years or decades)"
                ))
            })?,
    };
    Duration::try_from_secs_f64(n * scale)
        .map_err(|_| UnitError::Number(format!("time value '{number}' is too large")))
}

/// `number [unit]`; no unit means bytes.
pub fn parse_size(number: &str, unit: Option<&str>) -> Result<usize, UnitError> {
    let n = parse_number(number, "size")?;
    let scale = match unit {
        None => 1.0,
        Some(u) => SIZE_UNITS
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(u))
            .map(|(_, scale)| *scale)
            .ok_or_else(|| {
                UnitError::Unit(format!(
                    "unknown size unit '{u}' (expected bytes, KB, MB or GB)"
                ))
            })?,
    };
    let bytes = (n * scale).floor();
    // `as` saturates; the comparison catches values that would.
    if bytes >= usize::MAX as f64 {
        return Err(UnitError::Number(format!(
            "size value '{number}' is too large"
        )));
    }
    Ok(bytes as usize)
}

/// A non-negative decimal: `5`, `0.5`, `.5`, `5.`; no signs or exponents.
fn parse_number(text: &str, what: &str) -> Result<f64, UnitError> {
    let digits = text.bytes().filter(u8::is_ascii_digit).count();
    let dots = text.bytes().filter(|&b| b == b'.').count();
    if digits == 0 || dots > 1 || digits + dots != text.len() {
        return Err(UnitError::Number(format!(
            "'{text}' is not a {what} value (expected a non-negative number)"
        )));
    }
    text.parse()
        .map_err(|_| UnitError::Number(format!("'{text}' is not a number")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(n: &str, u: Option<&str>) -> Duration {
        parse_time(n, u).unwrap()
    }

    #[test]
    fn time_units() {
        assert_eq!(time("5", None), Duration::from_secs(5));
        assert_eq!(time("0.5", Some("seconds")), Duration::from_millis(500));
        assert_eq!(time("250", Some("msec")), Duration::from_millis(250));
        assert_eq!(time("1", Some("millisecond")), Duration::from_millis(1));
        assert_eq!(time("2", Some("sec")), Duration::from_secs(2));
        assert_eq!(time("1", Some("second")), Duration::from_secs(1));
        assert_eq!(time("3", Some("min")), Duration::from_secs(180));
        assert_eq!(time("1", Some("Minute")), Duration::from_secs(60));
        assert_eq!(time("2", Some("hours")), Duration::from_secs(7200));
        assert_eq!(time("1", Some("day")), Duration::from_secs(86_400));
        assert_eq!(time("1", Some("weeks")), Duration::from_secs(604_800));
        assert_eq!(time("1", Some("fortnight")), Duration::from_secs(1_209_600));
        assert_eq!(time("1", Some("month")), Duration::from_secs(2_592_000));
        assert_eq!(time("1", Some("years")), Duration::from_secs(31_536_000));
        assert_eq!(time("1", Some("decade")), Duration::from_secs(315_360_000));
        assert_eq!(time(".5", Some("minutes")), Duration::from_secs(30));
    }

    #[test]
    fn time_errors() {
        assert_eq!(
            parse_time("5", Some("jiffies")),
            Err(UnitError::Unit(
                "unknown time unit 'jiffies' (expected milliseconds, seconds, minutes, hours, \
                 days, weeks, fortnights, months, years or decades)"
                    .into()
            ))
        );
        assert_eq!(
            parse_time("-1", Some("seconds")),
            Err(UnitError::Number(
                "'-1' is not a time value (expected a non-negative number)".into()
            ))
        );
        assert!(matches!(
            parse_time("1.2.3", None),
            Err(UnitError::Number(_))
        ));
        assert!(matches!(parse_time("1e3", None), Err(UnitError::Number(_))));
        assert!(matches!(parse_time(".", None), Err(UnitError::Number(_))));
        assert_eq!(
            parse_time("999999999999999999999", Some("decades")),
            Err(UnitError::Number(
                "time value '999999999999999999999' is too large".into()
            ))
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("100", None), Ok(100));
        assert_eq!(parse_size("100", Some("bytes")), Ok(100));
        assert_eq!(parse_size("64", Some("KB")), Ok(65_536));
        assert_eq!(parse_size("64", Some("kb")), Ok(65_536));
        assert_eq!(parse_size("1.5", Some("KB")), Ok(1536));
        assert_eq!(parse_size("2", Some("MB")), Ok(2 << 20));
        assert_eq!(parse_size("1", Some("GB")), Ok(1 << 30));
        assert_eq!(
            parse_size("1", Some("TB")),
            Err(UnitError::Unit(
                "unknown size unit 'TB' (expected bytes, KB, MB or GB)".into()
            ))
        );
        assert_eq!(
            parse_size("lots", None),
            Err(UnitError::Number(
                "'lots' is not a size value (expected a non-negative number)".into()
            ))
        );
    }
}
