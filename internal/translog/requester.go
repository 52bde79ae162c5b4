package translog

import "strings"

// Requester says who asked for an issuance, in the form the log and the CA's
// records store it: "token:ID" (a join token), "renew:SERIAL" (a renewal of
// the certificate with that serial), "entry:ID" (a registration entry, through
// a node) or "ca-WHAT" (the CA's own certificates: ca-init, ca-server,
// ca-admin). Make one with the constructors and read it with Kind and Ref,
// never by cutting the string; the encoding is fixed because entries
// already in logs are hashed with it.
type Requester string

// RequesterKind is how an issuance was asked for.
type RequesterKind string

// Requester kinds. RequestedByUnknown is a requester in none of the known
// forms (the monitor flags it).
const (
	RequestedByToken   RequesterKind = "token"
	RequestedByRenewal RequesterKind = "renew"
	RequestedByEntry   RequesterKind = "entry"
	RequestedByCA      RequesterKind = "ca"
	RequestedByUnknown RequesterKind = ""
)

// TokenRequester is an issuance by the join token with this ID.
func TokenRequester(tokenID string) Requester { return Requester("token:" + tokenID) }

// RenewalRequester is a renewal of the certificate with this serial
// (pki.FormatSerial form).
func RenewalRequester(serial string) Requester { return Requester("renew:" + serial) }

// EntryRequester is an issuance through the registration entry with this ID.
func EntryRequester(entryID string) Requester { return Requester("entry:" + entryID) }

// CARequester is one of the CA's own certificates, recorded by what made it
// ("init", "server", "admin").
func CARequester(what string) Requester { return Requester("ca-" + what) }

// Kind says how the issuance was asked for.
func (r Requester) Kind() RequesterKind {
	k, _ := r.split()
	return k
}

// Ref is what the kind names: the token or entry ID, the renewed serial, or
// what in the CA made it; for an unknown form, the whole requester.
func (r Requester) Ref() string {
	_, ref := r.split()
	return ref
}

func (r Requester) split() (RequesterKind, string) {
	s := string(r)
	if k, ref, ok := strings.Cut(s, ":"); ok {
		switch kind := RequesterKind(k); kind {
		case RequestedByToken, RequestedByRenewal, RequestedByEntry:
			return kind, ref
		}
	}
	if what, ok := strings.CutPrefix(s, "ca-"); ok {
		return RequestedByCA, what
	}
	return RequestedByUnknown, s
}

// String returns the stored form.
func (r Requester) String() string { return string(r) }
