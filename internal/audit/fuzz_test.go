package audit_test

import (
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/audit"
	"github.com/mutual-tls/mutual/internal/authz"
)

// The fuzz targets below read what an operator writes on a host: env
// files, MUTUAL_ARGS, policy files. Seeds live in testdata/fuzz/<Target>;
// TestFuzzSeedsLoad proves they are there and parse as seeds.

// singleQuote quotes a word for SplitArgs (and a shell).
func singleQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// FuzzSplitArgs: never panics, and the words it returns, quoted again,
// split back into the same words.
func FuzzSplitArgs(f *testing.F) {
	f.Add(`--allow "spiffe://td/a b" --x='y z' a\ b`)
	f.Fuzz(func(t *testing.T, s string) {
		words, err := audit.SplitArgs(s)
		if err != nil {
			return
		}
		quoted := make([]string, len(words))
		for i, w := range words {
			quoted[i] = singleQuote(w)
		}
		again, err := audit.SplitArgs(strings.Join(quoted, " "))
		if err != nil || strings.Join(again, "\x00") != strings.Join(words, "\x00") || len(again) != len(words) {
			t.Fatalf("%q split into %q, which quoted splits into %q (%v)", s, words, again, err)
		}
	})
}

// FuzzParseEnvFile: never panics; every key it returns is a name.
func FuzzParseEnvFile(f *testing.F) {
	f.Add([]byte("# c\nMUTUAL_ARGS=\"--listen :1 \\\n --mode permissive\"\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := audit.ParseEnvFile(data)
		if err != nil {
			if env != nil || err.Error() == "" {
				t.Fatalf("an error with a result or no message: %v", err)
			}
			return
		}
		for k := range env {
			if k == "" || strings.ContainsAny(k, "= \t\"'\n") {
				t.Fatalf("key %q", k)
			}
		}
	})
}

// FuzzProxyFlags: MUTUAL_ARGS never panics the flag reader, and what it
// accepts is well formed: a mode, list items without commas, a metrics URL.
func FuzzProxyFlags(f *testing.F) {
	f.Add("--listen :8443 --allow spiffe://td/a,spiffe://td/b --mode=permissive --no-revocation --metrics 127.0.0.1:9")
	f.Fuzz(func(t *testing.T, s string) {
		args, err := audit.SplitArgs(s)
		if err != nil {
			return
		}
		pc, err := audit.ProxyFlags(args)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("empty error")
			}
			return
		}
		if pc.Mode == "" && !strings.Contains(s, "mode") {
			t.Fatalf("no mode from %q", s)
		}
		for _, l := range [][]string{pc.Allow, pc.Expect, pc.CA} {
			for _, v := range l {
				if v == "" || strings.Contains(v, ",") {
					t.Fatalf("list item %q from %q", v, s)
				}
			}
		}
		if pc.Metrics != "" && !strings.HasPrefix(pc.Metrics, "http://") {
			t.Fatalf("metrics %q", pc.Metrics)
		}
	})
}

// FuzzPolicyFindings: any policy file is judged without panicking; every
// finding names the file and a fix; a policy mutual loads is never called
// invalid, and one it refuses always is.
func FuzzPolicyFindings(f *testing.F) {
	f.Add([]byte("rules:\n  - ids: [\"*\"]\n"), "example.org")
	f.Fuzz(func(t *testing.T, data []byte, own string) {
		fs := audit.PolicyFindings("p.yaml", data, own)
		_, perr := authz.Parse(data)
		invalid := false
		for _, f := range fs {
			if f.ID == "" || f.Title == "" || f.Fix == "" || !strings.HasPrefix(f.Evidence, "p.yaml") {
				t.Fatalf("finding %+v", f)
			}
			invalid = invalid || f.ID == "policy-invalid"
		}
		if invalid != (perr != nil) {
			t.Fatalf("policy-invalid %v, but authz.Parse says %v", invalid, perr)
		}
	})
}

// TestFuzzSeedsLoad: each fuzz target has seed files that Go can read.
func TestFuzzSeedsLoad(t *testing.T) {
	for _, target := range []string{"FuzzSplitArgs", "FuzzParseEnvFile", "FuzzProxyFlags", "FuzzPolicyFindings"} {
		seeds, _ := filepath.Glob(filepath.Join("testdata", "fuzz", target, "*"))
		if len(seeds) < 3 {
			t.Errorf("%s: %d seed files in testdata/fuzz, want at least 3", target, len(seeds))
		}
		for _, p := range seeds {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if lines[0] != "go test fuzz v1" || len(lines) < 2 {
				t.Errorf("%s is not a seed file", p)
				continue
			}
			for _, l := range lines[1:] {
				_, lit, ok := strings.Cut(l, "(")
				if _, err := strconv.Unquote(strings.TrimSuffix(lit, ")")); !ok || err != nil {
					t.Errorf("%s: %q does not unquote: %v", p, l, err)
				}
			}
		}
	}
}
