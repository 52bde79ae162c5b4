package agent

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/selector"
)

// writeUsage is the --write flag's syntax.
const writeUsage = "ID=DIR[,owner=USER][,mode=0640][,format=pem|combined|pkcs12][,cert=NAME][,key=NAME][,bundle=NAME][,file=NAME][,password-file=PATH][,reload=CMD]"

// WriteSpec keeps an identity directory current for a program that reads
// files: --write ID=DIR[,owner=USER][,mode=0640][,format=...][,names]
// [,password-file=PATH][,reload=CMD].
//
// The identity is the one an entry grants to a workload running as the
// owner (default: the agent's own user): selectors on uid, gid and user
// name apply; an entry with path or hash selectors cannot match a file and
// is reported (log and metric) rather than written.
type WriteSpec struct {
	ID     spiffeid.ID
	Dir    string
	Owner  string
	Mode   os.FileMode
	Reload string
	// Format and Names are how the files are written (identity.WriteOptions).
	Format identity.Format
	Names  identity.Names
	// PasswordFile holds the PKCS#12 password (its first line), read at
	// every write.
	PasswordFile string

	uid, gid int
	wl       selector.Workload
}

// ParseWriteSpec reads the --write flag's value.
func ParseWriteSpec(s string) (WriteSpec, error) {
	id, rest, ok := strings.Cut(s, "=")
	if !ok {
		return WriteSpec{}, fmt.Errorf("--write %q: write %s", s, writeUsage)
	}
	sid, err := spiffeid.FromString(id)
	if err != nil {
		return WriteSpec{}, fmt.Errorf("--write %q: %w", s, err)
	}
	w := WriteSpec{ID: sid, Mode: 0o600}
	parts := strings.Split(rest, ",")
	w.Dir = parts[0]
	if !filepath.IsAbs(w.Dir) {
		return WriteSpec{}, fmt.Errorf("--write %q: the directory must be an absolute path", s)
	}
	for i := 1; i < len(parts); i++ {
		k, v, _ := strings.Cut(parts[i], "=")
		if k == "reload" {
			// The command may contain commas: it takes the rest.
			w.Reload = strings.Join(append([]string{v}, parts[i+1:]...), ",")
			break
		}
		if err := w.set(k, v); err != nil {
			return WriteSpec{}, fmt.Errorf("--write %q: %w", s, err)
		}
	}
	if err := w.Names.Check(); err != nil {
		return WriteSpec{}, fmt.Errorf("--write %q: %w", s, err)
	}
	if (w.Format == identity.FormatPKCS12) != (w.PasswordFile != "") {
		return WriteSpec{}, fmt.Errorf("--write %q: format=pkcs12 and password-file=PATH go together", s)
	}
	return w, nil
}

// set applies one option of the --write value (all but reload).
func (w *WriteSpec) set(k, v string) error {
	var err error
	switch k {
	case "owner":
		w.Owner = v
	case "mode":
		m, err := strconv.ParseUint(v, 8, 32)
		if err != nil || m&^0o777 != 0 || m&0o037 != 0 {
			return fmt.Errorf("mode %q must be octal, owner-writable at most and group-readable at most (0600 or 0640)", v)
		}
		w.Mode = os.FileMode(m)
	case "format":
		w.Format, err = identity.ParseFormat(v)
	case "cert":
		w.Names.Cert = v
	case "key":
		w.Names.Key = v
	case "bundle":
		w.Names.Bundle = v
	case "file":
		w.Names.File = v
	case "password-file":
		if !filepath.IsAbs(v) {
			return errors.New("the password file must be an absolute path")
		}
		w.PasswordFile = v
	default:
		return fmt.Errorf("unknown option %q (write %s)", k, writeUsage)
	}
	return err
}

func (w *WriteSpec) resolve() error {
	w.uid, w.gid = os.Getuid(), os.Getgid()
	if w.Owner != "" {
		u, err := user.Lookup(w.Owner)
		if err != nil {
			return fmt.Errorf("--write %s: owner: %w", w.ID, err)
		}
		w.uid, _ = strconv.Atoi(u.Uid)
		w.gid, _ = strconv.Atoi(u.Gid)
	}
	w.wl = selector.Workload{UID: uint32(w.uid), GID: uint32(w.gid)}
	if u, err := user.LookupId(strconv.Itoa(w.uid)); err == nil {
		w.wl.User = u.Username
	}
	// Refuse an unsafe directory at start, not at the first rotation.
	if err := identity.PrepareDir(w.Dir, w.options(nil)); err != nil {
		return fmt.Errorf("--write: %w", err)
	}
	return nil
}

