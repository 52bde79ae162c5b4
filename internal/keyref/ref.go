package keyref

import (
	"bytes"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// Ref names where a key lives: a file or an object in a PKCS#11 token. Only
// Parse makes one, so a non-zero Ref is always complete and valid.
type Ref struct {
	file  string
	token *PKCS11URI
}

// PKCS11URI is a parsed RFC 7512 URI naming a key pair in a token. Exactly
// one of Token, Serial and Slot selects the token; Object (CKA_LABEL) and ID
// (CKA_ID) select the key, at least one of them set.
type PKCS11URI struct {
	// ModulePath is the PKCS#11 library to load (query attribute module-path).
	ModulePath string
	// Token is the token label (path attribute token).
	Token string
	// Serial is the token serial number (path attribute serial).
	Serial string
	// Slot is the slot number (path attribute slot-id); nil when not given.
	Slot *int
	// Object is the key's label (path attribute object).
	Object string
	// ID is the key's CKA_ID (path attribute id, percent-encoded bytes).
	ID []byte
	// PIN says where the user PIN comes from (query attribute pin-source).
	PIN PINSource
}

// PINSource is where a token's user PIN is read from: a file or an
// environment variable, never the URI itself.
type PINSource struct {
	// File is the path of a file holding the PIN (pin-source=file:PATH).
	File string
	// Env is the name of an environment variable holding the PIN
	// (pin-source=env:NAME).
	Env string
}

// AttrError reports a bad or missing attribute of a key reference, what is
// wrong with it and how to fix it.
type AttrError struct {
	// Attr is the attribute at fault ("pin-value", "token", ...), or "" when
	// the reference as a whole is wrong.
	Attr string
	// Problem says what is wrong.
	Problem string
	// Fix says what to write instead.
	Fix string
}

func (e *AttrError) Error() string {
	if e.Attr == "" {
		return fmt.Sprintf("key reference: %s; %s", e.Problem, e.Fix)
	}
	return fmt.Sprintf("pkcs11 URI attribute %q: %s; %s", e.Attr, e.Problem, e.Fix)
}

func attrErr(attr, problem, fix string, args ...any) *AttrError {
	return &AttrError{Attr: attr, Problem: problem, Fix: fmt.Sprintf(fix, args...)}
}

const pinFix = "put the PIN in a file readable only by mutual and write pin-source=file:/path/to/pin, or name an environment variable with pin-source=env:NAME"

var (
	schemeRE = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9+.-]+:`)
	envRE    = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

// Parse reads a key reference: a pkcs11: URI (RFC 7512), a file: reference
// or a plain file path. Errors are *AttrError values naming the attribute at
// fault and the fix.
func Parse(s string) (Ref, error) {
	switch {
	case s == "":
		return Ref{}, &AttrError{Problem: "empty", Fix: "give a key file path or a pkcs11: URI"}
	case strings.HasPrefix(s, "pkcs11:"):
		u, err := parsePKCS11(strings.TrimPrefix(s, "pkcs11:"))
		if err != nil {
			return Ref{}, err
		}
		return Ref{token: u}, nil
	case strings.HasPrefix(s, "file:"):
		p := strings.TrimPrefix(strings.TrimPrefix(s, "file:"), "//")
		if p == "" {
			return Ref{}, &AttrError{Problem: "file: names no path", Fix: "write file:/path/to/key.pem or just the path"}
		}
		return Ref{file: p}, nil
	case schemeRE.MatchString(s):
		return Ref{}, &AttrError{Problem: fmt.Sprintf("unknown scheme in %q", schemeRE.FindString(s)), Fix: "give a key file path, file:/path or a pkcs11: URI"}
	}
	return Ref{file: s}, nil
}

// File returns the key file's path when r names a file.
func (r Ref) File() (string, bool) { return r.file, r.file != "" }

// PKCS11 returns the token URI when r names a key in a PKCS#11 token.
func (r Ref) PKCS11() (PKCS11URI, bool) {
	if r.token == nil {
		return PKCS11URI{}, false
	}
	return *r.token, true
}

// InToken reports whether the key lives in a PKCS#11 token.
func (r Ref) InToken() bool { return r.token != nil }

// IsZero reports whether r is the zero Ref, which names no key.
func (r Ref) IsZero() bool { return r.file == "" && r.token == nil }

// String returns the reference in the form Parse reads back. It never holds
// a PIN, since a Ref cannot carry one.
func (r Ref) String() string {
	if r.token != nil {
		return r.token.String()
	}
	if schemeRE.MatchString(r.file) {
		return "file:" + r.file // so that Parse does not read it as a URI
	}
	return r.file
}

// unsupportedPath are RFC 7512 path attributes mutual does not select by.
var unsupportedPath = map[string]bool{
	"manufacturer": true, "model": true, "library-manufacturer": true, "library-description": true,
	"library-version": true, "slot-description": true, "slot-manufacturer": true,
}

func parsePKCS11(rest string) (*PKCS11URI, error) {
	path, query, _ := strings.Cut(rest, "?")
	u := &PKCS11URI{}
	seen := map[string]bool{}
	if err := eachAttr(path, ";", seen, u.setPath); err != nil {
		return nil, err
	}
	if err := eachAttr(query, "&", seen, u.setQuery); err != nil {
		return nil, err
	}
	if err := u.check(); err != nil {
		return nil, err
	}
	return u, nil
}

// eachAttr calls set with every name=value in s, separated by sep.
func eachAttr(s, sep string, seen map[string]bool, set func(name, value string) error) error {
	for _, part := range strings.Split(s, sep) {
		if part == "" {
			continue
		}
		name, value, err := attr(part, seen)
		if err != nil {
			return err
		}
		if err := set(name, value); err != nil {
			return err
		}
	}
	return nil
}

// attr splits name=value and percent-decodes the value; an attribute may
// appear once.
func attr(part string, seen map[string]bool) (string, string, error) {
	name, raw, ok := strings.Cut(part, "=")
	if !ok || name == "" {
		return "", "", attrErr(part, "not of the form name=value", "write attributes as name=value, separated by ';' before '?' and '&' after it")
	}
	name = strings.ToLower(name)
	if seen[name] {
		return "", "", attrErr(name, "given twice", "give it once")
	}
	seen[name] = true
	value, err := unescape(raw)
	if err != nil {
		return "", "", attrErr(name, err.Error(), "percent-encode a byte as %%XX with two hex digits")
	}
	return name, value, nil
}

func (u *PKCS11URI) setPath(name, value string) error {
	switch name {
	case "token":
		u.Token = value
	case "serial":
		u.Serial = value
	case "slot-id":
		n, err := strconv.Atoi(value)
		if err != nil || n < 0 {
			return attrErr(name, fmt.Sprintf("%q is not a slot number", value), "write slot-id=N with N a decimal number, or select the token with token=LABEL")
		}
		u.Slot = &n
	case "object":
		u.Object = value
	case "id":
		u.ID = []byte(value)
	case "type":
		if value != "private" {
			return attrErr(name, fmt.Sprintf("type=%s names no signing key", value), "write type=private or leave type out")
		}
	case "pin-value", "pin-source", "module-path", "module-name":
		return attrErr(name, "belongs in the query", "write it after '?', e.g. pkcs11:token=T;object=K?%s=...", name)
	default:
		if unsupportedPath[name] {
			return attrErr(name, "mutual does not select tokens or keys by it", "select the token with token=, serial= or slot-id= and the key with object= or id=")
		}
		return attrErr(name, "unknown attribute", "use token, serial, slot-id, object, id or type before '?'")
	}
	return nil
}

func (u *PKCS11URI) setQuery(name, value string) error {
	switch name {
	case "module-path":
		if !filepath.IsAbs(value) {
			return attrErr(name, fmt.Sprintf("%q is not an absolute path", value), "write module-path=/absolute/path/to/the/pkcs11-library.so")
		}
		u.ModulePath = value
	case "pin-source":
		p, err := parsePINSource(value)
		if err != nil {
			return err
		}
		u.PIN = p
	case "pin-value":
		return attrErr(name, "a PIN in the URI would show in argv, process lists and logs", pinFix)
	case "module-name":
		return attrErr(name, "mutual does not search for PKCS#11 libraries by name", "write module-path=/absolute/path/to/the/library.so (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")
	default:
		return attrErr(name, "unknown query attribute", "use module-path and pin-source after '?'")
	}
	return nil
}

func parsePINSource(v string) (PINSource, error) {
	switch {
	case strings.HasPrefix(v, "env:"):
		name := strings.TrimPrefix(v, "env:")
		if !envRE.MatchString(name) {
			return PINSource{}, attrErr("pin-source", fmt.Sprintf("%q is not an environment variable name", name), "write pin-source=env:NAME with NAME made of letters, digits and '_'")
		}
		return PINSource{Env: name}, nil
	case strings.HasPrefix(v, "file:"):
		v = strings.TrimPrefix(strings.TrimPrefix(v, "file:"), "//")
	}
	if !filepath.IsAbs(v) {
		return PINSource{}, attrErr("pin-source", fmt.Sprintf("%q is neither file:/absolute/path nor env:NAME", v), pinFix)
	}
	return PINSource{File: v}, nil
}

func (u *PKCS11URI) check() error {
	if u.ModulePath == "" {
		return attrErr("module-path", "missing", "add ?module-path=/absolute/path/to/the/pkcs11-library.so (SoftHSM2: /usr/lib/softhsm/libsofthsm2.so)")
	}
	selectors := 0
	for _, set := range []bool{u.Token != "", u.Serial != "", u.Slot != nil} {
		if set {
			selectors++
		}
	}
	if selectors != 1 {
		return attrErr("token", fmt.Sprintf("%d of token, serial and slot-id given", selectors), "select the token with exactly one of token=LABEL, serial=SERIAL or slot-id=N")
	}
	if u.Object == "" && len(u.ID) == 0 {
		return attrErr("object", "missing", "name the key with object=LABEL (or id=%%XX%%XX...)")
	}
	if u.PIN == (PINSource{}) {
		return attrErr("pin-source", "missing", pinFix)
	}
	return nil
}

// String returns the URI in canonical form: attributes in a fixed order,
// reserved bytes percent-encoded, the id fully percent-encoded.
func (u PKCS11URI) String() string {
	var b strings.Builder
	b.WriteString("pkcs11:")
	var path []string
	add := func(name, v string) {
		if v != "" {
			path = append(path, name+"="+escape(v, false))
		}
	}
	add("token", u.Token)
	add("serial", u.Serial)
	if u.Slot != nil {
		path = append(path, "slot-id="+strconv.Itoa(*u.Slot))
	}
	add("object", u.Object)
	if len(u.ID) > 0 {
		var id strings.Builder
		for _, c := range u.ID {
			fmt.Fprintf(&id, "%%%02X", c)
		}
		path = append(path, "id="+id.String())
	}
	path = append(path, "type=private")
	b.WriteString(strings.Join(path, ";"))
	b.WriteString("?module-path=" + escape(u.ModulePath, true))
	switch {
	case u.PIN.Env != "":
		b.WriteString("&pin-source=env:" + u.PIN.Env)
	case u.PIN.File != "":
		b.WriteString("&pin-source=file:")
		if strings.HasPrefix(u.PIN.File, "//") {
			b.WriteString("//") // Parse drops one leading "//"
		}
		b.WriteString(escape(u.PIN.File, true))
	}
	return b.String()
}

// Where names the token and key for messages: `token "T" object "K"`.
func (u PKCS11URI) Where() string {
	var b strings.Builder
	switch {
	case u.Token != "":
		fmt.Fprintf(&b, "token %q", u.Token)
	case u.Serial != "":
		fmt.Fprintf(&b, "token with serial %q", u.Serial)
	case u.Slot != nil:
		fmt.Fprintf(&b, "token in slot %d", *u.Slot)
	}
	if u.Object != "" {
		fmt.Fprintf(&b, " object %q", u.Object)
	}
	if len(u.ID) > 0 {
		fmt.Fprintf(&b, " id %x", u.ID)
	}
	return b.String()
}

// escape percent-encodes every byte that is not unreserved (RFC 3986); in
// the query '/' and ':' stay as they are, so paths read naturally.
func escape(s string, query bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if isUnreserved(c) || (query && (c == '/' || c == ':')) {
			b.WriteByte(c)
			continue
		}
		fmt.Fprintf(&b, "%%%02X", c)
	}
	return b.String()
}

func isUnreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}

var errBadEscape = errors.New("bad percent-encoding")

// unescape decodes %XX sequences; every other byte stands for itself.
func unescape(s string) (string, error) {
	if !strings.Contains(s, "%") {
		return s, nil
	}
	var b bytes.Buffer
	for i := 0; i < len(s); i++ {
		if s[i] != '%' {
			b.WriteByte(s[i])
			continue
		}
		if i+2 >= len(s) {
			return "", fmt.Errorf("%w at the end of %q", errBadEscape, s)
		}
		n, err := strconv.ParseUint(s[i+1:i+3], 16, 8)
		if err != nil {
			return "", fmt.Errorf("%w %q", errBadEscape, s[i:i+3])
		}
		b.WriteByte(byte(n))
		i += 2
	}
	return b.String(), nil
}
