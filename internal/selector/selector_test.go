package selector

import "testing"

func TestParseAndMatch(t *testing.T) {
	w := Workload{UID: 1001, GID: 100, User: "web", Path: "/usr/bin/web", SHA256: "aa" + string(make([]byte, 0))}
	for _, tc := range []struct {
		sel   string
		ok    bool
		match bool
	}{
		{"unix:uid:1001", true, true},
		{"unix:uid:01001", true, true},
		{"unix:uid:7", true, false},
		{"unix:gid:100", true, true},
		{"unix:user:web", true, true},
		{"unix:path:/usr/bin/web", true, true},
		{"unix:path:/usr/bin/../bin/web", false, false},
		{"unix:path:relative", false, false},
		{"unix:sha256:zz", false, false},
		{"unix:uid:-1", false, false},
		{"k8s:ns:default", false, false},
		{"unix:uid", false, false},
	} {
		s, err := Parse(tc.sel)
		if (err == nil) != tc.ok {
			t.Fatalf("Parse(%q) error %v, want ok=%v", tc.sel, err, tc.ok)
		}
		if err == nil && s.Match(w) != tc.match {
			t.Errorf("%q matches %+v: %v, want %v", tc.sel, w, !tc.match, tc.match)
		}
	}
	if _, err := ParseAll(nil); err == nil {
		t.Fatal("an entry without selectors was accepted")
	}
	if MatchAll(nil, w) {
		t.Fatal("no selectors must match nothing")
	}
}

// FuzzParse: selectors from the API never panic the parser, and a parsed
// selector's canonical form parses to itself.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"unix:uid:1001", "unix:path:/usr/bin/web", "unix:sha256:" + "ab" + "cd", "unix:user:www-data", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(sel.String())
		if err != nil || again != sel {
			t.Fatalf("%q parsed to %q, which parses to %q (%v)", s, sel, again, err)
		}
	})
}
