//go:build cgo

package keyref

import (
	"context"
	"crypto"
	"crypto/dsa"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ThalesGroup/crypto11"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/keyref/softhsmtest"
	"github.com/mutual-tls/mutual/internal/pki"
)

// softToken is a fresh SoftHSM2 token in a temporary directory, its user
// PIN in a file.
type softToken struct {
	module, label, pinFile string
}

const testPIN = softhsmtest.PIN

// newSoftToken makes a SoftHSM2 token for one test (softhsmtest.New).
func newSoftToken(tb testing.TB) softToken {
	tb.Helper()
	t := softhsmtest.New(tb)
	return softToken{module: t.Module, label: t.Label, pinFile: t.PINFile}
}

// ref names object in the token.
func (s softToken) ref(tb testing.TB, object string) Ref {
	tb.Helper()
	r, err := Parse(softhsmtest.Token{Module: s.module, Label: s.label, PINFile: s.pinFile}.URI(object))
	if err != nil {
		tb.Fatal(err)
	}
	return r
}

func newKeyring(tb testing.TB, o Options) *Keyring {
	kr := NewKeyring(o)
	tb.Cleanup(func() {
		if err := kr.Close(); err != nil {
			tb.Error(err)
		}
	})
	return kr
}

func signAndVerify(t *testing.T, s crypto.Signer, opts crypto.SignerOpts) {
	t.Helper()
	digest := sha256.Sum256([]byte("mutual"))
	sig, err := s.Sign(rand.Reader, digest[:], opts)
	if err != nil {
		t.Fatal(err)
	}
	switch pub := s.Public().(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatal("the token's ECDSA signature does not verify with its public key")
		}
		digest[0] ^= 1
		if ecdsa.VerifyASN1(pub, digest[:], sig) {
			t.Fatal("the signature verifies for another digest too")
		}
	case *rsa.PublicKey:
		var err error
		if pss, ok := opts.(*rsa.PSSOptions); ok {
			err = rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pss)
		} else {
			err = rsa.VerifyPKCS1v15(pub, crypto.SHA256, digest[:], sig)
		}
		if err != nil {
			t.Fatalf("the token's RSA signature does not verify: %v", err)
		}
	default:
		t.Fatalf("unexpected public key %T", pub)
	}
}

func TestTokenGenerateFindSign(t *testing.T) {
	tok := newSoftToken(t)
	ctx := context.Background()
	kr := newKeyring(t, Options{})
	for _, tc := range []struct {
		kt   pki.KeyType
		opts []crypto.SignerOpts
	}{
		{pki.KeyECDSAP256, []crypto.SignerOpts{crypto.SHA256}},
		{pki.KeyECDSAP384, []crypto.SignerOpts{crypto.SHA256}},
		{pki.KeyRSA3072, []crypto.SignerOpts{crypto.SHA256, &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}}},
	} {
		t.Run(string(tc.kt), func(t *testing.T) {
			ref := tok.ref(t, string(tc.kt))
			made, err := kr.Generate(ctx, ref, tc.kt)
			if err != nil {
				t.Fatal(err)
			}
			want := map[pki.KeyType]string{pki.KeyECDSAP256: "ECDSA P-256", pki.KeyECDSAP384: "ECDSA P-384", pki.KeyRSA3072: "RSA 3072"}[tc.kt]
			if got := pki.KeyDescription(made.Public()); got != want {
				t.Errorf("Generate(%s) made a %s key, want %s", tc.kt, got, want)
			}
			assertNonExtractable(t, kr, made)
			found, err := kr.Signer(ctx, ref)
			if err != nil {
				t.Fatal(err)
			}
			if !pki.PublicKeysEqual(found.Public(), made.Public()) {
				t.Fatal("Signer found another key than Generate made")
			}
			for _, o := range tc.opts {
				signAndVerify(t, found, o)
			}
		})
	}
}

