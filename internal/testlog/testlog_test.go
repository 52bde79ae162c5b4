package testlog_test

import (
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/testlog"
)

// TestHasMatchesMessageAndAttributes: a JSON record is found by its
// message and attributes; a different value or message is not.
func TestHasMatchesMessageAndAttributes(t *testing.T) {
	log, buf := testlog.NewJSON(t, "test")
	log.Info("handshake refused", "reason", "revoked", "n", 2)
	buf.Write([]byte("not json\n"))
	if !buf.Has("handshake refused", map[string]any{"reason": "revoked", "n": float64(2)}) {
		t.Fatalf("record not found in:\n%s", buf)
	}
	if buf.Has("handshake refused", map[string]any{"reason": "expired"}) || buf.Has("listening", nil) {
		t.Fatalf("a record matched that was not written:\n%s", buf)
	}
	if n := len(buf.Records()); n != 1 {
		t.Fatalf("%d records, want 1 (the line that is not JSON is skipped)", n)
	}
}

// TestBufferKeepsTheTail: a chatty writer cannot grow the buffer without
// bound; what it wrote last is kept.
func TestBufferKeepsTheTail(t *testing.T) {
	var b testlog.Buffer
	line := strings.Repeat("x", 1023) + "\n"
	for range 3 << 10 {
		b.Write([]byte(line))
	}
	b.Write([]byte("last\n"))
	if s := b.String(); len(s) > 2<<20 || !strings.HasSuffix(s, "last\n") || !strings.HasPrefix(s, "[...]") {
		t.Fatalf("buffer holds %d bytes, starting %q, ending %q", len(s), s[:10], s[len(s)-10:])
	}
}
