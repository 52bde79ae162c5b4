#!/bin/sh
# Certificate issuance through the HTTPS API, side by side: mutual on SQLite at
# concurrency 1 and 64, step-ca in the same run, and mutual on one PostgreSQL
# (fsync on) with 1, 2 and 3 replicas; prints issue #22's table and the CPU time
# per issuance (bench/README.md).
#
#   bench/issuance.sh                        # step-ca from $STEP_CA or ../peers/step-ca
#   STEP_CA= bench/issuance.sh -replicas ''  # mutual on SQLite alone
#   bench/issuance.sh -n64 20000 -keep       # extra flags go to enrollbench (-h)
set -eu
cd "$(dirname "$0")/.."

bin=$(mktemp -d "${TMPDIR:-/tmp}/enrollbench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT INT TERM
go build -o "$bin/mutual" ./cmd/mutual
go build -o "$bin/enrollbench" ./bench/cmd/enrollbench

if [ -z "${STEP_CA+set}" ]; then
	STEP_CA=
	for c in ../peers/step-ca /work/peers/step-ca "$(command -v step-ca || true)"; do
		if [ -n "$c" ] && [ -x "$c" ]; then
			STEP_CA=$c
			break
		fi
	done
	[ -n "$STEP_CA" ] || echo "step-ca not found (bench/README.md says how to build it): mutual alone" >&2
fi
if [ -n "$STEP_CA" ]; then
	"$bin/enrollbench" -mutual "$bin/mutual" -step-ca "$STEP_CA" "$@"
else
	"$bin/enrollbench" -mutual "$bin/mutual" "$@"
fi
