package sessionbridge_test

import (
	"encoding/json"
	"testing"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/memory"
)

// BenchmarkAuthenticate measures token verification through the Manager on the
// memory store: parse, one store read, constant-time hash compare.
func BenchmarkAuthenticate(b *testing.B) {
	m, err := sessionbridge.NewManager(memory.New())
	if err != nil {
		b.Fatal(err)
	}
	s, token, err := m.Create(ctx, sessionbridge.NewSession{UserID: "alice", Data: json.RawMessage(`{"role":"admin","theme":"dark"}`)}, sessionbridge.Change{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		got, err := m.Authenticate(ctx, token)
		if err != nil || got.ID != s.ID {
			b.Fatal(err)
		}
	}
}

func BenchmarkAuthenticateParallel(b *testing.B) {
	m, err := sessionbridge.NewManager(memory.New())
	if err != nil {
		b.Fatal(err)
	}
	_, token, err := m.Create(ctx, sessionbridge.NewSession{UserID: "alice"}, sessionbridge.Change{})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := m.Authenticate(ctx, token); err != nil {
				b.Error(err)
				return
			}
		}
	})
}

func BenchmarkMergePatch(b *testing.B) {
	doc := json.RawMessage(`{"user":{"name":"Alice","roles":["admin","dev"]},"theme":"dark","cart":{"items":[1,2,3],"total":42.5},"flags":{"beta":true}}`)
	patch := json.RawMessage(`{"theme":"light","cart":{"items":[1,2,3,4],"total":50},"flags":{"beta":null}}`)
	b.SetBytes(int64(len(doc) + len(patch)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := sessionbridge.MergePatch(doc, patch); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventMarshal(b *testing.B) {
	ev := sampleEvent()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := json.Marshal(ev); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEventUnmarshal(b *testing.B) {
	payload, err := json.Marshal(sampleEvent())
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(payload)))
	b.ReportAllocs()
	for b.Loop() {
		var ev sessionbridge.Event
		if err := json.Unmarshal(payload, &ev); err != nil {
			b.Fatal(err)
		}
	}
}
