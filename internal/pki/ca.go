package pki

import (
	"bytes"
	"context"
	"crypto"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/translog/logkey"
)

// The layout of a CA directory written by Init.
const (
	ConfigFile           = "ca.json"
	RootCertFile         = "root/cert.pem"
	RootKeyFile          = "root/key.pem"
	IntermediateCertFile = "intermediate/cert.pem"
	IntermediateKeyFile  = "intermediate/key.pem"
	BundleFile           = "bundle.pem"
	ServerDir            = "server"
	AdminDir             = "admin"
	DatabaseFile         = "mutual.db"
	// The issuance log's own key and verifier key are logkey.KeyFile and
	// logkey.VerifierFile, its last checkpoint translog.CheckpointFile.
)

// Lifetimes of what Init makes.
const (
	RootTTL         = 10 * 365 * 24 * time.Hour
	IntermediateTTL = 365 * 24 * time.Hour
	ServerTTL       = 90 * 24 * time.Hour
	DefaultAdminTTL = 30 * 24 * time.Hour
)

// Duration is a time.Duration that reads and writes JSON as "1h30m"; it is
// api.Duration, so ca.json and the API spell a lifetime the same way.
type Duration = api.Duration

// Config is the CA's settings file, DIR/ca.json. Operators may edit Policy.
type Config struct {
	TrustDomain string    `json:"trust_domain"`
	KeyType     KeyType   `json:"key_type"`
	CreatedAt   time.Time `json:"created_at"`
	Policy      Policy    `json:"policy"`
	// Keys names where the CA keys live when not in their default files.
	Keys KeyRefs `json:"keys,omitzero"`
}

// KeyRefs names where the root and intermediate keys live: a key reference
// (an RFC 7512 pkcs11: URI) that a KeyOpener opens. An empty field means the
// passphrase-encrypted file RootKeyFile or IntermediateKeyFile.
type KeyRefs struct {
	Root         string `json:"root,omitempty"`
	Intermediate string `json:"intermediate,omitempty"`
	// Retired names the token keys of intermediates a rotation replaced, by
	// their directory under RetiredDir; a retired intermediate not named
	// here has its key in that directory's key.pem.
	Retired map[string]string `json:"retired,omitempty"`
	// OCSP names a token key the OCSP responder signs with (each delegated
	// responder certificate certifies it); empty means in-memory keys.
	OCSP string `json:"ocsp,omitempty"`
	// Log names a token Ed25519 key the issuance log signs its notes with;
	// empty means the passphrase-encrypted key file of package logkey.
	Log string `json:"log,omitempty"`
}

// KeyOpener opens a CA key by the reference recorded in ca.json.
// *keyref.Keyring is one; pki does not import it.
type KeyOpener interface {
	Open(ctx context.Context, ref string) (crypto.Signer, error)
}

// The roles of the CA keys, as InitOptions.NewKey is asked for them.
const (
	RoleRoot         = "root"
	RoleIntermediate = "intermediate"
)

// Policy holds the issuance limits an operator sets for the CA.
type Policy struct {
	// DefaultTTL is the lifetime of a certificate when nobody asks otherwise.
	DefaultTTL Duration `json:"default_cert_ttl"`
	// MaxTTL is the longest lifetime the CA grants.
	MaxTTL Duration `json:"max_cert_ttl"`
	// MaxTokenTTL is the longest a join token may stay valid.
	MaxTokenTTL Duration `json:"max_token_ttl"`
}

// DefaultPolicy is written by Init.
var DefaultPolicy = Policy{
	DefaultTTL:  Duration(time.Hour),
	MaxTTL:      Duration(24 * time.Hour),
	MaxTokenTTL: Duration(7 * 24 * time.Hour),
}

