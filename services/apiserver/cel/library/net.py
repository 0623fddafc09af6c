"""The ``ip`` and ``cidr`` libraries, with Go's ``net/netip`` rules.

``ip()`` takes an IPv4 or IPv6 address without a zone, not IPv4-mapped (``::ffff:1.2.3.4``),
without leading zeros in IPv4 octets; ``cidr()`` takes such an address, ``/`` and a prefix
length (host bits may be set: ``cidr('192.168.0.1/24').masked()`` clears them). Values carry the
canonical text (RFC 5952 for IPv6, which Python's ``ipaddress`` and Go's ``Addr.String`` agree
on), so ``==`` compares addresses, and a CIDR keeps its unmasked address as upstream's ``Prefix``
does. The predicates follow Go's definitions (``isLinkLocalMulticast`` is ``224.0.0.0/24`` and
``ffx2::/16``), which differ in places from Python's. Parse errors are Go's for IPv4; for
IPv6 the detail after ``ParseAddr("x"):`` is a generic ``unable to parse IP``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from services.apiserver.cel.library import opaque

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ipv4_problem(text: str) -> str | None:
    """Go's parseIPv4Fields' complaint about a dotted address, None if it has none."""
    fields, digits, value = 0, 0, 0
    for i, ch in enumerate(text):
        if ch.isdigit() and ch.isascii():
            if digits == 1 and value == 0:
                return "IPv4 field has octet with leading zero"
            value, digits = value * 10 + int(ch), digits + 1
            if value > 255:
                return "IPv4 field has value >255"
        elif ch == ".":
            if i == 0 or i == len(text) - 1 or text[i - 1] == ".":
                return f"IPv4 field must have at least one digit (at {opaque.go_quote(text[i:])})"
            if fields == 3:
                return "IPv4 address too long"
            fields, digits, value = fields + 1, 0, 0
        else:
            return f"unexpected character (at {opaque.go_quote(text[i:])})"
    return "IPv4 address too short" if fields < 3 else None


def _parse_addr(text: str) -> Address:
    """Go's ``netip.ParseAddr``; its error text (``ParseAddr("x"): ...``) on failure."""
    detail = "unable to parse IP"
    if "%" in text and ":" in text:
        raise opaque.LibraryError(f"IP address {opaque.go_quote(text)} with zone value is not allowed")
    if "." in text and ":" not in text:
        detail = _ipv4_problem(text) or detail
    try:
        addr = ipaddress.ip_address(text)
    except ValueError:
        raise opaque.LibraryError(f"ParseAddr({opaque.go_quote(text)}): {detail}") from None
    return addr


def parse_ip(text: str) -> Address:
    """An address as ``ip()`` accepts it, or upstream's error."""
    try:
        addr = _parse_addr(text)
    except opaque.LibraryError as exc:
        if "zone value" in str(exc):
            raise
        raise opaque.LibraryError(f"IP Address {opaque.go_quote(text)} parse error during conversion from string: {exc}") from None  # fmt: skip
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise opaque.LibraryError(f"IPv4-mapped IPv6 address {opaque.go_quote(text)} is not allowed")
    return addr


def _prefix_problem(text: str) -> tuple[Address, int]:
    """Go's ``netip.ParsePrefix`` (its error text on failure), then upstream's IPv4-mapped check."""
    where = f"netip.ParsePrefix({opaque.go_quote(text)})"
    slash = text.rfind("/")
    if slash < 0:
        raise opaque.LibraryError(f"{where}: no '/'")
    try:
        addr = _parse_addr(text[:slash])
    except opaque.LibraryError as exc:
        raise opaque.LibraryError(f"{where}: {exc}") from None
    bits = text[slash + 1 :]
    if not bits.isascii() or not bits.isdigit() or (len(bits) > 1 and bits[0] == "0"):
        raise opaque.LibraryError(f"{where}: bad bits after slash: {opaque.go_quote(bits)}")
    if int(bits) > addr.max_prefixlen:
        raise opaque.LibraryError(f"{where}: prefix length out of range")
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        raise opaque.LibraryError(f"IPv4-mapped IPv6 address {opaque.go_quote(text)} is not allowed")
    return addr, int(bits)


def parse_cidr(text: str) -> tuple[Address, int]:
    """A prefix as ``cidr()`` accepts it, or upstream's (doubly prefixed) error."""
    try:
        return _prefix_problem(text)
    except opaque.LibraryError as exc:
        prefix = "network address parse error during conversion from string"
        raise opaque.LibraryError(f"{prefix}: {prefix}: {exc}") from None


