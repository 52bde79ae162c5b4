package agent

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/mutual-tls/mutual/identity"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/selector"
)

// WriteSpec keeps an identity directory current for a program that reads
// files: --write ID=DIR[,owner=USER][,mode=0640][,reload=CMD].
//
// The identity is the one an entry grants to a workload running as the
// owner (default: the agent's own user): selectors on uid, gid and user
// name apply; path and hash selectors cannot match a file.
type WriteSpec struct {
	ID     spiffeid.ID
	Dir    string
	Owner  string
	Mode   os.FileMode
	Reload string

	uid, gid int
	wl       selector.Workload
}

// ParseWriteSpec reads the --write flag's value.
func ParseWriteSpec(s string) (WriteSpec, error) {
	id, rest, ok := strings.Cut(s, "=")
	if !ok {
		return WriteSpec{}, fmt.Errorf("--write %q: write ID=DIR[,owner=USER][,mode=0640][,reload=CMD]", s)
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
		switch k {
		case "owner":
			w.Owner = v
		case "mode":
			m, err := strconv.ParseUint(v, 8, 32)
			if err != nil || m&^0o777 != 0 || m&0o037 != 0 {
				return WriteSpec{}, fmt.Errorf("--write %q: mode %q must be octal, owner-writable at most and group-readable at most (0600 or 0640)", s, v)
			}
			w.Mode = os.FileMode(m)
		case "reload":
			// The command may contain commas: it takes the rest.
			w.Reload = strings.Join(append([]string{v}, parts[i+1:]...), ",")
			i = len(parts)
		default:
			return WriteSpec{}, fmt.Errorf("--write %q: unknown option %q (owner, mode, reload)", s, k)
		}
	}
	return w, nil
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
	return identity.WriteOptions{CAURLs: caURLs, Owner: &identity.Owner{UID: w.uid, GID: w.gid}, KeyMode: w.Mode}
}

// runWriter writes the identity at start (from what the agent holds) and
// after every change.
func (a *Agent) runWriter(ctx context.Context, w *WriteSpec) {
	var last string
	for {
		changed := a.changes()
		ids, _, _ := a.match(w.wl)
		for _, id := range ids {
			if id.ID != w.ID {
				continue
			}
			serial := pki.FormatSerial(id.Leaf().SerialNumber)
			if serial == last {
				break
			}
			if err := a.write(ctx, w, id); err != nil {
				a.metrics.writes.WithLabelValues("error").Inc()
				a.log.Error("cannot write identity files", "spiffe_id", w.ID.String(), "dir", w.Dir, "error", err.Error())
			} else {
				a.metrics.writes.WithLabelValues("ok").Inc()
				last = serial
			}
			break
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		}
	}
}

func (a *Agent) write(ctx context.Context, w *WriteSpec, id *identity.Identity) error {
	a.mu.RLock()
	urls := a.caURLs
	a.mu.RUnlock()
	// mutual.json tells a consumer (mutual proxy --identity-dir) where the
	// CA is, so that it can check revocation.
	if err := identity.WriteDir(w.Dir, id, w.options(urls)); err != nil {
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
