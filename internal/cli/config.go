package cli

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// configFlag names the YAML file a daemon reads its flags from.
const configFlag = "config"

// fromConfigAnnotation marks a flag that a --config file set.
const fromConfigAnnotation = "mutual_from_config"

// configKeys are the keys a daemon's --config file accepts: the names of
// its flags, so that a flag and its key can never drift apart. --config
// itself and --help have none.
func configKeys(c *cobra.Command) []string {
	var keys []string
	c.Flags().VisitAll(func(f *pflag.Flag) {
		if f.Name != configFlag && f.Name != "help" {
			keys = append(keys, f.Name)
		}
	})
	sort.Strings(keys)
	return keys
}

// addConfigFlag gives daemon command c a --config flag: before c runs, the
// file's keys set the flags that the command line did not.
func addConfigFlag(c *cobra.Command) {
	var path string
	c.Flags().StringVar(&path, configFlag, "", "YAML `FILE` of settings: one key per flag, named as the flag (e.g. listen: \":8443\"); flags on the command line override it")
	run := c.RunE
	c.RunE = func(cmd *cobra.Command, args []string) error {
		if path != "" {
			if err := applyConfigFile(cmd, path); err != nil {
				return err
			}
		}
		return run(cmd, args)
	}
}

// applyConfigFile sets c's flags from the YAML mapping in path, skipping
// those given on the command line.
func applyConfigFile(c *cobra.Command, path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return flagError(configFlag, "%v", err)
	}
	return applyConfig(c, path, data)
}

// applyConfig sets c's flags from data, the contents of the file named
// path. An unknown key or a value of the wrong type is an error naming the
// file, the line and the key.
func applyConfig(c *cobra.Command, path string, data []byte) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil // an empty file sets nothing
		}
		return fmt.Errorf("%s: %w", path, err)
	}
	if len(doc.Content) == 0 {
		return nil
	}
	m := doc.Content[0]
	if m.Kind != yaml.MappingNode {
		return fmt.Errorf("%s:%d: want a mapping of flag names to values (e.g. `listen: :8443`)", path, m.Line)
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		where := fmt.Sprintf("%s:%d", path, k.Line)
		f := c.Flags().Lookup(k.Value)
		if f == nil || k.Value == configFlag || k.Value == "help" {
			return fmt.Errorf("%s: unknown key %q for `%s` (keys are its flag names: %s)", where, k.Value, c.CommandPath(), strings.Join(configKeys(c), ", "))
		}
		if seen[k.Value] {
			return fmt.Errorf("%s: key %q is given twice", where, k.Value)
		}
		seen[k.Value] = true
		if f.Changed {
			continue // the command line wins
		}
		if err := setFlag(f, v); err != nil {
			return fmt.Errorf("%s: key %q: %w", where, k.Value, err)
		}
		if f.Annotations == nil {
			f.Annotations = map[string][]string{}
		}
		f.Annotations[fromConfigAnnotation] = []string{path}
	}
	return nil
}

// setFlag sets f from a YAML value of the flag's type.
func setFlag(f *pflag.Flag, v *yaml.Node) error {
	if sv, ok := f.Value.(pflag.SliceValue); ok {
		var list []string
		if v.Kind == yaml.ScalarNode {
			list = []string{v.Value}
		} else if err := v.Decode(&list); err != nil {
			return fmt.Errorf("want a list of strings: %w", err)
		}
		if err := sv.Replace(list); err != nil {
			return err
		}
		f.Changed = true
		return nil
	}
	if v.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a single %s value, not a list or mapping", f.Value.Type())
	}
	var s string
	switch t := f.Value.Type(); t {
	case "bool":
		var b bool
		if err := v.Decode(&b); err != nil {
			return fmt.Errorf("want true or false, not %q", v.Value)
		}
		s = strconv.FormatBool(b)
	case "int":
		var n int
		if err := v.Decode(&n); err != nil {
			return fmt.Errorf("want an integer, not %q", v.Value)
		}
		s = strconv.Itoa(n)
	case "duration":
		if _, err := time.ParseDuration(v.Value); err != nil {
			return fmt.Errorf("want a duration such as 30s or 5m, not %q", v.Value)
		}
		s = v.Value
	case "string":
		if v.Tag == "!!bool" {
			return fmt.Errorf("want a string, not %q (quote it)", v.Value)
		}
		s = v.Value
	default:
		s = v.Value
	}
	if err := f.Value.Set(s); err != nil {
		return fmt.Errorf("%q: %w", v.Value, err)
	}
	f.Changed = true
	return nil
}
