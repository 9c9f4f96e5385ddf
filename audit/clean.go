package audit

import (
	"encoding/base64"
	"strings"
	"unicode/utf8"

	"github.com/sessionbridge/sessionbridge"
)

// MaxValueLen is the most bytes of a value Clean keeps, before the "…" it
// appends to a cut value.
const MaxValueLen = 512

// Redacted replaces a value, or the part of it, that looks like a credential.
const Redacted = "[REDACTED]"

// minBearerLen is the shortest word after "Bearer" that is redacted.
const minBearerLen = 16

// secretLen is the length of a session token's secret half: 32 bytes in
// unpadded base64url.
const secretLen = 43

// Clean returns v made safe for a log line: every credential-shaped part (a
// session token, a bare token secret, a JWT, a word of 16 or more characters
// after "Bearer") is replaced by [REDACTED]; invalid UTF-8 becomes U+FFFD;
// control characters, Unicode line separators and bidirectional overrides are
// written as Go-style escapes (\n, \r, \t, \x1b, \u2028), so no value can
// break a line or disguise itself; and the result is cut to MaxValueLen bytes
// plus "…".
func Clean(v string) string {
	// Look at a bounded prefix only: nothing past it survives the cut, and a
	// hostile megabyte must cost no more than a short value.
	const scan = 4 * MaxValueLen
	cut := false
	if len(v) > scan {
		v, cut = v[:scan], true
	}
	v = redact(v)
	v = escape(v)
	if len(v) > MaxValueLen {
		n := MaxValueLen
		for n > 0 && !utf8.RuneStart(v[n]) {
			n--
		}
		v, cut = v[:n], true
	}
	if cut {
		v += "…"
	}
	return v
}

// isTokenChar reports whether c may appear in a session token or JWT.
func isTokenChar(c byte) bool { return tokenChars[c] }

// tokenChars has the bytes isTokenChar accepts: one load per byte of every
// audited value, instead of a chain of comparisons.
var tokenChars = func() (t [256]bool) {
	for c := range 256 {
		t[c] = 'A' <= c && c <= 'Z' || 'a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_' || c == '.'
	}
	return t
}()

// redact replaces every credential-shaped word of v. Words are maximal runs of
// base64url characters and dots, the alphabet of session tokens and JWTs.
func redact(v string) string {
	var b strings.Builder
	last := 0 // v[:last] has been decided (written to b, if b is in use)
	bearer := false
	for i := 0; i < len(v); {
		if !isTokenChar(v[i]) {
			i++
			continue
		}
		j, dots := i, 0
		for j < len(v) && isTokenChar(v[j]) {
			if v[j] == '.' {
				dots++
			}
			j++
		}
		word := v[i:j]
		// Only words of a token's or a secret's length, and words of three
		// dotted parts (JWTs), can be secret-shaped: most words are decided
		// by their length and dots alone.
		maybeSecret := len(word) == sessionbridge.TokenLen || len(word) == secretLen || dots == 2
		if bearer && len(word) >= minBearerLen || maybeSecret && secretShaped(word) {
			if b.Len() == 0 {
				b.Grow(len(v))
			}
			b.WriteString(v[last:i])
			b.WriteString(Redacted)
			last = j
		}
		// A long word after "Bearer" is a credential of some kind, whether
		// or not its shape is known here (API keys, opaque tokens); short
		// ones are prose ("missing bearer token").
		bearer = len(word) == len("bearer") && strings.EqualFold(word, "bearer")
		i = j
	}
	if last == 0 {
		return v
	}
	b.WriteString(v[last:])
	return b.String()
}

// secretShaped reports whether word looks like a credential: a session token,
// the secret half of one, or a JWT.
func secretShaped(word string) bool {
	switch {
	case len(word) == sessionbridge.TokenLen:
		if _, _, err := sessionbridge.ParseToken(word); err == nil {
			return true
		}
	case len(word) == secretLen:
		// 32 random bytes: the secret half of a token, pasted alone.
		if b, err := base64.RawURLEncoding.DecodeString(word); err == nil && len(b) == 32 {
			return true
		}
	}
	return jwtShaped(word)
}

// jwtShaped reports whether word is three base64url parts joined by dots whose
// first part decodes to a JSON object: a JWS in compact form. The JSON check
// keeps version numbers and host names ("v1.2.3", "a.example.org") out.
func jwtShaped(word string) bool {
	if strings.Count(word, ".") != 2 {
		return false
	}
	header, rest, _ := strings.Cut(word, ".")
	payload, _, _ := strings.Cut(rest, ".")
	if len(header) < 4 || payload == "" {
		return false
	}
	// Four base64 characters are three bytes: enough to see the '{' that
	// starts the header, possibly after whitespace.
	var b [3]byte
	if _, err := base64.RawURLEncoding.Decode(b[:], []byte(header[:4])); err != nil {
		return false
	}
	for _, c := range b {
		switch c {
		case ' ', '\t', '\r', '\n':
			continue
		case '{':
			return true
		}
		return false
	}
	return false
}

// escape writes control characters, line and paragraph separators and
// bidirectional formatting characters of v as escapes, and invalid UTF-8 as
// U+FFFD. It returns v itself when nothing needs escaping.
func escape(v string) string {
	i := 0
	for i < len(v) {
		c := v[i]
		if c >= 0x20 && c < 0x7f {
			i++
			continue
		}
		r, size := utf8.DecodeRuneInString(v[i:])
		if needsEscape(r, size) {
			break
		}
		i += size
	}
	if i == len(v) {
		return v
	}
	var b strings.Builder
	b.Grow(len(v) + 16)
	b.WriteString(v[:i])
	for i < len(v) {
		r, size := utf8.DecodeRuneInString(v[i:])
		i += size
		switch {
		case r == utf8.RuneError && size == 1:
			b.WriteRune(utf8.RuneError)
		case !needsEscape(r, size):
			b.WriteRune(r)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80:
			b.WriteString(`\x`)
			b.WriteByte(hexDigit[r>>4])
			b.WriteByte(hexDigit[r&0xf])
		default:
			b.WriteString(`\u`)
			for shift := 12; shift >= 0; shift -= 4 {
				b.WriteByte(hexDigit[(r>>shift)&0xf])
			}
		}
	}
	return b.String()
}

const hexDigit = "0123456789abcdef"

// needsEscape reports whether the rune r, decoded from size bytes, must not
// appear literally in a log value.
func needsEscape(r rune, size int) bool {
	switch {
	case r == utf8.RuneError && size == 1: // invalid UTF-8
		return true
	case r < 0x20, r == 0x7f, 0x80 <= r && r <= 0x9f: // C0, DEL, C1 (NEL)
		return true
	case r == 0x2028, r == 0x2029: // line and paragraph separators
		return true
	case 0x202a <= r && r <= 0x202e, 0x2066 <= r && r <= 0x2069, r == 0x200e, r == 0x200f, r == 0x061c: // bidi controls
		return true
	case r == 0xfeff: // byte order mark, invisible
		return true
	}
	return false
}