// InitOptions configures Init. Zero values are the documented defaults.
type InitOptions struct {
	// Dir is the CA directory to create; it must not hold a CA already.
	Dir string
	// TrustDomain is the SPIFFE trust domain the CA serves (required).
	TrustDomain spiffeid.TrustDomain
	// Passphrase encrypts the root and intermediate keys (required).
	Passphrase []byte
	// KeyType of every key made; empty means ECDSA P-256.
	KeyType KeyType
	// SANs are the DNS names and IP addresses of the CA service's TLS
	// certificate; empty means localhost and 127.0.0.1.
	SANs []string
	// AdminName names the operator identity spiffe://TD/admin/NAME; empty means "operator".
	AdminName string
	// AdminTTL is the operator certificate's lifetime; zero means DefaultAdminTTL.
	AdminTTL time.Duration
	// Iterations is the PBKDF2 work factor for CA keys; zero means PBKDF2Iterations.
	Iterations int
	// NewKey, when set, makes the key of role (RoleRoot or RoleIntermediate)
	// outside the CA directory, typically inside a PKCS#11 token, and returns
	// its signer and the reference that opens it again; Init then writes no
	// key file for that role and records the reference in ca.json. A nil
	// signer with no error means "a file key as usual" for that role. nil
	// NewKey keeps every CA key in a passphrase-encrypted file.
	NewKey func(ctx context.Context, role string, t KeyType) (key crypto.Signer, ref string, err error)
	// Now and Rand may be injected by tests; nil means time.Now and crypto/rand.
	Now  func() time.Time
	Rand io.Reader
}

// InitResult tells what Init made.
type InitResult struct {
	Root, Intermediate *x509.Certificate
	AdminID, ServerID  spiffeid.ID
}

// ErrCAExists is returned by Init when the directory already holds a CA.
var ErrCAExists = errors.New("a CA already exists there")

// Init creates a certificate authority in o.Dir: a self-signed root, an
// intermediate constrained to the trust domain, the CA service's TLS identity
// and an operator identity. Nothing is written unless all of it succeeds, and
// an existing CA is never overwritten.
func Init(o InitOptions) (*InitResult, error) {
	return InitContext(context.Background(), o)
}

// InitContext is Init with a context for o.NewKey. A key NewKey made stays
// where it was made if Init fails afterwards (a token keeps its object):
// delete it or name another object before trying again.
func InitContext(ctx context.Context, o InitOptions) (*InitResult, error) {
	o, err := o.withDefaults()
	if err != nil {
		return nil, err
	}
	m, err := planInit(o)
	if err != nil {
		return nil, err
	}
	if err := m.makeRoot(ctx, o); err != nil {
		return nil, err
	}
	if err := m.makeIntermediate(ctx, o); err != nil {
		return nil, err
	}
	if err := m.issueIdentities(o); err != nil {
		return nil, err
	}
	files, err := m.files(o)
	if err != nil {
		return nil, err
	}
	if err := writeCADir(o.Dir, files); err != nil {
		return nil, err
	}
	return &InitResult{Root: m.root, Intermediate: m.inter, AdminID: m.adminID, ServerID: m.serverID}, nil
}

