//! The stack file as written: serde structs whose scalars keep their source location
//! (`serde_saphyr::Spanned`), read with `deny_unknown_fields` everywhere. Nothing here is
//! checked beyond YAML types; `validate` turns this into the model.
//!
//! Named objects (`zones.a`) and list entries (`listeners[0]`) are read through [`Named`] and
//! [`Indexed`], which keep the file's order and record, for an error serde-saphyr raises while
//! reading them (an unknown key, a wrong type, a syntax error), which object it was in: the
//! error carries the line and column, this carries the object's name.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_saphyr::Spanned;

pub(crate) type Str = Spanned<String>;
pub(crate) type Num = Spanned<u64>;

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawStack {
    #[serde(default)]
    pub admin: crate::admin::RawAdmin,
    #[serde(default)]
    pub etcd: crate::etcd::RawEtcd,
    #[serde(default)]
    pub hosts: Named<crate::hosts::RawHost>,
    #[serde(default)]
    pub dns: crate::hosts::RawDns,
    #[serde(default)]
    pub zones: Named<RawZone>,
    #[serde(default)]
    pub networks: Named<RawNetwork>,
    /// Networks the instances may reach although the destination guard protects them
    /// (loopback, the proxy hosts' own addresses): names from `networks` or CIDRs.
    #[serde(default)]
    pub service_networks: Vec<Str>,
    #[serde(default)]
    pub security_groups: Named<RawSecurityGroup>,
    #[serde(default)]
    pub load_balancers: Named<RawLoadBalancer>,
    #[serde(default)]
    pub listeners: Indexed<RawListener>,
    #[serde(default)]
    pub target_groups: Named<RawTargetGroup>,
    #[serde(default)]
    pub launch_templates: Named<RawLaunchTemplate>,
    #[serde(default)]
    pub groups: Named<RawGroup>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawZone {
    pub subnet: Str,
}

#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub(crate) struct RawNetwork {
    pub cidr: Str,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSecurityGroup {
    #[serde(default)]
    pub ingress: Indexed<RawIngress>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    pub protocol: Str,
    pub ports: Option<Str>,
    pub from: Str,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLoadBalancer {
    pub zones: Spanned<Vec<Str>>,
    pub cross_zone: Option<bool>,
    pub nodes: Option<Pairs<Str>>,
    pub max_connections: Option<Num>,
    pub max_connections_per_source: Option<Num>,
    pub idle_timeout: Option<Str>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawListener {
    pub load_balancer: Str,
    pub port: Num,
    pub protocol: Option<Str>,
    pub target_group: Str,
    pub allowed_cidrs: Option<Vec<Str>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTargetGroup {
    pub protocol: Option<Str>,
    pub port: Num,
    pub target_type: Option<Str>,
    pub preserve_client_ip: Option<bool>,
    pub transparent: Option<Spanned<bool>>,
    pub proxy_protocol_v2: Option<bool>,
    pub deregistration_delay: Option<Str>,
    pub target_max_connections: Option<Num>,
    pub health_check: Option<RawHealthCheck>,
    #[serde(default)]
    pub targets: Indexed<RawTarget>,
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHealthCheck {
    pub protocol: Option<Str>,
    pub path: Option<Str>,
    pub matcher: Option<Str>,
    pub port: Option<Num>,
    pub interval: Option<Str>,
    pub timeout: Option<Str>,
    pub healthy_threshold: Option<Num>,
    pub unhealthy_threshold: Option<Num>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawTarget {
    pub address: Str,
    pub port: Option<Num>,
    pub zone: Option<Str>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLaunchTemplate {
    pub command: Spanned<Vec<Str>>,
    pub environment: Option<Pairs<Str>>,
    pub files: Option<Pairs<Str>>,
    pub stop_timeout: Option<Str>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGroup {
    pub launch_template: Str,
    pub min: Num,
    pub max: Num,
    pub desired: Option<Num>,
    pub zones: Spanned<Vec<Str>>,
    pub port: Option<Num>,
    #[serde(default)]
    pub target_groups: Vec<Str>,
    #[serde(default)]
    pub security_groups: Vec<Str>,
    pub health_check_type: Option<Str>,
    pub health_check_grace_period: Option<Str>,
    pub first_address: Option<Num>,
    pub scaling: Option<Spanned<RawScaling>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawScaling {
    pub target_active_connections_per_instance: Num,
    pub scale_out_cooldown: Option<Str>,
    pub scale_in_cooldown: Option<Str>,
}

/// The section a named object or list entry lives in, for its name in messages.
pub(crate) trait Section {
    const SECTION: &'static str;
}

macro_rules! sections {
    ($($ty:ty => $name:literal),* $(,)?) => {
        $(impl Section for $ty { const SECTION: &'static str = $name; })*
    };
}

sections! {
    RawZone => "zones",
    RawNetwork => "networks",
    RawSecurityGroup => "security_groups",
    RawIngress => "ingress",
    RawLoadBalancer => "load_balancers",
    RawListener => "listeners",
    RawTargetGroup => "target_groups",
    RawTarget => "targets",
    RawLaunchTemplate => "launch_templates",
    RawGroup => "groups",
    crate::hosts::RawHost => "hosts",
}

/// A mapping of names to objects, in file order (`zones: { a: ..., c: ... }`).
#[derive(Debug)]
pub(crate) struct Named<T>(pub Vec<(Str, T)>);

/// A list of objects (`listeners: [ ... ]`), each with the location of its entry.
#[derive(Debug)]
pub(crate) struct Indexed<T>(pub Vec<Spanned<T>>);

/// A mapping of names to plain values, in file order (`nodes`, `environment`, `files`).
#[derive(Debug)]
pub(crate) struct Pairs<V>(pub Vec<(Str, V)>);

impl<T> Default for Named<T> {
    fn default() -> Self {
        Named(Vec::new())
    }
}

impl<T> Default for Indexed<T> {
    fn default() -> Self {
        Indexed(Vec::new())
    }
}

thread_local! {
    /// The object being read, as path segments such as `.security_groups`, `.proxy-sg`,
    /// `.ingress`, `[0]`.
    static PATH: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
    /// The object the first (innermost) error was raised in.
    static FAILED_IN: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Forget any earlier parse's failure; called before each parse.
pub(crate) fn reset_failure() {
    PATH.with(|p| p.borrow_mut().clear());
    FAILED_IN.with(|f| *f.borrow_mut() = None);
}

/// The object in which the last parse failed (`None`: at the top level).
pub(crate) fn failed_in() -> Option<String> {
    FAILED_IN.with(|f| f.borrow().clone())
}

/// Reads `f` inside the path segment `segment`; an error raised in it is attributed to the
/// innermost object (the first to see it).
pub(crate) fn within<R, E>(segment: String, f: impl FnOnce() -> Result<R, E>) -> Result<R, E> {
    PATH.with(|p| p.borrow_mut().push(segment));
    let result = f();
    if result.is_err() {
        FAILED_IN.with(|failed| {
            let mut failed = failed.borrow_mut();
            if failed.is_none() {
                let path = PATH.with(|p| p.borrow().concat());
                *failed = Some(path.trim_start_matches('.').to_string());
            }
        });
    }
    PATH.with(|p| p.borrow_mut().pop());
    result
}

impl<'de, T: Deserialize<'de> + Section> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Section> Visitor<'de> for V<T> {
            type Value = Named<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a mapping of {} by name", T::SECTION)
            }
            // `zones:` with nothing after it is an empty section.
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Named(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(name) = map.next_key::<Str>()? {
                    let value = within(format!(".{}", name.value), || map.next_value::<T>())?;
                    entries.push((name, value));
                }
                Ok(Named(entries))
            }
        }
        within(format!(".{}", T::SECTION), || {
            deserializer.deserialize_option(V(PhantomData))
        })
    }
}

impl<'de, T: Deserialize<'de> + Section> Deserialize<'de> for Indexed<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de> + Section> Visitor<'de> for V<T> {
            type Value = Indexed<T>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                write!(f, "a list of {}", T::SECTION)
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Indexed(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_seq(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                loop {
                    let segment = format!("[{}]", entries.len());
                    match within(segment, || seq.next_element::<Spanned<T>>())? {
                        Some(entry) => entries.push(entry),
                        None => return Ok(Indexed(entries)),
                    }
                }
            }
        }
        within(format!(".{}", T::SECTION), || {
            deserializer.deserialize_option(V(PhantomData))
        })
    }
}

impl<'de, V: Deserialize<'de>> Deserialize<'de> for Pairs<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Vis<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for Vis<V> {
            type Value = Pairs<V>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a mapping")
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(Pairs(Vec::new()))
            }
            fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
                d.deserialize_map(self)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries = Vec::new();
                while let Some(entry) = map.next_entry::<Str, V>()? {
                    entries.push(entry);
                }
                Ok(Pairs(entries))
            }
        }
        deserializer.deserialize_option(Vis(PhantomData))
    }
}
