#!/usr/bin/env python3
"""Generates shop_client's modules from proto/.

    python codegen/generate.py --proto ../../proto --out DIR [--copy-package]

Writes into DIR/shop_client/ (DIR is a folder on sys.path):
  pb/**/<file>_pb2.py, .pyi  protoc's Python output (message classes, stubs)
  pb/**/<file>_shop.py       protoc-gen-shop: one class per service
  pb/**/__init__.py          protoc-gen-shop: each proto package's names
  _generated.py              protoc-gen-shop: SERVICES, PROTO_MODULES, Shop
  _programs.py               ENDPOINT_KEYS: the endpoint keys in the order of
                             internal/config/programs.list (a config that
                             gives endpoints.port_base derives each from it)
With --copy-package it first copies the hand-written package
(src/shop_client) into DIR, so DIR is a complete, importable tree (what the
CMake target does). The package build (setup.py) calls generate() on its
build folder instead.

protoc is grpcio-tools' (python -m grpc_tools.protoc), so the gencode
matches the protobuf runtime this package requires, and google/protobuf/*.proto
(descriptor.proto, for google/api/annotations.proto) come with it. Every
module lives under shop_client.pb: protoc's Python output would otherwise
write top-level packages named after the proto paths (grpc, google, shop)
that shadow the real grpc and google packages, so the imports between
generated modules are rewritten to the prefix (imports of google.protobuf,
the runtime's own, are left alone).
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import stat
import sys
import tempfile
from pathlib import Path
from typing import List, Sequence

PREFIX = "shop_client.pb"
# Every Shop server answers these on every endpoint (internal/rpc/rpc.h):
# the client serves them on every channel rather than as Shop properties.
EVERYWHERE = ("grpc.health.v1.Health", "shop.rpc.v1.ServerReflectionService")
HERE = Path(__file__).resolve().parent


def find_protos(proto_dir: Path) -> List[str]:
    return sorted(
        p.relative_to(proto_dir).as_posix()
        for p in proto_dir.rglob("*.proto")
        # Files of the protobuf runtime, should proto/ ever vendor them,
        # come from the runtime.
        if not p.relative_to(proto_dir).as_posix().startswith("google/protobuf/")
    )


def _plugin_launcher(tmp: Path) -> Path:
    """protoc runs a plugin as an executable: a small script that starts
    the plugin with this very Python (the build's, with protobuf)."""
    path = tmp / "protoc-gen-shop"
    path.write_text(
        f"#!{sys.executable}\n"
        "import runpy, sys\n"
        f"sys.path.insert(0, {str(HERE)!r})\n"
        "runpy.run_path(" + repr(str(HERE / "protoc_gen_shop.py")) + ", run_name='__main__')\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


def rewrite_imports(pb_root: Path, protos: Sequence[str]) -> None:
    """Points the imports between generated modules at shop_client.pb, and
    the module names the gencode gives its classes."""
    mods = {p[: -len(".proto")].replace("-", "_").replace("/", ".") + "_pb2" for p in protos}
    pat_from = re.compile(r"^from ([\w.]+) import (\w+_pb2)\b", re.M)
    pat_import = re.compile(r"^import ([\w.]+_pb2)\b", re.M)
    pat_builder = re.compile(r"(BuildTopDescriptorsAndMessages\(DESCRIPTOR, ')([\w.]+_pb2)(')")

    def fix_from(m: "re.Match[str]") -> str:
        full = f"{m.group(1)}.{m.group(2)}"
        return f"from {PREFIX}.{m.group(1)} import {m.group(2)}" if full in mods else m.group(0)

    def fix_import(m: "re.Match[str]") -> str:
        return f"import {PREFIX}.{m.group(1)}" if m.group(1) in mods else m.group(0)

    for f in list(pb_root.rglob("*_pb2.py")) + list(pb_root.rglob("*_pb2.pyi")):
        text = f.read_text()
        new = pat_from.sub(fix_from, text)
        new = pat_import.sub(fix_import, new)
        new = pat_builder.sub(lambda m: m.group(1) + PREFIX + "." + m.group(2) + m.group(3), new)
        if new != text:
            f.write_text(new)


def generate(proto_dir: Path, out_dir: Path) -> List[str]:
    """Writes the generated modules into out_dir/shop_client. Returns the
    proto files it compiled."""
    from grpc_tools import protoc  # type: ignore[import-untyped]
    import grpc_tools

    proto_dir = proto_dir.resolve()
    protos = find_protos(proto_dir)
    if not protos:
        raise SystemExit(f"generate: no .proto files under {proto_dir}")
    pb_root = out_dir / PREFIX.replace(".", "/")
    if pb_root.exists():
        shutil.rmtree(pb_root)
    pb_root.mkdir(parents=True)
    well_known = Path(grpc_tools.__file__).resolve().parent / "_proto"
    with tempfile.TemporaryDirectory() as tmp:
        plugin = _plugin_launcher(Path(tmp))
        args = [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{well_known}",
            f"--python_out={pb_root}",
            f"--pyi_out={pb_root}",
            f"--plugin=protoc-gen-shop={plugin}",
            f"--shop_out=prefix={PREFIX},everywhere={';'.join(EVERYWHERE)}:{out_dir}",
            *protos,
        ]
        rc = protoc.main(args)
        if rc != 0:
            raise SystemExit(f"generate: protoc failed ({rc}): {' '.join(args)}")
    rewrite_imports(pb_root, protos)
    write_programs(proto_dir, out_dir)
    return protos


def write_programs(proto_dir: Path, out_dir: Path) -> None:
    """ENDPOINT_KEYS from internal/config/programs.list, the one list of the
    programs (beside proto/ in the repository)."""
    candidates = [proto_dir.parent / "internal" / "config" / "programs.list",
                  HERE.parent.parent.parent / "internal" / "config" / "programs.list"]
    listing = next((c for c in candidates if c.exists()), candidates[0])
    keys: List[str] = []
    for line in listing.read_text().splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and fields[1] != "-":
            keys.append(fields[1])
    (out_dir / "shop_client" / "_programs.py").write_text(
        '"""Generated from internal/config/programs.list by codegen/generate.py."""\n'
        f"ENDPOINT_KEYS = {tuple(keys)!r}\n")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--proto", type=Path, default=HERE.parent.parent.parent / "proto")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--copy-package", action="store_true",
                    help="copy src/shop_client into --out first")
    ap.add_argument("--stamp", type=Path, help="touch this file on success")
    a = ap.parse_args(argv)
    out = a.out.resolve()
    if a.copy_package:
        dst = out / "shop_client"
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(HERE.parent / "src" / "shop_client", dst,
                        ignore=shutil.ignore_patterns("__pycache__", "pb", "_generated.py", "_programs.py"))
    protos = generate(a.proto, out)
    if a.stamp:
        a.stamp.parent.mkdir(parents=True, exist_ok=True)
        a.stamp.write_text("".join(p + "\n" for p in protos))
    print(f"generate: {len(protos)} proto files -> {out / 'shop_client'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
