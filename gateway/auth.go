package gateway

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	sb "github.com/sessionbridge/sessionbridge"
)

// CookieName is the session cookie the gateway reads.
const CookieName = "sb_session"

// credSource names where a credential came from, in precedence order.
type credSource uint8

const (
	srcNone credSource = iota
	srcBearer
	srcHeader // X-Session-Token
	srcCookie
	srcTicket
	srcQuery // ?session_token=
)

func (s credSource) String() string {
	switch s {
	case srcBearer:
		return "bearer"
	case srcHeader:
		return "header"
	case srcCookie:
		return "cookie"
	case srcTicket:
		return "ticket"
	case srcQuery:
		return "query"
	}
	return "none"
}

// credKind says what a credential is.
type credKind uint8

const (
	kindSession credKind = iota + 1
	kindJWT
	kindAPIKey
	kindTicket
)

// credential is the credential an upgrade authenticates with.
type credential struct {
	source credSource
	kind   credKind
	token  string
	// ticket, when the request also carries a ticket, is that ticket: it is
	// redeemed (and so used up) whether or not it is the winning credential,
	// and must agree with the winner.
	ticket string
	// cookie reports whether an sb_session cookie came with the request, so
	// that the origin rules for ambient credentials apply.
	cookie bool
}

// Reasons for refusing credentials, used as the audit reason and as the
// error code of the 401 body where noted.
var (
	errNoCredentials  = errors.New("missing_credentials")
	errConflicting    = errors.New("conflicting_credentials")
	errBadAuthScheme  = errors.New("unsupported_authorization_scheme")
	errMalformedCreds = errors.New("malformed_credentials")
)

// maxCredentialLen bounds any single credential; longer ones are refused
// before any parsing or store access.
const maxCredentialLen = 8 << 10

// extractCredentials finds the credential of an upgrade request. Sources, first
// found wins: Authorization Bearer, X-Session-Token, cookie sb_session,
// ?ticket=, ?session_token= (only with allowQuery). When several sources are
// present they must all carry the same token (a ticket is checked against the
// winner after it is redeemed); otherwise errConflicting.
func extractCredentials(r *http.Request, allowQuery bool, apiKeyPrefix string) (credential, error) {
	var c credential
	var tokens []string
	add := func(src credSource, tok string) {
		if c.source == srcNone {
			c.source, c.token = src, tok
		}
		tokens = append(tokens, tok)
	}

	auth := r.Header.Values("Authorization")
	if len(auth) > 1 {
		return credential{}, errConflicting
	}
	if len(auth) == 1 {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(auth[0]), " ")
		if !ok || !strings.EqualFold(scheme, "Bearer") {
			return credential{}, errBadAuthScheme
		}
		tok = strings.TrimSpace(tok)
		if tok == "" {
			return credential{}, errMalformedCreds
		}
		add(srcBearer, tok)
	}
	// Empty header and cookie values carry no credential (a cleared cookie)
	// and are ignored.
	for _, v := range r.Header.Values("X-Session-Token") {
		if v = strings.TrimSpace(v); v != "" {
			add(srcHeader, v)
		}
	}
	for _, ck := range r.CookiesNamed(CookieName) {
		if ck.Value != "" {
			c.cookie = true
			add(srcCookie, ck.Value)
		}
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return credential{}, errMalformedCreds
	}
	tickets := q["ticket"]
	if len(tickets) > 1 {
		return credential{}, errConflicting
	}
	if len(tickets) == 1 {
		c.ticket = tickets[0]
		if c.ticket == "" || len(c.ticket) > maxCredentialLen {
			return credential{}, errMalformedCreds
		}
		if c.source == srcNone {
			c.source, c.token = srcTicket, c.ticket
		}
	}
	if allowQuery {
		for _, v := range q["session_token"] {
			add(srcQuery, v)
		}
	}
	if c.source == srcNone {
		return credential{}, errNoCredentials
	}
	for _, t := range tokens {
		if t != tokens[0] {
			return credential{}, errConflicting
		}
		if t == "" || len(t) > maxCredentialLen {
			return credential{}, errMalformedCreds
		}
	}
	switch {
	case c.source == srcTicket:
		c.kind = kindTicket
	case c.source == srcBearer && apiKeyPrefix != "" && strings.HasPrefix(c.token, apiKeyPrefix):
		c.kind = kindAPIKey
	case c.source == srcBearer && strings.Count(c.token, ".") == 2:
		c.kind = kindJWT
	default:
		c.kind = kindSession
	}
	return c, nil
}

// originPolicy decides which browser origins may open a socket.
type originPolicy struct {
	exact     map[string]bool // normalized "scheme://host[:port]"
	wildcards []wildcardOrigin
}

