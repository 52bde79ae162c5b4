package identity

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"software.sslmate.com/src/go-pkcs12"

	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/pki"
)

// CAURLsFile, in an identity directory, records the addresses of the CA the
// identity renews at (and where a consumer such as `mutual proxy
// --identity-dir` checks revocation).
const CAURLsFile = "mutual.json"

// Owner is the user (and group) an identity directory is written for, when
// that is not the writer's own.
type Owner struct {
	UID, GID int
}

// WriteOptions configure WriteDir. The zero value writes the identity for
// the current user, key 0600, with no CA addresses.
type WriteOptions struct {
	// CAURLs, when not empty, are recorded in CAURLsFile as part of the set.
	// When empty (and Owner is nil) the addresses dir records already are
	// kept, if they can be read.
	CAURLs []string
	// Owner, when not nil, is the user the files are for (the agent's
	// --write ...,owner=USER). The directory and every directory above it
	// are checked first: none may be writable by a user other than root,
	// the writer and (for the directory itself) the owner, or WriteDir
	// fails with an *UnsafeDirError. Files get the owner before they are
	// visible when the writer runs as root. A missing directory is created
	// 0755. When nil the files belong to the writer, nothing above the
	// directory is checked, and a missing directory is created 0700.
	Owner *Owner
	// KeyMode is the permission of key.pem; zero means 0600. Anything
	// beyond owner read-write and group read is refused.
	KeyMode fs.FileMode
	// Format is how the certificate and key are written; zero means
	// FormatPEM. The bundle is always bundle.pem (Names.Bundle).
	Format Format
	// Names, where not empty, replace the default file names (e.g.
	// tls.crt and tls.key as Kubernetes names them, or cert.pem.key
	// beside cert.pem for HAProxy).
	Names Names
	// Password encrypts a FormatPKCS12 file; it is required there.
	Password string
}

// Format is how WriteDir writes the certificate and key.
type Format string

const (
	// FormatPEM writes the chain (cert.pem) and the PKCS#8 key (key.pem)
	// as two files.
	FormatPEM Format = "pem"
	// FormatCombined writes one PEM file (combined.pem) holding the chain
	// and then the key, as HAProxy's crt and many proxies read it; a
	// program opening it once always gets a key matching its chain.
	FormatCombined Format = "combined"
	// FormatPKCS12 writes one password-protected PKCS#12 file
	// (identity.p12) with the key and the chain, as Java keystores read
	// it.
	FormatPKCS12 Format = "pkcs12"
)

// Names are the file names WriteDir uses; an empty name means the default.
type Names struct {
	Cert, Key, Bundle string // FormatPEM: cert.pem, key.pem; bundle.pem always
	// File is the one file of FormatCombined (combined.pem) or
	// FormatPKCS12 (identity.p12).
	File string
}

// Check refuses a name that is not a plain, visible file name in the
// directory (WriteDir refuses it too; this lets a program refuse it when it
// starts).
func (n Names) Check() error {
	for _, name := range []string{n.Cert, n.Key, n.Bundle, n.File} {
		if _, err := orDefault(name, "-"); err != nil {
			return err
		}
	}
	return nil
}

// ParseFormat reads a format name: pem, combined or pkcs12.
func ParseFormat(s string) (Format, error) {
	switch f := Format(s); f {
	case FormatPEM, FormatCombined, FormatPKCS12:
		return f, nil
	}
	return "", fmt.Errorf("format %q: write pem, combined or pkcs12", s)
}

func orDefault(name, def string) (string, error) {
	if name == "" {
		return def, nil
	}
	if name != filepath.Base(name) || name == "." || name == ".." || strings.HasPrefix(name, ".") || name == CAURLsFile || name == FederatedDir {
		return "", fmt.Errorf("file name %q: a plain name in the directory, not hidden, not %s or %s", name, CAURLsFile, FederatedDir)
	}
	return name, nil
}

// UnsafeDirError says why a directory cannot hold files written for
// another user: someone else could swap the names in it.
type UnsafeDirError struct {
	// Dir is the directory at fault (the one written to or one above it).
	Dir string
	// Reason says what is wrong with it, e.g. "writable by every user".
	Reason string
}

func (e *UnsafeDirError) Error() string {
	return fmt.Sprintf("directory %s is not safe: %s; make it and every directory above it owned by root and not writable by group or others (the directory itself may belong to the owner)", e.Dir, e.Reason)
}

