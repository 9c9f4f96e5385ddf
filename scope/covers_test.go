package scope_test

import (
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge/scope"
)

func TestCovers(t *testing.T) {
	cases := []struct {
		held    []string
		pattern string
		want    bool
	}{
		{[]string{"**"}, "chat.send", true},
		{[]string{"**"}, "**", true},
		{[]string{"**"}, "admin:write", true},
		{[]string{"chat.send"}, "chat.send", true},
		{[]string{"chat.send"}, "chat.read", false},
		{[]string{"chat.send"}, "chat.*", false},
		{[]string{"chat.*"}, "chat.send", true},
		{[]string{"chat.*"}, "chat.*", true},
		{[]string{"chat.*"}, "chat.**", false},
		{[]string{"chat.*"}, "*.send", false},
		{[]string{"chat.**"}, "chat.room.send", true},
		{[]string{"chat.**"}, "chat.*", true},
		{[]string{"chat.**"}, "chat.*.**", true},
		{[]string{"chat.**"}, "chat", false},
		{[]string{"*.send"}, "chat.send", true},
		{[]string{"*.send"}, "*.send", true},
		{[]string{"*.send"}, "*.*", false},
		{[]string{"*"}, "**", false},
		{[]string{"*"}, "ws:connect", true},
		// A deny of the holder blocks every pattern that could reach it.
		{[]string{"**", "!admin.**"}, "chat.*", true},
		{[]string{"**", "!admin.**"}, "admin.kick", false},
		{[]string{"**", "!admin.**"}, "*.kick", false},
		{[]string{"**", "!admin.**"}, "**", false},
		{[]string{"**", "!admin.**"}, "admin", true},
		{[]string{"chat.*", "!chat.send"}, "chat.read", true},
		{[]string{"chat.*", "!chat.send"}, "chat.*", false},
		// Conservative: two patterns that together allow a.** do not cover it.
		{[]string{"a.*", "a.*.**"}, "a.**", false},
		// Denies are always covered; invalid patterns never are.
		{nil, "!anything", true},
		{[]string{"**"}, "a*", false},
		{[]string{"**"}, "", false},
		{[]string{"**"}, "!a..b", false},
		{nil, "a", false},
	}
	for _, c := range cases {
		s := scope.MustCompile(c.held...)
		if got := s.Covers(c.pattern); got != c.want {
			t.Errorf("%q.Covers(%q) = %v, want %v", c.held, c.pattern, got, c.want)
		}
	}
}

func TestUncoveredHonoursRequestedDenies(t *testing.T) {
	held := scope.MustCompile("**", "!admin:read", "!admin:write")
	for _, c := range []struct {
		requested []string
		want      []string
	}{
		{[]string{"**", "!admin:read", "!admin:write"}, nil},
		{[]string{"**", "!admin:read"}, []string{"**"}},
		{[]string{"chat.**", "ws:connect"}, nil},
		{[]string{"chat.**", "admin:write"}, []string{"admin:write"}},
		// A deny at least as wide as the holder's counts too.
		{[]string{"*", "!*"}, nil},
		{nil, nil},
	} {
		r := scope.MustCompile(c.requested...)
		if got := held.Uncovered(r); !slices.Equal(got, c.want) {
			t.Errorf("Uncovered(%q) = %q, want %q", c.requested, got, c.want)
		}
	}
}

// Pattern and name universes for the exhaustive checks: patterns use the
// segments a and b, names also c, which no literal names.
func universe() (patterns, names []string) {
	var grow func(prefix []string, depth int, segs []string, out *[]string)
	grow = func(prefix []string, depth int, segs []string, out *[]string) {
		if len(prefix) > 0 {
			*out = append(*out, strings.Join(prefix, "."))
		}
		if depth == 0 {
			return
		}
		for _, s := range segs {
			grow(append(slices.Clone(prefix), s), depth-1, segs, out)
		}
	}
	var bases []string
	grow(nil, 3, []string{"a", "b", "*"}, &bases)
	patterns = append(patterns, "**")
	for _, b := range bases {
		patterns = append(patterns, b, b+".**")
	}
	grow(nil, 5, []string{"a", "b", "c"}, &names)
	return patterns, names
}

// For one held and one requested allow pattern, Covers is exact: it says yes
// exactly when every name of the universe the request allows is allowed.
func TestCoversExactForSinglePatterns(t *testing.T) {
	patterns, names := universe()
	for _, held := range patterns {
		s := scope.MustCompile(held)
		for _, p := range patterns {
			r := scope.MustCompile(p)
			want := true
			for _, n := range names {
				if r.Allows(n) && !s.Allows(n) {
					want = false
					break
				}
			}
			if got := s.Covers(p); got != want {
				t.Fatalf("%q.Covers(%q) = %v, but the names say %v", held, p, got, want)
			}
		}
	}
}

// Whatever the sets, an empty Uncovered means the request allows no name the
// holder does not: the check may refuse too much, never too little.
func TestUncoveredIsSound(t *testing.T) {
	patterns, names := universe()
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(allows, denies int) scope.Set {
		var ps []string
		for range allows {
			ps = append(ps, patterns[rng.IntN(len(patterns))])
		}
		for range denies {
			ps = append(ps, "!"+patterns[rng.IntN(len(patterns))])
		}
		return scope.MustCompile(ps...)
	}
	covered := 0
	for range 20000 {
		s := pick(1+rng.IntN(3), rng.IntN(3))
		r := pick(1+rng.IntN(2), rng.IntN(3))
		if len(s.Uncovered(r)) > 0 {
			continue
		}
		covered++
		for _, n := range names {
			if r.Allows(n) && !s.Allows(n) {
				t.Fatalf("%q said to cover %q, but %q allows %q", s.Patterns(), r.Patterns(), r.Patterns(), n)
			}
		}
	}
	if covered < 500 {
		t.Fatalf("only %d covered pairs drawn: the check exercises too little", covered)
	}
}
