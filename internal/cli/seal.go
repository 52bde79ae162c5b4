package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/auditlog"
	"github.com/mutual-tls/mutual/internal/keyref"
	"github.com/mutual-tls/mutual/internal/keyrelease"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/sidecar"
	"github.com/mutual-tls/mutual/seal"
)

// sealCmds are `mutual seal`, `mutual unseal` and `mutual keys`.
func sealCmds(e *env) []*cobra.Command { return []*cobra.Command{sealCmd(e), unsealCmd(e), keysCmd(e)} }

// keyServiceFlags say who the caller is and where the key service is.
type keyServiceFlags struct {
	identityDir string
	workloadAPI string
	keys        string
	keysID      string
	output      string
}

func (k *keyServiceFlags) register(c *cobra.Command) {
	f := c.Flags()
	f.StringVar(&k.identityDir, "identity-dir", "", "identity directory (cert.pem, key.pem, bundle.pem) to prove who you are")
	f.StringVar(&k.workloadAPI, "workload-api", "", "SPIFFE Workload API socket to take the identity from, e.g. unix:///run/mutual/agent.sock (default $SPIFFE_ENDPOINT_SOCKET when --identity-dir is not given)")
	f.StringVar(&k.keys, "keys", os.Getenv("MUTUAL_KEYS"), "key service URL, https://HOST:PORT (default $MUTUAL_KEYS)")
	f.StringVar(&k.keysID, "keys-id", "", "the key service's SPIFFE ID (default spiffe://TD"+keyrelease.ServerPath+" in your trust domain)")
	f.StringVarP(&k.output, "output", "o", "", "write to this file (made only when complete) instead of stdout")
}

// client connects to the key service as the caller's identity.
func (k *keyServiceFlags) client(ctx context.Context) (*keyrelease.Client, func(), error) {
	if k.keys == "" {
		return nil, nil, flagError("keys", "required: the key service's URL, https://HOST:PORT (or set $MUTUAL_KEYS)")
	}
	k.workloadAPI = workloadAPIOrEnv(k.identityDir, k.workloadAPI)
	var src sidecar.CertSource
	closeSrc := func() {}
	switch {
	case k.identityDir != "" && k.workloadAPI != "":
		return nil, nil, flagError("identity-dir", "give --identity-dir or --workload-api, not both")
	case k.identityDir != "":
		s, err := identity.NewDirSource(k.identityDir)
		if err != nil {
			return nil, nil, flagError("identity-dir", "%v", err)
		}
		src = s
	case k.workloadAPI != "":
		wctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		s, err := workloadapi.NewX509Source(wctx, workloadapi.WithClientOptions(workloadapi.WithAddr(k.workloadAPI)))
		if err != nil {
			return nil, nil, flagError("workload-api", "no identity from %s: %v", k.workloadAPI, err)
		}
		src, closeSrc = s, func() { s.Close() }
	default:
		return nil, nil, flagError("identity-dir", "required: --identity-dir DIR or --workload-api unix:///PATH (or $SPIFFE_ENDPOINT_SOCKET), the identity that proves who you are")
	}
	svid, err := src.GetX509SVID()
	if err != nil {
		closeSrc()
		return nil, nil, err
	}
	server := keyrelease.DefaultServerID(svid.ID.TrustDomain())
	if k.keysID != "" {
		if server, err = spiffeid.FromString(k.keysID); err != nil {
			closeSrc()
			return nil, nil, flagError("keys-id", "%v", err)
		}
	}
	c, err := keyrelease.NewClient(k.keys, src, src, server)
	if err != nil {
		closeSrc()
		return nil, nil, flagError("keys", "%v", err)
	}
	return c, func() { c.CloseIdleConnections(); closeSrc() }, nil
}

