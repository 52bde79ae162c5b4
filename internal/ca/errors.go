package ca

import (
	"errors"
	"fmt"

	"github.com/mutual-tls/mutual/internal/api"
	"github.com/mutual-tls/mutual/internal/policy"
	"github.com/mutual-tls/mutual/internal/store"
)

// Kind sorts failures by what the caller can do about them. The API edge maps
// each kind to one HTTP status; the domain never names a status.
type Kind int

// Failure kinds.
const (
	// KindInvalid: the request itself is wrong (a bad CSR, a policy refusal).
	KindInvalid Kind = iota + 1
	// KindUnauthenticated: the credential (a join token) is not accepted.
	KindUnauthenticated
	// KindForbidden: the caller is known but may not do this.
	KindForbidden
	// KindNotFound: the thing named does not exist here.
	KindNotFound
	// KindUnavailable: the CA cannot serve right now (its store is down); retry.
	KindUnavailable
	// KindDamaged: the CA's store is damaged or was replaced; retrying does
	// not help, the operator restores it from backup.
	KindDamaged
)

// Error is a failure of an Authority operation.
type Error struct {
	Kind Kind
	// Code is a stable machine-readable name, one of the api.Code* constants
	// (api.CodeTokenUsed, api.CodeWeakKey, ...).
	Code string
	// Msg says what went wrong and how to fix it, in one sentence.
	Msg string
	// Err is the underlying cause, if any.
	Err error
}

func (e *Error) Error() string { return e.Msg }

// Unwrap returns the cause.
func (e *Error) Unwrap() error { return e.Err }

func newErr(k Kind, code string, err error, format string, a ...any) *Error {
	return &Error{Kind: k, Code: code, Msg: fmt.Sprintf(format, a...), Err: err}
}

// classify turns store and policy errors into an *Error.
func classify(err error) error {
	if err == nil {
		return nil
	}
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	var r *policy.RefusedError
	if errors.As(err, &r) {
		return &Error{Kind: KindInvalid, Code: string(r.Code), Msg: r.Reason, Err: err}
	}
	switch {
	case errors.Is(err, store.ErrTokenUsed):
		return newErr(KindUnauthenticated, api.CodeTokenUsed, err, "the join token was already used (%v); ask an operator for a new one", err)
	case errors.Is(err, store.ErrTokenExpired):
		return newErr(KindUnauthenticated, api.CodeTokenExpired, err, "the join token has expired (%v); ask an operator for a new one", err)
	case errors.Is(err, store.ErrRevoked):
		return newErr(KindForbidden, api.CodeCertRevoked, err, "refused: %v; enroll again with a new join token", err)
	case errors.Is(err, store.ErrNotGranted):
		return newErr(KindForbidden, api.CodeEntryNotGranted, err, "refused: %v", err)
	case errors.Is(err, store.ErrNotFound):
		return newErr(KindNotFound, api.CodeNotFound, err, "%v", err)
	case store.IsDamage(err):
		return newErr(KindDamaged, api.CodeStoreDamaged, err, "the CA's store is damaged (%v); the operator must restore it from backup", err)
	}
	// The cause (a database address, user, port) goes to the CA's log, not
	// into an answer that anonymous callers read.
	return newErr(KindUnavailable, api.CodeStoreUnavailable, err, "the CA's store is unavailable; retry later (the CA's log says why)")
}
