package keyrelease

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/mutual-tls/mutual/seal"
	"github.com/mutual-tls/mutual/tlsconfig"
)

// Client talks to a key-release service over mTLS, as the identity of its
// source; it is a seal.Wrapper and a seal.Unwrapper.
type Client struct {
	url string
	hc  *http.Client
}

// NewClient makes a client of the service at url (https://HOST:PORT),
// presenting svid's certificate and accepting only a server whose
// certificate verifies against bundle with the SPIFFE ID server.
func NewClient(url string, svid x509svid.Source, bundle x509bundle.Source, server spiffeid.ID) (*Client, error) {
	if !strings.HasPrefix(url, "https://") {
		return nil, fmt.Errorf("key service URL %q: use https://HOST:PORT", url)
	}
	cfg, err := tlsconfig.ClientConfig(svid, bundle, tlsconfig.AuthorizeID(server), "", tlsconfig.WithTrustDomain(server.TrustDomain()))
	if err != nil {
		return nil, err
	}
	tr := &http.Transport{TLSClientConfig: cfg, ForceAttemptHTTP2: true, MaxIdleConnsPerHost: 4}
	return &Client{url: strings.TrimSuffix(url, "/"), hc: &http.Client{Transport: tr, Timeout: 30 * time.Second}}, nil
}

// DefaultServerID is the key service's SPIFFE ID in trust domain td.
func DefaultServerID(td spiffeid.TrustDomain) spiffeid.ID {
	id, _ := spiffeid.FromPath(td, ServerPath)
	return id
}

// RefusedError is the service's answer to a refused request.
type RefusedError struct {
	Status  int
	Message string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the key service refused (%d %s): %s", e.Status, http.StatusText(e.Status), e.Message)
}

// Wrap implements seal.Wrapper.
func (c *Client) Wrap(ctx context.Context, body, dataKey []byte) (seal.KeySlot, error) {
	var out WrapResponse
	if err := c.post(ctx, WrapPath, WrapRequest{Body: body, DataKey: dataKey}, &out); err != nil {
		return seal.KeySlot{}, err
	}
	return seal.KeySlot{KeyID: out.KeyID, Wrapped: out.Wrapped}, nil
}

// Unwrap implements seal.Unwrapper.
func (c *Client) Unwrap(ctx context.Context, h *seal.Header) ([]byte, error) {
	hb, err := h.Marshal()
	if err != nil {
		return nil, err
	}
	var out UnwrapResponse
	if err := c.post(ctx, UnwrapPath, UnwrapRequest{Header: hb}, &out); err != nil {
		return nil, err
	}
	return out.DataKey, nil
}

// Rewrap returns h's data key wrapped under the service's current KEK.
func (c *Client) Rewrap(ctx context.Context, h *seal.Header) (seal.KeySlot, error) {
	hb, err := h.Marshal()
	if err != nil {
		return seal.KeySlot{}, err
	}
	var out WrapResponse
	if err := c.post(ctx, RewrapPath, UnwrapRequest{Header: hb}, &out); err != nil {
		return seal.KeySlot{}, err
	}
	return seal.KeySlot{KeyID: out.KeyID, Wrapped: out.Wrapped}, nil
}

// CloseIdleConnections closes the client's idle connections.
func (c *Client) CloseIdleConnections() { c.hc.CloseIdleConnections() }

func (c *Client) post(ctx context.Context, path string, in, out any) error {
	b, err := json.Marshal(in)
	if err != nil {
		return err
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, c.url+path, bytes.NewReader(b))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.hc.Do(req)
	if err != nil {
		return fmt.Errorf("key service %s: %w", c.url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxRequest))
	if err != nil {
		return fmt.Errorf("key service %s: %w", c.url, err)
	}
	if resp.StatusCode != http.StatusOK {
		var e ErrorResponse
		if json.Unmarshal(body, &e) != nil || e.Error == "" {
			e.Error = strings.TrimSpace(string(body))
		}
		return &RefusedError{Status: resp.StatusCode, Message: e.Error}
	}
	if err := json.Unmarshal(body, out); err != nil {
		return fmt.Errorf("key service %s: answer: %w", c.url, err)
	}
	return nil
}
