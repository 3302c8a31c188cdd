"""The vendored standard protos: protos/grpc/health/v1/health.proto is the health service every
port answers, the same contract as the grpcio-health-checking stubs the Python side uses."""

import os
import subprocess
import sys

from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HEALTH = os.path.join(ROOT, "protos", "grpc", "health", "v1", "health.proto")


def shape(file: descriptor_pb2.FileDescriptorProto) -> dict:
    """Package, messages (fields: name, number, type, label, type name, nested enums) and methods."""

    def message(m):
        return {
            "fields": [(f.name, f.number, f.type, f.label, f.type_name) for f in m.field],
            "enums": {e.name: [(v.name, v.number) for v in e.value] for e in m.enum_type},
            "nested": {n.name: message(n) for n in m.nested_type},
        }

    return {
        "package": file.package,
        "messages": {m.name: message(m) for m in file.message_type},
        "methods": {
            s.name: sorted((r.name, r.input_type, r.output_type, r.server_streaming) for r in s.method)
            for s in file.service
        },
    }


def test_the_vendored_health_proto_keeps_its_licence_header():
    with open(HEALTH, encoding="utf-8") as f:
        head = f.read(600)
    assert head.startswith("// Copyright 2015 The gRPC Authors") and "Apache License, Version 2.0" in head


def test_the_vendored_health_proto_matches_the_served_health_service(tmp_path):
    out = tmp_path / "health.pb"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "grpc_tools.protoc",
            f"-I{os.path.join(ROOT, 'protos')}",
            f"--descriptor_set_out={out}",
            "grpc/health/v1/health.proto",
        ],
        check=True,
    )
    vendored = descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes()).file[0]
    served = descriptor_pb2.FileDescriptorProto()
    health_pb2.DESCRIPTOR.CopyToProto(served)
    assert vendored.name == "grpc/health/v1/health.proto"  # grpcio-health-checking names it grpc_health/...
    assert shape(vendored) == shape(served)
    assert {m[0] for m in shape(vendored)["methods"]["Health"]} == {"Check", "List", "Watch"}
