package pki_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mutual-tls/mutual/internal/pki"
)

func TestParseKeyType(t *testing.T) {
	tests := []struct {
		in   string
		want pki.KeyType
		ok   bool
	}{
		{"", pki.KeyECDSAP256, true},
		{"ecdsa-p256", pki.KeyECDSAP256, true},
		{"ECDSA-P384", pki.KeyECDSAP384, true},
		{"ed25519", pki.KeyEd25519, true},
		{"rsa-3072", pki.KeyRSA3072, true},
		{"rsa-2048", "", false},
		{"p256", "", false},
		{" ed25519", "", false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := pki.ParseKeyType(tt.in)
			if !tt.ok {
				if err == nil {
					t.Fatalf("ParseKeyType(%q) = %q, want an error", tt.in, got)
				}
				// The message names the bad value and the choices.
				for _, want := range []string{tt.in, "ecdsa-p256", "rsa-3072"} {
					if !strings.Contains(err.Error(), want) {
						t.Errorf("error %q does not name %q", err, want)
					}
				}
				return
			}
			if err != nil || got != tt.want {
				t.Errorf("ParseKeyType(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
			}
		})
	}
}

// checkKeyType fails unless pub is a key of type kt.
func checkKeyType(t *testing.T, kt pki.KeyType, pub crypto.PublicKey) {
	t.Helper()
	var ok bool
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		ok = kt == pki.KeyECDSAP256 && k.Curve == elliptic.P256() || kt == pki.KeyECDSAP384 && k.Curve == elliptic.P384()
	case ed25519.PublicKey:
		ok = kt == pki.KeyEd25519
	case *rsa.PublicKey:
		ok = kt == pki.KeyRSA3072 && k.N.BitLen() == 3072
	}
	if !ok {
		t.Errorf("key %s is not of type %s", pki.KeyDescription(pub), kt)
	}
}

func TestGenerateKey(t *testing.T) {
	descriptions := map[pki.KeyType]string{
		pki.KeyECDSAP256: "ECDSA P-256",
		pki.KeyECDSAP384: "ECDSA P-384",
		pki.KeyEd25519:   "Ed25519",
		pki.KeyRSA3072:   "RSA 3072",
	}
	if len(pki.KeyTypes) != len(descriptions) || pki.KeyTypes[0] != pki.KeyECDSAP256 {
		t.Fatalf("KeyTypes = %q, want the four types with ECDSA P-256 first", pki.KeyTypes)
	}
	for _, kt := range pki.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			k := testKey(t, kt)
			checkKeyType(t, kt, k.Public())
			if got := pki.KeyDescription(k.Public()); got != descriptions[kt] {
				t.Errorf("KeyDescription = %q, want %q", got, descriptions[kt])
			}
			// Keys are fresh (RSA is too slow to check twice).
			if kt != pki.KeyRSA3072 {
				other, err := pki.GenerateKey(kt, nil)
				if err != nil {
					t.Fatal(err)
				}
				if pki.PublicKeysEqual(k.Public(), other.Public()) {
					t.Error("two generated keys are equal")
				}
			}
		})
	}
	t.Run("empty means ECDSA P-256", func(t *testing.T) {
		k, err := pki.GenerateKey("", nil)
		if err != nil {
			t.Fatal(err)
		}
		checkKeyType(t, pki.KeyECDSAP256, k.Public())
	})
	t.Run("unknown", func(t *testing.T) {
		if k, err := pki.GenerateKey("dsa-1024", nil); err == nil || !strings.Contains(err.Error(), "dsa-1024") {
			t.Errorf("GenerateKey(dsa-1024) = %v, %v; want an error naming the type", k, err)
		}
	})
}

func TestKeyDescriptionUnknown(t *testing.T) {
	if got := pki.KeyDescription("not a key"); got != "string" {
		t.Errorf("KeyDescription(string) = %q", got)
	}
}

