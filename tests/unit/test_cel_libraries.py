"""Kubernetes' CEL libraries (quantity, url, ip, cidr, semver, format): the examples of upstream's
documentation (k8s.io/apiserver/pkg/cel/library and "CEL in Kubernetes"), run as CRD rules."""

from __future__ import annotations

from typing import Any

import pytest

from services.apiserver import crds, validation

PROPS = {"value": {"type": "string"}, "other": {"type": "string"}}


def schema(*rules: dict[str, Any]) -> dict[str, Any]:
    spec = {"type": "object", "properties": PROPS, "x-kubernetes-validations": list(rules)}
    return {"type": "object", "properties": {"spec": spec}}


def messages(rule: dict[str, Any], **spec: Any) -> list[str]:
    obj = {"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w"}, "spec": spec}
    return [f"{c.field}: {c.message}" for c in validation._validate_custom(schema(rule), obj)]


def holds(rule: str, **spec: Any) -> bool:
    """Whether ``rule`` passes on an object with ``spec`` (a runtime error fails the test)."""
    found = messages({"rule": rule}, **spec)
    assert all("failed rule" in m for m in found), found
    return not found


def error_of(rule: str, **spec: Any) -> str:
    """The runtime error of ``rule``, as the 422 cause words it."""
    (found,) = messages({"rule": rule}, **spec)
    prefix = 'spec: Invalid value: "object": '
    assert found.startswith(prefix)
    return found[len(prefix) :].removesuffix(f" evaluating rule: {rule}")


QUANTITY_TRUE = [
    "isQuantity('1.3G')",
    "isQuantity('1.3Gi')",
    "!isQuantity('1,3G')",
    "isQuantity('10000k')",
    "!isQuantity('200K')",
    "!isQuantity('Three')",
    "!isQuantity('Mi')",
    "quantity('50000000G').isInteger()",
    "!quantity('9999999999999999999999999999999999999G').isInteger()",
    "quantity('50k').asInteger() == 50000",
    "quantity('50k').sub(20000).asApproximateFloat() == 30000.0",
    "quantity('50k').add(quantity('20k')) == quantity('70k')",
    "quantity('50k').add(20) == quantity('50020')",
    "quantity('50k').sub(quantity('20k')) == quantity('30k')",
    "quantity('50k').sub(20000) == quantity('30k')",
    "quantity('50k').add(20).sub(quantity('100k')).sub(-50000) == quantity('20')",
    "quantity('200M').compareTo(quantity('0.2G')) == 0",
    "quantity('50M').compareTo(quantity('50Mi')) == -1",
    "quantity('50Mi').compareTo(quantity('50M')) == 1",
    "quantity('150Mi').isGreaterThan(quantity('100Mi'))",
    "!quantity('50Mi').isGreaterThan(quantity('100Mi'))",
    "quantity('50M').isLessThan(quantity('100M'))",
    "!quantity('100M').isLessThan(quantity('50M'))",
    "quantity('1.5').sign() == 1 && quantity('-100m').sign() == -1 && quantity('0').sign() == 0",
    "quantity('1') == quantity('1000m')",
]

URL_TRUE = [
    "isURL('https://user:pass@example.com:80/path?query=val#fragment')",
    "isURL('/absolute-path')",
    "!isURL('https://a:b:c/')",
    "!isURL('../relative-path')",
    "url('/path').getScheme() == ''",
    "url('https://example.com/').getScheme() == 'https'",
    "url('https://example.com:80/').getHost() == 'example.com:80'",
    "url('https://example.com/').getHost() == 'example.com'",
    "url('https://[::1]:80/').getHost() == '[::1]:80'",
    "url('https://[::1]/').getHost() == '[::1]'",
    "url('/path').getHost() == ''",
    "url('https://example.com:80/').getHostname() == 'example.com'",
    "url('https://127.0.0.1:80/').getHostname() == '127.0.0.1'",
    "url('https://[::1]:80/').getHostname() == '::1'",
    "url('https://example.com:80/').getPort() == '80'",
    "url('https://example.com/').getPort() == ''",
    "url('https://example.com/path').getEscapedPath() == '/path'",
    "url('https://example.com/path with spaces/').getEscapedPath() == '/path%20with%20spaces/'",
    "url('https://example.com').getEscapedPath() == ''",
    "url('https://example.com/path?k1=a&k2=b&k2=c').getQuery() == {'k1': ['a'], 'k2': ['b', 'c']}",
    "url('https://example.com/path?key with spaces=value with spaces').getQuery() == {'key with spaces': ['value with spaces']}",  # noqa: E501
    "url('https://example.com/path?').getQuery() == {}",
    "url('https://example.com/path').getQuery() == {}",
]

