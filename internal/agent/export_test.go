package agent

import (
	"context"
	"log/slog"

	"github.com/mutual-tls/mutual/identity"
)

// WriteIdentityFiles runs one --write pass for id, as the agent does after
// a rotation (for tests that race it).
func WriteIdentityFiles(w WriteSpec, id *identity.Identity, caURLs []string) error {
	if err := w.resolve(); err != nil {
		return err
	}
	a := &Agent{log: slog.New(slog.DiscardHandler), caURLs: caURLs}
	return a.write(context.Background(), &w, id)
}
