#!/bin/sh
# Compare mutual's inbound proxy with a bare crypto/tls server, nginx, Caddy, HAProxy and
# ghostunnel on loopback, and print the tables of docs/benchmarks.md and issue #15's.
#
#   GHOSTUNNEL=/path/to/ghostunnel bench/run.sh   # servers on CPU 0, load on CPU 1
#                                     # (ghostunnel is built outside the repo: bench/README.md)
#   SERVER_CPUS= LOAD_CPUS= bench/run.sh   # no pinning
#   bench/run.sh -duration 10s -keep  # extra flags go to mtlsbench run (-h)
#
# It builds ./cmd/mutual and ./bench/cmd/mtlsbench, installs Debian's nginx, caddy
# and haproxy when missing and this runs as root, and removes what it built.
set -eu
cd "$(dirname "$0")/.."

SERVER_CPUS=${SERVER_CPUS-0}
LOAD_CPUS=${LOAD_CPUS-1}

bin=$(mktemp -d "${TMPDIR:-/tmp}/mtlsbench-bin.XXXXXX")
trap 'rm -rf "$bin"' EXIT INT TERM
go build -o "$bin/mutual" ./cmd/mutual
go build -o "$bin/mtlsbench" ./bench/cmd/mtlsbench

# The peers, from Debian: nginx (binary in /usr/sbin), Caddy, HAProxy.
for pkg in nginx caddy haproxy; do
	if command -v $pkg >/dev/null 2>&1 || [ -x /usr/sbin/$pkg ]; then
		continue
	fi
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
		echo "installing $pkg from Debian" >&2
		DEBIAN_FRONTEND=noninteractive apt-get install -y $pkg >&2
	else
		echo "$pkg not found: apt-get install -y $pkg (running without it)" >&2
	fi
done

load=""
if [ -n "$LOAD_CPUS" ]; then
	load="taskset -c $LOAD_CPUS"
fi
$load "$bin/mtlsbench" run -mutual "$bin/mutual" -server-cpus "$SERVER_CPUS" "$@"
