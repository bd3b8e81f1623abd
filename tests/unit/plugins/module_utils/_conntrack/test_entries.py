"""Unit tests of _ct_entries on ctnetlink dumps recorded from a real kernel (Linux 6.18).

fixtures/entries/dump_*.hex are the datagrams of one dump each; dump_*.txt is ``conntrack -L`` of the same table
read right after (fixtures/entries/record.py re-records both). The decoder is checked against conntrack-tools'
view entry by entry, then filters, groups, NAT view and malformed input are checked on the same bytes.
"""

import os
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import entries as E
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import entry_scan

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures", "entries")


def load_dump(name):
    with open(os.path.join(FIXTURES, name + ".hex")) as handle:
        return [bytes.fromhex(line.strip()) for line in handle if line.strip()]


def load_oracle(name):
    with open(os.path.join(FIXTURES, name + ".txt")) as handle:
        return [parse_conntrack_line(line) for line in handle if line.strip()]


def parse_conntrack_line(line):
    tokens = line.split()
    entry = {"proto": tokens[0], "timeout": int(tokens[2]), "state": None, "assured": False, "unreplied": False,
             "mark": 0, "zone": 0}
    rest = tokens[3:]
    if rest and "=" not in rest[0]:
        entry["state"] = rest.pop(0)
    tuples = [{}, {}]
    side = 0
    for token in rest:
        if token in ("[ASSURED]", "[UNREPLIED]"):
            entry[token.strip("[]").lower()] = True
        elif "=" in token:
            key, value = token.split("=", 1)
            if key in ("src", "dst", "sport", "dport", "type", "code", "id"):
                if key in tuples[side]:
                    side = 1
                tuples[side][key] = value if key in ("src", "dst") else int(value)
            elif key in ("mark", "zone"):
                entry[key] = int(value)
    entry["original"], entry["reply"] = tuples
    return entry


def scan(datagrams, params=None, group_by=None, limit=1000, collect=False):
    result = E.EntryScan(E.EntryFilter.from_params(params or {}), group_by=group_by, limit=limit,
                         collect_delete_keys=collect)
    done = False
    for data in datagrams:
        buf = bytearray(data)
        done = result.feed(buf, len(buf))
        if done:
            break
    assert done, "the recorded dump ends with NLMSG_DONE"
    return result


def key(tup):
    return tuple(sorted(tup.items()))


@pytest.mark.parametrize("name", ["dump_ipv4", "dump_ipv6"])
def test_decoded_entries_match_conntrack_tools(name):
    result = scan(load_dump(name))
    oracle = load_oracle(name)
    assert result.scanned == result.matched == len(oracle) == len(result.entries)
    ours = dict((key(entry["original"]), entry) for entry in result.entries)
    for expected in oracle:
        entry = ours[key(expected["original"])]
        assert entry["proto"] == expected["proto"]
        assert entry["reply"] == expected["reply"]
        assert entry["state"] == expected["state"]
        assert ("assured" in entry["flags"]) == expected["assured"]
        assert ("unreplied" in entry["flags"]) == expected["unreplied"]
        assert entry["mark"] == expected["mark"] and entry["zone"] == expected["zone"]
        assert abs(entry["timeout"] - expected["timeout"]) <= 2


def test_nat_view_of_a_dnat_entry():
    entries = scan(load_dump("dump_ipv4"), {"proto": "tcp"}).entries
    assert len(entries) == 1
    nat = entries[0]["nat"]
    assert nat["dnat"] == {"from": "203.0.113.10:443", "to": "10.0.1.10:8443", "address": "10.0.1.10", "port": 8443}
    assert nat["snat"] is None
    assert nat["summary"] == "dst 203.0.113.10:443 -> 10.0.1.10:8443"
    assert {"seen_reply", "assured", "confirmed", "dnat", "dnat_done"} <= set(entries[0]["flags"])
    v6 = scan(load_dump("dump_ipv6")).entries[0]["nat"]
    assert v6["summary"] == "dst [2001:db8:1::10]:443 -> [2001:db8:2::10]:8443"


