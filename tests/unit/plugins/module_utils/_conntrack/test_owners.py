"""Owners and drift of conntrack knobs (issue 13): persisted vs live, and who else writes the key."""
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import owners
from ansible_collections.nodeguard.conntrack.plugins.plugin_utils import _audit_eval as ev

OURS = "/etc/sysctl.d/90-nodeguard-conntrack.conf"
FILES = {
    OURS: "net.netfilter.nf_conntrack_max = 524288\nnet.netfilter.nf_conntrack_tcp_timeout_established = 86400\n",
    "/etc/sysctl.d/99-sysctl.conf": "net.netfilter.nf_conntrack_tcp_timeout_established=7200\n",
}
KUBE_PROXY = {"pid": 4242, "comm": "kube-proxy", "argv": ["/usr/local/bin/kube-proxy", "--config=/var/lib/kp.conf"]}


def test_persisted_live_drift_and_writers():
    result = owners.build(["max", "tcp_timeout_established"], {"max": 262144, "tcp_timeout_established": 7200},
                          FILES, OURS, [KUBE_PROXY], {"/var/lib/kp.conf": "conntrack:\n  maxPerCore: 32768\n"
                                                                          "  tcpEstablishedTimeout: 0s\n"})
    assert result["max"]["persisted"] == 524288 and result["max"]["persisted_by"] == OURS
    assert result["max"]["drift"] is True
    assert result["max"]["writers"] == [{"kind": "kube-proxy", "pid": 4242,
                                         "detail": "conntrack.maxPerCore: 32768 in /var/lib/kp.conf"}]
    established = result["tcp_timeout_established"]
    # a later file wins at boot: persisted is its value, and live agrees with it (no drift), kube-proxy told to leave it
    assert established["persisted"] == 7200 and established["persisted_by"] == "/etc/sysctl.d/99-sysctl.conf"
    assert established["drift"] is False and established["ours"] is True
    assert [w["kind"] for w in established["writers"]] == ["sysctl_file"]


def test_kube_proxy_flags_zero_leave_values_alone():
    argv = ["kube-proxy", "--conntrack-max-per-core=0", "--conntrack-tcp-timeout-established", "0s"]
    claims = owners.kube_proxy_claims(argv, None)
    assert set(claims) == {"tcp_timeout_close_wait"}  # not set to 0: its default (3600 s) is written


def test_audit_reports_drift_with_owner_and_fix():
    facts = {"available": True, "limits": {"max": 262144, "count": 10, "buckets": 262144},
             "counters": None, "environment": {"kernel_release": "6.1.0"},
             "owners": owners.build(["max"], {"max": 262144}, FILES, OURS, [KUBE_PROXY], {})}
    result = ev.evaluate({"host": "k8s-1", "facts": facts}, now=1)
    drift = [f for f in result["findings"] if f["id"] == "NGCA009"]
    assert len(drift) == 1 and drift[0]["knob"] == "max"
    assert "262,144 live but 524,288 persisted" in drift[0]["detail"] and "kube-proxy (pid 4242" in drift[0]["owner"]
    assert "maxPerCore: 0" in drift[0]["fix"]


def test_no_drift_for_a_host_scope_knob_read_only_in_this_netns():
    # a container: max is host-scope and read-only here, so the persisted value cannot be in force; not drift
    facts = {"available": True, "limits": {"max": 262144, "count": 10, "buckets": 262144},
             "counters": None, "environment": {"kernel_release": "6.1.0", "init_netns": False,
                                               "writable_knobs": ["tcp_timeout_established"]},
             "owners": owners.build(["max"], {"max": 262144}, FILES, OURS, [], {})}
    assert [f for f in ev.evaluate({"host": "c-1", "facts": facts}, now=1)["findings"] if f["id"] == "NGCA009"] == []
    # the same knob where it can be written is drift
    facts["environment"] = {"kernel_release": "6.1.0", "init_netns": True, "writable_knobs": ["max"]}
    assert [f["knob"] for f in ev.evaluate({"host": "h-1", "facts": facts}, now=1)["findings"]
            if f["id"] == "NGCA009"] == ["max"]
