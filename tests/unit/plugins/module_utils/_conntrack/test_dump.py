"""Unit tests of the _ct_dump I/O loop with a scripted socket: requests sent, replies replayed.

The replies are the recorded kernel dumps of fixtures/entries; errors and acks are built like the kernel's.
"""

import errno
import os
import socket
import struct

import pytest

from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import dump as D
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import entries as E
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import netlink as N

FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "fixtures", "entries")


def load_dump(name):
    with open(os.path.join(FIXTURES, name + ".hex")) as handle:
        return [bytes.fromhex(line.strip()) for line in handle if line.strip()]


def nlmsg_error(err, seq):
    return struct.pack("=IHHII", 36, N.NLMSG_ERROR, 0, seq, 0) + struct.pack("=i", -err) + b"\0" * 16


class FakeSock:
    def __init__(self, owner):
        self.owner = owner
        self.queue = []

    def settimeout(self, value):
        self.timeout = value

    def recv_into(self, buf, _size=0, _flags=0):
        if not self.queue:
            raise socket.timeout("timed out")  # what a real socket with a timeout raises when nothing comes
        data = self.queue.pop(0)
        buf[:len(data)] = data
        return len(data)

    def sendto(self, data, _addr):
        self.owner.sent_raw.append(bytes(data))
        self.queue.extend(self.owner.on_raw(bytes(data)))


class FakeCt:
    """Stands in for CtnetlinkSocket; ``replies(request)`` returns the datagrams to queue for one request."""

    def __init__(self, replies, on_raw=None, **_kwargs):
        self.replies = replies
        self.on_raw = on_raw or (lambda data: [])
        self.requests = []
        self.sent_raw = []
        self.sock = FakeSock(self)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def send(self, msg_type, family=0, flags=0, payload=b"", res_id=0):
        request = {"msg_type": msg_type, "family": family, "flags": flags, "payload": payload}
        self.requests.append(request)
        self.sock.queue.extend(self.replies(request))
        return len(self.requests)


def factory_of(ct):
    return lambda **kwargs: ct


def _has_filter(payload):
    pos = 0
    while pos < len(payload):
        length, kind = struct.unpack_from("=HH", payload, pos)
        if kind & 0x3FFF == E.CTA_FILTER:
            return True
        pos += (length + 3) & ~3
    return False


def test_dump_requests_per_family_with_kernel_filter():
    dumps = {E.AF_INET: load_dump("dump_ipv4"), E.AF_INET6: load_dump("dump_ipv6")}
    ct = FakeCt(lambda request: list(dumps[request["family"]]))
    flt = E.EntryFilter.from_params({"proto": "tcp"})
    scan, info = D.query(flt, group_by=["family"], limit=10, socket_factory=factory_of(ct))
    assert [r["family"] for r in ct.requests] == [E.AF_INET, E.AF_INET6]
    assert all(r["msg_type"] == N.IPCTNL_MSG_CT_GET and r["flags"] & N.NLM_F_DUMP for r in ct.requests)
    assert all(_has_filter(r["payload"]) for r in ct.requests)
    assert info == {"families": [E.AF_INET, E.AF_INET6], "kernel_filter": True}
    assert scan.matched == 2 and scan.group_list() == [{"key": {"family": "ipv4"}, "count": 1},
                                                       {"key": {"family": "ipv6"}, "count": 1}]


def test_kernel_that_rejects_cta_filter_is_asked_again_without_it():
    def replies(request):
        if _has_filter(request["payload"]):
            return [nlmsg_error(errno.EOPNOTSUPP, len(ct.requests))]
        return list(load_dump("dump_ipv4"))

    ct = FakeCt(replies)
    flt = E.EntryFilter.from_params({"orig_dst": ["203.0.113.10"], "proto": "udp", "zone": 0})
    scan, info = D.query(flt, socket_factory=factory_of(ct))
    assert [_has_filter(r["payload"]) for r in ct.requests] == [True, False]
    assert scan.matched == 2  # the userspace check still applies the whole filter


def test_permission_error_is_the_netlink_permission_error():
    ct = FakeCt(lambda request: [nlmsg_error(errno.EPERM, 1)])
    with pytest.raises(N.CtnetlinkPermissionError) as info:
        D.query(E.EntryFilter.from_params({}), socket_factory=factory_of(ct))
    assert info.value.errno == errno.EPERM and "CAP_NET_ADMIN" in str(info.value)