func TestPublicKeysEqual(t *testing.T) {
	a := testKey(t, pki.KeyECDSAP256)
	b, err := pki.GenerateKey(pki.KeyECDSAP256, nil)
	if err != nil {
		t.Fatal(err)
	}
	ed := testKey(t, pki.KeyEd25519)
	tests := []struct {
		name string
		x, y crypto.PublicKey
		want bool
	}{
		{"same", a.Public(), a.Public(), true},
		{"different keys", a.Public(), b.Public(), false},
		{"different types", a.Public(), ed.Public(), false},
		{"Ed25519", ed.Public(), ed.Public(), true},
		{"nil", nil, a.Public(), false},
		{"not a key", "x", "x", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := pki.PublicKeysEqual(tt.x, tt.y); got != tt.want {
				t.Errorf("PublicKeysEqual = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestMarshalParsePrivateKey(t *testing.T) {
	for _, kt := range pki.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			k := testKey(t, kt)

			plain, err := pki.MarshalPrivateKey(k, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := pem.Decode(plain); b == nil || b.Type != "PRIVATE KEY" {
				t.Fatalf("unencrypted key is not a PEM PRIVATE KEY:\n%s", plain)
			}
			got, err := pki.ParsePrivateKey(plain, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !pki.PublicKeysEqual(got.Public(), k.Public()) {
				t.Error("unencrypted key changed in the round trip")
			}
			// A passphrase given for an unencrypted key is not needed, and harmless.
			if _, err := pki.ParsePrivateKey(plain, []byte(testPassphrase)); err != nil {
				t.Errorf("unencrypted key with a passphrase: %v", err)
			}

			enc, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), testIterations)
			if err != nil {
				t.Fatal(err)
			}
			if b, _ := pem.Decode(enc); b == nil || b.Type != "ENCRYPTED PRIVATE KEY" {
				t.Fatalf("encrypted key is not a PEM ENCRYPTED PRIVATE KEY:\n%s", enc)
			}
			if bytes.Contains(enc, plain) {
				t.Fatal("the encrypted PEM holds the plain key")
			}
			got, err = pki.ParsePrivateKey(enc, []byte(testPassphrase))
			if err != nil {
				t.Fatal(err)
			}
			if !pki.PublicKeysEqual(got.Public(), k.Public()) {
				t.Error("encrypted key changed in the round trip")
			}

			for _, wrong := range []string{"wrong", testPassphrase + " ", strings.ToUpper(testPassphrase)} {
				_, err := pki.ParsePrivateKey(enc, []byte(wrong))
				if !errors.Is(err, pki.ErrWrongPassphrase) {
					t.Errorf("passphrase %q: err = %v, want ErrWrongPassphrase", wrong, err)
				}
			}
			_, err = pki.ParsePrivateKey(enc, nil)
			if err == nil || errors.Is(err, pki.ErrWrongPassphrase) || !strings.Contains(err.Error(), "no passphrase") {
				t.Errorf("no passphrase: err = %v, want one saying that a passphrase is needed", err)
			}
		})
	}
}

func TestMarshalPrivateKeyFreshSalt(t *testing.T) {
	k := testKey(t, pki.KeyEd25519)
	a, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), testIterations)
	if err != nil {
		t.Fatal(err)
	}
	b, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), testIterations)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(a, b) {
		t.Error("encrypting the same key twice gave the same bytes: salt or IV is not fresh")
	}
}

func TestMarshalPrivateKeyUnsupported(t *testing.T) {
	var k crypto.Signer = unsupportedSigner{testKey(t, pki.KeyECDSAP256)}
	if _, err := pki.MarshalPrivateKey(k, nil, 0); err == nil {
		t.Error("MarshalPrivateKey accepted a key type PKCS#8 cannot hold")
	}
	if _, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), testIterations); err == nil {
		t.Error("MarshalPrivateKey with a passphrase accepted a key type PKCS#8 cannot hold")
	}
}

type unsupportedSigner struct{ crypto.Signer }

