"""Which addresses mmstream may download from on a user's behalf (pure: no I/O).

A URL in a user's message must never reach inside the server's own network
(server-side request forgery). These rules decide, for a URL and for each
address its host resolves to, whether a download may go ahead:

- only ``http`` and ``https``, and no credentials in the URL;
- by default, no loopback, private (RFC 1918, IPv6 unique-local), link-local
  (169.254.0.0/16 with the cloud metadata service, ``fe80::/10``), carrier-grade
  NAT, multicast, unspecified, reserved, documentation or benchmarking address,
  in every spelling a resolver accepts (``127.1``, ``2130706433``, ``0x7f.1``,
  ``[::1]``, ``[::ffff:127.0.0.1]``), IPv4 inside IPv6 included (mapped,
  compatible, NAT64, 6to4, Teredo);
- a [`URLAccess`][mmstream.media.netguard.URLAccess] relaxes them: private
  addresses on, or an allowlist of hosts and networks admitting exactly what it
  lists.

The I/O half (resolving once and connecting to the checked address) is in
[`mmstream.media.download`][mmstream.media.download].
"""

from __future__ import annotations

import ipaddress
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, final
from urllib.parse import unquote, urlsplit

from attrs import field, frozen

from mmstream.errors import ForbiddenURLError

__all__ = [
    "Address",
    "Denied",
    "Refusal",
    "Resolver",
    "URLAccess",
    "check_address",
    "check_url",
    "classify",
    "is_localhost",
    "literal_address",
    "redact_url",
]

Address = ipaddress.IPv4Address | ipaddress.IPv6Address

#: resolves ``(host, port)`` to its addresses (text); injectable, e.g. for tests.
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@final
@frozen
class Refusal:
    """Why an address is refused: the rule's name and what the range is."""

    rule: str
    description: str


_LOOPBACK = Refusal("loopback", "a loopback address")
_PRIVATE = Refusal("private", "a private-network address")

#: (network, refusal), in the order they are checked; first match wins.
_RULES: tuple[tuple[_Network, Refusal], ...] = tuple(
    (ipaddress.ip_network(net), refusal)
    for net, refusal in (
        ("0.0.0.0/8", Refusal("unspecified", "an unspecified address ('this network')")),
        ("127.0.0.0/8", _LOOPBACK),
        ("10.0.0.0/8", Refusal("private", "a private-network address (RFC 1918)")),
        ("172.16.0.0/12", Refusal("private", "a private-network address (RFC 1918)")),
        ("192.168.0.0/16", Refusal("private", "a private-network address (RFC 1918)")),
        ("100.64.0.0/10", Refusal("cgnat", "a carrier-grade NAT address (RFC 6598)")),
        (
            "169.254.0.0/16",
            Refusal("link-local", "a link-local address (where cloud metadata services live)"),
        ),
        ("192.0.0.0/24", Refusal("reserved", "an IETF protocol assignment (reserved)")),
        ("192.0.2.0/24", Refusal("documentation", "a documentation address (RFC 5737)")),
        ("198.51.100.0/24", Refusal("documentation", "a documentation address (RFC 5737)")),
        ("203.0.113.0/24", Refusal("documentation", "a documentation address (RFC 5737)")),
        ("192.88.99.0/24", Refusal("reserved", "a 6to4 relay address (reserved)")),
        ("198.18.0.0/15", Refusal("benchmarking", "a benchmarking address (RFC 2544)")),
        ("224.0.0.0/4", Refusal("multicast", "a multicast address")),
        ("240.0.0.0/4", Refusal("reserved", "a reserved address (240.0.0.0/4, broadcast)")),
        ("::/128", Refusal("unspecified", "the unspecified address")),
        ("::1/128", _LOOPBACK),
        ("64:ff9b:1::/48", Refusal("private", "a local-use NAT64 address (RFC 8215)")),
        ("100::/64", Refusal("reserved", "a discard-only address (RFC 6666)")),
        ("2001:db8::/32", Refusal("documentation", "a documentation address (RFC 3849)")),
        ("3fff::/20", Refusal("documentation", "a documentation address (RFC 9637)")),
        ("2001:2::/48", Refusal("benchmarking", "a benchmarking address (RFC 5180)")),
        ("fc00::/7", Refusal("private", "a unique-local address (IPv6 private network)")),
        ("fe80::/10", Refusal("link-local", "a link-local address")),
        ("fec0::/10", Refusal("private", "a site-local address (deprecated, private)")),
        ("ff00::/8", Refusal("multicast", "a multicast address")),
    )
)

