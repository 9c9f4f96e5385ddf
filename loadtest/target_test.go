package loadtest

import (
	"context"
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

// fakeResolver answers from a table, so the test never touches DNS.
type fakeResolver map[string][]string

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	addrs, ok := f[host]
	if !ok {
		return nil, errors.New("no such host")
	}
	var out []netip.Addr
	for _, a := range addrs {
		out = append(out, netip.MustParseAddr(a))
	}
	return out, nil
}

var resolver = fakeResolver{
	"localhost":   {"127.0.0.1", "::1"},
	"example.com": {"93.184.215.14"},
	"mixed.test":  {"127.0.0.1", "10.1.2.3"},
	"v4only.test": {"127.0.0.1"},
	"mapped.test": {"::ffff:127.0.0.1"},
	"empty.test":  {},
}

func nodes(t *testing.T, raws ...string) []*url.URL {
	t.Helper()
	var out []*url.URL
	for _, r := range raws {
		u, err := ParseNode(r)
		if err != nil {
			t.Fatalf("ParseNode(%q): %v", r, err)
		}
		out = append(out, u)
	}
	return out
}

func TestCheckLoopback(t *testing.T) {
	ctx := context.Background()
	for _, ok := range []string{"http://127.0.0.1:8080", "http://localhost:8080", "http://[::1]:8080", "https://127.9.9.9", "http://mapped.test"} {
		if err := CheckLoopback(ctx, resolver, nodes(t, ok)); err != nil {
			t.Errorf("CheckLoopback(%s) = %v, want accepted", ok, err)
		}
	}
	for _, bad := range []string{"http://10.0.0.1:8080", "http://example.com", "http://mixed.test:1", "http://[2001:db8::1]:80", "http://0.0.0.0:8080"} {
		err := CheckLoopback(ctx, resolver, nodes(t, "http://127.0.0.1:8080", bad))
		if !errors.Is(err, ErrRemoteTarget) {
			t.Errorf("CheckLoopback(%s) = %v, want ErrRemoteTarget", bad, err)
		}
	}
	for _, unresolvable := range []string{"http://nowhere.test", "http://empty.test"} {
		if err := CheckLoopback(ctx, resolver, nodes(t, unresolvable)); err == nil || errors.Is(err, ErrRemoteTarget) {
			t.Errorf("CheckLoopback(%s) = %v, want a resolution error", unresolvable, err)
		}
	}
	// The system resolver handles IP literals without any lookup.
	if err := CheckLoopback(ctx, nil, nodes(t, "http://127.0.0.1:1")); err != nil {
		t.Errorf("CheckLoopback with the default resolver: %v", err)
	}
	if err := CheckLoopback(ctx, nil, nodes(t, "http://10.0.0.1:1")); !errors.Is(err, ErrRemoteTarget) {
		t.Errorf("CheckLoopback(10.0.0.1) with the default resolver = %v, want ErrRemoteTarget", err)
	}
}

func TestRunRefusesRemoteUnlessAllowed(t *testing.T) {
	ctx := context.Background()
	_, err := Run(ctx, Config{Nodes: []string{"http://example.com:8080"}, AdminToken: "x", Resolver: resolver})
	if !errors.Is(err, ErrRemoteTarget) {
		t.Fatalf("Run against example.com = %v, want ErrRemoteTarget", err)
	}
	remote := nodes(t, "http://example.com:8080", "http://10.0.0.1:8080")
	if err := checkTargets(ctx, Config{Resolver: resolver}, remote); !errors.Is(err, ErrRemoteTarget) {
		t.Fatalf("checkTargets without AllowRemote = %v, want ErrRemoteTarget", err)
	}
	if err := checkTargets(ctx, Config{Resolver: resolver, AllowRemote: true}, remote); err != nil {
		t.Fatalf("checkTargets with AllowRemote = %v, want nil", err)
	}
}

func TestParseNode(t *testing.T) {
	for _, bad := range []string{"127.0.0.1:8080", "ftp://127.0.0.1", "http://", "http://u:p@127.0.0.1", "http://127.0.0.1/x", "http://127.0.0.1/?a=b"} {
		if _, err := ParseNode(bad); err == nil {
			t.Errorf("ParseNode(%q) accepted", bad)
		}
	}
	u, err := ParseNode(" http://127.0.0.1:8080/ ")
	if err != nil || u.String() != "http://127.0.0.1:8080" {
		t.Fatalf("ParseNode = %v, %v", u, err)
	}
	if got := wsURL(u.String()); got != "ws://127.0.0.1:8080/ws" {
		t.Fatalf("wsURL = %q", got)
	}
	if got := wsURL("https://h:1"); got != "wss://h:1/ws" {
		t.Fatalf("wsURL = %q", got)
	}
}

func TestDefaultSources(t *testing.T) {
	ctx := context.Background()
	got := DefaultSources(ctx, resolver, nodes(t, "http://127.0.0.1:8080", "http://v4only.test:8081"), 45000, 20000)
	var s []string
	for _, a := range got {
		s = append(s, a.String())
	}
	if strings.Join(s, ",") != "127.0.0.1,127.0.0.2,127.0.0.3" {
		t.Fatalf("DefaultSources for 45k sockets = %v", s)
	}
	if got := DefaultSources(ctx, resolver, nodes(t, "http://127.0.0.1:8080"), 10, 20000); len(got) != 1 {
		t.Fatalf("DefaultSources for 10 sockets = %v", got)
	}
	// Targets reached over IPv6 (or possibly so) are dialled from any address.
	if got := DefaultSources(ctx, resolver, nodes(t, "http://localhost:8080"), 10, 20000); got != nil {
		t.Fatalf("DefaultSources for localhost = %v, want nil", got)
	}
	srcs, err := ParseSources("127.0.0.2, 127.0.0.3,,::1")
	if err != nil || len(srcs) != 3 || srcs[2] != netip.IPv6Loopback() {
		t.Fatalf("ParseSources = %v, %v", srcs, err)
	}
	if _, err := ParseSources("127.0.0.300"); err == nil {
		t.Fatal("ParseSources accepted a bad address")
	}
}

func TestParseScenarios(t *testing.T) {
	all, err := ParseScenarios("")
	if err != nil || len(all) != len(AllScenarios) {
		t.Fatalf("ParseScenarios(\"\") = %v, %v", all, err)
	}
	got, err := ParseScenarios("revoke, connect,revoke")
	if err != nil || strings.Join(got, ",") != "revoke,connect" {
		t.Fatalf("ParseScenarios = %v, %v", got, err)
	}
	if _, err := ParseScenarios("connect,bogus"); err == nil {
		t.Fatal("ParseScenarios accepted an unknown scenario")
	}
}
