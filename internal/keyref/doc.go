// Package keyref turns a key reference into a crypto.Signer: a CA key may be
// a passphrase-encrypted PEM file (what `mutual ca init` writes today) or a
// key pair inside a PKCS#11 token, named by an RFC 7512 URI.
//
//	/var/lib/mutual/ca/intermediate/key.pem
//	file:/var/lib/mutual/ca/intermediate/key.pem
//	pkcs11:token=mutual-ca;object=intermediate;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/mutual/pin
//
// Parse makes a Ref (it is the only way to make one, so a Ref is always
// valid); a Keyring opens Refs, sharing one logged-in PKCS#11 session pool
// per token, and makes new key pairs inside a token with Generate. A token
// key never leaves the token: the Signer asks the token to sign.
//
// The token PIN comes from a file (pin-source=file:/path) or from an
// environment variable the URI names (pin-source=env:NAME), never from the
// URI itself, so it cannot show in argv or process lists: pin-value is
// refused.
//
// PKCS#11 needs cgo. A build without cgo parses pkcs11: URIs but opening one
// fails with ErrNeedsCgo; file keys work in every build.
package keyref