def test_untranslated_and_icmp_entries_have_no_nat():
    for entry in scan(load_dump("dump_ipv4"), {"orig_src": ["127.0.0.0/8"]}).entries:
        assert entry["nat"] == {"dnat": None, "snat": None, "summary": None}
    icmp = scan(load_dump("dump_ipv4"), {"proto": "icmp"}).entries
    assert len(icmp) == 1
    assert icmp[0]["original"] == {"src": "203.0.113.5", "dst": "203.0.113.10", "type": 8, "code": 0, "id": 4660}
    assert icmp[0]["reply"]["type"] == 0 and icmp[0]["nat"]["summary"] is None


def _dports(result):
    return sorted(entry["original"].get("dport", entry["original"].get("type")) for entry in result.entries)


@pytest.mark.parametrize("params, dports", [
    ({}, [8, 53, 53, 443, 7000, 7001]),
    ({"proto": "udp"}, [53, 53, 7000, 7001]),
    ({"proto": "17"}, [53, 53, 7000, 7001]),
    ({"zone": 7}, [7000]),
    ({"zone": 0, "proto": "udp"}, [53, 53, 7001]),
    ({"mark": 0x100, "mark_mask": 0x100}, [7001]),
    ({"mark": 257}, [7001]),
    ({"mark": 0x100}, []),
    ({"status": ["dnat"]}, [53, 53, 443]),
    ({"status": ["!dnat"]}, [8, 7000, 7001]),
    ({"status": ["unreplied"]}, [7000, 7001]),
    ({"status": ["assured", "seen_reply"]}, [443]),
    ({"state": ["established"]}, [443]),
    ({"state": ["TIME_WAIT", "SYN_SENT"]}, []),
    ({"reply_src": ["10.0.1.10"]}, [53, 53, 443]),
    ({"reply_src": ["10.0.1.0/24", "127.0.0.1"]}, [53, 53, 443, 7000, 7001]),
    ({"orig_dst": ["203.0.113.10"], "orig_dport": 53}, [53, 53]),
    ({"reply_sport": 8443}, [443]),
    ({"orig_dport": 8}, []),  # ICMP has no ports: a port filter never matches it
    ({"orig_src": ["2001:db8::/32"]}, []),
    ({"family": "ipv6"}, []),
])
def test_filters_on_the_recorded_ipv4_dump(params, dports):
    result = scan(load_dump("dump_ipv4"), params)
    assert _dports(result) == dports
    assert result.matched == len(dports) and result.scanned == 6


def test_address_filters_of_one_family_skip_the_other():
    flt = E.EntryFilter.from_params({"reply_src": ["2001:db8:2::/64"]})
    assert flt.families == (E.AF_INET6,)
    assert scan(load_dump("dump_ipv6"), {"reply_src": ["2001:db8:2::/64"]}).matched == 1
    assert scan(load_dump("dump_ipv4"), {"reply_src": ["2001:db8:2::/64"]}).matched == 0


def test_group_by_and_top():
    result = scan(load_dump("dump_ipv4"), group_by=["proto", "state"], limit=0)
    assert result.entries == [] and result.matched == 6
    assert result.group_list() == [
        {"key": {"proto": "udp", "state": None}, "count": 4},
        {"key": {"proto": "icmp", "state": None}, "count": 1},
        {"key": {"proto": "tcp", "state": "ESTABLISHED"}, "count": 1},
    ]
    assert result.group_list(top=1) == [{"key": {"proto": "udp", "state": None}, "count": 4}]
    by_backend = scan(load_dump("dump_ipv4"), {"status": ["dnat"]}, group_by=["reply_src", "reply_sport"], limit=0)
    assert by_backend.group_list() == [{"key": {"reply_src": "10.0.1.10", "reply_sport": 5353}, "count": 2},
                                       {"key": {"reply_src": "10.0.1.10", "reply_sport": 8443}, "count": 1}]
    v6 = scan(load_dump("dump_ipv6"), group_by=["orig_dst", "family", "assured"], limit=0)
    assert v6.group_list() == [{"key": {"orig_dst": "2001:db8:1::10", "family": "ipv6", "assured": True}, "count": 1}]
    zones = scan(load_dump("dump_ipv4"), {"proto": "udp"}, group_by=["zone", "mark", "orig_dport"], limit=0)
    assert {"key": {"zone": 7, "mark": 0, "orig_dport": 7000}, "count": 1} in zones.group_list()


