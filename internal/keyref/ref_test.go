package keyref

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"testing"
)

const mod = "?module-path=/usr/lib/softhsm/libsofthsm2.so"

func TestParsePKCS11(t *testing.T) {
	r, err := Parse("pkcs11:token=mutual%20ca;object=inter;id=%01%02;type=private" + mod + "&pin-source=file:/etc/mutual/pin")
	if err != nil {
		t.Fatal(err)
	}
	u, ok := r.PKCS11()
	if !ok || !r.InToken() {
		t.Fatalf("Parse gave %#v, want a token reference", r)
	}
	if _, ok := r.File(); ok {
		t.Error("a pkcs11 Ref also claims to be a file")
	}
	want := PKCS11URI{ModulePath: "/usr/lib/softhsm/libsofthsm2.so", Token: "mutual ca", Object: "inter", ID: []byte{1, 2}, PIN: PINSource{File: "/etc/mutual/pin"}}
	if u.ModulePath != want.ModulePath || u.Token != want.Token || u.Object != want.Object || !bytes.Equal(u.ID, want.ID) || u.PIN != want.PIN {
		t.Errorf("Parse gave %+v, want %+v", u, want)
	}
	if got, want := r.String(), "pkcs11:token=mutual%20ca;object=inter;id=%01%02;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/mutual/pin"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
}

func TestParsePINSources(t *testing.T) {
	for in, want := range map[string]PINSource{
		"file:/p":      {File: "/p"},
		"file:///p":    {File: "/p"},
		"/p":           {File: "/p"},
		"env:HSM_PIN":  {Env: "HSM_PIN"},
		"file:/a%26b":  {File: "/a&b"},
		"file:////srv": {File: "//srv"},
	} {
		r, err := Parse("pkcs11:token=t;object=k" + mod + "&pin-source=" + in)
		if err != nil {
			t.Errorf("pin-source=%s: %v", in, err)
			continue
		}
		u, _ := r.PKCS11()
		if u.PIN != want {
			t.Errorf("pin-source=%s gave %+v, want %+v", in, u.PIN, want)
		}
		if again, err := Parse(r.String()); err != nil || again.String() != r.String() {
			t.Errorf("pin-source=%s: %s does not read back: %v", in, r, err)
		}
	}
}

func TestParseFile(t *testing.T) {
	for in, want := range map[string]string{
		"ca/intermediate/key.pem":        "ca/intermediate/key.pem",
		"/var/lib/mutual/key.pem":        "/var/lib/mutual/key.pem",
		"file:/var/lib/mutual/key.pem":   "/var/lib/mutual/key.pem",
		"file:///var/lib/mutual/k.pem":   "/var/lib/mutual/k.pem",
		"file:pkcs11:odd-but-a-file.pem": "pkcs11:odd-but-a-file.pem",
	} {
		r, err := Parse(in)
		if err != nil {
			t.Errorf("Parse(%q): %v", in, err)
			continue
		}
		got, ok := r.File()
		if !ok || got != want || r.InToken() {
			t.Errorf("Parse(%q) = file %q (%v), want %q", in, got, ok, want)
		}
		if again, err := Parse(r.String()); err != nil || again != r {
			t.Errorf("Parse(%q).String() = %q does not read back: %v", in, r, err)
		}
	}
}

