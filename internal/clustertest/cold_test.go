package clustertest

import (
	"encoding/json"
	"fmt"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
)

// TestFirstOperationsAfterStart times the first cross-node revocations and
// updates after two nodes start, the ones that would pay for anything set up
// on first use (a connection to a shard, a script load, a restart check).
// It logs the figures (go test -run FirstOperations -v) and asserts only
// that every one arrives: timings are a benchmark's business.
func TestFirstOperationsAfterStart(t *testing.T) { eachRedis(t, testFirstOperationsAfterStart) }

func testFirstOperationsAfterStart(t *testing.T, srv redisTarget) {
	a, b := twoNodes(t, srv, nodeOpts{})
	// Users on different shards, so that in a Cluster they reach different
	// masters; sessions are made and dialled first, then revoked one by one.
	const n = 6
	type held struct {
		s *sb.Session
		c *client
	}
	var hs []held
	for i := range n {
		s, tok := create(t, a, fmt.Sprintf("cold-%d", i))
		hs = append(hs, held{s, dial(t, b, tok)})
	}
	var revokes, deletes []time.Duration
	for _, h := range hs {
		start := time.Now()
		if _, err := a.manager.Delete(bg, h.s.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI}); err != nil {
			t.Fatal(err)
		}
		deletes = append(deletes, time.Since(start))
		h.c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
		revokes = append(revokes, time.Since(start))
	}
	t.Logf("revocations A→B, in order: %v (the Delete call on A: %v)", revokes, deletes)

	s, tok := create(t, a, "cold-updates")
	c := dial(t, b, tok)
	var updates []time.Duration
	for i := range 20 {
		start := time.Now()
		if _, err := a.manager.Update(bg, s.ID, json.RawMessage(fmt.Sprintf(`{"n":%d}`, i)), 0, sb.Change{Source: sb.SourceHTTP}); err != nil {
			t.Fatal(err)
		}
		for {
			f := c.expect(gateway.TypeSessionUpdated, eventWait)
			var u struct {
				Session sb.PublicSession `json:"session"`
			}
			if err := json.Unmarshal(f.Data, &u); err != nil {
				t.Fatal(err)
			}
			if u.Session.Version == uint64(i+2) {
				break
			}
		}
		updates = append(updates, time.Since(start))
	}
	t.Logf("updates A→B, in order: %v", updates)
}