// assertNonExtractable reads the private key object's attributes: the key
// must be sensitive and never extractable, so it cannot leave the token.
func assertNonExtractable(t *testing.T, kr *Keyring, s crypto.Signer) {
	t.Helper()
	ts, ok := s.(*tokenSigner)
	if td, isRSA := s.(*tokenDecrypter); isRSA {
		ts, ok = td.tokenSigner, true
	}
	if !ok {
		t.Fatalf("a token key is a %T", s)
	}
	attrs, err := tokenContext(t, kr).GetAttributes(ts.key, []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive, crypto11.CkaToken})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range []crypto11.AttributeType{crypto11.CkaExtractable, crypto11.CkaSensitive, crypto11.CkaToken} {
		v := attrs[a]
		if v == nil || len(v.Value) != 1 {
			t.Fatalf("attribute %v missing: %v", a, attrs)
		}
		if want := byte(1); a == crypto11.CkaExtractable && v.Value[0] != 0 || a != crypto11.CkaExtractable && v.Value[0] != want {
			t.Errorf("attribute %v = %v", a, v.Value)
		}
	}
}

// tokenContext returns the crypto11 context of the one token kr has open.
func tokenContext(t *testing.T, kr *Keyring) *crypto11.Context {
	t.Helper()
	kr.mu.Lock()
	defer kr.mu.Unlock()
	if len(kr.tokens) != 1 {
		t.Fatalf("the keyring has %d tokens open, want 1", len(kr.tokens))
	}
	for _, tk := range kr.tokens {
		return tk.ctx
	}
	return nil
}

func TestTokenSignsCertificates(t *testing.T) {
	tok := newSoftToken(t)
	ctx := context.Background()
	kr := newKeyring(t, Options{})
	root, err := kr.Generate(ctx, tok.ref(t, "root"), "")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	rootTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "token root"},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour),
		KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true,
	}
	rootDER, err := x509.CreateCertificate(rand.Reader, rootTmpl, rootTmpl, root.Public(), root)
	if err != nil {
		t.Fatal(err)
	}
	rootCert, err := x509.ParseCertificate(rootDER)
	if err != nil {
		t.Fatal(err)
	}
	leafKey, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	// The CA's own issuance path, with the token key as the issuer's key.
	is := &pki.Issuer{Cert: rootCert, Key: root}
	leaf, err := is.Issue(pki.Leaf{ID: spiffeid.RequireFromString("spiffe://example.org/web"), PublicKey: leafKey.Public(), DNSNames: []string{"leaf.example"}, TTL: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(rootCert)
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: "leaf.example"}); err != nil {
		t.Fatalf("a certificate signed in the token does not verify: %v", err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: x509.NewCertPool(), DNSName: "leaf.example"}); err == nil {
		t.Fatal("the leaf verified without its root")
	}
	if err := leaf.CheckSignatureFrom(rootCert); err != nil {
		t.Fatalf("the leaf's signature does not check against the token root: %v", err)
	}
}

func TestTokenWrongPIN(t *testing.T) {
	tok := newSoftToken(t)
	ctx := context.Background()
	ref := tok.ref(t, "k")
	kr := NewKeyring(Options{})
	if _, err := kr.Generate(ctx, ref, pki.KeyECDSAP256); err != nil {
		t.Fatal(err)
	}
	// Close first: PKCS#11 logs in per token and process, so a second
	// Keyring would otherwise ride on this one's login.
	if err := kr.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tok.pinFile, []byte("9999\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := newKeyring(t, Options{}).Signer(ctx, ref)
	t.Log(err)
	if !errors.Is(err, ErrWrongPIN) {
		t.Fatalf("a wrong PIN gave %v, want ErrWrongPIN", err)
	}
	for _, want := range []string{`token "mutual-test"`, tok.pinFile} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the wrong-PIN error %q does not name %s", err, want)
		}
	}
	if strings.Contains(err.Error(), "9999") {
		t.Errorf("the wrong-PIN error repeats the PIN: %q", err)
	}

	// The right PIN from an environment variable opens the same key.
	t.Setenv("MUTUAL_TEST_PIN", testPIN)
	envRef, err := Parse(fmt.Sprintf("pkcs11:token=%s;object=k?module-path=%s&pin-source=env:MUTUAL_TEST_PIN", tok.label, tok.module))
	if err != nil {
		t.Fatal(err)
	}
	s, err := newKeyring(t, Options{}).Signer(ctx, envRef)
	if err != nil {
		t.Fatalf("PIN from the environment: %v", err)
	}
	signAndVerify(t, s, crypto.SHA256)
}

