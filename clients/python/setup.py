"""Builds shop-client with its generated modules (pyproject.toml has the
metadata). build_py copies src/shop_client, then codegen/generate.py writes
the modules generated from proto/ into the build folder, so they land in
the wheel and never in the source tree.

proto/ is found at $SHOP_PROTO_DIR, else ../../proto (this folder inside
the Shop repository), else ./proto (an sdist, which carries a copy).
"""
import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.sdist import sdist

HERE = Path(__file__).resolve().parent


def proto_dir() -> Path:
    for cand in (os.environ.get("SHOP_PROTO_DIR"), HERE.parent.parent / "proto", HERE / "proto"):
        if cand and Path(cand, "shop").is_dir():
            return Path(cand)
    raise SystemExit("shop-client: proto/ not found (set SHOP_PROTO_DIR to Shop's proto/ folder)")


class BuildPyWithProtos(build_py):
    def run(self) -> None:
        super().run()
        sys.path.insert(0, str(HERE / "codegen"))
        import generate  # noqa: E402  (codegen/generate.py)

        protos = generate.generate(proto_dir(), Path(self.build_lib))
        print(f"shop-client: generated from {len(protos)} proto files")


class SdistWithProtos(sdist):
    def make_release_tree(self, base_dir: str, files: list) -> None:
        super().make_release_tree(base_dir, files)
        shutil.copytree(proto_dir(), Path(base_dir) / "proto", dirs_exist_ok=True)
        # The program list, where codegen/generate.py looks for it beside proto/.
        programs = proto_dir().parent / "internal" / "config" / "programs.list"
        (Path(base_dir) / "internal" / "config").mkdir(parents=True, exist_ok=True)
        shutil.copy(programs, Path(base_dir) / "internal" / "config" / "programs.list")
        shutil.copytree(HERE / "codegen", Path(base_dir) / "codegen", dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))


setup(cmdclass={"build_py": BuildPyWithProtos, "sdist": SdistWithProtos})
