//! proxyfleet's Layer-4 load balancer.
pub mod spec;
