package gateway

import (
	"encoding/json"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
)

// jsonFrame is a frame as encoding/json writes it, which the hand encoder
// must match byte for byte.
func jsonFrame(t *testing.T, typ, id string, data any) string {
	t.Helper()
	b, err := json.Marshal(outFrame{Type: typ, ID: id, Data: data})
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// awkward are strings that exercise every escape encoding/json makes.
var awkward = []string{
	"", "plain", `q"uote`, `back\slash`, "<script>&amp;</script>", "tab\tnl\ncr\rbs\bff\f", "\x00\x01\x1f\x7f",
	"caf\u00e9 \u2028 \u2029 \u202e", "bad \xff\xfe utf8", "emoji \U0001F600", "\xe2\x80", "end\\",
}

func randomString(r *rand.Rand) string {
	if r.IntN(3) == 0 {
		return awkward[r.IntN(len(awkward))]
	}
	var b strings.Builder
	for range r.IntN(24) {
		switch r.IntN(10) {
		case 0:
			b.WriteByte(byte(r.IntN(0x20)))
		case 1:
			b.WriteString(awkward[r.IntN(len(awkward))])
		case 2:
			b.WriteRune(rune(r.IntN(0x30000)))
		default:
			b.WriteByte(byte(' ' + r.IntN(95)))
		}
	}
	return b.String()
}

var sessionDatas = []json.RawMessage{
	nil, json.RawMessage(`{}`), json.RawMessage(`{"theme":"dark","cart":{"items":3}}`),
	json.RawMessage(`{"a":"x\"y\\","b":[1,2.5e3,true,null]}`),
	json.RawMessage(`{"a": 1}`),                 // not compact: encoding/json compacts it
	json.RawMessage(`{"html":"<b>&</b>"}`),      // escaped for HTML by encoding/json
	json.RawMessage("{\"ls\":\"\u2028\"}"),      // U+2028, escaped by encoding/json
	json.RawMessage(`{"s":"a\\\"b","t":" x "}`), // spaces inside strings stay
}

func randomTime(r *rand.Rand) time.Time {
	switch r.IntN(6) {
	case 0:
		return time.Time{}
	case 1:
		return time.Date(10001, 1, 1, 0, 0, 0, 0, time.UTC) // encoding/json refuses it
	case 2:
		return time.Unix(r.Int64N(4e9), r.Int64N(1e9)).In(time.FixedZone("x", 3600*r.IntN(14)))
	}
	return time.Unix(r.Int64N(4e9), r.Int64N(1e9)).UTC()
}

func randomScopes(r *rand.Rand) []string {
	switch r.IntN(3) {
	case 0:
		return nil
	case 1:
		return []string{}
	}
	out := make([]string, r.IntN(4)+1)
	for i := range out {
		out[i] = randomString(r)
	}
	return out
}

func randomPublic(r *rand.Rand) sb.PublicSession {
	return sb.PublicSession{
		ID: randomString(r), UserID: randomString(r), Data: sessionDatas[r.IntN(len(sessionDatas))],
		Device: sb.Device{
			UserAgent: randomString(r), Browser: randomString(r), OS: randomString(r),
			DeviceType: randomString(r), IP: randomString(r),
		},
		CreatedAt: randomTime(r), LastSeenAt: randomTime(r), ExpiresAt: randomTime(r), AbsoluteExpiresAt: randomTime(r),
		Scopes: randomScopes(r), Version: r.Uint64(),
	}
}

// The hand-written frames are byte for byte what encoding/json writes, and
// whatever it cannot write the same way goes to encoding/json (which may
// then refuse it, as before).
func TestFastFramesMatchJSON(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	fast := 0
	for i := range 20000 {
		var data any
		ps := randomPublic(r)
		switch i % 4 {
		case 0:
			w := welcomeData{ConnectionID: randomString(r), Auth: sb.AuthMethod(randomString(r)), UserID: randomString(r), Scopes: randomScopes(r)}
			if r.IntN(2) == 0 {
				w.Session = &ps
			}
			if r.IntN(2) == 0 {
				at := randomTime(r)
				w.ExpiresAt = &at
			}
			data = w
		case 1:
			data = sessionUpdatedData{Session: ps, Source: sb.Source(randomString(r))}
		case 2:
			data = sessionData{Session: ps}
		case 3:
			data = &welcomeData{ConnectionID: randomString(r), Session: &ps}
		}
		typ, id := randomString(r), ""
		if r.IntN(2) == 0 {
			id = randomString(r)
		}
		want, wantErr := json.Marshal(outFrame{Type: typ, ID: id, Data: data})
		got, ok := appendFastFrame(nil, typ, id, data)
		if ok {
			fast++
			if wantErr != nil {
				t.Fatalf("frame %d: hand-encoded %s where encoding/json fails: %v", i, got, wantErr)
			}
			if string(got) != string(want) {
				t.Fatalf("frame %d:\n got %s\nwant %s", i, got, want)
			}
		}
		enc, err := encodeFrame(typ, id, data)
		if (err == nil) != (wantErr == nil) || err == nil && string(enc) != string(want) {
			t.Fatalf("frame %d: encodeFrame = %s, %v; encoding/json %s, %v", i, enc, err, want, wantErr)
		}
	}
	if fast < 5000 {
		t.Fatalf("only %d of 20000 frames took the hand-written path", fast)
	}
}

// The frames of a connect take the hand-written path.
func TestWelcomeIsHandEncoded(t *testing.T) {
	ps := benchPublic()
	w := welcomeData{ConnectionID: newConnID(), Auth: sb.AuthSession, UserID: ps.UserID, Session: &ps, Scopes: []string{"*"}, ExpiresAt: timePtr(ps.ExpiresAt)}
	got, ok := appendFastFrame(nil, TypeWelcome, "", w)
	if !ok || string(got) != jsonFrame(t, TypeWelcome, "", w) {
		t.Fatalf("welcome: %v %s", ok, got)
	}
}