@pytest.mark.parametrize("dump", ["dump_ipv4", "dump_ipv6"])
def test_group_by_nat_counts_what_the_status_filters_count(dump):
    """One scan grouped by dnat/snat gives the counts of the status: [dnat] and [snat] queries."""
    data = load_dump(dump)
    grouped = scan(data, group_by=["proto", "state", "dnat", "snat"], limit=0)
    for kind in ("dnat", "snat"):
        in_groups = sum(g["count"] for g in grouped.group_list() if g["key"][kind])
        assert in_groups == scan(data, {"status": [kind]}).matched
    assert sum(g["count"] for g in grouped.group_list()) == grouped.matched == scan(data).matched
    if dump == "dump_ipv4":  # the fixture's three DNATed flows (reply from 10.0.1.10) and three others
        assert sum(g["count"] for g in grouped.group_list() if g["key"]["dnat"]) == 3


@pytest.mark.parametrize("dump", ["dump_ipv4", "dump_ipv6"])
def test_statistics_group_key_equals_the_getters(dump):
    """The dedicated key of the audit's grouping (proto, state, dnat, snat) and keys of 3 and 4 fields built from
    the per-field getters group the same entries the same way as the generic tuple of getters."""
    data = load_dump(dump)
    for fields in (["proto", "state", "dnat", "snat"], ["proto", "dnat", "state"], ["state", "snat", "proto", "dnat"]):
        fast = scan(data, group_by=fields, limit=0)
        generic = E.EntryScan(E.EntryFilter.from_params({}), group_by=fields, limit=0)
        getters = [entry_scan._group_getter(field) for field in fields]
        generic._group_key = lambda *values: tuple(getter(*values) for getter in getters)
        for datagram in data:
            if generic.feed(bytearray(datagram), len(datagram)):
                break
        assert fast.group_list() == generic.group_list() and fast.matched == generic.matched > 0


def test_limit_counts_everything_returns_only_limit():
    result = scan(load_dump("dump_ipv4"), limit=2)
    assert len(result.entries) == 2 and result.matched == 6


def test_fast_layout_path_agrees_with_the_generic_decoder():
    """Every field the scan reads through a cached layout equals what decode_entry reads by walking."""
    datagrams = load_dump("dump_ipv4") + load_dump("dump_ipv6")
    fields = ["family", "proto", "state", "orig_src", "orig_dst", "orig_sport", "orig_dport", "reply_src",
              "reply_dst", "reply_sport", "reply_dport", "mark", "zone", "assured", "dnat", "snat"]
    # twice the same data through one scan: the second pass uses the layouts the first one learned
    result = E.EntryScan(E.EntryFilter.from_params({}), group_by=fields, limit=100)
    for data in datagrams + datagrams:
        result.feed(bytearray(data), len(data))
    assert result.matched == 14
    expected = {}
    for entry in result.entries:
        values = []
        for field in fields:
            if field == "family" or field == "proto" or field in ("state", "mark", "zone"):
                values.append(entry[field])
            elif field in ("assured", "dnat", "snat"):
                values.append(field in entry["flags"])
            else:
                side, name = field.split("_")
                values.append(entry["original" if side == "orig" else "reply"].get(name))
        expected[tuple(values)] = expected.get(tuple(values), 0) + 1
    got = dict((tuple(group["key"][f] for f in fields), group["count"]) for group in result.group_list())
    assert got == expected


