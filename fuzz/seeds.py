#!/usr/bin/env python3
"""Writes the seed corpora under corpus/<target>/ (run from anywhere; re-running rewrites them).

Seeds are small real inputs: requests (smuggling shapes included), chunked bodies, PROXY
v1/v2 headers, Debian's stock squid.conf and the test suite's, the built-in and test stacks.
"""
import os
import re
import shutil
import socket
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def copy(target, name, path):
    with open(os.path.join(REPO, path), "rb") as f:
        write(target, name, f.read())


def head():
    r = lambda *lines: "\r\n".join(lines) + "\r\n\r\n"
    seeds = {
        "get": r("GET http://127.30.0.10:8080/a/b?c=d HTTP/1.1", "Host: 127.30.0.10:8080",
                 "User-Agent: curl/7.88.1", "Accept: */*", "Proxy-Connection: Keep-Alive"),
        "get-1.0": r("GET http://service.test/ HTTP/1.0", "X-Forwarded-For: 10.0.0.1"),
        "post-length": r("POST http://service.test/form HTTP/1.1", "Host: service.test",
                         "Content-Length: 5", "Content-Type: text/plain") + "hello",
        "post-chunked": r("POST http://service.test/up HTTP/1.1", "Host: service.test",
                          "Transfer-Encoding: chunked") + "5\r\nhello\r\n0\r\n\r\n",
        "connect": r("CONNECT service.test:443 HTTP/1.1", "Host: service.test:443"),
        "connect-v6": r("CONNECT [::1]:8443 HTTP/1.1", "Host: [::1]:8443"),
        "origin-form": r("GET /healthz HTTP/1.1", "Host: 127.10.1.11:3128"),
        "pipelined": r("GET http://a.test/ HTTP/1.1", "Host: a.test") + r("GET http://b.test/ HTTP/1.1"),
        "numeric-hosts": r("GET http://2130706433/ HTTP/1.1", "Host: 0x7f000001"),
        "octal-host": r("GET http://0177.0.0.1:80/ HTTP/1.1"),
        "userinfo": r("GET http://user:pw@service.test:80/ HTTP/1.1", "Proxy-Authorization: Basic eDp5"),
        "v4-mapped": r("GET http://[::ffff:127.0.0.1]/ HTTP/1.1"),
        # Smuggling shapes (RFC 9112 section 6 and 11.2).
        "cl-te": r("POST http://a.test/ HTTP/1.1", "Content-Length: 4", "Transfer-Encoding: chunked") + "0\r\n\r\n",
        "te-cl": r("POST http://a.test/ HTTP/1.1", "Transfer-Encoding: chunked", "Content-Length: 6") + "0\r\n\r\nX",
        "cl-cl": r("POST http://a.test/ HTTP/1.1", "Content-Length: 5", "Content-Length: 6") + "hello!",
        "cl-list": r("POST http://a.test/ HTTP/1.1", "Content-Length: 5, 5") + "hello",
        "cl-plus": r("POST http://a.test/ HTTP/1.1", "Content-Length: +5") + "hello",
        "te-identity": r("POST http://a.test/ HTTP/1.1", "Transfer-Encoding: identity, chunked") + "0\r\n\r\n",
        "te-gzip-last": r("POST http://a.test/ HTTP/1.1", "Transfer-Encoding: chunked, gzip"),
        "te-tab": r("POST http://a.test/ HTTP/1.1", "Transfer-Encoding:\tchunked") + "0\r\n\r\n",
        "te-space-colon": r("POST http://a.test/ HTTP/1.1", "Transfer-Encoding : chunked") + "0\r\n\r\n",
        "te-obs-fold": r("POST http://a.test/ HTTP/1.1", "Transfer-Encoding:", " chunked") + "0\r\n\r\n",
        "connection-cl": r("POST http://a.test/ HTTP/1.1", "Connection: Content-Length", "Content-Length: 39")
        + "GET http://a.test/admin HTTP/1.1\r\n\r\n",
        "connection-te": r("POST http://a.test/ HTTP/1.1", "Connection: close, Transfer-Encoding",
                           "Transfer-Encoding: chunked") + "0\r\n\r\n",
        "bare-lf": "GET http://a.test/ HTTP/1.1\nHost: a.test\nX: 1\n\n",
        "bare-cr": "GET http://a.test/ HTTP/1.1\rHost: a.test\r\n\r\n",
        "nul-in-value": r("GET http://a.test/ HTTP/1.1", "X: a\x00b"),
        "expect": r("PUT http://a.test/x HTTP/1.1", "Expect: 100-continue", "Content-Length: 2") + "hi",
        "http09": "GET /\r\n\r\n",
        "absolute-https": r("GET https://a.test:8443/ HTTP/1.1"),
        "ftp": r("GET ftp://a.test/file HTTP/1.1"),
        "cache-object": r("GET cache_object://localhost/info HTTP/1.1"),
    }
    for name, text in seeds.items():
        write("head", name, text.encode("latin-1"))


