"""ctnetlink client: recorded kernel replies decoded and compared with conntrack-tools' own reading."""
import binascii
import errno
import json
import os
import re
import socket
import struct

import pytest
from hypothesis import given, settings, strategies as st

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import netlink as nl

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures", "facts")


def _recordings():
    names = sorted(n for n in os.listdir(FIXTURES) if n.startswith("netlink_") and n.endswith(".json"))
    assert names, "no recorded netlink fixtures"
    return names


def _load(name):
    with open(os.path.join(FIXTURES, name)) as handle:
        return json.load(handle)


def _datagrams(hexes):
    return [binascii.unhexlify(h) for h in hexes]


def _conntrack_s(text):
    rows = []
    for line in text.splitlines():
        if not line.startswith("cpu="):
            continue
        fields = dict(pair.split("=", 1) for pair in line.split())
        rows.append({k: int(v) for k, v in fields.items()})
    return rows


@pytest.mark.parametrize("name", _recordings())
def test_recorded_stats_cpu_equal_conntrack_S(name):
    rec = _load(name)
    replies = list(nl.decode_replies(_datagrams(rec["stats_cpu_replies"])))
    decoded = []
    for msg_type, _family, res_id, buf, start, end in replies:
        assert msg_type == nl.IPCTNL_MSG_CT_GET_STATS_CPU
        row = nl.parse_stats_cpu(buf, start, end)
        row["cpu"] = res_id
        decoded.append(row)
    oracle = _conntrack_s(rec["conntrack_S"])
    assert decoded == oracle
    assert set(decoded[0]) == set(nl.COUNTER_NAMES) | {"cpu"}


@pytest.mark.parametrize("name", _recordings())
def test_recorded_stats_equal_conntrack_C_and_max(name):
    rec = _load(name)
    replies = list(nl.decode_replies(_datagrams(rec["stats_replies"])))
    assert len(replies) == 1
    _type, _family, _res, buf, start, end = replies[0]
    stats = nl.parse_stats(buf, start, end)
    assert stats == {"entries": int(rec["conntrack_C"]), "max_entries": int(rec["nf_conntrack_max"])}


@pytest.mark.parametrize("name", _recordings())
def test_recorded_eperm_raises_permission_error(name):
    rec = _load(name)
    with pytest.raises(nl.CtnetlinkPermissionError) as info:
        list(nl.decode_replies(_datagrams([rec["eperm_reply"]]), operation="CT_GET_STATS_CPU"))
    assert info.value.errno == errno.EPERM == rec["eperm_errno"]
    assert info.value.operation == "CT_GET_STATS_CPU"
    assert "CAP_NET_ADMIN" in str(info.value)
    assert isinstance(info.value, nl.NetlinkError)


def test_replies_of_other_sequence_numbers_are_ignored():
    rec = _load(_recordings()[0])
    data = _datagrams(rec["stats_replies"])
    seq = struct.unpack_from("=I", data[0], 8)[0]
    assert len(list(nl.decode_replies(data, seq=seq))) == 1
    # a foreign seq never matches, so nothing is yielded and the stream simply runs out
    assert list(nl.decode_replies(data, seq=seq + 1)) == []


@pytest.mark.parametrize("err, cls", [
    (errno.EPERM, nl.CtnetlinkPermissionError),
    (errno.EACCES, nl.CtnetlinkPermissionError),
    (errno.EOPNOTSUPP, nl.CtnetlinkUnavailableError),
    (errno.EPROTONOSUPPORT, nl.CtnetlinkUnavailableError),
    (errno.ENOENT, nl.CtnetlinkNotFoundError),
    (errno.EBUSY, nl.NetlinkError),
])
def test_error_reply_maps_to_exception_class(err, cls):
    body = struct.pack("=i", -err) + struct.pack("=IHHII", 20, 0x0104, 0x305, 7, 0)
    msg = struct.pack("=IHHII", 16 + len(body), nl.NLMSG_ERROR, 0, 7, 0) + body
    with pytest.raises(cls) as info:
        list(nl.decode_replies([msg], seq=7, operation="X"))
    assert info.value.__class__ is cls
    assert info.value.errno == err