// wildcardOrigin is "scheme://*.suffix[:port]": it matches one or more DNS
// labels in front of suffix, never suffix itself.
type wildcardOrigin struct {
	scheme, suffix, port string
}

// parseOrigins compiles the AllowedOrigins setting.
func parseOrigins(list []string) (originPolicy, error) {
	p := originPolicy{exact: map[string]bool{}}
	for _, raw := range list {
		o, err := parseOrigin(strings.Replace(raw, "://*.", "://wildcard-placeholder.", 1))
		if err != nil {
			return p, fmt.Errorf("gateway: allowed origin %q: %w", raw, err)
		}
		if strings.HasPrefix(o.host, "wildcard-placeholder.") {
			suffix := strings.TrimPrefix(o.host, "wildcard-placeholder")
			if strings.Count(suffix, ".") < 2 {
				return p, fmt.Errorf("gateway: allowed origin %q: a wildcard needs at least two labels after it", raw)
			}
			p.wildcards = append(p.wildcards, wildcardOrigin{scheme: o.scheme, suffix: suffix, port: o.port})
			continue
		}
		if strings.Contains(raw, "*") {
			return p, fmt.Errorf("gateway: allowed origin %q: '*' is only allowed as the first label", raw)
		}
		p.exact[o.String()] = true
	}
	return p, nil
}

func (p originPolicy) configured() bool { return len(p.exact) > 0 || len(p.wildcards) > 0 }

