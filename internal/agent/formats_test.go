package agent_test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testlog"
	"github.com/mutual-tls/mutual/internal/testopenssl"
	"github.com/mutual-tls/mutual/internal/testwait"
)

func counter(t *testing.T, reg *prometheus.Registry, name, label, value string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.Metric {
			for _, l := range m.Label {
				if l.GetName() == label && l.GetValue() == value {
					return m.GetCounter().GetValue()
				}
			}
		}
	}
	return 0
}

// TestWriteFormats: the agent writes an identity as one combined PEM file
// (HAProxy) and as a PKCS#12 file (Java) that openssl reads with the
// password from the file; an entry selecting by executable path, which no
// file writer can match, is logged and counted instead of skipped in
// silence (issue 19, item 4).
func TestWriteFormats(t *testing.T) {
	t.Parallel()
	e := testenv.StartCA(t, testenv.Options{})
	web, byPath := td+"/ns/prod/web", td+"/ns/prod/by-path"
	uid := fmt.Sprintf("unix:uid:%d", os.Getuid())
	entry(t, e, web, td+"/node/n1", 0, nil, uid)
	pathEntry := entry(t, e, byPath, td+"/node/n1", 0, nil, uid, "unix:path:/usr/sbin/haproxy")

	base := shortDir(t)
	pw := filepath.Join(base, "p12.pass")
	if err := os.WriteFile(pw, []byte("changeit\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	combinedDir, p12Dir, pathDir := filepath.Join(base, "haproxy"), filepath.Join(base, "java"), filepath.Join(base, "by-path")
	var specs []agent.WriteSpec
	for _, s := range []string{
		web + "=" + combinedDir + ",format=combined,file=web.pem",
		web + "=" + p12Dir + ",format=pkcs12,file=keystore.p12,password-file=" + pw,
		byPath + "=" + pathDir,
	} {
		ws, err := agent.ParseWriteSpec(s)
		if err != nil {
			t.Fatal(err)
		}
		specs = append(specs, ws)
	}
	reg := prometheus.NewRegistry()
	logger, agentLog := testlog.New(t, "agent")
	nodeAgent(t, e, "n1", func(c *agent.Config) { c.Writes, c.Registry, c.Log = specs, reg, logger })

	combined := filepath.Join(combinedDir, "web.pem")
	testwait.EventuallyNil(t, func() error { return testopenssl.KeyMatchesCert(t, combined, combined) }, "the combined file, its key matching its certificate")
	if out, err := testopenssl.Run(t, "x509", "-in", combined, "-noout", "-ext", "subjectAltName"); err != nil || !strings.Contains(out, web) {
		t.Errorf("the combined file's first certificate is not %s: %v %s", web, err, out)
	}
	p12 := filepath.Join(p12Dir, "keystore.p12")
	var info string
	testwait.EventuallyNil(t, func() (err error) {
		info, err = testopenssl.Run(t, "pkcs12", "-info", "-in", p12, "-passin", "file:"+pw, "-noenc")
		return err
	}, "openssl reading the PKCS#12 file")
	if !strings.Contains(info, "BEGIN PRIVATE KEY") || !strings.Contains(info, "BEGIN CERTIFICATE") {
		t.Errorf("openssl pkcs12 -info shows no key or certificate:\n%s", info)
	}
	out := filepath.Join(base, "from-p12.pem")
	if _, err := testopenssl.Run(t, "pkcs12", "-in", p12, "-passin", "file:"+pw, "-noenc", "-out", out); err != nil {
		t.Fatal(err)
	}
	if err := testopenssl.KeyMatchesCert(t, out, out); err != nil {
		t.Error(err)
	}

	testwait.Eventually(t, func() bool {
		return counter(t, reg, "mutual_agent_file_writes_total", "result", "unwritable") == 1
	}, "mutual_agent_file_writes_total{result=\"unwritable\"} at 1")
	if !agentLog.Contains("no entry for the owner can be written") || !agentLog.Contains(pathEntry.ID) || !agentLog.Contains("unix:path:/usr/sbin/haproxy") {
		t.Errorf("no log line names the unwritable entry %s and its path selector:\n%s", pathEntry.ID, agentLog.String())
	}
	if _, err := os.Stat(filepath.Join(pathDir, "cert.pem")); err == nil {
		t.Error("the path-selected identity was written")
	}
}

// TestParseWriteSpecFormats: the format options, and what is refused.
func TestParseWriteSpecFormats(t *testing.T) {
	t.Parallel()
	w, err := agent.ParseWriteSpec(td + "/web=/d,format=pem,cert=tls.crt,key=tls.key,bundle=ca.crt")
	if err != nil || w.Format != "pem" || w.Names.Cert != "tls.crt" || w.Names.Key != "tls.key" || w.Names.Bundle != "ca.crt" {
		t.Errorf("Kubernetes names: %+v, %v", w, err)
	}
	w, err = agent.ParseWriteSpec(td + "/web=/d,format=pkcs12,password-file=/etc/pw,file=ks.p12,reload=true")
	if err != nil || w.Format != "pkcs12" || w.PasswordFile != "/etc/pw" || w.Names.File != "ks.p12" || w.Reload != "true" {
		t.Errorf("pkcs12: %+v, %v", w, err)
	}
	for in, want := range map[string]string{
		td + "/web=/d,format=jks":                     "jks",
		td + "/web=/d,format=pkcs12":                  "password-file",
		td + "/web=/d,password-file=/pw":              "password-file",
		td + "/web=/d,format=pkcs12,password-file=pw": "absolute",
		td + "/web=/d,cert=../etc/passwd":             "plain name",
		td + "/web=/d,key=.hidden":                    "plain name",
	} {
		if _, err := agent.ParseWriteSpec(in); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: err = %v, want one naming %q", in, err, want)
		}
	}
}
