package api_test

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"strconv"
	"strings"
	"testing"
)

// Every error code the API declares is documented in README.md's table with
// its status, and no two constants share a spelling, so a client can rely on
// the list.
func TestEveryErrorCodeIsDocumentedOnce(t *testing.T) {
	f, err := parser.ParseFile(token.NewFileSet(), "codes.go", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]string{}
	for _, d := range f.Decls {
		g, ok := d.(*ast.GenDecl)
		if !ok || g.Tok != token.CONST {
			continue
		}
		for _, s := range g.Specs {
			vs := s.(*ast.ValueSpec)
			for i, name := range vs.Names {
				code, err := strconv.Unquote(vs.Values[i].(*ast.BasicLit).Value)
				if err != nil {
					t.Fatalf("%s: %v", name.Name, err)
				}
				if other, dup := seen[code]; dup {
					t.Errorf("%s and %s both spell %q", other, name.Name, code)
				}
				seen[code] = name.Name
				if !strings.Contains(string(readme), "| `"+code+"` | ") {
					t.Errorf("%s (%q) is missing from the error code table in README.md", name.Name, code)
				}
			}
		}
	}
	if len(seen) < 30 {
		t.Fatalf("read only %d codes from codes.go", len(seen))
	}
}
