"""The download address rules as pure functions: every range, every spelling, the opt-ins.

Nothing here resolves a name or opens a socket: the rules are checked over
addresses and URLs only (the end-to-end cases, on loopback, are in
``test_downloads.py``).
"""

from __future__ import annotations

import ipaddress
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

import mmstream as mm
from mmstream.media.netguard import (
    URLAccess,
    check_address,
    check_url,
    classify,
    literal_address,
    redact_url,
)

# --- spellings ----------------------------------------------------------------------------

LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f.1",
    "0x7f000001",
    "0177.0.0.1",
    "0177.1",
    "127.0.0.1.",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[0:0:0:0:0:ffff:127.0.0.1]",
    "[::127.0.0.1]",  # IPv4-compatible
    "[64:ff9b::127.0.0.1]",  # NAT64 well-known prefix
    "[2002:7f00:1::]",  # 6to4
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_every_spelling_of_loopback_is_read_as_an_address(host: str) -> None:
    address = literal_address(host)
    assert address is not None
    refusal = classify(address)
    assert refusal is not None and refusal.rule == "loopback"


@pytest.mark.parametrize("host", ["localhost", "LOCALHOST", "localhost.", "api.localhost"])
def test_localhost_names_are_loopback_without_resolving(host: str) -> None:
    found, denied = check_url(f"http://{host}:8080/cat.png", URLAccess())
    assert found == host.lower()
    assert denied is not None and denied.rule == "loopback"


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("10.1", "10.0.0.1"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("2852039166", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
        ("0251.0376.0251.0376", "169.254.169.254"),
        ("0", "0.0.0.0"),
        ("0x", "0.0.0.0"),  # C's inet_aton reads a bare 0x as 0
        ("1.2.3.4", "1.2.3.4"),
    ],
)
def test_inet_aton_forms_name_the_address_a_resolver_would(host: str, expected: str) -> None:
    assert literal_address(host) == ipaddress.ip_address(expected)


@pytest.mark.parametrize(
    "host", ["example.com", "1.2.3.4.5", "256.1.1.1", "1.2.3.256x", "08.1.1.1", "", "[::1"]
)
def test_names_and_impossible_numbers_are_not_addresses(host: str) -> None:
    assert literal_address(host) is None