#: the classes that ``allow_private`` admits (never link-local, multicast, reserved, ...).
PRIVATE_RULES = frozenset({"loopback", "private", "cgnat"})

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_COMPATIBLE = ipaddress.ip_network("::/96")


def _embedded(address: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address] | None:
    """The IPv4 address an IPv6 address carries, and how (mapped, NAT64, 6to4, ...)."""
    if address.ipv4_mapped is not None:
        return "IPv4-mapped", address.ipv4_mapped
    if address in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address in _COMPATIBLE and int(address) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "6to4", address.sixtofour
    if address.teredo is not None:
        return "Teredo", address.teredo[1]
    return None


def classify(address: Address) -> Refusal | None:
    """The rule that refuses ``address`` by default, or ``None`` for a public address."""
    if isinstance(address, ipaddress.IPv6Address):
        if address.scope_id:
            address = ipaddress.IPv6Address(address.compressed.partition("%")[0])
        carried = _embedded(address)
        if carried is not None:
            how, inner = carried
            refusal = classify(inner)
            if refusal is not None:
                return Refusal(refusal.rule, f"{refusal.description}, {how} in IPv6 ({inner})")
            return None
    for network, refusal in _RULES:
        if address.version == network.version and address in network:
            return refusal
    if not address.is_global:  # whatever IANA lists as not globally reachable
        return Refusal("reserved", "an address that is not globally reachable (reserved)")
    return None


