package scope_test

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge/scope"
)

func TestAllows(t *testing.T) {
	cases := []struct {
		patterns []string
		allowed  []string
		refused  []string
	}{
		{[]string{"session.get"}, []string{"session.get"}, []string{"session", "session.update", "session.get.x", "x.session.get"}},
		{[]string{"chat.*"}, []string{"chat.send", "chat.read"}, []string{"chat", "chat.room.send", "chatx.send"}},
		{[]string{"*.get"}, []string{"session.get", "user.get"}, []string{"get", "a.b.get"}},
		{[]string{"chat.**"}, []string{"chat.send", "chat.room.send", "chat.a.b.c.d"}, []string{"chat", "chatroom.send", "other.send"}},
		{[]string{"**"}, []string{"a", "a.b", "ws:connect", "x.y.z"}, []string{""}},
		{[]string{"**", "!admin.**"}, []string{"session.get", "admin"}, []string{"admin.delete", "admin.a.b"}},
		// Deny wins whatever the order.
		{[]string{"!chat.send", "chat.*"}, []string{"chat.read"}, []string{"chat.send"}},
		{[]string{"chat.*", "!chat.send"}, []string{"chat.read"}, []string{"chat.send"}},
		{[]string{"chat.send", "!chat.*"}, nil, []string{"chat.send", "chat.read"}},
		{[]string{"!*"}, nil, []string{"a", "a.b"}},
		{[]string{"ws:connect", "admin:read"}, []string{"ws:connect", "admin:read"}, []string{"admin:write", "ws"}},
		{nil, nil, []string{"a", "session.get"}},
		// Malformed names never match a wildcard.
		{[]string{"**"}, nil, []string{".", "a.", ".a", "a..b"}},
		{[]string{"a.*"}, nil, []string{"a.", "a..", "a.b."}},
	}
	for _, c := range cases {
		s, err := scope.Compile(c.patterns...)
		if err != nil {
			t.Fatalf("Compile(%q): %v", c.patterns, err)
		}
		for _, n := range c.allowed {
			if !s.Allows(n) {
				t.Errorf("%q should allow %q", c.patterns, n)
			}
		}
		for _, n := range c.refused {
			if s.Allows(n) {
				t.Errorf("%q should refuse %q", c.patterns, n)
			}
		}
	}
}

func TestZeroSetAllowsNothing(t *testing.T) {
	var s scope.Set
	if s.Allows("ping") || s.Allows("a") || !s.Empty() {
		t.Fatal("the zero Set must allow nothing")
	}
	if d := scope.MustCompile("!a"); !d.Empty() || d.Allows("b") {
		t.Fatal("a Set of denies alone allows nothing")
	}
}

func TestCompileRefuses(t *testing.T) {
	bad := []string{
		"", "!", ".", "a.", ".a", "a..b", "**.a", "a.**.b", "a*", "*a", "a.b*", "***",
		"a b", "é", "a/b", "!!a", "a\x00", strings.Repeat("a", scope.MaxPatternLen+1),
	}
	for _, p := range bad {
		if _, err := scope.Compile("ok", p); !errors.Is(err, scope.ErrInvalid) {
			t.Errorf("Compile(%q) = %v, want ErrInvalid", p, err)
		}
	}
	many := make([]string, scope.MaxPatterns+1)
	for i := range many {
		many[i] = fmt.Sprintf("t%d", i)
	}
	if _, err := scope.Compile(many...); !errors.Is(err, scope.ErrInvalid) {
		t.Errorf("Compile of %d patterns = %v, want ErrInvalid", len(many), err)
	}
	if _, err := scope.Compile(many[:scope.MaxPatterns]...); err != nil {
		t.Errorf("Compile of %d patterns: %v", scope.MaxPatterns, err)
	}
}

func TestPatternsKeepsOrderWithoutDuplicates(t *testing.T) {
	s := scope.MustCompile("b.*", "!c", "a", "b.*", "a")
	if got, want := s.Patterns(), []string{"b.*", "!c", "a"}; !slices.Equal(got, want) {
		t.Fatalf("Patterns() = %q, want %q", got, want)
	}
}

func TestAllowsDoesNotAllocate(t *testing.T) {
	s := scope.MustCompile("ws:connect", "session.*", "chat.**", "!chat.admin.**", "x.y.z")
	names := []string{"session.get", "chat.room.send", "chat.admin.kick", "x.y.z", "nope.nope"}
	allocs := testing.AllocsPerRun(1000, func() {
		for _, n := range names {
			s.Allows(n)
		}
	})
	if allocs != 0 {
		t.Fatalf("Allows allocates %.1f times per run", allocs)
	}
}

func FuzzCompileAllows(f *testing.F) {
	f.Add("chat.**", "chat.a.b")
	f.Add("!*", "a")
	f.Add("*.x", "a.x")
	f.Fuzz(func(t *testing.T, pattern, name string) {
		s, err := scope.Compile(pattern)
		if err != nil {
			return
		}
		allowed := s.Allows(name)
		if strings.HasPrefix(pattern, "!") && allowed {
			t.Fatalf("deny-only %q allowed %q", pattern, name)
		}
		// A literal pattern allows exactly itself.
		if !strings.ContainsAny(pattern, "*!") && allowed != (name == pattern) {
			t.Fatalf("literal %q vs %q: allowed=%v", pattern, name, allowed)
		}
		// Adding a deny of the same pattern always refuses what it matched.
		both := scope.MustCompile(pattern, "!"+strings.TrimPrefix(pattern, "!"))
		if both.Allows(name) {
			t.Fatalf("%q and its deny allowed %q", pattern, name)
		}
	})
}

func BenchmarkAllows(b *testing.B) {
	s := scope.MustCompile("ws:connect", "session.*", "chat.**", "!chat.admin.**")
	b.Run("exact", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Allows("ws:connect")
		}
	})
	b.Run("wildcard", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Allows("chat.room.send")
		}
	})
	b.Run("denied", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			s.Allows("chat.admin.kick")
		}
	})
}
