package pki

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/x509"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"
	"unicode/utf8"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// The leaf encoder writes, with cryptobyte, the TBSCertificate that
// x509.CreateCertificate writes for a template made by Template, byte for
// byte (leafder_test.go holds it to that over every leaf kind and key
// type, and a fuzz target over names and times): crypto/x509 builds it by
// reflection, which cost an issuance some 35 µs of CPU and 190 allocations
// (BenchmarkIssueDER). Anything outside that shape goes through
// x509.CreateCertificate.

var (
	oidKeyUsage         = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage      = asn1.ObjectIdentifier{2, 5, 29, 37}
	oidBasicConstraints = asn1.ObjectIdentifier{2, 5, 29, 19}
	oidAuthorityKeyID   = asn1.ObjectIdentifier{2, 5, 29, 35}
	oidAuthorityInfo    = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 1, 1}
	oidSubjectAltName   = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidCRLDistribution  = asn1.ObjectIdentifier{2, 5, 29, 31}
	oidOCSP             = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 48, 1}
	oidServerAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 1}
	oidClientAuth       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 2}
	oidPublicKeyECDSA   = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidPublicKeyEd25519 = asn1.ObjectIdentifier{1, 3, 101, 112}
	// builtIn are the extensions crypto/x509 writes itself and leaves out
	// of ExtraExtensions' way: a template whose ExtraExtensions name one
	// is not the encoder's shape.
	builtIn = []asn1.ObjectIdentifier{
		oidKeyUsage, oidExtKeyUsage, oidBasicConstraints, oidAuthorityKeyID, oidAuthorityInfo, oidSubjectAltName,
		oidCRLDistribution, {2, 5, 29, 14}, {2, 5, 29, 32}, {2, 5, 29, 30},
	}
)

// leafSigner is how an issuer signs: crypto/x509's default algorithm for
// its key, and that algorithm's identifier in DER.
type leafSigner struct {
	alg   x509.SignatureAlgorithm
	hash  crypto.Hash
	algID []byte
}

// signerFor returns x509.CreateCertificate's default signature algorithm
// for a key whose public half is pub; ok is false for a key it does not
// cover.
func signerFor(pub crypto.PublicKey) (s leafSigner, ok bool) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		switch pub.Curve {
		case elliptic.P256():
			return sigECDSASHA256, true
		case elliptic.P384():
			return sigECDSASHA384, true
		case elliptic.P521():
			return sigECDSASHA512, true
		}
	case *rsa.PublicKey:
		return sigSHA256RSA, true
	case ed25519.PublicKey:
		return sigEd25519, true
	}
	return s, false
}

var (
	sigECDSASHA256 = newLeafSigner(x509.ECDSAWithSHA256, crypto.SHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}, false)
	sigECDSASHA384 = newLeafSigner(x509.ECDSAWithSHA384, crypto.SHA384, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}, false)
	sigECDSASHA512 = newLeafSigner(x509.ECDSAWithSHA512, crypto.SHA512, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}, false)
	sigSHA256RSA   = newLeafSigner(x509.SHA256WithRSA, crypto.SHA256, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}, true)
	sigEd25519     = newLeafSigner(x509.PureEd25519, 0, oidPublicKeyEd25519, false)
)

// newLeafSigner is alg, whose digest is hash, with its AlgorithmIdentifier
// (the OID, and NULL parameters when null).
func newLeafSigner(alg x509.SignatureAlgorithm, hash crypto.Hash, oid asn1.ObjectIdentifier, null bool) leafSigner {
	var b cryptobyte.Builder
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1ObjectIdentifier(oid)
		if null {
			b.AddASN1NULL()
		}
	})
	return leafSigner{alg: alg, hash: hash, algID: b.BytesOrPanic()}
}

// leafTBS is the DER of the TBSCertificate x509.CreateCertificate makes of
// tmpl, a template as Template made it with its subject in RawSubject, for
// pub under the issuer cert. ok is false when tmpl or pub is outside the
// shape it writes; the caller then asks crypto/x509.
func leafTBS(tmpl, issuer *x509.Certificate, pub crypto.PublicKey, algID []byte) (tbs []byte, ok bool) {
	spki, pubAlgID, key, ok := publicKeyInfo(pub)
	if !ok || !leafShape(tmpl) {
		return nil, false
	}
	subject := tmpl.RawSubject
	var aki []byte
	if !bytes.Equal(issuer.RawSubject, subject) {
		aki = issuer.SubjectKeyId
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, 768))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) { b.AddASN1Int64(2) })
		b.AddASN1BigInt(tmpl.SerialNumber)
		b.AddBytes(algID)
		b.AddBytes(issuer.RawSubject)
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			addTime(b, tmpl.NotBefore)
			addTime(b, tmpl.NotAfter)
		})
		b.AddBytes(subject)
		addPublicKeyInfo(b, spki, pubAlgID, key)
		b.AddASN1(cbasn1.Tag(3).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) { addLeafExtensions(b, tmpl, aki, bytes.Equal(subject, []byte{0x30, 0})) })
		})
	})
	tbs, err := b.Bytes()
	return tbs, err == nil
}

