//go:build cgo

package keyref

import (
	"crypto"
	"crypto/ed25519"
	"encoding/asn1"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/miekg/pkcs11"
)

// crypto11 holds ECDSA and RSA keys only; Ed25519 keys (the issuance log's)
// go through github.com/miekg/pkcs11 directly. PKCS#11 3.0 values, which
// miekg/pkcs11 v1.1 does not name.
const (
	ckkECEdwards           = 0x40
	ckmECEdwardsKeyPairGen = 0x1055
	ckmEdDSA               = 0x1057
)

// ed25519Params is CKA_EC_PARAMS of an Ed25519 key: the OID id-Ed25519
// (1.3.101.112), DER.
var ed25519Params = []byte{0x06, 0x03, 0x2b, 0x65, 0x70}

// edSession is a session of its own on a token crypto11 opened (and logged
// in: the login is the application's, shared by every session), for the
// Ed25519 calls crypto11 cannot make. It shares crypto11's initialisation
// of the module and never finalises it.
type edSession struct {
	p       *pkcs11.Ctx
	mu      sync.Mutex // one operation at a time on the session
	session pkcs11.SessionHandle
}

// edwards returns t's Ed25519 session, opening it on first use.
func (t *token) edwards(u PKCS11URI) (*edSession, error) {
	t.edMu.Lock()
	defer t.edMu.Unlock()
	if t.ed != nil {
		return t.ed, nil
	}
	p := pkcs11.New(u.ModulePath)
	if p == nil {
		return nil, fmt.Errorf("load the PKCS#11 module %s for Ed25519 keys", u.ModulePath)
	}
	if err := p.Initialize(); err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		p.Destroy()
		return nil, fmt.Errorf("initialise %s for Ed25519 keys: %w", u.ModulePath, err)
	}
	slot, err := findSlot(p, u)
	if err == nil {
		var s pkcs11.SessionHandle
		if s, err = p.OpenSession(slot, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION); err == nil {
			t.ed = &edSession{p: p, session: s}
			return t.ed, nil
		}
	}
	p.Destroy()
	return nil, fmt.Errorf("open a session on %s for Ed25519 keys: %w", t.where, err)
}

// findSlot is the slot of the token u names (label, serial or slot id).
func findSlot(p *pkcs11.Ctx, u PKCS11URI) (uint, error) {
	slots, err := p.GetSlotList(true)
	if err != nil {
		return 0, err
	}
	for _, s := range slots {
		if u.Slot != nil {
			if int(s) == *u.Slot {
				return s, nil
			}
			continue
		}
		info, err := p.GetTokenInfo(s)
		if err != nil {
			continue
		}
		if (u.Token != "" && info.Label == u.Token) || (u.Serial != "" && info.SerialNumber == u.Serial) {
			return s, nil
		}
	}
	return 0, ErrNoToken
}

// close ends the session and unloads this handle of the module (crypto11
// finalises it).
func (e *edSession) close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	err := e.p.CloseSession(e.session)
	e.p.Destroy()
	return err
}

// objects are the handles of the objects of class with u's label and id.
func (e *edSession) objects(u PKCS11URI, class uint) ([]pkcs11.ObjectHandle, error) {
	tmpl := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class)}
	if u.Object != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object))
	}
	if len(u.ID) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, u.ID))
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.p.FindObjectsInit(e.session, tmpl); err != nil {
		return nil, err
	}
	defer e.p.FindObjectsFinal(e.session)
	var out []pkcs11.ObjectHandle
	for {
		hs, _, err := e.p.FindObjects(e.session, 16)
		if err != nil {
			return nil, err
		}
		if len(hs) == 0 {
			return out, nil
		}
		out = append(out, hs...)
	}
}

// attr reads one attribute of object h.
func (e *edSession) attr(h pkcs11.ObjectHandle, typ uint) ([]byte, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	as, err := e.p.GetAttributeValue(e.session, h, []*pkcs11.Attribute{pkcs11.NewAttribute(typ, nil)})
	if err != nil {
		return nil, err
	}
	return as[0].Value, nil
}

// isEdwards says whether the private key h is an Ed25519 (EC Edwards) key.
func (e *edSession) isEdwards(h pkcs11.ObjectHandle) bool {
	v, err := e.attr(h, pkcs11.CKA_KEY_TYPE)
	if err != nil || len(v) == 0 {
		return false
	}
	var kt uint64
	for i := len(v) - 1; i >= 0; i-- { // CK_ULONG, host byte order (little-endian here)
		kt = kt<<8 | uint64(v[i])
	}
	return kt == ckkECEdwards
}

