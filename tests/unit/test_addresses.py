"""Which addresses a webhook may reach: every spelling of an address, judged the same."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pixverse_tracker.rules.addresses import (
    AddressPolicy,
    Kind,
    classify,
    literal_address,
    never_allowed,
    parse_allowlist,
)


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("0x7F000001", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("LOCALHOST.", "127.0.0.1"),
        ("app.localhost", "127.0.0.1"),
        ("[::1]", "::1"),
        ("::ffff:169.254.169.254", "::ffff:169.254.169.254"),
        ("10.0.0.5", "10.0.0.5"),
        ("0xa9fea9fe", "169.254.169.254"),
        ("169.254.43518", "169.254.169.254"),
    ],
)
def test_every_spelling_a_resolver_accepts_is_read_as_the_address_it_means(
    host: str, address: str
) -> None:
    assert literal_address(host) == ipaddress.ip_address(address)


@pytest.mark.parametrize("host", ["example.com", "1.2.3.4.5", "08.1", "0x.y", "256.1.1.1", ""])
def test_names_and_impossible_numbers_are_left_to_the_resolver(host: str) -> None:
    assert literal_address(host) is None


@pytest.mark.parametrize(
    ("address", "kind", "words"),
    [
        ("169.254.169.254", Kind.FORBIDDEN, "cloud metadata"),
        ("fd00:ec2::254", Kind.FORBIDDEN, "cloud metadata"),
        ("100.100.100.200", Kind.FORBIDDEN, "cloud metadata"),
        ("::ffff:169.254.169.254", Kind.FORBIDDEN, "as 169.254.169.254"),
        ("64:ff9b::a9fe:a9fe", Kind.FORBIDDEN, "as 169.254.169.254"),
        ("2002:a9fe:a9fe::1", Kind.FORBIDDEN, "as 169.254.169.254"),
        ("169.254.1.1", Kind.FORBIDDEN, "link-local"),
        ("fe80::1", Kind.FORBIDDEN, "link-local"),
        ("224.0.0.1", Kind.FORBIDDEN, "multicast"),
        ("ff02::1", Kind.FORBIDDEN, "multicast"),
        ("0.0.0.0", Kind.FORBIDDEN, "unspecified"),
        ("0.1.2.3", Kind.FORBIDDEN, "unspecified"),
        ("::", Kind.FORBIDDEN, "unspecified"),
        ("255.255.255.255", Kind.FORBIDDEN, "broadcast"),
        ("240.0.0.1", Kind.FORBIDDEN, "reserved"),
        ("127.0.0.1", Kind.PRIVATE, "loopback"),
        ("::1", Kind.PRIVATE, "loopback"),
        ("::ffff:127.0.0.1", Kind.PRIVATE, "loopback"),
        ("10.0.0.5", Kind.PRIVATE, "private"),
        ("172.16.0.1", Kind.PRIVATE, "private"),
        ("192.168.1.1", Kind.PRIVATE, "private"),
        ("fd12::1", Kind.PRIVATE, "private"),
        ("100.64.0.1", Kind.PRIVATE, "not globally routable"),
        ("8.8.8.8", Kind.PUBLIC, "public"),
        ("2606:4700::1111", Kind.PUBLIC, "public"),
        ("::ffff:8.8.8.8", Kind.PUBLIC, "public"),
    ],
)
def test_addresses_are_public_private_or_forbidden(address: str, kind: Kind, words: str) -> None:
    got, what = classify(ipaddress.ip_address(address))
    assert got is kind and words in what


@pytest.mark.parametrize(
    "host",
    ["169.254.169.254", "[::ffff:169.254.169.254]", "0xa9fea9fe", "[fd00:ec2::254]", "0"],
)
def test_a_literal_forbidden_host_is_never_allowed_with_one_clear_reason(host: str) -> None:
    reason = never_allowed(host)
    assert reason is not None and reason.endswith("which is never allowed")


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "10.0.0.5", "example.com", "[::1]"])
def test_a_private_or_named_host_is_left_to_the_settings_and_the_connect_time_check(
    host: str,
) -> None:
    assert never_allowed(host) is None


def test_private_addresses_need_the_setting_or_the_allowlist_and_forbidden_ones_need_nothing() -> (
    None
):
    loopback = ipaddress.ip_address("127.0.0.1")
    metadata = ipaddress.ip_address("169.254.169.254")
    refusal = AddressPolicy().refusal("127.0.0.1", loopback)
    assert refusal is not None and not refusal.permanent
    assert "TRACKER_WEBHOOK_ALLOW_PRIVATE=true" in refusal.reason
    assert AddressPolicy(allow_private=True).refusal("127.0.0.1", loopback) is None
    listed = AddressPolicy.from_settings(False, "127.0.0.0/8, hooks.internal")
    assert listed.refusal("127.0.0.1", loopback) is None
    assert listed.refusal("hooks.internal", ipaddress.ip_address("10.9.9.9")) is None
    assert listed.refusal("other.internal", ipaddress.ip_address("10.9.9.9")) is not None
    assert listed.refusal("x", ipaddress.ip_address("::ffff:127.0.0.1")) is None
    for policy in (
        AddressPolicy(allow_private=True),
        AddressPolicy.from_settings(True, "0.0.0.0/0"),
    ):
        refusal = policy.refusal("169.254.169.254", metadata)
        assert refusal is not None and refusal.permanent


def test_the_allowlist_reads_networks_addresses_and_hosts_and_names_a_bad_entry() -> None:
    networks, hosts = parse_allowlist("10.1.0.0/16, 192.168.5.7 [fd00::1] 127.1 hooks.internal.")
    assert [str(n) for n in networks] == [
        "10.1.0.0/16",
        "192.168.5.7/32",
        "fd00::1/128",
        "127.0.0.1/32",
    ]
    assert hosts == {"hooks.internal"}
    assert parse_allowlist("") == ((), frozenset())
    with pytest.raises(ValueError, match="'10.0.0.0/33' is neither"):
        parse_allowlist("10.0.0.0/8,10.0.0.0/33")


@given(st.integers(min_value=0, max_value=2**32 - 1))
def test_the_integer_and_hex_spellings_of_any_ipv4_address_mean_that_address(value: int) -> None:
    address = ipaddress.IPv4Address(value)
    assert literal_address(str(value)) == address
    assert literal_address(hex(value)) == address
    a, b, c, d = address.packed
    assert literal_address(f"{a}.{(b << 16) | (c << 8) | d}") == address