// leafShape reports whether tmpl sets only what Template sets, with the
// values it sets, so that leafTBS writes all of it.
func leafShape(t *x509.Certificate) bool {
	if t.SerialNumber == nil || t.SerialNumber.Sign() <= 0 || len(t.RawSubject) == 0 || t.SignatureAlgorithm != 0 ||
		t.KeyUsage != x509.KeyUsageDigitalSignature || !slices.Equal(t.ExtKeyUsage, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}) ||
		len(t.UnknownExtKeyUsage) > 0 || !t.BasicConstraintsValid || t.IsCA || t.MaxPathLen != 0 || t.MaxPathLenZero ||
		len(t.SubjectKeyId) > 0 || len(t.AuthorityKeyId) > 0 || len(t.IssuingCertificateURL) > 0 || len(t.EmailAddresses) > 0 ||
		len(t.URIs) != 1 || len(t.PolicyIdentifiers) > 0 || len(t.Policies) > 0 ||
		len(t.PermittedDNSDomains)+len(t.ExcludedDNSDomains)+len(t.PermittedIPRanges)+len(t.ExcludedIPRanges)+
			len(t.PermittedEmailAddresses)+len(t.ExcludedEmailAddresses)+len(t.PermittedURIDomains)+len(t.ExcludedURIDomains) > 0 {
		return false
	}
	// crypto/x509 refuses names that are not IA5 strings (its error is
	// the one to give).
	for _, n := range t.DNSNames {
		if !ascii(n) {
			return false
		}
	}
	if !ascii(t.URIs[0].String()) {
		return false
	}
	for _, e := range t.ExtraExtensions {
		for _, oid := range builtIn {
			if e.Id.Equal(oid) {
				return false
			}
		}
	}
	return true
}

func ascii(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// addTime adds t as encoding/asn1 marshals a time.Time: UTCTime from 1950
// to 2049, GeneralizedTime outside, in UTC, to the second.
func addTime(b *cryptobyte.Builder, t time.Time) {
	t = t.UTC().Truncate(time.Second)
	if y := t.Year(); y < 1950 || y >= 2050 {
		b.AddASN1GeneralizedTime(t)
	} else {
		b.AddASN1UTCTime(t)
	}
}

// publicKeyInfo returns how pub's SubjectPublicKeyInfo is written as
// crypto/x509 marshals it: whole in spki (RSA), or as the DER of its
// AlgorithmIdentifier and the key that goes in its BIT STRING. Not
// x509.MarshalPKIXPublicKey for every key: it also marshals keys that
// cannot sign (X25519), which must reach crypto/x509's refusal
// (TestIssueRefuses/key_that_cannot_sign), and costs 20 allocations and
// 3-4 µs more per leaf (BenchmarkLeafTBS).
func publicKeyInfo(pub crypto.PublicKey) (spki, algID, key []byte, ok bool) {
	switch pub := pub.(type) {
	case *ecdsa.PublicKey:
		algID, ok = ecAlgIDs[pub.Curve]
		if !ok {
			return nil, nil, nil, false
		}
		key, err := pub.Bytes()
		return nil, algID, key, err == nil
	case ed25519.PublicKey:
		return nil, ed25519AlgID, pub, true
	case *rsa.PublicKey:
		der, err := x509.MarshalPKIXPublicKey(pub)
		return der, nil, nil, err == nil
	}
	return nil, nil, nil, false
}

// addPublicKeyInfo adds the SubjectPublicKeyInfo publicKeyInfo described.
func addPublicKeyInfo(b *cryptobyte.Builder, spki, algID, key []byte) {
	if spki != nil {
		b.AddBytes(spki)
		return
	}
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(algID)
		b.AddASN1BitString(key)
	})
}

// The public key AlgorithmIdentifiers crypto/x509 writes: id-ecPublicKey
// with the named curve, id-Ed25519 without parameters.
var (
	ecAlgIDs = map[elliptic.Curve][]byte{
		elliptic.P256(): publicKeyAlgID(oidPublicKeyECDSA, asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}),
		elliptic.P384(): publicKeyAlgID(oidPublicKeyECDSA, asn1.ObjectIdentifier{1, 3, 132, 0, 34}),
		elliptic.P521(): publicKeyAlgID(oidPublicKeyECDSA, asn1.ObjectIdentifier{1, 3, 132, 0, 35}),
	}
	ed25519AlgID = publicKeyAlgID(oidPublicKeyEd25519, nil)
)

// publicKeyAlgID is the AlgorithmIdentifier of oid with the OID param as
// its parameters, if any.
func publicKeyAlgID(oid, param asn1.ObjectIdentifier) []byte {
	return marshalDER(func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			b.AddASN1ObjectIdentifier(oid)
			if param != nil {
				b.AddASN1ObjectIdentifier(param)
			}
		})
	})
}

