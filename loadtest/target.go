package loadtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"strings"
)

// ErrRemoteTarget means a target resolved to an address that is not loopback
// and remote targets were not allowed.
var ErrRemoteTarget = errors.New("loadtest: target is not a loopback address")

// Resolver looks up the IP addresses of a host. *net.Resolver implements it.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// ParseNode checks that raw is an http or https base URL without path, query
// or credentials, and returns it normalised (no trailing slash).
func ParseNode(raw string) (*url.URL, error) {
	u, err := url.Parse(strings.TrimRight(strings.TrimSpace(raw), "/"))
	if err != nil {
		return nil, fmt.Errorf("loadtest: node %q: %w", raw, err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Errorf("loadtest: node %q: scheme must be http or https", raw)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("loadtest: node %q: missing host", raw)
	}
	if u.User != nil || (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
		return nil, fmt.Errorf("loadtest: node %q: want a base URL like http://127.0.0.1:8080", raw)
	}
	u.Path = ""
	return u, nil
}

// CheckLoopback resolves the host of every node URL and returns an error
// wrapping ErrRemoteTarget unless every address it resolves to is a loopback
// address. A nil resolver means net.DefaultResolver. IP literals are checked
// without a lookup.
func CheckLoopback(ctx context.Context, r Resolver, nodes []*url.URL) error {
	if r == nil {
		r = net.DefaultResolver
	}
	for _, u := range nodes {
		host := u.Hostname()
		addrs, err := resolve(ctx, r, host)
		if err != nil {
			return fmt.Errorf("loadtest: resolving %s: %w", host, err)
		}
		if len(addrs) == 0 {
			return fmt.Errorf("loadtest: %s resolves to no address", host)
		}
		for _, a := range addrs {
			if !a.Unmap().IsLoopback() {
				return fmt.Errorf("%w: %s resolves to %s (use --allow-remote to load a remote server)", ErrRemoteTarget, host, a)
			}
		}
	}
	return nil
}

func resolve(ctx context.Context, r Resolver, host string) ([]netip.Addr, error) {
	if a, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{a}, nil
	}
	return r.LookupNetIP(ctx, "ip", host)
}

// DefaultSources returns the local source addresses to spread sockets over when
// none are given: 127.0.0.1, 127.0.0.2, ... enough that no address carries more
// than perSource sockets, if every node is reached over IPv4 loopback; nil
// otherwise (the kernel then picks the source address).
func DefaultSources(ctx context.Context, r Resolver, nodes []*url.URL, sockets, perSource int) []netip.Addr {
	if r == nil {
		r = net.DefaultResolver
	}
	for _, u := range nodes {
		addrs, err := resolve(ctx, r, u.Hostname())
		if err != nil || len(addrs) == 0 {
			return nil
		}
		for _, a := range addrs {
			a = a.Unmap()
			if !a.Is4() || !a.IsLoopback() {
				return nil
			}
		}
	}
	if perSource <= 0 {
		perSource = defaultPerSource
	}
	n := max(1, (sockets+perSource-1)/perSource)
	n = min(n, 254)
	out := make([]netip.Addr, n)
	for i := range out {
		out[i] = netip.AddrFrom4([4]byte{127, 0, 0, byte(i + 1)})
	}
	return out
}

// ParseSources parses a comma-separated list of local IP addresses.
func ParseSources(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for f := range strings.SplitSeq(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		a, err := netip.ParseAddr(f)
		if err != nil {
			return nil, fmt.Errorf("loadtest: source address %q: %w", f, err)
		}
		out = append(out, a)
	}
	return out, nil
}
