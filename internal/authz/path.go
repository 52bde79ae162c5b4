package authz

import (
	"fmt"
	"net/url"
	"strings"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// PathError says why a request path was refused before authorization.
type PathError struct {
	Path   string // the path as sent, still percent-encoded
	Reason string // in words, for the log and the 400 answer
}

func (e *PathError) Error() string {
	return fmt.Sprintf("path %q is refused: %s", e.Path, e.Reason)
}

// CheckPath takes a request's path as sent (still percent-encoded, as
// url.URL.EscapedPath returns it) and returns the decoded path to authorize,
// or a *PathError when servers could read the path as another one than the
// literal: dot segments (also with ";parameters", as Tomcat and Jetty drop
// them before resolving ".."), empty segments, encoded "/", "\" or ".",
// anything encoded twice ("%252e"), invalid or overlong UTF-8 ("%c0%ae"),
// characters that Unicode folding (NFKC) turns into "." or "/", backslashes
// and control characters. What it accepts means the same path to every
// server, so an allow rule judged on it holds whichever server is behind.
// The asterisk-form "*" (OPTIONS *) is accepted as is.
func CheckPath(escaped string) (string, error) {
	if escaped == "*" {
		return escaped, nil
	}
	refuse := func(reason string) (string, error) {
		return "", &PathError{Path: escaped, Reason: reason}
	}
	if !strings.HasPrefix(escaped, "/") {
		return refuse("it does not start with /")
	}
	for i := 0; i+2 < len(escaped); i++ {
		if escaped[i] != '%' || escaped[i+1] != '2' && escaped[i+1] != '5' {
			continue
		}
		var what string
		switch strings.ToLower(escaped[i+1 : i+3]) {
		case "2f":
			what = "an encoded / (%2f)"
		case "5c":
			what = `an encoded \ (%5c)`
		case "2e":
			what = "an encoded . (%2e)"
		default:
			continue
		}
		return refuse("it holds " + what + ", which some servers decode before resolving the path and others after")
	}
	p := escaped
	if strings.IndexByte(escaped, '%') >= 0 {
		var err error
		if p, err = url.PathUnescape(escaped); err != nil {
			return refuse("it is not validly percent-encoded")
		}
	}
	if reason := judgePath(p); reason != "" {
		return refuse(reason)
	}
	if !isASCII(p) {
		if folded := norm.NFKC.String(p); folded != p {
			if reason := judgePath(folded); reason != "" {
				return refuse("after Unicode folding (NFKC), which some servers apply, " + reason)
			}
		}
	}
	return p, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// judgePath returns why the decoded path p (which starts with '/') is
// ambiguous, or "". One pass, no allocation: it runs on every request.
func judgePath(p string) string {
	if !utf8.ValidString(p) {
		return "it is not valid UTF-8 once decoded (overlong forms such as %c0%ae smuggle a '.')"
	}
	seg, stem := 0, 0 // bytes in the current segment, and before its first ';'
	params, dotsOnly := false, true
	for i := 1; i <= len(p); i++ {
		if i == len(p) || p[i] == '/' {
			switch {
			case seg == 0 && i < len(p):
				return "it holds an empty segment (//)"
			case stem == 0 && params:
				return "it holds a segment that is only ;parameters, which some servers drop"
			case stem > 0 && dotsOnly:
				return "it holds dot segments (. or .., also with ;parameters or trailing spaces), which servers resolve in different ways"
			}
			seg, stem, params, dotsOnly = 0, 0, false, true
			continue
		}
		switch c := p[i]; {
		case c < 0x20 || c == 0x7f:
			return "it holds a control character"
		case c == '\\':
			return `it holds a backslash, which some servers read as /`
		case c == '%' && i+2 < len(p) && isHex(p[i+1]) && isHex(p[i+2]):
			return "it is percent-encoded twice (%25 then hex), so a server that decodes again reads another path"
		case c == ';':
			params = true
		case !params:
			stem++
			if c != '.' && c != ' ' {
				dotsOnly = false
			}
		}
		seg++
	}
	return ""
}

// hasPercentHex reports whether s holds '%' and two hex digits.
func hasPercentHex(s string) bool {
	for i := 0; i+2 < len(s); i++ {
		if s[i] == '%' && isHex(s[i+1]) && isHex(s[i+2]) {
			return true
		}
	}
	return false
}

func isHex(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F'
}

// checkPathRule says what is wrong with a path rule, or "". A rule is a
// decoded canonical path, with at most a final '*'.
func checkPathRule(rule string) string {
	if !strings.HasPrefix(rule, "/") {
		return "must start with /"
	}
	body := strings.TrimSuffix(rule, "*")
	switch {
	case strings.Contains(body, "*"):
		return "'*' may appear only at the end (a raw prefix)"
	case strings.ContainsAny(body, "?#"):
		return "'?' and '#' do not belong to a path: rules match the path only"
	case strings.Contains(body, ";"):
		return "';' (path parameters) cannot be matched: servers drop or keep them in different ways"
	case hasPercentHex(body):
		return "write the path decoded: requests are matched after percent-decoding"
	}
	if reason := judgePath(body); reason != "" {
		return strings.TrimPrefix(reason, "it ")
	}
	return ""
}

// pathMatches reports whether the decoded request path p falls under rule:
// "/a" matches "/a" and "/a/..." (segment boundaries), "/a/" matches what
// lies below "/a/", and "/a*" matches any path that starts with "/a".
func pathMatches(rule, p string) bool {
	if prefix, ok := strings.CutSuffix(rule, "*"); ok {
		return strings.HasPrefix(p, prefix)
	}
	if strings.HasSuffix(rule, "/") {
		return strings.HasPrefix(p, rule)
	}
	return p == rule || strings.HasPrefix(p, rule+"/")
}
