#!/usr/bin/env bash
# Runs mutual's SPIRE interop test (interop/spire) against a real SPIRE
# server. The test builds spire-server from tools/go.mod (SPIRE v1.13.3,
# from the Go module proxy) into $XDG_CACHE_HOME/mutual-interop or
# ~/.cache/mutual-interop, reused across runs. A cold build of SPIRE takes
# far longer than go test's default 10-minute -timeout, so plain
# `go test ./...` skips the test and this script turns it on with a longer
# one. CI=1 turns "SPIRE cannot be built" into a failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export MUTUAL_INTEROP_SPIRE=1
exec go test -count=1 -timeout "${TIMEOUT:-90m}" -v -run 'TestSPIRE' ./interop/spire/ "$@"
