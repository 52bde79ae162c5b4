package cli

import (
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/caservice"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/pki"
)

func caCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "ca", Short: "Create and manage the certificate authority"}
	c.AddCommand(caInitCmd(e), caAdminCmd(e), caRotateIntermediateCmd(e), caRotateRootCmd(e), caWithdrawRootCmd(e))
	return c
}

type caAdminOptions struct {
	dir            string
	passphraseFile string
	name           string
	out            string
	storeFlags
	ttl  time.Duration
	json bool
}

func caAdminCmd(e *env) *cobra.Command {
	var o caAdminOptions
	c := &cobra.Command{
		Use:   "admin",
		Short: "Issue an operator identity spiffe://TD/admin/NAME with the intermediate key",
		Long: `Issue an operator (admin) identity directly with the CA's intermediate key, for a
new operator or when the operator certificate from ca init has expired. The
certificate is recorded in the CA's store (so that it can be listed and revoked)
and written as an identity directory. Works while the server runs.`,
		Example: `  mutual ca admin --dir ./ca --passphrase-file pass --name alice --out ./alice`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dir == "" {
				return flagError("dir", "required: the CA directory")
			}
			if o.name == "" {
				return flagError("name", "required: the operator's name (spiffe://TD/admin/NAME)")
			}
			if o.out == "" {
				return flagError("out", "required: the identity directory to write")
			}
			if _, err := os.Stat(filepath.Join(o.out, identity.CertFile)); err == nil {
				return flagError("out", "%s already holds an identity; choose another directory", o.out)
			}
			if o.ttl <= 0 {
				return flagError("ttl", "must be positive")
			}
			pass, err := readPassphrase(o.passphraseFile)
			if err != nil {
				return err
			}
			storeURL, err := o.storeFlags.url(e.logger(slog.LevelWarn))
			if err != nil {
				return err
			}
			id, err := caservice.IssueAdmin(cmd.Context(), o.dir, pass, storeURL, o.name, o.ttl)
			if err != nil {
				return err
			}
			if err := id.Save(o.out); err != nil {
				return err
			}
			return printIssued(e, o.json, "Issued", o.out, id)
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "CA directory (required)")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "file holding the CA keys' passphrase (required)")
	f.StringVar(&o.name, "name", "", "operator name (required)")
	f.StringVar(&o.out, "out", "", "identity directory to write (required)")
	o.storeFlags.register(c, "the server's --store (default sqlite:DIR/mutual.db)")
	f.DurationVar(&o.ttl, "ttl", pki.DefaultAdminTTL, "certificate lifetime")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return c
}

type caInitOptions struct {
	dir            string
	trustDomain    string
	passphraseFile string
	sans           []string
	keyType        string
	adminName      string
	rootKey        string
	intKey         string
	ocspKey        string
	logKey         string
	json           bool
}

