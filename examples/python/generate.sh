#!/usr/bin/env bash
# Generates the Python gRPC stubs of dualseal.v1 from the proto into examples/python/gen (or
# $1). Needs: python3 -m pip install grpcio-tools
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/gen}"
mkdir -p "$out"
python3 -m grpc_tools.protoc -I "$here/../../proto" \
    --python_out="$out" --grpc_python_out="$out" \
    "$here/../../proto/dualseal/v1/control.proto"
# grpc_tools writes dualseal/v1/...; make the packages importable.
touch "$out/dualseal/__init__.py" "$out/dualseal/v1/__init__.py"