// withDefaults checks o and fills in the documented defaults.
func (o InitOptions) withDefaults() (InitOptions, error) {
	if o.Dir == "" {
		return o, errors.New("no CA directory given")
	}
	if o.TrustDomain.IsZero() {
		return o, errors.New("no trust domain given")
	}
	if len(o.Passphrase) == 0 {
		return o, errors.New("an empty passphrase would leave the CA keys unencrypted")
	}
	if o.KeyType == "" {
		o.KeyType = KeyECDSAP256
	}
	if o.AdminName == "" {
		o.AdminName = "operator"
	}
	if o.AdminTTL == 0 {
		o.AdminTTL = DefaultAdminTTL
	}
	if len(o.SANs) == 0 {
		o.SANs = []string{"localhost", "127.0.0.1"}
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return o, nil
}

// initMaterial is what Init makes, step by step, before writing any of it.
type initMaterial struct {
	now               time.Time
	adminID, serverID spiffeid.ID
	// dns and ips are the CA service certificate's names.
	dns                                  []string
	ips                                  []net.IP
	root, inter, serverCert, adminCert   *x509.Certificate
	rootKey, intKey, serverKey, adminKey crypto.Signer
	// keys names the CA keys NewKey made outside the directory.
	keys KeyRefs
}

// planInit names the identities Init makes and refuses a directory that
// holds a CA already.
func planInit(o InitOptions) (*initMaterial, error) {
	m := &initMaterial{now: o.Now(), serverID: ServerID(o.TrustDomain)}
	var err error
	if m.adminID, err = AdminID(o.TrustDomain, o.AdminName); err != nil {
		return nil, fmt.Errorf("admin name %q: %w", o.AdminName, err)
	}
	if m.dns, m.ips, err = SplitSANs(o.SANs); err != nil {
		return nil, err
	}
	for _, name := range []string{ConfigFile, "root", "intermediate", BundleFile, ServerDir, AdminDir, logkey.Dir, logkey.VerifierFile} {
		if _, err := os.Lstat(filepath.Join(o.Dir, name)); err == nil {
			return nil, fmt.Errorf("%s: %w (%s exists); choose another --dir or remove it first", o.Dir, ErrCAExists, name)
		}
	}
	return m, nil
}

// newCAKey makes the key of role: through o.NewKey when it takes the role,
// else in memory, to be written encrypted.
func newCAKey(ctx context.Context, o InitOptions, role string) (crypto.Signer, string, error) {
	if o.NewKey != nil {
		key, ref, err := o.NewKey(ctx, role, o.KeyType)
		if err != nil {
			return nil, "", fmt.Errorf("the %s key: %w", role, err)
		}
		if key != nil {
			if ref == "" {
				return nil, "", fmt.Errorf("the %s key was made outside the CA directory but no reference to it was given", role)
			}
			return key, ref, nil
		}
	}
	key, err := GenerateKey(o.KeyType, o.Rand)
	return key, "", err
}

// makeRoot generates the root key and its self-signed certificate.
func (m *initMaterial) makeRoot(ctx context.Context, o InitOptions) error {
	td := o.TrustDomain.Name()
	var err error
	if m.rootKey, m.keys.Root, err = newCAKey(ctx, o, RoleRoot); err != nil {
		return err
	}
	serial, err := NewSerial(o.Rand)
	if err != nil {
		return err
	}
	tmpl := rootTemplate(td, td+" root CA", serial, m.now)
	if m.root, err = createCert(o.Rand, tmpl, tmpl, m.rootKey.Public(), m.rootKey); err != nil {
		return fmt.Errorf("root certificate: %w", err)
	}
	return nil
}

// makeIntermediate generates the intermediate key and its certificate,
// signed by the root: pathLen 0, URI names constrained to the trust domain.
func (m *initMaterial) makeIntermediate(ctx context.Context, o InitOptions) error {
	td := o.TrustDomain.Name()
	var err error
	if m.intKey, m.keys.Intermediate, err = newCAKey(ctx, o, RoleIntermediate); err != nil {
		return err
	}
	serial, err := NewSerial(o.Rand)
	if err != nil {
		return err
	}
	tmpl := intermediateTemplate(td, td+" intermediate CA", serial, m.now, m.root)
	if m.inter, err = createCert(o.Rand, tmpl, m.root, m.intKey.Public(), m.rootKey); err != nil {
		return fmt.Errorf("intermediate certificate: %w", err)
	}
	return nil
}

// rootTemplate is a self-signed root of trust domain td valid from now for
// RootTTL.
func rootTemplate(td, cn string, serial *big.Int, now time.Time) *x509.Certificate {
	return &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{Organization: []string{td}, CommonName: cn},
		NotBefore:             now.Add(-ClockSkew),
		NotAfter:              now.Add(RootTTL),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
	}
}

// intermediateTemplate is an intermediate of trust domain td valid from now
// for IntermediateTTL (and no longer than root): pathLen 0, URI names
// constrained to td.
func intermediateTemplate(td, cn string, serial *big.Int, now time.Time, root *x509.Certificate) *x509.Certificate {
	notAfter := now.Add(IntermediateTTL)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	return &x509.Certificate{
		SerialNumber:                serial,
		Subject:                     pkix.Name{Organization: []string{td}, CommonName: cn},
		NotBefore:                   now.Add(-ClockSkew),
		NotAfter:                    notAfter,
		KeyUsage:                    x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid:       true,
		IsCA:                        true,
		MaxPathLen:                  0,
		MaxPathLenZero:              true,
		PermittedURIDomains:         []string{td},
		PermittedDNSDomainsCritical: true,
	}
}