func caInitCmd(e *env) *cobra.Command {
	var o caInitOptions
	c := &cobra.Command{
		Use:   "init",
		Short: "Create a root CA, an intermediate, the CA service's TLS identity and an operator identity",
		Long: `Create a certificate authority in --dir:

  root/cert.pem, root/key.pem            self-signed root (10 years); move key.pem offline
  intermediate/cert.pem, key.pem         online intermediate (1 year, pathLen 0,
                                         URI name constraint to spiffe://TRUST-DOMAIN)
  server/                                the CA service's TLS identity (--san names)
  admin/                                 the operator identity spiffe://TD/admin/NAME
  bundle.pem                             the trusted roots
  ca.json                                trust domain and issuance policy

CA keys are PKCS#8 encrypted with the passphrase (openssl pkey reads them);
every key file is mode 0600. An existing CA is never overwritten.

--root-key and --intermediate-key instead make that key inside a PKCS#11
token, named by an RFC 7512 pkcs11: URI (see docs/hsm.md): no key file is
written and ca.json records the URI, which mutual server then signs through.
--ocsp-key likewise makes the OCSP responder's key in a token (the
intermediate certifies it in each responder certificate); without it the
responder's keys live in memory. --log-key makes the issuance log's Ed25519
signing key in a token (it needs EdDSA: SoftHSM2 2.6 or later) instead of
log/key.pem.`,
		Example: `  openssl rand -base64 32 > pass && chmod 600 pass
  mutual ca init --dir ./ca --trust-domain example.org --passphrase-file pass
  mutual ca init --dir ./ca --trust-domain example.org --passphrase-file pass \
    --intermediate-key 'pkcs11:token=mutual-ca;object=intermediate?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/mutual/hsm-pin'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			td, pass, kt, err := o.validate()
			if err != nil {
				return err
			}
			keys := keyref.NewKeyring(keyref.Options{})
			defer keys.Close()
			newKey, err := keys.NewCAKey(pki.KeyRefs{Root: o.rootKey, Intermediate: o.intKey})
			if err != nil {
				return err
			}
			res, err := pki.InitContext(cmd.Context(), pki.InitOptions{
				Dir: o.dir, TrustDomain: td, Passphrase: pass, KeyType: kt, SANs: o.sans, AdminName: o.adminName, NewKey: newKey,
			})
			if err != nil {
				return err
			}
			if err := caservice.AddTokenKeys(cmd.Context(), o.dir, pki.KeyRefs{OCSP: o.ocspKey, Log: o.logKey}); err != nil {
				return fmt.Errorf("the CA in %s was created, but %w; run ca init again in an empty directory", o.dir, err)
			}
			fp := pki.Fingerprint(res.Root)
			if o.json {
				return e.printJSON(map[string]any{
					"dir": o.dir, "trust_domain": td.Name(), "root_fingerprint": hex.EncodeToString(fp[:]),
					"admin_id": res.AdminID.String(), "admin_dir": filepath.Join(o.dir, pki.AdminDir),
					"intermediate_not_after": res.Intermediate.NotAfter,
				})
			}
			rootKey := filepath.Join(o.dir, pki.RootKeyFile)
			if o.rootKey != "" {
				rootKey = "the root key's token"
			}
			fmt.Fprintf(e.stdout, `Created CA for trust domain %s in %s
  root fingerprint (SHA-256)  %s
  operator identity           %s in %s
  intermediate expires        %s

Next:
  mutual server --dir %s --passphrase-file %s
  Move %s offline: the server never needs the root key.
`, td.Name(), o.dir, hex.EncodeToString(fp[:]), res.AdminID, filepath.Join(o.dir, pki.AdminDir),
				res.Intermediate.NotAfter.Format("2006-01-02"), o.dir, o.passphraseFile, rootKey)
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "directory to create the CA in (required)")
	f.StringVar(&o.trustDomain, "trust-domain", "", "SPIFFE trust domain, e.g. example.org (required)")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "file holding the passphrase that encrypts the CA keys (required)")
	f.StringSliceVar(&o.sans, "san", nil, "DNS name or IP of the CA service (repeatable; default localhost and 127.0.0.1)")
	f.StringVar(&o.keyType, "key-type", "ecdsa-p256", "key type: ecdsa-p256, ecdsa-p384, ed25519 or rsa-3072")
	f.StringVar(&o.adminName, "admin-name", "operator", "name of the operator identity spiffe://TD/admin/NAME")
	f.StringVar(&o.rootKey, "root-key", "", "make the root key in this PKCS#11 token object (pkcs11: URI) instead of root/key.pem")
	f.StringVar(&o.intKey, "intermediate-key", "", "make the intermediate key in this PKCS#11 token object (pkcs11: URI) instead of intermediate/key.pem")
	f.StringVar(&o.ocspKey, "ocsp-key", "", "make the OCSP responder's key in this PKCS#11 token object (pkcs11: URI) instead of in memory")
	f.StringVar(&o.logKey, "log-key", "", "make the issuance log's Ed25519 signing key in this PKCS#11 token object (pkcs11: URI) instead of log/key.pem")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return c
}

// trustDomainHint suggests a trust domain for a refused one: its lower-case
// spelling when that is valid, else an example.
func trustDomainHint(given string) string {
	lower := strings.ToLower(strings.TrimPrefix(given, "spiffe://"))
	if _, err := spiffeid.TrustDomainFromString(lower); err == nil {
		return fmt.Sprintf("use %q", lower)
	}
	return "a DNS-like name such as example.org"
}

func (o *caInitOptions) validate() (spiffeid.TrustDomain, []byte, pki.KeyType, error) {
	if o.dir == "" {
		return spiffeid.TrustDomain{}, nil, "", flagError("dir", "required: the directory to create the CA in")
	}
	if o.trustDomain == "" {
		return spiffeid.TrustDomain{}, nil, "", flagError("trust-domain", "required: the SPIFFE trust domain, e.g. example.org")
	}
	td, err := spiffeid.TrustDomainFromString(strings.TrimPrefix(o.trustDomain, "spiffe://"))
	if err != nil {
		return spiffeid.TrustDomain{}, nil, "", flagError("trust-domain", "%q: %v: %s", o.trustDomain, err, trustDomainHint(o.trustDomain))
	}
	kt, err := pki.ParseKeyType(o.keyType)
	if err != nil {
		return spiffeid.TrustDomain{}, nil, "", flagError("key-type", "%v", err)
	}
	if _, _, err := pki.SplitSANs(o.sans); err != nil {
		return spiffeid.TrustDomain{}, nil, "", flagError("san", "%v", err)
	}
	for _, k := range []struct{ flag, ref string }{{"root-key", o.rootKey}, {"intermediate-key", o.intKey}, {"ocsp-key", o.ocspKey}, {"log-key", o.logKey}} {
		if err := checkTokenKeyFlag(k.flag, k.ref); err != nil {
			return spiffeid.TrustDomain{}, nil, "", err
		}
	}
	if err := distinctKeys(map[string]string{"root-key": o.rootKey, "intermediate-key": o.intKey, "ocsp-key": o.ocspKey, "log-key": o.logKey}); err != nil {
		return spiffeid.TrustDomain{}, nil, "", err
	}
	pass, err := readPassphrase(o.passphraseFile)
	if err != nil {
		return spiffeid.TrustDomain{}, nil, "", err
	}
	return td, pass, kt, nil
}

type caRotateOptions struct {
	dir            string
	passphraseFile string
	newKey         string
	storeFlags
	json bool
}

// register adds the flags of the rotation commands; --new-key only when
// newKeyUsage says what it does.
func (o *caRotateOptions) register(c *cobra.Command, newKeyUsage string) {
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "CA directory (required)")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "file holding the CA keys' passphrase (required)")
	if newKeyUsage != "" {
		f.StringVar(&o.newKey, "new-key", "", newKeyUsage)
	}
	o.storeFlags.register(c, "the server's --store (default sqlite:DIR/mutual.db)")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
}

// options checks the flags and reads the passphrase.
func (o *caRotateOptions) options(e *env) (caservice.RotateOptions, error) {
	if o.dir == "" {
		return caservice.RotateOptions{}, flagError("dir", "required: the CA directory")
	}
	if err := checkTokenKeyFlag("new-key", o.newKey); err != nil {
		return caservice.RotateOptions{}, err
	}
	pass, err := readPassphrase(o.passphraseFile)
	if err != nil {
		return caservice.RotateOptions{}, err
	}
	storeURL, err := o.storeFlags.url(e.logger(slog.LevelWarn))
	if err != nil {
		return caservice.RotateOptions{}, err
	}
	return caservice.RotateOptions{Dir: o.dir, Passphrase: pass, StoreURL: storeURL, NewKey: o.newKey}, nil
}

func caRotateIntermediateCmd(e *env) *cobra.Command {
	var o caRotateOptions
	c := &cobra.Command{
		Use:   "rotate-intermediate",
		Short: "Replace the issuing intermediate with a new one signed by the root",
		Long: `Make a new intermediate key and certificate, signed by the root key (a file
or a PKCS#11 token key named in ca.json: it must be reachable for this step),
and make it the one that issues. The old intermediate moves to
intermediate/retired/ and keeps signing its own CRL and OCSP answers until it
expires, so every certificate it issued keeps verifying (the roots do not
change) and can still be revoked. The new intermediate is recorded in the
issuance log.

A running mutual server moves to the new intermediate by itself within a
second (at once on SIGHUP), each replica on its own, without dropping
connections; renewals move certificates over at their half-life.`,
		Example: `  mutual ca rotate-intermediate --dir ./ca --passphrase-file pass
  mutual ca rotate-intermediate --dir ./ca --passphrase-file pass \
    --new-key 'pkcs11:token=mutual-ca;object=intermediate-2027?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/mutual/hsm-pin'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ro, err := o.options(e)
			if err != nil {
				return err
			}
			rot, err := caservice.RotateIntermediate(cmd.Context(), ro)
			if err != nil {
				return err
			}
			if o.json {
				return e.printJSON(map[string]any{
					"new_serial": pki.FormatSerial(rot.New.SerialNumber), "new_not_after": rot.New.NotAfter, "new_key": rot.KeyRef,
					"old_serial": pki.FormatSerial(rot.Old.SerialNumber), "old_not_after": rot.Old.NotAfter,
					"cross_signed": len(rot.CrossSigned),
				})
			}
			if len(rot.CrossSigned) > 0 {
				fmt.Fprintf(e.stdout, "Cross-signed the new intermediate with %d old root(s): %s\n", len(rot.CrossSigned), filepath.Join(o.dir, pki.CrossSignedFile))
			}
			fmt.Fprintf(e.stdout, `Rotated the intermediate of %s
  new  %s  serial %s  expires %s
  old  %s  serial %s  answers CRL and OCSP until %s

Next: nothing; a running mutual server issues with the new intermediate
within a second (send it SIGHUP to make it look at once).
`, o.dir, rot.New.Subject.CommonName, pki.FormatSerial(rot.New.SerialNumber), rot.New.NotAfter.Format("2006-01-02"),
				rot.Old.Subject.CommonName, pki.FormatSerial(rot.Old.SerialNumber), rot.Old.NotAfter.Format("2006-01-02"))
			return nil
		},
	}
	o.register(c, "make the new intermediate key in this PKCS#11 token object (pkcs11: URI) instead of intermediate/key.pem")
	return c
}

