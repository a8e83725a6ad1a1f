#!/usr/bin/env bash
# Installs the real gRPC server the grpc tests start (tests/peers/grpc/health_server.py):
# PyPI grpcio + grpcio-health-checking. Uses python3 as it is when it already has them,
# otherwise a venv in tests/peers/grpc/venv (Debian's python refuses system-wide pip
# installs), which the tests prefer when present. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/../../tests/peers/grpc"
probe='import grpc, grpc_health.v1.health'
if [ -x venv/bin/python3 ] && venv/bin/python3 -c "$probe" 2>/dev/null; then
  exit 0
fi
if python3 -c "$probe" 2>/dev/null; then
  exit 0
fi
python3 -m venv venv
venv/bin/python3 -m pip install --quiet "grpcio>=1.60" "grpcio-health-checking>=1.60"
