package softhsmtest

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// Removable is a token whose removal a test controls: its Module is a
// PKCS#11 module, built with gcc for the test, that forwards every call to
// SoftHSM2 but answers CKR_DEVICE_REMOVED to opening a session and to
// signing while the token is removed, as a module does when its device is
// unplugged. A signature under way when it is removed is finished inside
// SoftHSM2 and its result dropped, so that the session is usable again
// when the token returns.
type Removable struct {
	Token
	flag string
}

// shimSource is the forwarding module. CK_FUNCTION_LIST is a version
// followed by 68 function pointers in the standard's order; the wrapped
// ones are C_OpenSession (12), C_SignInit (42) and C_Sign (43).
const shimSource = `
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef unsigned long ul;
typedef struct { unsigned char major, minor; } version;
typedef struct { version v; void *f[68]; } list;

#define CKR_DEVICE_REMOVED 0x32UL
#define CKR_GENERAL_ERROR 0x05UL

static list wrapped;
static list *real;

static int removed(void) { return access(FLAG, F_OK) == 0; }

static ul open_session(ul slot, ul flags, void *app, void *notify, ul *h) {
	if (removed()) return CKR_DEVICE_REMOVED;
	return ((ul (*)(ul, ul, void *, void *, ul *))real->f[12])(slot, flags, app, notify, h);
}

static ul sign_init(ul h, void *mech, ul key) {
	if (removed()) return CKR_DEVICE_REMOVED;
	return ((ul (*)(ul, void *, ul))real->f[42])(h, mech, key);
}

static ul sign(ul h, unsigned char *data, ul n, unsigned char *sig, ul *siglen) {
	ul (*f)(ul, unsigned char *, ul, unsigned char *, ul *) = real->f[43];
	if (removed()) {
		ul len = 0;
		if (f(h, data, n, NULL, &len) == 0) {
			unsigned char *buf = malloc(len ? len : 1);
			f(h, data, n, buf, &len);
			free(buf);
		}
		return CKR_DEVICE_REMOVED;
	}
	return f(h, data, n, sig, siglen);
}

ul C_GetFunctionList(list **out) {
	if (!real) {
		void *lib = dlopen(TARGET, RTLD_NOW | RTLD_LOCAL);
		if (!lib) return CKR_GENERAL_ERROR;
		ul (*get)(list **) = (ul (*)(list **))dlsym(lib, "C_GetFunctionList");
		list *l;
		if (!get || get(&l) != 0) return CKR_GENERAL_ERROR;
		memcpy(&wrapped, l, sizeof wrapped);
		wrapped.f[3] = (void *)C_GetFunctionList;
		wrapped.f[12] = (void *)open_session;
		wrapped.f[42] = (void *)sign_init;
		wrapped.f[43] = (void *)sign;
		real = l;
	}
	*out = &wrapped;
	return 0;
}
`

// NewRemovable builds the forwarding module for tok (with gcc; missing, the
// test is skipped, or fails under CI=1) and returns tok as seen through it,
// present.
func NewRemovable(tb testing.TB, tok Token) *Removable {
	tb.Helper()
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		skipOrFail(tb, "gcc is missing (it builds the test's PKCS#11 module); apt-get install gcc")
	}
	dir := tb.TempDir()
	src, lib, flag := filepath.Join(dir, "removable.c"), filepath.Join(dir, "removable.so"), filepath.Join(dir, "removed")
	if err := os.WriteFile(src, []byte(shimSource), 0o600); err != nil {
		tb.Fatal(err)
	}
	out, err := exec.Command(gcc, "-shared", "-fPIC", "-O1", "-o", lib, src, "-ldl",
		"-DTARGET="+strconv.Quote(tok.Module), "-DFLAG="+strconv.Quote(flag)).CombinedOutput()
	if err != nil {
		tb.Fatalf("build the removable-token module: %v\n%s", err, out)
	}
	r := &Removable{Token: tok, flag: flag}
	r.Module = lib
	return r
}

// Remove makes the module answer as if the token were unplugged.
func (r *Removable) Remove(tb testing.TB) {
	tb.Helper()
	if err := os.WriteFile(r.flag, nil, 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Insert brings the token back.
func (r *Removable) Insert(tb testing.TB) {
	tb.Helper()
	if err := os.Remove(r.flag); err != nil && !errors.Is(err, fs.ErrNotExist) {
		tb.Fatal(fmt.Errorf("insert the token: %w", err))
	}
}
