package auth

import (
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
)

// ErrOriginNotAllowed is returned by the origin checks when a request comes
// from a browser page whose origin may not use the credential it carries.
var ErrOriginNotAllowed = errors.New("origin_not_allowed")

// Origins is the origin policy of a server: the browser origins, besides the
// server's own, whose pages may use ambient credentials (the session cookie)
// on WebSocket upgrades and state-changing HTTP requests. The server's own
// origin, the request's Host, is always allowed: a list of other origins
// never shuts out the server's own pages. An Origins is immutable and safe
// for concurrent use; build it with [ParseOrigins].
type Origins struct {
	exact     map[string]bool // normalized "scheme://host[:port]"
	wildcards []wildcardOrigin
}

// wildcardOrigin is "scheme://*.suffix[:port]": it matches one or more DNS
// labels in front of suffix, never suffix itself.
type wildcardOrigin struct {
	scheme, suffix, port string
}

// ParseOrigins compiles a list of allowed origins: "https://app.example.com"
// (scheme, host and optional port, nothing else) or "https://*.example.com"
// (one or more labels in place of the star, at least two labels after it).
// It refuses anything else, naming the entry.
func ParseOrigins(list []string) (*Origins, error) {
	p := &Origins{exact: map[string]bool{}}
	for _, raw := range list {
		o, err := parseOrigin(strings.Replace(raw, "://*.", "://wildcard-placeholder.", 1))
		if err != nil {
			return nil, fmt.Errorf("auth: allowed origin %q: want scheme://host[:port] with an http or https scheme and no path", raw)
		}
		if strings.HasPrefix(o.host, "wildcard-placeholder.") {
			suffix := strings.TrimPrefix(o.host, "wildcard-placeholder")
			if strings.Count(suffix, ".") < 2 {
				return nil, fmt.Errorf("auth: allowed origin %q: a wildcard needs at least two labels after it", raw)
			}
			p.wildcards = append(p.wildcards, wildcardOrigin{scheme: o.scheme, suffix: suffix, port: o.port})
			continue
		}
		if strings.Contains(raw, "*") {
			return nil, fmt.Errorf("auth: allowed origin %q: '*' is only allowed as the first label", raw)
		}
		p.exact[o.String()] = true
	}
	return p, nil
}

// configured reports whether any origin besides the server's own is listed.
func (p *Origins) configured() bool { return len(p.exact) > 0 || len(p.wildcards) > 0 }

// listed reports whether o matches the configured origins.
func (p *Origins) listed(o origin) bool {
	if p.exact[o.String()] {
		return true
	}
	for _, w := range p.wildcards {
		if o.scheme != w.scheme || o.port != w.port || !strings.HasSuffix(o.host, w.suffix) {
			continue
		}
		labels := strings.TrimSuffix(o.host, w.suffix)
		if labels != "" && validLabels(labels) {
			return true
		}
	}
	return false
}

// Allows reports whether a page of the origin value (an Origin header) may
// use ambient credentials on a request sent to host (the request's Host):
// when it is host itself, or listed. A malformed origin, "null" included,
// is never allowed.
func (p *Origins) Allows(value, host string) bool {
	o, err := parseOrigin(value)
	if err != nil {
		return false
	}
	return sameHost(o, host) || p.listed(o)
}

// allowsFrom is Allows for the request r: the server's own origin must be
// https when r itself came over TLS (behind a plain-HTTP hop either scheme
// may be the page's, as a TLS-terminating proxy may sit in front).
func (p *Origins) allowsFrom(value string, r *http.Request) bool {
	o, err := parseOrigin(value)
	if err != nil {
		return false
	}
	own := sameHost(o, r.Host) && (r.TLS == nil || o.scheme == "https")
	return own || p.listed(o)
}

// CheckUpgrade applies the origin rules of a WebSocket upgrade. With a
// session cookie (an ambient credential, cookie true) the Origin must be
// present and allowed. Other credentials need no Origin; a present one must
// be allowed when other origins are listed, and any passes when none are (a
// non-browser client may send what it likes, and nothing ambient is at
// stake). Several Origin headers are refused.
func (p *Origins) CheckUpgrade(r *http.Request, cookie bool) error {
	values := r.Header.Values("Origin")
	switch {
	case len(values) > 1:
		return ErrOriginNotAllowed
	case len(values) == 0 && cookie:
		return ErrOriginNotAllowed
	case len(values) == 0, !cookie && !p.configured():
		return nil
	}
	if p.allowsFrom(values[0], r) {
		return nil
	}
	return ErrOriginNotAllowed
}

