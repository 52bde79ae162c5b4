package store

import (
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"testing"
)

// TestMigrationsNumberedOnce: each dialect's migrations are numbered 1, 2,
// 3... with no number taken twice (two branches each adding "the next"
// migration would otherwise both be skipped or both applied in an order
// that depends on their names) and the same names in both dialects.
func TestMigrationsNumberedOnce(t *testing.T) {
	names := map[string][]string{}
	for _, kind := range []string{"sqlite", "postgres"} {
		entries, err := fs.ReadDir(migrations, "migrations/"+kind)
		if err != nil {
			t.Fatal(err)
		}
		for i, e := range entries {
			v, err := strconv.Atoi(strings.SplitN(e.Name(), "_", 2)[0])
			if err != nil || v != i+1 {
				t.Errorf("%s migration %s: want number %04d (numbers must run 1, 2, 3... without repeats)", kind, e.Name(), i+1)
			}
			names[kind] = append(names[kind], e.Name())
		}
	}
	if fmt.Sprint(names["sqlite"]) != fmt.Sprint(names["postgres"]) {
		t.Errorf("the dialects' migrations differ:\nsqlite   %v\npostgres %v", names["sqlite"], names["postgres"])
	}
}
