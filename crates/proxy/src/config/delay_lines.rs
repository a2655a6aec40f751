//! `delay_pools N`, `delay_class POOL 1|2|3`, `delay_parameters POOL RESTORE/MAX...`,
//! `delay_access POOL allow|deny [!]acl...`, `delay_initial_bucket_level PERCENT`, and
//! `client_delay_pools 0` (the pacing itself: [`crate::delay`]).

use super::parse::{Directive, Parser, PendingRule};
use super::ConfigError;
use crate::delay::Rate;

/// One pool as its lines are read.
#[derive(Default)]
pub(super) struct PendingPool {
    pub class: Option<u8>,
    pub levels: Option<Vec<Option<Rate>>>,
    pub access: Vec<PendingRule>,
}

impl Parser {
    pub(super) fn delay(&mut self, d: &Directive) -> Result<(), ConfigError> {
        match d.name.text.as_str() {
            "delay_pools" => {
                let t = d.arg(0, "number of pools")?;
                d.no_more(1)?;
                let n: usize = t
                    .text
                    .parse()
                    .ok()
                    .filter(|n| *n <= 256)
                    .ok_or_else(|| d.error(t, format!("'{}' is not 0 to 256", t.text)))?;
                self.delay_pools.resize_with(n, PendingPool::default);
                self.delay_pools.truncate(n);
            }
            "delay_initial_bucket_level" => {
                let t = d.arg(0, "percent")?;
                self.delay_initial = t
                    .text
                    .parse::<u8>()
                    .ok()
                    .filter(|p| *p <= 100)
                    .ok_or_else(|| d.error(t, format!("'{}' is not a percentage", t.text)))?;
            }
            "delay_class" => {
                let at = self.pool_at(d)?;
                let t = d.arg(1, "class (1, 2 or 3)")?;
                d.no_more(2)?;
                let class = match t.text.as_str() {
                    "1" => 1,
                    "2" => 2,
                    "3" => 3,
                    "4" | "5" => {
                        return Err(d.error(
                            t,
                            format!(
                                "delay class {} is not supported (classes 1 to 3: aggregate, \
                                 per network, per host)",
                                t.text
                            ),
                        ))
                    }
                    other => return Err(d.error(t, format!("'{other}' is not a delay class"))),
                };
                self.delay_pools[at].class = Some(class);
            }
            "delay_parameters" => {
                let at = self.pool_at(d)?;
                let Some(class) = self.delay_pools[at].class else {
                    return Err(d.error(
                        &d.args[0],
                        "delay_parameters before this pool's delay_class",
                    ));
                };
                let specs = &d.args[1..];
                if specs.len() != usize::from(class) {
                    return Err(d.missing(&format!(
                        "{class} RESTORE/MAX value(s) for a class {class} pool (found {})",
                        specs.len()
                    )));
                }
                let levels = specs
                    .iter()
                    .map(|t| rate(&t.text).map_err(|m| d.error(t, m)))
                    .collect::<Result<Vec<_>, _>>()?;
                self.delay_pools[at].levels = Some(levels);
            }
            "delay_access" => {
                let at = self.pool_at(d)?;
                let rule = self.rule_after(d, 1)?;
                self.delay_pools[at].access.push(rule);
            }
            "client_delay_pools" => {
                let t = d.arg(0, "number of pools")?;
                if t.text != "0" {
                    return Err(d.error(
                        t,
                        "client_delay_pools (upload limits) are not supported: only \
                         delay_pools, which pace what origins send",
                    ));
                }
            }
            // Only used with client_delay_pools, which must be 0.
            "client_delay_initial_bucket_level" => {}
            name => unreachable!("not a delay directive: {name}"),
        }
        Ok(())
    }

    /// The pool a line names (1-based in squid.conf), which `delay_pools` must cover.
    fn pool_at(&self, d: &Directive) -> Result<usize, ConfigError> {
        let t = d.arg(0, "pool number")?;
        let n: usize = t
            .text
            .parse()
            .map_err(|_| d.error(t, format!("'{}' is not a pool number", t.text)))?;
        if n == 0 || n > self.delay_pools.len() {
            return Err(d.error(
                t,
                format!(
                    "pool {n} is not one of the {} delay_pools configured above",
                    self.delay_pools.len()
                ),
            ));
        }
        Ok(n - 1)
    }
}

/// `RESTORE/MAX` in bytes (a second / at most); `-1/-1` is no limit.
fn rate(text: &str) -> Result<Option<Rate>, String> {
    let bad = || format!("'{text}' is not RESTORE/MAX in bytes (e.g. 64000/64000, or -1/-1)");
    let (restore, max) = text.split_once('/').ok_or_else(bad)?;
    if restore == "-1" || max == "-1" {
        return Ok(None);
    }
    let (restore, max): (u64, u64) = (
        restore.parse().map_err(|_| bad())?,
        max.parse().map_err(|_| bad())?,
    );
    Ok(Some(Rate {
        restore: restore as f64,
        max: max as f64,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_errors, parse_ok};

    #[test]
    fn pools() {
        let c = parse_ok(
            "acl lan src 10.0.0.0/8\n\
             delay_pools 2\n\
             delay_class 1 1\n\
             delay_parameters 1 64000/64000\n\
             delay_access 1 allow lan\n\
             delay_access 1 deny all\n\
             delay_class 2 3\n\
             delay_parameters 2 -1/-1 32000/64000 8000/8000\n\
             delay_initial_bucket_level 100\n",
        );
        assert_eq!(c.delay_pools.len(), 2);
        assert_eq!(c.delay_pools[0].class, 1);
        assert_eq!(c.delay_pools[0].access.rules.len(), 2);
        assert_eq!(c.delay_pools[1].levels[0], None);
        assert_eq!(c.delay_pools[1].levels[2].unwrap().restore, 8000.0);
        assert_eq!(c.delay_initial_bucket_level, 100);
    }

    #[test]
    fn errors() {
        assert_errors(&[
            (
                "delay_class 1 1",
                "1:13: delay_class: pool 1 is not one of the 0 delay_pools configured above",
            ),
            (
                "delay_pools 1\ndelay_class 1 4",
                "2:15: delay_class: delay class 4 is not supported (classes 1 to 3: aggregate, \
                 per network, per host)",
            ),
            (
                "delay_pools 1\ndelay_class 1 2\ndelay_parameters 1 100/100",
                "3:27: delay_parameters: missing 2 RESTORE/MAX value(s) for a class 2 pool \
                 (found 1)",
            ),
            (
                "delay_pools 1\ndelay_class 1 1\ndelay_parameters 1 fast",
                "3:20: delay_parameters: 'fast' is not RESTORE/MAX in bytes (e.g. \
                 64000/64000, or -1/-1)",
            ),
            (
                "delay_pools 1\ndelay_parameters 1 1/1",
                "2:18: delay_parameters: delay_parameters before this pool's delay_class",
            ),
            (
                "client_delay_pools 1",
                "1:20: client_delay_pools: client_delay_pools (upload limits) are not \
                 supported: only delay_pools, which pace what origins send",
            ),
        ]);
    }
}
