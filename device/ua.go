package device

import "strings"

// Device types returned by Parse.
const (
	TypeDesktop = "desktop"
	TypeMobile  = "mobile"
	TypeTablet  = "tablet"
	TypeBot     = "bot"
	TypeUnknown = "unknown"
)

// maxScan bounds how much of a User-Agent Parse looks at. Real User-Agents are
// a few hundred bytes; the bound keeps hostile, megabyte-long headers cheap.
const maxScan = 1024

// maxVersionDigits bounds the major version Parse reports.
const maxVersionDigits = 4

// browserRule maps a product token to a browser family. Rules are tried in
// order: browsers that embed another browser's token (Edge and Opera carry
// "Chrome/", Chrome carries "Safari/") come before the one they imitate.
type browserRule struct {
	token string // product token, including the trailing '/' when versioned
	name  string
	// version, when set, is the token the version follows instead of token.
	version string
}

var browserRules = [...]browserRule{
	{"Edg/", "Edge", ""},
	{"EdgA/", "Edge", ""},
	{"EdgiOS/", "Edge", ""},
	{"Edge/", "Edge", ""},
	{"OPR/", "Opera", ""},
	{"OPT/", "Opera", ""},
	{"OPiOS/", "Opera", ""},
	{"Opera/", "Opera", "Version/"}, // Presto-era Opera puts its version in "Version/".
	{"SamsungBrowser/", "Samsung Internet", ""},
	{"YaBrowser/", "Yandex Browser", ""},
	{"Vivaldi/", "Vivaldi", ""},
	{"UCBrowser/", "UC Browser", ""},
	{"DuckDuckGo/", "DuckDuckGo", ""},
	{"FxiOS/", "Firefox", ""},
	{"Firefox/", "Firefox", ""},
	{"CriOS/", "Chrome", ""},
	{"HeadlessChrome/", "HeadlessChrome", ""},
	{"Chromium/", "Chromium", ""},
	{"Chrome/", "Chrome", ""},
	{"MSIE ", "Internet Explorer", ""},
	{"Trident/", "Internet Explorer", "rv:"},
}

// botRule maps a case-insensitive marker of an automated client to its name.
// Markers are lowercase.
type botRule struct {
	marker string
	name   string
}

var botRules = [...]botRule{
	{"googlebot", "Googlebot"},
	{"bingbot", "Bingbot"},
	{"yandexbot", "YandexBot"},
	{"duckduckbot", "DuckDuckBot"},
	{"baiduspider", "Baiduspider"},
	{"applebot", "Applebot"},
	{"facebookexternalhit", "Facebook"},
	{"curl/", "curl"},
	{"wget/", "Wget"},
	{"python-requests/", "python-requests"},
	{"python-urllib/", "Python-urllib"},
	{"go-http-client/", "Go-http-client"},
	{"libwww-perl/", "libwww-perl"},
	{"httpie/", "HTTPie"},
	{"postmanruntime/", "PostmanRuntime"},
	// Generic markers last: they name no product.
	{"bot", ""},
	{"crawler", ""},
	{"spider", ""},
	{"slurp", ""},
}

// Parse returns a coarse description of the client that sent userAgent: the
// browser family with its major version ("Chrome 126", "Firefox 128",
// "Safari 17", "Edge 125", "Samsung Internet 25"), the operating system
// ("Windows", "macOS", "iOS", "Android", "Linux", "ChromeOS") and the device
// type: "desktop", "mobile", "tablet", "bot" (crawlers and scripted HTTP
// clients such as curl) or "unknown". Fields it cannot tell are "" (browser,
// os) or "unknown" (device type).
//
// Parse never fails and looks at no more than the first 1 KiB of userAgent.
// iPads that request desktop sites send a macOS User-Agent and are reported as
// macOS desktops: the header carries no way to tell them apart.
func Parse(userAgent string) (browser, os, deviceType string) {
	ua := userAgent
	if len(ua) > maxScan {
		ua = ua[:maxScan]
	}
	if strings.TrimSpace(ua) == "" {
		return "", "", TypeUnknown
	}
	os = parseOS(ua)
	if name, at, ok := parseBot(ua); ok {
		if name != "" {
			// Bots name their version like products do: "Googlebot/2.1".
			if at < len(ua) && ua[at] == '/' {
				at++
			}
			browser = withVersion(name, ua, at)
		}
		return browser, os, TypeBot
	}
	browser = parseBrowser(ua)
	return browser, os, parseType(ua, os, browser)
}

