package gateway

import (
	"cmp"
	"errors"
	"fmt"
	"net/http"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/auth"
)

// CookieName is the default session cookie; Config.Auth may name another.
const CookieName = auth.DefaultCookieName

// newAuthenticator returns the authenticator cfg asks for: cfg.Auth, or one
// built from the credential fields of cfg when it is nil. Setting both is a
// mistake that would silently ignore one of them, so it is refused.
func newAuthenticator(cfg Config) (*auth.Authenticator, error) {
	if cfg.Auth != nil {
		if cfg.JWT != nil || cfg.APIKeys != nil || len(cfg.AllowedOrigins) > 0 ||
			cfg.AllowQueryToken || cfg.SessionScopes != nil {
			return nil, errors.New("gateway: Config.Auth decides credentials and origins: leave JWT, APIKeys, AllowedOrigins, AllowQueryToken and SessionScopes unset")
		}
		return cfg.Auth, nil
	}
	a, err := auth.New(auth.Config{
		Sessions: cfg.Manager, JWT: cfg.JWT, Keys: cfg.APIKeys,
		AllowedOrigins: cfg.AllowedOrigins, AllowQueryToken: cfg.AllowQueryToken,
		SessionScopes: cfg.SessionScopes, Now: cfg.Now,
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	return a, nil
}

// upgradeAuth is the outcome of authenticating an upgrade.
type upgradeAuth struct {
	res *auth.Result
	// markID and mark are the event mark of the session the credential
	// named, taken before the store read (see eventMarks); empty when the
	// credential named none or a middleware read the session earlier.
	markID string
	mark   uint64
	// keyMarkID and keyMark are the same for the API key the credential
	// named.
	keyMarkID string
	keyMark   uint64
}

// authenticate authenticates an upgrade: it takes the principal a middleware
// in front already found (see auth.Handed), or extracts the request's
// credential, checks its origin and authenticates it. On failure it returns
// the refusal to answer with and the method to audit.
func (g *Gateway) authenticate(r *http.Request, ip string) (upgradeAuth, string, *refusal) {
	if res, ok := g.auth.Handed(r, auth.Upgrade); ok {
		method := string(res.Principal.Method)
		if err := g.auth.Origins().CheckUpgrade(r, res.Credential.Cookie); err != nil {
			return upgradeAuth{}, method, &refuseOrigin
		}
		// The principal is the middleware's: work on a copy.
		p := *res.Principal
		p.Scopes = append([]string(nil), p.Scopes...)
		if p.Session != nil {
			p.Session = p.Session.Clone()
		}
		return upgradeAuth{res: &auth.Result{Principal: &p, Credential: res.Credential}}, method, nil
	}
	cred, err := g.auth.Extract(r, auth.Upgrade)
	if err != nil {
		rf := unauthorized(err.Error())
		return upgradeAuth{}, "", &rf
	}
	method := cred.Kind.String()
	if err := g.auth.Origins().CheckUpgrade(r, cred.Cookie); err != nil {
		return upgradeAuth{}, method, &refuseOrigin
	}
	var ua upgradeAuth
	// The mark is taken before the store read that authenticates: see
	// eventMarks. Only a session credential names its session up front.
	switch cred.Kind {
	case auth.KindSession:
		if id, _, err := sb.ParseToken(cred.Token); err == nil {
			ua.markID, ua.mark = id, g.marks.mark(id)
		}
	case auth.KindAPIKey:
		if id, _, err := sb.ParseAPIKey(cred.Token); err == nil {
			ua.keyMarkID, ua.keyMark = id, g.marks.mark(id)
		}
	}
	// Read past any cache: the registry holds the session from now on and
	// events keep it current, so a cached copy would only cost memory.
	res, err := g.auth.Authenticate(sb.WithoutCache(r.Context()), cred, ip)
	if err == nil {
		ua.res = res
		return ua, string(res.Principal.Method), nil
	}
	// A refused JWT is audited and counted with its reason.
	var jwtReason string
	if cred.Kind == auth.KindJWT && !errors.Is(err, auth.ErrConflicting) {
		jwtReason = g.jwtRefused(err)
	}
	var rf refusal
	switch {
	case errors.Is(err, auth.ErrConflicting):
		rf = unauthorized(auth.ErrConflicting.Error())
	case errors.Is(err, sb.ErrInvalidToken):
		rf = unauthorized(cmp.Or(jwtReason, "invalid_"+cred.Source.String()))
	case errors.Is(err, sb.ErrExpired):
		rf = unauthorized(cmp.Or(jwtReason, "expired_"+cred.Source.String()))
	default:
		// Fail closed: whatever else went wrong (ErrUnavailable or an
		// error the verifier did not classify), nobody gets in.
		g.log.Warn("gateway: authentication unavailable", "method", method, "err", err)
		rf = refuseStore
		rf.reason = cmp.Or(jwtReason, rf.reason)
	}
	return upgradeAuth{}, method, &rf
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
