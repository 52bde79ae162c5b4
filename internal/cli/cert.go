package cli

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/atomicfile"
	"github.com/mutual-tls/mutual/internal/client"
	"github.com/mutual-tls/mutual/internal/pki"
)

func certCmd(e *env) *cobra.Command {
	c := &cobra.Command{Use: "cert", Short: "Request, renew, revoke and list certificates"}
	c.AddCommand(certRequestCmd(e), certRenewCmd(e), certRevokeCmd(e), certListCmd(e), certExportCmd(e))
	return c
}

type certRequestOptions struct {
	token     string
	tokenFile string
	out       string
	keyType   string
	ttl       time.Duration
	force     bool
	json      bool
}

func certRequestCmd(e *env) *cobra.Command {
	var o certRequestOptions
	c := &cobra.Command{
		Use:   "request",
		Short: "Enroll with a join token: make a key here, get a certificate, write an identity directory",
		Long: `Enroll with a join token. The private key is made here and never leaves this
machine; the CA is trusted only through the root fingerprint inside the token.
Writes --out/cert.pem (leaf, then intermediate), key.pem (0600), bundle.pem and
mutual.json (where to renew).`,
		Example: `  mutual cert request --token-file web.token --out ./web
  mutual token create --identity spiffe://example.org/ns/prod/web | mutual cert request --token-file - --out ./web
  MUTUAL_TOKEN="$TOKEN" mutual cert request --out ./web`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if onCommandLine(cmd, "token") {
				fmt.Fprintf(e.stderr, "warning: %s\n", tokenOnArgvWarning)
			}
			tok, err := readToken(e, o.token, o.tokenFile)
			if err != nil {
				return err
			}
			if tok == "" {
				return flagError("token", "required: the join token from `mutual token create` (or --token-file, or $MUTUAL_TOKEN)")
			}
			if o.out == "" {
				return flagError("out", "required: the identity directory to write")
			}
			if _, err := os.Stat(filepath.Join(o.out, identity.CertFile)); err == nil && !o.force {
				return flagError("out", "%s already holds an identity; renew it with `mutual cert renew --dir %s`, or pass --force to replace it", o.out, o.out)
			}
			kt, err := pki.ParseKeyType(o.keyType)
			if err != nil {
				return flagError("key-type", "%v", err)
			}
			// The key is kept in --out until the identity is saved, so that
			// a re-run after a lost or refused answer gets the certificate
			// the CA issued instead of "token used".
			enr, err := client.RequestIdentityWith(cmd.Context(), tok, client.RequestOptions{KeyType: kt, TTL: o.ttl, KeepKeyIn: o.out})
			if err != nil {
				return err
			}
			if err := identity.WriteDir(o.out, enr.Identity, identity.WriteOptions{CAURLs: enr.CAURLs}); err != nil {
				return err
			}
			if err := enr.Done(); err != nil {
				return err
			}
			if enr.Warning != "" {
				fmt.Fprintf(e.stderr, "warning: %s\n", enr.Warning)
			}
			return printIssued(e, o.json, "Enrolled", o.out, enr.Identity)
		},
	}
	f := c.Flags()
	f.StringVar(&o.token, "token", "", "join token; every user of this machine sees it in the process list: use --token-file or $MUTUAL_TOKEN")
	f.StringVar(&o.tokenFile, "token-file", "", "file holding the join token, or - to read it from standard input")
	f.StringVar(&o.out, "out", "", "identity directory to write (required)")
	f.StringVar(&o.keyType, "key-type", "ecdsa-p256", "key type: ecdsa-p256, ecdsa-p384, ed25519 or rsa-3072")
	f.DurationVar(&o.ttl, "ttl", 0, "ask for a shorter certificate lifetime than the token grants")
	f.BoolVar(&o.force, "force", false, "replace an identity already in --out")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return c
}

type certRenewOptions struct {
	dir     string
	server  []string
	keyType string
	ttl     time.Duration
	json    bool
}