def test_delete_keys_carry_tuple_zone_and_id():
    result = scan(load_dump("dump_ipv4"), {"zone": 7}, collect=True)
    assert len(result.delete_keys) == 1
    family, payload = result.delete_keys[0]
    assert family == E.AF_INET
    kinds = {}
    pos = 0
    while pos < len(payload):
        length, kind = struct.unpack_from("=HH", payload, pos)
        kinds[kind & 0x3FFF] = payload[pos + 4:pos + length]
        pos += (length + 3) & ~3
    assert set(kinds) == {E.CTA_TUPLE_ORIG, E.CTA_ZONE, E.CTA_ID}
    assert struct.unpack(">H", kinds[E.CTA_ZONE])[0] == 7
    assert E._tuple(kinds[E.CTA_TUPLE_ORIG], 0, len(kinds[E.CTA_TUPLE_ORIG]))[4] == 7000


@pytest.mark.parametrize("params, field", [
    ({"family": "ipv5"}, "family"),
    ({"proto": "tcpp"}, "proto"),
    ({"proto": "300"}, "proto"),
    ({"orig_src": ["10.0.0.256"]}, "orig_src"),
    ({"orig_dst": ["10.0.0.0/33"]}, "orig_dst"),
    ({"reply_src": ["backend-1"]}, "reply_src"),
    ({"reply_dst": [""]}, "reply_dst"),
    ({"orig_sport": 65536}, "orig_sport"),
    ({"reply_dport": -1}, "reply_dport"),
    ({"orig_dport": "http"}, "orig_dport"),
    ({"state": ["ESTABLISHED", "OPEN"]}, "state"),
    ({"state": ["ESTABLISHED"], "proto": "udp"}, "state"),
    ({"status": ["assured", "stale"]}, "status"),
    ({"status": ["assured", "!assured"]}, "status"),
    ({"mark": 1 << 32}, "mark"),
    ({"mark_mask": 255}, "mark_mask"),
    ({"zone": 65536}, "zone"),
    ({"proto": "icmp", "orig_dport": 1}, "orig_dport"),
    ({"family": "ipv4", "orig_dst": ["2001:db8::1"]}, "family"),
])
def test_bad_filter_values_name_the_field(params, field):
    with pytest.raises(E.CtFilterError) as info:
        E.EntryFilter.from_params(params)
    assert info.value.field == field and str(info.value).startswith(field + ":")


@pytest.mark.parametrize("group_by, top, limit, field", [
    (["colour"], 10, 10, "group_by"),
    (["state"], -1, 10, "top"),
    (["state"], 10, -5, "limit"),
    (["state"], 10, 10001, "limit"),
])
def test_bad_query_values_name_the_field(group_by, top, limit, field):
    with pytest.raises(E.CtFilterError) as info:
        E.validate_query(group_by, top, limit, 10000)
    assert info.value.field == field


def test_empty_filter_detection():
    assert E.EntryFilter.from_params({}).is_empty()
    assert E.EntryFilter.from_params({"family": "ipv6"}).is_empty()
    assert not E.EntryFilter.from_params({"zone": 0}).is_empty()
    assert not E.EntryFilter.from_params({"status": ["unreplied"]}).is_empty()


def _attrs(payload):
    out = {}
    pos = 0
    while pos < len(payload):
        length, kind = struct.unpack_from("=HH", payload, pos)
        out[kind & 0x3FFF] = payload[pos + 4:pos + length]
        pos += (length + 3) & ~3
    return out