def test_ack_ends_without_data():
    ack = struct.pack("=IHHII", 36, nl.NLMSG_ERROR, 0x100, 9, 0) + struct.pack("=i", 0) + b"\0" * 16
    assert list(nl.decode_replies([ack], seq=9)) == []


def test_dump_interrupted_is_an_error():
    done = struct.pack("=IHHII", 20, nl.NLMSG_DONE, nl.NLM_F_MULTI | nl.NLM_F_DUMP_INTR, 3, 0) + b"\0" * 4
    with pytest.raises(nl.NetlinkError) as info:
        list(nl.decode_replies([done], seq=3))
    assert info.value.errno == errno.EINTR


def test_build_request_layout():
    data = nl.build_request(nl.IPCTNL_MSG_CT_GET_STATS_CPU, 77, family=socket.AF_INET,
                            flags=nl.NLM_F_REQUEST | nl.NLM_F_DUMP, res_id=0x0102)
    length, msg_type, flags, seq, pid = struct.unpack_from("=IHHII", data)
    assert (length, msg_type, flags, seq, pid) == (20, 0x0104, 0x301, 77, 0)
    assert data[16:20] == bytes([socket.AF_INET, 0, 0x01, 0x02])  # res_id is big endian


def test_nla_pack_and_iter_roundtrip_with_nesting():
    inner = nl.nla_pack(1, b"\x0a\x00\x00\x01") + nl.nla_pack(2, b"\x06")
    buf = nl.nla_pack(1, inner, nested=True) + nl.nla_pack(7, struct.pack("!I", 300))
    assert len(buf) % 4 == 0
    attrs = list(nl.nla_iter(buf, 0, len(buf)))
    assert [a[0] for a in attrs] == [1, 7]  # NLA_F_NESTED stripped from the type
    assert struct.unpack_from("=H", buf, 2)[0] & nl.NLA_F_NESTED
    _t, start, end = attrs[0]
    inner_attrs = list(nl.nla_iter(buf, start, end))
    assert [(t, buf[s:e]) for t, s, e in inner_attrs] == [(1, b"\x0a\x00\x00\x01"), (2, b"\x06")]
    assert nl.nla_uint(buf, attrs[1][1], attrs[1][2]) == 300


@pytest.mark.parametrize("raw", [
    b"\x03\x00\x01\x00",  # attribute shorter than its header
    b"\x10\x00\x01\x00abcd",  # claims more bytes than there are
    b"\x08\x00\x01\x00abcd\x01\x02",  # non-zero trailing bytes
])
def test_malformed_attributes_raise_parse_error(raw):
    with pytest.raises(nl.NetlinkParseError):
        list(nl.nla_iter(raw, 0, len(raw)))


def test_closed_socket_send_is_a_clear_error():
    with pytest.raises(nl.NetlinkError, match="not open"):
        nl.CtnetlinkSocket().send(nl.IPCTNL_MSG_CT_GET_STATS)


def test_init_does_no_io():
    sock = nl.CtnetlinkSocket()
    assert sock.sock is None


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=256))
def test_garbage_datagram_gives_netlink_error_only(data):
    try:
        for _t, _f, _r, buf, start, end in nl.decode_replies([data]):
            nl.parse_stats_cpu(buf, start, end)
            nl.parse_stats(buf, start, end)
    except nl.NetlinkError:
        pass


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 0x7FFF), st.binary(max_size=12), st.booleans()), max_size=6))
def test_nla_roundtrip_property(attrs):
    buf = b"".join(nl.nla_pack(t, p, nested=n) for t, p, n in attrs)
    back = [(t, buf[s:e]) for t, s, e in nl.nla_iter(buf, 0, len(buf))]
    assert back == [(t & nl.NLA_TYPE_MASK, p) for t, p, _n in attrs]


def test_fixture_kernel_release_is_recorded():
    for name in _recordings():
        assert re.match(r"\d+\.\d+", _load(name)["kernel"])