// dirFile is one file of an identity directory. Its name is a plain name,
// or FederatedDir/NAME for a federated bundle.
type dirFile struct {
	name string
	data []byte
	mode fs.FileMode
}

// top is the name in the identity directory that leads to f: its own, or
// FederatedDir.
func (f dirFile) top() string {
	top, _, _ := strings.Cut(f.name, "/")
	return top
}

// WriteDir writes id into dir as one set: cert.pem (the chain), key.pem
// (PKCS#8, o.KeyMode), bundle.pem (the roots), federated/TD.pem for each
// trust domain in id.Federated and, with o.CAURLs, mutual.json; o.Format
// and o.Names change the key and certificate files (names of an earlier set
// this one lacks are removed, federated/ with them when id.Federated is
// empty).
//
// The files go into a fresh hidden directory dir/.mutual-<random>/, each
// created exclusively, given its owner and mode before a byte is written,
// and synced; one rename of the symbolic link dir/..data then makes the
// whole set current, and the names in dir are symbolic links through
// ..data. A reader (Load, DirSource, a program reading the files) sees the
// old set or the new one, never a mix. Earlier sets are removed.
func WriteDir(dir string, id *Identity, o WriteOptions) error {
	if len(o.CAURLs) == 0 && o.Owner == nil {
		// Files for another user are never read back by path: the
		// owner may have swapped the name.
		// Unreadable addresses are left as they are, for the caller
		// that writes them next (WriteCAURLs).
		o.CAURLs, _ = ReadCAURLs(dir)
	}
	files, err := dirFiles(id, o)
	if err != nil {
		return fmt.Errorf("write identity %s: %w", dir, err)
	}
	return writeSet(dir, files, o.Owner)
}

// PrepareDir creates dir if it is missing and checks it as WriteDir would,
// so that a program can refuse an unsafe directory when it starts rather
// than at its first write.
func PrepareDir(dir string, o WriteOptions) error {
	return prepareDir(dir, o.Owner)
}

func dirFiles(id *Identity, o WriteOptions) ([]dirFile, error) {
	if id == nil || len(id.Chain) == 0 || id.Key == nil || len(id.Roots) == 0 {
		return nil, errors.New("chain, key and roots are required")
	}
	mode := o.KeyMode
	if mode == 0 {
		mode = 0o600
	}
	if mode&^0o777 != 0 || mode&0o037 != 0 {
		return nil, fmt.Errorf("key mode %#o: at most owner read-write and group read (0600 or 0640)", mode)
	}
	bundle, err := orDefault(o.Names.Bundle, BundleFile)
	if err != nil {
		return nil, err
	}
	files := []dirFile{{bundle, pki.EncodeCertificates(id.Roots...), 0o644}}
	keyFiles, err := keyFiles(id, o, mode)
	if err != nil {
		return nil, err
	}
	files = append(files, keyFiles...)
	files = append(files, federatedFiles(id)...)
	if len(o.CAURLs) > 0 {
		files = append(files, dirFile{CAURLsFile, marshalCAURLs(o.CAURLs), 0o644})
	}
	seen := map[string]bool{}
	for _, f := range files {
		if seen[f.name] {
			return nil, fmt.Errorf("two files are named %s: give each its own name", f.name)
		}
		seen[f.name] = true
	}
	return files, nil
}

// federatedFiles are federated/TD.pem for each federated trust domain of
// id, in name order; the identity's own trust domain is never among them.
func federatedFiles(id *Identity) []dirFile {
	var out []dirFile
	for td, roots := range id.Federated {
		if td == id.ID.TrustDomain() || len(roots) == 0 {
			continue
		}
		out = append(out, dirFile{FederatedDir + "/" + td.Name() + federatedExt, pki.EncodeCertificates(roots...), 0o644})
	}
	slices.SortFunc(out, func(a, b dirFile) int { return strings.Compare(a.name, b.name) })
	return out
}