NET_TRUE = [
    "isIP('127.0.0.1') && isIP('::1') && !isIP('127.0.0.256') && !isIP(':::1')",
    "!isIP('::ffff:1.2.3.4') && !isIP('fe80::1%eth0') && !isIP('01.2.3.4')",
    "ip.isCanonical('127.0.0.1') && ip.isCanonical('2001:db8::abcd')",
    "!ip.isCanonical('2001:DB8::ABCD') && !ip.isCanonical('2001:db8::0:0:0:abcd')",
    "ip('127.0.0.1').family() == 4 && ip('::1').family() == 6",
    "ip('0.0.0.0').isUnspecified() && !ip('127.0.0.1').isUnspecified() && ip('::').isUnspecified()",
    "ip('127.0.0.1').isLoopback() && !ip('192.168.0.1').isLoopback() && ip('::1').isLoopback()",
    "ip('224.0.0.1').isLinkLocalMulticast() && !ip('224.0.1.1').isLinkLocalMulticast()",
    "ip('ff02::1').isLinkLocalMulticast() && !ip('fd00::1').isLinkLocalMulticast()",
    "ip('169.254.169.254').isLinkLocalUnicast() && !ip('192.168.0.1').isLinkLocalUnicast()",
    "ip('fe80::1').isLinkLocalUnicast() && !ip('fd80::1').isLinkLocalUnicast()",
    "ip('192.168.0.1').isGlobalUnicast() && !ip('255.255.255.255').isGlobalUnicast()",
    "ip('2001:db8::abcd').isGlobalUnicast() && !ip('ff00::1').isGlobalUnicast()",
    "ip('::0') == ip('::') && string(ip('2001:DB8::1')) == '2001:db8::1'",
    "isCIDR('192.168.0.0/16') && isCIDR('::1/128') && !isCIDR('192.168.0.0/33') && !isCIDR('::1/129')",
    "cidr('192.168.0.0/24').containsIP(ip('192.168.0.1')) && !cidr('192.168.0.0/24').containsIP(ip('192.168.1.1'))",
    "cidr('192.168.0.0/24').containsIP('192.168.0.1') && !cidr('192.168.0.0/24').containsIP('192.168.1.1')",
    "cidr('192.168.0.0/16').containsCIDR(cidr('192.168.10.0/24'))",
    "!cidr('192.168.1.0/24').containsCIDR(cidr('192.168.2.0/24'))",
    "cidr('192.168.0.0/16').containsCIDR('192.168.10.0/24') && !cidr('192.168.1.0/24').containsCIDR('192.168.2.0/24')",
    "cidr('192.168.0.1/24').ip() == ip('192.168.0.1') && cidr('192.168.0.1/24').ip().family() == 4",
    "cidr('::1/128').ip() == ip('::1') && cidr('::1/128').ip().family() == 6",
    "cidr('192.168.0.0/24').masked() == cidr('192.168.0.0/24')",
    "cidr('192.168.0.1/24').masked() == cidr('192.168.0.0/24')",
    "cidr('192.168.0.0/24') == cidr('192.168.0.0/24').masked()",
    "cidr('192.168.0.1/24') != cidr('192.168.0.1/24').masked()",
    "cidr('192.168.0.0/16').prefixLength() == 16 && cidr('::1/128').prefixLength() == 128",
    "string(cidr('192.168.0.1/24')) == '192.168.0.1/24'",
]

