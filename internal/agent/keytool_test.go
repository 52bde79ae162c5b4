package agent_test

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/agent"
	"github.com/mutual-tls/mutual/internal/testenv"
	"github.com/mutual-tls/mutual/internal/testwait"
)

// TestKeytoolReadsPKCS12: Java's keytool (Debian's default JRE) lists the
// PKCS#12 file the agent writes, with the password from the password
// file: one private key entry whose certificate names the workload's
// SPIFFE ID, followed by its intermediate.
func TestKeytoolReadsPKCS12(t *testing.T) {
	t.Parallel()
	keytool := need(t, "/usr/bin/keytool", "default-jre-headless")
	e := testenv.StartCA(t, testenv.Options{})
	id := td + "/ns/prod/java"
	entry(t, e, id, td+"/node/k1", 0, nil, fmt.Sprintf("unix:uid:%d", os.Getuid()))
	base := shortDir(t)
	pw := filepath.Join(base, "p12.pass")
	if err := os.WriteFile(pw, []byte("changeit-"+t.Name()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ws, err := agent.ParseWriteSpec(id + "=" + filepath.Join(base, "java") + ",format=pkcs12,file=keystore.p12,password-file=" + pw)
	if err != nil {
		t.Fatal(err)
	}
	nodeAgent(t, e, "k1", func(c *agent.Config) { c.Writes = []agent.WriteSpec{ws} })
	p12 := filepath.Join(base, "java", "keystore.p12")
	testwait.EventuallyNil(t, func() error { _, err := os.Stat(p12); return err }, p12)

	list := func(pass string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		out, err := exec.CommandContext(ctx, keytool, "-list", "-v", "-storetype", "PKCS12", "-keystore", p12, "-storepass:file", pass).CombinedOutput()
		return string(out), err
	}
	out, err := list(pw)
	if err != nil {
		t.Fatalf("keytool -list: %v\n%s", err, out)
	}
	for _, want := range []string{"Your keystore contains 1 entry", "Entry type: PrivateKeyEntry", "Certificate chain length: 2", "URIName: " + id} {
		if !strings.Contains(out, want) {
			t.Errorf("keytool -list does not say %q:\n%s", want, out)
		}
	}
	// The password protects it: keytool refuses another one.
	wrong := filepath.Join(base, "wrong.pass")
	if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, err := list(wrong); err == nil {
		t.Errorf("keytool read the keystore with a wrong password:\n%s", out)
	}
}
