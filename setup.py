"""Package build: compiles the BPF objects once (clang) into the wheel, so an installed director needs no compiler.

Everything else is in pyproject.toml. PYVS_SHIP_BPF=0 builds a wheel without objects (they are then compiled at run
time, the developer path). Editable installs ship none: a checkout compiles and caches them on use.
"""

import importlib.util
import os
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


class build_py_with_bpf(build_py):  # noqa: N801 (setuptools command naming)
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False) or os.environ.get("PYVS_SHIP_BPF", "1") == "0":
            return
        spec = importlib.util.spec_from_file_location("_pyvs_bpf_build", HERE / "src/pyvs/dataplane/build.py")
        assert spec and spec.loader
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        for obj in module.compile_shipped(Path(self.build_lib) / "pyvs" / "dataplane" / "bpf"):
            print(f"pyvs: shipped BPF object {obj}")


setup(cmdclass={"build_py": build_py_with_bpf})