// findEd25519 returns the Ed25519 key pair u names, or nil when u names no
// Ed25519 private key.
func (t *token) findEd25519(u PKCS11URI) (crypto.Signer, error) {
	e, err := t.edwards(u)
	if err != nil {
		return nil, err
	}
	privs, err := e.objects(u, pkcs11.CKO_PRIVATE_KEY)
	if err != nil {
		return nil, fmt.Errorf("look for %s: %w", u.Where(), err)
	}
	if len(privs) != 1 || !e.isEdwards(privs[0]) {
		return nil, nil
	}
	pubs, err := e.objects(u, pkcs11.CKO_PUBLIC_KEY)
	if err != nil || len(pubs) != 1 {
		return nil, fmt.Errorf("%s: the Ed25519 private key has %d public key objects beside it (%v); it needs exactly one", u.Where(), len(pubs), err)
	}
	return e.signer(u, privs[0], pubs[0])
}

// signer is the Ed25519 key pair priv, pub.
func (e *edSession) signer(u PKCS11URI, priv, pub pkcs11.ObjectHandle) (crypto.Signer, error) {
	point, err := e.attr(pub, pkcs11.CKA_EC_POINT)
	if err != nil {
		return nil, fmt.Errorf("read the public key of %s: %w", u.Where(), err)
	}
	// CKA_EC_POINT is the DER OCTET STRING of the 32-byte key (some
	// tokens give the bare 32 bytes).
	raw := point
	var inner []byte
	if rest, err := asn1.Unmarshal(point, &inner); err == nil && len(rest) == 0 {
		raw = inner
	}
	if len(raw) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%s: the public key is %d bytes, not an Ed25519 key", u.Where(), len(raw))
	}
	return &edSigner{s: e, priv: priv, pub: ed25519.PublicKey(raw), where: u.Where()}, nil
}

// generateEd25519 makes a new non-extractable Ed25519 key pair labelled
// u.Object (and id), refusing a label or id that is taken.
func (t *token) generateEd25519(u PKCS11URI) (crypto.Signer, error) {
	e, err := t.edwards(u)
	if err != nil {
		return nil, err
	}
	id, err := newKeyID(u, func(id, label []byte) (int, error) {
		hs, err := e.objects(PKCS11URI{Object: string(label), ID: id}, pkcs11.CKO_PRIVATE_KEY)
		return len(hs), err
	})
	if err != nil {
		return nil, err
	}
	common := func(class uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, ckkECEdwards),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, u.Object),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
	}
	pubT := append(common(pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, ed25519Params))
	privT := append(common(pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false))
	e.mu.Lock()
	pub, priv, err := e.p.GenerateKeyPair(e.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmECEdwardsKeyPairGen, nil)}, pubT, privT)
	e.mu.Unlock()
	if err != nil {
		if errors.Is(err, pkcs11.Error(pkcs11.CKR_MECHANISM_INVALID)) {
			return nil, fmt.Errorf("generate an Ed25519 key %s: the token does not support Ed25519 (CKM_EC_EDWARDS_KEY_PAIR_GEN: %w); use SoftHSM2 2.6 or later or another token with EdDSA, or keep the log key in its file", u.Where(), err)
		}
		return nil, fmt.Errorf("generate an Ed25519 key %s: %w", u.Where(), err)
	}
	return e.signer(u, priv, pub)
}

// edSigner is an Ed25519 key pair in a token: it signs messages (pure
// Ed25519, CKM_EDDSA) inside the token.
type edSigner struct {
	s     *edSession
	priv  pkcs11.ObjectHandle
	pub   ed25519.PublicKey
	where string
}

// Public returns the key's ed25519.PublicKey.
func (k *edSigner) Public() crypto.PublicKey { return k.pub }

// Sign signs msg itself (Ed25519 hashes internally: opts must say
// crypto.Hash(0)); the private key never leaves the token.
func (k *edSigner) Sign(_ io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts != nil && opts.HashFunc() != 0 {
		return nil, fmt.Errorf("sign with %s: an Ed25519 key signs the message itself (pure Ed25519), not a %v digest", k.where, opts.HashFunc())
	}
	k.s.mu.Lock()
	defer k.s.mu.Unlock()
	if err := k.s.p.SignInit(k.s.session, []*pkcs11.Mechanism{pkcs11.NewMechanism(ckmEdDSA, nil)}, k.priv); err != nil {
		return nil, fmt.Errorf("sign with %s: %w", k.where, err)
	}
	sig, err := k.s.p.Sign(k.s.session, msg)
	if err != nil {
		return nil, fmt.Errorf("sign with %s: %w", k.where, err)
	}
	return sig, nil
}
