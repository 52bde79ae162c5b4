package keyrelease_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/keyrelease"
	"github.com/mutual-tls/mutual/internal/pki"
	"github.com/mutual-tls/mutual/internal/revocation"
	"github.com/mutual-tls/mutual/internal/testca"
	"github.com/mutual-tls/mutual/internal/translog"
	"github.com/mutual-tls/mutual/seal"
)

var toWeb = seal.Policy{IDs: []string{"spiffe://example.org/ns/prod/web"}}

// refused checks that err is the key service's refusal with status and a
// message containing want.
func refused(t *testing.T, err error, status int, want string) {
	t.Helper()
	var re *keyrelease.RefusedError
	if !errors.As(err, &re) {
		t.Fatalf("error %v, want a refusal by the key service", err)
	}
	if re.Status != status || !strings.Contains(re.Message, want) {
		t.Fatalf("refusal %d %q, want %d containing %q", re.Status, re.Message, status, want)
	}
}

// TestKeyRelease attacks the key-release service with real mTLS on
// 127.0.0.1, a real CA and its revocation feed.
func TestKeyRelease(t *testing.T) {
	e := newEnv(t)
	webID := e.enroll(t, "spiffe://example.org/ns/prod/web")
	web := e.client(t, webID)
	api_ := e.client(t, e.enroll(t, "spiffe://example.org/ns/prod/api"))
	plain := []byte("the database password")
	sealed := sealTo(t, web, toWeb, plain)

	t.Run("web unseals", func(t *testing.T) {
		got, err := unseal(web, sealed)
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("unseal = %q, %v", got, err)
		}
		if r := e.lastRecord(t); r.Action != "unwrap" || r.Decision != keyrelease.Released || r.Caller != "spiffe://example.org/ns/prod/web" || r.File == "" || r.Serial == "" {
			t.Fatalf("audit record %+v, want web's release", r)
		}
	})

	t.Run("wrong identity", func(t *testing.T) {
		got, err := unseal(api_, sealed)
		refused(t, err, http.StatusForbidden, "matches none of")
		if len(got) != 0 {
			t.Fatalf("plaintext %q came out of a refusal", got)
		}
		if r := e.lastRecord(t); r.Decision != keyrelease.Refused || r.Caller != "spiffe://example.org/ns/prod/api" {
			t.Fatalf("audit record %+v, want api's refusal", r)
		}
	})

	t.Run("replayed unwrap request", func(t *testing.T) {
		// api sends exactly what web sent: the request proves nothing, the
		// connection's certificate does.
		h, _, err := seal.ParseHeader(sealed)
		if err != nil {
			t.Fatal(err)
		}
		_, err = api_.Unwrap(context.Background(), h)
		refused(t, err, http.StatusForbidden, "matches none of")
	})

	t.Run("edited policy", func(t *testing.T) {
		edited := bytes.Replace(sealed, []byte("ns/prod/web"), []byte("ns/prod/api"), 1)
		_, err := unseal(api_, edited)
		refused(t, err, http.StatusForbidden, "header or its policy was altered")
	})

	t.Run("forged key slot", func(t *testing.T) {
		h, _, _ := seal.ParseHeader(sealed)
		// A data key the attacker knows, wrapped under a key the attacker
		// made, labelled with the service's key id.
		forger, _ := rsa.GenerateKey(rand.Reader, 2048)
		sum := h.BodyHash()
		h.Slot.Wrapped, _ = rsa.EncryptOAEP(sha256.New(), rand.Reader, &forger.PublicKey, make([]byte, 32), sum[:])
		_, err := web.Unwrap(context.Background(), h)
		refused(t, err, http.StatusForbidden, "forged")
		h.Slot.KeyID = "rsa-oaep:0000000000000000"
		_, err = web.Unwrap(context.Background(), h)
		refused(t, err, http.StatusNotFound, "does not hold key")
	})

	t.Run("forged wrap requests", func(t *testing.T) {
		_, err := web.Wrap(context.Background(), []byte(`{"policy":{"ids":[]},"nonce":"AAAAAAAAAAAAAAAAAAAAAA=="}`), make([]byte, 32))
		refused(t, err, http.StatusBadRequest, "names nobody")
		other, _ := seal.NewHeader(seal.Policy{IDs: []string{"spiffe://other.org/web"}}, rand.Reader)
		_, err = web.Wrap(context.Background(), other.Body(), make([]byte, 32))
		refused(t, err, http.StatusBadRequest, "no bundle for")
		past, _ := seal.NewHeader(seal.Policy{IDs: toWeb.IDs, NotAfter: time.Now().Add(-time.Minute)}, rand.Reader)
		_, err = web.Wrap(context.Background(), past.Body(), make([]byte, 32))
		refused(t, err, http.StatusBadRequest, "give a --not-after in the future")
		ok, _ := seal.NewHeader(toWeb, rand.Reader)
		_, err = web.Wrap(context.Background(), ok.Body(), make([]byte, 7))
		refused(t, err, http.StatusBadRequest, "data key of 7 bytes")
	})

	t.Run("no client certificate", func(t *testing.T) {
		body, _ := json.Marshal(keyrelease.UnwrapRequest{Header: sealed[:200]})
		resp, err := e.plainTLS().Post(e.url+keyrelease.UnwrapPath, "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a caller without a certificate got %s", resp.Status)
		}
	})

	t.Run("another trust domain", func(t *testing.T) {
		other := testca.New(t, testca.WithTrustDomain("other.org")).Leaf(t, "spiffe://other.org/ns/prod/web")
		before := e.audit.Size()
		body, _ := json.Marshal(keyrelease.UnwrapRequest{Header: sealed[:200]})
		resp, err := e.plainTLS(other.TLSCertificate()).Post(e.url+keyrelease.UnwrapPath, "application/json", bytes.NewReader(body))
		if err == nil {
			resp.Body.Close()
			t.Fatalf("a certificate of another trust domain got %s", resp.Status)
		}
		waitFor(t, "the refused handshake in the audit log", func() bool { return e.audit.Size() > before })
		if r := e.lastRecord(t); r.Action != "connect" || r.Decision != keyrelease.Refused || r.Caller != "spiffe://other.org/ns/prod/web" {
			t.Fatalf("audit record %+v, want the refused handshake", r)
		}
	})

	t.Run("expired policy", func(t *testing.T) {
		p := seal.Policy{IDs: toWeb.IDs, NotAfter: time.Now().Add(5 * time.Minute)}
		s := sealTo(t, web, p, plain)
		if _, err := unseal(web, s); err != nil {
			t.Fatal(err)
		}
		e.advance(10 * time.Minute)
		defer e.advance(-10 * time.Minute)
		_, err := unseal(web, s)
		refused(t, err, http.StatusForbidden, "the policy expired")
	})

	t.Run("revoked identity", func(t *testing.T) {
		// The client keeps its connection: the check is per request.
		if _, err := unseal(web, sealed); err != nil {
			t.Fatal(err)
		}
		serial := pki.FormatSerial(webID.Leaf().SerialNumber)
		start := time.Now()
		if _, err := e.admin.Revoke(context.Background(), api.RevokeRequest{Serial: serial}); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "the revocation to reach the key service", func() bool { return e.watcher.Revoked(serial) })
		t.Logf("the revocation reached the key service %v after the admin's call", time.Since(start))
		_, err := unseal(web, sealed)
		refused(t, err, http.StatusForbidden, "revoked")
		if r := e.lastRecord(t); r.Decision != keyrelease.Refused || r.Serial != serial {
			t.Fatalf("audit record %+v, want the revoked serial refused", r)
		}
	})

	t.Run("audit log verifies", func(t *testing.T) {
		cp := e.checkpoint(t)
		for i := range cp.Size {
			rec, _ := e.audit.Record(i)
			p, err := e.audit.ProveRecord(i, cp.Size)
			if err != nil {
				t.Fatal(err)
			}
			if err := checkRecord(p, cp, i, rec); err != nil {
				t.Errorf("record %d: %v", i, err)
			}
		}
	})
}