def chunked():
    seeds = {
        "simple": b"5\r\nhello\r\n0\r\n\r\n",
        "two-chunks": b"5\r\nhello\r\n1A;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nNEXT",
        "trailers": b"3\r\nabc\r\n0\r\nX-Checksum: 1\r\nX-Other: 2\r\n\r\n",
        "quoted-ext": b"4;name=\"a;b\"\r\nwxyz\r\n0;last\r\n\r\n",
        "upper-hex": b"A\r\n0123456789\r\n000\r\n\r\n",
        "bare-lf-size": b"2;a\nxx\r\n0\r\n\r\n",
        "bare-lf-end": b"2\r\nxx\r\n0\n\n",
        "space-after-size": b"2 \r\nxx\r\n0\r\n\r\n",
        "huge-size": b"ffffffffffffffff\r\n",
        "too-many-digits": b"00000000000000000001\r\nx\r\n0\r\n\r\n",
        "missing-crlf": b"2\r\nxxx\r\n0\r\n\r\n",
        "empty-size": b"\r\n\r\n",
        "then-request": b"0\r\n\r\nGET http://a.test/ HTTP/1.1\r\n\r\n",
    }
    for name, data in seeds.items():
        write("chunked", name, data)


def proxy_header():
    sig = b"\r\n\r\n\x00\r\nQUIT\n"

    def v2(command, family, addresses, tlvs=b""):
        body = addresses + tlvs
        return sig + bytes([0x20 | command, family]) + struct.pack(">H", len(body)) + body

    v4 = socket.inet_aton("127.20.0.5") + socket.inet_aton("127.10.1.11") + struct.pack(">HH", 40000, 3128)
    v6 = (socket.inet_pton(socket.AF_INET6, "::ffff:127.20.0.5")
          + socket.inet_pton(socket.AF_INET6, "::1") + struct.pack(">HH", 40000, 3128))
    unix = b"/tmp/a".ljust(108, b"\0") + b"/tmp/b".ljust(108, b"\0")
    # TLVs: ALPN, authority, a CRC32C slot, NOOP.
    tlvs = (b"\x01\x00\x02h2" + b"\x02\x00\x0cservice.test" + b"\x03\x00\x04\0\0\0\0"
            + b"\x04\x00\x03\0\0\0")
    seeds = {
        "v1-tcp4": b"PROXY TCP4 127.20.0.5 127.10.1.11 40000 3128\r\nGET http://a.test/ HTTP/1.1\r\n\r\n",
        "v1-tcp6": b"PROXY TCP6 ::ffff:127.20.0.5 ::1 40000 3128\r\n",
        "v1-unknown": b"PROXY UNKNOWN\r\n",
        "v1-unknown-long": b"PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n",
        "v1-bare-lf": b"PROXY TCP4 127.20.0.5 127.10.1.11 40000 3128\n",
        "v1-bad-port": b"PROXY TCP4 127.20.0.5 127.10.1.11 99999 3128\r\n",
        "v2-proxy-ipv4": v2(1, 0x11, v4) + b"GET",
        "v2-proxy-ipv6": v2(1, 0x21, v6),
        "v2-proxy-udp": v2(1, 0x12, v4),
        "v2-local": v2(0, 0x00, b""),
        "v2-unix": v2(1, 0x31, unix),
        "v2-tlvs": v2(1, 0x11, v4, tlvs),
        "v2-unspec": v2(1, 0x00, b"\0\0\0\0"),
        "not-proxy": b"GET http://a.test/ HTTP/1.1\r\n\r\n",
    }
    for name, data in seeds.items():
        write("proxy_header", name, data)