func parseOS(ua string) string {
	switch {
	case strings.Contains(ua, "iPhone"), strings.Contains(ua, "iPad"), strings.Contains(ua, "iPod"):
		return "iOS"
	case strings.Contains(ua, "CrOS"):
		return "ChromeOS"
	case strings.Contains(ua, "Android"):
		return "Android"
	case strings.Contains(ua, "Windows Phone"):
		return "Windows Phone"
	case strings.Contains(ua, "Windows"):
		return "Windows"
	case strings.Contains(ua, "Macintosh"), strings.Contains(ua, "Mac OS X"):
		return "macOS"
	case strings.Contains(ua, "Linux"), strings.Contains(ua, "X11"), strings.Contains(ua, "Ubuntu"), strings.Contains(ua, "FreeBSD"):
		if strings.Contains(ua, "FreeBSD") {
			return "FreeBSD"
		}
		return "Linux"
	}
	return ""
}

// parseBot reports whether ua is an automated client, its name if known, and
// the index right after the matched marker.
func parseBot(ua string) (name string, end int, ok bool) {
	for i := range botRules {
		r := &botRules[i]
		from := 0
		for {
			at := indexFold(ua[from:], r.marker)
			if at < 0 {
				break
			}
			at += from
			// The Cubot phone brand is not a bot.
			if r.marker == "bot" && at >= 2 && lower(ua[at-2]) == 'c' && lower(ua[at-1]) == 'u' {
				from = at + len(r.marker)
				continue
			}
			return r.name, at + len(r.marker), true
		}
	}
	return "", 0, false
}

func parseBrowser(ua string) string {
	for i := range browserRules {
		r := &browserRules[i]
		at := strings.Index(ua, r.token)
		if at < 0 {
			continue
		}
		if r.version != "" {
			return withVersion(r.name, ua, indexAfter(ua, r.version))
		}
		return withVersion(r.name, ua, at+len(r.token))
	}
	// Safari names its version in "Version/"; its "Safari/" token is a WebKit
	// build number. Without "Version/" (and without any browser above) a
	// WebKit client is an embedded web view, not Safari.
	if strings.Contains(ua, "Safari/") || strings.Contains(ua, "AppleWebKit/") {
		v := indexAfter(ua, "Version/")
		if v < 0 {
			return ""
		}
		if strings.Contains(ua, "Android") {
			// The pre-Chrome Android browser looked like Safari.
			return withVersion("Android Browser", ua, v)
		}
		return withVersion("Safari", ua, v)
	}
	return ""
}

func parseType(ua, os, browser string) string {
	switch {
	case strings.Contains(ua, "iPad"), strings.Contains(ua, "Tablet"):
		return TypeTablet
	case strings.Contains(ua, "iPhone"), strings.Contains(ua, "iPod"), strings.Contains(ua, "Mobi"):
		return TypeMobile
	case os == "Android":
		// Android phones say "Mobile"; tablets leave it out.
		return TypeTablet
	case os == "Windows", os == "macOS", os == "Linux", os == "ChromeOS", os == "FreeBSD":
		return TypeDesktop
	}
	return TypeUnknown
}

// indexAfter returns the index right after the first token in s, or -1.
func indexAfter(s, token string) int {
	i := strings.Index(s, token)
	if i < 0 {
		return -1
	}
	return i + len(token)
}

// withVersion returns name followed by the major version that starts at
// ua[at:], or name alone when at is out of range or no digits follow.
func withVersion(name, ua string, at int) string {
	if at < 0 || at >= len(ua) {
		return name
	}
	n := 0
	for n < len(ua)-at && n < maxVersionDigits && '0' <= ua[at+n] && ua[at+n] <= '9' {
		n++
	}
	if n == 0 {
		return name
	}
	return name + " " + ua[at:at+n]
}

// indexFold returns the index of the first occurrence of the lowercase ASCII
// string sub in s, ignoring ASCII case in s, or -1. It does not allocate.
func indexFold(s, sub string) int {
	if len(sub) == 0 {
		return 0
	}
	first, upper := sub[0], sub[0]
	if 'a' <= first && first <= 'z' {
		upper = first - ('a' - 'A')
	}
	for i := 0; i+len(sub) <= len(s); i++ {
		// Jump to the next candidate first byte with the fast byte search.
		j := indexEither(s[i:len(s)-len(sub)+1], first, upper)
		if j < 0 {
			return -1
		}
		i += j
		k := 1
		for k < len(sub) && lower(s[i+k]) == sub[k] {
			k++
		}
		if k == len(sub) {
			return i
		}
	}
	return -1
}

// indexEither returns the index of the first a or b in s, or -1.
func indexEither(s string, a, b byte) int {
	i := strings.IndexByte(s, a)
	if a == b {
		return i
	}
	if i >= 0 {
		s = s[:i]
	}
	if j := strings.IndexByte(s, b); j >= 0 {
		return j
	}
	return i
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + ('a' - 'A')
	}
	return c
}
