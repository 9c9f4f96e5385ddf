package clustertest

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sb "github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/gateway"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// faultWait bounds how long after a failover or a migration every socket of
// a revoked session must be closed: the failover itself (the cluster's node
// timeout, 2 s here, plus the election), the subscription's re-connection
// back-off (at most 2 s) and the re-validation that follows it, with room
// for a loaded machine. The periodic sweep, an hour away here, plays no
// part.
const faultWait = 30 * time.Second

// sessionKey is the key of session id under the tests' prefix.
func sessionKey(id string) string { return "sb:s:{" + sb.ShardOfID(id) + "}" + id }

// heldSession is a session created on A with a socket on B.
type heldSession struct {
	s *sb.Session
	c *client
}

// holdSessions creates a session per user on a and opens its socket on b.
func holdSessions(t *testing.T, a, b *node, users []string) []heldSession {
	t.Helper()
	out := make([]heldSession, len(users))
	for i, u := range users {
		s, tok := create(t, a, u)
		out[i] = heldSession{s, dial(t, b, tok)}
	}
	return out
}

// revokeAll revokes every session through n, one after the other, retrying
// a revocation that fails because Redis is not available (a failover or a
// migration in progress) as an application must: a revocation is asked for
// until it is known done. It counts the revocations done in done and the
// attempts that failed in retries; before the revocation at index pauseAt
// it waits until resume is closed.
func revokeAll(t *testing.T, n *node, hs []heldSession, done, retries *atomic.Int64, pauseAt int, resume <-chan struct{}) {
	for i, h := range hs {
		if i == pauseAt {
			<-resume
		}
		deadline := time.Now().Add(faultWait)
		for {
			_, err := n.manager.Delete(bg, h.s.ID, sb.ReasonRevoked, sb.Change{Source: sb.SourceAPI})
			if err == nil || errors.Is(err, sb.ErrNotFound) {
				// Not found: an earlier attempt whose reply was lost did it.
				break
			}
			if !errors.Is(err, sb.ErrUnavailable) || time.Now().After(deadline) {
				t.Errorf("revoke %s: %v", h.s.ID, err)
				return
			}
			retries.Add(1)
			time.Sleep(20 * time.Millisecond) // retry pacing, not synchronisation
		}
		done.Add(1)
	}
}

// checkAllRevoked asserts that no revoked session is left in the store or in
// Redis, and that every socket closes with 4401 session_revoked.
func checkAllRevoked(t *testing.T, c *redistest.MultiCluster, a, b *node, hs []heldSession) {
	t.Helper()
	for _, h := range hs {
		h.c.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, faultWait)
	}
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.s.ID
	}
	for _, n := range []*node{a, b} {
		eventually(t, faultWait, n.name+" to read every session as gone", func() bool {
			got, err := n.backend.Store().GetMany(bg, ids)
			return err == nil && len(got) == 0
		})
	}
	for _, id := range ids {
		k := sessionKey(id)
		if v, err := c.DoKey(k, "EXISTS", k); err != nil || v != int64(0) {
			t.Fatalf("session %s still in Redis after its revocation: %v, %v", id, v, err)
		}
	}
}

// masterAddr returns the address of the master with ID id.
func masterAddr(t *testing.T, c *redistest.MultiCluster, id string) string {
	t.Helper()
	tp, err := c.Topology()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range tp {
		if n.ID == id {
			return n.Addr
		}
	}
	t.Fatalf("no node %s", id)
	return ""
}

// users returns n user names whose sessions spread over the shards.
func users(prefix string, n int) []string {
	out := make([]string, n)
	for i := range out {
		out[i] = fmt.Sprintf("%s-%d", prefix, i)
	}
	return out
}

func TestClusterMasterKilledWhileRevoking(t *testing.T) {
	c := redistest.StartMultiCluster(t, 3, 1)
	a, b := twoNodes(t, c, nodeOpts{timeout: 500 * time.Millisecond})
	hs := holdSessions(t, a, b, users("failover", 24))

	var done, retries atomic.Int64
	var wg sync.WaitGroup
	killed := make(chan struct{})
	// Half the revocations before the crash, half while the master of some
	// of them is dead and then while its replica takes over.
	wg.Go(func() { revokeAll(t, a, hs, &done, &retries, len(hs)/2, killed) })
	eventually(t, faultWait, "the first half of the revocations", func() bool { return done.Load() == int64(len(hs)/2) })
	_, id := c.KillMasterOf(sessionKey(hs[len(hs)-1].s.ID))
	close(killed)
	start := time.Now()
	c.WaitPromoted(id)
	t.Logf("replica promoted %v after the kill", time.Since(start))
	wg.Wait()
	t.Logf("%d revocation attempts failed with ErrUnavailable and were retried", retries.Load())
	if t.Failed() {
		return
	}
	checkAllRevoked(t, c, a, b, hs)

	// The cluster works on: a new session revoked on A closes on B.
	s, tok := create(t, a, "failover-after")
	cl := dial(t, b, tok)
	if _, err := a.manager.Delete(bg, s.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
		t.Fatal(err)
	}
	cl.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, eventWait)
}