// allows reports whether o matches the configured origins.
func (p originPolicy) allows(o origin) bool {
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

// ownOrigin reports whether o is the origin of the server itself as the
// request reached it: the Host header's host and port, with the request's
// scheme when it is known. A request that came over TLS has https; one that
// came in plain may have either, since a TLS-terminating proxy may sit in
// between.
func ownOrigin(o origin, r *http.Request) bool {
	if r.TLS != nil && o.scheme != "https" {
		return false
	}
	return sameHost(o, r.Host)
}

// sameHost reports whether o names the host the request was sent to,
// whatever the scheme.
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

var errOriginNotAllowed = errors.New("origin_not_allowed")

// check applies the origin rules. With a session cookie (an ambient
// credential) the Origin must be present and allowed: the server's own origin
// always is (see ownOrigin), and so are those of AllowedOrigins. Other
// credentials need no Origin, but a present one must be allowed when
// AllowedOrigins is set.
func (p originPolicy) check(r *http.Request, cookie bool) error {
	values := r.Header.Values("Origin")
	if len(values) > 1 {
		return errOriginNotAllowed
	}
	if len(values) == 0 {
		if cookie {
			return errOriginNotAllowed
		}
		return nil
	}
	if !cookie && !p.configured() {
		return nil
	}
	o, err := parseOrigin(values[0])
	if err != nil {
		return errOriginNotAllowed
	}
	if ownOrigin(o, r) || p.allows(o) {
		return nil
	}
	return errOriginNotAllowed
}

// jwtRefused counts a refused JWT in the metrics by reason and returns the
// reason for its audit record, "jwt_<reason>". The reason is the verifier's
// own label when its error has a Reason method (the jwt package's rejections
// do: expired, bad_signature, bad_audience, ...), else expired, unavailable
// or invalid.
func (g *Gateway) jwtRefused(err error) string {
	reason := "invalid"
	var r interface{ Reason() string }
	switch {
	case errors.As(err, &r) && r.Reason() != "":
		reason = r.Reason()
	case errors.Is(err, sb.ErrExpired):
		reason = "expired"
	case errors.Is(err, sb.ErrUnavailable):
		reason = "unavailable"
	}
	g.metrics.JWTRejected(reason)
	return "jwt_" + reason
}

// authResult is the outcome of authenticating an upgrade.
type authResult struct {
	p *sb.Principal
	// sess is the bound session as read now, or nil.
	sess *sb.Session
}

// authenticate turns a credential into a principal. Errors wrap
// sb.ErrInvalidToken (401), sb.ErrExpired (401), sb.ErrUnavailable (503) or
// errConflicting (401).
func (g *Gateway) authenticate(ctx context.Context, c credential) (authResult, error) {
	var ticket *sb.Ticket
	if c.ticket != "" {
		if g.cfg.Tickets == nil {
			return authResult{}, fmt.Errorf("tickets disabled: %w", sb.ErrInvalidToken)
		}
		t, err := g.cfg.Tickets.Redeem(ctx, c.ticket)
		if err != nil {
			return authResult{}, fmt.Errorf("redeem ticket: %w", err)
		}
		ticket = t
	}
	var res authResult
	var err error
	switch c.kind {
	case kindTicket:
		res, err = g.fromTicket(ctx, ticket)
	case kindSession:
		res, err = g.fromSession(ctx, c.token)
	case kindJWT:
		res, err = g.fromVerifier(ctx, g.cfg.JWT, c.token, sb.AuthJWT)
	case kindAPIKey:
		res, err = g.fromVerifier(ctx, g.cfg.APIKeys, c.token, sb.AuthAPIKey)
	default:
		err = sb.ErrInvalidToken
	}
	if err != nil {
		return authResult{}, err
	}
	if ticket != nil && c.kind != kindTicket {
		// The ticket came along with another credential: it must stand for
		// the same principal.
		if ticket.UserID != res.p.UserID || ticket.SessionID != res.p.SessionID {
			return authResult{}, errConflicting
		}
	}
	return res, nil
}

func (g *Gateway) sessionScopes() []string {
	return append([]string(nil), g.sessionDefault...)
}

func (g *Gateway) fromSession(ctx context.Context, token string) (authResult, error) {
	s, err := g.cfg.Manager.Authenticate(ctx, token)
	if err != nil {
		return authResult{}, err
	}
	return authResult{
		p: &sb.Principal{
			Method: sb.AuthSession, UserID: s.UserID, SessionID: s.ID, Session: s,
			Scopes: s.ScopesOr(g.sessionDefault), ExpiresAt: s.Deadline(),
		},
		sess: s,
	}, nil
}

func (g *Gateway) fromVerifier(ctx context.Context, v sb.TokenVerifier, token string, m sb.AuthMethod) (authResult, error) {
	if v == nil {
		return authResult{}, fmt.Errorf("%s disabled: %w", m, sb.ErrInvalidToken)
	}
	p, err := v.Verify(ctx, token)
	if err != nil {
		return authResult{}, err
	}
	if p == nil {
		return authResult{}, fmt.Errorf("%s without subject: %w", m, sb.ErrInvalidToken)
	}
	// A verifier is the door its user IDs come in by: hold them to the
	// same rules as every other.
	if err := sb.CheckUserID(p.UserID); err != nil {
		return authResult{}, fmt.Errorf("%s subject: %v: %w", m, err, sb.ErrInvalidToken)
	}
	p.Method = m
	if !p.ExpiresAt.IsZero() && !g.clock.Now().Before(p.ExpiresAt) {
		return authResult{}, sb.ErrExpired
	}
	res := authResult{p: p}
	if p.SessionID != "" {
		s, err := g.boundSession(ctx, p.SessionID, p.UserID)
		if err != nil {
			return authResult{}, err
		}
		p.Session, res.sess = s, s
	}
	return res, nil
}

func (g *Gateway) fromTicket(ctx context.Context, t *sb.Ticket) (authResult, error) {
	if t == nil || t.UserID == "" {
		return authResult{}, sb.ErrInvalidToken
	}
	p := &sb.Principal{Method: t.Method, UserID: t.UserID, SessionID: t.SessionID, Scopes: append([]string(nil), t.Scopes...), KeyID: t.KeyID}
	switch p.Method {
	case sb.AuthSession, "":
		p.Method = sb.AuthSession
		if p.SessionID == "" {
			return authResult{}, fmt.Errorf("session ticket without session: %w", sb.ErrInvalidToken)
		}
		if len(p.Scopes) == 0 {
			p.Scopes = g.sessionScopes()
		}
	case sb.AuthJWT, sb.AuthAPIKey:
		if !t.ExpiresAt.IsZero() {
			if !g.clock.Now().Before(t.ExpiresAt) {
				return authResult{}, sb.ErrExpired
			}
			p.ExpiresAt = t.ExpiresAt
		}
	default:
		return authResult{}, fmt.Errorf("ticket with unknown method: %w", sb.ErrInvalidToken)
	}
	res := authResult{p: p}
	if p.SessionID != "" {
		s, err := g.boundSession(ctx, p.SessionID, p.UserID)
		if err != nil {
			return authResult{}, err
		}
		p.Session, res.sess = s, s
		if p.Method == sb.AuthSession {
			p.ExpiresAt = s.Deadline()
		}
	}
	return res, nil
}

// boundSession reads the session a JWT or ticket names; it must be live and
// belong to userID.
func (g *Gateway) boundSession(ctx context.Context, id, userID string) (*sb.Session, error) {
	s, err := g.cfg.Manager.Get(ctx, id)
	if errors.Is(err, sb.ErrNotFound) {
		return nil, fmt.Errorf("bound session: %w", sb.ErrInvalidToken)
	}
	if err != nil {
		return nil, err
	}
	if s.UserID != userID {
		return nil, fmt.Errorf("bound session of another user: %w", sb.ErrInvalidToken)
	}
	return s, nil
}
