package auth

import (
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"net/http"
	"net/url"
	"strings"

	sb "github.com/sessionbridge/sessionbridge"
)

// HeaderSessionToken is the request header that carries a session token for
// clients that do not use cookies.
const HeaderSessionToken = "X-Session-Token"

// DefaultCookieName is the session cookie's name when Config.CookieName is
// empty.
const DefaultCookieName = "sb_session"

// MaxCredentialLen bounds any single credential; longer ones are refused
// before any parsing or store access.
const MaxCredentialLen = 8 << 10

// Door is the way a request comes in; the doors differ only in which
// credentials they look for.
type Door uint8

const (
	// HTTP is an ordinary HTTP request: Authorization, X-Session-Token and
	// the cookie are credentials; the query string is not.
	HTTP Door = iota + 1
	// Upgrade is a WebSocket upgrade: besides those, ?ticket= and (when
	// enabled) ?session_token=.
	Upgrade
)

// Source names where a credential came from, in precedence order.
type Source uint8

// Credential sources, in precedence order.
const (
	SourceNone   Source = iota
	SourceBearer        // Authorization: Bearer
	SourceHeader        // X-Session-Token
	SourceCookie        // the session cookie
	SourceTicket        // ?ticket=
	SourceQuery         // ?session_token=
)

// String returns the source's name as audits and logs show it.
func (s Source) String() string {
	switch s {
	case SourceBearer:
		return "bearer"
	case SourceHeader:
		return "header"
	case SourceCookie:
		return "cookie"
	case SourceTicket:
		return "ticket"
	case SourceQuery:
		return "query"
	}
	return "none"
}

// Kind says what a credential is.
type Kind uint8

// Credential kinds. A bearer token is the admin token when it equals it, an
// API key when it has the API key prefix, a JWT when it has two dots, and a
// session token otherwise; every other source carries a session token,
// except ?ticket=.
const (
	KindSession Kind = iota + 1
	KindJWT
	KindAPIKey
	KindTicket
	KindAdmin
)

// String returns the kind's name, which is also the auth method of the
// principal it yields (except for tickets, which stand for another method).
func (k Kind) String() string {
	switch k {
	case KindSession:
		return string(sb.AuthSession)
	case KindJWT:
		return string(sb.AuthJWT)
	case KindAPIKey:
		return string(sb.AuthAPIKey)
	case KindTicket:
		return "ticket"
	case KindAdmin:
		return string(MethodAdmin)
	}
	return "none"
}

// Credential is what a request authenticates with: the winning credential of
// [Authenticator.Extract].
type Credential struct {
	Source Source
	Kind   Kind
	// Token is the winning credential itself. It is a secret: never log it.
	Token string
	// Ticket, when the request also carries a ticket, is that ticket: it is
	// redeemed (and so used up) whether or not it is the winning credential,
	// and must stand for the same principal as the winner.
	Ticket string
	// Cookie reports whether a session cookie came with the request, so
	// that the origin rules for ambient credentials apply.
	Cookie bool
	// Explicit reports whether the request carries a credential that a
	// client sets on purpose (Authorization, X-Session-Token, a query
	// credential) rather than the ambient cookie. It is set on errors too,
	// so that a door can tell a problem of the cookie alone.
	Explicit bool
}

// Reasons for refusing the credentials of a request; each is also the
// audit reason.
var (
	// ErrNoCredentials: the request carries no credential at all.
	ErrNoCredentials = errors.New("missing_credentials")
	// ErrConflicting: the request carries credentials that disagree (or
	// several Authorization headers, or several tickets).
	ErrConflicting = errors.New("conflicting_credentials")
	// ErrMalformed: a credential is empty where one is announced, too long,
	// or the query string cannot be parsed.
	ErrMalformed = errors.New("malformed_credentials")
)

