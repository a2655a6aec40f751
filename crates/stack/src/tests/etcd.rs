//! The `etcd:` section.

use super::{err, ok};

#[test]
fn endpoints_and_the_default_prefix() {
    let stack = ok(&[
        "etcd:",
        "  endpoints: [http://127.0.0.1:2379, \"http://127.0.0.2:2379/\"]",
    ]);
    let etcd = stack.etcd.expect("an etcd section");
    assert_eq!(
        etcd.endpoints,
        vec![
            "127.0.0.1:2379".parse().unwrap(),
            "127.0.0.2:2379".parse().unwrap()
        ]
    );
    assert_eq!(etcd.prefix, "/proxyfleet/");
    assert!(
        ok(&["zones: {}"]).etcd.is_none(),
        "no section: the embedded store"
    );
}

#[test]
fn bad_endpoints_and_prefixes_name_their_place() {
    assert_eq!(
        err(&["etcd:", "  endpoints: [https://127.0.0.1:2379]"]),
        "stack.yaml:2:15: etcd: endpoint 'https://127.0.0.1:2379' is not http://ADDRESS:PORT \
         (an etcd client URL; TLS is not supported)"
    );
    assert_eq!(
        err(&[
            "etcd:",
            "  endpoints: [http://127.0.0.1:2379, http://127.0.0.1:2379]"
        ]),
        "stack.yaml:2:38: etcd: endpoint 127.0.0.1:2379 is listed twice"
    );
    assert_eq!(
        err(&["etcd:", "  endpoints: []"]),
        "stack.yaml:2:14: etcd: endpoints is empty: name at least one etcd client URL"
    );
    assert_eq!(
        err(&[
            "etcd:",
            "  endpoints: [http://127.0.0.1:2379]",
            "  prefix: tier1"
        ]),
        "stack.yaml:3:11: etcd: prefix 'tier1' must start and end with '/' (e.g. /proxyfleet/)"
    );
    assert!(err(&["etcd:", "  endpoint: []"]).contains("unknown field `endpoint`"));
}