SEMVER_TRUE = [
    "isSemver('1.0.0') && !isSemver('hello') && !isSemver('v1.0')",
    "isSemver('v1.0', true) && isSemver('01.01.01', true)",
    "semver('v1.0.0', true) == semver('1.0.0') && semver('1.0', true) == semver('1.0.0')",
    "semver('01.01.01', true) == semver('1.1.1')",
    "semver('1.2.3').major() == 1 && semver('1.2.3').minor() == 2 && semver('1.2.3').patch() == 3",
    "semver('1.2.3').compareTo(semver('1.2.3')) == 0",
    "semver('1.2.3').compareTo(semver('2.0.0')) == -1",
    "semver('1.2.3').compareTo(semver('0.1.2')) == 1",
    "semver('1.0.0-alpha').isLessThan(semver('1.0.0-alpha.1'))",
    "semver('1.0.0-alpha.beta').isLessThan(semver('1.0.0-beta.2'))",
    "semver('1.0.0-beta.2').isLessThan(semver('1.0.0-beta.11')) && semver('1.0.0-rc.1').isLessThan(semver('1.0.0'))",
    "semver('2.0.0').isGreaterThan(semver('1.9.9')) && semver('1.0.0+build.1') == semver('1.0.0')",
]

FORMAT_TRUE = [
    "!format.dns1123Label().validate('my-label-name').hasValue()",
    "!format.dns1123Subdomain().validate('apiextensions.k8s.io').hasValue()",
    "!format.dns1035Label().validate('my-label-name').hasValue()",
    "!format.qualifiedName().validate('apiextensions.k8s.io/v1beta1').hasValue()",
    "!format.dns1123LabelPrefix().validate('my-label-prefix-').hasValue()",
    "!format.dns1123SubdomainPrefix().validate('mysubdomain.prefix.-').hasValue()",
    "!format.dns1035LabelPrefix().validate('my-label-prefix-').hasValue()",
    "!format.uri().validate('http://example.com').hasValue()",
    "!format.uuid().validate('123e4567-e89b-12d3-a456-426614174000').hasValue()",
    "!format.byte().validate('aGVsbG8=').hasValue()",
    "!format.date().validate('2021-01-01').hasValue()",
    "!format.datetime().validate('2021-01-01T00:00:00Z').hasValue()",
    "format.dns1123Label().validate('Not_A_Label').hasValue() && format.dns1035Label().validate('1abc').hasValue()",
    "format.uuid().validate('nope').value() == ['does not match the UUID format']",
    "format.byte().validate('!!').value() == ['invalid base64'] && format.date().validate('2021-13-01').hasValue()",
    "format.named('dns1123Label').hasValue() && !format.named('nope').hasValue()",
    "format.named('dns1123Label').value().validate('a.b').value() == ['must not contain dots']",
]


@pytest.mark.parametrize("rule", QUANTITY_TRUE + URL_TRUE + NET_TRUE + SEMVER_TRUE + FORMAT_TRUE)
def test_documented_examples(rule: str) -> None:
    assert holds(rule)
    assert not holds(f"!({rule})")


def test_rules_on_fields() -> None:
    rule = "quantity(self.value).isLessThan(quantity(self.other))"
    assert holds(rule, value="500Mi", other="1Gi")
    assert not holds(rule, value="2Gi", other="1Gi")
    rule = "cidr(self.other).containsIP(self.value)"
    assert holds(rule, value="10.43.0.10", other="10.43.0.0/16")
    assert not holds(rule, value="10.44.0.10", other="10.43.0.0/16")


