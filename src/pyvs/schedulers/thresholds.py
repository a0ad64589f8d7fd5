"""IPVS's connection thresholds (ipvsadm -x, -y): when a real's OVERLOAD flag is set and cleared. The data plane does
the same (bpf/adm.h); the schedulers skip an overloaded real each as its IPVS counterpart does (RealState.overloaded).

- ip_vs_bind_dest: after a connection is bound, set when activeconns + inactconns >= u_threshold (u_threshold > 0);
- ip_vs_unbind_dest: after one is unbound, cleared when the total is below l_threshold, or without one below 3/4 of
  u_threshold, or at once when neither is set;
- __ip_vs_update_dest: writing the thresholds clears it when the new u_threshold is 0 or above the old one.
"""

from __future__ import annotations


def after_bind(overloaded: bool, total: int, upper: int) -> bool:
    return overloaded or (upper != 0 and total >= upper)


def after_unbind(overloaded: bool, total: int, upper: int, lower: int) -> bool:
    if not overloaded:
        return False
    if lower:
        return total >= lower
    if upper:
        return total * 4 >= upper * 3
    return False


def after_edit(overloaded: bool, old_upper: int, new_upper: int) -> bool:
    return overloaded and new_upper != 0 and new_upper <= old_upper