func TestTokenRefusals(t *testing.T) {
	tok := newSoftToken(t)
	ctx := context.Background()
	kr := newKeyring(t, Options{})
	if _, err := kr.Generate(ctx, tok.ref(t, "taken"), pki.KeyECDSAP256); err != nil {
		t.Fatal(err)
	}
	// A DSA key pair, which crypto11 finds but mutual cannot sign
	// certificates with.
	var params dsa.Parameters
	if err := dsa.GenerateParameters(&params, rand.Reader, dsa.L1024N160); err != nil {
		t.Fatal(err)
	}
	if _, err := tokenContext(t, kr).GenerateDSAKeyPairWithLabel([]byte{0xd5}, []byte("dsa"), &params); err != nil {
		t.Fatal(err)
	}
	parse := func(s string) Ref {
		r, err := Parse(s)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	q := fmt.Sprintf("?module-path=%s&pin-source=file:%s", tok.module, tok.pinFile)
	tests := []struct {
		name     string
		do       func() error
		is       error
		contains []string
	}{
		{"missing object", func() error { _, err := kr.Signer(ctx, tok.ref(t, "nope")); return err },
			ErrNotFound, []string{`token "mutual-test" object "nope"`, "object="}},
		{"missing id", func() error { _, err := kr.Signer(ctx, parse("pkcs11:token=mutual-test;id=%42"+q)); return err },
			ErrNotFound, []string{`token "mutual-test" id 42`}},
		{"missing token", func() error { _, err := kr.Signer(ctx, parse("pkcs11:token=elsewhere;object=taken"+q)); return err },
			ErrNoToken, []string{`token "elsewhere"`, "no such token", "token="}},
		{"wrong key type", func() error { _, err := kr.Signer(ctx, tok.ref(t, "dsa")); return err },
			nil, []string{`object "dsa"`, "is a DSA key", "generate an ECDSA P-256 key pair"}},
		{"label taken", func() error { _, err := kr.Generate(ctx, tok.ref(t, "taken"), pki.KeyECDSAP256); return err },
			ErrExists, []string{`object "taken"`, "another object="}},
		{"ed25519 label taken", func() error { _, err := kr.Generate(ctx, tok.ref(t, "taken"), pki.KeyEd25519); return err },
			ErrExists, []string{`object "taken"`, "another object="}},
		{"module missing", func() error {
			_, err := kr.Signer(ctx, parse("pkcs11:token=mutual-test;object=taken?module-path=/nonexistent/libp11.so&pin-source=file:"+tok.pinFile))
			return err
		}, nil, []string{`"module-path"`, "/nonexistent/libp11.so"}},
		{"module not a library", func() error {
			_, err := kr.Signer(ctx, parse("pkcs11:token=mutual-test;object=taken?module-path="+tok.pinFile+"&pin-source=file:"+tok.pinFile))
			return err
		}, nil, []string{`"module-path"`, "did not load as a PKCS#11 library"}},
		{"pin file missing", func() error {
			_, err := NewKeyring(Options{}).Signer(ctx, parse("pkcs11:token=mutual-test;object=taken?module-path="+tok.module+"&pin-source=file:/nonexistent/pin"))
			return err
		}, nil, []string{"pin-source=file:/nonexistent/pin", "create the file"}},
		{"pin env unset", func() error {
			_, err := NewKeyring(Options{}).Signer(ctx, parse("pkcs11:token=mutual-test;object=taken?module-path="+tok.module+"&pin-source=env:MUTUAL_TEST_UNSET_PIN"))
			return err
		}, nil, []string{"MUTUAL_TEST_UNSET_PIN", "unset or empty"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.do()
			if err == nil {
				t.Fatal("no error")
			}
			t.Log(err)
			if tc.is != nil && !errors.Is(err, tc.is) {
				t.Errorf("%v is not %v", err, tc.is)
			}
			for _, want := range tc.contains {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not say %q", err, want)
				}
			}
		})
	}
}

