// Package httpapi connects HTTP requests to sessionbridge sessions.
//
// [Sessions] is the library half: a middleware that authenticates the request
// through an [github.com/sessionbridge/sessionbridge/auth.Authenticator]
// (the sb_session cookie, the X-Session-Token
// header, or a Bearer session token, JWT or API key) and loads its principal
// and session into the request context, [FromContext] and
// [PrincipalFromContext] to read them, [Sessions.Require] to guard handlers,
// and [Sessions.Login] and [Sessions.Logout] that create and end sessions with
// safe cookies. Share the authenticator with the gateway (Sessions.Auth,
// gateway.Config.Auth) and a socket mounted behind the middleware is not
// authenticated twice.
//
// [API] is the server half: the user routes under /auth/ (login, logout, my
// session, my devices, WebSocket tickets), the admin routes under /api/v1/ and
// the health probes, as documented in docs/http-api.md. Every error answer is a
// JSON body {"error": "<code>", "message": "..."}.
package httpapi