def _parse_part(text: str) -> int | None:
    """One part of an inet_aton address: decimal, ``0x`` hexadecimal or ``0`` octal."""
    if not text:
        return None
    try:
        if text[:2].lower() == "0x":
            return int(text[2:], 16) if text[2:] else 0
        if len(text) > 1 and text[0] == "0":
            return int(text, 8)
        return int(text, 10) if text.isdigit() else None
    except ValueError:
        return None


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` spells in the forms C's inet_aton accepts (``127.1``, ...)."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values = [_parse_part(part) for part in parts]
    if any(value is None for value in values):
        return None
    numbers = [v for v in values if v is not None]
    *head, last = numbers
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(numbers)):
        return None
    value = 0
    for v in head:
        value = value * 256 + v
    value = value * 256 ** (5 - len(numbers)) + last
    return ipaddress.IPv4Address(value)


def literal_address(host: str) -> Address | None:
    """The address a URL's host names literally, in any spelling; ``None`` for a name.

    Args:
        host: the host part of a URL (brackets and a ``%25`` zone are accepted).

    Returns:
        The address (an IPv4-mapped IPv6 address as it is), or ``None`` when
        ``host`` is a name that must be resolved.
    """
    text = unquote(host.strip()).rstrip(".")
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
    if ":" in text:
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            return None
    return _inet_aton(text)


def is_localhost(host: str) -> bool:
    """Whether ``host`` is ``localhost`` or a name under it (always loopback, RFC 6761)."""
    name = host.strip().rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def _to_entry(value: str | _Network | Address) -> str | _Network:
    """One allowlist entry: a host name (lower case) or a network (an address is a /32, /128)."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, (ipaddress.IPv4Address, ipaddress.IPv6Address)):
        return ipaddress.ip_network(value)
    text = str(value).strip()
    if "/" in text:
        try:
            return ipaddress.ip_network(text, strict=False)
        except ValueError:
            pass
    address = literal_address(text)
    if address is not None:
        return ipaddress.ip_network(_unmapped(address))
    return text.rstrip(".").lower()


def _to_allow(values: Iterable[str | _Network | Address]) -> tuple[str | _Network, ...]:
    if isinstance(values, str):
        values = [values]
    return tuple(_to_entry(value) for value in values)


def _unmapped(address: Address) -> Address:
    """An IPv4-mapped IPv6 address as the IPv4 address it is; any other unchanged."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@final
@frozen(kw_only=True)
class URLAccess:
    """Where mmstream may download from on a user's behalf (images today, documents next).

    By default only public addresses: a URL whose host is, or resolves to, a
    loopback, private, link-local, carrier-grade NAT, multicast, unspecified,
    reserved, documentation or benchmarking address is refused with
    [`ForbiddenURLError`][mmstream.errors.ForbiddenURLError] before any connection.

    Attributes:
        allow_private: also admit loopback, private (RFC 1918, IPv6 unique-local)
            and carrier-grade NAT addresses (local development, on-premise
            servers). Link-local (cloud metadata), multicast and reserved
            addresses stay refused unless listed in ``allow``.
        allow: host names and networks admitted whatever they are: ``"localhost"``,
            ``"images.internal"``, ``"10.1.0.0/16"``, ``"127.0.0.1"``. A name
            admits exactly that name (not its subdomains, not other names for
            the same address); a network admits addresses inside it.
        resolver: resolves a host name to addresses (``None``: the system's).
            The address it returns is the one connected to.

    Example:
        Per call, or for every call of a provider through its image policy::

            await llm.acomplete("...", docs, url_access=URLAccess(allow=["10.1.0.0/16"]))
            policy = attrs.evolve(OLLAMA_POLICY, url_access=URLAccess(allow_private=True))
    """

    allow_private: bool = False
    allow: tuple[str | _Network, ...] = field(default=(), converter=_to_allow)
    resolver: Resolver | None = field(default=None, repr=False, hash=False)

    def admits_host(self, host: str) -> bool:
        """Whether ``host`` (a name) is listed, so that its addresses are not checked."""
        name = host.strip().rstrip(".").lower()
        return any(isinstance(entry, str) and entry == name for entry in self.allow)

    def admits(self, address: Address) -> bool:
        """Whether ``address`` lies in a listed network."""
        plain = _unmapped(address)
        return any(
            not isinstance(entry, str) and entry.version == plain.version and plain in entry
            for entry in self.allow
        )


#: the default: public addresses only.
PUBLIC_ONLY = URLAccess()


def redact_url(url: str) -> str:
    """``url`` as it may appear in errors and logs: no credentials, query or fragment."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<an unparsable URL>"
    host = parts.netloc.rpartition("@")[2]
    tail = "?…" if parts.query else ""
    shown = f"{parts.scheme}://{host}{parts.path}{tail}" if parts.scheme else url.split("?")[0]
    return shown if len(shown) <= 120 else shown[:117] + "..."


def _how(refusal: Refusal, shown: str) -> str:
    option = f"url_access=URLAccess(allow=[{shown!r}])"
    if refusal.rule in PRIVATE_RULES:
        option += " (or allow_private=True)"
    return f"to allow it, pass {option} as a call option or in the image policy"


@final
@frozen
class Denied:
    """A refused download: the rule's name and the reason, worded for an error message."""

    rule: str
    reason: str

    def error(self, subject: str, url: str, **context: Any) -> ForbiddenURLError:
        """The typed error, ``subject`` (say, ``"image 2 (http://...)"``) first."""
        return ForbiddenURLError(
            f"{subject} is not downloaded: {self.reason}",
            rule=self.rule,
            url=redact_url(url),
            **context,
        )


def check_address(host: str, address: Address, access: URLAccess) -> Denied | None:
    """Why ``address`` (what ``host`` is or resolves to) is refused, or ``None`` when allowed."""
    if access.admits_host(host) or access.admits(address):
        return None
    refusal = classify(address)
    if refusal is None or (access.allow_private and refusal.rule in PRIVATE_RULES):
        return None
    if literal_address(host) is not None:
        what, shown = f"its host {address} is", str(_unmapped(address))
    else:
        what, shown = f"its host {host} resolves to {address},", host
    return Denied(
        refusal.rule,
        f"{what} {refusal.description}; mmstream does not fetch from inside the server's "
        f"network by default ({_how(refusal, shown)})",
    )


def check_url(url: str, access: URLAccess) -> tuple[str, Denied | None]:
    """Check what a URL says before any I/O: its host (to resolve) and any refusal.

    Refuses credentials in the URL, and a host that is a refused address literally
    (any spelling) or a ``localhost`` name, unless ``access`` admits it. A name is
    checked again, address by address, when it is resolved.

    Raises:
        ValueError: the URL is not http(s) or has no host (the caller words the error).
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("only http and https URLs are downloaded")
    host = parts.hostname or ""
    if not host:
        raise ValueError("the URL has no host")
    if "@" in parts.netloc:
        return host, Denied(
            "credentials",
            "the URL carries credentials (user:password@); mmstream sends none to an "
            "image host, so put no credentials in a URL it downloads",
        )
    address = literal_address(host)
    if address is None and is_localhost(host):
        address = ipaddress.IPv4Address("127.0.0.1")
    return host, None if address is None else check_address(host, address, access)
