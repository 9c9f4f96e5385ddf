package sessionbridge_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

func nested(levels int) string {
	return strings.Repeat(`{"a":`, levels-1) + "{}" + strings.Repeat("}", levels-1)
}

func TestDataLimitsDefaults(t *testing.T) {
	var m sessionbridge.Manager
	if b, d := m.DataLimits(); b != 64<<10 || d != 32 {
		t.Fatalf("DataLimits of a zero Manager = %d, %d; want 65536, 32", b, d)
	}
	m.MaxDataBytes, m.MaxDataDepth = 100, 3
	if b, d := m.DataLimits(); b != 100 || d != 3 {
		t.Fatalf("DataLimits = %d, %d; want 100, 3", b, d)
	}
}

// Without a cap, 40 patches of 60 KB each grew one session to 2.4 MB, sent
// whole in every welcome and session.updated frame.
func TestUpdateCapsDataSize(t *testing.T) {
	f := newFixture(t)
	s, _ := f.create(t, "alice")
	chunk := strings.Repeat("x", 60<<10)
	s, err := f.m.Update(ctx, s.ID, json.RawMessage(`{"k0":"`+chunk+`"}`), 0, sessionbridge.Change{})
	if err != nil {
		t.Fatalf("first 60 KB patch: %v", err)
	}
	_, err = f.m.Update(ctx, s.ID, json.RawMessage(`{"k1":"`+chunk+`"}`), 0, sessionbridge.Change{})
	if !errors.Is(err, sessionbridge.ErrDataTooLarge) || !strings.Contains(err.Error(), "more than 65536") {
		t.Fatalf("second 60 KB patch: %v; want ErrDataTooLarge naming the limit", err)
	}
	got, err := f.m.Get(ctx, s.ID)
	if err != nil || got.Version != s.Version || len(got.Data) != len(s.Data) {
		t.Fatalf("a refused update changed the session: %v, version %d -> %d", err, s.Version, got.Version)
	}
	// Shrinking is always possible, and then growing again within the cap.
	if s, err = f.m.Update(ctx, s.ID, json.RawMessage(`{"k0":null,"k1":"`+chunk+`"}`), 0, sessionbridge.Change{}); err != nil {
		t.Fatalf("replacing the chunk: %v", err)
	}
	if string(s.Data) == "" || strings.Contains(string(s.Data), `"k0"`) {
		t.Fatalf("data after replacing: %.40s", s.Data)
	}
}

func TestDataCapsOnCreateAndUpdate(t *testing.T) {
	f := newFixture(t)
	f.m.MaxDataBytes, f.m.MaxDataDepth = 100, 3
	for _, c := range []struct {
		data string
		want error
	}{
		{`{"a":"` + strings.Repeat("x", 92) + `"}`, nil}, // 100 bytes
		{`{"a":"` + strings.Repeat("x", 93) + `"}`, sessionbridge.ErrDataTooLarge},
		{nested(3), nil},
		{nested(4), sessionbridge.ErrDataTooDeep},
		{`{"a":[[{}]]}`, sessionbridge.ErrDataTooDeep},
	} {
		_, _, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: "alice", Data: json.RawMessage(c.data)}, sessionbridge.Change{})
		if !errors.Is(err, c.want) || (c.want == nil) != (err == nil) {
			t.Errorf("Create with %.30s (%d bytes): %v; want %v", c.data, len(c.data), err, c.want)
		}
	}

	s, _ := f.create(t, "bob")
	var err error
	for i := range 3 {
		if s, err = f.m.Update(ctx, s.ID, json.RawMessage(fmt.Sprintf(`{"k%d":"%s"}`, i, strings.Repeat("y", 20))), 0, sessionbridge.Change{}); err != nil {
			t.Fatalf("patch %d: %v", i, err)
		}
	}
	// Each patch is small; the data they add up to is not.
	if _, err := f.m.Update(ctx, s.ID, json.RawMessage(`{"k3":"`+strings.Repeat("y", 20)+`"}`), 0, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrDataTooLarge) {
		t.Fatalf("patch past 100 bytes: %v; want ErrDataTooLarge", err)
	}
	// Depth counts the merged data: a patch two levels deep under an
	// existing two-level member makes it four.
	if s, err = f.m.Update(ctx, s.ID, json.RawMessage(`{"k0":null,"k1":null,"k2":null,"p":{"q":{}}}`), 0, sessionbridge.Change{}); err != nil {
		t.Fatalf("three-level data: %v", err)
	}
	if _, err := f.m.Update(ctx, s.ID, json.RawMessage(`{"p":{"q":{"r":{}}}}`), 0, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrDataTooDeep) || !strings.Contains(err.Error(), "more than 3") {
		t.Fatalf("four-level data: %v; want ErrDataTooDeep naming the limit", err)
	}
	got, err := f.m.Get(ctx, s.ID)
	if err != nil || got.Version != s.Version {
		t.Fatalf("refused updates changed the session: %v", err)
	}
}