// TestParseErrors checks that every refusal names the attribute at fault and
// says what to write instead.
func TestParseErrors(t *testing.T) {
	tests := []struct {
		in, attr, fix string
	}{
		{"", "", "file path or a pkcs11: URI"},
		{"https://hsm.example/key", "", "pkcs11: URI"},
		{"file:", "", "file:/path"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-value=1234", "pin-value", "pin-source=file:"},
		{"pkcs11:token=t;object=k;pin-value=1234?module-path=/m.so", "pin-value", "after '?'"},
		{"pkcs11:token=t;object=k?module-path=/m.so", "pin-source", "pin-source=env:NAME"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-source=pin.txt", "pin-source", "pin-source=file:/path"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-source=env:1BAD", "pin-source", "letters, digits"},
		{"pkcs11:token=t;object=k?module-path=/m.so&pin-source=|/bin/pinentry", "pin-source", "pin-source=file:"},
		{"pkcs11:token=t;object=k?pin-source=env:P", "module-path", "add ?module-path="},
		{"pkcs11:token=t;object=k?module-path=lib.so&pin-source=env:P", "module-path", "absolute"},
		{"pkcs11:token=t;object=k?module-name=softhsm2&pin-source=env:P", "module-name", "module-path="},
		{"pkcs11:object=k" + mod + "&pin-source=env:P", "token", "exactly one of token="},
		{"pkcs11:token=t;serial=1;object=k" + mod + "&pin-source=env:P", "token", "exactly one of token="},
		{"pkcs11:token=t" + mod + "&pin-source=env:P", "object", "object=LABEL"},
		{"pkcs11:token=t;object=k;type=cert" + mod + "&pin-source=env:P", "type", "type=private"},
		{"pkcs11:token=t;object=k;slot-id=x" + mod + "&pin-source=env:P", "slot-id", "decimal"},
		{"pkcs11:token=t;object=k;model=SoftHSM" + mod + "&pin-source=env:P", "model", "token=, serial= or slot-id="},
		{"pkcs11:token=t;object=k;colour=blue" + mod + "&pin-source=env:P", "colour", "token, serial, slot-id"},
		{"pkcs11:token=t;object=k" + mod + "&pin-source=env:P&x-y=1", "x-y", "module-path and pin-source"},
		{"pkcs11:token=t;token=u;object=k" + mod + "&pin-source=env:P", "token", "give it once"},
		{"pkcs11:token=t;object=%4" + mod + "&pin-source=env:P", "object", "%XX"},
		{"pkcs11:token=t;object=%zz" + mod + "&pin-source=env:P", "object", "%XX"},
		{"pkcs11:token;object=k" + mod + "&pin-source=env:P", "token", "name=value"},
	}
	for _, tc := range tests {
		_, err := Parse(tc.in)
		var ae *AttrError
		if !errors.As(err, &ae) {
			t.Errorf("Parse(%q) = %v, want an *AttrError", tc.in, err)
			continue
		}
		if ae.Attr != tc.attr {
			t.Errorf("Parse(%q) blames %q, want %q: %v", tc.in, ae.Attr, tc.attr, err)
		}
		if !strings.Contains(err.Error(), tc.fix) {
			t.Errorf("Parse(%q) = %q, want the fix %q in it", tc.in, err, tc.fix)
		}
		if tc.attr != "" && !strings.Contains(err.Error(), fmt.Sprintf("%q", tc.attr)) {
			t.Errorf("Parse(%q) = %q does not name the attribute %q", tc.in, err, tc.attr)
		}
		if strings.Contains(err.Error(), "1234") {
			t.Errorf("Parse(%q) repeats the PIN in its error: %q", tc.in, err)
		}
	}
}

func TestWhere(t *testing.T) {
	slot := 3
	for _, tc := range []struct {
		u    PKCS11URI
		want string
	}{
		{PKCS11URI{Token: "ca", Object: "root"}, `token "ca" object "root"`},
		{PKCS11URI{Serial: "9f", ID: []byte{0xab}}, `token with serial "9f" id ab`},
		{PKCS11URI{Slot: &slot, Object: "k"}, `token in slot 3 object "k"`},
	} {
		if got := tc.u.Where(); got != tc.want {
			t.Errorf("Where() = %s, want %s", got, tc.want)
		}
	}
}

func ExampleParse() {
	r, err := Parse("pkcs11:token=mutual-ca;object=intermediate?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:MUTUAL_HSM_PIN")
	if err != nil {
		fmt.Println(err)
		return
	}
	u, _ := r.PKCS11()
	fmt.Println(u.Where(), "PIN from", u.PIN.Env)

	_, err = Parse("pkcs11:token=mutual-ca;object=intermediate?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=1234")
	fmt.Println(err)
	// Output:
	// token "mutual-ca" object "intermediate" PIN from MUTUAL_HSM_PIN
	// pkcs11 URI attribute "pin-value": a PIN in the URI would show in argv, process lists and logs; put the PIN in a file readable only by mutual and write pin-source=file:/path/to/pin, or name an environment variable with pin-source=env:NAME
}
