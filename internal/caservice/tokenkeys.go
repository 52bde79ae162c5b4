package caservice

import (
	"context"
	"crypto"
	"crypto/ed25519"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// AddTokenKeys makes, in their PKCS#11 tokens, the OCSP responder's key
// (refs.OCSP, ECDSA P-256) and the issuance log's signing key (refs.Log,
// Ed25519), and records their references in dir's ca.json, which the
// service then signs through. A new log key replaces the key file ca init
// made (nothing has been signed with it yet) and its verifier key in
// logkey.VerifierFile. An empty reference is left alone; the other fields
// of refs are ignored.
func AddTokenKeys(ctx context.Context, dir string, refs pki.KeyRefs) error {
	if refs.OCSP == "" && refs.Log == "" {
		return nil
	}
	cfg, td, err := pki.ReadConfig(dir)
	if err != nil {
		return err
	}
	keys := keyref.NewKeyring(keyref.Options{})
	defer keys.Close()
	if refs.OCSP != "" {
		if cfg.Keys.OCSP, err = generate(ctx, keys, "OCSP responder", refs.OCSP, pki.KeyECDSAP256); err != nil {
			return err
		}
	}
	if refs.Log != "" {
		if cfg.Keys.Log, err = generate(ctx, keys, "issuance log", refs.Log, pki.KeyEd25519); err != nil {
			return err
		}
		key, err := keys.Open(ctx, cfg.Keys.Log)
		if err != nil {
			return err
		}
		v, err := logkey.VerifierKey(td.Name(), key.Public().(ed25519.PublicKey))
		if err != nil {
			return err
		}
		if err := atomicfile.WriteFile(filepath.Join(dir, logkey.VerifierFile), []byte(v+"\n"), 0o644); err != nil {
			return err
		}
		if err := os.Remove(filepath.Join(dir, logkey.KeyFile)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return atomicfile.WriteFile(filepath.Join(dir, pki.ConfigFile), pki.MarshalConfig(cfg), 0o644)
}

// generate makes the key named what in the token ref names and returns
// the reference to record.
func generate(ctx context.Context, keys *keyref.Keyring, what, ref string, kt pki.KeyType) (string, error) {
	r, err := keyref.Parse(ref)
	if err != nil {
		return "", fmt.Errorf("the %s key: %w", what, err)
	}
	if _, err := keys.Generate(ctx, r, kt); err != nil {
		return "", fmt.Errorf("make the %s key: %w", what, err)
	}
	return r.String(), nil
}

// openOCSPKey opens the OCSP responder's token key ca.json names, or
// leaves s.ocspKey nil (in-memory keys) when it names none.
func (s *Service) openOCSPKey(ctx context.Context) error {
	ref := s.caDir.Config.Keys.OCSP
	if ref == "" {
		return nil
	}
	key, err := s.keys.Open(ctx, ref)
	if err != nil {
		return fmt.Errorf("the OCSP responder key %s (%s keys.ocsp): %w", ref, filepath.Join(s.Dir, pki.ConfigFile), err)
	}
	s.ocspKey = key
	return nil
}

// logSigner is the issuance log's signer: through the token key ca.json
// names (checked against logkey.VerifierFile), else from its key file.
func (s *Service) logSigner(ctx context.Context, passphrase []byte) (*translog.Signer, error) {
	td := s.caDir.TrustDomain.Name()
	ref := s.caDir.Config.Keys.Log
	if ref == "" {
		signer, err := translog.LoadOrCreateKey(s.Dir, td, passphrase, 0)
		if err != nil {
			return nil, fmt.Errorf("the issuance log's key: %w", err)
		}
		return signer, nil
	}
	var key crypto.Signer
	key, err := s.keys.Open(ctx, ref)
	if err != nil {
		return nil, fmt.Errorf("the issuance log's key %s (%s keys.log): %w", ref, filepath.Join(s.Dir, pki.ConfigFile), err)
	}
	signer, err := translog.NewSigner(logkey.Origin(td), key)
	if err != nil {
		return nil, fmt.Errorf("the issuance log's key %s: %w; point keys.log at an Ed25519 key pair", ref, err)
	}
	vpath := filepath.Join(s.Dir, logkey.VerifierFile)
	if pub, err := os.ReadFile(vpath); err != nil || strings.TrimSpace(string(pub)) != signer.Verifier {
		return nil, fmt.Errorf("%s does not hold the verifier key of the token's log key %s (%v): %w", vpath, ref, err, translog.ErrVerifierMismatch)
	}
	return signer, nil
}
