package diagnose

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/mutual-tls/mutual/internal/pki"
)

// Files name a client identity on disk. Cert, Key and Bundle override the
// files of IdentityDir (cert.pem, key.pem, bundle.pem).
type Files struct {
	IdentityDir, Cert, Key, Bundle string
}

func (f Files) set() bool { return f != Files{} }

func (f Files) paths() (cert, key, bundle string) {
	if f.IdentityDir != "" {
		cert, key, bundle = filepath.Join(f.IdentityDir, "cert.pem"), filepath.Join(f.IdentityDir, "key.pem"), filepath.Join(f.IdentityDir, "bundle.pem")
	}
	if f.Cert != "" {
		cert = f.Cert
	}
	if f.Key != "" {
		key = f.Key
	}
	if f.Bundle != "" {
		bundle = f.Bundle
	}
	return cert, key, bundle
}

// FileError is what is wrong with one local file: the class of the verdict
// and the words for it.
type FileError struct {
	Path  string
	Class Class
	// Problem says what is wrong; Fix how to make the file right.
	Problem, Fix string
}

func (e *FileError) Error() string { return fmt.Sprintf("%s: %s (%s)", e.Path, e.Problem, e.Fix) }

// Identity is a client or server identity read from Files.
type Identity struct {
	Chain []*x509.Certificate
	Key   any
	Roots []*x509.Certificate
}

// LoadFiles reads f. A missing bundle of an identity directory is no
// error (the system's roots are used); any other problem is a *FileError.
func LoadFiles(f Files) (*Identity, error) {
	certPath, keyPath, bundlePath := f.paths()
	id := &Identity{}
	var err error
	if certPath != "" {
		if id.Chain, err = readCerts(certPath, "certificate"); err != nil {
			return nil, err
		}
	}
	if keyPath != "" {
		if id.Key, err = readKey(keyPath); err != nil {
			return nil, err
		}
	}
	if bundlePath != "" {
		if id.Roots, err = readCerts(bundlePath, "bundle"); err != nil {
			var fe *FileError
			if f.Bundle == "" && errors.As(err, &fe) && fe.Class == FileUnreadable {
				return id, nil // an identity directory without bundle.pem
			}
			return nil, err
		}
	}
	return id, nil
}

// readFiles is Run's first step: it reads Options.Files.
func (d *diagnosis) readFiles(context.Context) *Report {
	if !d.o.Files.set() {
		return nil
	}
	id, err := LoadFiles(d.o.Files)
	var fe *FileError
	if errors.As(err, &fe) {
		d.r.step("files", false, "%s: %s", fe.Path, fe.Problem)
		return d.r.verdict(fe.Class, fmt.Sprintf("the file %s: %s", fe.Path, fe.Problem), fe.Fix)
	}
	if d.o.ClientChain == nil {
		d.o.ClientChain = id.Chain
	}
	if d.o.ClientKey == nil {
		d.o.ClientKey = id.Key
	}
	if d.o.Roots == nil {
		d.o.Roots = id.Roots
	}
	d.r.step("files", true, "read %d certificate(s), %s, %d root(s)", len(id.Chain), keyWords(id.Key), len(id.Roots))
	return nil
}

func keyWords(k any) string {
	if pub, ok := publicOf(k); ok {
		return "key " + pki.KeyDescription(pub)
	}
	return "no key"
}

func readCerts(path, what string) ([]*x509.Certificate, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Class: FileUnreadable, Problem: err.Error(), Fix: "check the path and the file's permissions"}
	}
	certs, ferr := parseCertFile(b, what)
	if ferr != nil {
		ferr.Path = path
		return nil, ferr
	}
	return certs, nil
}

func readKey(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, &FileError{Path: path, Class: FileUnreadable, Problem: err.Error(), Fix: "check the path and the file's permissions"}
	}
	k, ferr := parseKeyFile(b)
	if ferr != nil {
		ferr.Path = path
		return nil, ferr
	}
	return k, nil
}

// pkcs12Fix says how to turn a PKCS#12 file into the PEM files mutual reads.
const pkcs12Fix = "extract PEM files from it: openssl pkcs12 -in FILE -nokeys -out cert.pem (certificates) and openssl pkcs12 -in FILE -nocerts -nodes -out key.pem (key; mode 0600)"