def squid_conf():
    # Debian's stock file is 340 KB of comments around 30 directive lines: the directives and
    # a few comment shapes are the seed (the whole file is read by the proxy's own tests).
    stock = "/etc/squid/squid.conf"
    if os.path.exists(stock):
        lines = open(stock, encoding="utf-8", errors="replace").read().split("\n")
        kept = [l for l in lines if l.strip() and not l.lstrip().startswith("#")]
        kept = ["# WELCOME TO SQUID 5", "#  TAG: acl", "#\tacl aclname acltype argument ..."] + kept
        write("squid_conf", "debian-stock", "\n".join(kept) + "\n")
    copy("squid_conf", "example", "examples/squid.conf")
    seeds = {
        # From crates/cli/tests: the base config and the PROXY-header port.
        "tests-base": "http_port 127.0.0.1:0\nvisible_hostname proxy.test\ndns_nameservers 127.0.0.1\n"
        "acl app src 127.20.0.0/16\nhttp_access allow app\nhttp_access deny all\naccess_log ACCESS_LOG squid\n",
        "tests-proxy-protocol": "http_port 127.0.0.1:0 require-proxy-header\nacl lb src 127.10.0.0/16\n"
        "proxy_protocol_access allow lb\nproxy_protocol_access deny all\nhttp_access allow app\n"
        "acl app src 127.20.0.0/16\n",
        "tests-ignored": "http_port 127.0.0.1:0\ndns_nameservers 127.0.0.1\ninclude /etc/squid/conf.d/*.conf\n"
        "cache deny all\ncache_dir ufs /var/spool/squid 100 16 256\nrefresh_pattern . 0 20% 4320\naccess_log none\n",
        # The built-in stack's instance file (crates/stack/builtin.yaml), rendered.
        "builtin-instance": "http_port 127.10.1.11:3128\nvisible_hostname i-1\nacl app src 127.20.0.0/16\n"
        "acl lbs src 127.10.1.10/32 127.10.2.10/32\nhttp_access allow app\nhttp_access allow lbs\n"
        "http_access deny all\naccess_log stdio:/tmp/i-1/access.log squid\nworkers 1\n",
        "includes-and-files": "include /etc/squid/conf.d/*.conf\ninclude conf.d/local.conf\n"
        "acl apps src \"/etc/squid/ips.txt\"\nacl names dstdomain -i \"domains.txt\"\n"
        "acl to_names dst 127.30.0.0/16\nhttp_access deny !names to_names\nhttp_access allow apps\n"
        "http_port [::1]:3128\n",
        "continuations": "acl Safe_ports port 80 \\\n    443 \\\n\n# comment\n  1025-65535 # trailing\n"
        "http_access deny !Safe_ports\nhttp_port 3128\n",
        "everything": "http_port 0.0.0.0:3128\nhttp_port 127.0.0.1:3129 require-proxy-header\n"
        "acl a src 10.0.0.0/8 fe80::/10\nacl b dstdomain .example.test\nacl c port 1-1024\n"
        "acl d method GET POST\nacl e proto HTTP\nacl f urlpath_regex -i ^/api\nacl g dst 127.0.0.1\n"
        "acl h url_regex ^http://\nhttp_access allow a b c d e f\nhttp_access deny g\n"
        "proxy_protocol_access allow localhost\ntcp_outgoing_address 127.10.1.11 a\n"
        "tcp_outgoing_address ::1\nforwarded_for truncate\nvia off\nrequest_header_max_size 20 KB\n"
        "reply_header_max_size 1 MB\nconnect_timeout 30 seconds\nread_timeout 2 minutes\n"
        "request_timeout 1 hour\nclient_idle_pconn_timeout 100 milliseconds\nclient_lifetime 1 day\n"
        "shutdown_lifetime 0\nmax_filedescriptors 4096\nworkers 2\naccess_log daemon:/tmp/x.log squid a\n"
        "access_log none b\n",
        "errors": "http_acess allow all\n",
        "self-include": "include /etc/squid/squid.conf\nhttp_port 3128\n",
    }
    for name, text in seeds.items():
        write("squid_conf", name, text)


def stack():
    copy("stack", "builtin", "crates/stack/builtin.yaml")
    copy("stack", "tests-squid", "crates/cli/tests/stacks/squid.yaml")
    # crates/cli/tests/common/up.rs proxy_stack(41, 2, 2, 3), rendered.
    src = open(os.path.join(REPO, "crates/cli/tests/common/up.rs")).read()
    m = re.search(r'r#"(zones:.*?)"#', src, re.S)
    if m:
        text = m.group(1).replace("{{", "\x00").replace("}}", "\x01")
        text = text.replace("{net}", "41").replace("{min}", "2").replace("{desired}", "2").replace("{max}", "3")
        write("stack", "tests-proxy-stack", text.replace("\x00", "{").replace("\x01", "}"))
    write("stack", "tests-ip-targets",
          "zones:\n  a: { subnet: 127.42.1.0/24 }\n  c: { subnet: 127.42.2.0/24 }\n"
          "load_balancers:\n  front: { zones: [a, c] }\n"
          "listeners:\n  - { load_balancer: front, port: 3128, protocol: tcp, target_group: proxies }\n"
          "target_groups:\n  proxies:\n    protocol: tcp\n    port: 8080\n    target_type: ip\n"
          "    deregistration_delay: 1s\n    health_check: { protocol: tcp, interval: 1s }\n"
          "    targets:\n      - { address: 127.42.1.11 }\n      - { address: 127.42.2.11 }\n")
    write("stack", "errors-yaml", "zones:\n  a: { subnet: 127.1.1.0/24\n  c: [\n")
    write("stack", "anchors", "zones: &z\n  a: { subnet: 127.43.1.0/24 }\nnetworks:\n  app: 127.20.0.0/16\n"
          "x: *z\n")


if __name__ == "__main__":
    shutil.rmtree(CORPUS, ignore_errors=True)
    head()
    chunked()
    proxy_header()
    squid_conf()
    stack()
