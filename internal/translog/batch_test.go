package translog_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/store"
	"github.com/mutual-tls/mutual/internal/translog"
)

// TestBatchedIssuanceWithRefusals: issuances committed together (group
// commit) with refusals among them (a used token, a duplicate serial) leave
// one consistent log: every stored certificate's entry at its index, no
// entry for what was refused, and a tree an outside auditor verifies.
func TestBatchedIssuanceWithRefusals(t *testing.T) {
	ctx := context.Background()
	e := startCA(t, "")
	existing := e.issueMany(t, 8)
	used := e.token(t, "spiffe://example.org/ns/prod/once", api.TokenRequest{})
	if _, err := clientRequest(used.Token); err != nil {
		t.Fatal(err)
	}
	var fresh []*api.TokenResponse
	for i := 0; i < 16; i++ {
		fresh = append(fresh, e.token(t, fmt.Sprintf("spiffe://example.org/ns/batch/t%d", i), api.TokenRequest{}))
	}

	// Everything that may fail the test is made here, not in the goroutines.
	const workers, rounds = 16, 8
	csrs := make([][]byte, workers*rounds)
	for i := range csrs {
		csrs[i] = newCSR(t)
	}
	dups := make([]*x509.Certificate, workers*rounds)
	for w := 0; w < workers; w++ {
		for i := 0; i < rounds; i++ {
			if (w+i)%4 == 2 {
				dups[w*rounds+i] = e.Leaf(t, "spiffe://example.org/ns/batch/dup").Leaf()
			}
		}
	}

	var mu sync.Mutex
	var issued []*x509.Certificate
	uses := map[int]int{}
	var wg sync.WaitGroup
	errc := make(chan error, workers*rounds)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				k := w*rounds + i
				switch (w + i) % 4 {
				case 0: // a valid renewal
					is, err := e.Authority(t).Renew(ctx, e.peer.Leaf(), csrs[k], 0)
					if err != nil {
						errc <- err
						continue
					}
					cert, err := is.Certificate()
					if err != nil {
						errc <- err
						continue
					}
					mu.Lock()
					issued = append(issued, cert)
					mu.Unlock()
				case 1: // a used token: refused, in the same batch as others
					if _, err := e.Authority(t).Enroll(ctx, used.Token, csrs[k], 0); err == nil {
						errc <- errors.New("a used token enrolled")
					}
				case 2: // a duplicate serial, with an entry of its own: refused
					dup, now := dups[k], time.Now()
					err := e.Store(t).RecordIssuance(ctx, &store.Certificate{
						Serial: serialOf(existing[k%len(existing)]), SPIFFEID: "spiffe://example.org/ns/batch/dup",
						NotBefore: dup.NotBefore, NotAfter: dup.NotAfter, IssuedAt: now, DER: dup.Raw, RequestedBy: "renew:1",
						LogEntry: translog.Entry{Certificate: dup.Raw, RequestedBy: "renew:1", IssuedAt: now}.Marshal(),
					}, "", now)
					if !errors.Is(err, store.ErrAlreadyExists) {
						errc <- fmt.Errorf("duplicate serial: %v, want ErrAlreadyExists", err)
					}
				case 3: // a fresh token: the first use issues, a second is refused
					is, err := e.Authority(t).Enroll(ctx, fresh[w].Token, csrs[k], 0)
					var cert *x509.Certificate
					if err == nil {
						if cert, err = is.Certificate(); err != nil {
							errc <- err
						}
					}
					mu.Lock()
					if err == nil {
						issued = append(issued, cert)
						uses[w]++
					}
					mu.Unlock()
				}
			}
		}(w)
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		t.Error(err)
	}
	for w, n := range uses {
		if n > 1 {
			t.Errorf("token %d enrolled %d times", w, n)
		}
	}

	a := newAuditor(t, e.HTTPURL, e.verifierKey)
	cp := a.waitCheckpoint(t, e.logSize(t))
	entries, err := a.entries(cp)
	if err != nil {
		t.Fatalf("the auditor: %v", err)
	}
	for _, c := range issued {
		idx, err := findCertificate(entries, c)
		if err != nil {
			t.Errorf("issued %x: %v", c.SerialNumber, err)
			continue
		}
		if err := a.proveInclusion(cp, idx, entries[idx]); err != nil {
			t.Error(err)
		}
		if got := e.entryIndex(t, c); got != idx {
			t.Errorf("certificate %x: stored log_index %d, entry at %d", c.SerialNumber, got, idx)
		}
	}
	for _, dup := range dups {
		if dup == nil {
			continue
		}
		if i, err := findCertificate(entries, dup); err == nil {
			t.Errorf("entry %d logs a certificate whose recording was refused", i)
		}
	}
	certs, err := e.Store(t).ListCertificates(ctx, store.CertificateFilter{Limit: 100000})
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(certs)) != cp.tree.N {
		t.Errorf("%d certificates stored, %d log entries", len(certs), cp.tree.N)
	}
}