// streams opens the input (a file, or stdin for "-" or none) and the
// output; commit makes a --output file appear, only when all went well.
func (k *keyServiceFlags) streams(e *env, args []string) (in io.Reader, out io.Writer, commit func(error) error, err error) {
	in = e.stdin
	var closeIn func() error = func() error { return nil }
	if len(args) == 1 && args[0] != "-" {
		f, err := os.Open(args[0])
		if err != nil {
			return nil, nil, nil, err
		}
		in, closeIn = f, f.Close
	}
	if k.output == "" {
		return in, e.stdout, func(err error) error { closeIn(); return err }, nil
	}
	tmp, err := os.CreateTemp(filepath.Dir(k.output), "."+filepath.Base(k.output)+".*")
	if err != nil {
		closeIn()
		return nil, nil, nil, flagError("output", "%v", err)
	}
	return in, tmp, func(err error) error {
		closeIn()
		if cerr := tmp.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(tmp.Name(), k.output)
		}
		if err != nil {
			os.Remove(tmp.Name())
		}
		return err
	}, nil
}

type sealOptions struct {
	keyServiceFlags
	to       []string
	roles    []string
	notAfter string
	rewrap   bool
	toCert   string
}

func sealCmd(e *env) *cobra.Command {
	o := &sealOptions{}
	c := &cobra.Command{
		Use:   "seal [IN]",
		Short: "Encrypt data so that only services with a matching certificate can decrypt it",
		Long: `Encrypt IN (or stdin) to stdout under a fresh data key, which the key service
wraps; only a caller whose valid, unrevoked certificate matches --to (and --role,
until --not-after) gets it back. See docs/sealed-data.md.

--rewrap rewrites the key slot of a sealed file with the key service's current
key-encryption key (after a rotation), leaving the payload as it is.`,
		Example: `  mutual seal --identity-dir id --keys https://keys:8444 --to spiffe://example.org/ns/prod/web db.env > db.env.sealed
  mutual seal --identity-dir id --keys https://keys:8444 --rewrap old.sealed -o new.sealed`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if o.toCert != "" {
				if o.rewrap || cmd.Flags().Changed("keys") {
					return flagError("to-cert", "an offline seal uses no key service: drop --keys and --rewrap")
				}
				return o.sealOffline(cmd.Context(), e, args)
			}
			p, err := o.policy(time.Now())
			if err != nil {
				return err
			}
			cl, done, err := o.client(cmd.Context())
			if err != nil {
				return err
			}
			defer done()
			in, out, commit, err := o.streams(e, args)
			if err != nil {
				return err
			}
			if o.rewrap {
				return commit(rewrap(cmd.Context(), out, in, cl))
			}
			return commit(seal.Seal(cmd.Context(), out, in, p, cl))
		},
	}
	o.register(c)
	f := c.Flags()
	f.StringArrayVar(&o.to, "to", nil, "SPIFFE ID pattern that may unseal (repeatable): exact, * for one segment, ** for the rest")
	f.StringArrayVar(&o.roles, "role", nil, "role the caller must hold, one of those given (repeatable)")
	f.StringVar(&o.notAfter, "not-after", "", "no unsealing after this time: RFC 3339 (2026-12-31T00:00:00Z) or a duration from now (720h)")
	f.BoolVar(&o.rewrap, "rewrap", false, "rewrap a sealed file's data key under the current key (no --to)")
	f.StringVar(&o.toCert, "to-cert", "", "OFFLINE, one-time handoff: seal to this certificate's key with HPKE, no key service; lost when that key rotates")
	return c
}

// sealOffline seals to the key of the certificate in --to-cert: no key
// service, no revocation, no audit; the policy names its SPIFFE ID.
func (o *sealOptions) sealOffline(ctx context.Context, e *env, args []string) error {
	data, err := os.ReadFile(o.toCert)
	if err != nil {
		return flagError("to-cert", "%v", err)
	}
	certs, err := pki.ParseCertificates(data)
	if err != nil || len(certs) == 0 {
		return flagError("to-cert", "%s: no PEM certificate (%v)", o.toCert, err)
	}
	if len(o.to) == 0 && len(certs[0].URIs) == 1 {
		o.to = []string{certs[0].URIs[0].String()}
	}
	p, err := o.policy(time.Now())
	if err != nil {
		return err
	}
	fmt.Fprintf(e.stderr, "warning: sealed offline to the key of %s: only that key opens it, and the data is lost when it rotates\n", strings.Join(o.to, ", "))
	in, out, commit, err := o.streams(e, args)
	if err != nil {
		return err
	}
	return commit(seal.Seal(ctx, out, in, p, seal.CertWrapper{Cert: certs[0]}))
}

