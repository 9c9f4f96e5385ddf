// Package dashboard serves the sessionbridge dashboard: a single page, shown at
// "/", where a user signs in, sees the current session and every device signed
// in to the same account, revokes devices, edits a preference stored in the
// session, and watches the frames arriving on the page's own WebSocket.
//
// The page is plain HTML, CSS and JavaScript embedded in the binary. Its
// socket runs on the client library of clients/js, whose compiled modules are
// committed under static/sessionbridge/ and served at /sessionbridge/, so that
// building the binary needs no Node. It talks only to the documented HTTP API
// (/auth/...) and the WebSocket protocol (/ws), so it doubles as a reference
// client for both.
package dashboard

import (
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"io/fs"
	"net/http"
	"path"
	"strconv"
	"strings"
)

//go:embed static
var static embed.FS

// ContentSecurityPolicy is the Content-Security-Policy sent with every response
// of Handler. Scripts, styles and connections are limited to the page's own
// origin ('self' also covers ws: and wss: to the same host and port, as the
// browser tests check), nothing may frame
// the page, and forms may only post to it.
const ContentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; " +
	"img-src 'self'; connect-src 'self'; manifest-src 'self'; base-uri 'none'; " +
	"form-action 'self'; frame-ancestors 'none'"

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string
}

// contentType returns the media type of an embedded file by its extension.
// It is explicit, rather than left to the operating system's MIME tables, so
// that the page works the same on every machine; "" means not to serve it.
func contentType(ext string) string {
	switch ext {
	case ".html":
		return "text/html; charset=utf-8"
	case ".js":
		return "text/javascript; charset=utf-8"
	case ".css":
		return "text/css; charset=utf-8"
	case ".svg":
		return "image/svg+xml"
	}
	return ""
}

// Handler returns the handler that serves the dashboard: index.html at "/"
// and the page's assets at their own paths ("/app.js", "/style.css", ...).
// Every response carries Cache-Control: no-cache (browsers revalidate with the
// ETag, so a new release shows at once), a strict Content-Security-Policy,
// X-Content-Type-Options: nosniff and Referrer-Policy: same-origin. Unknown
// paths get 404 and methods other than GET and HEAD get 405.
//
// Mount it at "/" of the server that serves the /auth API and /ws, since the
// page calls them on its own origin.
func Handler() http.Handler {
	assets := make(map[string]asset)
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := static.ReadFile(p)
		if err != nil {
			return err
		}
		ct := contentType(path.Ext(p))
		if ct == "" {
			// A file the page does not need; never serve it with a guessed type.
			return nil
		}
		sum := sha256.Sum256(body)
		name := "/" + p[len("static/"):]
		if name == "/index.html" {
			name = "/"
		}
		assets[name] = asset{body: body, contentType: ct, etag: `"` + hex.EncodeToString(sum[:16]) + `"`}
		return nil
	})
	if err != nil {
		// The files are compiled in: failing to read them is a broken build.
		panic("dashboard: reading embedded files: " + err.Error())
	}
	return &handler{assets: assets}
}

type handler struct {
	assets map[string]asset
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	hdr := w.Header()
	hdr.Set("Content-Security-Policy", ContentSecurityPolicy)
	hdr.Set("X-Content-Type-Options", "nosniff")
	hdr.Set("Referrer-Policy", "same-origin")
	hdr.Set("X-Frame-Options", "DENY")
	hdr.Set("Cache-Control", "no-cache")

	a, ok := h.assets[r.URL.Path]
	if !ok {
		http.Error(w, "404 page not found", http.StatusNotFound)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		hdr.Set("Allow", "GET, HEAD")
		http.Error(w, "405 method not allowed", http.StatusMethodNotAllowed)
		return
	}
	hdr.Set("ETag", a.etag)
	if noneMatch(r.Header.Get("If-None-Match"), a.etag) {
		w.WriteHeader(http.StatusNotModified)
		return
	}
	// Ranges are not served: the files are small, and a whole answer keeps
	// every response's headers the same.
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Content-Length", strconv.Itoa(len(a.body)))
	w.WriteHeader(http.StatusOK)
	if r.Method != http.MethodHead {
		w.Write(a.body)
	}
}

// noneMatch reports whether an If-None-Match header value names etag (weak
// comparison, as RFC 9110 asks for If-None-Match) or is "*".
func noneMatch(header, etag string) bool {
	for header != "" {
		var tag string
		tag, header, _ = strings.Cut(header, ",")
		tag = strings.TrimSpace(tag)
		if tag == "*" || strings.TrimPrefix(tag, "W/") == etag {
			return true
		}
	}
	return false
}
