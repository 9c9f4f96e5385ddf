package device

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// ParsePrefixes parses a list of trusted proxy networks. Each entry is a CIDR
// prefix ("10.0.0.0/8", "fd00::/8") or a bare address ("192.0.2.7"), which
// stands for that single address. Blank entries are skipped, so that a list
// split from "a,b," parses. Prefixes are returned masked, and IPv4-mapped IPv6
// prefixes are converted to plain IPv4, matching how ClientIP compares.
func ParsePrefixes(list []string) ([]netip.Prefix, error) {
	out := make([]netip.Prefix, 0, len(list))
	for i, s := range list {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		var p netip.Prefix
		if strings.Contains(s, "/") {
			var err error
			if p, err = netip.ParsePrefix(s); err != nil {
				return nil, fmt.Errorf("device: trusted proxy %d (%q): %w", i, s, err)
			}
		} else {
			a, err := netip.ParseAddr(s)
			if err != nil {
				return nil, fmt.Errorf("device: trusted proxy %d (%q): %w", i, s, err)
			}
			if a.Zone() != "" {
				return nil, fmt.Errorf("device: trusted proxy %d (%q): zoned addresses are not supported", i, s)
			}
			p = netip.PrefixFrom(a, a.BitLen())
		}
		if a := p.Addr(); a.Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(a.Unmap(), p.Bits()-96)
		}
		out = append(out, p.Masked())
	}
	return out, nil
}

// ClientIP returns the IP address of the client that sent r, as a canonical
// string without port ("192.0.2.1", "2001:db8::1").
//
// It starts from the connection's peer address (r.RemoteAddr). Only when that
// peer is inside one of the trusted prefixes does it consult X-Forwarded-For:
// it walks the header from the right (the entry the nearest proxy appended),
// skips addresses that are themselves trusted proxies, and returns the first
// untrusted one. Entries further left were written by the client or by
// untrusted hops and could be forged, so they are never reached. A malformed
// entry ends the walk and the last trusted address seen is returned; if every
// entry is trusted the leftmost one is returned. A header sent by an
// untrusted peer is ignored entirely.
//
// ClientIP returns "" when r.RemoteAddr holds no IP address (for example on a
// Unix socket listener).
func ClientIP(r *http.Request, trusted []netip.Prefix) string {
	peer, ok := parseHostAddr(r.RemoteAddr)
	if !ok {
		return ""
	}
	if !isTrusted(peer, trusted) {
		return peer.String()
	}
	return walkForwarded(peer, r.Header.Values("X-Forwarded-For"), trusted).String()
}

// walkForwarded applies the ClientIP walk to the X-Forwarded-For values of a
// request received from the trusted peer. Several header lines form one list
// in order, so the walk starts at the end of the last line.
func walkForwarded(peer netip.Addr, values []string, trusted []netip.Prefix) netip.Addr {
	last := peer
	for v := len(values) - 1; v >= 0; v-- {
		rest := values[v]
		for {
			entry := rest
			comma := strings.LastIndexByte(rest, ',')
			if comma >= 0 {
				entry, rest = rest[comma+1:], rest[:comma]
			}
			entry = strings.TrimSpace(entry)
			if entry == "" && comma >= 0 {
				// "a,,b" and trailing commas carry no hop.
				continue
			}
			if entry == "" {
				break
			}
			a, ok := parseHostAddr(entry)
			if !ok {
				return last
			}
			if !isTrusted(a, trusted) {
				return a
			}
			last = a
			if comma < 0 {
				break
			}
		}
	}
	return last
}

// parseHostAddr parses an IP address optionally followed by a port
// ("192.0.2.1", "192.0.2.1:443", "[2001:db8::1]:443", "2001:db8::1"),
// returning it with any IPv4-in-IPv6 mapping removed.
func parseHostAddr(s string) (netip.Addr, bool) {
	if a, err := netip.ParseAddr(s); err == nil {
		return a.Unmap(), true
	}
	host, _, err := net.SplitHostPort(s)
	if err != nil {
		return netip.Addr{}, false
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}

func isTrusted(a netip.Addr, trusted []netip.Prefix) bool {
	// Zones are local to a host and never part of a configured prefix.
	a = a.WithZone("")
	for _, p := range trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}