def _addr(value: Any) -> Address:
    return ipaddress.ip_address(opaque.unwrap(value, opaque.Kind.IP))


def _cidr(value: Any) -> tuple[Address, int]:
    addr, _, bits = opaque.unwrap(value, opaque.Kind.CIDR).rpartition("/")
    return ipaddress.ip_address(addr), int(bits)


def _network(addr: Address, bits: int) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network(f"{addr}/{bits}", strict=False)


def _ip(value: Any) -> dict[int, str]:
    """``ip(<string>)``, and ``<CIDR>.ip()``: one name, two overloads."""
    if opaque.kind_of(value) is opaque.Kind.CIDR:
        return opaque.wrap(opaque.Kind.IP, str(_cidr(value)[0]))
    return opaque.wrap(opaque.Kind.IP, str(parse_ip(opaque.text_argument(value))))


def _make_cidr(text: Any) -> dict[int, str]:
    addr, bits = parse_cidr(opaque.text_argument(text))
    return opaque.wrap(opaque.Kind.CIDR, f"{addr}/{bits}")


def _to_string(value: Any) -> str:
    """``string(<IP>)`` and ``string(<CIDR>)``; the engine's own ``string()`` serves every other type."""
    kind = opaque.kind_of(value)
    if kind in (opaque.Kind.IP, opaque.Kind.CIDR):
        return value[int(kind)]
    raise opaque.LibraryError(opaque.NO_SUCH_OVERLOAD)


def _contains_ip(value: Any, other: Any) -> bool:
    addr = parse_ip(other) if isinstance(other, str) else _addr(other)
    prefix, bits = _cidr(value)
    return addr.version == prefix.version and addr in _network(prefix, bits)


def _contains_cidr(value: Any, other: Any) -> bool:
    inner, inner_bits = parse_cidr(other) if isinstance(other, str) else _cidr(other)
    prefix, bits = _cidr(value)
    if inner.version != prefix.version or inner_bits < bits:
        return False
    return _network(inner, bits) == _network(prefix, bits)


def _masked(value: Any) -> dict[int, str]:
    prefix, bits = _cidr(value)
    return opaque.wrap(opaque.Kind.CIDR, str(_network(prefix, bits)))


def _first_hextet(addr: Address) -> int:
    return int(addr) >> 112 if addr.version == 6 else -1


def _is_loopback(addr: Address) -> bool:
    return addr.packed[0] == 127 if addr.version == 4 else int(addr) == 1


def _is_link_local_unicast(addr: Address) -> bool:
    return addr.packed[:2] == b"\xa9\xfe" if addr.version == 4 else _first_hextet(addr) & 0xFFC0 == 0xFE80


def _is_multicast(addr: Address) -> bool:
    return addr.packed[0] & 0xF0 == 0xE0 if addr.version == 4 else addr.packed[0] == 0xFF


def _is_global_unicast(addr: Address) -> bool:
    if addr.version == 4 and addr.packed in (b"\0\0\0\0", b"\xff\xff\xff\xff"):
        return False
    bad = int(addr) == 0 or _is_loopback(addr) or _is_multicast(addr) or _is_link_local_unicast(addr)
    return not bad


def _link_local_multicast(addr: Address) -> bool:
    return addr.packed[:3] == b"\xe0\0\0" if addr.version == 4 else _first_hextet(addr) & 0xFF0F == 0xFF02


def _canonical(text: Any) -> bool:
    raw = opaque.text_argument(text)
    return str(parse_ip(raw)) == raw


FUNCTIONS: dict[str, Callable[..., Any]] = {
    "ip": _ip,
    "isIP": lambda text: opaque.parses(parse_ip, opaque.text_argument(text)),
    "ip.isCanonical": _canonical,
    "family": lambda value: _addr(value).version,
    "isUnspecified": lambda value: int(_addr(value)) == 0,
    "isLoopback": lambda value: _is_loopback(_addr(value)),
    "isLinkLocalMulticast": lambda value: _link_local_multicast(_addr(value)),
    "isLinkLocalUnicast": lambda value: _is_link_local_unicast(_addr(value)),
    "isGlobalUnicast": lambda value: _is_global_unicast(_addr(value)),
    "cidr": _make_cidr,
    "isCIDR": lambda text: opaque.parses(parse_cidr, opaque.text_argument(text)),
    "containsIP": _contains_ip,
    "containsCIDR": _contains_cidr,
    "prefixLength": lambda value: _cidr(value)[1],
    "masked": _masked,
    "string": _to_string,
}