// The PKCS#8 structures of an encrypted key, as RFC 8018 defines them.
type (
	encryptedPrivateKeyInfo struct {
		Algorithm     pkix.AlgorithmIdentifier
		EncryptedData []byte
	}
	pbes2Params struct {
		KeyDerivationFunc pkix.AlgorithmIdentifier
		EncryptionScheme  pkix.AlgorithmIdentifier
	}
	pbkdf2Params struct {
		Salt           []byte
		IterationCount int
		PRF            pkix.AlgorithmIdentifier `asn1:"optional"`
	}
	scryptParams struct {
		Salt []byte
		N    int
		R    int
		P    int
	}
)

var (
	oidPBES2       = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 13}
	oidPBKDF2      = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}
	oidScrypt      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 11591, 4, 11}
	oidHMACSHA256  = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	oidAES256CBC   = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 1, 42}
	oidUnknownAlgo = asn1.ObjectIdentifier{1, 2, 3, 4}
)

// encryptionParams decodes the PBES2 parameters of an encrypted PKCS#8 key.
func encryptionParams(der []byte) (info encryptedPrivateKeyInfo, params pbes2Params, kdf pbkdf2Params, iv []byte, err error) {
	if _, err = asn1.Unmarshal(der, &info); err != nil {
		return
	}
	if _, err = asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
		return
	}
	if _, err = asn1.Unmarshal(params.KeyDerivationFunc.Parameters.FullBytes, &kdf); err != nil {
		return
	}
	_, err = asn1.Unmarshal(params.EncryptionScheme.Parameters.FullBytes, &iv)
	return
}

func TestMarshalPrivateKeyParameters(t *testing.T) {
	k := testKey(t, pki.KeyECDSAP256)
	tests := []struct {
		iterations, want int
	}{
		{testIterations, testIterations},
		{0, pki.PBKDF2Iterations}, // the default work factor
	}
	for _, tt := range tests {
		enc, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), tt.iterations)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := pem.Decode(enc)
		info, params, kdf, iv, err := encryptionParams(b.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if !info.Algorithm.Algorithm.Equal(oidPBES2) {
			t.Errorf("scheme %v, want PBES2", info.Algorithm.Algorithm)
		}
		if !params.KeyDerivationFunc.Algorithm.Equal(oidPBKDF2) || !kdf.PRF.Algorithm.Equal(oidHMACSHA256) {
			t.Errorf("KDF %v with PRF %v, want PBKDF2 with HMAC-SHA256", params.KeyDerivationFunc.Algorithm, kdf.PRF.Algorithm)
		}
		if !params.EncryptionScheme.Algorithm.Equal(oidAES256CBC) || len(iv) != 16 {
			t.Errorf("cipher %v with a %d-byte IV, want AES-256-CBC with 16 bytes", params.EncryptionScheme.Algorithm, len(iv))
		}
		if kdf.IterationCount != tt.want || len(kdf.Salt) != 16 {
			t.Errorf("iterations %d (salt %d bytes), want %d (16 bytes)", kdf.IterationCount, len(kdf.Salt), tt.want)
		}
	}
	if pki.PBKDF2Iterations < 600_000 {
		t.Errorf("PBKDF2Iterations = %d, below OWASP's 600,000", pki.PBKDF2Iterations)
	}
}