func TestClusterReshardWhileRevoking(t *testing.T) {
	c := redistest.StartMultiCluster(t, 3, 1)
	a, b := twoNodes(t, c, nodeOpts{timeout: 500 * time.Millisecond})
	ids := c.MasterIDs()
	from, to := ids[0], ids[1]
	// redis-cli moves the source's lowest slots first: pick users whose
	// shard lies in the slots that move, and a few that stay.
	const moved = 400
	var movers, stayers []string
	for i := 0; len(movers) < 16 || len(stayers) < 4; i++ {
		u := fmt.Sprintf("reshard-%d", i)
		slot := c.KeySlot("{" + sb.Shard(u) + "}")
		switch {
		case slot < moved && len(movers) < 16:
			movers = append(movers, u)
		case slot >= moved && len(stayers) < 4:
			stayers = append(stayers, u)
		}
	}
	hs := holdSessions(t, a, b, append(movers, stayers...))

	var done, retries atomic.Int64
	var wg sync.WaitGroup
	migrating := make(chan struct{})
	wg.Go(func() {
		// The second half waits for the migration to start, then runs
		// beside it.
		revokeAll(t, a, hs, &done, &retries, len(hs)/2, migrating)
	})
	wg.Go(func() {
		// Start revoking the second half once the source has marked its
		// first slot as migrating.
		src := c.Server(masterAddr(t, c, from))
		eventually(t, faultWait, "the migration to start", func() bool {
			v, err := src.Do("CLUSTER", "NODES")
			text, _ := v.(string)
			return err == nil && strings.Contains(text, "->-")
		})
		close(migrating)
	})
	c.Reshard(from, to, moved)
	wg.Wait()
	t.Logf("%d revocation attempts failed with ErrUnavailable and were retried", retries.Load())
	if t.Failed() {
		return
	}
	checkAllRevoked(t, c, a, b, hs)
	// The moved slots are served by their new master.
	if got, _ := c.MasterOf("{"+sb.Shard(movers[0])+"}").MustDo("CLUSTER", "MYID").(string); got != to {
		t.Fatalf("a moved slot is served by %s, want %s", got, to)
	}
}

func TestClusterShardDownFailsClosedForItsSlotsOnly(t *testing.T) {
	// Without full coverage required, the masters left serve their slots
	// while one shard is down, as an operator who wants that configures.
	c := redistest.StartMultiCluster(t, 3, 1, "--cluster-require-full-coverage", "no")
	a, b := twoNodes(t, c, nodeOpts{timeout: 500 * time.Millisecond})
	ids := c.MasterIDs()
	// Users on the first master's slots (to be killed) and on the others.
	var down, up []string
	for i := 0; len(down) < 3 || len(up) < 3; i++ {
		u := fmt.Sprintf("shard-%d", i)
		owner := c.MasterOf("{" + sb.Shard(u) + "}")
		id, _ := owner.MustDo("CLUSTER", "MYID").(string)
		if id == ids[0] {
			if len(down) < 3 {
				down = append(down, u)
			}
		} else if len(up) < 3 {
			up = append(up, u)
		}
	}
	tokens := map[string]string{}
	for _, u := range append(down, up...) {
		_, tok := create(t, a, u)
		tokens[u] = tok
	}
	// The master and its replica die: nothing serves the shard's slots.
	_, id := c.KillMasterOf("{" + sb.Shard(down[0]) + "}")
	c.KillReplicasOf(id)

	for _, u := range down {
		eventually(t, faultWait, "authentication on a dead shard to fail closed", func() bool {
			_, resp, err := tryDial(b.srv.URL, tokens[u])
			if err == nil {
				t.Fatalf("dial for %s on a dead shard succeeded", u)
			}
			return resp != nil && resp.StatusCode == http.StatusServiceUnavailable
		})
	}
	for _, u := range up {
		// Sockets on live shards open, revocations there still close them.
		s, err := b.manager.Authenticate(bg, tokens[u])
		if err != nil {
			t.Fatalf("Authenticate on a live shard: %v", err)
		}
		cl := dial(t, b, tokens[u])
		if _, err := a.manager.Delete(bg, s.ID, sb.ReasonRevoked, sb.Change{}); err != nil {
			t.Fatalf("revoke on a live shard: %v", err)
		}
		cl.expectClose(gateway.CloseReauthenticate, gateway.ReasonSessionRevoked, faultWait)
	}
	// New sessions on live shards work; on the dead one they fail closed.
	if _, _, err := a.manager.Create(bg, sb.NewSession{UserID: up[0]}, sb.Change{}); err != nil {
		t.Fatalf("Create on a live shard: %v", err)
	}
	if _, _, err := a.manager.Create(bg, sb.NewSession{UserID: down[0]}, sb.Change{}); !errors.Is(err, sb.ErrUnavailable) {
		t.Fatalf("Create on a dead shard = %v, want ErrUnavailable", err)
	}
}
