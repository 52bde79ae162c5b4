//go:build !cgo

package keyref

import (
	"context"
	"errors"
	"strings"
	"testing"
)

func TestNoCgo(t *testing.T) {
	r, err := Parse("pkcs11:token=t;object=k?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=env:P")
	if err != nil {
		t.Fatal(err)
	}
	_, err = NewKeyring(Options{}).Signer(context.Background(), r)
	if !errors.Is(err, ErrNeedsCgo) || !strings.Contains(err.Error(), "PKCS#11 keys need the cgo build of mutual") {
		t.Fatalf("a cgo-less build gave %v, want ErrNeedsCgo", err)
	}
}