// checkTokenKeyFlag checks that a flag naming where to make a CA key is
// empty (an encrypted file) or a valid pkcs11: URI.
// distinctKeys refuses two key flags naming the same token object.
func distinctKeys(refs map[string]string) error {
	seen := map[string]string{}
	for _, flag := range slices.Sorted(maps.Keys(refs)) {
		ref := refs[flag]
		if ref == "" {
			continue
		}
		if other, ok := seen[ref]; ok {
			return flagError(flag, "%s is also --%s: give each key its own object= label", ref, other)
		}
		seen[ref] = flag
	}
	return nil
}

func checkTokenKeyFlag(flag, ref string) error {
	if ref == "" {
		return nil
	}
	r, err := keyref.Parse(ref)
	if err != nil {
		return flagError(flag, "%v", err)
	}
	if _, ok := r.PKCS11(); !ok {
		return flagError(flag, "%q is not a pkcs11: URI; leave the flag out to keep the key in an encrypted file", ref)
	}
	return nil
}

func caRotateRootCmd(e *env) *cobra.Command {
	var o caRotateOptions
	c := &cobra.Command{
		Use:   "rotate-root",
		Short: "Introduce a new root next to the old one (first step of a root rotation)",
		Long: `Make a new root key and self-signed certificate and add the new root to every
bundle in --dir, so that both roots are trusted during the overlap. The old
root's certificate and key move to root/retired/ (destroy or archive the key
once the rotation is over). Nothing issued changes yet.

A root rotation, step by step:
  1. mutual ca rotate-root          both roots trusted; restart mutual server,
                                    and let agents and proxies pick up the bundle
  2. mutual ca rotate-intermediate  issuance moves to an intermediate of the new
                                    root, cross-signed by the old root
                                    (intermediate/cross-signed.pem)
  3. mutual ca withdraw-root        once every certificate of the old root has
                                    expired (max_cert_ttl after step 2)`,
		Example: `  mutual ca rotate-root --dir ./ca --passphrase-file pass`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ro, err := o.options(e)
			if err != nil {
				return err
			}
			rot, err := caservice.RotateRoot(cmd.Context(), ro)
			if err != nil {
				return err
			}
			newFP, oldFP := pki.Fingerprint(rot.New), pki.Fingerprint(rot.Old)
			if o.json {
				return e.printJSON(map[string]any{
					"new_root_fingerprint": hex.EncodeToString(newFP[:]), "new_not_after": rot.New.NotAfter, "new_key": rot.KeyRef,
					"old_root_fingerprint": hex.EncodeToString(oldFP[:]), "old_key": rot.OldKey,
				})
			}
			fmt.Fprintf(e.stdout, `Introduced a new root in %s (both roots are now trusted)
  new root fingerprint (SHA-256)  %s  expires %s
  old root fingerprint (SHA-256)  %s  key left at %s

Next: restart mutual server; once agents and proxies hold the new bundle,
  mutual ca rotate-intermediate --dir %s --passphrase-file %s
`, o.dir, hex.EncodeToString(newFP[:]), rot.New.NotAfter.Format("2006-01-02"), hex.EncodeToString(oldFP[:]), rot.OldKey, o.dir, o.passphraseFile)
			return nil
		},
	}
	o.register(c, "make the new root key in this PKCS#11 token object (pkcs11: URI) instead of root/key.pem")
	return c
}

