package main

import (
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
)

// envPrefix prefixes the environment variable of every flag: --redis-url is
// SESSIONBRIDGE_REDIS_URL.
const envPrefix = "SESSIONBRIDGE_"

// envName returns the environment variable of a flag.
func envName(flagName string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
}

// parse parses args into fs, letting flags and positional arguments mix
// ("user add alice --bcrypt"), then fills every flag not given on the command
// line from its environment variable: a flag wins over the environment. It
// returns the positional arguments. When only names flags, only those are
// read from the environment.
func parse(fs *flag.FlagSet, args []string, only ...string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			break
		}
		if args[0] == "--" {
			pos = append(pos, args[1:]...)
			break
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
	// Keyed by value, not name, so that an alias given on the command line
	// (--dev for --insecure-cookies) also keeps the other name's variable
	// from overriding it.
	set := map[flag.Value]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Value] = true })
	var err error
	fs.VisitAll(func(f *flag.Flag) {
		if set[f.Value] || err != nil || (len(only) > 0 && !slices.Contains(only, f.Name)) {
			return
		}
		v, ok := os.LookupEnv(envName(f.Name))
		if !ok {
			return
		}
		if l, isList := f.Value.(*listFlag); isList {
			for _, item := range splitList(v) {
				if e := l.Set(item); e != nil {
					err = fmt.Errorf("%s: %w", envName(f.Name), e)
				}
			}
			return
		}
		if e := f.Value.Set(v); e != nil {
			// The value may be a secret: name the variable, not its value.
			err = fmt.Errorf("invalid value in %s: %w", envName(f.Name), e)
		}
	})
	return pos, err
}

// listFlag is a repeatable flag: each use adds a value.
type listFlag []string

func (l *listFlag) String() string { return strings.Join(*l, ",") }

func (l *listFlag) Set(v string) error {
	if v == "" {
		return fmt.Errorf("empty value")
	}
	*l = append(*l, v)
	return nil
}

// splitList splits a comma-separated list, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, item := range strings.Split(s, ",") {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}