def test_no_kernel_filter_sends_no_attributes():
    ct = FakeCt(lambda request: list(load_dump("dump_ipv4")))
    flt = E.EntryFilter.from_params({"family": "ipv4", "mark": 257})
    scan, info = D.query(flt, use_kernel_filter=False, socket_factory=factory_of(ct))
    assert ct.requests[0]["payload"] == b"" and info["kernel_filter"] is False and scan.matched == 1


def _acks_for(answers):
    """on_raw callback answering DELETE requests like the kernel: an NLMSG_ERROR for a request that fails or
    asks for an ACK, nothing for a successful one without NLM_F_ACK; errno per request from ``answers``."""
    def on_raw(data):
        out = []
        pos = 0
        while pos < len(data):
            length, kind, flags, seq, _pid = struct.unpack_from("=IHHII", data, pos)
            assert kind == (N.NFNL_SUBSYS_CTNETLINK << 8) | N.IPCTNL_MSG_CT_DELETE and flags & N.NLM_F_REQUEST
            err = answers.pop(0)
            if err or flags & N.NLM_F_ACK:
                out.append(nlmsg_error(err, seq))
            pos += (length + 3) & ~3
        assert pos == len(data), "requests must tile the datagram exactly"
        return out
    return on_raw


def test_delete_counts_deleted_and_vanished():
    scan = E.EntryScan(E.EntryFilter.from_params({"proto": "udp"}), collect_delete_keys=True)
    for data in load_dump("dump_ipv4"):
        scan.feed(bytearray(data), len(data))
    assert len(scan.delete_keys) == 4
    ct = FakeCt(lambda request: [], on_raw=_acks_for([0, errno.ENOENT, 0, 0]))
    assert D.delete_entries(scan.delete_keys, socket_factory=factory_of(ct)) == (3, 1)
    # each request is the entry's own tuple + zone + id, for its family
    assert len(ct.sent_raw) == 1
    first = ct.sent_raw[0]
    length, _kind, _flags, _seq, _pid = struct.unpack_from("=IHHII", first, 0)
    assert first[16] == E.AF_INET and first[20:length] == scan.delete_keys[0][1]


def test_delete_error_other_than_enoent_is_raised():
    keys = [(E.AF_INET, b"")] * 3
    ct = FakeCt(lambda request: [], on_raw=_acks_for([0, errno.EPERM, 0]))
    with pytest.raises(N.CtnetlinkPermissionError):
        D.delete_entries(keys, socket_factory=factory_of(ct))


def test_delete_without_the_final_ack_times_out_with_an_error():
    keys = [(E.AF_INET, b"")] * 2
    ct = FakeCt(lambda request: [], on_raw=lambda data: [])
    with pytest.raises(N.NetlinkError) as info:
        D.delete_entries(keys, socket_factory=factory_of(ct))
    assert info.value.errno == errno.ETIMEDOUT and ct.sock.timeout == D.DELETE_TIMEOUT


def test_delete_in_batches():
    keys = [(E.AF_INET, b"")] * (D.DELETE_BATCH * 2 + 3)
    ct = FakeCt(lambda request: [], on_raw=_acks_for([0] * len(keys)))
    assert D.delete_entries(keys, socket_factory=factory_of(ct)) == (len(keys), 0)
    assert len(ct.sent_raw) == 3


def test_delete_requests_are_what_build_request_makes():
    keys = [(E.AF_INET, b"\x08\x00\x0c\x00\x01\x02\x03\x04"), (E.AF_INET6, b"")]
    ct = FakeCt(lambda request: [], on_raw=_acks_for([0, 0]))
    D.delete_entries(keys, socket_factory=factory_of(ct))
    # only the last request of a batch asks for an ACK
    expected = (N.build_request(N.IPCTNL_MSG_CT_DELETE, 1, family=E.AF_INET, flags=N.NLM_F_REQUEST, payload=keys[0][1])
                + N.build_request(N.IPCTNL_MSG_CT_DELETE, 2, family=E.AF_INET6, flags=N.NLM_F_REQUEST | N.NLM_F_ACK))
    assert ct.sent_raw == [expected]


def test_error_after_entries_is_not_retried():
    """A retry without CTA_FILTER is only safe before any entry was consumed (else entries count twice)."""
    entries_datagram = load_dump("dump_ipv4")[0]
    ct = FakeCt(lambda request: [entries_datagram, nlmsg_error(errno.EINVAL, 1)])
    flt = E.EntryFilter.from_params({"family": "ipv4", "orig_dst": ["203.0.113.10"], "proto": "udp"})
    with pytest.raises(N.NetlinkError) as info:
        D.query(flt, socket_factory=factory_of(ct))
    assert info.value.errno == errno.EINVAL and len(ct.requests) == 1
