package agent

import (
	"bytes"
	"testing"
)

// pingAck is a client preface, a SETTINGS frame and a PING ACK for nonce.
func pingAck(nonce [8]byte) []byte {
	var b bytes.Buffer
	b.WriteString(clientPreface)
	b.Write([]byte{0, 0, 6, 0x4, 0, 0, 0, 0, 0, 0, 3, 0, 0, 0, 100})
	b.Write([]byte{0, 0, 8, 0x6, 0x1, 0, 0, 0, 0})
	b.Write(nonce[:])
	return b.Bytes()
}

// FuzzFrameParser: the parser that looks for the caller's PING answer
// never panics on what a client sends, and finds the answer however the
// bytes are split into reads, and only when every byte of it came from
// the caller.
func FuzzFrameParser(f *testing.F) {
	nonce := [8]byte{1, 2, 3, 4, 5, 6, 7, 8}
	f.Add(pingAck(nonce), uint8(30))
	f.Add(pingAck([8]byte{}), uint8(1))
	f.Add([]byte(clientPreface+"\x00\x00\x08\x06\x00\x00\x00\x00\x00\x01\x02\x03\x04\x05\x06\x07\x08"), uint8(7))
	f.Fuzz(func(t *testing.T, data []byte, split uint8) {
		var whole frameParser
		want := whole.feed(data, true, nonce)
		var parts frameParser
		got := false
		for rest := data; len(rest) > 0; {
			k := min(int(split)+1, len(rest))
			got = parts.feed(rest[:k], true, nonce) || got
			rest = rest[k:]
		}
		if got != want {
			t.Fatalf("split every %d bytes: found=%v, whole: %v", int(split)+1, got, want)
		}
		var foreign frameParser
		if foreign.feed(data, false, nonce) {
			t.Fatalf("an answer written by another process counted")
		}
	})
}

func TestFrameParserFindsAnswer(t *testing.T) {
	nonce := [8]byte{9, 9, 9, 9, 9, 9, 9, 9}
	var p frameParser
	if !p.feed(pingAck(nonce), true, nonce) {
		t.Fatal("the caller's PING answer was not found")
	}
	var q frameParser
	if q.feed(pingAck([8]byte{}), true, nonce) {
		t.Fatal("a PING answer with another payload counted")
	}
}
