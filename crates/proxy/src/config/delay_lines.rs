//! `delay_pools N`, `delay_class POOL 1..5`, `delay_parameters POOL RESTORE/MAX...`,
//! `delay_access POOL allow|deny [!]acl...`, `delay_initial_bucket_level PERCENT`, and for
//! uploads `client_delay_pools N`, `client_delay_parameters POOL RESTORE MAX`,
//! `client_delay_access POOL allow|deny [!]acl...`, `client_delay_initial_bucket_level`
//! (the pacing itself: [`crate::delay`]).

use super::parse::{Directive, Parser, PendingRule};
use super::ConfigError;
use crate::delay::Rate;

/// One client pool as its lines are read.
#[derive(Default)]
pub(super) struct PendingClientPool {
    pub rate: Option<Rate>,
    pub access: Vec<PendingRule>,
}

/// The values `delay_parameters` takes per class: aggregate; + individual; + network;
/// + user (class 4); class 5 has only its tag level.
fn levels_of(class: u8) -> usize {
    match class {
        5 => 1,
        c => usize::from(c),
    }
}

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
                let n = pool_count(d, t)?;
                self.delay_pools.resize_with(n, PendingPool::default);
                self.delay_pools.truncate(n);
            }
            "delay_initial_bucket_level" => {
                self.delay_initial = percent(d)?;
            }
            "delay_class" => {
                let at = self.pool_at(d)?;
                let t = d.arg(1, "class (1, 2 or 3)")?;
                d.no_more(2)?;
                let class = match t.text.parse::<u8>() {
                    Ok(c @ 1..=5) => c,
                    _ => {
                        return Err(
                            d.error(t, format!("'{}' is not a delay class (1 to 5)", t.text))
                        )
                    }
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
                let wanted = levels_of(class);
                if specs.len() != wanted {
                    return Err(d.missing(&format!(
                        "{wanted} RESTORE/MAX value(s) for a class {class} pool (found {})",
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
                d.no_more(1)?;
                let n = pool_count(d, t)?;
                self.client_delay_pools
                    .resize_with(n, PendingClientPool::default);
            }
            "client_delay_initial_bucket_level" => {
                self.client_delay_initial = percent(d)?;
            }
            "client_delay_parameters" => {
                let at = self.client_pool_at(d)?;
                let restore = d.arg(1, "speed limit (bytes a second)")?;
                let max = d.arg(2, "bucket size (bytes)")?;
                d.no_more(3)?;
                let bytes = |t: &super::lex::Token| {
                    t.text
                        .parse::<u64>()
                        .map_err(|_| d.error(t, format!("'{}' is not a number of bytes", t.text)))
                };
                self.client_delay_pools[at].rate = Some(Rate {
                    restore: bytes(restore)? as f64,
                    max: bytes(max)? as f64,
                });
            }
            "client_delay_access" => {
                let at = self.client_pool_at(d)?;
                let rule = self.rule_after(d, 1)?;
                self.client_delay_pools[at].access.push(rule);
            }
            name => unreachable!("not a delay directive: {name}"),
        }
        Ok(())
    }

    /// The pool a line names (1-based in squid.conf), which `delay_pools` must cover.
    fn pool_at(&self, d: &Directive) -> Result<usize, ConfigError> {
        numbered_pool(d, self.delay_pools.len(), "delay_pools")
    }

    /// The same for `client_delay_pools`.
    fn client_pool_at(&self, d: &Directive) -> Result<usize, ConfigError> {
        numbered_pool(d, self.client_delay_pools.len(), "client_delay_pools")
    }
}

/// `delay_pools N` / `client_delay_pools N`: 0 to 256.
fn pool_count(d: &Directive, t: &super::lex::Token) -> Result<usize, ConfigError> {
    t.text
        .parse()
        .ok()
        .filter(|n| *n <= 256)
        .ok_or_else(|| d.error(t, format!("'{}' is not 0 to 256", t.text)))
}

/// `*_initial_bucket_level PERCENT`.
fn percent(d: &Directive) -> Result<u8, ConfigError> {
    let t = d.arg(0, "percent")?;
    t.text
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= 100)
        .ok_or_else(|| d.error(t, format!("'{}' is not a percentage", t.text)))
}

/// The 0-based pool a line's first argument names, one of `count` (`what`) pools.
fn numbered_pool(d: &Directive, count: usize, what: &str) -> Result<usize, ConfigError> {
    let t = d.arg(0, "pool number")?;
    let n: usize = t
        .text
        .parse()
        .map_err(|_| d.error(t, format!("'{}' is not a pool number", t.text)))?;
    if n == 0 || n > count {
        return Err(d.error(
            t,
            format!("pool {n} is not one of the {count} {what} configured above"),
        ));
    }
    Ok(n - 1)
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
        let c = parse_ok(
            "delay_pools 2\n\
             delay_class 1 4\n\
             delay_parameters 1 -1/-1 -1/-1 -1/-1 1000/2000\n\
             delay_class 2 5\n\
             delay_parameters 2 500/500\n\
             client_delay_pools 1\n\
             client_delay_parameters 1 1024 2048\n\
             client_delay_access 1 allow all\n\
             client_delay_initial_bucket_level 10\n",
        );
        assert_eq!(c.delay_pools[0].levels[3].unwrap().max, 2000.0);
        assert_eq!(c.delay_pools[1].levels.len(), 1);
        assert_eq!(c.client_delay_pools[0].rate.restore, 1024.0);
        assert_eq!(c.client_delay_pools[0].access.rules.len(), 1);
        assert_eq!(c.client_delay_initial_bucket_level, 10);
    }

    #[test]
    fn errors() {
        assert_errors(&[
            (
                "delay_class 1 1",
                "1:13: delay_class: pool 1 is not one of the 0 delay_pools configured above",
            ),
            (
                "delay_pools 1\ndelay_class 1 6",
                "2:15: delay_class: '6' is not a delay class (1 to 5)",
            ),
            (
                "delay_pools 1\ndelay_class 1 4\ndelay_parameters 1 1/1 1/1 1/1",
                "3:31: delay_parameters: missing 4 RESTORE/MAX value(s) for a class 4 pool \
                 (found 3)",
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
                "client_delay_pools 1\nclient_delay_parameters 2 100 100",
                "2:25: client_delay_parameters: pool 2 is not one of the 1 client_delay_pools \
                 configured above",
            ),
            (
                "client_delay_pools 1\nclient_delay_parameters 1 100 lots",
                "2:31: client_delay_parameters: 'lots' is not a number of bytes",
            ),
        ]);
    }
}