func certRenewCmd(e *env) *cobra.Command {
	var o certRenewOptions
	c := &cobra.Command{
		Use:   "renew",
		Short: "Renew an identity over mTLS with a fresh key",
		Long: `Renew the identity in --dir: a fresh key is made here, the current certificate
authenticates the request over mTLS, and the files are replaced as one set.
A revoked or expired certificate cannot renew; enroll again with a new token.`,
		Example: `  mutual cert renew --dir ./web`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dir == "" {
				return flagError("dir", "required: the identity directory to renew")
			}
			cur, err := identity.Load(o.dir)
			if err != nil {
				return flagError("dir", "%v", err)
			}
			var kt pki.KeyType
			if o.keyType != "" {
				if kt, err = pki.ParseKeyType(o.keyType); err != nil {
					return flagError("key-type", "%v", err)
				}
			}
			urls := o.server
			if len(urls) == 0 {
				if urls, err = identity.ReadCAURLs(o.dir); err != nil {
					return err
				}
				if len(urls) == 0 {
					return flagError("server", "required: %s has no %s; give the CA's URL", o.dir, identity.CAURLsFile)
				}
			}
			ren, err := client.RenewIdentityWith(cmd.Context(), cur, urls, client.RenewOptions{KeyType: kt, TTL: o.ttl})
			var ee *identity.ExpiredError
			if errors.As(err, &ee) {
				return fmt.Errorf("the certificate in %s expired at %s and can no longer renew: enroll again with a new join token: %w", o.dir, ee.NotAfter.Format(time.RFC3339), err)
			}
			if err != nil {
				return err
			}
			next := ren.Identity
			if ren.Warning != "" {
				fmt.Fprintf(e.stderr, "warning: %s\n", ren.Warning)
			}
			if err := identity.WriteDir(o.dir, next, identity.WriteOptions{CAURLs: urls}); err != nil {
				return err
			}
			return printIssued(e, o.json, "Renewed", o.dir, next)
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "identity directory to renew (required)")
	f.StringSliceVar(&o.server, "server", nil, "CA URL (repeatable; default: the directory's mutual.json)")
	f.StringVar(&o.keyType, "key-type", "", "key type of the new key (default: as the current key)")
	f.DurationVar(&o.ttl, "ttl", 0, "ask for a shorter lifetime")
	f.BoolVar(&o.json, "json", false, "print the result as JSON")
	return c
}

func printIssued(e *env, asJSON bool, verb, dir string, id *identity.Identity) error {
	leaf := id.Leaf()
	if asJSON {
		return e.printJSON(map[string]any{
			"dir": dir, "spiffe_id": id.ID.String(), "serial": pki.FormatSerial(leaf.SerialNumber),
			"not_before": leaf.NotBefore.UTC(), "not_after": leaf.NotAfter.UTC(), "dns_names": leaf.DNSNames,
		})
	}
	fmt.Fprintf(e.stdout, "%s %s\n  serial   %s\n  expires  %s (%s)\n  files    %s\n", verb, id.ID,
		pki.FormatSerial(leaf.SerialNumber), leaf.NotAfter.UTC().Format(time.RFC3339), relative(leaf.NotAfter, time.Now()),
		strings.Join([]string{filepath.Join(dir, identity.CertFile), filepath.Join(dir, identity.KeyFile), filepath.Join(dir, identity.BundleFile)}, " "))
	return nil
}

type certExportOptions struct {
	dir, p12, combined, passwordFile string
}

func certExportCmd(e *env) *cobra.Command {
	var o certExportOptions
	c := &cobra.Command{
		Use:   "export",
		Short: "Write an identity directory's key and chain as PKCS#12 (Java) or one combined PEM file (HAProxy)",
		Long: `Export the identity in --dir: --p12 FILE writes a PKCS#12 file (AES-256, PBKDF2)
encrypted with the first line of --password-file; --combined FILE writes the
chain and then the key as one PEM file. Each is written atomically, mode 0600.
For files kept current on every rotation, use the agent's --write ...,format=.`,
		Example: `  mutual cert export --dir ./web --p12 web.p12 --password-file ./p12.pass
  mutual cert export --dir ./web --combined /etc/haproxy/web.pem`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if o.dir == "" {
				return flagError("dir", "required: the identity directory to export")
			}
			if o.p12 == "" && o.combined == "" {
				return flagError("p12", "give --p12 FILE (with --password-file) or --combined FILE")
			}
			if (o.p12 != "") != (o.passwordFile != "") {
				return flagError("password-file", "--p12 and --password-file go together")
			}
			id, err := identity.Load(o.dir)
			if err != nil {
				return flagError("dir", "%v", err)
			}
			if o.p12 != "" {
				pw, err := identity.ReadPasswordFile(o.passwordFile)
				if err != nil {
					return flagError("password-file", "%v", err)
				}
				if err := exportFile(e, o.p12, func() ([]byte, error) { return identity.EncodePKCS12(id, pw) }); err != nil {
					return err
				}
			}
			if o.combined != "" {
				return exportFile(e, o.combined, func() ([]byte, error) { return identity.EncodeCombined(id) })
			}
			return nil
		},
	}
	f := c.Flags()
	f.StringVar(&o.dir, "dir", "", "identity directory to export (required)")
	f.StringVar(&o.p12, "p12", "", "write a PKCS#12 file here")
	f.StringVar(&o.passwordFile, "password-file", "", "file whose first line is the PKCS#12 password")
	f.StringVar(&o.combined, "combined", "", "write the chain and the key as one PEM file here")
	return c
}

// exportFile writes what encode returns to path, 0600, atomically.
func exportFile(e *env, path string, encode func() ([]byte, error)) error {
	b, err := encode()
	if err != nil {
		return err
	}
	if err := atomicfile.WriteFile(path, b, 0o600); err != nil {
		return fmt.Errorf("export: %w", err)
	}
	fmt.Fprintf(e.stdout, "Wrote %s\n", path)
	return nil
}
