package sessionbridge_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/sessionbridge/sessionbridge"
)

func TestCheckUserID(t *testing.T) {
	for id, ok := range map[string]bool{
		"alice":                  true,
		"alice@example.com":      true,
		"élodie":                 true,
		"用户":                     true,
		"a b":                    true,
		strings.Repeat("u", 256): true,
		strings.Repeat("é", 128): true,
		"":                       false,
		strings.Repeat("u", 257): false,
		"\xffroot":               false,
		"\xferoot":               false,
		"root\xc3":               false,
		"\ufffdroot":             false,
		"a\x00b":                 false,
		"a\nb":                   false,
		"a\x7fb":                 false,
		"a\u0085b":               false, // C1 next line
		"a\u009bb":               false, // C1 CSI
		strings.Repeat("é", 129): false,
	} {
		err := sessionbridge.CheckUserID(id)
		if (err == nil) != ok {
			t.Errorf("CheckUserID(%q) = %v, want ok=%v", id, err, ok)
		}
		if err != nil && !errors.Is(err, sessionbridge.ErrInvalidUserID) {
			t.Errorf("CheckUserID(%q) = %v, does not wrap ErrInvalidUserID", id, err)
		}
	}
}

// "\xffroot" and "\xferoot" are different byte strings that every lossy
// decoder turns into the same "\ufffdroot": neither may become a user, nor
// may the collapsed form.
func TestCreateRefusesUserIDsThatCollapse(t *testing.T) {
	f := newFixture(t)
	for _, id := range []string{"\xffroot", "\xferoot", "\ufffdroot", "root\n", ""} {
		if s, _, err := f.m.Create(ctx, sessionbridge.NewSession{UserID: id}, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrInvalidUserID) {
			t.Errorf("Create for %q = %v, %v; want ErrInvalidUserID", id, s, err)
		}
	}
	if list, err := f.m.List(ctx, "\ufffdroot"); err != nil || len(list) != 0 {
		t.Fatalf("sessions for the collapsed ID: %d, %v", len(list), err)
	}
}
