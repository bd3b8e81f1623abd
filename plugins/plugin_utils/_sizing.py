# -*- coding: utf-8 -*-
# Copyright: nodeguard.conntrack contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Conntrack sizing: inventory numbers + host facts -> knob values, memory estimate, rationale, warnings.

Private to the collection. Pure and deterministic: takes data, returns data, never touches the host.
The ``conntrack_sizing`` filter and the ``conntrack_tuning`` role both call :func:`size`.

Rules (see docs/tuning.md):

* demand = max(peak_flows, ceil(new_flows_per_second x avg_flow_lifetime))  (Little's law; the lifetime
  must include the time an entry lingers after close, e.g. TIME_WAIT)
* max = ceil(demand x headroom), raised to the per-CPU floor and the minimum, lowered to the cap and to
  what the memory budget allows (warnings say when a limit cut below demand x headroom)
* buckets = ceil(max / buckets_ratio) rounded up to a multiple of 512 (the kernel rounds the same way)
* timeouts from a profile, then per-timeout overrides; explicit knobs last.
"""

from __future__ import absolute_import, division, print_function

__metaclass__ = type

import math

from ansible_collections.nodeguard.conntrack.plugins.module_utils._common.errors import InputError
from ansible_collections.nodeguard.conntrack.plugins.module_utils._conntrack.knobs import (
    KERNEL_DEFAULT_TIMEOUTS,
    KNOBS,
    SCOPE_READONLY,
    UnknownKnobError,
    short_name,
)

# A packet-created entry is a 256-byte slab object; entries with extensions (acct, timestamp, labels,
# ctnetlink-created) measured ~383 B. Size the budget for the larger one.
DEFAULT_ENTRY_BYTES = 384
BUCKET_BYTES = 8
BUCKET_GRANULARITY = 512
DEFAULT_HEADROOM = 1.5
DEFAULT_MEMORY_BUDGET_PCT = 5.0
DEFAULT_BUCKETS_RATIO = 4

PRESETS = {
    # kube-proxy: max(32768 x CPUs, 131072) capped at 1,048,576
    "kube_proxy": {"per_cpu_floor": 32768, "min_max": 131072, "max_cap": 1048576},
}

TIMEOUT_PROFILES = {
    # leave every timeout where the kernel has it (the checks assume the kernel defaults)
    "kernel_default": {},
    # kube-proxy's values: idle established TCP flows go after a day, half-closed ones after an hour
    "kubernetes": {
        "tcp_timeout_established": 86400,
        "tcp_timeout_close_wait": 3600,
    },
    # many short TCP connections: drop closed and half-open entries quickly so they do not fill the table
    "high_churn": {
        "tcp_timeout_established": 3600,
        "tcp_timeout_syn_sent": 60,
        "tcp_timeout_syn_recv": 30,
        "tcp_timeout_fin_wait": 30,
        "tcp_timeout_close_wait": 60,
        "tcp_timeout_last_ack": 30,
        "tcp_timeout_time_wait": 30,
        "tcp_timeout_unacknowledged": 120,
        "tcp_timeout_max_retrans": 120,
    },
    # DNS, telemetry, QUIC: keep UDP flows across idle gaps, keep TCP at the Kubernetes values
    "udp_heavy": {
        "tcp_timeout_established": 86400,
        "tcp_timeout_close_wait": 3600,
        "udp_timeout": 60,
        "udp_timeout_stream": 180,
    },
}

INPUT_FIELDS = (
    "peak_flows", "new_flows_per_second", "avg_flow_lifetime", "headroom", "preset", "per_cpu_floor",
    "min_max", "max_cap", "memory_mb", "cpus", "memory_budget_pct", "entry_bytes", "buckets_ratio",
    "timeout_profile", "timeouts", "knobs", "longest_idle_tcp_flow", "longest_idle_udp_flow",
)


class SizingError(InputError):
    """Bad sizing input. ``field`` names the offending input."""


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _int(spec, field, minimum=1, required=False):
    value = spec.get(field)
    if value is None:
        if required:
            raise SizingError(field, "is required")
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise SizingError(field, "must be an integer, got %r" % (value,))
    if value < minimum:
        raise SizingError(field, "must be >= %d, got %d" % (minimum, value))
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
        minimum = 1 if kind == "timeout" else 0
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool):
            raise SizingError("%s.%s" % (field, name), "must be an integer, got %r" % (value,))
        if value < minimum:
            raise SizingError("%s.%s" % (field, name), "must be >= %d, got %d" % (minimum, value))
        if kind == "bool" and value not in (0, 1):
            raise SizingError("%s.%s" % (field, name), "must be 0 or 1, got %d" % value)
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


def size(spec):
    """Size conntrack for one host. ``spec`` is a mapping of the INPUT_FIELDS; returns a dict with
    ``settings`` (short knob name -> int), ``memory``, ``demand``, ``rationale`` and ``warnings``."""
    if not isinstance(spec, dict):
        raise SizingError("spec", "must be a mapping, got %r" % (spec,))
    unknown = sorted(set(spec) - set(INPUT_FIELDS))
    if unknown:
        raise SizingError(unknown[0], "unknown sizing input (allowed: %s)" % ", ".join(INPUT_FIELDS))

    preset_name = spec.get("preset")
    preset = {}
    if preset_name is not None:
        if preset_name not in PRESETS:
            raise SizingError("preset", "unknown preset %r (allowed: %s)" % (preset_name, ", ".join(sorted(PRESETS))))
        preset = PRESETS[preset_name]
    merged = dict(spec)
    for key, value in preset.items():
        if merged.get(key) is None:
            merged[key] = value

    peak = _int(merged, "peak_flows")
    rate = _number(merged, "new_flows_per_second", 0, exclusive=True)
    lifetime = _number(merged, "avg_flow_lifetime", 0, exclusive=True)
    if (rate is None) != (lifetime is None):
        missing = "avg_flow_lifetime" if lifetime is None else "new_flows_per_second"
        raise SizingError(missing, "new_flows_per_second and avg_flow_lifetime go together (Little's law)")
    headroom = _number(merged, "headroom", 1, default=DEFAULT_HEADROOM)
    per_cpu_floor = _int(merged, "per_cpu_floor")
    min_max = _int(merged, "min_max")
    max_cap = _int(merged, "max_cap")
    memory_mb = _int(merged, "memory_mb", required=True)
    cpus = _int(merged, "cpus", required=True)
    budget_pct = _number(merged, "memory_budget_pct", 0, default=DEFAULT_MEMORY_BUDGET_PCT, exclusive=True, maximum=100)
    entry_bytes = _int(merged, "entry_bytes", minimum=64) or DEFAULT_ENTRY_BYTES
    ratio = _int(merged, "buckets_ratio") or DEFAULT_BUCKETS_RATIO
    if ratio > 64:
        raise SizingError("buckets_ratio", "must be <= 64 (longer hash chains cost CPU on every packet), got %d" % ratio)
    profile_name = merged.get("timeout_profile")
    if profile_name is None:
        profile_name = "kernel_default"
    if profile_name not in TIMEOUT_PROFILES:
        raise SizingError("timeout_profile", "unknown profile %r (allowed: %s)"
                          % (profile_name, ", ".join(sorted(TIMEOUT_PROFILES))))
    timeouts = _knob_map(merged, "timeouts", timeouts_only=True)
    knobs = _knob_map(merged, "knobs", timeouts_only=False)
    idle_tcp = _int(merged, "longest_idle_tcp_flow")
    idle_udp = _int(merged, "longest_idle_udp_flow")
    if min_max is not None and max_cap is not None and max_cap < min_max:
        raise SizingError("max_cap", "(%d) is below min_max (%d)" % (max_cap, min_max))

    rationale = []
    warnings = []

    # demand
    demand = 0
    if peak is not None:
        demand = peak
        rationale.append("peak concurrent flows (inventory): %s" % _fmt(peak))
    if rate is not None:
        little = int(math.ceil(rate * lifetime))
        rationale.append("Little's law: %s new flows/s x %s s average lifetime = %s concurrent flows"
                         % (_fmt(rate), lifetime, _fmt(little)))
        if little > demand:
            demand = little
    if demand == 0 and per_cpu_floor is None and min_max is None and "max" not in knobs:
        raise SizingError("peak_flows", "give peak_flows, or new_flows_per_second with avg_flow_lifetime "
                                        "(or a preset/per_cpu_floor/min_max to size without demand)")
    if max_cap is not None and max_cap < demand:
        raise SizingError("max_cap", "(%s) is below the peak demand (%s): the table would overflow at peak"
                          % (_fmt(max_cap), _fmt(demand)))
    wanted = int(math.ceil(demand * headroom))
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
    ram_bytes = memory_mb * 1024 * 1024
    budget_bytes = int(ram_bytes * budget_pct / 100.0)
    budget_max = int(budget_bytes // (entry_bytes + BUCKET_BYTES / float(ratio)))
    explicit_max = knobs.get("max")
    budget_limited = False
    if explicit_max is not None:
        if explicit_max != 0 and explicit_max < demand:
            raise SizingError("knobs.max", "(%s) is below the peak demand (%s): the table would overflow at peak"
                              % (_fmt(explicit_max), _fmt(demand)))
        target = explicit_max
        rationale.append("max pinned by knobs.max: %s" % _fmt(explicit_max))
        if explicit_max == 0 or explicit_max > budget_max:
            warnings.append("knobs.max %s exceeds the memory budget (%s%% of %s MB allows %s entries)"
                            % ("0 (unlimited)" if explicit_max == 0 else _fmt(explicit_max), budget_pct,
                               _fmt(memory_mb), _fmt(budget_max)))
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
    if target < 1:
        raise SizingError("memory_budget_pct", "leaves room for no conntrack entry at all")

    settings = {"max": target}
    if "buckets" in knobs:
        settings["buckets"] = knobs["buckets"]
        rationale.append("buckets pinned by knobs.buckets: %s" % _fmt(knobs["buckets"]))
    else:
        settings["buckets"] = buckets_for(target if target else budget_max, ratio)
        if budget_limited:
            # rounding buckets up may overshoot the budget by a few KiB: take it back from max
            excess = memory_bytes(target, settings["buckets"], entry_bytes) - budget_bytes
            if excess > 0:
                target -= -(-excess // entry_bytes)
                settings["max"] = target
                settings["buckets"] = buckets_for(target, ratio)
                rationale.append("max lowered to %s so the rounded-up buckets stay inside the budget" % _fmt(target))
        rationale.append("buckets = max / %d rounded up to a multiple of %d = %s"
                         % (ratio, BUCKET_GRANULARITY, _fmt(settings["buckets"])))

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
    if settings["buckets"] and target and target / float(settings["buckets"]) > 8:
        warnings.append("max/buckets is %.1f: long hash chains cost CPU on every packet at a full table"
                        % (target / float(settings["buckets"])))

    mem = memory_bytes(target, settings["buckets"], entry_bytes)
    pct = round(mem * 100.0 / ram_bytes, 2)
    rationale.append("memory at a full table: %s entries x %d B + %s buckets x %d B = %.1f MiB (%s%% of RAM)"
                     % (_fmt(target), entry_bytes, _fmt(settings["buckets"]), BUCKET_BYTES, mem / 1048576.0, pct))
    return {
        "settings": settings,
        "memory": {"bytes": mem, "pct_of_ram": pct, "entry_bytes": entry_bytes, "budget_bytes": budget_bytes},
        "demand": demand,
        "rationale": rationale,
        "warnings": warnings,
    }