// keyFiles are the files holding the key (and the chain), in o.Format.
func keyFiles(id *Identity, o WriteOptions, mode fs.FileMode) ([]dirFile, error) {
	format := o.Format
	if format == "" {
		format = FormatPEM
	}
	if _, err := ParseFormat(string(format)); err != nil {
		return nil, err
	}
	if format == FormatPKCS12 {
		name, err := orDefault(o.Names.File, "identity.p12")
		if err != nil {
			return nil, err
		}
		p12, err := EncodePKCS12(id, o.Password)
		if err != nil {
			return nil, err
		}
		return []dirFile{{name, p12, mode}}, nil
	}
	if format == FormatCombined {
		name, err := orDefault(o.Names.File, "combined.pem")
		if err != nil {
			return nil, err
		}
		combined, err := EncodeCombined(id)
		if err != nil {
			return nil, err
		}
		return []dirFile{{name, combined, mode}}, nil
	}
	keyPEM, err := pki.MarshalPrivateKey(id.Key, nil, 0)
	if err != nil {
		return nil, err
	}
	chainPEM := pki.EncodeCertificates(id.Chain...)
	cert, err := orDefault(o.Names.Cert, CertFile)
	if err != nil {
		return nil, err
	}
	key, err := orDefault(o.Names.Key, KeyFile)
	if err != nil {
		return nil, err
	}
	return []dirFile{{key, keyPEM, mode}, {cert, chainPEM, 0o644}}, nil
}

// EncodeCombined returns id's chain (leaf first) and then its PKCS#8 key
// as one PEM file, as HAProxy's crt reads it.
func EncodeCombined(id *Identity) ([]byte, error) {
	keyPEM, err := pki.MarshalPrivateKey(id.Key, nil, 0)
	if err != nil {
		return nil, err
	}
	return append(pki.EncodeCertificates(id.Chain...), keyPEM...), nil
}

// EncodePKCS12 returns id's key and chain as a PKCS#12 file encrypted with
// password (AES-256 and PBKDF2, which Java 11+ and OpenSSL 1.1.1+ read); an
// empty password is refused.
func EncodePKCS12(id *Identity, password string) ([]byte, error) {
	if password == "" {
		return nil, errors.New("a PKCS#12 file needs a password (a password file)")
	}
	p12, err := pkcs12.Modern.Encode(id.Key, id.Chain[0], id.Chain[1:], password)
	if err != nil {
		return nil, fmt.Errorf("PKCS#12: %w", err)
	}
	return p12, nil
}

// ReadPasswordFile returns the first line of path (without its line end),
// as openssl's -passin file: reads it; an empty one is refused.
func ReadPasswordFile(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("password file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimSuffix(line, "\r")
	if line == "" {
		return "", fmt.Errorf("password file %s is empty: write the password on its first line", path)
	}
	return line, nil
}

// Save writes the identity into dir for the current user: WriteDir with no
// options (key 0600, a missing directory created 0700).
func (i *Identity) Save(dir string) error {
	return WriteDir(dir, i, WriteOptions{})
}

type caURLsFile struct {
	CAURLs []string `json:"ca_urls"`
}

func marshalCAURLs(urls []string) []byte {
	b, _ := json.MarshalIndent(caURLsFile{CAURLs: urls}, "", "  ")
	return append(b, '\n')
}

// ReadCAURLs returns the CA addresses recorded in dir; a directory that
// records none is not an error.
func ReadCAURLs(dir string) ([]string, error) {
	path := filepath.Join(dir, CAURLsFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read the CA addresses: %w", err)
	}
	var f caURLsFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w; write it again (mutual cert request) or remove it", path, err)
	}
	return f.CAURLs, nil
}

// WriteCAURLs replaces the CA addresses recorded in dir, alone. To change
// them with the identity, pass WriteOptions.CAURLs to WriteDir instead: this
// replaces one file (atomically) and leaves a set written by WriteDir
// otherwise as it is.
func WriteCAURLs(dir string, urls []string) error {
	return atomicfile.WriteFile(filepath.Join(dir, CAURLsFile), marshalCAURLs(urls), 0o644)
}

// setLink is the symbolic link WriteDir switches to make a set current.
const setLink = "..data"

// readSet calls read with the directory of the set current in dir (what
// dir/..data names, once) so that every file read is of one set; a set
// removed by a rotation while it was read is read again from the new one.
// A directory without ..data (written before it, or by another tool) is
// read by its names.
func readSet(dir string, read func(string) (*Identity, error)) (*Identity, error) {
	for try := 0; ; try++ {
		target, err := os.Readlink(filepath.Join(dir, setLink))
		if err != nil {
			return read(dir)
		}
		id, err := read(filepath.Join(dir, target))
		if err != nil && try < 3 && errors.Is(err, fs.ErrNotExist) {
			if now, lerr := os.Readlink(filepath.Join(dir, setLink)); lerr == nil && now != target {
				continue // rotated meanwhile
			}
		}
		return id, err
	}
}
