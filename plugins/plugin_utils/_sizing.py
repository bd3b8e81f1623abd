# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack sizing: inventory numbers + host facts -> knob values, memory estimate, rationale, warnings.

Private to the collection. Pure and deterministic: takes data, returns data, never touches the host.
The ``conntrack_sizing`` filter and the ``conntrack_tuning`` role both call :func:`size`.

Rules (see docs/tuning.md; the kernel facts are in the project's kernel reference, "Sizing facts from the
kernel source"):

* demand = max(peak_flows, ceil(new_flows_per_second x avg_flow_lifetime)). peak_flows is the conntrack count at
  peak (what nf_conntrack_count shows, TIME_WAIT entries included), not the application's concurrency; Little's
  law gives the same count when the lifetime includes the time an entry lingers after close (TIME_WAIT).
* max = ceil(demand x headroom), raised to the per-CPU floor and the minimum, lowered to the cap and to
  what the memory budget allows (warnings say when a limit cut below demand x headroom), and never below the
  kernel's own default for the host's memory and kernel version unless knobs.max pins it.
* buckets = ceil(max / buckets_ratio) rounded up to a multiple of 512 (the kernel rounds the same way), default
  ratio 1 (the kernel's own), never below the kernel's default buckets; a ratio whose expected insert failure at a
  full table on the target kernel is not negligible is refused (every entry is in two hash chains, and since 5.15
  an insert into a chain over a random limit fails and drops the packet).
* timeouts from a profile, then per-timeout overrides; explicit knobs last.
* every value is checked against what the kernel accepts before anything is returned.
"""

import math

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack import kernel_model
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.kernel_model import BUCKET_GRANULARITY
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.knobs import (
    INT_MAX,
    KERNEL_DEFAULT_TIMEOUTS,
    KNOBS,
    MAX_BUCKETS,
    SCOPE_READONLY,
    UnknownKnobError,
    check_value,
    short_name,
)

# A packet-created entry is a 256-byte slab object; entries with extensions (acct, timestamp, labels,
# ctnetlink-created) measured ~383 B. Size the budget for the larger one.
DEFAULT_ENTRY_BYTES = 384
BUCKET_BYTES = 8
DEFAULT_HEADROOM = 1.5
MAX_HEADROOM = 100
DEFAULT_MEMORY_BUDGET_PCT = 5.0
# the kernel's own default since 5.15: one bucket per entry (max = buckets), two hash nodes per bucket when full
DEFAULT_BUCKETS_RATIO = 1
MAX_BUCKETS_RATIO = 64
MAX_MEMORY_MB = 2 ** 32
MAX_CPUS = 65536
MAX_ENTRY_BYTES = 65536
# an insert into a hash chain longer than a random limit fails (chaintoolong, insert_failed, packet dropped):
# refuse a layout whose expected insert failure at a full table is above this (kernel default: 2.5e-5 on 5.15-6.2)
MAX_INSERT_FAILURE = 1e-4
# Linux's default tcp_keepalive_time: an idle established flow sends its first keepalive probe after this long
LINUX_KEEPALIVE_SECONDS = 7200
# TIME_WAIT at the peers a SNATed port may be reused against: Linux/BSD 60 s, current Windows 120 s
PEER_TIME_WAIT_SECONDS = 120

PRESETS = {
    # kube-proxy's own rule: max(maxPerCore x CPUs, min), no cap (32768 per CPU, minimum 131072)
    "kube_proxy": {"per_cpu_floor": 32768, "min_max": 131072},
}

TIMEOUT_PROFILES = {
    # leave every timeout where the kernel has it (the checks assume the kernel defaults)
    "kernel_default": {},
    # kube-proxy's values: idle established TCP flows go after a day, half-closed ones after an hour
    "kubernetes": {
        "tcp_timeout_established": 86400,
        "tcp_timeout_close_wait": 3600,
    },
    # many short TCP connections: half-open entries go quickly; established stays above Linux's 2 h keepalive
    # (7200 s + 10 min for the probes) so idle NATed flows keep their mapping; time_wait and fin_wait stay at or
    # above what the peers hold (TIME_WAIT 60-120 s, tcp_fin_timeout 60 s) so a SNAT port is not reused early
    "high_churn": {
        "tcp_timeout_established": 7800,
        "tcp_timeout_syn_sent": 60,
        "tcp_timeout_syn_recv": 30,
        "tcp_timeout_fin_wait": 60,
        "tcp_timeout_unacknowledged": 120,
        "tcp_timeout_max_retrans": 120,
    },
    # DNS, telemetry, QUIC: keep bidirectional UDP flows (streams) across idle gaps; one-shot request/response
    # flows (DNS) keep the kernel's 30 s so they do not double their footprint; TCP at the Kubernetes values
    "udp_heavy": {
        "tcp_timeout_established": 86400,
        "tcp_timeout_close_wait": 3600,
        "udp_timeout_stream": 180,
    },
}

INPUT_FIELDS = (
    "peak_flows", "new_flows_per_second", "avg_flow_lifetime", "headroom", "preset", "per_cpu_floor",
    "min_max", "max_cap", "memory_mb", "cpus", "memory_budget_pct", "entry_bytes", "buckets_ratio",
    "timeout_profile", "timeouts", "knobs", "longest_idle_tcp_flow", "longest_idle_udp_flow", "kernel_release",
)


class SizingError(InputError):
    """Bad sizing input. ``field`` names the offending input."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(spec, field, minimum=1, required=False, maximum=INT_MAX):
    value = spec.get(field)
    if value is None:
        if required:
            raise SizingError(field, "is required")
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SizingError(field, "must be an integer, got %r" % (value,))
    if value < minimum:
        raise SizingError(field, "must be >= %d, got %d" % (minimum, value))
    if value > maximum:
        raise SizingError(field, "must be <= %s, got %s" % (_fmt(maximum), _fmt(value)))
    return value


def _number(spec, field, minimum, default=None, exclusive=False, maximum=None):
    value = spec.get(field)
    if value is None:
        return default
    if not _is_number(value) or (isinstance(value, float) and not math.isfinite(value)):
        raise SizingError(field, "must be a number, got %r" % (value,))
    if value < minimum or (exclusive and value == minimum):
        raise SizingError(field, "must be %s %s, got %r" % (">" if exclusive else ">=", minimum, value))
    if maximum is not None and value > maximum:
        raise SizingError(field, "must be <= %s, got %r" % (maximum, value))
    return value


def _knob_map(spec, field, timeouts_only):
    raw = spec.get(field)
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise SizingError(field, "must be a mapping of knob name to integer, got %r" % (raw,))
    result = {}
    for name, value in raw.items():
        try:
            short = short_name(name)
        except UnknownKnobError as exc:
            raise SizingError("%s.%s" % (field, name), exc.reason)
        scope, kind = KNOBS[short]
        if scope == SCOPE_READONLY:
            raise SizingError("%s.%s" % (field, name), "is read-only in the kernel and cannot be set")
        if timeouts_only and kind != "timeout":
            raise SizingError("%s.%s" % (field, name), "is not a timeout knob (use knobs for other settings)")
        if short in result:
            raise SizingError("%s.%s" % (field, name), "names %s a second time" % short)
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SizingError("%s.%s" % (field, name), "must be an integer, got %r" % (value,))
        problem = check_value(short, value)
        if problem:
            raise SizingError("%s.%s" % (field, name), problem)
        result[short] = value
    return result


def round_up(value, multiple):
    return int(-(-value // multiple) * multiple)


def buckets_for(max_entries, ratio):
    """Buckets for a table of ``max_entries`` at ``ratio`` entries per bucket, as the kernel will store it."""
    return max(BUCKET_GRANULARITY, round_up(-(-max_entries // ratio), BUCKET_GRANULARITY))


def memory_bytes(max_entries, buckets, entry_bytes):
    return max_entries * entry_bytes + buckets * BUCKET_BYTES


def _fmt(value):
    return "{:,}".format(value)


def _release(spec):
    release = spec.get("kernel_release")
    if release is None:
        return None, None
    if not isinstance(release, str) or kernel_model.parse_release(release) is None:
        raise SizingError("kernel_release", "must be a kernel release such as '6.1.0-18-amd64', got %r" % (release,))
    return release, kernel_model.parse_release(release)


def _kernel_label(release, chains=False):
    if release:
        return "kernel %s" % release
    if chains:
        return "an unknown kernel (assumed 5.15-6.2, the strictest)"
    return "an unknown kernel (the higher of the before-5.15 and 5.15+ defaults)"


def chain_check(max_entries, buckets, version):
    """{"nodes_per_bucket", "limits", "insert_failure", "acceptable"} for a table on kernel ``version``."""
    limits = kernel_model.chain_limit(version)
    failure = kernel_model.insert_failure(max_entries, buckets, limits)
    return {
        "nodes_per_bucket": round(kernel_model.nodes_per_bucket(max_entries, buckets), 3) if max_entries else 0.0,
        "limits": list(limits) if limits else None,
        "insert_failure": failure,
        "acceptable": failure <= MAX_INSERT_FAILURE,
    }


def sizing_declared(spec):
    """The one rule for "this host declares sizing": the inputs give size() something to size max from, namely a
    demand (``peak_flows`` or ``new_flows_per_second``), a ``preset``, ``per_cpu_floor``, ``min_max`` or a pinned
    ``knobs.max``. Missing, None, "" and the preset name "none" count as not given. Used by size() itself, by
    the conntrack_sizing_declared filter (the harden playbook, the conntrack_audit role). Never raises."""
    if not isinstance(spec, dict):
        return False

    def given(key):
        return spec.get(key) not in (None, "")

    if any(given(key) for key in ("peak_flows", "new_flows_per_second", "per_cpu_floor", "min_max")):
        return True
    if spec.get("preset") not in (None, "", "none"):
        return True
    knobs = spec.get("knobs")
    if isinstance(knobs, dict):
        for name, value in knobs.items():
            try:
                if short_name(name) == "max" and value not in (None, ""):
                    return True
            except UnknownKnobError:
                continue
    return False


def size(spec):
    """Size conntrack for one host. ``spec`` is a mapping of the INPUT_FIELDS; returns a dict with
    ``settings`` (short knob name -> int), ``memory``, ``demand``, ``kernel_default``, ``chains``, ``rationale``
    and ``warnings``. Every input is checked (and every result is within what the kernel accepts) before
    anything is returned; bad input raises SizingError naming the field."""
    if not isinstance(spec, dict):
        raise SizingError("spec", "must be a mapping, got %r" % (spec,))
    unknown = sorted((str(key) for key in set(spec) - set(INPUT_FIELDS)))
    if unknown:
        raise SizingError(unknown[0], "unknown sizing input (allowed: %s)" % ", ".join(INPUT_FIELDS))

    preset_name = spec.get("preset")
    preset = {}
    if preset_name is not None:
        if not isinstance(preset_name, str) or preset_name not in PRESETS:
            raise SizingError("preset", "unknown preset %r (allowed: %s)" % (preset_name, ", ".join(sorted(PRESETS))))
        preset = PRESETS[preset_name]
    merged = dict(spec)
    for key, value in preset.items():
        if merged.get(key) is None:
            merged[key] = value

    peak = _int(merged, "peak_flows")
    rate = _number(merged, "new_flows_per_second", 0, exclusive=True, maximum=INT_MAX)
    lifetime = _number(merged, "avg_flow_lifetime", 0, exclusive=True, maximum=INT_MAX)
    if (rate is None) != (lifetime is None):
        missing = "avg_flow_lifetime" if lifetime is None else "new_flows_per_second"
        raise SizingError(missing, "new_flows_per_second and avg_flow_lifetime go together (Little's law)")
    headroom = _number(merged, "headroom", 1, default=DEFAULT_HEADROOM, maximum=MAX_HEADROOM)
    per_cpu_floor = _int(merged, "per_cpu_floor")
    min_max = _int(merged, "min_max")
    max_cap = _int(merged, "max_cap")
    memory_mb = _int(merged, "memory_mb", required=True, maximum=MAX_MEMORY_MB)
    cpus = _int(merged, "cpus", required=True, maximum=MAX_CPUS)
    budget_pct = _number(merged, "memory_budget_pct", 0, default=DEFAULT_MEMORY_BUDGET_PCT, exclusive=True, maximum=100)
    entry_bytes = _int(merged, "entry_bytes", minimum=64, maximum=MAX_ENTRY_BYTES) or DEFAULT_ENTRY_BYTES
    ratio_given = merged.get("buckets_ratio") is not None
    ratio = _int(merged, "buckets_ratio", maximum=MAX_BUCKETS_RATIO) or DEFAULT_BUCKETS_RATIO
    release, version = _release(merged)
    profile_name = merged.get("timeout_profile")
    if profile_name is None:
        profile_name = "kernel_default"
    if not isinstance(profile_name, str) or profile_name not in TIMEOUT_PROFILES:
        raise SizingError("timeout_profile", "unknown profile %r (allowed: %s)"
                          % (profile_name, ", ".join(sorted(TIMEOUT_PROFILES))))
    timeouts = _knob_map(merged, "timeouts", timeouts_only=True)
    knobs = _knob_map(merged, "knobs", timeouts_only=False)
    idle_tcp = _int(merged, "longest_idle_tcp_flow")
    idle_udp = _int(merged, "longest_idle_udp_flow")
    if min_max is not None and max_cap is not None and max_cap < min_max:
        raise SizingError("max_cap", "(%d) is below min_max (%d)" % (max_cap, min_max))
    if per_cpu_floor is not None and per_cpu_floor * cpus > INT_MAX:
        raise SizingError("per_cpu_floor", "x %d CPUs is %s, above the kernel's limit %s"
                          % (cpus, _fmt(per_cpu_floor * cpus), _fmt(INT_MAX)))
    ram_bytes = memory_mb * 1024 * 1024
    kernel_default = kernel_model.default_size(ram_bytes, version)
    limits = kernel_model.chain_limit(version)
    if ratio_given:
        failure = kernel_model.insert_failure(ratio, 1, limits)
        if failure > MAX_INSERT_FAILURE:
            raise SizingError("buckets_ratio", "%d puts %d hash nodes in a bucket at a full table (every entry is "
                              "hashed twice); with the %s of %s about %.2g of inserts fail (chaintoolong, "
                              "insert_failed) and their packets drop: at most %d on this kernel"
                              % (ratio, 2 * ratio, kernel_model.describe_limits(limits), _kernel_label(release, True),
                                 failure, max_ratio(limits)))

    rationale = []
    warnings = []

    # demand
    demand = 0
    if peak is not None:
        demand = peak
        rationale.append("peak conntrack count (inventory; TIME_WAIT entries included): %s" % _fmt(peak))
    if rate is not None:
        little = rate * lifetime
        if little > INT_MAX:
            raise SizingError("avg_flow_lifetime", "new_flows_per_second x avg_flow_lifetime = %.3g entries, above "
                              "the kernel's limit %s" % (little, _fmt(INT_MAX)))
        little = int(math.ceil(little))
        rationale.append("Little's law: %s new flows/s x %s s average entry lifetime = %s concurrent entries"
                         % (_fmt(rate), lifetime, _fmt(little)))
        if little > demand:
            demand = little
    if not sizing_declared(merged):
        raise SizingError("peak_flows", "give peak_flows, or new_flows_per_second with avg_flow_lifetime "
                                        "(or a preset/per_cpu_floor/min_max to size without demand)")
    if max_cap is not None and max_cap < demand:
        raise SizingError("max_cap", "(%s) is below the peak demand (%s): the table would overflow at peak"
                          % (_fmt(max_cap), _fmt(demand)))
    wanted = demand * headroom
    if wanted > INT_MAX:
        raise SizingError("headroom", "demand %s x headroom %s is above the kernel's limit %s"
                          % (_fmt(demand), headroom, _fmt(INT_MAX)))
    wanted = int(math.ceil(wanted))
    if demand:
        rationale.append("demand %s x headroom %s = %s" % (_fmt(demand), headroom, _fmt(wanted)))
    target = wanted
    if per_cpu_floor is not None and per_cpu_floor * cpus > target:
        target = per_cpu_floor * cpus
        rationale.append("per-CPU floor %s x %d CPUs = %s (raises max)" % (_fmt(per_cpu_floor), cpus, _fmt(target)))
    if min_max is not None and min_max > target:
        target = min_max
        rationale.append("minimum %s (raises max)" % _fmt(min_max))
    if max_cap is not None and target > max_cap:
        target = max_cap
        rationale.append("cap %s (lowers max)" % _fmt(max_cap))
        if max_cap < wanted:
            warnings.append("max_cap %s is below demand x headroom (%s): headroom at peak is only %.0f%%"
                            % (_fmt(max_cap), _fmt(wanted), (max_cap / demand - 1) * 100))

    # memory budget: entries plus their share of buckets
    budget_bytes = int(ram_bytes * budget_pct / 100.0)
    budget_max = min(INT_MAX, int(budget_bytes // (entry_bytes + BUCKET_BYTES / float(ratio))))
    explicit_max = knobs.get("max")
    budget_limited = False
    if explicit_max is not None:
        if explicit_max != 0 and explicit_max < demand:
            raise SizingError("knobs.max", "(%s) is below the peak demand (%s): the table would overflow at peak"
                              % (_fmt(explicit_max), _fmt(demand)))
        target = explicit_max
        rationale.append("max pinned by knobs.max: %s" % ("0 (unlimited)" if explicit_max == 0 else _fmt(explicit_max)))
        if explicit_max == 0 or explicit_max > budget_max:
            warnings.append("knobs.max %s exceeds the memory budget (%s%% of %s MB allows %s entries)"
                            % ("0 (unlimited)" if explicit_max == 0 else _fmt(explicit_max), budget_pct,
                               _fmt(memory_mb), _fmt(budget_max)))
        if 0 < explicit_max < kernel_default["max"]:
            warnings.append("knobs.max %s is below the kernel's own default %s for %s MB on %s: pinned, so kept"
                            % (_fmt(explicit_max), _fmt(kernel_default["max"]), _fmt(memory_mb), _kernel_label(release)))
    elif target > budget_max:
        target = budget_max
        budget_limited = True
        rationale.append("memory budget %s%% of %s MB at %d B/entry allows %s entries (lowers max)"
                         % (budget_pct, _fmt(memory_mb), entry_bytes, _fmt(budget_max)))
        if budget_max < demand:
            warnings.append("memory budget allows %s entries, below the peak demand %s itself: expect "
                            "'table full, dropping packet' at peak; raise memory_budget_pct or shorten timeouts"
                            % (_fmt(budget_max), _fmt(demand)))
        elif budget_max < wanted:
            warnings.append("memory budget forced max to %s, below demand x headroom (%s)"
                            % (_fmt(budget_max), _fmt(wanted)))

    settings = {"max": target}
    if "buckets" in knobs:
        settings["buckets"] = knobs["buckets"]
        rationale.append("buckets pinned by knobs.buckets: %s" % _fmt(knobs["buckets"]))
    else:
        settings["buckets"] = min(MAX_BUCKETS, buckets_for(target if target else budget_max, ratio))
        if budget_limited:
            # rounding buckets up may overshoot the budget by a few KiB: take it back from max
            excess = memory_bytes(target, settings["buckets"], entry_bytes) - budget_bytes
            if excess > 0:
                target -= -(-excess // entry_bytes)
                settings["max"] = target
                settings["buckets"] = buckets_for(max(target, 1), ratio)
                rationale.append("max lowered to %s so the rounded-up buckets stay inside the budget" % _fmt(target))
        rationale.append("buckets = max / %d rounded up to a multiple of %d = %s"
                         % (ratio, BUCKET_GRANULARITY, _fmt(settings["buckets"])))

    # the kernel's own default is the floor: never plan to lower a host below what its kernel picks by itself
    floor_note = "kernel default for %s MB on %s: max %s, buckets %s" % (
        _fmt(memory_mb), _kernel_label(release), _fmt(kernel_default["max"]), _fmt(kernel_default["buckets"]))
    raised = []
    if explicit_max is None and settings["max"] < kernel_default["max"]:
        settings["max"] = target = kernel_default["max"]
        raised.append("max")
        if "buckets" not in knobs:
            settings["buckets"] = max(settings["buckets"], min(MAX_BUCKETS, buckets_for(target, ratio)))
    if "buckets" not in knobs and settings["buckets"] < kernel_default["buckets"]:
        settings["buckets"] = kernel_default["buckets"]
        raised.append("buckets")
    if raised:
        rationale.append("%s (raises %s; pin knobs.max/knobs.buckets to go lower)" % (floor_note, " and ".join(raised)))
        if budget_limited and "max" in raised:
            warnings.append("the memory budget allows fewer entries than the kernel's own default (%s): the default "
                            "is kept (entries only take memory when they exist)" % _fmt(kernel_default["max"]))
    else:
        rationale.append(floor_note + " (not below it)")
    if target < 1 and explicit_max is None:
        raise SizingError("memory_budget_pct", "leaves room for no conntrack entry at all")

    chains = chain_check(settings["max"], settings["buckets"], version)
    if settings["max"] and not chains["acceptable"] and "buckets" not in knobs:
        # the floor can mix an older kernel's max with a newer one's buckets (unknown kernel): one bucket per entry
        settings["buckets"] = min(MAX_BUCKETS, buckets_for(settings["max"], 1))
        rationale.append("buckets raised to %s so the hash chains stay within the kernel's limit"
                         % _fmt(settings["buckets"]))
        chains = chain_check(settings["max"], settings["buckets"], version)
    if settings["max"] and not chains["acceptable"]:
        # only pinned values get here: computed ones are refused above
        warnings.append("max %s over buckets %s is %.1f hash nodes per bucket at a full table: with the %s of %s "
                        "about %.2g of inserts fail and their packets drop (chaintoolong, insert_failed); raise "
                        "buckets to max" % (_fmt(settings["max"]), _fmt(settings["buckets"]), chains["nodes_per_bucket"],
                                            kernel_model.describe_limits(limits), _kernel_label(release, True),
                                            chains["insert_failure"]))
    elif settings["max"]:
        rationale.append("hash chains at a full table: %.1f nodes per bucket (each entry hashed twice), %s on %s: "
                         "expected insert failure %.2g" % (chains["nodes_per_bucket"],
                                                           kernel_model.describe_limits(limits),
                                                           _kernel_label(release, True), chains["insert_failure"]))

    # timeouts: profile, then overrides
    profile = TIMEOUT_PROFILES[profile_name]
    settings.update(profile)
    if profile:
        rationale.append("timeout profile %s: %s" % (profile_name, ", ".join(
            "%s=%d" % item for item in sorted(profile.items()))))
    else:
        rationale.append("timeout profile kernel_default: timeouts left as the kernel has them")
    for name, value in sorted(timeouts.items()):
        settings[name] = value
        rationale.append("timeout override %s=%d" % (name, value))
    for name, value in sorted(knobs.items()):
        if name in ("max", "buckets"):
            continue
        settings[name] = value
        rationale.append("explicit knob %s=%d" % (name, value))

    effective = dict(KERNEL_DEFAULT_TIMEOUTS)
    effective.update((k, v) for k, v in settings.items() if k in KERNEL_DEFAULT_TIMEOUTS)
    if effective["udp_timeout"] > effective["udp_timeout_stream"]:
        warnings.append("udp_timeout (%d s) is above udp_timeout_stream (%d s): one-way UDP flows would outlive "
                        "bidirectional ones" % (effective["udp_timeout"], effective["udp_timeout_stream"]))
    if effective["tcp_timeout_established"] <= LINUX_KEEPALIVE_SECONDS:
        warnings.append("tcp_timeout_established (%d s) is not above Linux's TCP keepalive time (%d s): idle flows "
                        "that rely on keepalive lose their entry (and a NATed flow its mapping) before the first probe"
                        % (effective["tcp_timeout_established"], LINUX_KEEPALIVE_SECONDS))
    if effective["tcp_timeout_time_wait"] < PEER_TIME_WAIT_SECONDS:
        warnings.append("tcp_timeout_time_wait (%d s) is below the TIME_WAIT peers hold (up to %d s): a SNAT port can "
                        "be reused while the peer still has the old connection" % (
                            effective["tcp_timeout_time_wait"], PEER_TIME_WAIT_SECONDS))
    if idle_tcp is not None and effective["tcp_timeout_established"] < idle_tcp:
        warnings.append("tcp_timeout_established (%d s) is shorter than the longest idle TCP flow declared "
                        "(%d s): such flows lose their entry and break (INVALID) when they resume"
                        % (effective["tcp_timeout_established"], idle_tcp))
    if idle_udp is not None and effective["udp_timeout_stream"] < idle_udp:
        warnings.append("udp_timeout_stream (%d s) is shorter than the longest idle UDP flow declared (%d s)"
                        % (effective["udp_timeout_stream"], idle_udp))
    if lifetime is not None and lifetime < effective["tcp_timeout_time_wait"]:
        warnings.append("avg_flow_lifetime (%s s) is below tcp_timeout_time_wait (%d s): closed TCP entries linger "
                        "that long, so the lifetime should include TIME_WAIT" % (lifetime, effective["tcp_timeout_time_wait"]))

    for name, value in settings.items():
        problem = check_value(name, value)
        if problem:  # pragma: no cover - the inputs are bounded so that no computed value gets here
            raise SizingError("knobs.%s" % name, problem)

    mem = memory_bytes(settings["max"], settings["buckets"], entry_bytes)
    pct = round(mem * 100.0 / ram_bytes, 2)
    rationale.append("memory at a full table: %s entries x %d B + %s buckets x %d B = %.1f MiB (%s%% of RAM)"
                     % (_fmt(settings["max"]), entry_bytes, _fmt(settings["buckets"]), BUCKET_BYTES, mem / 1048576.0, pct))
    return {
        "settings": settings,
        "memory": {"bytes": mem, "pct_of_ram": pct, "entry_bytes": entry_bytes, "budget_bytes": budget_bytes},
        "demand": demand,
        "kernel_default": kernel_default,
        "chains": chains,
        "rationale": rationale,
        "warnings": warnings,
    }


def max_ratio(limits):
    """The largest buckets_ratio whose expected insert failure at a full table stays negligible."""
    best = 1
    for ratio in range(1, MAX_BUCKETS_RATIO + 1):
        if kernel_model.insert_failure(ratio, 1, limits) <= MAX_INSERT_FAILURE:
            best = ratio
        else:
            break
    return best
