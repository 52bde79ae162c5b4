package server

import (
	"crypto/x509"
	"encoding/json"
	"net/http"
	"sync"

	"github.com/mutual-tls/mutual/internal/pki"
)

// caPEMs caches the PEM form of CA certificates (intermediates and roots),
// which every issuance answer carries: they change only on rotation, and a
// rotation brings new *x509.Certificate values, so the cache stays small.
var caPEMs sync.Map // *x509.Certificate → []byte

// caPEM returns the PEM encoding of CA certificates, each encoded once.
func caPEM(certs ...*x509.Certificate) []byte {
	var out []byte
	for _, c := range certs {
		v, ok := caPEMs.Load(c)
		if !ok {
			v, _ = caPEMs.LoadOrStore(c, pki.EncodeCertificates(c))
		}
		out = append(out, v.([]byte)...)
	}
	return out
}

// okIssued writes an issuance answer. It is compact JSON: the answer is
// read by programs (the agent, the client library), and indenting a
// certificate chain on the hot path costs a copy of it for nothing.
func okIssued(w http.ResponseWriter, v any) (int, error) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	json.NewEncoder(w).Encode(v)
	return http.StatusOK, nil
}