// issueIdentities issues the CA service's TLS certificate and the
// operator's from the intermediate, each with a fresh key.
func (m *initMaterial) issueIdentities(o InitOptions) error {
	issuer := &Issuer{Cert: m.inter, Key: m.intKey, Rand: o.Rand}
	leaf := func(id spiffeid.ID, ttl time.Duration, dns []string, ips []net.IP) (*x509.Certificate, crypto.Signer, error) {
		k, err := GenerateKey(o.KeyType, o.Rand)
		if err != nil {
			return nil, nil, err
		}
		c, err := issuer.Issue(Leaf{ID: id, PublicKey: k.Public(), TTL: ttl, Now: m.now, DNSNames: dns, IPAddresses: ips})
		return c, k, err
	}
	var err error
	if m.serverCert, m.serverKey, err = leaf(m.serverID, ServerTTL, m.dns, m.ips); err != nil {
		return fmt.Errorf("server certificate: %w", err)
	}
	if m.adminCert, m.adminKey, err = leaf(m.adminID, o.AdminTTL, nil, nil); err != nil {
		return fmt.Errorf("admin certificate: %w", err)
	}
	return nil
}

// caFile is one file of a CA directory, relative to it.
type caFile struct {
	name string
	data []byte
	perm fs.FileMode
}

// files encodes what Init made, with a fresh issuance log key: CA keys
// encrypted under the passphrase, the identities' keys as their owners
// read them.
func (m *initMaterial) files(o InitOptions) ([]caFile, error) {
	td := o.TrustDomain.Name()
	logKey, err := logkey.Generate(o.Rand, td, func(k crypto.Signer) ([]byte, error) {
		return MarshalPrivateKey(k, o.Passphrase, o.Iterations)
	})
	if err != nil {
		return nil, err
	}
	serverKeyPEM, err := MarshalPrivateKey(m.serverKey, nil, 0)
	if err != nil {
		return nil, err
	}
	adminKeyPEM, err := MarshalPrivateKey(m.adminKey, nil, 0)
	if err != nil {
		return nil, err
	}
	cfg := MarshalConfig(Config{TrustDomain: td, KeyType: o.KeyType, CreatedAt: m.now.UTC(), Policy: DefaultPolicy, Keys: m.keys})
	bundle := EncodeCertificates(m.root)
	files := []caFile{
		{ConfigFile, cfg, 0o644},
		{BundleFile, bundle, 0o644},
		{RootCertFile, EncodeCertificates(m.root), 0o644},
		{IntermediateCertFile, EncodeCertificates(m.inter), 0o644},
		{ServerDir + "/cert.pem", EncodeCertificates(m.serverCert, m.inter), 0o644},
		{ServerDir + "/key.pem", serverKeyPEM, 0o600},
		{ServerDir + "/bundle.pem", bundle, 0o644},
		{AdminDir + "/cert.pem", EncodeCertificates(m.adminCert, m.inter), 0o644},
		{AdminDir + "/key.pem", adminKeyPEM, 0o600},
		{AdminDir + "/bundle.pem", bundle, 0o644},
		{logkey.KeyFile, logKey.PEM, 0o600},
		{logkey.VerifierFile, []byte(logKey.Verifier + "\n"), 0o644},
	}
	// A CA key NewKey made elsewhere has no file: ca.json names it.
	for _, k := range []struct {
		name, ref string
		key       crypto.Signer
	}{{RootKeyFile, m.keys.Root, m.rootKey}, {IntermediateKeyFile, m.keys.Intermediate, m.intKey}} {
		if k.ref != "" {
			continue
		}
		pemKey, err := MarshalPrivateKey(k.key, o.Passphrase, o.Iterations)
		if err != nil {
			return nil, err
		}
		files = append(files, caFile{k.name, pemKey, 0o600})
	}
	return files, nil
}

// MarshalConfig encodes cfg as ca.json holds it: indented, and a pkcs11:
// URI's "&" left as it is.
func MarshalConfig(cfg Config) []byte {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	enc.Encode(cfg) // a Config always encodes
	return b.Bytes()
}

