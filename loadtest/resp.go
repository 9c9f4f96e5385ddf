package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"time"
)

// respConn is a minimal RESP2 client for the few commands the tool sends
// to Redis itself (INFO, CLUSTER NODES, SSUBSCRIBE): enough to read the
// server side of a measurement without depending on a Redis library.
type respConn struct {
	c       net.Conn
	br      *bufio.Reader
	timeout time.Duration
}

// Bounds on what a reply may hold, so that a confused or hostile server
// cannot make the tool allocate without limit.
const (
	maxRESPBulk  = 16 << 20
	maxRESPArray = 1 << 20
	maxRESPDepth = 8
)

// respError is an error reply (-ERR ...).
type respError string

func (e respError) Error() string { return "redis: " + string(e) }

// checkRedisAddr refuses a Redis address that is not loopback unless
// allowRemote, as CheckLoopback does for the nodes.
func checkRedisAddr(addr string, allowRemote bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("loadtest: redis address %q: %w", addr, err)
	}
	if allowRemote || host == "localhost" {
		return nil
	}
	if a, err := netip.ParseAddr(host); err == nil && a.IsLoopback() {
		return nil
	}
	return fmt.Errorf("%w: redis %s", ErrRemoteTarget, host)
}

// dialRedis connects to the Redis at addr (host:port), sending AUTH first
// when password is not empty.
func dialRedis(ctx context.Context, addr, password string, allowRemote bool, timeout time.Duration) (*respConn, error) {
	if err := checkRedisAddr(addr, allowRemote); err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: timeout}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("loadtest: redis: %w", err)
	}
	rc := &respConn{c: c, br: bufio.NewReader(c), timeout: timeout}
	if password != "" {
		if _, err := rc.do("AUTH", password); err != nil {
			c.Close()
			return nil, fmt.Errorf("loadtest: redis %s: AUTH refused", addr)
		}
	}
	return rc, nil
}

func (rc *respConn) Close() error { return rc.c.Close() }

// send writes one command without waiting for its reply.
func (rc *respConn) send(args ...string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	_ = rc.c.SetWriteDeadline(time.Now().Add(rc.timeout))
	if _, err := io.WriteString(rc.c, b.String()); err != nil {
		return fmt.Errorf("loadtest: redis: %w", err)
	}
	return nil
}

// read reads one reply: a string (simple or bulk), an int64, nil, a []any,
// or a respError as the error.
func (rc *respConn) read() (any, error) {
	_ = rc.c.SetReadDeadline(time.Now().Add(rc.timeout))
	return readRESP(rc.br, 0)
}

// do sends one command and reads its reply.
func (rc *respConn) do(args ...string) (any, error) {
	if err := rc.send(args...); err != nil {
		return nil, err
	}
	return rc.read()
}

// doString is do for commands whose reply is a string (INFO, CLUSTER NODES).
func (rc *respConn) doString(args ...string) (string, error) {
	v, err := rc.do(args...)
	if err != nil {
		return "", err
	}
	s, ok := v.(string)
	if !ok {
		return "", fmt.Errorf("loadtest: redis: %s answered %T, not a string", args[0], v)
	}
	return s, nil
}

func readRESP(br *bufio.Reader, depth int) (any, error) {
	if depth > maxRESPDepth {
		return nil, errors.New("loadtest: redis: reply nested too deep")
	}
	line, err := br.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("loadtest: redis: %w", err)
	}
	line = strings.TrimSuffix(line, "\r\n")
	if line == "" {
		return nil, errors.New("loadtest: redis: empty reply line")
	}
	body := line[1:]
	switch line[0] {
	case '+':
		return body, nil
	case '-':
		return nil, respError(body)
	case ':':
		n, err := strconv.ParseInt(body, 10, 64)
		if err != nil {
			return nil, fmt.Errorf("loadtest: redis: bad integer %q", body)
		}
		return n, nil
	case '$':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxRESPBulk {
			return nil, fmt.Errorf("loadtest: redis: bad bulk length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(br, b); err != nil {
			return nil, fmt.Errorf("loadtest: redis: %w", err)
		}
		if b[n] != '\r' || b[n+1] != '\n' {
			return nil, errors.New("loadtest: redis: bulk string not terminated")
		}
		return string(b[:n]), nil
	case '*':
		n, err := strconv.Atoi(body)
		if err != nil || n < -1 || n > maxRESPArray {
			return nil, fmt.Errorf("loadtest: redis: bad array length %q", body)
		}
		if n == -1 {
			return nil, nil
		}
		out := make([]any, 0, min(n, 1024))
		for range n {
			v, err := readRESP(br, depth+1)
			var re respError
			if err != nil && !errors.As(err, &re) {
				return nil, err
			}
			if err != nil {
				v = re
			}
			out = append(out, v)
		}
		return out, nil
	default:
		return nil, fmt.Errorf("loadtest: redis: unexpected reply %q", line)
	}
}

// infoFields splits an INFO answer into its name:value fields.
func infoFields(info string) map[string]string {
	out := map[string]string{}
	for l := range strings.SplitSeq(info, "\n") {
		l = strings.TrimSpace(l)
		if l == "" || l[0] == '#' {
			continue
		}
		if k, v, ok := strings.Cut(l, ":"); ok {
			out[k] = v
		}
	}
	return out
}

// CommandStat is one line of INFO commandstats: calls and the microseconds
// Redis spent in them.
type CommandStat struct {
	Calls int64   `json:"calls"`
	USec  float64 `json:"usec"`
}

// commandStats reads the cmdstat_ fields of an INFO answer.
func commandStats(fields map[string]string) map[string]CommandStat {
	out := map[string]CommandStat{}
	for k, v := range fields {
		name, ok := strings.CutPrefix(k, "cmdstat_")
		if !ok {
			continue
		}
		var cs CommandStat
		for kv := range strings.SplitSeq(v, ",") {
			key, val, _ := strings.Cut(kv, "=")
			switch key {
			case "calls":
				cs.Calls, _ = strconv.ParseInt(val, 10, 64)
			case "usec":
				cs.USec, _ = strconv.ParseFloat(val, 64)
			}
		}
		out[name] = cs
	}
	return out
}