// damagedKeys returns encrypted PEM keys whose PBES2 structure is broken in
// ways a disk or a careless edit might break it. They hold no key material:
// the ciphertext is random.
func damagedKeys(t testing.TB) map[string][]byte {
	enc, err := pki.MarshalPrivateKey(testKey(t, pki.KeyECDSAP256), []byte(testPassphrase), testIterations)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := pem.Decode(enc)
	info, params, kdf, _, err := encryptionParams(b.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	random := func(n int) []byte {
		p := make([]byte, n)
		rand.Read(p)
		return p
	}
	encode := func(f func(*encryptedPrivateKeyInfo, *pbes2Params, *pbkdf2Params, *[]byte)) []byte {
		info, params, kdf, iv := info, params, kdf, random(16)
		info.EncryptedData = random(len(info.EncryptedData))
		f(&info, &params, &kdf, &iv)
		must := func(b []byte, err error) []byte {
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
		params.KeyDerivationFunc.Parameters = asn1.RawValue{FullBytes: must(asn1.Marshal(kdf))}
		params.EncryptionScheme.Parameters = asn1.RawValue{FullBytes: must(asn1.Marshal(iv))}
		info.Algorithm.Parameters = asn1.RawValue{FullBytes: must(asn1.Marshal(params))}
		return pem.EncodeToMemory(&pem.Block{Type: "ENCRYPTED PRIVATE KEY", Bytes: must(asn1.Marshal(info))})
	}
	return map[string][]byte{
		"random ciphertext": encode(func(*encryptedPrivateKeyInfo, *pbes2Params, *pbkdf2Params, *[]byte) {}),
		"ciphertext not whole blocks": encode(func(i *encryptedPrivateKeyInfo, _ *pbes2Params, _ *pbkdf2Params, _ *[]byte) {
			i.EncryptedData = i.EncryptedData[:len(i.EncryptedData)-1]
		}),
		"no ciphertext": encode(func(i *encryptedPrivateKeyInfo, _ *pbes2Params, _ *pbkdf2Params, _ *[]byte) {
			i.EncryptedData = []byte{}
		}),
		"short IV": encode(func(_ *encryptedPrivateKeyInfo, _ *pbes2Params, _ *pbkdf2Params, iv *[]byte) { *iv = (*iv)[:15] }),
		"no IV":    encode(func(_ *encryptedPrivateKeyInfo, _ *pbes2Params, _ *pbkdf2Params, iv *[]byte) { *iv = []byte{} }),
		"zero iterations": encode(func(_ *encryptedPrivateKeyInfo, _ *pbes2Params, k *pbkdf2Params, _ *[]byte) {
			k.IterationCount = 0
		}),
		"negative iterations": encode(func(_ *encryptedPrivateKeyInfo, _ *pbes2Params, k *pbkdf2Params, _ *[]byte) {
			k.IterationCount = -1
		}),
		"unknown cipher": encode(func(_ *encryptedPrivateKeyInfo, p *pbes2Params, _ *pbkdf2Params, _ *[]byte) {
			p.EncryptionScheme.Algorithm = oidUnknownAlgo
		}),
		"unknown KDF": encode(func(_ *encryptedPrivateKeyInfo, p *pbes2Params, _ *pbkdf2Params, _ *[]byte) {
			p.KeyDerivationFunc.Algorithm = oidUnknownAlgo
		}),
		"not PBES2": encode(func(i *encryptedPrivateKeyInfo, _ *pbes2Params, _ *pbkdf2Params, _ *[]byte) {
			i.Algorithm.Algorithm = oidUnknownAlgo
		}),
	}
}

func TestParsePrivateKeyDamaged(t *testing.T) {
	for name, data := range damagedKeys(t) {
		t.Run(name, func(t *testing.T) {
			k, err := pki.ParsePrivateKey(data, []byte(testPassphrase))
			if err == nil {
				t.Fatalf("ParsePrivateKey accepted a damaged key: %T", k)
			}
			if !strings.Contains(err.Error(), "damaged") {
				t.Errorf("error %q does not say the key may be damaged", err)
			}
		})
	}
}

func TestParsePrivateKeyForms(t *testing.T) {
	ec := testKey(t, pki.KeyECDSAP384).(*ecdsa.PrivateKey)
	rsaKey := testKey(t, pki.KeyRSA3072).(*rsa.PrivateKey)
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(ec)
	if err != nil {
		t.Fatal(err)
	}
	block := func(typ string, der []byte) []byte {
		return pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der})
	}
	cert := initCA(t, pki.KeyECDSAP256).res.Root

	tests := []struct {
		name string
		data []byte
		want crypto.PublicKey // nil: an error
	}{
		{"SEC 1", block("EC PRIVATE KEY", sec1), ec.Public()},
		{"PKCS#1", block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey)), rsaKey.Public()},
		{"after a certificate and text", append(append([]byte("a comment\n"), pki.EncodeCertificates(cert)...), block("PRIVATE KEY", pkcs8)...), ec.Public()},
		{"first of two keys", append(block("EC PRIVATE KEY", sec1), block("RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rsaKey))...), ec.Public()},
		{"empty", nil, nil},
		{"not PEM", pkcs8, nil},
		{"certificate only", pki.EncodeCertificates(cert), nil},
		{"public key", block("PUBLIC KEY", []byte{0x30, 0x00}), nil},
		{"corrupt PKCS#8", block("PRIVATE KEY", pkcs8[:len(pkcs8)-3]), nil},
		{"corrupt SEC 1", block("EC PRIVATE KEY", sec1[:10]), nil},
		{"PKCS#8 in an RSA block", block("RSA PRIVATE KEY", pkcs8), nil},
		{"truncated PEM", block("PRIVATE KEY", pkcs8)[:40], nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := pki.ParsePrivateKey(tt.data, nil)
			if tt.want == nil {
				if err == nil {
					t.Fatalf("ParsePrivateKey accepted it as %T", k)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !pki.PublicKeysEqual(tt.want, k.Public()) {
				t.Error("parsed a different key")
			}
		})
	}
}

func TestParsePrivateKeyNotASigner(t *testing.T) {
	// PKCS#8 can hold X25519 keys, which cannot sign.
	der := mustHex(t, "302e020100300506032b656e04220420"+strings.Repeat("11", 32))
	_, err := pki.ParsePrivateKey(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil)
	if err == nil || !strings.Contains(err.Error(), "unsupported") {
		t.Errorf("err = %v, want one saying the key type is unsupported", err)
	}
}

// TestOpenSSLReadsEncryptedKeys checks that `openssl pkey` reads the
// encrypted keys MarshalPrivateKey writes, for every key type, and that
// ParsePrivateKey reads the ones openssl writes.
func TestOpenSSLReadsEncryptedKeys(t *testing.T) {
	bin := openssl(t)
	dir := t.TempDir()
	passFile := filepath.Join(dir, "pass")
	writeFile(t, passFile, []byte(testPassphrase+"\n"))
	passOutFile := filepath.Join(dir, "passout")
	writeFile(t, passOutFile, []byte(testPassphrase+"\n"))
	wrongFile := filepath.Join(dir, "wrong")
	writeFile(t, wrongFile, []byte("not the passphrase\n"))

	for _, kt := range pki.KeyTypes {
		t.Run(string(kt), func(t *testing.T) {
			k := testKey(t, kt)
			enc, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), testIterations)
			if err != nil {
				t.Fatal(err)
			}
			keyFile := filepath.Join(dir, string(kt)+".pem")
			writeFile(t, keyFile, enc)

			out, err := exec.Command(bin, "pkey", "-in", keyFile, "-passin", "file:"+passFile, "-noout").CombinedOutput()
			if err != nil {
				t.Fatalf("openssl pkey with the passphrase: %v\n%s", err, out)
			}
			out, err = exec.Command(bin, "pkey", "-in", keyFile, "-passin", "file:"+wrongFile, "-noout").CombinedOutput()
			if err == nil {
				t.Fatalf("openssl pkey accepted a wrong passphrase:\n%s", out)
			}

			// openssl sees the same public key.
			pubPEM, err := exec.Command(bin, "pkey", "-in", keyFile, "-passin", "file:"+passFile, "-pubout").Output()
			if err != nil {
				t.Fatalf("openssl pkey -pubout: %v", err)
			}
			b, _ := pem.Decode(pubPEM)
			if b == nil {
				t.Fatalf("openssl printed no PEM public key:\n%s", pubPEM)
			}
			pub, err := x509.ParsePKIXPublicKey(b.Bytes)
			if err != nil {
				t.Fatal(err)
			}
			if !pki.PublicKeysEqual(k.Public(), pub) {
				t.Error("openssl decrypted a different key")
			}

			// And the other way: a key openssl encrypts, ParsePrivateKey reads.
			// (openssl reads -passin and -passout from one file as two lines.)
			osslFile := filepath.Join(dir, string(kt)+"-openssl.pem")
			out, err = exec.Command(bin, "pkcs8", "-topk8", "-v2", "aes-256-cbc", "-in", keyFile, "-passin", "file:"+passFile,
				"-passout", "file:"+passOutFile, "-out", osslFile).CombinedOutput()
			if err != nil {
				t.Fatalf("openssl pkcs8 -topk8: %v\n%s", err, out)
			}
			got := readKey(t, osslFile, []byte(testPassphrase))
			if !pki.PublicKeysEqual(k.Public(), got.Public()) {
				t.Error("ParsePrivateKey read a different key from openssl's file")
			}
			data, err := os.ReadFile(osslFile)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := pki.ParsePrivateKey(data, []byte("not the passphrase")); !errors.Is(err, pki.ErrWrongPassphrase) {
				t.Errorf("openssl's file with a wrong passphrase: err = %v, want ErrWrongPassphrase", err)
			}
		})
	}
}

