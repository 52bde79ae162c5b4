package keyref

import "testing"

// FuzzParse checks that Parse never panics, that what it accepts reads back
// to the same reference, and that a token reference never carries pin-value.
// Seeds live in testdata/fuzz/FuzzParse.
func FuzzParse(f *testing.F) {
	f.Fuzz(func(t *testing.T, s string) {
		r, err := Parse(s)
		if err != nil {
			if r != (Ref{}) {
				t.Fatalf("Parse(%q) failed (%v) but returned %#v", s, err, r)
			}
			return
		}
		if r.IsZero() {
			t.Fatalf("Parse(%q) succeeded with the zero Ref", s)
		}
		again, err := Parse(r.String())
		if err != nil {
			t.Fatalf("Parse(%q).String() = %q, which Parse refuses: %v", s, r, err)
		}
		if again.String() != r.String() || again.InToken() != r.InToken() {
			t.Fatalf("%q read back as %q", r, again)
		}
		if u, ok := r.PKCS11(); ok && (u.ModulePath == "" || u.PIN == (PINSource{}) || (u.Object == "" && len(u.ID) == 0)) {
			t.Fatalf("Parse(%q) accepted an incomplete URI: %+v", s, u)
		}
	})
}