// checkpoint fetches the audit log's checkpoint from the service and
// verifies it with the verifier key.
func (e *env) checkpoint(t *testing.T) *translog.Checkpoint {
	t.Helper()
	idc := e.keysID.TLSCertificate()
	resp, err := e.plainTLS(idc).Get(e.url + keyrelease.CheckpointPath)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var buf bytes.Buffer
	buf.ReadFrom(resp.Body)
	cp, err := translog.OpenCheckpoint(buf.Bytes(), e.signer.Verifier)
	if err != nil {
		t.Fatalf("checkpoint %q: %v", buf.Bytes(), err)
	}
	return cp
}

// TestFailClosedWithoutRevocation: no revocation source, no service; a
// watcher that does not know the status refuses every unwrap.
func TestFailClosedWithoutRevocation(t *testing.T) {
	e := newEnv(t)
	if _, err := keyrelease.New(keyrelease.Config{Keys: keyrelease.NewKeyring(nil0(t)), Bundle: e.keysSrc, Audit: e.audit}); err == nil || !strings.Contains(err.Error(), "revocation") {
		t.Fatalf("New without revocation = %v, want a refusal naming revocation", err)
	}
	web := e.enroll(t, "spiffe://example.org/ns/prod/web")
	sealed := sealTo(t, e.client(t, web), toWeb, []byte("x"))
	blind := e.startKeys(t, &revocation.Watcher{CAURLs: []string{e.caURL}, Source: e.keysSrc})
	_, err := unseal(e.clientOf(t, blind, web), sealed)
	refused(t, err, http.StatusForbidden, "revocation status unknown")
}

