package main

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"time"
)

// stepCA is a step-ca (smallstep/certificates) with a root and an
// intermediate made here, its badger database, and one JWK provisioner
// whose key signs the one-time tokens of POST /1.0/sign.
type stepCA struct {
	url   string
	proc  *exec.Cmd
	roots *x509.CertPool
	jwk   *ecdsa.PrivateKey
	kid   string
}

const stepProvisioner = "bench"

// startStepCA writes a step-ca configuration under work/step-ca and starts
// bin on it.
func startStepCA(ctx context.Context, bin, work string, logs *os.File) (*stepCA, error) {
	dir := filepath.Join(work, "step-ca")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	rootKey, root, err := makeCA(nil, nil, "enrollbench step-ca root")
	if err != nil {
		return nil, err
	}
	intKey, inter, err := makeCA(rootKey, root, "enrollbench step-ca intermediate")
	if err != nil {
		return nil, err
	}
	keyDER, err := x509.MarshalECPrivateKey(intKey)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{
		"root.crt":         pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: root.Raw}),
		"intermediate.crt": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: inter.Raw}),
		"intermediate.key": pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}),
	}
	for name, b := range files {
		if err := os.WriteFile(filepath.Join(dir, name), b, 0o600); err != nil {
			return nil, err
		}
	}
	s := &stepCA{roots: x509.NewCertPool()}
	s.roots.AddCert(root)
	if s.jwk, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader); err != nil {
		return nil, err
	}
	pub := jwkOf(&s.jwk.PublicKey)
	s.kid = jwkThumbprint(pub)
	pub["kid"], pub["use"], pub["alg"] = s.kid, "sig", "ES256"
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	s.url = "https://" + addr
	cfg := map[string]any{
		"root":     filepath.Join(dir, "root.crt"),
		"crt":      filepath.Join(dir, "intermediate.crt"),
		"key":      filepath.Join(dir, "intermediate.key"),
		"address":  addr,
		"dnsNames": []string{"127.0.0.1"},
		"logger":   map[string]any{"format": "text"},
		"db":       map[string]any{"type": "badgerv2", "dataSource": filepath.Join(dir, "db")},
		"authority": map[string]any{
			"provisioners": []any{map[string]any{"type": "JWK", "name": stepProvisioner, "key": pub}},
		},
		"tls": map[string]any{"minVersion": 1.2, "maxVersion": 1.3, "renegotiation": false},
	}
	b, err := json.MarshalIndent(cfg, "", "  ")
	if err != nil {
		return nil, err
	}
	conf := filepath.Join(dir, "ca.json")
	if err := os.WriteFile(conf, b, 0o600); err != nil {
		return nil, err
	}
	s.proc = exec.Command(bin, conf)
	s.proc.Stdout, s.proc.Stderr = logs, logs
	if err := s.proc.Start(); err != nil {
		return nil, fmt.Errorf("start step-ca %s: %w", bin, err)
	}
	if err := waitReady(ctx, s.url+"/health", s.roots); err != nil {
		s.stop()
		return nil, fmt.Errorf("step-ca (its output: %s): %w", logs.Name(), err)
	}
	return s, nil
}

func (s *stepCA) target() *target {
	return &target{name: "step-ca", urls: []string{s.url}, want: http.StatusCreated, roots: s.roots, pids: []int{s.proc.Process.Pid}}
}

// stepSubject is the name every step-ca token and CSR carries.
const stepSubject = "bench.test"

// signBodies makes n bodies of POST /1.0/sign, each with its own one-time
// token (a distinct jti: step-ca refuses a token used before).
func (s *stepCA) signBodies(n int, csrs []string) ([][]byte, error) {
	bodies := make([][]byte, n)
	now := time.Now()
	for i := range bodies {
		jti := make([]byte, 16)
		rand.Read(jti)
		tok, err := s.token(map[string]any{
			"iss": stepProvisioner, "sub": stepSubject, "sans": []string{stepSubject},
			"aud": s.url + "/1.0/sign", "jti": hex.EncodeToString(jti),
			"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(2 * time.Hour).Unix(),
		})
		if err != nil {
			return nil, err
		}
		if bodies[i], err = json.Marshal(map[string]string{"csr": csrs[i%len(csrs)], "ott": tok}); err != nil {
			return nil, err
		}
	}
	return bodies, nil
}

// token is a compact JWS (ES256) of claims under the provisioner's key.
func (s *stepCA) token(claims map[string]any) (string, error) {
	h, _ := json.Marshal(map[string]string{"alg": "ES256", "kid": s.kid, "typ": "JWT"})
	c, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	b64 := base64.RawURLEncoding.EncodeToString
	signing := b64(h) + "." + b64(c)
	sum := sha256.Sum256([]byte(signing))
	r, sv, err := ecdsa.Sign(rand.Reader, s.jwk, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	sv.FillBytes(sig[32:])
	return signing + "." + b64(sig), nil
}

func (s *stepCA) stop() { stopAll([]*exec.Cmd{s.proc}) }

// jwkOf is the public JWK (RFC 7518) of a P-256 key, without kid.
func jwkOf(k *ecdsa.PublicKey) map[string]any {
	b64 := base64.RawURLEncoding.EncodeToString
	x, y := make([]byte, 32), make([]byte, 32)
	k.X.FillBytes(x)
	k.Y.FillBytes(y)
	return map[string]any{"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)}
}

// jwkThumbprint is the RFC 7638 thumbprint of an EC JWK, which step's
// tools use as the key ID.
func jwkThumbprint(j map[string]any) string {
	s := fmt.Sprintf(`{"crv":"%s","kty":"%s","x":"%s","y":"%s"}`, j["crv"], j["kty"], j["x"], j["y"])
	sum := sha256.Sum256([]byte(s))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// makeCA makes a P-256 CA certificate: self-signed when parent is nil,
// else an intermediate (path length 0) signed by parentKey.
func makeCA(parentKey crypto.Signer, parent *x509.Certificate, name string) (*ecdsa.PrivateKey, *x509.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	tpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(10 * 24 * time.Hour),
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign, BasicConstraintsValid: true, IsCA: true,
	}
	if parent == nil {
		parent, parentKey = tpl, key
	} else {
		tpl.MaxPathLenZero = true
	}
	der, err := x509.CreateCertificate(rand.Reader, tpl, parent, &key.PublicKey, parentKey)
	if err != nil {
		return nil, nil, err
	}
	cert, err := x509.ParseCertificate(der)
	return key, cert, err
}
