// Command gendocs writes mutual's man pages and shell completions from the
// command tree, for the package build (packaging/build-deb.sh); they are
// generated, not checked in.
//
//	go run ./packaging/gendocs -out DIR
//
// writes DIR/man/mutual*.1 and DIR/completions/{mutual.bash,_mutual,mutual.fish}.
// Man pages are dated by $SOURCE_DATE_EPOCH when it is set (reproducible builds).
package main

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra/doc"

	"github.com/mutual-tls/mutual/internal/cli"
)

func main() {
	out := flag.String("out", "", "directory to write man/ and completions/ into (required)")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gendocs: "+err.Error())
		os.Exit(1)
	}
}

func run(out string) error {
	if out == "" {
		return fmt.Errorf("-out: required: the directory to write man/ and completions/ into")
	}
	man := filepath.Join(out, "man")
	comp := filepath.Join(out, "completions")
	for _, d := range []string{man, comp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	root := cli.Command()
	root.DisableAutoGenTag = true
	if err := doc.GenManTree(root, &doc.GenManHeader{Title: "MUTUAL", Section: "1", Source: "mutual", Manual: "mutual manual"}, man); err != nil {
		return fmt.Errorf("man pages: %w", err)
	}
	for name, gen := range map[string]func(*bytes.Buffer) error{
		"mutual.bash": func(b *bytes.Buffer) error { return root.GenBashCompletionV2(b, true) },
		"_mutual":     func(b *bytes.Buffer) error { return root.GenZshCompletion(b) },
		"mutual.fish": func(b *bytes.Buffer) error { return root.GenFishCompletion(b, true) },
	} {
		var b bytes.Buffer
		if err := gen(&b); err != nil {
			return fmt.Errorf("completion %s: %w", name, err)
		}
		if err := os.WriteFile(filepath.Join(comp, name), b.Bytes(), 0o644); err != nil {
			return err
		}
	}
	return nil
}
