// Package buildinfo says which build of mutual is running: the module
// version, the VCS commit and its time, and the build date, read from the
// Go build information embedded in the binary. Fields the build did not
// record read "devel" or "unknown" rather than a guess.
package buildinfo

import (
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// Unknown stands for a field the build did not record.
const Unknown = "unknown"

// date (the build date), commit, commitTime and version are set by the
// package build (packaging/build-deb.sh) with
// -ldflags "-X .../internal/buildinfo.date=...".
// Go's build information has no build time, no version for a binary built
// from a work tree, and no commit under -buildvcs=false. Each, when set, wins.
var date, commit, commitTime, version string

// Info identifies one build.
type Info struct {
	// Version is the module version ("v1.2.3"), or "devel" for a build
	// from a work tree (`go build`, `go run`).
	Version string `json:"version"`
	// Commit is the VCS revision, with "-dirty" when the tree had
	// uncommitted changes; "unknown" when the build did not stamp it
	// (-buildvcs=false, or no git at build time).
	Commit string `json:"commit"`
	// CommitTime is the commit's time (RFC 3339), or "unknown".
	CommitTime string `json:"commit_time"`
	// BuildDate is the date the package build stamped, or "unknown".
	BuildDate string `json:"build_date"`
	// GoVersion is the Go toolchain that built the binary.
	GoVersion string `json:"go_version"`
}

// Read returns this binary's build identity.
func Read() Info {
	return fromBuildInfo(debug.ReadBuildInfo())
}

func fromBuildInfo(bi *debug.BuildInfo, ok bool) Info {
	in := Info{Version: "devel", Commit: Unknown, CommitTime: Unknown, BuildDate: Unknown, GoVersion: runtime.Version()}
	if !ok || bi == nil {
		return stamped(in)
	}
	if v := bi.Main.Version; v != "" && v != "(devel)" {
		in.Version = v
	}
	if bi.GoVersion != "" {
		in.GoVersion = bi.GoVersion
	}
	dirty := false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			in.Commit = s.Value
		case "vcs.time":
			in.CommitTime = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if dirty && in.Commit != Unknown {
		in.Commit += "-dirty"
	}
	return stamped(in)
}

// stamped applies what the package build set with -ldflags.
func stamped(in Info) Info {
	if version != "" {
		in.Version = version
	}
	if commit != "" {
		in.Commit = commit
	}
	if commitTime != "" {
		in.CommitTime = commitTime
	}
	if date != "" {
		in.BuildDate = date
	}
	return in
}

// String renders the identity on one line, as `mutual --version` prints it.
func (in Info) String() string {
	return fmt.Sprintf("mutual %s (commit %s, committed %s, built %s, %s)", in.Version, in.Commit, in.CommitTime, in.BuildDate, in.GoVersion)
}

// Register adds the mutual_build_info gauge (always 1, the identity in its
// labels) to reg, unless reg has it already.
func Register(reg prometheus.Registerer) {
	in := Read()
	g := prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mutual_build_info",
		Help: "Always 1; the labels say which build of mutual is running.",
		ConstLabels: prometheus.Labels{
			"version": in.Version, "commit": in.Commit, "build_date": in.BuildDate, "goversion": in.GoVersion,
		},
	})
	g.Set(1)
	var are prometheus.AlreadyRegisteredError
	if err := reg.Register(g); err != nil && !errors.As(err, &are) {
		panic(fmt.Sprintf("mutual_build_info: %v", err))
	}
}
