// Package seal encrypts data to SPIFFE identities: a sealed file can be
// opened only by a service whose valid, unrevoked certificate matches the
// policy written in the file, because the key that decrypts it is released
// by a key-release service (mutual keys serve) that checks exactly that.
//
// # Format (version 1)
//
//	"MUTUAL-SEAL" | version (1 byte) | body length (uint16) | body
//	| key id length (uint8) | key id | wrapped key length (uint16) | wrapped key
//	| payload
//
// The body is JSON: the policy (SPIFFE ID patterns, roles, not-after) and a
// random 16-byte nonce. The body is the associated data of everything: the
// payload key is derived from the data key and the body's SHA-256
// (HKDF-SHA-256, salt the nonce), and the key-release service wraps the data
// key with the body's hash as its label, so changing one byte of the policy
// both stops the service from unwrapping and breaks the payload. The key id
// and wrapped key (the key slot) are outside the body, so a rotation of the
// key-encryption key rewrites them without touching the payload.
//
// The payload is age's STREAM construction: the plaintext is cut into
// chunks of ChunkSize bytes, each sealed with ChaCha20-Poly1305 under the
// payload key and a nonce made of an 11-byte big-endian chunk counter and a
// final-chunk flag byte. Only the last chunk may be shorter than ChunkSize
// and only the last carries the flag, so truncation, reordering, dropping or
// appending chunks all fail authentication. Reading and writing use one
// chunk of memory whatever the size.
//
// # Use
//
//	err := seal.Seal(ctx, dst, src, seal.Policy{IDs: []string{"spiffe://example.org/ns/prod/web"}}, keys)
//	err = seal.Unseal(ctx, dst, src, keys)
//
// where keys is a Wrapper or Unwrapper, normally a keyrelease client. A
// Reader returns the plaintext chunk by chunk as it authenticates; it
// returns io.EOF only after the final chunk authenticated, so a truncated
// file ends in an error, never in a clean end of data.
package seal
