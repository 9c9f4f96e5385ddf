package scope

import (
	"slices"
	"strings"
)

// Covers reports whether s allows every name that pattern, an allow pattern,
// could match. A deny pattern ("!x") only narrows what a holder may do and
// is always covered; an invalid pattern never is.
//
// The check is conservative: it answers true only when a single allow
// pattern of s is at least as wide as pattern (a literal is covered by
// itself or by a wildcard that matches it) and no deny pattern of s could
// refuse a name pattern matches. So {"a.*", "a.*.**"} does not cover "a.**",
// although together they allow the same names; a caller then asks for the
// narrower patterns.
func (s Set) Covers(pattern string) bool {
	if rest, deny := strings.CutPrefix(pattern, "!"); deny {
		_, err := parse(rest)
		return err == nil
	}
	p, err := parse(pattern)
	return err == nil && s.covers(p, nil)
}

// Uncovered returns the allow patterns of r, in r's order, that s does not
// cover (see [Set.Covers]), taking r's own deny patterns into account: a
// name that r denies need not be allowed by s, so {"**", "!admin.**"} covers
// r = {"**", "!admin.**"}. An empty result means that every name r allows, s
// allows too: a holder of s may hand r on without gaining anything.
func (s Set) Uncovered(r Set) []string {
	var out []string
	for _, src := range r.sources {
		if strings.HasPrefix(src, "!") {
			continue
		}
		p, err := parse(src)
		if err != nil || !s.covers(p, r.deny) {
			out = append(out, src)
		}
	}
	return out
}

// covers reports whether every name p matches, except those that a pattern
// of denied is at least as wide as a deny of s for, is allowed by s.
func (s Set) covers(p pattern, denied []pattern) bool {
	wide := false
	if !p.rest && !slices.Contains(p.segs, "*") {
		_, wide = s.exact[strings.Join(p.segs, ".")]
	}
	for i := 0; !wide && i < len(s.allow); i++ {
		wide = s.allow[i].contains(p)
	}
	if !wide {
		return false
	}
	for i := range s.deny {
		d := &s.deny[i]
		if !d.overlaps(p) {
			continue
		}
		// The names of d are off limits to the holder of s; the request
		// may still name p if it refuses at least all of them itself.
		if !slices.ContainsFunc(denied, func(e pattern) bool { return e.contains(*d) }) {
			return false
		}
	}
	return true
}

// contains reports whether a matches every name p matches.
func (a *pattern) contains(p pattern) bool {
	if len(p.segs) < len(a.segs) {
		return false
	}
	for i, seg := range a.segs {
		// A literal segment of a matches only that literal; a "*" of p
		// stands for names a does not match.
		if seg != "*" && seg != p.segs[i] {
			return false
		}
	}
	extra := len(p.segs) - len(a.segs)
	if a.rest {
		// a needs at least one more segment: p has one, or its own "**".
		return extra > 0 || p.rest
	}
	return extra == 0 && !p.rest
}

// overlaps reports whether some name matches both d and p.
func (d *pattern) overlaps(p pattern) bool {
	for i := range min(len(d.segs), len(p.segs)) {
		x, y := d.segs[i], p.segs[i]
		if x != "*" && y != "*" && x != y {
			return false
		}
	}
	switch {
	case len(d.segs) == len(p.segs):
		// Both exactly that long, or both at least one segment longer.
		return d.rest == p.rest
	case len(d.segs) < len(p.segs):
		return d.rest
	default:
		return p.rest
	}
}
