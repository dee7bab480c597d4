"""How the client is made: the package build generates it from proto/ (a
wheel built offline here, as `pip install ./clients/python` builds one), and
proto/ alone decides what it holds: a new RPC appears after a rebuild, and
imports of google/api/annotations.proto work without shadowing the real
google or grpc packages."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

from conftest import REPO

CLIENT = REPO / "clients" / "python"


def test_the_package_build_generates_the_modules_into_the_wheel(tmp_path):
    src = tmp_path / "src"
    shutil.copytree(CLIENT, src, ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    env = {**os.environ, "SHOP_PROTO_DIR": str(REPO / "proto"), "PIP_NO_INDEX": "1"}
    p = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                        "-q", "-w", str(tmp_path / "dist"), str(src)],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    wheel = next((tmp_path / "dist").glob("shop_client-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    for want in ["shop_client/py.typed", "shop_client/_generated.py",
                 "shop_client/pb/shop/order/v1/commands_pb2.py",
                 "shop_client/pb/shop/order/v1/commands_pb2.pyi",
                 "shop_client/pb/shop/order/v1/commands_shop.py",
                 "shop_client/pb/grpc/health/v1/health_pb2.py"]:
        assert want in names, want
    assert not any(n.startswith(("grpc/", "google/", "shop/")) for n in names), \
        "no top-level package that would shadow grpc, google or another shop"
    assert not (CLIENT / "src" / "shop_client" / "pb").exists(), "nothing generated in the tree"

    site = tmp_path / "site"
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                        "--target", str(site), str(wheel)], capture_output=True, text=True,
                       timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    probe = textwrap.dedent("""
        import importlib.util, shop_client
        from shop_client.pb.grpc.health.v1 import HealthCheckRequest, Health
        print(shop_client.__file__)
        print(HealthCheckRequest.DESCRIPTOR.file.name)
        print(importlib.util.find_spec("grpc").origin)
        print(sorted(shop_client.SERVICES)[0])
    """)
    env = {**os.environ, "PYTHONPATH": str(site)}
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    file_, health_file, grpc_origin, first = p.stdout.split()
    assert file_.startswith(str(site))
    assert health_file == "grpc/health/v1/health.proto", "the descriptor keeps its proto path"
    assert not grpc_origin.startswith(str(site)), "the real grpc package is not shadowed"
    assert first == "grpc.health.v1.Health"


def test_a_new_rpc_and_google_api_annotations_in_proto_appear_after_a_rebuild(tmp_path):
    proto = tmp_path / "proto"
    shutil.copytree(REPO / "proto", proto)
    (proto / "google" / "api").mkdir(parents=True, exist_ok=True)
    if not (proto / "google" / "api" / "annotations.proto").exists():
        (proto / "google" / "api" / "annotations.proto").write_text(textwrap.dedent("""
            syntax = "proto3";
            package google.api;
            import "google/protobuf/descriptor.proto";
            extend google.protobuf.MethodOptions { HttpRule http = 72295728; }
            message HttpRule { string get = 2; string post = 4; string body = 7; }
        """))
    echo = proto / "shop" / "testing" / "v1" / "echo.proto"
    text = echo.read_text().replace(
        'package shop.testing.v1;', 'package shop.testing.v1;\n\nimport "google/api/annotations.proto";')
    text = text.replace("service EchoService {", textwrap.dedent("""\
        service EchoService {
          // PingPong answers pong: a method only this test's proto has.
          rpc PingPong(PingPongRequest) returns (PingPongResponse) {
            option (google.api.http) = {get: "/v1/ping"};
          }"""), 1)
    text += "\nmessage PingPongRequest {}\n\nmessage PingPongResponse {\n  string pong = 1;\n}\n"
    echo.write_text(text)
    out = tmp_path / "out"
    p = subprocess.run([sys.executable, str(CLIENT / "codegen" / "generate.py"), "--proto",
                        str(proto), "--out", str(out), "--copy-package"],
                       capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stdout + p.stderr
    probe = textwrap.dedent("""
        import google.protobuf, shop_client
        from shop_client.pb.shop.testing import v1 as t
        from shop_client.pb.google.api import annotations_pb2
        m = t.EchoService.METHODS["PingPong"]
        print(m.path, m.response.DESCRIPTOR.full_name)
        print("pinged" if "answers pong" in t.EchoService.ping_pong.__doc__ else "no doc")
        print(annotations_pb2.DESCRIPTOR.name, google.protobuf.__file__)
    """)
    env = {**os.environ, "PYTHONPATH": str(out)}
    p = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "/shop.testing.v1.EchoService/PingPong shop.testing.v1.PingPongResponse"
    assert lines[1] == "pinged"
    name, pb_file = lines[2].split()
    assert name == "google/api/annotations.proto"
    assert str(out) not in pb_file, "google.protobuf is still the runtime's"