// writeCADir writes files into a staging directory inside dir, then moves
// each top-level entry into place, so a failure leaves nothing half-written.
func writeCADir(dir string, files []caFile) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	stage, err := os.MkdirTemp(dir, ".init-*")
	if err != nil {
		return fmt.Errorf("create %s: %w", dir, err)
	}
	defer os.RemoveAll(stage)
	for _, f := range files {
		p := filepath.Join(stage, f.name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return err
		}
		if err := atomicfile.WriteFile(p, f.data, f.perm); err != nil {
			return err
		}
	}
	var moved []string
	for _, name := range []string{"root", "intermediate", ServerDir, AdminDir, logkey.Dir, logkey.VerifierFile, BundleFile, ConfigFile} {
		if err := os.Rename(filepath.Join(stage, name), filepath.Join(dir, name)); err != nil {
			for _, m := range moved {
				os.RemoveAll(filepath.Join(dir, m))
			}
			return fmt.Errorf("create CA in %s: %w", dir, err)
		}
		moved = append(moved, name)
	}
	return nil
}

func createCert(r io.Reader, tmpl, parent *x509.Certificate, pub crypto.PublicKey, key crypto.Signer) (*x509.Certificate, error) {
	if r == nil {
		r = randReader()
	}
	der, err := x509.CreateCertificate(r, tmpl, parent, pub, key)
	if err != nil {
		return nil, err
	}
	return x509.ParseCertificate(der)
}

// SplitSANs sorts names into DNS names and IP addresses, rejecting what is
// neither.
func SplitSANs(names []string) ([]string, []net.IP, error) {
	var dns []string
	var ips []net.IP
	for _, n := range names {
		n = strings.TrimSpace(n)
		if ip := net.ParseIP(n); ip != nil {
			ips = append(ips, ip)
			continue
		}
		if err := CheckDNSName(n); err != nil {
			return nil, nil, err
		}
		dns = append(dns, strings.ToLower(n))
	}
	return dns, ips, nil
}

// CheckDNSName reports whether name is a usable DNS SAN (a leading "*." wildcard
// label is allowed).
func CheckDNSName(name string) error {
	n := strings.TrimPrefix(name, "*.")
	if n == "" || len(name) > 253 {
		return fmt.Errorf("%q is not a DNS name or an IP address", name)
	}
	for _, label := range strings.Split(n, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("%q is not a DNS name or an IP address", name)
		}
		for _, c := range label {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
				return fmt.Errorf("%q is not a DNS name or an IP address", name)
			}
		}
	}
	return nil
}

// CA is a loaded certificate authority: what the CA service needs, and no
// more. The root key is never read.
type CA struct {
	Dir         string
	Config      Config
	TrustDomain spiffeid.TrustDomain
	// Roots are the trusted roots (DIR/bundle.pem).
	Roots []*x509.Certificate
	// Issuer signs with the intermediate key.
	Issuer *Issuer
	// Retired are the intermediates a rotation replaced that have not
	// expired: they sign only their own CRL and OCSP answers.
	Retired []*Issuer
}

// LoadCA reads the CA in dir, decrypting the intermediate key with
// passphrase. The root key may be absent (moved offline). A CA whose
// intermediate key lives in a token (ca.json keys.intermediate) needs
// LoadCAWith.
func LoadCA(dir string, passphrase []byte) (*CA, error) {
	return LoadCAWith(context.Background(), dir, passphrase, nil)
}

// LoadCAWith reads the CA in dir. The intermediate key is the file
// IntermediateKeyFile, decrypted with passphrase, unless ca.json names it
// (keys.intermediate), in which case keys opens it: a token key signs inside
// its token. keys may be nil for a CA whose keys are all files.
func LoadCAWith(ctx context.Context, dir string, passphrase []byte, keys KeyOpener) (*CA, error) {
	cfg, td, err := ReadConfig(dir)
	if err != nil {
		return nil, err
	}
	roots, err := ReadCertificates(filepath.Join(dir, BundleFile))
	if err != nil {
		return nil, err
	}
	inters, err := ReadCertificates(filepath.Join(dir, IntermediateCertFile))
	if err != nil {
		return nil, err
	}
	key, err := OpenCAKey(ctx, dir, cfg, RoleIntermediate, passphrase, keys)
	if err != nil {
		return nil, err
	}
	if !PublicKeysEqual(inters[0].PublicKey, key.Public()) {
		return nil, fmt.Errorf("the intermediate key (%s) does not match the certificate %s", KeyLocation(dir, cfg, RoleIntermediate), filepath.Join(dir, IntermediateCertFile))
	}
	// The root that signed the issuing intermediate comes first: join
	// tokens pin it, and clients check what they are issued against it.
	if i := slices.IndexFunc(roots, func(r *x509.Certificate) bool { return inters[0].CheckSignatureFrom(r) == nil }); i > 0 {
		roots[0], roots[i] = roots[i], roots[0]
	}
	retired, err := loadRetired(ctx, dir, cfg, passphrase, keys, time.Now())
	if err != nil {
		return nil, err
	}
	return &CA{Dir: dir, Config: cfg, TrustDomain: td, Roots: roots, Issuer: &Issuer{Cert: inters[0], Key: key}, Retired: retired}, nil
}