// parseCertFile reads PEM certificates and, when it cannot, says what the
// file is instead.
func parseCertFile(b []byte, what string) ([]*x509.Certificate, *FileError) {
	if fe := notPEM(b, what); fe != nil {
		return nil, fe
	}
	certs, err := pki.ParseCertificates(b)
	if err != nil {
		return nil, &FileError{Class: NotPEM, Problem: err.Error(), Fix: "the " + what + " file must hold PEM CERTIFICATE blocks (openssl x509 -in FILE -text shows whether it does)"}
	}
	if fe := damagedBlocks(b); fe != nil {
		return nil, fe
	}
	return certs, nil
}

// parseKeyFile reads a PEM private key and says what is wrong otherwise.
func parseKeyFile(b []byte) (any, *FileError) {
	if fe := notPEM(b, "key"); fe != nil {
		return nil, fe
	}
	for rest := b; ; {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
		if block.Type == "ENCRYPTED PRIVATE KEY" {
			return nil, &FileError{Class: KeyEncrypted, Problem: "the private key is encrypted (ENCRYPTED PRIVATE KEY) and a TLS client needs it in the clear",
				Fix: "write a decrypted copy readable only by the workload: openssl pkey -in key.pem -out key-plain.pem && chmod 600 key-plain.pem (workload keys mutual writes are not encrypted; only CA keys are)"}
		}
		if block.Type == "CERTIFICATE" {
			continue
		}
	}
	k, err := pki.ParsePrivateKey(b, nil)
	if err != nil {
		if fe := damagedBlocks(b); fe != nil {
			return nil, fe
		}
		return nil, &FileError{Class: NotPEM, Problem: err.Error(), Fix: "the key file must hold one PEM PRIVATE KEY block (PKCS#8), as mutual writes key.pem"}
	}
	return k, nil
}

// notPEM says what a file without any PEM block is: PKCS#12, DER, or
// something else.
func notPEM(b []byte, what string) *FileError {
	if bytes.Contains(b, []byte("-----BEGIN ")) {
		return nil
	}
	switch {
	case len(bytes.TrimSpace(b)) == 0:
		return &FileError{Class: NotPEM, Problem: "the " + what + " file is empty", Fix: "write the " + what + " into it (mutual writes cert.pem, key.pem and bundle.pem)"}
	case isPKCS12(b):
		return &FileError{Class: PKCS12NotPEM, Problem: "this is a PKCS#12 (.p12/.pfx) file, where a PEM " + what + " file was expected", Fix: pkcs12Fix}
	case isDER(b):
		return &FileError{Class: NotPEM, Problem: "this is binary DER, where a PEM " + what + " file was expected",
			Fix: "convert it: openssl x509 -inform der -in FILE -out cert.pem (a certificate) or openssl pkey -inform der -in FILE -out key.pem (a key)"}
	}
	return &FileError{Class: NotPEM, Problem: fmt.Sprintf("no PEM block in it (it starts with %q)", printable(b[:min(len(b), 24)])),
		Fix: "give a PEM " + what + " file (-----BEGIN ...-----); check that the path is the right file"}
}

// damagedBlocks finds a BEGIN line whose block does not decode (bad
// base64, no END line): pem.Decode skips such blocks silently.
func damagedBlocks(b []byte) *FileError {
	begins := bytes.Count(b, []byte("-----BEGIN "))
	decoded := 0
	for rest := b; ; decoded++ {
		var block *pem.Block
		if block, rest = pem.Decode(rest); block == nil {
			break
		}
	}
	if decoded >= begins {
		return nil
	}
	return &FileError{Class: NotPEM, Problem: fmt.Sprintf("%d of its %d PEM blocks are damaged (not base64, or no matching END line): garbage was written into the file", begins-decoded, begins),
		Fix: "write the file again from its source (a copy-paste often breaks lines or adds characters); openssl x509 -in FILE (or openssl pkey) shows where it breaks"}
}

// pfxHeader is the start of a PKCS#12 PFX: version 3 and a ContentInfo.
type pfxHeader struct {
	Version  int
	AuthSafe struct {
		ContentType asn1.ObjectIdentifier
		Content     asn1.RawValue `asn1:"explicit,optional,tag:0"`
	}
	MacData asn1.RawValue `asn1:"optional"`
}

var oidData = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 7, 1}

func isPKCS12(b []byte) bool {
	var h pfxHeader
	if _, err := asn1.Unmarshal(b, &h); err != nil {
		return false
	}
	return h.Version == 3 && h.AuthSafe.ContentType.Equal(oidData)
}

func isDER(b []byte) bool {
	var v asn1.RawValue
	rest, err := asn1.Unmarshal(b, &v)
	return err == nil && len(rest) == 0 && v.Tag == asn1.TagSequence
}
