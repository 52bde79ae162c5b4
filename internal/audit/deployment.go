package audit

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Deployment says where audit finds what is deployed on a host, beyond the
// CA directory: every field is optional.
//
// A proxy's configuration is read where systemd reads it: the packaged
// units run `mutual proxy inbound --config /etc/mutual/proxy-inbound-NAME.yaml`
// (outbound likewise; older packages passed $MUTUAL_ARGS from
// proxy-inbound-NAME.env, also read), so those files hold the exact flags
// the proxy runs with. The policy file
// and identity directory they name are audited too, and the --metrics
// listener is asked for /migration when the proxy is permissive. Drop-ins
// that replace ExecStart are not read.
type Deployment struct {
	// EtcDir is the packaged configuration directory (/etc/mutual):
	// proxy-inbound-*.env and proxy-outbound-*.env are audited.
	EtcDir string
	// PolicyFiles are proxy policy files (YAML rules) audited rule by rule.
	PolicyFiles []string
	// IdentityDirs are written identity directories (cert.pem, key.pem,
	// bundle.pem): key file modes, the bundle's roots, the lifetime.
	IdentityDirs []string
	// CAURL is the running CA's API: its list of unexpired certificates is
	// read with the admin identity of the CA directory (CADir/admin) and
	// each is held to the policy's maximum lifetime.
	CAURL string
	// TrustDomain is this deployment's own trust domain, when no CA
	// directory or proxy identity says it: allow patterns of any other
	// trust domain are held to a stricter standard.
	TrustDomain string
}

// deployment audits what o.Deployment names.
func (a *auditor) deployment(ctx context.Context) error {
	d := a.o.Deployment
	if d.EtcDir != "" {
		if err := a.etcDir(ctx, d.EtcDir); err != nil {
			return err
		}
	}
	for _, p := range d.PolicyFiles {
		if err := a.policyFile(p, a.ownTrustDomain(ProxyConfig{})); err != nil {
			return err
		}
	}
	for _, dir := range d.IdentityDirs {
		if err := a.identityDir(dir); err != nil {
			return err
		}
	}
	if a.o.CADir != "" {
		a.caKeyFiles(a.o.CADir)
	}
	if d.CAURL != "" {
		if err := a.issued(ctx, d.CAURL); err != nil {
			return err
		}
	}
	return nil
}

// etcDir audits every packaged proxy configuration in dir: the YAML
// files the units pass as --config (proxy-inbound-NAME.yaml), and
// environment files of older packages (MUTUAL_ARGS).
func (a *auditor) etcDir(ctx context.Context, dir string) error {
	var files []string
	for _, pat := range []string{"proxy-inbound-*.env", "proxy-outbound-*.env", "proxy-inbound-*.yaml", "proxy-outbound-*.yaml"} {
		m, err := filepath.Glob(filepath.Join(dir, pat))
		if err != nil {
			return fmt.Errorf("--etc %s: %w", dir, err)
		}
		files = append(files, m...)
	}
	if _, err := os.Stat(dir); err != nil {
		return fmt.Errorf("--etc %s: %w", dir, err)
	}
	slices.Sort(files)
	for _, f := range files {
		read := a.envFile
		if strings.HasSuffix(f, ".yaml") {
			read = a.yamlFile
		}
		if err := read(ctx, f); err != nil {
			return err
		}
	}
	return nil
}

// yamlFile audits one proxy's --config file: one key per flag, named as
// the flag, as `mutual proxy inbound --config` reads it.
func (a *auditor) yamlFile(ctx context.Context, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--etc: %w", err)
	}
	args, err := ConfigArgs(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return a.proxyArgs(ctx, path, path, "", args)
}

// ConfigArgs turns a daemon's YAML config file (keys are flag names) into
// the command-line flags it stands for, in key order; a list becomes the
// flag repeated.
func ConfigArgs(data []byte) ([]string, error) {
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("not a YAML config file: %w", err)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var args []string
	for _, k := range keys {
		switch v := m[k].(type) {
		case []any:
			for _, item := range v {
				args = append(args, fmt.Sprintf("--%s=%v", k, item))
			}
		case map[string]any:
			return nil, fmt.Errorf("key %q: a flag takes a value or a list, not a mapping", k)
		case nil:
			return nil, fmt.Errorf("key %q has no value", k)
		default:
			args = append(args, fmt.Sprintf("--%s=%v", k, v))
		}
	}
	return args, nil
}

// envFile audits one proxy's environment file.
func (a *auditor) envFile(ctx context.Context, path string) error {
	raw, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("--etc: %w", err)
	}
	env, err := ParseEnvFile(raw)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	args, err := SplitArgs(env["MUTUAL_ARGS"])
	if err != nil {
		return fmt.Errorf("%s: MUTUAL_ARGS: %w", path, err)
	}
	return a.proxyArgs(ctx, path, path+": MUTUAL_ARGS", "--", args)
}

// proxyArgs audits the proxy that the flags args, read from path, run;
// where names them in an error, and flag is how the file spells a setting
// ("--" for flags, "" for YAML keys).
func (a *auditor) proxyArgs(ctx context.Context, path, where, flag string, args []string) error {
	pc, err := ProxyFlags(args)
	if err != nil {
		return fmt.Errorf("%s: %w", where, err)
	}
	pc.Direction = "inbound"
	if strings.HasPrefix(filepath.Base(path), "proxy-outbound-") {
		pc.Direction = "outbound"
	}
	a.r.Checked = append(a.r.Checked, "proxy "+path)
	return a.proxyConfig(ctx, path, flag, pc)
}

