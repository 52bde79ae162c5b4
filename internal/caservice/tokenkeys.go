package caservice

import (
	"context"
	"fmt"
	"path/filepath"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
)

// AddTokenKeys makes the OCSP responder's key (refs.OCSP, ECDSA P-256) in
// its PKCS#11 token and records its reference in dir's ca.json, which the
// service then signs OCSP answers through. An empty reference is left
// alone; the other fields of refs are ignored.
func AddTokenKeys(ctx context.Context, dir string, refs pki.KeyRefs) error {
	if refs.OCSP == "" {
		return nil
	}
	cfg, _, err := pki.ReadConfig(dir)
	if err != nil {
		return err
	}
	r, err := keyref.Parse(refs.OCSP)
	if err != nil {
		return fmt.Errorf("the OCSP responder key: %w", err)
	}
	keys := keyref.NewKeyring(keyref.Options{})
	defer keys.Close()
	if _, err := keys.Generate(ctx, r, pki.KeyECDSAP256); err != nil {
		return fmt.Errorf("make the OCSP responder key: %w", err)
	}
	cfg.Keys.OCSP = r.String()
	return atomicfile.WriteFile(filepath.Join(dir, pki.ConfigFile), pki.MarshalConfig(cfg), 0o644)
}

// openOCSPKey opens the OCSP responder's token key ca.json names, or
// returns nil (in-memory keys) when it names none.
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
