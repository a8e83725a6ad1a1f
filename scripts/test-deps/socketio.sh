#!/usr/bin/env bash
# Installs the reference Socket.IO server (npm `socket.io`, pinned by package-lock.json)
# used by the socketio tests into tests/peers/socketio/node_modules. Idempotent.
# It also brings the npm `ws` package (a dependency of engine.io), which the chaos tests'
# websocket peer (tests/peers/websocket/server.js) loads from there.
set -euo pipefail
cd "$(dirname "$0")/../../tests/peers/socketio"
if [ -f node_modules/socket.io/package.json ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  exit 0
fi
if ! command -v npm >/dev/null; then
  echo "socketio tests need node + npm (node 20)" >&2
  exit 1
fi
npm ci --no-audit --no-fund --loglevel=error
