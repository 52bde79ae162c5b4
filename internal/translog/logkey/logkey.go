// Package logkey is the format of the issuance log's signing key: where a
// CA directory keeps it, the log's name (origin), and how a fresh key and
// its note verifier key line are made.
//
// It imports nothing of mutual, so that pki.Init can make the log key with
// the rest of a new CA; loading the key and signing with it live in
// translog, which builds on this package.
package logkey

import (
	"crypto"
	"crypto/ed25519"
	"fmt"
	"io"

	"golang.org/x/mod/sumdb/note"
)

// Files of the log's key in a CA directory: its own key, not the CA's.
const (
	// Dir holds the log's private files.
	Dir = "log"
	// KeyFile is the log's Ed25519 signing key, PEM PKCS#8 (encrypted
	// with the CA's passphrase), mode 0600.
	KeyFile = Dir + "/key.pem"
	// VerifierFile is the log's note verifier key line (NAME+HASH+KEY),
	// for auditors, mode 0644.
	VerifierFile = "log.pub"
)

// Origin is the log's name for a trust domain: the first line of every
// checkpoint and the name of its key.
func Origin(trustDomain string) string { return trustDomain + "/mutual-log" }

// VerifierKey returns the note verifier key line (NAME+HASH+KEY) of the
// trust domain's log key pub. A trust domain that makes no valid key name
// (one with spaces or a '+') is an error.
func VerifierKey(trustDomain string, pub ed25519.PublicKey) (string, error) {
	v, err := note.NewEd25519VerifierKey(Origin(trustDomain), pub)
	if err != nil {
		return "", err
	}
	if _, err := note.NewVerifier(v); err != nil {
		return "", err
	}
	return v, nil
}

// Key is a freshly made log key, encoded as it is written.
type Key struct {
	// Private is the signing key.
	Private ed25519.PrivateKey
	// PEM is Private as the encode function given to Generate wrote it:
	// the content of KeyFile.
	PEM []byte
	// Verifier is the note verifier key line: the content of VerifierFile
	// without its newline.
	Verifier string
}

// Generate makes a new log key for trustDomain from the random source r
// (crypto/rand when nil). encode turns the key into the PEM written to
// KeyFile (pki.MarshalPrivateKey with the CA's passphrase).
func Generate(r io.Reader, trustDomain string, encode func(crypto.Signer) ([]byte, error)) (*Key, error) {
	_, priv, err := ed25519.GenerateKey(r)
	if err != nil {
		return nil, fmt.Errorf("generate the log key: %w", err)
	}
	pemKey, err := encode(priv)
	if err != nil {
		return nil, fmt.Errorf("encode the log key: %w", err)
	}
	v, err := VerifierKey(trustDomain, priv.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, fmt.Errorf("the log's verifier key for trust domain %q: %w", trustDomain, err)
	}
	return &Key{Private: priv, PEM: pemKey, Verifier: v}, nil
}
