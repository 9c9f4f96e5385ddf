package server

import "testing"

func TestDataCapsReachTheManager(t *testing.T) {
	r := start(t, Config{MaxSessionData: 1000, MaxDataDepth: 8})
	if b, d := r.srv.Manager().DataLimits(); b != 1000 || d != 8 {
		t.Fatalf("Manager caps %d, %d; want 1000, 8", b, d)
	}
	r = start(t, Config{})
	if b, d := r.srv.Manager().DataLimits(); b != 64<<10 || d != 32 {
		t.Fatalf("default caps %d, %d; want 65536, 32", b, d)
	}
}
