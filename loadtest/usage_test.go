package loadtest

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// fakeRedis answers one INFO commandstats on a loopback port.
func fakeRedis(t *testing.T, info string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		for range 5 { // *2, $4, INFO, $12, commandstats
			if _, err := br.ReadString('\n'); err != nil {
				return
			}
		}
		fmt.Fprintf(c, "$%d\r\n%s\r\n", len(info), info)
	}()
	return "redis://" + ln.Addr().String() + "/0"
}

func TestRedisInfoCommandstats(t *testing.T) {
	info := "# Commandstats\r\ncmdstat_evalsha:calls=12,usec=300,usec_per_call=25.00\r\ncmdstat_zincrby:calls=48,usec=40\r\ncmdstat_client|setinfo:calls=2,usec=1"
	got, err := redisInfo(context.Background(), fakeRedis(t, info), false, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if got["evalsha"] != 12 || got["zincrby"] != 48 || got["client|setinfo"] != 2 || len(got) != 3 {
		t.Fatalf("parsed %v", got)
	}
	d := deltaCalls(map[string]int64{"evalsha": 10}, got)
	if d["evalsha"] != 2 || sumCalls(d) != 52 {
		t.Fatalf("delta %v", d)
	}
	if _, err := redisInfo(context.Background(), "redis://10.1.2.3:6379/0", false, time.Second); !errors.Is(err, ErrRemoteTarget) {
		t.Fatalf("a remote Redis: %v", err)
	}
	if _, err := redisInfo(context.Background(), "http://127.0.0.1:1", false, time.Second); err == nil {
		t.Fatal("a URL that is not redis:// was accepted")
	}
}

func TestUsageScenarioIsOptIn(t *testing.T) {
	all, err := ParseScenarios("")
	if err != nil || strings.Contains(strings.Join(all, ","), ScenarioUsage) {
		t.Fatalf("default scenarios %v, %v: usage needs a Redis URL and is asked for by name", all, err)
	}
	got, err := ParseScenarios("usage")
	if err != nil || len(got) != 1 || got[0] != ScenarioUsage {
		t.Fatalf("ParseScenarios(usage) = %v, %v", got, err)
	}
	if _, err := (Config{Nodes: []string{"http://127.0.0.1:1"}, AdminToken: "x", UsageSockets: -1}).withDefaults(); err == nil {
		t.Fatal("negative usage sockets accepted")
	}
}