// policy builds the policy from the flags.
func (o *sealOptions) policy(now time.Time) (seal.Policy, error) {
	if o.rewrap {
		if len(o.to) > 0 || len(o.roles) > 0 || o.notAfter != "" {
			return seal.Policy{}, flagError("rewrap", "the policy of a sealed file cannot change: --rewrap takes no --to, --role or --not-after")
		}
		return seal.Policy{}, nil
	}
	p := seal.Policy{IDs: o.to, Roles: o.roles}
	if o.notAfter != "" {
		if d, err := time.ParseDuration(o.notAfter); err == nil {
			p.NotAfter = now.Add(d).UTC().Truncate(time.Second)
		} else if t, err := time.Parse(time.RFC3339, o.notAfter); err == nil {
			p.NotAfter = t
		} else {
			return p, flagError("not-after", "%q: give an RFC 3339 time (2026-12-31T00:00:00Z) or a duration (720h)", o.notAfter)
		}
		if !p.NotAfter.After(now) {
			return p, flagError("not-after", "%s is in the past: nobody could ever unseal", p.NotAfter.Format(time.RFC3339))
		}
	}
	if len(p.IDs) == 0 {
		return p, flagError("to", "required: the SPIFFE ID pattern(s) that may unseal, e.g. --to spiffe://example.org/ns/prod/web")
	}
	if err := p.Validate(); err != nil {
		return p, flagError("to", "%v", err)
	}
	return p, nil
}

// rewrap copies a sealed file with its key slot rewrapped.
func rewrap(ctx context.Context, dst io.Writer, src io.Reader, cl *keyrelease.Client) error {
	h, err := seal.ReadHeader(src)
	if err != nil {
		return err
	}
	if h.Slot, err = cl.Rewrap(ctx, h); err != nil {
		return err
	}
	hb, err := h.Marshal()
	if err != nil {
		return err
	}
	if _, err := dst.Write(hb); err != nil {
		return err
	}
	_, err = io.Copy(dst, src)
	return err
}

func unsealCmd(e *env) *cobra.Command {
	o := &keyServiceFlags{}
	var offline bool
	c := &cobra.Command{
		Use:   "unseal [IN]",
		Short: "Decrypt sealed data, proving your identity to the key service",
		Long: `Decrypt IN (or stdin) to stdout. The key service releases the data key only
to a caller whose valid, unrevoked certificate matches the sealed policy, and
records who asked. On error, stdout may hold the chunks that authenticated
before it: treat it as incomplete; with -o the file appears only when complete.`,
		Example: `  mutual unseal --identity-dir id --keys https://keys:8444 db.env.sealed -o db.env`,
		Args:    cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			var u seal.Unwrapper
			if offline {
				if o.identityDir == "" {
					return flagError("identity-dir", "required with --offline: the identity whose key the file was sealed to")
				}
				id, err := identity.Load(o.identityDir)
				if err != nil {
					return flagError("identity-dir", "%v", err)
				}
				u = seal.KeyUnwrapper{Cert: id.Leaf(), Key: id.Key}
			} else {
				cl, done, err := o.client(cmd.Context())
				if err != nil {
					return err
				}
				defer done()
				u = cl
			}
			in, out, commit, err := o.streams(e, args)
			if err != nil {
				return err
			}
			return commit(seal.Unseal(cmd.Context(), out, in, u))
		},
	}
	o.register(c)
	c.Flags().BoolVar(&offline, "offline", false, "open a file sealed with --to-cert, with the key in --identity-dir (no key service)")
	return c
}

func keysCmd(e *env) *cobra.Command {
	c := &cobra.Command{
		Use:   "keys",
		Short: "Run and manage the key-release service of sealed data",
	}
	c.AddCommand(keysServeCmd(e), keysRotateCmd(e), keysLogCmd(e))
	return c
}

