package jwt

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

func TestJWKSRefusesRedirectToPlainHTTP(t *testing.T) {
	var plainHits atomic.Int64
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		plainHits.Add(1)
		w.Write([]byte(`{"keys":[]}`))
	}))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, plain.URL, http.StatusFound)
	}))
	defer tlsSrv.Close()

	// The default client's redirect policy, with the test server's TLS trust.
	client := tlsSrv.Client()
	client.CheckRedirect = noDowngrade
	v, err := New(context.Background(), Config{
		JWKSURL: tlsSrv.URL, HTTPClient: client,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	err = v.remote.refreshNow(context.Background())
	if err == nil {
		t.Fatal("JWKS fetched through an https-to-http redirect")
	}
	if n := plainHits.Load(); n != 0 {
		t.Errorf("the plain-HTTP server was asked %d times", n)
	}
	if _, err := v.Verify(context.Background(), "eyJhbGciOiJFUzI1NiJ9.e30.c2ln"); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Errorf("Verify with no keys: %v, want ErrUnavailable", err)
	}
}

func TestNoDowngradeAllowsSameSchemeRedirects(t *testing.T) {
	get := func(u string) *http.Request {
		r, err := http.NewRequest(http.MethodGet, u, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if err := noDowngrade(get("https://b.example/k"), []*http.Request{get("https://a.example/k")}); err != nil {
		t.Errorf("https to https: %v", err)
	}
	if err := noDowngrade(get("http://b.example/k"), []*http.Request{get("http://a.example/k")}); err != nil {
		t.Errorf("http to http: %v", err)
	}
	if err := noDowngrade(get("http://b.example/k"), []*http.Request{get("https://a.example/k")}); err == nil {
		t.Error("https to http allowed")
	}
	via := make([]*http.Request, 5)
	for i := range via {
		via[i] = get("https://a.example/k")
	}
	if err := noDowngrade(get("https://a.example/k"), via); err == nil {
		t.Error("a sixth redirect allowed")
	}
}

func TestPlainHTTPToRemoteHostIsFlagged(t *testing.T) {
	for url, want := range map[string]bool{
		"http://idp.example/jwks":  true,
		"http://127.0.0.1:9/jwks":  false,
		"http://[::1]:9/jwks":      false,
		"http://localhost:9/jwks":  false,
		"https://idp.example/jwks": false,
		"http://10.0.0.1/jwks?k=v": true,
	} {
		r, err := newRemote(url, http.DefaultClient, DefaultJWKSRefresh, DefaultJWKSMinRefresh, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		r.cancel()
		if r.insecure != want {
			t.Errorf("%s: insecure = %v, want %v", url, r.insecure, want)
		}
	}
}
