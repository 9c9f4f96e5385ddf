package device

import (
	"net/http"
	"net/netip"
	"strings"
	"unicode/utf8"

	"github.com/sessionbridge/sessionbridge"
)

// MaxUserAgent is the most bytes of a User-Agent header kept in a Device.
const MaxUserAgent = 512

// FromRequest describes the client of r: its User-Agent (cut to MaxUserAgent
// bytes at a character boundary, with invalid UTF-8 replaced by U+FFFD), the
// browser, OS and device type Parse finds in it, and ClientIP(r, trusted).
func FromRequest(r *http.Request, trusted []netip.Prefix) sessionbridge.Device {
	ua := CleanUserAgent(r.Header.Get("User-Agent"))
	browser, os, typ := Parse(ua)
	return sessionbridge.Device{
		UserAgent:  ua,
		Browser:    browser,
		OS:         os,
		DeviceType: typ,
		IP:         ClientIP(r, trusted),
	}
}

// CleanUserAgent returns ua as valid UTF-8 of at most MaxUserAgent bytes, cut
// at a character boundary, with invalid bytes replaced by U+FFFD.
func CleanUserAgent(ua string) string {
	// Cut first so that a huge header costs no more than a short one.
	ua = truncate(ua, MaxUserAgent)
	if !utf8.ValidString(ua) {
		ua = truncate(strings.ToValidUTF8(ua, "\uFFFD"), MaxUserAgent)
	}
	return ua
}

// truncate cuts s to at most n bytes without splitting a UTF-8 sequence.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	cut := n
	// Back up over continuation bytes, at most a rune's length, so that a
	// valid character is never split into replacement characters.
	for i := 0; i < utf8.UTFMax && cut > 0 && !utf8.RuneStart(s[cut]); i++ {
		cut--
	}
	return s[:cut]
}
