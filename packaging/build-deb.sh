#!/usr/bin/env bash
# Builds the mutual Debian package with nfpm: the binary (stamped with its
# version, commit and build date), man pages and shell completions generated
# from the command tree, systemd units, the sysusers entry and the LICENSE.
#
#   packaging/build-deb.sh [OUTDIR]    (default: dist/)
#
# Prints the path of the .deb. MUTUAL_VERSION overrides the version (default:
# from `git describe`, else 0.0.0~git<date>.<commit>); SOURCE_DATE_EPOCH dates
# the man pages.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
out=$(mkdir -p "${1:-$repo/dist}" && cd "${1:-$repo/dist}" && pwd)
nfpm_version=v2.45.2
cd "$repo"

commit=$(git rev-parse HEAD 2>/dev/null || true)
if [ -n "$commit" ] && ! git diff --quiet HEAD -- 2>/dev/null; then commit="$commit-dirty"; fi
if [ -z "${MUTUAL_VERSION:-}" ]; then
	if tag=$(git describe --tags --match 'v[0-9]*' 2>/dev/null); then
		MUTUAL_VERSION=${tag#v}
		MUTUAL_VERSION=${MUTUAL_VERSION//-/\~}
	else
		MUTUAL_VERSION="0.0.0~git$(date -u +%Y%m%d).${commit:0:12}"
		MUTUAL_VERSION=${MUTUAL_VERSION%.}
	fi
fi
export MUTUAL_VERSION GOARCH=${GOARCH:-$(go env GOARCH)}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
pkg=github.com/mutual-tls/mutual/internal/buildinfo
ldflags="-s -w -X $pkg.date=$(date -u +%Y-%m-%dT%H:%M:%SZ) -X $pkg.version=$MUTUAL_VERSION"
if [ -n "$commit" ]; then
	ldflags="$ldflags -X $pkg.commit=$commit -X $pkg.commitTime=$(git log -1 --format=%cI | sed 's/+00:00$/Z/')"
fi
go build -trimpath -ldflags "$ldflags" -o "$stage/mutual" ./cmd/mutual
go run ./packaging/gendocs -out "$stage"
gzip -9n "$stage"/man/*.1
cp -r packaging/systemd packaging/debian packaging/etc LICENSE "$stage/"

cd "$stage"
go run "github.com/goreleaser/nfpm/v2/cmd/nfpm@$nfpm_version" package --config "$repo/packaging/nfpm.yaml" --packager deb --target "$out" >&2
ls "$out"/mutual_"${MUTUAL_VERSION}"_*.deb
