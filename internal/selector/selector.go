// Package selector parses workload selectors and matches them against what
// the agent learned about a calling process.
//
//	unix:uid:1001            the process's user id
//	unix:gid:1001            the process's group id
//	unix:user:www-data       the name of the process's user
//	unix:path:/usr/bin/web   the executable's absolute path
//	unix:sha256:<64 hex>     the SHA-256 of the executable
package selector

import (
	"encoding/hex"
	"fmt"
	"path"
	"strconv"
	"strings"
)

// Selector is one parsed selector.
type Selector struct {
	Kind  string // uid, gid, user, path, sha256
	Value string
}

// String returns the selector as written.
func (s Selector) String() string { return "unix:" + s.Kind + ":" + s.Value }

// Parse reads a selector, with a message that names what is wrong.
func Parse(s string) (Selector, error) {
	rest, ok := strings.CutPrefix(s, "unix:")
	if !ok {
		return Selector{}, fmt.Errorf("selector %q: only unix: selectors are supported (unix:uid:N, unix:gid:N, unix:user:NAME, unix:path:/ABS, unix:sha256:HEX)", s)
	}
	kind, val, ok := strings.Cut(rest, ":")
	if !ok || val == "" {
		return Selector{}, fmt.Errorf("selector %q: write unix:KIND:VALUE", s)
	}
	switch kind {
	case "uid", "gid":
		n, err := strconv.ParseUint(val, 10, 32)
		if err != nil {
			return Selector{}, fmt.Errorf("selector %q: %s must be a number", s, kind)
		}
		val = strconv.FormatUint(n, 10)
	case "user":
		if strings.ContainsAny(val, ": /") {
			return Selector{}, fmt.Errorf("selector %q: not a user name", s)
		}
	case "path":
		if !strings.HasPrefix(val, "/") || path.Clean(val) != val {
			return Selector{}, fmt.Errorf("selector %q: the path must be absolute and clean, such as /usr/bin/web", s)
		}
	case "sha256":
		b, err := hex.DecodeString(val)
		if err != nil || len(b) != 32 {
			return Selector{}, fmt.Errorf("selector %q: sha256 must be 64 hex digits (sha256sum of the executable)", s)
		}
		val = strings.ToLower(val)
	default:
		return Selector{}, fmt.Errorf("selector %q: unknown kind %q: use uid, gid, user, path or sha256", s, kind)
	}
	return Selector{Kind: kind, Value: val}, nil
}

// ParseAll parses a list; an entry needs at least one selector.
func ParseAll(list []string) ([]Selector, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("no selector: an entry needs at least one, such as unix:uid:1001")
	}
	out := make([]Selector, 0, len(list))
	for _, s := range list {
		sel, err := Parse(s)
		if err != nil {
			return nil, err
		}
		out = append(out, sel)
	}
	return out, nil
}

// Workload is what the agent knows of a caller.
type Workload struct {
	PID  int32
	UID  uint32
	GID  uint32
	User string
	// Path and SHA256 are empty when the executable could not be read.
	Path   string
	SHA256 string
}

// Match reports whether the workload matches the selector.
func (s Selector) Match(w Workload) bool {
	switch s.Kind {
	case "uid":
		return s.Value == strconv.FormatUint(uint64(w.UID), 10)
	case "gid":
		return s.Value == strconv.FormatUint(uint64(w.GID), 10)
	case "user":
		return w.User != "" && s.Value == w.User
	case "path":
		return w.Path != "" && s.Value == w.Path
	case "sha256":
		return w.SHA256 != "" && s.Value == w.SHA256
	}
	return false
}

// MatchAll reports whether every selector matches.
func MatchAll(sels []Selector, w Workload) bool {
	for _, s := range sels {
		if !s.Match(w) {
			return false
		}
	}
	return len(sels) > 0
}
