package gateway

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"

	sb "github.com/sessionbridge/sessionbridge"
)

// Every connect sends a welcome frame and every session change a
// session.updated frame; encoding/json spends most of its time on them in
// reflection. appendFastFrame writes those frames (and session replies) by
// hand, byte for byte as encoding/json writes them (TestFastFramesMatchJSON
// compares the two), and gives up, for encodeFrame to use encoding/json,
// whenever a value needs more than the common path: session data that is
// not already compact, or holds characters encoding/json escapes for HTML,
// or a time encoding/json would refuse.

// appendFastFrame appends the frame {"type":typ,"id":id,"data":data} to b.
// ok is false when data is not one of the frames it knows or needs
// encoding/json (see above); b is then to be discarded.
func appendFastFrame(b []byte, typ, id string, data any) (_ []byte, ok bool) {
	b = append(b, `{"type":`...)
	b = appendJSONString(b, typ)
	if id != "" {
		b = append(b, `,"id":`...)
		b = appendJSONString(b, id)
	}
	b = append(b, `,"data":`...)
	switch d := data.(type) {
	case welcomeData:
		return appendWelcome(b, &d)
	case *welcomeData:
		if d == nil {
			return b, false
		}
		return appendWelcome(b, d)
	case sessionUpdatedData:
		b = append(b, `{"session":`...)
		if b, ok = appendPublicSession(b, &d.Session); !ok {
			return b, false
		}
		b = append(b, `,"source":`...)
		b = appendJSONString(b, string(d.Source))
		return append(b, "}}"...), true
	case sessionData:
		b = append(b, `{"session":`...)
		if b, ok = appendPublicSession(b, &d.Session); !ok {
			return b, false
		}
		return append(b, "}}"...), true
	}
	return b, false
}

// fastFrameSize is room enough for most frames appendFastFrame writes for
// data, so that one allocation holds the frame.
func fastFrameSize(data any) int {
	var s *sb.PublicSession
	switch d := data.(type) {
	case welcomeData:
		s = d.Session
	case *welcomeData:
		if d != nil {
			s = d.Session
		}
	case sessionUpdatedData:
		s = &d.Session
	case sessionData:
		s = &d.Session
	}
	if s == nil {
		return 256
	}
	return 512 + len(s.Data) + len(s.Device.UserAgent) + 32*len(s.Scopes)
}

func appendWelcome(b []byte, w *welcomeData) (_ []byte, ok bool) {
	b = append(b, `{"connection_id":`...)
	b = appendJSONString(b, w.ConnectionID)
	b = append(b, `,"auth":`...)
	b = appendJSONString(b, string(w.Auth))
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, w.UserID)
	b = append(b, `,"session":`...)
	if w.Session == nil {
		b = append(b, "null"...)
	} else if b, ok = appendPublicSession(b, w.Session); !ok {
		return b, false
	}
	b = append(b, `,"scopes":`...)
	b = appendStrings(b, w.Scopes)
	b = append(b, `,"expires_at":`...)
	if w.ExpiresAt == nil {
		b = append(b, "null"...)
	} else if b, ok = appendJSONTime(b, *w.ExpiresAt); !ok {
		return b, false
	}
	return append(b, "}}"...), true
}

func appendPublicSession(b []byte, s *sb.PublicSession) (_ []byte, ok bool) {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, s.ID)
	b = append(b, `,"user_id":`...)
	b = appendJSONString(b, s.UserID)
	b = append(b, `,"data":`...)
	if s.Data == nil {
		b = append(b, "null"...)
	} else {
		if !plainCompactJSON(s.Data) {
			return b, false
		}
		b = append(b, s.Data...)
	}
	b = append(b, `,"device":{"user_agent":`...)
	b = appendJSONString(b, s.Device.UserAgent)
	b = append(b, `,"browser":`...)
	b = appendJSONString(b, s.Device.Browser)
	b = append(b, `,"os":`...)
	b = appendJSONString(b, s.Device.OS)
	b = append(b, `,"device_type":`...)
	b = appendJSONString(b, s.Device.DeviceType)
	b = append(b, `,"ip":`...)
	b = appendJSONString(b, s.Device.IP)
	b = append(b, `},"created_at":`...)
	for i, t := range [...]time.Time{s.CreatedAt, s.LastSeenAt, s.ExpiresAt, s.AbsoluteExpiresAt} {
		switch i {
		case 1:
			b = append(b, `,"last_seen_at":`...)
		case 2:
			b = append(b, `,"expires_at":`...)
		case 3:
			b = append(b, `,"absolute_expires_at":`...)
		}
		if b, ok = appendJSONTime(b, t); !ok {
			return b, false
		}
	}
	b = append(b, `,"scopes":`...)
	b = appendStrings(b, s.Scopes)
	b = append(b, `,"version":`...)
	b = strconv.AppendUint(b, s.Version, 10)
	return append(b, '}'), true
}

// plainCompactJSON reports whether data is valid JSON that encoding/json
// would copy unchanged: already compact (no whitespace outside strings) and
// with nothing it escapes for HTML (<, >, &, U+2028, U+2029).
func plainCompactJSON(data []byte) bool {
	inString := false
	for i, c := range data {
		switch {
		case c == '<' || c == '>' || c == '&':
			return false
		case c == 0xE2 && i+2 < len(data) && data[i+1] == 0x80 && (data[i+2] == 0xA8 || data[i+2] == 0xA9):
			return false
		case inString:
			// A quote ends the string unless it is escaped.
			if c == '"' && !escapedQuote(data, i) {
				inString = false
			}
		case c == '"':
			inString = true
		case c == ' ' || c == '\t' || c == '\n' || c == '\r':
			return false
		}
	}
	return json.Valid(data)
}

// escapedQuote reports whether the quote at data[i] is escaped: preceded by
// an odd number of backslashes.
func escapedQuote(data []byte, i int) bool {
	n := 0
	for j := i - 1; j >= 0 && data[j] == '\\'; j-- {
		n++
	}
	return n%2 == 1
}

// appendJSONTime appends t as encoding/json writes a time.Time (RFC 3339
// with nanoseconds, quoted); ok is false where encoding/json fails.
func appendJSONTime(b []byte, t time.Time) (_ []byte, ok bool) {
	b = append(b, '"')
	b, err := t.AppendText(b)
	if err != nil {
		return b, false
	}
	return append(b, '"'), true
}

// appendStrings appends ss as encoding/json writes a []string: null when
// nil.
func appendStrings(b []byte, ss []string) []byte {
	if ss == nil {
		return append(b, "null"...)
	}
	b = append(b, '[')
	for i, s := range ss {
		if i > 0 {
			b = append(b, ',')
		}
		b = appendJSONString(b, s)
	}
	return append(b, ']')
}

const hexDigits = "0123456789abcdef"

// appendJSONString appends s quoted as encoding/json quotes strings (with
// its default HTML escaping): <, > and & as \u003c, \u003e, \u0026; control
// characters as \n, \r, \t, \b, \f or \u00XX; invalid UTF-8 as \ufffd; and
// U+2028 and U+2029 as \u2028 and \u2029.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	start := 0
	for i := 0; i < len(s); {
		if c := s[i]; c < utf8.RuneSelf {
			if c >= 0x20 && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