// kdfTooCostly reports whether data holds an encrypted key whose key
// derivation would take the fuzzer seconds or gigabytes: the work factor is
// read from the file, so mutations of it are slow, not wrong.
func kdfTooCostly(data []byte) bool {
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			return false
		}
		if b.Type != "ENCRYPTED PRIVATE KEY" {
			continue
		}
		var info encryptedPrivateKeyInfo
		var params pbes2Params
		if _, err := asn1.Unmarshal(b.Bytes, &info); err != nil {
			continue
		}
		if _, err := asn1.Unmarshal(info.Algorithm.Parameters.FullBytes, &params); err != nil {
			continue
		}
		kdf := params.KeyDerivationFunc
		switch {
		case kdf.Algorithm.Equal(oidPBKDF2):
			var p pbkdf2Params
			if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &p); err == nil && p.IterationCount > 10*testIterations {
				return true
			}
		case kdf.Algorithm.Equal(oidScrypt):
			var p scryptParams
			if _, err := asn1.Unmarshal(kdf.Parameters.FullBytes, &p); err == nil && (p.N > 1<<12 || p.R > 8 || p.P > 2) {
				return true
			}
		}
	}
}

func FuzzParsePrivateKey(f *testing.F) {
	// Valid keys are made afresh: no private key is checked in, so the
	// seeds in testdata are all broken ones.
	for _, kt := range []pki.KeyType{pki.KeyECDSAP256, pki.KeyEd25519} {
		k, err := pki.GenerateKey(kt, nil)
		if err != nil {
			f.Fatal(err)
		}
		plain, err := pki.MarshalPrivateKey(k, nil, 0)
		if err != nil {
			f.Fatal(err)
		}
		enc, err := pki.MarshalPrivateKey(k, []byte(testPassphrase), testIterations)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(plain, []byte(nil))
		f.Add(enc, []byte(testPassphrase))
		f.Add(enc, []byte("wrong"))
	}
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	sec1, err := x509.MarshalECPrivateKey(ec)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: sec1}), []byte(nil))
	for _, data := range damagedKeys(f) {
		f.Add(data, []byte(testPassphrase))
	}

	f.Fuzz(func(t *testing.T, data, passphrase []byte) {
		if kdfTooCostly(data) {
			t.Skip("key derivation too costly for fuzzing")
		}
		k, err := pki.ParsePrivateKey(data, passphrase)
		if err != nil {
			return
		}
		// Whatever parses can be written and read back as the same key.
		out, err := pki.MarshalPrivateKey(k, nil, 0)
		if err != nil {
			t.Fatalf("parsed %s key does not marshal: %v", pki.KeyDescription(k.Public()), err)
		}
		again, err := pki.ParsePrivateKey(out, nil)
		if err != nil {
			t.Fatalf("re-encoded key does not parse: %v", err)
		}
		if !pki.PublicKeysEqual(k.Public(), again.Public()) {
			t.Fatal("the key changed in the round trip")
		}
	})
}