// CheckRequest protects state-changing HTTP requests that rely on the
// ambient cookie from cross-site request forgery. Safe methods (GET, HEAD,
// OPTIONS) and requests with an explicit credential (a Bearer Authorization
// or an X-Session-Token header, which a page cannot add to a cross-origin
// request without a CORS preflight that is never granted) pass. Otherwise
// the browser's Sec-Fetch-Site decides ("same-origin" and "none" pass), or
// without it the Origin header: absent (not a browser page), the server's
// own or listed passes. A cross-site request from a listed origin passes too.
func (p *Origins) CheckRequest(r *http.Request) error {
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions:
		return nil
	}
	if hasExplicit(r) {
		return nil
	}
	values := r.Header.Values("Origin")
	if len(values) > 1 {
		return ErrOriginNotAllowed
	}
	switch r.Header.Get("Sec-Fetch-Site") {
	case "same-origin", "none":
		return nil
	case "":
		if len(values) == 0 {
			return nil
		}
		if p.allowsFrom(values[0], r) {
			return nil
		}
	default:
		// same-site or cross-site: only a listed origin may.
		if len(values) == 1 {
			if o, err := parseOrigin(values[0]); err == nil && p.listed(o) {
				return nil
			}
		}
	}
	return ErrOriginNotAllowed
}

// hasExplicit reports whether r carries a credential that browsers never
// attach on their own: a Bearer Authorization or a non-empty X-Session-Token.
// (A Basic Authorization does not count: browsers resend cached Basic
// credentials to any request for the site.)
func hasExplicit(r *http.Request) bool {
	for _, v := range r.Header.Values(HeaderSessionToken) {
		if strings.TrimSpace(v) != "" {
			return true
		}
	}
	for _, v := range r.Header.Values("Authorization") {
		if scheme, _, _ := strings.Cut(strings.TrimSpace(v), " "); strings.EqualFold(scheme, "Bearer") {
			return true
		}
	}
	return false
}

func validLabels(s string) bool {
	for label := range strings.SplitSeq(s, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			ch := label[i]
			if !('a' <= ch && ch <= 'z' || '0' <= ch && ch <= '9' || ch == '-') {
				return false
			}
		}
	}
	return true
}

// origin is a parsed, normalized Origin: lower-case scheme and host, port
// empty when it is the scheme's default.
type origin struct {
	scheme, host, port string
}

func (o origin) String() string {
	if o.port == "" {
		return o.scheme + "://" + o.host
	}
	return o.scheme + "://" + o.host + ":" + o.port
}

var errBadOrigin = errors.New("malformed origin")

// parseOrigin parses an Origin header value: "scheme://host[:port]" with an
// http or https scheme and nothing else. "null" and anything with a path,
// query, fragment or user info is refused.
func parseOrigin(s string) (origin, error) {
	if s == "" || s == "null" || len(s) > 2048 {
		return origin{}, errBadOrigin
	}
	u, err := url.Parse(s)
	if err != nil || u.Opaque != "" || u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" || u.ForceQuery {
		return origin{}, errBadOrigin
	}
	o := origin{scheme: strings.ToLower(u.Scheme), host: strings.ToLower(u.Hostname()), port: u.Port()}
	if o.scheme != "http" && o.scheme != "https" || o.host == "" {
		return origin{}, errBadOrigin
	}
	if strings.HasSuffix(u.Host, ":") {
		return origin{}, errBadOrigin
	}
	if o.port == defaultPort(o.scheme) {
		o.port = ""
	}
	return o, nil
}

func defaultPort(scheme string) string {
	if scheme == "https" {
		return "443"
	}
	return "80"
}

// sameHost reports whether o names the host the request was sent to,
// whatever the scheme (a TLS-terminating proxy may sit in between).
func sameHost(o origin, reqHost string) bool {
	h := strings.ToLower(reqHost)
	if h == "" {
		return false
	}
	host, port := h, ""
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		host, port = h[:i], h[i+1:]
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if port == "" || port == defaultPort(o.scheme) {
		port = ""
	}
	return host == o.host && port == o.port
}
