"""The Python mirrors of the shared structs match the compiled object's BTF, member by member."""

from __future__ import annotations

import ctypes
import json
import subprocess

import pytest

from pyvs.dataplane import abi
from pyvs.dataplane.build import object_path
from pyvs.model import ALL_SCHEDULERS


@pytest.fixture(scope="module")
def btf_structs() -> dict[str, dict[str, object]]:
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(object_path("xdp"))],
                         check=True, capture_output=True, text=True).stdout
    return {t["name"]: t for t in json.loads(out)["types"] if t.get("kind") == "STRUCT" and t.get("name")}


@pytest.mark.parametrize("c_name", sorted(abi.MIRRORS))
def test_mirror_matches_btf(btf_structs: dict[str, dict[str, object]], c_name: str) -> None:
    mirror = abi.MIRRORS[c_name]
    btf = btf_structs[c_name]
    assert ctypes.sizeof(mirror) == btf["size"]
    members = btf["members"]
    assert isinstance(members, list)
    assert [m["name"] for m in members] == [name for name, _ in mirror._fields_]
    for member in members:
        assert getattr(mirror, member["name"]).offset * 8 == member["bits_offset"], member["name"]


def test_constants_come_from_the_header() -> None:
    defines = abi.read_defines()
    assert abi.MAX_SERVICES == defines["PYVS_MAX_SERVICES"]
    assert set(abi.SCHEDULER_IDS) == set(ALL_SCHEDULERS)
    assert abi.STATE_NAMES[abi.STATES["FIN_WAIT"]] == "FIN_WAIT"
    # The counters are numbered without gaps (helpers' ranges were closed by the merge): 0..PYVS_CNT_COUNT-1.
    assert sorted(abi.COUNTER_NAMES) == list(range(defines["PYVS_CNT_COUNT"]))
    # Flags of one field never share a bit.
    for prefix in ("PYVS_CFG_", "PYVS_SVC_F_", "PYVS_REAL_"):
        values = [value for name, value in defines.items() if name.startswith(prefix)]
        assert all(v and not v & (v - 1) for v in values), prefix
        assert len(set(values)) == len(values), prefix
    assert set(abi.DEFAULT_TIMEOUTS) == set(abi.STATES)