func caWithdrawRootCmd(e *env) *cobra.Command {
	var o caRotateOptions
	c := &cobra.Command{
		Use:   "withdraw-root",
		Short: "End a root rotation: remove the old root from every bundle",
		Long: `Remove every root but the current one from the bundles in --dir, ending the
overlap of a root rotation. Refused while the issuing intermediate is still
under the old root (run rotate-intermediate first) and until every
certificate issued under the old root has expired. The operator identity in
DIR/admin is reissued under the new root first. Restart mutual server
afterwards.`,
		Example: `  mutual ca withdraw-root --dir ./ca --passphrase-file pass`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ro, err := o.options(e)
			if err != nil {
				return err
			}
			withdrawn, err := caservice.WithdrawRoots(cmd.Context(), ro.Dir, ro.Passphrase, ro.StoreURL, time.Now())
			if err != nil {
				return err
			}
			var fps []string
			for _, r := range withdrawn {
				fp := pki.Fingerprint(r)
				fps = append(fps, hex.EncodeToString(fp[:]))
			}
			if o.json {
				return e.printJSON(map[string]any{"withdrawn_root_fingerprints": fps})
			}
			fmt.Fprintf(e.stdout, "Withdrew %d root(s) from the bundles of %s: %s\nNext: restart mutual server.\n", len(fps), o.dir, strings.Join(fps, ", "))
			return nil
		},
	}
	o.register(c, "")
	return c
}