// The DER that is the same in every leaf, marshalled once.
var (
	// leafUsage is the leaf's first three extensions: keyUsage
	// digitalSignature (critical), extKeyUsage serverAuth and clientAuth,
	// basicConstraints not a CA (critical).
	leafUsage = marshalDER(func(b *cryptobyte.Builder) {
		addExtension(b, oidKeyUsage, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes([]byte{7, 0x80}) }) // digitalSignature
		})
		addExtension(b, oidExtKeyUsage, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1ObjectIdentifier(oidServerAuth)
				b.AddASN1ObjectIdentifier(oidClientAuth)
			})
		})
		addExtension(b, oidBasicConstraints, true, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(*cryptobyte.Builder) {}) // not a CA, no path length
		})
	})
	derAuthorityKeyID  = marshalDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidAuthorityKeyID) })
	derAuthorityInfo   = marshalDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidAuthorityInfo) })
	derOCSP            = marshalDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidOCSP) })
	derSubjectAltName  = marshalDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidSubjectAltName) })
	derCRLDistribution = marshalDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oidCRLDistribution) })
)

// marshalDER is what f adds to an empty builder.
func marshalDER(f cryptobyte.BuilderContinuation) []byte {
	var b cryptobyte.Builder
	f(&b)
	return b.BytesOrPanic()
}

// addLeafExtensions adds a leaf's extensions in crypto/x509's order: key
// usage, extended key usage, basic constraints, authority key ID, OCSP,
// subject alternative names (critical when the subject is empty), CRL
// distribution points, then tmpl's ExtraExtensions as they are.
func addLeafExtensions(b *cryptobyte.Builder, tmpl *x509.Certificate, aki []byte, emptySubject bool) {
	b.AddBytes(leafUsage)
	if len(aki) > 0 {
		addDERExtension(b, derAuthorityKeyID, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				b.AddASN1(cbasn1.Tag(0).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(aki) })
			})
		})
	}
	if len(tmpl.OCSPServer) > 0 {
		addDERExtension(b, derAuthorityInfo, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.OCSPServer {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddBytes(derOCSP)
						b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
					})
				}
			})
		})
	}
	addDERExtension(b, derSubjectAltName, emptySubject, func(b *cryptobyte.Builder) {
		b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
			for _, n := range tmpl.DNSNames {
				b.AddASN1(cbasn1.Tag(2).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(n)) })
			}
			for _, ip := range tmpl.IPAddresses {
				if ip4 := ip.To4(); ip4 != nil {
					ip = ip4
				}
				b.AddASN1(cbasn1.Tag(7).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes(ip) })
			}
			b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(tmpl.URIs[0].String())) })
		})
	})
	if len(tmpl.CRLDistributionPoints) > 0 {
		addDERExtension(b, derCRLDistribution, false, func(b *cryptobyte.Builder) {
			b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
				for _, u := range tmpl.CRLDistributionPoints {
					b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
						b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
							b.AddASN1(cbasn1.Tag(0).Constructed().ContextSpecific(), func(b *cryptobyte.Builder) {
								b.AddASN1(cbasn1.Tag(6).ContextSpecific(), func(b *cryptobyte.Builder) { b.AddBytes([]byte(u)) })
							})
						})
					})
				}
			})
		})
	}
	for _, e := range tmpl.ExtraExtensions {
		addExtension(b, e.Id, e.Critical, func(b *cryptobyte.Builder) { b.AddBytes(e.Value) })
	}
}

// addExtension adds one Extension: its OID, BOOLEAN TRUE when critical,
// and value's output in an OCTET STRING.
func addExtension(b *cryptobyte.Builder, oid asn1.ObjectIdentifier, critical bool, value cryptobyte.BuilderContinuation) {
	addDERExtension(b, marshalDER(func(b *cryptobyte.Builder) { b.AddASN1ObjectIdentifier(oid) }), critical, value)
}

// addDERExtension is addExtension with the OID already in DER.
func addDERExtension(b *cryptobyte.Builder, oid []byte, critical bool, value cryptobyte.BuilderContinuation) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(oid)
		if critical {
			b.AddASN1Boolean(true)
		}
		b.AddASN1(cbasn1.OCTET_STRING, value)
	})
}

// errSignatureCheck is signTBS's refusal of a signature that does not
// verify.
var errSignatureCheck = errors.New("the signature the issuing key returned does not verify")

// signTBS signs tbs with key as x509.CreateCertificate would, checks the
// signature with the issuer certificate's public key (a faulty signer, an
// HSM's included, must not get a certificate out that does not verify)
// and returns the Certificate's DER.
func signTBS(r io.Reader, tbs []byte, s leafSigner, key crypto.Signer, issuer *x509.Certificate) ([]byte, error) {
	sig, err := crypto.SignMessage(key, r, tbs, s.hash)
	if err != nil {
		return nil, err
	}
	if err := issuer.CheckSignature(s.alg, tbs, sig); err != nil {
		return nil, fmt.Errorf("%w with the issuing certificate %q (is the issuing key, or its HSM, the certificate's?): %w", errSignatureCheck, issuer.Subject.CommonName, err)
	}
	b := cryptobyte.NewBuilder(make([]byte, 0, len(tbs)+len(s.algID)+len(sig)+16))
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddBytes(tbs)
		b.AddBytes(s.algID)
		b.AddASN1BitString(sig)
	})
	return b.Bytes()
}
