//! proxyfleet's group controller.
pub mod model;
pub mod store;
