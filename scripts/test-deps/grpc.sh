#!/usr/bin/env bash
# Installs the real gRPC server the grpc tests start (tests/peers/grpc/health_server.py):
# PyPI grpcio + grpcio-health-checking. Idempotent.
set -euo pipefail
if python3 -c "import grpc, grpc_health.v1.health" 2>/dev/null; then
  exit 0
fi
python3 -m pip install --quiet "grpcio>=1.60" "grpcio-health-checking>=1.60"
