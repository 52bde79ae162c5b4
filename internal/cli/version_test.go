package cli_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/buildinfo"
)

// TestVersion: `mutual version`, `--json` and `--version` all say which
// build this is, the same way.
func TestVersion(t *testing.T) {
	want := buildinfo.Read()
	out, err := run("version", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var got buildinfo.Info
	if err := json.Unmarshal([]byte(out), &got); err != nil {
		t.Fatalf("version --json: %v\n%s", err, out)
	}
	if got != want {
		t.Errorf("version --json = %+v, want %+v", got, want)
	}
	out, err = run("version")
	if err != nil || !strings.Contains(out, "version:     "+want.Version+"\n") || !strings.Contains(out, "commit:      "+want.Commit+"\n") {
		t.Errorf("version: %v\n%s", err, out)
	}
	out, err = run("--version")
	if err != nil || out != want.String()+"\n" {
		t.Errorf("--version = %q, %v; want %q", out, err, want.String()+"\n")
	}
}

// TestCompletion: scripts for the three shells, and a clear refusal of
// others.
func TestCompletion(t *testing.T) {
	for shell, marker := range map[string]string{"bash": "complete -o default -F __start_mutual mutual", "zsh": "#compdef mutual", "fish": "complete -c mutual"} {
		out, err := run("completion", shell)
		if err != nil || !strings.Contains(out, marker) {
			t.Errorf("completion %s: %v; no %q in the script", shell, err, marker)
		}
	}
	if _, err := run("completion", "ksh"); err == nil || !strings.Contains(err.Error(), `invalid argument "ksh"`) {
		t.Errorf("completion ksh: %v, want an invalid argument error", err)
	}
}