def test_messages_from_the_format_library() -> None:
    rule = {
        "rule": "!format.dns1123Label().validate(self.value).hasValue()",
        "messageExpression": "format.dns1123Label().validate(self.value).value().join(', ')",
    }
    assert messages(rule, value="my-name") == []
    assert messages(rule, value="My_Name") == [
        'spec: Invalid value: "object": a lowercase RFC 1123 label must consist of lower case alphanumeric '
        "characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or "
        "'123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')"
    ]


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ("quantity('200K').sign() == 1", "unable to parse quantity's suffix"),
        (
            "quantity('Three').sign() == 1",
            "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
        ),  # noqa: E501
        (
            "quantity('9999999999999999999999999999999999999G').asInteger() > 0",
            "cannot convert value to integer",
        ),
        (
            "url('../relative-path').getScheme() == ''",
            'URL parse error during conversion from string: parse "../relative-path": invalid URI for request',
        ),  # noqa: E501
        (
            "url('https://a:b:c/').getScheme() == ''",
            'URL parse error during conversion from string: parse "https://a:b:c/": invalid port ":c" after host',
        ),  # noqa: E501
        (
            "ip('127.0.0.256').family() == 4",
            'IP Address "127.0.0.256" parse error during conversion from string: ParseAddr("127.0.0.256"): IPv4 field has value >255',
        ),  # noqa: E501
        ("ip('::ffff:1.2.3.4').family() == 6", 'IPv4-mapped IPv6 address "::ffff:1.2.3.4" is not allowed'),
        ("ip('fe80::1%eth0').family() == 6", 'IP address "fe80::1%eth0" with zone value is not allowed'),
        (
            "cidr('192.168.0.0/33').prefixLength() > 0",
            'network address parse error during conversion from string: network address parse error during conversion from string: netip.ParsePrefix("192.168.0.0/33"): prefix length out of range',
        ),  # noqa: E501
        ("semver('v1.0.0').major() == 1", 'Invalid character(s) found in major number "v1"'),
        ("semver('1.0').major() == 1", "No Major.Minor.Patch elements found"),
        ("semver('01.0.0').major() == 1", 'Major number must not contain leading zeroes "01"'),
    ],
)
def test_documented_errors(rule: str, error: str) -> None:
    assert error_of(rule) == error


def test_a_method_of_another_type_is_no_such_overload() -> None:
    rule = "quantity('1').getHost() == ''"
    assert messages({"rule": rule}) == [
        "spec: Invalid value: \"object\": 'no such overload': call arguments did not match a supported "
        f"operator, function or macro signature for rule: {rule}"
    ]


def crd_errors(rule: str) -> list[str]:
    spec = {"versions": [{"name": "v1", "schema": {"openAPIV3Schema": schema({"rule": rule})}}]}
    return [f"{c.field}: {c.message}" for c in crds.validate_rules({"spec": spec})]


def test_library_functions_compile_at_crd_time() -> None:
    for rule in ("isQuantity(self.value)", "format.dns1123Label().validate(self.value).hasValue()",
                 "ip.isCanonical(self.value)", "format.named(self.value).hasValue()",
                 "strings.quote(self.value) != ''", "'%s'.format([self.value]) != ''"):  # fmt: skip
        assert crd_errors(rule) == [], rule
    (found,) = crd_errors("format.nope().validate(self.value).hasValue()")
    assert "undeclared reference to 'format' (in container '')" in found


STRING_FORMAT_TRUE = [
    "'%s and %d'.format(['a', 3]) == 'a and 3'",
    "'%.2f|%e|%x|%X|%o|%b|%%'.format([3.14159, 1000.0, 255, 'hi', 8, 5]) == '3.14|1.000000e+03|ff|6869|10|101|%'",
    "'%f'.format([2]) == '2.000000'",
    "'%s'.format([[1, 'a', null, true]]) == '[1, \"a\", null, true]'",
    "'%s'.format([{'b': 1, 'a': 'x'}]) == '{\"a\": \"x\", \"b\": 1}'",
    "'%s'.format([duration('1h')]) == '3600s'",
    "'%s'.format([timestamp('2023-02-03T23:31:20Z')]) == '2023-02-03T23:31:20Z'",
    "strings.quote('a\\nb\"c') == '\"a\\\\nb\\\\\"c\"'",
    "strings.quote('') == '\"\"'",
    "self.value.format([self.other]) == 'hello world'",
]


@pytest.mark.parametrize("rule", STRING_FORMAT_TRUE)
def test_string_format_and_quote(rule: str) -> None:
    assert holds(rule, value="hello %s", other="world")
    assert not holds(f"!({rule})", value="hello %s", other="world")


@pytest.mark.parametrize(
    ("rule", "error"),
    [
        ("'%d'.format([1.5]) == ''", "decimal clause can only be used on integers, was given double"),
        ("'%s %s'.format([1]) == ''", "index 1 out of range"),
        ("'%q'.format([1]) == ''", 'could not parse formatting clause: unrecognized formatting clause "q"'),
    ],
)
def test_string_format_errors(rule: str, error: str) -> None:
    assert error_of(rule) == error