def test_an_ipv6_zone_is_read_and_still_link_local() -> None:
    address = literal_address("[fe80::1%25eth0]")
    assert address is not None
    refusal = classify(address)
    assert refusal is not None and refusal.rule == "link-local"


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_decimal_hex_and_dotted_forms_agree(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    assert literal_address(str(value)) == address
    assert literal_address(hex(value)) == address
    assert literal_address(str(address)) == address
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    # an IPv4-mapped address is refused exactly when its IPv4 address is
    assert (classify(mapped) is None) == (classify(address) is None)


# --- ranges -------------------------------------------------------------------------------

REFUSED = [
    ("0.0.0.0", "unspecified"),
    ("0.255.255.255", "unspecified"),
    ("127.0.0.1", "loopback"),
    ("127.255.255.254", "loopback"),
    ("10.0.0.0", "private"),
    ("10.255.255.255", "private"),
    ("172.16.0.1", "private"),
    ("172.31.255.255", "private"),
    ("192.168.0.1", "private"),
    ("192.168.255.255", "private"),
    ("100.64.0.1", "cgnat"),
    ("100.127.255.255", "cgnat"),
    ("169.254.169.254", "link-local"),
    ("169.254.0.1", "link-local"),
    ("192.0.0.8", "reserved"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.9", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.255", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "reserved"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fc00::1", "private"),
    ("fd12:3456:789a::1", "private"),
    ("fe80::1", "link-local"),
    ("febf::1", "link-local"),
    ("fec0::1", "private"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("100::1", "reserved"),
    ("64:ff9b:1::1", "private"),
    ("::ffff:10.0.0.5", "private"),
    ("::ffff:169.254.169.254", "link-local"),
    ("::ffff:100.64.0.1", "cgnat"),
    ("::10.0.0.5", "private"),
    ("64:ff9b::a9fe:a9fe", "link-local"),
    ("64:ff9b::192.168.1.1", "private"),
    ("2002:a9fe:a9fe::", "link-local"),
    ("2002:c0a8:0101::1", "private"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "private"),  # Teredo, client 10.0.0.1
]


@pytest.mark.parametrize(("text", "rule"), REFUSED)
def test_every_refused_range_is_named(text: str, rule: str) -> None:
    refusal = classify(ipaddress.ip_address(text))
    assert refusal is not None
    assert refusal.rule == rule


PUBLIC = [
    "8.8.8.8",
    "1.1.1.1",
    "9.255.255.255",  # just below 10/8
    "11.0.0.0",  # just above it
    "172.15.255.255",
    "172.32.0.0",
    "100.63.255.255",
    "100.128.0.0",
    "169.253.255.255",
    "198.17.255.255",
    "198.20.0.0",
    "223.255.255.255",
    "2606:4700:4700::1111",
    "2a00:1450:4001:81b::200e",
    "::ffff:8.8.8.8",
    "64:ff9b::808:808",
    "2002:808:808::1",
]


@pytest.mark.parametrize("text", PUBLIC)
def test_public_addresses_pass(text: str) -> None:
    assert classify(ipaddress.ip_address(text)) is None


# --- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_a_url_naming_loopback_in_any_spelling_is_refused_before_io(host: str) -> None:
    host_part, denied = check_url(f"http://{host}:8080/cat.png?sig=abc", URLAccess())
    assert host_part
    assert denied is not None and denied.rule == "loopback"
    assert "url_access=URLAccess(allow=[" in denied.reason


def test_a_url_naming_a_public_host_is_left_to_resolution() -> None:
    assert check_url("https://images.example.com/a.png", URLAccess()) == (
        "images.example.com",
        None,
    )
    assert check_url("https://8.8.8.8/a.png", URLAccess()) == ("8.8.8.8", None)


@pytest.mark.parametrize("url", ["ftp://x/a.png", "file:///etc/passwd", "gopher://x/", "http:///a"])
def test_only_http_and_https_with_a_host_pass(url: str) -> None:
    with pytest.raises(ValueError, match=r"http|host"):
        check_url(url, URLAccess())


def test_credentials_in_a_url_are_refused_even_for_an_allowed_host() -> None:
    access = URLAccess(allow=["images.example.com"])
    _, denied = check_url("https://user:hunter2@images.example.com/a.png", access)
    assert denied is not None and denied.rule == "credentials"
    error = denied.error("image 1", "https://user:hunter2@images.example.com/a.png")
    assert "hunter2" not in str(error) and "hunter2" not in error.url


def test_errors_never_echo_a_query_or_credentials() -> None:
    url = "http://user:pw@127.0.0.1:9/cat.png?X-Amz-Signature=topsecret#frag"
    assert redact_url(url) == "http://127.0.0.1:9/cat.png?…"
    _, denied = check_url(url, URLAccess())
    assert denied is not None
    error = denied.error(f"image 1 ({redact_url(url)})", url, image_index=0)
    assert isinstance(error, mm.ForbiddenURLError)
    assert isinstance(error, mm.InvalidRequestError)
    for secret in ("topsecret", "pw@", "frag"):
        assert secret not in str(error)
    assert (error.rule, error.url, error.image_index) == ("credentials", redact_url(url), 0)
    again = pickle.loads(pickle.dumps(error))
    assert (again.rule, again.url, str(again)) == (error.rule, error.url, str(error))


def test_the_refusal_says_which_rule_and_how_to_allow_it() -> None:
    denied = check_address("10.0.0.5", ipaddress.ip_address("10.0.0.5"), URLAccess())
    assert denied is not None
    assert "10.0.0.5 is a private-network address (RFC 1918)" in denied.reason
    assert "url_access=URLAccess(allow=['10.0.0.5'])" in denied.reason
    assert "allow_private=True" in denied.reason
    metadata = check_address("meta.test", ipaddress.ip_address("169.254.169.254"), URLAccess())
    assert metadata is not None
    assert "meta.test resolves to 169.254.169.254" in metadata.reason
    assert "allow_private" not in metadata.reason  # it would not help


# --- the opt-ins --------------------------------------------------------------------------


def refused(access: URLAccess, host: str, address: str) -> bool:
    return check_address(host, ipaddress.ip_address(address), access) is not None


def test_allow_private_opens_loopback_private_and_cgnat_only() -> None:
    access = URLAccess(allow_private=True)
    for address in ("127.0.0.1", "10.1.2.3", "192.168.1.1", "100.64.1.1", "fd00::1", "::1"):
        assert not refused(access, "h.test", address), address
    for address in ("169.254.169.254", "fe80::1", "224.0.0.1", "0.0.0.0", "240.0.0.1"):
        assert refused(access, "h.test", address), address


def test_an_allowlist_admits_exactly_what_it_lists() -> None:
    access = URLAccess(allow=["127.0.0.1", "images.internal", "10.1.0.0/16", "fd00:1::/32"])
    assert not refused(access, "127.0.0.1", "127.0.0.1")
    assert not refused(access, "x.test", "::ffff:127.0.0.1")  # the same address
    assert refused(access, "127.0.0.2", "127.0.0.2")
    assert refused(access, "x.test", "::1")
    # a listed name, whatever it resolves to; not its subdomains, not other names
    assert not refused(access, "images.internal", "192.168.7.7")
    assert not refused(access, "Images.Internal.", "192.168.7.7")
    assert refused(access, "cdn.images.internal", "192.168.7.7")
    assert refused(access, "other.internal", "192.168.7.7")
    # a listed network, for any name
    assert not refused(access, "a.test", "10.1.255.255")
    assert refused(access, "a.test", "10.2.0.1")
    assert not refused(access, "a.test", "fd00:1::5")
    assert refused(access, "a.test", "fd00:2::5")


def test_an_allowlist_entry_can_be_an_address_or_network_object() -> None:
    access = URLAccess(allow=[ipaddress.ip_address("10.0.0.1"), ipaddress.ip_network("fd00::/8")])
    assert not refused(access, "a.test", "10.0.0.1")
    assert not refused(access, "a.test", "fd12::1")
    assert refused(access, "a.test", "10.0.0.2")
    assert URLAccess(allow="localhost").allow == ("localhost",)  # one string is one entry


def test_url_access_is_a_hashable_value_with_the_resolver_out_of_its_repr() -> None:
    async def resolver(host: str, port: int) -> list[str]:
        return []

    a, b = URLAccess(allow=["x.test"], resolver=resolver), URLAccess(allow=["x.test"])
    assert hash(a) != hash(b) or a != b
    assert "resolver" not in repr(a)
    assert URLAccess(allow=["10.0.0.0/8"]) == URLAccess(allow=["10.0.0.0/8"])