// ReadConfig reads DIR/ca.json, filling in the default policy for what it
// leaves out.
func ReadConfig(dir string) (Config, spiffeid.TrustDomain, error) {
	var cfg Config
	raw, err := os.ReadFile(filepath.Join(dir, ConfigFile))
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return cfg, spiffeid.TrustDomain{}, fmt.Errorf("%s holds no CA (no %s): run `mutual ca init --dir %s` first: %w", dir, ConfigFile, dir, err)
		}
		return cfg, spiffeid.TrustDomain{}, err
	}
	if err := json.Unmarshal(raw, &cfg); err != nil {
		return cfg, spiffeid.TrustDomain{}, fmt.Errorf("%s: %w", filepath.Join(dir, ConfigFile), err)
	}
	td, err := spiffeid.TrustDomainFromString(cfg.TrustDomain)
	if err != nil {
		return cfg, spiffeid.TrustDomain{}, fmt.Errorf("%s: trust_domain: %w", filepath.Join(dir, ConfigFile), err)
	}
	if cfg.Policy.DefaultTTL == 0 {
		cfg.Policy.DefaultTTL = DefaultPolicy.DefaultTTL
	}
	if cfg.Policy.MaxTTL == 0 {
		cfg.Policy.MaxTTL = DefaultPolicy.MaxTTL
	}
	if cfg.Policy.MaxTokenTTL == 0 {
		cfg.Policy.MaxTokenTTL = DefaultPolicy.MaxTokenTTL
	}
	return cfg, td, nil
}

// KeyLocation says where the key of role (RoleRoot or RoleIntermediate)
// lives: the reference ca.json records, or its file in dir.
func KeyLocation(dir string, cfg Config, role string) string {
	ref, file := cfg.Keys.Root, RootKeyFile
	if role == RoleIntermediate {
		ref, file = cfg.Keys.Intermediate, IntermediateKeyFile
	}
	if ref != "" {
		return ref
	}
	return filepath.Join(dir, file)
}

// OpenCAKey opens the key of role (RoleRoot or RoleIntermediate) of the CA
// in dir: through keys when ca.json names it, else its encrypted file,
// decrypted with passphrase.
func OpenCAKey(ctx context.Context, dir string, cfg Config, role string, passphrase []byte, keys KeyOpener) (crypto.Signer, error) {
	ref, file := cfg.Keys.Root, RootKeyFile
	if role == RoleIntermediate {
		ref, file = cfg.Keys.Intermediate, IntermediateKeyFile
	}
	if ref != "" {
		if keys == nil {
			return nil, fmt.Errorf("the %s key is %s (%s keys.%s), and nothing here opens key references", role, ref, filepath.Join(dir, ConfigFile), role)
		}
		key, err := keys.Open(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("the %s key: %w", role, err)
		}
		return key, nil
	}
	path := filepath.Join(dir, file)
	keyPEM, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) && role == RoleRoot {
			return nil, fmt.Errorf("the root key %s is not there (moved offline?): bring it back for this step, then move it away again: %w", path, err)
		}
		return nil, err
	}
	key, err := ParsePrivateKey(keyPEM, passphrase)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return key, nil
}

// ReadCertificates reads every certificate in a PEM file.
func ReadCertificates(path string) ([]*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	certs, err := ParseCertificates(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return certs, nil
}