type keysServeOptions struct {
	revocation     sidecar.Revocation
	identityDir    string
	keyDir         string
	auditDir       string
	passphraseFile string
	listen         string
	keks           []string
}

func keysServeCmd(e *env) *cobra.Command {
	o := &keysServeOptions{}
	c := &cobra.Command{
		Use:   "serve",
		Short: "Serve wrap and unwrap requests over mTLS, recording each in an audit log",
		Long: `Serve the key-release service beside the CA. Its identity (--identity-dir) is
spiffe://TD` + keyrelease.ServerPath + ` by default; key-encryption keys live in --key-dir,
encrypted with the passphrase, or with --kek in a PKCS#11 token, which decrypts
and never lets them out (the last --kek wraps; older ones and any file keys in
--key-dir still unwrap). It follows the CA's revocation feed and refuses
every unwrap while it cannot know the revocation status.`,
		Example: `  mutual keys serve --identity-dir keys-id --key-dir keys --passphrase-file pass --listen :8444`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return o.run(cmd.Context(), e)
		},
	}
	f := c.Flags()
	f.StringVar(&o.identityDir, "identity-dir", "", "the service's identity directory (required)")
	f.StringVar(&o.keyDir, "key-dir", "", "directory of the key-encryption keys and the audit log key (required)")
	f.StringVar(&o.auditDir, "audit-dir", "", "audit log directory (default KEY-DIR/audit)")
	f.StringVar(&o.passphraseFile, "passphrase-file", "", "file holding the passphrase that encrypts the keys (required)")
	f.StringVar(&o.listen, "listen", "127.0.0.1:8444", "address to listen on")
	f.StringArrayVar(&o.keks, "kek", nil, "key-encryption key in a token, pkcs11:...;object=LABEL?module-path=...&pin-source=... (repeatable, oldest first: the last wraps); made by mutual keys rotate --kek")
	registerRevocation(c, &o.revocation)
	return c
}

