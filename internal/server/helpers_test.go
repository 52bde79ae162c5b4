package server_test

import (
	"net/url"
	"testing"

	"github.com/mutual-tls/mutual/internal/token"
)

func tokenParse(s string) (*token.Token, error) { return token.Parse(s) }

func mustURIs(t *testing.T, s ...string) []*url.URL {
	var out []*url.URL
	for _, v := range s {
		u, err := url.Parse(v)
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	return out
}
