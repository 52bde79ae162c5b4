// Package testlog gives tests loggers whose output they can read while the
// component still writes, and which is shown only when the test fails.
package testlog

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"sync"
	"testing"
)

// maxLen is how much a Buffer holds before it drops its oldest part: a
// rotation loop can be chatty.
const maxLen = 1 << 20

// Buffer is a writer safe for concurrent use that keeps the last MiB
// written to it. The zero value is ready to use.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

// Write appends p.
func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.buf.Len() > maxLen {
		rest := b.buf.Bytes()[b.buf.Len()-maxLen/4:]
		b.buf = *bytes.NewBuffer(append([]byte("[...]\n"), rest...))
	}
	return b.buf.Write(p)
}

// String returns what the buffer holds.
func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// Contains reports whether the buffer holds s.
func (b *Buffer) Contains(s string) bool { return strings.Contains(b.String(), s) }

// Records returns the lines that are JSON objects (slog's JSON records).
func (b *Buffer) Records() []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(b.String()), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil {
			out = append(out, m)
		}
	}
	return out
}

// Has reports whether a JSON record has the message msg and every key and
// value of attrs.
func (b *Buffer) Has(msg string, attrs map[string]any) bool {
next:
	for _, r := range b.Records() {
		if r["msg"] != msg {
			continue
		}
		for k, v := range attrs {
			if r[k] != v {
				continue next
			}
		}
		return true
	}
	return false
}

// New returns a debug-level text logger into a fresh Buffer, whose content
// is logged under name when t fails (not otherwise, so that goroutines
// still logging after the test cannot panic the run).
func New(t testing.TB, name string) (*slog.Logger, *Buffer) {
	b := show(t, name)
	return slog.New(slog.NewTextHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug})), b
}

// NewJSON is New with JSON records at slog's default level (info), for
// tests that read them with Has.
func NewJSON(t testing.TB, name string) (*slog.Logger, *Buffer) {
	b := show(t, name)
	return slog.New(slog.NewJSONHandler(b, nil)), b
}

func show(t testing.TB, name string) *Buffer {
	b := &Buffer{}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("%s log:\n%s", name, b.String())
		}
	})
	return b
}
