package buildinfo

import (
	"fmt"
	"runtime/debug"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
)

func TestFromBuildInfo(t *testing.T) {
	for _, tc := range []struct {
		name string
		bi   *debug.BuildInfo
		ok   bool
		want Info
	}{
		{"no build info", nil, false, Info{Version: "devel", Commit: Unknown, CommitTime: Unknown}},
		{"work tree, no vcs stamp", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}}, true,
			Info{Version: "devel", Commit: Unknown, CommitTime: Unknown, GoVersion: "go1.26.8"}},
		{"released, clean", &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v1.2.3"}, Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.time", Value: "2026-12-01T10:00:00Z"}, {Key: "vcs.modified", Value: "false"},
		}}, true, Info{Version: "v1.2.3", Commit: "abc123", CommitTime: "2026-12-01T10:00:00Z", GoVersion: "go1.26.8"}},
		{"dirty tree", &debug.BuildInfo{GoVersion: "go1.26.8", Settings: []debug.BuildSetting{
			{Key: "vcs.revision", Value: "abc123"}, {Key: "vcs.modified", Value: "true"},
		}}, true, Info{Version: "devel", Commit: "abc123-dirty", CommitTime: Unknown, GoVersion: "go1.26.8"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := fromBuildInfo(tc.bi, tc.ok)
			tc.want.BuildDate = Unknown
			if tc.want.GoVersion == "" {
				tc.want.GoVersion = got.GoVersion // runtime.Version()
			}
			if got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestRegisterTwiceAndExpose(t *testing.T) {
	reg := prometheus.NewRegistry()
	Register(reg)
	Register(reg) // a second registry user must not panic
	in := Read()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	if len(mfs) != 1 || mfs[0].GetName() != "mutual_build_info" || len(mfs[0].GetMetric()) != 1 {
		t.Fatalf("gathered %v, want one mutual_build_info sample", mfs)
	}
	m := mfs[0].GetMetric()[0]
	if m.GetGauge().GetValue() != 1 {
		t.Errorf("value %v, want 1", m.GetGauge().GetValue())
	}
	labels := map[string]string{}
	for _, l := range m.GetLabel() {
		labels[l.GetName()] = l.GetValue()
	}
	want := map[string]string{"version": in.Version, "commit": in.Commit, "build_date": in.BuildDate, "goversion": in.GoVersion}
	if fmt.Sprint(labels) != fmt.Sprint(want) {
		t.Errorf("labels %v, want %v", labels, want)
	}
}