// Extract finds the credential of a request. Sources, first found wins:
// Authorization Bearer, X-Session-Token, the session cookie, and on the
// upgrade door ?ticket= and ?session_token= (only when enabled). Empty
// header and cookie values carry no credential (a cleared cookie). An
// Authorization header of another scheme (such as Basic, which a proxy in
// front may use) is not ours and is ignored.
//
// The one conflict rule: when several sources are present they must all
// carry the same token (a ticket is checked against the winner once it is
// redeemed, by Authenticate); otherwise ErrConflicting. Every credential is
// at most MaxCredentialLen bytes, else ErrMalformed. Extract reads nothing
// but the request.
func (a *Authenticator) Extract(r *http.Request, door Door) (Credential, error) {
	// Written without closures or a slice of tokens: this runs on every
	// request, and neither may cost an allocation.
	var (
		c        Credential
		conflict bool
		bad      bool
	)
	fail := func(c Credential, err error) (Credential, error) { return Credential{Explicit: c.Explicit}, err }

	bearers := 0
	for _, v := range r.Header.Values("Authorization") {
		scheme, tok, ok := strings.Cut(strings.TrimSpace(v), " ")
		if !strings.EqualFold(scheme, "Bearer") {
			continue
		}
		c.Explicit = true
		tok = strings.TrimSpace(tok)
		if !ok || tok == "" {
			return fail(c, ErrMalformed)
		}
		if bearers++; bearers > 1 {
			return fail(c, ErrConflicting)
		}
		c.Source, c.Token = SourceBearer, tok
	}
	// note records one more credential: the first is the winner, every
	// other must carry the same token.
	note := func(c *Credential, src Source, tok string) {
		if c.Source == SourceNone {
			c.Source, c.Token = src, tok
		} else if tok != c.Token {
			conflict = true
		}
		bad = bad || len(tok) > MaxCredentialLen
	}
	bad = len(c.Token) > MaxCredentialLen
	for _, v := range r.Header.Values(HeaderSessionToken) {
		if v = strings.TrimSpace(v); v != "" {
			c.Explicit = true
			note(&c, SourceHeader, v)
		}
	}
	for _, ck := range r.CookiesNamed(a.cookieName) {
		if ck.Value != "" {
			c.Cookie = true
			note(&c, SourceCookie, ck.Value)
		}
	}
	if door == Upgrade && r.URL != nil && r.URL.RawQuery != "" {
		q, err := url.ParseQuery(r.URL.RawQuery)
		if err != nil {
			c.Explicit = true
			return fail(c, ErrMalformed)
		}
		tickets := q["ticket"]
		if len(tickets) > 0 {
			c.Explicit = true
		}
		if len(tickets) > 1 {
			return fail(c, ErrConflicting)
		}
		if len(tickets) == 1 {
			c.Ticket = tickets[0]
			if c.Ticket == "" || len(c.Ticket) > MaxCredentialLen {
				return fail(c, ErrMalformed)
			}
		}
		if c.Source == SourceNone && c.Ticket != "" {
			c.Source, c.Token = SourceTicket, c.Ticket
		}
		if a.allowQuery {
			for _, v := range q["session_token"] {
				c.Explicit = true
				if v == "" {
					return fail(c, ErrMalformed)
				}
				if c.Source == SourceTicket {
					// A winning ticket is compared by principal, after it is
					// redeemed, with what comes before it, never with what
					// comes after: two URL credentials are one too many.
					return fail(c, ErrConflicting)
				}
				note(&c, SourceQuery, v)
			}
		}
	}
	switch {
	case c.Source == SourceNone:
		return fail(c, ErrNoCredentials)
	case conflict:
		return fail(c, ErrConflicting)
	case bad:
		return fail(c, ErrMalformed)
	}
	switch {
	case c.Source == SourceTicket:
		c.Kind = KindTicket
	case c.Source != SourceBearer:
		c.Kind = KindSession
	case a.adminHash != nil && a.isAdmin(c.Token):
		c.Kind = KindAdmin
	case sb.IsAPIKey(c.Token):
		c.Kind = KindAPIKey
	case strings.Count(c.Token, ".") == 2:
		c.Kind = KindJWT
	default:
		c.Kind = KindSession
	}
	return c, nil
}

// isAdmin compares tok with the admin token in constant time; hashing first
// makes the comparison independent of the lengths too.
func (a *Authenticator) isAdmin(tok string) bool {
	h := sha256.Sum256([]byte(tok))
	return subtle.ConstantTimeCompare(h[:], a.adminHash) == 1
}

// hasQueryCredential reports whether an upgrade request carries a query
// credential the upgrade door would consider.
func (a *Authenticator) hasQueryCredential(r *http.Request) bool {
	if r.URL == nil || r.URL.RawQuery == "" {
		return false
	}
	q, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return true // let the door's own extraction refuse it
	}
	return q.Has("ticket") || (a.allowQuery && q.Has("session_token"))
}
