//! What `up` tells the `proxyfleet proxy` instances it launches about the destination guard
//! (see `proxyfleet_proxy::guard`): it is on, the stack's `service_networks` stay reachable,
//! and the tier itself — every zone's subnet (its nodes and instances) and the admin API's
//! address — never is, whatever the service networks say.

use std::net::{IpAddr, Ipv4Addr};

use proxyfleet_proxy::guard::{ENV_ALLOW, ENV_DENY, ENV_GUARD};
use proxyfleet_stack::Stack;

/// The admin API's address (it binds 127.0.0.1 on a port the kernel chooses, after the
/// instances have started, so the whole address is denied).
const ADMIN_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// The environment variables for one instance.
pub fn environment(stack: &Stack) -> Vec<(String, String)> {
    let join = |items: Vec<String>| items.join(",");
    let allow = stack
        .service_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    let mut deny: Vec<String> = stack.zones.iter().map(|z| z.subnet.to_string()).collect();
    for lb in &stack.load_balancers {
        for node in &lb.nodes {
            if !stack.zones.iter().any(|z| z.subnet.contains(&node.address)) {
                deny.push(node.address.to_string());
            }
        }
    }
    deny.push(ADMIN_ADDRESS.to_string());
    vec![
        (ENV_GUARD.to_string(), "on".to_string()),
        (ENV_ALLOW.to_string(), join(allow)),
        (ENV_DENY.to_string(), join(deny)),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_stack_reaches_its_service_network_and_never_the_tier() {
        let env = environment(&proxyfleet_stack::builtin());
        assert_eq!(
            env,
            [
                ("PROXYFLEET_DESTINATION_GUARD".to_string(), "on".to_string()),
                (
                    "PROXYFLEET_GUARD_ALLOW".to_string(),
                    "127.30.0.0/16".to_string()
                ),
                (
                    "PROXYFLEET_GUARD_DENY".to_string(),
                    "127.10.1.0/24,127.10.2.0/24,127.0.0.1".to_string()
                ),
            ]
        );
    }
}