// spell writes a setting as its source spells it: a YAML key ("" flag) or
// a command-line flag ("--").
func spell(flag, name, value string) string {
	switch {
	case flag == "":
		return name + ": " + value
	case value == "true":
		return flag + name
	default:
		return flag + name + " " + value
	}
}

// ParseEnvFile reads a systemd EnvironmentFile: KEY=VALUE lines, # and ;
// comments, blank lines, values optionally in single or double quotes, a
// trailing backslash continuing a line.
func ParseEnvFile(data []byte) (map[string]string, error) {
	env := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(nil, 1<<20)
	n, pending := 0, ""
	for sc.Scan() {
		n++
		line := pending + sc.Text()
		pending = ""
		if strings.HasSuffix(line, `\`) {
			pending = strings.TrimSuffix(line, `\`)
			continue
		}
		line = strings.TrimSpace(line)
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		key, val, ok := strings.Cut(line, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" || strings.ContainsAny(key, " \t\"'") {
			return nil, fmt.Errorf("line %d is not KEY=VALUE", n)
		}
		val = strings.TrimSpace(val)
		if len(val) >= 2 && (val[0] == '"' || val[0] == '\'') && val[len(val)-1] == val[0] {
			val = val[1 : len(val)-1]
		}
		env[key] = val
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	return env, nil
}

// SplitArgs splits an unquoted $VAR the way systemd's ExecStart does:
// at whitespace, honouring single and double quotes and backslash escapes.
func SplitArgs(s string) ([]string, error) {
	var out []string
	var cur strings.Builder
	inWord := false
	var quote rune
	escaped := false
	for _, r := range s {
		switch {
		case escaped:
			cur.WriteRune(r)
			escaped = false
		case r == '\\' && quote != '\'':
			escaped, inWord = true, true
		case quote != 0:
			if r == quote {
				quote = 0
			} else {
				cur.WriteRune(r)
			}
		case r == '"' || r == '\'':
			quote, inWord = r, true
		case r == ' ' || r == '\t' || r == '\n':
			if inWord {
				out = append(out, cur.String())
				cur.Reset()
				inWord = false
			}
		default:
			cur.WriteRune(r)
			inWord = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated %c quote", quote)
	}
	if escaped {
		return nil, errors.New("a trailing backslash escapes nothing")
	}
	if inWord {
		out = append(out, cur.String())
	}
	return out, nil
}

// proxyFlagTakesValue lists the flags of `mutual proxy inbound` and
// `outbound` (see internal/cli/proxy.go): true for those that take a value.
var proxyFlagTakesValue = map[string]bool{
	"listen": true, "target": true, "allow": true, "policy": true, "mode": true, "protocol": true,
	"metrics": true, "identity-dir": true, "workload-api": true, "ca": true, "crl-interval": true,
	"handshake-timeout": true, "idle-timeout": true, "max-connections": true, "drain-timeout": true,
	"half-close-timeout": true, "expect": true, "server-name": true,
	"poll-interval": true, "log-level": true, "config": true, "request-log-limit": true,
	"tls12": false, "no-revocation": false, "unsafe-target": false, "unsafe-listen": false,
}

// ProxyFlags reads a proxy's command-line flags into the configuration
// audit checks. Unknown flags are an error that names them, so that a
// flag audit does not know cannot hide a misconfiguration.
func ProxyFlags(args []string) (ProxyConfig, error) {
	pc := ProxyConfig{Mode: "strict"}
	for i := 0; i < len(args); i++ {
		arg := args[i]
		name, val, hasVal := strings.Cut(strings.TrimPrefix(arg, "--"), "=")
		if !strings.HasPrefix(arg, "--") || name == "" {
			return pc, fmt.Errorf("%q is not a --flag: the proxy takes no arguments", arg)
		}
		takes, known := proxyFlagTakesValue[name]
		if !known {
			return pc, fmt.Errorf("unknown flag --%s: audit cannot judge a proxy it does not understand (see mutual proxy inbound --help)", name)
		}
		switch {
		case takes && !hasVal:
			if i+1 >= len(args) {
				return pc, fmt.Errorf("flag --%s needs a value", name)
			}
			i++
			val = args[i]
		case !takes && !hasVal:
			val = "true"
		case !takes && val != "true" && val != "false":
			return pc, fmt.Errorf("flag --%s=%s: write true or false", name, val)
		}
		switch name {
		case "allow":
			pc.Allow = append(pc.Allow, splitList(val)...)
		case "expect":
			pc.Expect = append(pc.Expect, splitList(val)...)
		case "ca":
			pc.CA = append(pc.CA, splitList(val)...)
		case "policy":
			pc.Policy = val
		case "mode":
			pc.Mode = val
		case "metrics":
			pc.Metrics = "http://" + val
		case "identity-dir":
			pc.IdentityDir = val
		case "server-name":
			pc.ServerName = val
		case "tls12":
			pc.TLS12 = val == "true"
		case "no-revocation":
			pc.NoRevocation = val == "true"
		}
	}
	return pc, nil
}

// splitList splits a repeatable flag's value at commas, as the proxy's
// string-slice flags do.
func splitList(v string) []string {
	var out []string
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, s)
		}
	}
	return out
}
