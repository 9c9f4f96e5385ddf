package jwt_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge/jwt"
	"github.com/sessionbridge/sessionbridge/jwt/jwttest"
)

// hs256 signs literal header and claims JSON, so that a test can hand the
// verifier a document no JSON encoder would write.
func hs256(header, payload string) string {
	unsigned := rawToken(header, payload, nil)
	signing := unsigned[:len(unsigned)-1]
	h := hmac.New(sha256.New, secret64)
	h.Write([]byte(signing))
	return signing + "." + b64(h.Sum(nil))
}

// A correctly signed token whose header or claims could be read two ways is
// refused: the JWT library would take the last "sub" and turn invalid UTF-8
// into U+FFFD, so "\xffroot" and "\xferoot" would both become "\ufffdroot".
func TestVerifyRefusesAmbiguousJSON(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64})
	times := fmt.Sprintf(`"iat":%d,"exp":%d`, t0.Unix()-60, t0.Unix()+3600)
	hdr := `{"alg":"HS256","typ":"JWT"}`
	if p, err := v.Verify(context.Background(), hs256(hdr, `{"sub":"alice",`+times+`}`)); err != nil || p.UserID != "alice" {
		t.Fatalf("control token: %v, %v", p, err)
	}
	for name, tok := range map[string]string{
		"duplicate sub":          hs256(hdr, `{"sub":"alice","sub":"root",`+times+`}`),
		"duplicate sub, escaped": hs256(hdr, `{"sub":"alice","\u0073ub":"root",`+times+`}`),
		"duplicate exp":          hs256(hdr, `{"sub":"alice",`+times+`,"exp":99999999999}`),
		"sub not UTF-8":          hs256(hdr, "{\"sub\":\"\xffroot\","+times+"}"),
		"sub lone surrogate":     hs256(hdr, `{"sub":"\udcffroot",`+times+`}`),
		"duplicate alg":          hs256(`{"alg":"none","alg":"HS256"}`, `{"sub":"alice",`+times+`}`),
		"header not UTF-8":       hs256("{\"alg\":\"HS256\",\"kid\":\"\xff\"}", `{"sub":"alice",`+times+`}`),
	} {
		t.Run(name, func(t *testing.T) {
			_, err := v.Verify(context.Background(), tok)
			assertRejected(t, err, jwt.ErrMalformed, tok)
		})
	}
}

// A JWK Set is read with exact member names, and a document with a name twice
// in one object, or invalid UTF-8, is refused whole rather than read one of
// several ways.
func TestJWKSReadStrictly(t *testing.T) {
	good := jwttest.JWK(t, "ec-1", "ES256", &ecKey256().PublicKey)
	upper := map[string]any{}
	for k, v := range good {
		upper[strings.ToUpper(k)] = v
	}
	if _, err := jwt.New(context.Background(), jwt.Config{JWKSFile: writeFile(t, "jwks.json", jwttest.JWKS(t, upper)), Logger: discardLogger()}); err == nil || !strings.Contains(err.Error(), "no usable signature keys") {
		t.Fatalf("JWKS with upper-case member names: %v; want no usable keys", err)
	}

	set := string(jwttest.JWKS(t, good))
	for name, doc := range map[string]string{
		"duplicate kid":  strings.Replace(set, `"kid":"ec-1"`, `"kid":"ec-1","kid":"ec-2"`, 1),
		"duplicate keys": strings.Replace(set, `{"keys":`, `{"keys":[],"keys":`, 1),
		"invalid UTF-8":  strings.Replace(set, `"kid":"ec-1"`, "\"kid\":\"ec-\xff\"", 1),
	} {
		if doc == set {
			t.Fatalf("%s: the set %s has no place to change", name, set)
		}
		_, err := jwt.New(context.Background(), jwt.Config{JWKSFile: writeFile(t, "jwks.json", []byte(doc)), Logger: discardLogger()})
		if err == nil || !strings.Contains(err.Error(), "JWKS is not valid JSON") {
			t.Errorf("%s: New = %v; want the JWKS refused", name, err)
		}
	}
}

// A sub that is valid JSON but no usable user ID (U+FFFD, which a lossy
// encoder put in place of invalid bytes, or a C1 control character) is
// refused like every other user ID.
func TestVerifyRefusesUnusableSubjects(t *testing.T) {
	v := newVerifier(t, jwt.Config{HMACSecret: secret64})
	times := fmt.Sprintf(`"iat":%d,"exp":%d`, t0.Unix()-60, t0.Unix()+3600)
	for _, sub := range []string{`\ufffdroot`, `root\u0085`, `a\u0000b`, strings.Repeat("u", 257), ""} {
		tok := hs256(`{"alg":"HS256"}`, `{"sub":"`+sub+`",`+times+`}`)
		_, err := v.Verify(context.Background(), tok)
		assertRejected(t, err, jwt.ErrBadClaims, tok)
	}
}