func (o *keysServeOptions) run(ctx context.Context, e *env) error {
	if o.identityDir == "" {
		return flagError("identity-dir", "required: the key service's identity directory")
	}
	if o.keyDir == "" {
		return flagError("key-dir", "required: where the key-encryption keys (with --kek, only the audit log key) are kept")
	}
	if o.revocation.Off {
		return flagError("no-revocation", "the key service never runs without revocation: it would release keys to revoked certificates")
	}
	pass, err := readPassphrase(o.passphraseFile)
	if err != nil {
		return err
	}
	log := e.logger(slog.LevelInfo)
	src, err := identity.NewDirSource(o.identityDir)
	if err != nil {
		return flagError("identity-dir", "%v", err)
	}
	w, err := sidecar.RevocationWatcher(src, o.identityDir, o.revocation, log)
	if err != nil {
		return err
	}
	tokens := keyref.NewKeyring(keyref.Options{})
	defer tokens.Close()
	svc, audit, err := o.service(ctx, src, w, pass, tokens, log)
	if err != nil {
		return err
	}
	defer audit.Close()
	ln, err := net.Listen("tcp", o.listen)
	if err != nil {
		return flagError("listen", "%v", err)
	}
	srv := &http.Server{Handler: svc.Handler(), TLSConfig: svc.TLSConfig(src), ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, IdleTimeout: 2 * time.Minute}
	log.Info("key service listening", "url", "https://"+ln.Addr().String(), "spiffe_id", src.Identity().ID.String(), "audit", o.auditDir)
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return src.Run(gctx, time.Second, nil) })
	g.Go(func() error {
		<-gctx.Done()
		return srv.Close()
	})
	g.Go(func() error {
		if err := srv.ServeTLS(ln, "", ""); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	err = g.Wait()
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// service opens the keys and the audit log and assembles the service.
func (o *keysServeOptions) service(ctx context.Context, src *identity.DirSource, rc keyrelease.RevocationChecker, pass []byte, tokens *keyref.Keyring, log *slog.Logger) (*keyrelease.Service, *auditlog.Log, error) {
	keys := keyrelease.FileKeys{Dir: o.keyDir, Passphrase: pass}
	ring, err := keys.LoadWith(ctx, keyrelease.TokenKeys{Keyring: tokens, Refs: o.keks})
	if err != nil {
		if len(o.keks) > 0 {
			return nil, nil, flagError("kek", "%v", err)
		}
		return nil, nil, flagError("key-dir", "%v", err)
	}
	signer, err := keys.AuditSigner(src.Identity().ID.TrustDomain().Name())
	if err != nil {
		return nil, nil, flagError("key-dir", "%v", err)
	}
	if o.auditDir == "" {
		o.auditDir = filepath.Join(o.keyDir, "audit")
	}
	audit, err := auditlog.Open(o.auditDir, signer)
	if err != nil {
		return nil, nil, flagError("audit-dir", "%v", err)
	}
	svc, err := keyrelease.New(keyrelease.Config{Keys: ring, Bundle: src, Revocation: rc, Audit: audit, Log: log})
	if err != nil {
		audit.Close()
		return nil, nil, err
	}
	log.Info("key-encryption key", "current", ring.Current().ID(), "dir", o.keyDir, "in_token", len(o.keks) > 0)
	return svc, audit, nil
}

func keysRotateCmd(e *env) *cobra.Command {
	var keyDir, passFile, kek string
	c := &cobra.Command{
		Use:   "rotate",
		Short: "Make a new key-encryption key; older keys stay to unwrap what they wrapped",
		Long: `Make a new key-encryption key in --key-dir. A key service started after it wraps
new files with it; files sealed before stay readable, and mutual seal --rewrap
moves them to the new key. With --kek the new key is an RSA key generated inside
the PKCS#11 token (a new object= label); pass it as the last --kek of keys serve.`,
		Example: `  mutual keys rotate --key-dir keys --passphrase-file pass
  mutual keys rotate --kek 'pkcs11:token=keys;object=kek-2?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/mutual/pin'`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if kek != "" {
				tokens := keyref.NewKeyring(keyref.Options{})
				defer tokens.Close()
				id, err := keyrelease.TokenKeys{Keyring: tokens}.Generate(cmd.Context(), kek)
				if err != nil {
					return flagError("kek", "%v", err)
				}
				fmt.Fprintf(e.stdout, "new key-encryption key %s in the token: add it as the last --kek of mutual keys serve and restart it\n", id)
				return nil
			}
			if keyDir == "" {
				return flagError("key-dir", "required: the key service's key directory")
			}
			pass, err := readPassphrase(passFile)
			if err != nil {
				return err
			}
			id, err := keyrelease.FileKeys{Dir: keyDir, Passphrase: pass}.Rotate()
			if err != nil {
				return err
			}
			fmt.Fprintf(e.stdout, "new key-encryption key %s: restart mutual keys serve to wrap with it\n", id)
			return nil
		},
	}
	c.Flags().StringVar(&keyDir, "key-dir", "", "directory of the key-encryption keys (required)")
	c.Flags().StringVar(&passFile, "passphrase-file", "", "file holding the keys' passphrase (required without --kek)")
	c.Flags().StringVar(&kek, "kek", "", "generate the new key in a PKCS#11 token instead: pkcs11:...;object=NEW-LABEL?module-path=...&pin-source=...")
	return c
}

func keysLogCmd(e *env) *cobra.Command {
	var auditDir, file string
	c := &cobra.Command{
		Use:   "log",
		Short: "Print the audit log of the key service: who unsealed what, when",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if auditDir == "" {
				return flagError("audit-dir", "required: the key service's audit log directory (KEY-DIR/audit)")
			}
			return auditlog.ReadAll(auditDir, func(i int64, rec []byte) error {
				if file != "" && !strings.Contains(string(rec), `"file":"`+file) {
					return nil
				}
				_, err := fmt.Fprintf(e.stdout, "%d %s\n", i, rec)
				return err
			})
		},
	}
	c.Flags().StringVar(&auditDir, "audit-dir", "", "audit log directory (required)")
	c.Flags().StringVar(&file, "file", "", "only the records of this file (its hex id, as in the records, or a prefix)")
	return c
}
