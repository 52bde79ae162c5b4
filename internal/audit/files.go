package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/pem"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/mutual-tls/mutual/internal/pki"
)

// identityDir audits a written identity directory: every private key's
// mode, the bundle's roots against the chain, the certificate itself.
func (a *auditor) identityDir(dir string) error {
	if a.dirs[filepath.Clean(dir)] {
		return nil
	}
	chain, err := pki.ReadCertificates(filepath.Join(dir, "cert.pem"))
	if err != nil {
		return fmt.Errorf("identity directory %s: %w", dir, err)
	}
	if a.dirs == nil {
		a.dirs = map[string]bool{}
	}
	a.dirs[filepath.Clean(dir)] = true
	a.r.Checked = append(a.r.Checked, "identity directory "+dir)
	entries, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("identity directory %s: %w", dir, err)
	}
	for _, e := range entries {
		// identity.WriteDir makes key.pem a link into the current ..data
		// set: the mode that matters is the file it points at.
		if e.Type().IsRegular() || e.Type()&fs.ModeSymlink != 0 {
			a.keyFileMode(filepath.Join(dir, e.Name()), 0o037, "0640 when a group must read it (agent --write ...,mode=0640); chown it to the workload's user")
		}
	}
	a.certChecks(filepath.Join(dir, "cert.pem"), chain[0], true)
	bundle := filepath.Join(dir, "bundle.pem")
	roots, err := pki.ReadCertificates(bundle)
	if err != nil {
		return nil // no bundle written: nothing trusted, nothing to flag
	}
	top := chain[len(chain)-1]
	for _, r := range roots {
		if r.Equal(top) || top.CheckSignatureFrom(r) == nil {
			continue
		}
		sum := sha256.Sum256(r.Raw)
		a.add("bundle-unrelated-root", High, "a bundle trusts a root that did not issue this identity's chain",
			fmt.Sprintf("%s: %q (SHA-256 %x) did not issue %q, the top of %s: every certificate that root signs is trusted here as if this CA had issued it",
				bundle, r.Subject.String(), sum[:8], top.Subject.String(), filepath.Join(dir, "cert.pem")),
			"write only the trust domain's roots to bundle.pem (the agent and mutual request do), and trust other trust domains through federation, one bundle per domain")
	}
	return nil
}

// caKeyFiles checks the mode of every private key under the CA directory,
// wherever it lies (ca() checks the files ca init writes; a key copied or
// exported elsewhere in the directory is found here).
func (a *auditor) caKeyFiles(dir string) {
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() || filepath.Base(p) == pki.DatabaseFile {
			return nil
		}
		a.keyFileMode(p, 0o077, "")
		return nil
	})
}

// keyFileMode flags a file holding a private key whose mode has a bit of
// forbidden set: 0o077 for CA keys (owner only); 0o037 for identity
// directories, where the agent may write a key 0640 for a workload's
// group, as identity.WriteDir allows. extra is added to the fix.
func (a *auditor) keyFileMode(p string, forbidden os.FileMode, extra string) {
	st, err := os.Stat(p)
	if err != nil || st.Mode().Perm()&forbidden == 0 || st.Size() > 1<<20 || !holdsPrivateKey(p) {
		return
	}
	fix := "chmod 600 " + p
	if extra != "" {
		fix += " (" + extra + ")"
	}
	a.addOnce("key-permissions", High, "a key file is readable by others",
		fmt.Sprintf("%s has mode %04o", p, st.Mode().Perm()), fix)
}

// holdsPrivateKey reports whether the file at p holds a PEM private key
// (PKCS#8, encrypted or not, EC or RSA).
func holdsPrivateKey(p string) bool {
	b, err := os.ReadFile(p)
	if err != nil {
		return false
	}
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return bytes.Contains(b, []byte("PRIVATE KEY-----"))
		}
		if strings.HasSuffix(blk.Type, "PRIVATE KEY") {
			return true
		}
	}
}

// addOnce adds a finding unless one with the same ID and evidence is
// already reported (the CA directory's key files are checked twice).
func (a *auditor) addOnce(id string, sev Severity, title, evidence, fix string) {
	for _, f := range a.r.Findings {
		if f.ID == id && f.Evidence == evidence {
			return
		}
	}
	a.add(id, sev, title, evidence, fix)
}
