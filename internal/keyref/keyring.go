package keyref

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"github.com/mutual-tls/mutual/internal/pki"
)

// ErrNeedsCgo is returned when a PKCS#11 key is opened by a build of mutual
// made without cgo.
var ErrNeedsCgo = errors.New("PKCS#11 keys need the cgo build of mutual (this one was built with CGO_ENABLED=0); rebuild with CGO_ENABLED=1 or keep the key in a file")

// ErrWrongPIN reports that the token refused the PIN.
var ErrWrongPIN = errors.New("the token refused the PIN")

// ErrNoToken reports that the module has no token matching the URI's token,
// serial or slot-id.
var ErrNoToken = errors.New("no such token")

// ErrNotFound reports that no key pair in the token matches the URI.
var ErrNotFound = errors.New("no such key pair in the token")

// ErrExists reports that Generate found a key pair already holding the label
// or id it was asked to use.
var ErrExists = errors.New("a key pair with that label or id already exists in the token")

// ErrNotInToken reports that Generate was given a file reference.
var ErrNotInToken = errors.New("only keys in a PKCS#11 token are generated here")

// Options configures a Keyring. The zero value opens unencrypted file keys
// and token keys.
type Options struct {
	// Passphrase decrypts encrypted PEM key files; nil means file keys must
	// be unencrypted.
	Passphrase []byte
	// MaxSessions bounds the sessions open on each token, and so the
	// signatures it makes at once; 0 means the library's default (1024,
	// lowered to what the token allows), below 0 means 0, and 1 is raised to 2 (one session
	// stays logged in, the others sign).
	MaxSessions int
}

// Keyring opens key references. It keeps one logged-in session pool per
// PKCS#11 token, shared by every key opened in that token, until Close.
// Its methods are safe for concurrent use, and so are the Signers it returns.
//
// PKCS#11 logs in per token and process: while one Keyring holds a token
// open, another Keyring in the same process is logged in too, whatever PIN
// it gives.
type Keyring struct {
	opts   Options
	mu     sync.Mutex
	tokens map[string]*token
	closed bool
}

// NewKeyring returns a Keyring; it opens nothing until asked.
func NewKeyring(o Options) *Keyring {
	return &Keyring{opts: o, tokens: map[string]*token{}}
}

// Signer opens the existing key r names. A file key is read and decrypted
// with the Keyring's passphrase; a token key is found by the URI's object
// label and/or id and signs inside the token. ctx bounds only the work before
// the PKCS#11 library is called: its calls cannot be cancelled.
func (k *Keyring) Signer(ctx context.Context, r Ref) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if path, ok := r.File(); ok {
		return k.fileSigner(path)
	}
	u, ok := r.PKCS11()
	if !ok {
		return nil, &AttrError{Problem: "the zero Ref names no key", Fix: "make a Ref with keyref.Parse"}
	}
	t, err := k.token(u)
	if err != nil {
		return nil, err
	}
	return t.find(u)
}

// Open parses ref and opens the existing key it names: Signer for callers
// that hold the reference as a string (a config file, a flag).
func (k *Keyring) Open(ctx context.Context, ref string) (crypto.Signer, error) {
	r, err := Parse(ref)
	if err != nil {
		return nil, err
	}
	return k.Signer(ctx, r)
}

// OpenDecrypter opens the existing RSA key ref names for decryption: a token
// key decrypts inside the token, a file key is read as Open reads it.
func (k *Keyring) OpenDecrypter(ctx context.Context, ref string) (crypto.Decrypter, error) {
	r, err := Parse(ref)
	if err != nil {
		return nil, err
	}
	s, err := k.Signer(ctx, r)
	if err != nil {
		return nil, err
	}
	d, ok := s.(crypto.Decrypter)
	if _, isRSA := s.Public().(*rsa.PublicKey); !ok || !isRSA {
		return nil, fmt.Errorf("%s is a %s key, which cannot decrypt: point it at an RSA key pair", r, pki.KeyDescription(s.Public()))
	}
	return d, nil
}

// Generate makes a new key pair of type kt inside the token r names, labelled
// with the URI's object (required) and id (random when the URI has none). The
// private key is non-extractable and sensitive: it never exists outside the
// token. An existing key pair with that label or id is an ErrExists error.
// File references are refused with ErrNotInToken: file keys are made by
// pki.GenerateKey and written by whoever owns the file.
func (k *Keyring) Generate(ctx context.Context, r Ref, kt pki.KeyType) (crypto.Signer, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	u, ok := r.PKCS11()
	if !ok {
		return nil, fmt.Errorf("%s: %w; generate file keys with pki.GenerateKey", r, ErrNotInToken)
	}
	if u.Object == "" {
		return nil, attrErr("object", "missing; a new key needs a label", "add object=LABEL to the URI")
	}
	if kt == "" {
		kt = pki.KeyECDSAP256
	}
	t, err := k.token(u)
	if err != nil {
		return nil, err
	}
	return t.generate(u, kt)
}

// Close logs out of and closes every token the Keyring opened. Signers it
// returned stop working.
func (k *Keyring) Close() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	var errs []error
	for key, t := range k.tokens {
		errs = append(errs, t.close())
		delete(k.tokens, key)
	}
	return errors.Join(errs...)
}

// token returns the open token u names, opening and logging in on first use.
func (k *Keyring) token(u PKCS11URI) (*token, error) {
	key := u.ModulePath + "\x00" + u.Token + "\x00" + u.Serial
	if u.Slot != nil {
		key += "\x00" + strconv.Itoa(*u.Slot)
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil, errors.New("the keyring is closed")
	}
	if t := k.tokens[key]; t != nil {
		return t, nil
	}
	if !pkcs11Built {
		return nil, fmt.Errorf("%s: %w", u.Where(), ErrNeedsCgo)
	}
	if _, err := os.Stat(u.ModulePath); err != nil {
		return nil, attrErr("module-path", fmt.Sprintf("cannot load %s (%v)", u.ModulePath, err), "install the token's PKCS#11 library there or correct module-path")
	}
	pin, err := readPIN(u.PIN)
	if err != nil {
		return nil, err
	}
	sessions := k.opts.MaxSessions
	switch {
	case sessions < 0:
		sessions = 0
	case sessions == 1:
		sessions = 2 // crypto11 keeps one logged in and signs on the others
	}
	t, err := openToken(u, pin, sessions)
	if err != nil {
		return nil, err
	}
	k.tokens[key] = t
	return t, nil
}

func (k *Keyring) fileSigner(path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("key file %s does not exist; give the path of a PEM private key or a pkcs11: URI: %w", path, err)
		}
		return nil, fmt.Errorf("key file: %w", err)
	}
	s, err := pki.ParsePrivateKey(data, k.opts.Passphrase)
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return s, nil
}

// readPIN reads the user PIN from its source: a file (one line, trailing
// newline dropped) or an environment variable.
func readPIN(p PINSource) (string, error) {
	if p.Env != "" {
		v := os.Getenv(p.Env)
		if v == "" {
			return "", fmt.Errorf("pin-source=env:%s: the environment variable is unset or empty; export it before starting mutual, or use pin-source=file:/path", p.Env)
		}
		return v, nil
	}
	data, err := os.ReadFile(p.File)
	if err != nil {
		return "", fmt.Errorf("pin-source=file:%s: %w; create the file holding the token's user PIN (mode 0600)", p.File, err)
	}
	pin := bytes.TrimRight(data, "\r\n")
	if len(pin) == 0 {
		return "", fmt.Errorf("pin-source=file:%s is empty; write the token's user PIN into it", p.File)
	}
	return string(pin), nil
}