// TestRotation: data sealed before a rotation stays readable; rewrap moves
// it to the new key without touching the payload.
func TestRotation(t *testing.T) {
	e := newEnv(t)
	webID := e.enroll(t, "spiffe://example.org/ns/prod/web")
	old := sealTo(t, e.client(t, webID), toWeb, []byte("before"))
	newID, err := e.keys.Rotate()
	if err != nil {
		t.Fatal(err)
	}
	web := e.clientOf(t, e.startKeys(t, e.watcher), webID)
	if got, err := unseal(web, old); err != nil || string(got) != "before" {
		t.Fatalf("old file after rotation: %q, %v", got, err)
	}
	h, n, _ := seal.ParseHeader(old)
	if h.Slot.KeyID == newID {
		t.Fatal("the old file was sealed with the new key")
	}
	if h.Slot, err = web.Rewrap(context.Background(), h); err != nil {
		t.Fatal(err)
	}
	if h.Slot.KeyID != newID {
		t.Fatalf("rewrapped to %s, want %s", h.Slot.KeyID, newID)
	}
	hb, _ := h.Marshal()
	rewrapped := append(hb, old[n:]...)
	if got, err := unseal(web, rewrapped); err != nil || string(got) != "before" {
		t.Fatalf("rewrapped file: %q, %v", got, err)
	}
}

// nil0 is a throwaway KEK for constructor tests.
func nil0(t *testing.T) keyrelease.KEK {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	kek, err := keyrelease.NewDecrypterKEK(k)
	if err != nil {
		t.Fatal(err)
	}
	return kek
}

// TestRoles: a policy with roles admits only a matching identity that
// holds one of them (roles travel in the certificate's extension).
func TestRoles(t *testing.T) {
	e := newEnv(t)
	reader := e.client(t, e.enroll(t, "spiffe://example.org/ns/prod/web", "reader"))
	plain := e.client(t, e.enroll(t, "spiffe://example.org/ns/prod/web"))
	sealed := sealTo(t, reader, seal.Policy{IDs: []string{"spiffe://example.org/ns/prod/*"}, Roles: []string{"reader"}}, []byte("x"))
	if _, err := unseal(reader, sealed); err != nil {
		t.Fatal(err)
	}
	_, err := unseal(plain, sealed)
	refused(t, err, http.StatusForbidden, "holds none of the roles")
}
