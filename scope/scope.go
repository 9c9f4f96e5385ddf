// Package scope compiles the scopes a principal holds into a [Set] that
// answers, for a message type, whether the principal may send it.
//
// A scope is a pattern over names split on ".": a literal segment matches
// itself, "*" matches exactly one segment, and "**" as the last segment
// matches one or more segments (so "**" alone matches every name). A leading
// "!" makes the pattern a deny. A name is allowed when at least one allow
// pattern matches it and no deny pattern does: deny always wins and the order
// of the patterns never matters.
//
// Compiling happens once, when a principal authenticates; [Set.Allows] then
// costs nanoseconds and never allocates, so it can run on every frame.
package scope

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// MaxPatterns and MaxPatternLen bound what [Compile] accepts, so a credential
// cannot make every frame check walk an unbounded list.
const (
	MaxPatterns   = 64
	MaxPatternLen = 128
)

// ErrInvalid is wrapped by every error [Compile] returns.
var ErrInvalid = errors.New("invalid scope")

// Set is a compiled list of scope patterns. The zero Set allows nothing.
// A Set is immutable and safe for concurrent use.
type Set struct {
	exact   map[string]struct{} // allow patterns without wildcards
	allow   []pattern           // allow patterns with wildcards
	deny    []pattern
	sources []string
}

type pattern struct {
	segs []string // "*" is one segment; a trailing "**" is cut off into rest
	rest bool     // the pattern ended in "**"
}

// Compile checks and compiles patterns. It refuses, wrapping [ErrInvalid], a
// pattern that is empty, longer than [MaxPatternLen], has an empty segment, a
// character other than ASCII letters, digits, "_", "-" and ":" in a literal
// segment, a wildcard inside a segment ("a*"), or "**" anywhere but last:
// such patterns could never match what their author meant. Duplicates are
// kept once.
func Compile(patterns ...string) (Set, error) {
	if len(patterns) > MaxPatterns {
		return Set{}, fmt.Errorf("%w: %d patterns, at most %d", ErrInvalid, len(patterns), MaxPatterns)
	}
	var s Set
	for _, raw := range patterns {
		if slices.Contains(s.sources, raw) {
			continue
		}
		deny := strings.HasPrefix(raw, "!")
		p, err := parse(strings.TrimPrefix(raw, "!"))
		if err != nil {
			return Set{}, fmt.Errorf("%w %q: %s", ErrInvalid, raw, err)
		}
		s.sources = append(s.sources, raw)
		switch {
		case deny:
			s.deny = append(s.deny, p)
		case !p.rest && !slices.Contains(p.segs, "*"):
			if s.exact == nil {
				s.exact = make(map[string]struct{})
			}
			s.exact[strings.TrimPrefix(raw, "!")] = struct{}{}
		default:
			s.allow = append(s.allow, p)
		}
	}
	return s, nil
}

// MustCompile is [Compile] for patterns known to be valid, such as
// constants; it panics on an invalid one.
func MustCompile(patterns ...string) Set {
	s, err := Compile(patterns...)
	if err != nil {
		panic(err)
	}
	return s
}

func parse(p string) (pattern, error) {
	if p == "" {
		return pattern{}, errors.New("empty pattern")
	}
	if len(p) > MaxPatternLen {
		return pattern{}, fmt.Errorf("longer than %d bytes", MaxPatternLen)
	}
	segs := strings.Split(p, ".")
	for i, seg := range segs {
		switch {
		case seg == "":
			return pattern{}, errors.New("empty segment")
		case seg == "**" && i != len(segs)-1:
			return pattern{}, errors.New(`"**" is allowed only as the last segment`)
		case seg == "**", seg == "*":
		case strings.Contains(seg, "*"):
			return pattern{}, errors.New(`"*" must be a whole segment`)
		case !validName(seg):
			return pattern{}, fmt.Errorf("segment %q: only letters, digits, '_', '-' and ':'", seg)
		}
	}
	if segs[len(segs)-1] == "**" {
		return pattern{segs: segs[:len(segs)-1], rest: true}, nil
	}
	return pattern{segs: segs}, nil
}

func validName(seg string) bool {
	for i := 0; i < len(seg); i++ {
		c := seg[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '_' || c == '-' || c == ':') {
			return false
		}
	}
	return true
}

// Allows reports whether name is allowed: some allow pattern matches it and
// no deny pattern does. It does not allocate.
func (s Set) Allows(name string) bool {
	if name == "" {
		return false
	}
	for i := range s.deny {
		if s.deny[i].match(name) {
			return false
		}
	}
	if _, ok := s.exact[name]; ok {
		return true
	}
	for i := range s.allow {
		if s.allow[i].match(name) {
			return true
		}
	}
	return false
}

// Patterns returns the patterns the Set was compiled from, without
// duplicates, in their first order.
func (s Set) Patterns() []string { return slices.Clone(s.sources) }

// Empty reports whether the Set allows nothing at all because it holds no
// allow pattern.
func (s Set) Empty() bool { return len(s.exact) == 0 && len(s.allow) == 0 }

// match walks name segment by segment without splitting it.
func (p *pattern) match(name string) bool {
	for _, seg := range p.segs {
		if name == "" {
			return false // the name ran out before the pattern
		}
		head, tail, more := strings.Cut(name, ".")
		if head == "" || (more && tail == "") || (seg != "*" && seg != head) {
			return false
		}
		name = tail // "" once the last segment is consumed
	}
	if p.rest {
		return wellFormed(name)
	}
	return name == ""
}

// wellFormed reports whether name is one or more non-empty segments.
func wellFormed(name string) bool {
	return name != "" && name[0] != '.' && name[len(name)-1] != '.' && !strings.Contains(name, "..")
}