// options are how w's files are written (issue 12, item 2; DESIGN "Agent ↔
// local processes"): for the owner (the agent's own user by default), the
// directory checked, the files appearing as one set.
func (w *WriteSpec) options(caURLs []string) identity.WriteOptions {
	return identity.WriteOptions{CAURLs: caURLs, Owner: &identity.Owner{UID: w.uid, GID: w.gid}, KeyMode: w.Mode,
		Format: w.Format, Names: w.Names}
}

// runWriter writes the identity at start (from what the agent holds) and
// after every change: a new certificate, or a federated bundle added,
// changed or removed (federated/TD.pem in the same set).
func (a *Agent) runWriter(ctx context.Context, w *WriteSpec) {
	var last, lastUnwritable string
	for {
		changed := a.changes()
		fed, fedChanged := a.federated()
		if id := a.writable(w); id != nil {
			version := pki.FormatSerial(id.Leaf().SerialNumber) + "\x00" + string(chainDER(id.Roots)) + "\x00" + fed.fingerprint()
			if version != last {
				cp := *id
				cp.Federated = fed.roots
				if err := a.write(ctx, w, &cp); err != nil {
					a.metrics.writes.WithLabelValues("error").Inc()
					a.log.Error("cannot write identity files", "spiffe_id", w.ID.String(), "dir", w.Dir, "error", err.Error())
				} else {
					a.metrics.writes.WithLabelValues("ok").Inc()
					last = version
				}
			}
		} else if why := a.unwritable(w); why != lastUnwritable {
			// Said once for each new reason, not at every change.
			lastUnwritable = why
			if why != "" {
				a.metrics.writes.WithLabelValues("unwritable").Inc()
				a.log.Error("cannot write identity files: no entry for the owner can be written", "spiffe_id", w.ID.String(), "dir", w.Dir, "reason", why)
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-fedChanged:
		case <-time.After(a.federatedPoll()):
		}
	}
}

// writable is w's identity among those the agent holds for its owner, or
// nil.
func (a *Agent) writable(w *WriteSpec) *identity.Identity {
	ids, _, _ := a.match(w.wl)
	for _, id := range ids {
		if id.ID == w.ID {
			return id
		}
	}
	return nil
}

// unwritable says why an entry granting w.ID does not match w's owner
// when it selects by executable path or hash (unix:path, unix:sha256):
// no process is attested for a file writer, so such an entry can never be
// written. Empty when there is no such entry.
func (a *Agent) unwritable(w *WriteSpec) string {
	a.mu.RLock()
	defer a.mu.RUnlock()
	var why []string
	for _, s := range a.svids {
		if s.entry.SPIFFEID != w.ID.String() || selector.MatchAll(s.sels, w.wl) {
			continue
		}
		for _, sel := range s.sels {
			if sel.Kind == "path" || sel.Kind == "sha256" {
				why = append(why, fmt.Sprintf("entry %s selects %s, which --write cannot satisfy (no process to attest); give the file writer an entry with uid, gid or user selectors only", s.entry.ID, sel))
				break
			}
		}
	}
	sort.Strings(why)
	return strings.Join(why, "; ")
}

func (a *Agent) write(ctx context.Context, w *WriteSpec, id *identity.Identity) error {
	a.mu.RLock()
	urls := a.caURLs
	a.mu.RUnlock()
	// mutual.json tells a consumer (mutual proxy --identity-dir) where the
	// CA is, so that it can check revocation.
	o := w.options(urls)
	var err error
	if w.PasswordFile != "" {
		if o.Password, err = identity.ReadPasswordFile(w.PasswordFile); err != nil {
			return fmt.Errorf("--write %s: PKCS#12: %w", w.ID, err)
		}
	}
	if err := identity.WriteDir(w.Dir, id, o); err != nil {
		return fmt.Errorf("--write: %w", err)
	}
	a.log.Info("identity files written", "spiffe_id", w.ID.String(), "dir", w.Dir, "serial", pki.FormatSerial(id.Leaf().SerialNumber))
	if w.Reload == "" {
		return nil
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	// umask 077: whatever the command builds from the key (a combined
	// PEM, a keystore) is readable by its owner only, whatever the
	// agent's own umask.
	cmd := exec.CommandContext(cctx, "/bin/sh", "-c", "umask 077\n"+w.Reload)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("reload command %q: %w: %s", w.Reload, err, strings.TrimSpace(string(out)))
	}
	return nil
}
