// Package httpapi connects HTTP requests to sessionbridge sessions.
//
// [Sessions] is the library half: a middleware that loads the session named by
// the sb_session cookie (or the X-Session-Token header) into the request
// context, [FromContext] to read it, [Sessions.Require] to guard handlers, and
// [Sessions.Login] and [Sessions.Logout] that create and end sessions with safe
// cookies.
//
// [API] is the server half: the user routes under /auth/ (login, logout, my
// session, my devices, WebSocket tickets), the admin routes under /api/v1/ and
// the health probes, as documented in docs/http-api.md. Every error answer is a
// JSON body {"error": "<code>", "message": "..."}.
package httpapi