// TestTokenConcurrentSigning signs from many goroutines at once through one
// key: crypto11 hands each its own session from the pool.
func TestTokenConcurrentSigning(t *testing.T) {
	tok := newSoftToken(t)
	ctx := context.Background()
	kr := newKeyring(t, Options{MaxSessions: 1}) // raised to 2: 32 goroutines share one signing session
	s, err := kr.Generate(ctx, tok.ref(t, "busy"), pki.KeyECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	pub := s.Public().(*ecdsa.PublicKey)
	const workers, each = 32, 20
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := range each {
				digest := sha256.Sum256(fmt.Appendf(nil, "%d/%d", w, i))
				sig, err := s.Sign(rand.Reader, digest[:], crypto.SHA256)
				if err != nil {
					errs <- err
					return
				}
				if !ecdsa.VerifyASN1(pub, digest[:], sig) {
					errs <- fmt.Errorf("signature %d/%d does not verify", w, i)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if err := kr.Close(); err != nil {
		t.Fatal(err)
	}
	digest := sha256.Sum256([]byte("after close"))
	if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err == nil || !strings.Contains(err.Error(), `token "mutual-test" object "busy"`) {
		t.Errorf("signing after Close gave %v, want an error naming the key", err)
	}
}

// BenchmarkSign compares one ECDSA P-256 signature with a file key (in
// memory) against one made inside SoftHSM2, one at a time and from
// GOMAXPROCS goroutines at once (-parallel sub-benchmarks).
func BenchmarkSign(b *testing.B) {
	digest := sha256.Sum256([]byte("mutual"))
	bench := func(b *testing.B, s crypto.Signer) {
		b.Run("serial", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("parallel", func(b *testing.B) {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := s.Sign(rand.Reader, digest[:], crypto.SHA256); err != nil {
						b.Error(err)
						return
					}
				}
			})
		})
	}
	b.Run("file", func(b *testing.B) {
		k, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
		if err != nil {
			b.Fatal(err)
		}
		pemKey, err := pki.MarshalPrivateKey(k, []byte("pass"), 1000)
		if err != nil {
			b.Fatal(err)
		}
		path := filepath.Join(b.TempDir(), "key.pem")
		if err := os.WriteFile(path, pemKey, 0o600); err != nil {
			b.Fatal(err)
		}
		r, err := Parse(path)
		if err != nil {
			b.Fatal(err)
		}
		s, err := newKeyring(b, Options{Passphrase: []byte("pass")}).Signer(context.Background(), r)
		if err != nil {
			b.Fatal(err)
		}
		bench(b, s)
	})
	b.Run("softhsm2", func(b *testing.B) {
		tok := newSoftToken(b)
		s, err := newKeyring(b, Options{}).Generate(context.Background(), tok.ref(b, "bench"), pki.KeyECDSAP256)
		if err != nil {
			b.Fatal(err)
		}
		bench(b, s)
	})
}

// TestTokenDecrypter: an RSA key generated in the token decrypts inside it
// through OpenDecrypter; an ECDSA key is refused with a message naming RSA.
func TestTokenDecrypter(t *testing.T) {
	tok := newSoftToken(t)
	kr := newKeyring(t, Options{})
	ctx := context.Background()
	ref := tok.ref(t, "kek")
	if _, err := kr.Generate(ctx, ref, pki.KeyRSA3072); err != nil {
		t.Fatal(err)
	}
	d, err := kr.OpenDecrypter(ctx, ref.String())
	if err != nil {
		t.Fatal(err)
	}
	assertNonExtractable(t, kr, d.(crypto.Signer))
	// RSA-OAEP with SHA-1 and no label is what every token decrypts
	// (SoftHSM2 2.6 refuses SHA-256 and labels); keyrelease uses it.
	ct, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, d.Public().(*rsa.PublicKey), []byte("secret"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := d.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1}); err != nil || string(pt) != "secret" {
		t.Errorf("decrypt in the token: %q, %v", pt, err)
	}
	ct[10] ^= 1
	if _, err := d.Decrypt(rand.Reader, ct, &rsa.OAEPOptions{Hash: crypto.SHA1}); err == nil || !strings.Contains(err.Error(), `object "kek"`) {
		t.Errorf("a damaged ciphertext: %v, want an error naming the key", err)
	}
	if _, err := kr.Generate(ctx, tok.ref(t, "ec"), pki.KeyECDSAP256); err != nil {
		t.Fatal(err)
	}
	if _, err := kr.OpenDecrypter(ctx, tok.ref(t, "ec").String()); err == nil || !strings.Contains(err.Error(), "RSA") {
		t.Errorf("an ECDSA key as decrypter: %v, want a refusal naming RSA", err)
	}
}