def test_kernel_filter_attributes():
    flt = E.EntryFilter.from_params({"orig_dst": ["203.0.113.10"], "proto": "tcp", "orig_dport": 443,
                                     "mark": 1, "zone": 7, "status": ["assured", "!dying"]})
    payload, used = flt.kernel_filter_attrs(E.AF_INET)
    attrs = _attrs(payload)
    assert used
    assert struct.unpack(">I", attrs[E.CTA_MARK])[0] == 1 and struct.unpack(">I", attrs[E.CTA_MARK_MASK])[0] == 0xFFFFFFFF
    assert struct.unpack(">H", attrs[E.CTA_ZONE])[0] == 7
    assert struct.unpack(">I", attrs[E.CTA_STATUS])[0] == 4
    assert struct.unpack(">I", attrs[E.CTA_STATUS_MASK])[0] == 4 | 1 << 9
    flags = _attrs(attrs[E.CTA_FILTER])
    assert struct.unpack("=I", flags[E.CTA_FILTER_ORIG_FLAGS])[0] == (
        E.FILTER_F_IP_DST | E.FILTER_F_PROTO_NUM | E.FILTER_F_DST_PORT)
    assert struct.unpack("=I", flags[E.CTA_FILTER_REPLY_FLAGS])[0] == 0
    assert E._tuple(attrs[E.CTA_TUPLE_ORIG], 0, len(attrs[E.CTA_TUPLE_ORIG]))[2] == 0xCB00710A
    # CIDRs, lists, IPv6 addresses and reply-only address filters stay in userspace
    for params in ({"orig_dst": ["203.0.113.0/24"]}, {"orig_dst": ["203.0.113.1", "203.0.113.2"]},
                   {"orig_dst": ["2001:db8::1"]}, {"reply_src": ["10.0.1.10"]}):
        flt = E.EntryFilter.from_params(params)
        for family in flt.families:
            assert flt.kernel_filter_attrs(family) == (b"", False), params
    assert E.EntryFilter.from_params({"zone": 0}).kernel_filter_attrs(E.AF_INET) == (b"", False)


# ---------------------------------------------------------------------------------------------------------
# malformed and truncated input: our own exception, never a traceback from struct or IndexError

ALL = load_dump("dump_ipv4") + load_dump("dump_ipv6")


def _feed_all(data, params, group_by, limit):
    result = E.EntryScan(E.EntryFilter.from_params(params), group_by=group_by, limit=limit,
                         collect_delete_keys=True)
    buf = bytearray(data)
    try:
        result.feed(buf, len(buf))
    except E.CtError:
        pass


QUERIES = st.sampled_from([
    ({}, None, 0), ({}, None, 100), ({}, ["state", "orig_src", "reply_dport"], 0),
    ({"proto": "tcp", "reply_src": ["10.0.0.0/8"]}, ["zone", "mark"], 5), ({"status": ["assured"]}, None, 5),
])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(ALL) - 1), cut=st.integers(0, 20000), query=QUERIES)
def test_truncated_dumps_raise_only_our_error(index, cut, query):
    data = ALL[index]
    _feed_all(data[:cut % (len(data) + 1)], *query)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(index=st.integers(0, len(ALL) - 1), flips=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)),
                                                          min_size=1, max_size=8), query=QUERIES)
def test_corrupted_dumps_raise_only_our_error(index, flips, query):
    data = bytearray(ALL[index])
    for offset, value in flips:
        data[offset % len(data)] = value
    _feed_all(bytes(data), *query)


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=400), query=QUERIES)
def test_random_bytes_raise_only_our_error(data, query):
    _feed_all(data, *query)


def test_truncated_message_is_reported_clearly():
    data = ALL[0]
    with pytest.raises(E.CtDecodeError) as info:
        scan([data[:len(data) - 7]])
    assert "malformed" in str(info.value)


def test_kernel_error_reply_is_reported_with_errno():
    error = struct.pack("=IHHII", 36, E.NLMSG_ERROR, 0, 1, 0) + struct.pack("=i", -1) + b"\0" * 16
    with pytest.raises(E.CtKernelError) as info:
        scan([error])
    assert info.value.errno == 1


def test_delete_keys_from_cached_layouts_equal_the_walked_ones():
    datagrams = load_dump("dump_ipv4") + load_dump("dump_ipv6")
    result = E.EntryScan(E.EntryFilter.from_params({}), collect_delete_keys=True)
    for data in datagrams + datagrams:  # the second pass reads through the learned layouts
        result.feed(bytearray(data), len(data))
    walked = []
    for data in datagrams:
        pos = 0
        while pos + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, pos)
            if kind == E.CT_NEW_MSG_TYPE:
                walked.append(E.delete_key(data, pos + 20, pos + length, data[pos + 16]))
            pos += (length + 3) & ~3
    assert len(walked) == 7 and result.delete_keys == walked + walked
