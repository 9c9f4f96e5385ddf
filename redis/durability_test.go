package redis

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
	"github.com/sessionbridge/sessionbridge/internal/redistest"
)

// restartWait bounds how long nodes may take to reconnect to a restarted
// Redis and write their revocations again: generous for a loaded machine.
const restartWait = 20 * time.Second

// dnode is one node of the durability tests: a Backend subscribed to the bus
// (so that it journals the other nodes' revocations), a Manager on it, and
// the counts it reports.
type dnode struct {
	name string
	b    *Backend
	m    *sessionbridge.Manager
	rec  *recorder
	met  *countingMetrics
}

func startDNode(t *testing.T, srv *redistest.Server, prefix, name string) *dnode {
	t.Helper()
	met := newCountingMetrics()
	b := newBackend(t, srv, func(o *Options) { o.Prefix, o.NodeID, o.Metrics = prefix, name, met })
	n := &dnode{name: name, b: b, m: nodeManager(t, b), rec: &recorder{}, met: met}
	subscribe(t, b, n.rec)
	return n
}

// follows has n follow the sessions ids, as a node holding sockets of them
// does, and waits until their events reach it.
func (n *dnode) follows(t *testing.T, ids ...string) {
	t.Helper()
	followSessions(t, n.b, n.rec, ids...)
}

// sawDeleted waits until n has received the deleted event of id.
func (n *dnode) sawDeleted(t *testing.T, id string) {
	t.Helper()
	eventually(t, 10*time.Second, n.name+" receiving the deleted event", func() bool {
		_, ok := n.rec.find(func(ev sessionbridge.Event) bool { return ev.Type == sessionbridge.EventDeleted && ev.SessionID == id })
		return ok
	})
}

// refuses checks that the token never authenticates on n after a restart:
// while n reconnects, Authenticate may fail with ErrUnavailable; the first
// other answer must be ErrInvalidToken.
func (n *dnode) refuses(t *testing.T, token string) {
	t.Helper()
	var err error
	eventually(t, restartWait, n.name+" answering after the restart", func() bool {
		var s *sessionbridge.Session
		s, err = n.m.Authenticate(bg, token)
		if err == nil {
			t.Fatalf("%s: a revoked token authenticated after the Redis restart (session %s)", n.name, s.ID)
		}
		return !errors.Is(err, sessionbridge.ErrUnavailable)
	})
	if !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("%s: Authenticate = %v, want ErrInvalidToken", n.name, err)
	}
}

// deletedPublished is how many deleted events the nodes published, their
// own revocations and the ones written again after a restart.
func deletedPublished(nodes ...*dnode) int {
	total := 0
	for _, n := range nodes {
		total += n.met.get(func(m *countingMetrics) int { return m.published[string(sessionbridge.EventDeleted)] })
	}
	return total
}

func sessionKeyExists(t *testing.T, srv *redistest.Server, b *Backend, id string) bool {
	t.Helper()
	v, err := srv.Do("EXISTS", b.sessionKey(id))
	return err == nil && v == int64(1)
}

func revoke(t *testing.T, n *dnode, id string) {
	t.Helper()
	if _, err := n.m.Delete(bg, id, sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceAPI}); err != nil {
		t.Fatalf("Delete on %s: %v", n.name, err)
	}
}

func create(t *testing.T, n *dnode, user string) (*sessionbridge.Session, string) {
	t.Helper()
	s, tok, err := n.m.Create(bg, sessionbridge.NewSession{UserID: user}, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil {
		t.Fatalf("Create on %s: %v", n.name, err)
	}
	return s, tok
}

// afterRestart checks what every revocation test ends with: the revoked
// tokens are refused on both nodes, the nodes wrote the revocations again
// (so Redis no longer has the sessions, and a node that never saw the
// revocation refuses them too), and want sessions were deleted a second
// time, which proves the restart had brought them back.
func afterRestart(t *testing.T, srv *redistest.Server, prefix string, a, b *dnode, published, revived int, ids, tokens []string) {
	t.Helper()
	for _, n := range []*dnode{a, b} {
		for _, tok := range tokens {
			n.refuses(t, tok)
		}
	}
	eventually(t, restartWait, "the revived sessions to be deleted again", func() bool {
		return deletedPublished(a, b) >= published+revived
	})
	for _, id := range ids {
		if sessionKeyExists(t, srv, a.b, id) {
			t.Fatalf("session %s is still in Redis after the nodes wrote the revocations again", id)
		}
	}
	c := startDNode(t, srv, prefix, "node-c")
	for _, tok := range tokens {
		if _, err := c.m.Authenticate(bg, tok); !errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Fatalf("node started after the restart: Authenticate = %v, want ErrInvalidToken", err)
		}
	}
}

// TestRevocationSurvivesRDBRestart: a session created, snapshotted, revoked
// on A (by delete, delete-all-of-user or rotation), then Redis killed and
// restarted from the snapshot, which still holds the session. Neither node
// may accept the token again.
func TestRevocationSurvivesRDBRestart(t *testing.T) {
	for _, how := range []string{"delete", "rotate"} {
		t.Run(how, func(t *testing.T) {
			srv := redistest.Start(t, redistest.RDBSnapshots()...)
			const prefix = "sbd:"
			a, b := startDNode(t, srv, prefix, "node-a"), startDNode(t, srv, prefix, "node-b")
			s, tok := create(t, a, "alice")
			b.follows(t, s.ID)
			srv.MustDo("SAVE")
			switch how {
			case "delete":
				revoke(t, a, s.ID)
			case "rotate":
				if _, _, err := a.m.Rotate(bg, s.ID, sessionbridge.Change{Source: sessionbridge.SourceHTTP}); err != nil {
					t.Fatal(err)
				}
			}
			b.sawDeleted(t, s.ID)
			published := deletedPublished(a, b)

			srv.RestartKeepingData()
			afterRestart(t, srv, prefix, a, b, published, 1, []string{s.ID}, []string{tok})
		})
	}
}

// TestDeleteAllOfUserSurvivesRDBRestart is the delete-all-of-user variant:
// every session of the user stays revoked.
func TestDeleteAllOfUserSurvivesRDBRestart(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	a, b := startDNode(t, srv, prefix, "node-a"), startDNode(t, srv, prefix, "node-b")
	s1, tok1 := create(t, a, "bob")
	s2, tok2 := create(t, b, "bob")
	a.follows(t, s1.ID, s2.ID)
	srv.MustDo("SAVE")
	gone, err := b.m.DeleteUser(bg, "bob", "", sessionbridge.ReasonRevoked, sessionbridge.Change{Source: sessionbridge.SourceAPI})
	if err != nil || len(gone) != 2 {
		t.Fatalf("DeleteUser = %v, %v", gone, err)
	}
	a.sawDeleted(t, s1.ID)
	a.sawDeleted(t, s2.ID)
	published := deletedPublished(a, b)

	srv.RestartKeepingData()
	afterRestart(t, srv, prefix, a, b, published, 2, []string{s1.ID, s2.ID}, []string{tok1, tok2})
	list, err := a.m.List(bg, "bob")
	if err != nil || len(list) != 0 {
		t.Fatalf("List after the restart = %d sessions, %v; want none", len(list), err)
	}
}

// TestRevocationSurvivesLostAOFWrite: with appendfsync no or everysec, a
// crash of the machine loses the last writes that had not reached the disk.
// The test keeps a copy of the AOF as it was before the revocation and
// restarts Redis from it: the delete is lost, the session is back.
func TestRevocationSurvivesLostAOFWrite(t *testing.T) {
	for _, fsync := range []string{"no", "everysec"} {
		t.Run(fsync, func(t *testing.T) {
			srv := redistest.Start(t, redistest.AOF(fsync)...)
			const prefix = "sbd:"
			a, b := startDNode(t, srv, prefix, "node-a"), startDNode(t, srv, prefix, "node-b")
			s, tok := create(t, a, "carol")
			a.follows(t, s.ID)
			eventually(t, 10*time.Second, "the session in the AOF", func() bool { return aofHas(t, srv, s.ID) })
			disk := srv.CopyDisk()
			revoke(t, b, s.ID)
			a.sawDeleted(t, s.ID)
			published := deletedPublished(a, b)

			srv.RestartFromDisk(disk)
			afterRestart(t, srv, prefix, a, b, published, 1, []string{s.ID}, []string{tok})
		})
	}
}

// aofHas reports whether the server's AOF files mention s.
func aofHas(t *testing.T, srv *redistest.Server, s string) bool {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(srv.Dir(), "appendonlydir", "*"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && bytes.Contains(b, []byte(s)) {
			return true
		}
	}
	return false
}

// TestRevocationSurvivesWhenTheRevokingNodeIsGone: the node that revoked is
// stopped before Redis restarts; the other node learnt the revocation from
// its event and writes it again alone.
func TestRevocationSurvivesWhenTheRevokingNodeIsGone(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	a, b := startDNode(t, srv, prefix, "node-a"), startDNode(t, srv, prefix, "node-b")
	s, tok := create(t, a, "dave")
	b.follows(t, s.ID)
	srv.MustDo("SAVE")
	revoke(t, a, s.ID)
	b.sawDeleted(t, s.ID)
	a.b.Close()

	srv.RestartKeepingData()
	b.refuses(t, tok)
	eventually(t, restartWait, "B to delete the revived session", func() bool { return !sessionKeyExists(t, srv, b.b, s.ID) })
}

// TestRevocationLostWhenNoRunningNodeSawIt shows the limit of the journal,
// which docs/redis.md states: it lives in the nodes' memory, so a
// revocation that no running node saw (all the nodes that did were
// restarted too) comes back with a snapshot that predates it. Only durable
// persistence (AOF with appendfsync everysec or always) covers that case.
func TestRevocationLostWhenNoRunningNodeSawIt(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	a := startDNode(t, srv, prefix, "node-a")
	s, tok := create(t, a, "erin")
	srv.MustDo("SAVE")
	revoke(t, a, s.ID)
	a.b.Close()

	srv.RestartKeepingData()
	c := startDNode(t, srv, prefix, "node-c")
	if _, err := c.m.Authenticate(bg, tok); err != nil {
		t.Fatalf("Authenticate on a node with no journal = %v; the documented limit says the snapshot's session is served", err)
	}
}

// TestRevivedSessionFoundWithoutRestart: a session this node revoked shows
// up in Redis again without any run ID change (a server that reports none,
// or a failover that kept it): reading it is refused, and the revocation is
// written again.
func TestRevivedSessionFoundWithoutRestart(t *testing.T) {
	srv := redistest.Start(t)
	const prefix = "sbd:"
	a, b := startDNode(t, srv, prefix, "node-a"), startDNode(t, srv, prefix, "node-b")
	s, tok := create(t, a, "frank")
	b.follows(t, s.ID)
	raw, err := srv.Do("HGETALL", a.b.sessionKey(s.ID))
	fields, _ := raw.([]any)
	if err != nil || len(fields) == 0 {
		t.Fatalf("HGETALL = %v, %v", raw, err)
	}
	revoke(t, a, s.ID)
	b.sawDeleted(t, s.ID)
	published := deletedPublished(a, b)

	// The hash comes back as a lost write would bring it.
	args := []string{"HSET", a.b.sessionKey(s.ID)}
	for _, f := range fields {
		args = append(args, f.(string))
	}
	srv.MustDo(args...)
	for _, n := range []*dnode{a, b} {
		if _, err := n.m.Authenticate(bg, tok); !errors.Is(err, sessionbridge.ErrInvalidToken) {
			t.Fatalf("%s: Authenticate of a revived session = %v, want ErrInvalidToken", n.name, err)
		}
		if got, err := n.b.Store().GetMany(bg, []string{s.ID}); err != nil || len(got) != 0 {
			t.Fatalf("%s: GetMany of a revived session = %v, %v; want nothing", n.name, got, err)
		}
	}
	eventually(t, restartWait, "the revived session to be deleted again", func() bool {
		return !sessionKeyExists(t, srv, a.b, s.ID) && deletedPublished(a, b) == published+1
	})
}

func TestPersistenceIsReported(t *testing.T) {
	for _, tc := range []struct {
		name    string
		args    []string
		mode    string
		durable bool
	}{
		{"none", nil, "none", false},
		{"rdb", redistest.RDBSnapshots(), "rdb", false},
		{"aof-no", redistest.AOF("no"), "aof", false},
		{"aof-everysec", redistest.AOF("everysec"), "aof", true},
		{"aof-always", redistest.AOF("always"), "aof", true},
		{"config-renamed", []string{"--rename-command", "CONFIG", ""}, "unknown", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := redistest.Start(t, tc.args...)
			var logs syncBuffer
			p := newBackend(t, srv, func(o *Options) { o.Logger = slog.New(slog.NewTextHandler(&logs, nil)) }).Persistence()
			// Said once at start, as a warning, when a restart can undo
			// revocations or sign everybody out.
			if warned := strings.Contains(logs.String(), "level=WARN msg=\"redis: persistence is not durable\" mode="+tc.mode); warned == tc.durable {
				t.Errorf("start logs (want a warning: %v):\n%s", !tc.durable, logs.String())
			}
			if p.Mode() != tc.mode || p.Durable() != tc.durable || (p.Risk() == "") != tc.durable {
				t.Fatalf("Persistence = %+v: mode %q durable %v risk %q; want %q, %v", p, p.Mode(), p.Durable(), p.Risk(), tc.mode, tc.durable)
			}
			d := p.Details()
			if d["mode"] != tc.mode || d["durable"] != tc.durable {
				t.Fatalf("Details = %v", d)
			}
		})
	}
}

// TestRestartNoticedByRunID: after a restart the nodes write the
// revocations again by themselves, before anyone presents the token: the
// server's new run ID is noticed on the first reconnect.
func TestRestartNoticedByRunID(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	a := startDNode(t, srv, prefix, "node-a")
	s, _ := create(t, a, "gina")
	srv.MustDo("SAVE")
	revoke(t, a, s.ID)
	before := a.b.serverRunIDs()

	srv.RestartKeepingData()
	eventually(t, restartWait, "the revived session to be deleted again", func() bool {
		return !sessionKeyExists(t, srv, a.b, s.ID) && deletedPublished(a) == 2
	})
	if after := a.b.serverRunIDs(); len(after) != 1 || len(before) != 1 || after[0] == before[0] {
		t.Fatalf("run IDs before %v, after %v: want one each, different", before, after)
	}
}

// syncBuffer is a bytes.Buffer safe for the concurrent writes of a logger.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestDeleteWithUnknownOutcomeIsCompleted: a revocation asked for while
// Redis is away fails with ErrUnavailable, but it is not forgotten: once
// Redis is back with the session (here from a snapshot), the node refuses
// it and deletes it.
func TestDeleteWithUnknownOutcomeIsCompleted(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	a := startDNode(t, srv, prefix, "node-a")
	s, tok := create(t, a, "hana")
	srv.MustDo("SAVE")
	srv.Stop()
	if _, err := a.m.Delete(bg, s.ID, sessionbridge.ReasonLogout, sessionbridge.Change{}); !errors.Is(err, sessionbridge.ErrUnavailable) {
		t.Fatalf("Delete with Redis away = %v, want ErrUnavailable", err)
	}
	srv.RestartKeepingData()
	a.refuses(t, tok)
	eventually(t, restartWait, "the session to be deleted", func() bool { return !sessionKeyExists(t, srv, a.b, s.ID) })
}

// TestNodeThatMissedTheRevocationWaits: node A never received the deleted
// event (it has no subscription, as a node cut off from pub/sub at the
// time), so its journal lacks the revocation B made. After the restart A
// must not serve the session: it refuses every authentication for a while
// after noticing the restart, and B meanwhile deletes the session again.
func TestNodeThatMissedTheRevocationWaits(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	ab := newBackend(t, srv, func(o *Options) { o.Prefix, o.NodeID = prefix, "node-a" })
	a := &dnode{name: "node-a", b: ab, m: nodeManager(t, ab)}
	b := startDNode(t, srv, prefix, "node-b")
	s, tok := create(t, b, "ivy")
	srv.MustDo("SAVE")
	revoke(t, b, s.ID)
	if a.b.store.journal.has(s.ID) {
		t.Fatal("A journaled a revocation it cannot have heard of")
	}

	srv.RestartKeepingData()
	a.refuses(t, tok)
	if _, err := a.m.Authenticate(bg, tok); !errors.Is(err, sessionbridge.ErrInvalidToken) {
		t.Fatalf("A: Authenticate = %v, want ErrInvalidToken", err)
	}
}

// TestAuthenticationFailsClosedWhileRestarting: right after a node noticed
// a restart, reads of sessions created before it fail with ErrUnavailable
// (wrapping ErrRestarting), until the revocations have been written again
// by every node; then they are served again. A session created after the
// restart is served at once: no restart can have brought it back.
func TestAuthenticationFailsClosedWhileRestarting(t *testing.T) {
	srv := redistest.Start(t, redistest.RDBSnapshots()...)
	const prefix = "sbd:"
	a := startDNode(t, srv, prefix, "node-a")
	_, tok := create(t, a, "jack")
	srv.MustDo("SAVE")

	srv.RestartKeepingData()
	eventually(t, restartWait, "ErrRestarting", func() bool {
		_, err := a.m.Authenticate(bg, tok)
		if err == nil {
			t.Fatal("the session was served at once after the restart; want ErrRestarting first")
		}
		if !errors.Is(err, sessionbridge.ErrUnavailable) {
			t.Fatalf("Authenticate = %v; want ErrUnavailable", err)
		}
		return errors.Is(err, ErrRestarting)
	})
	_, fresh := create(t, a, "jack")
	if _, err := a.m.Authenticate(bg, fresh); err != nil {
		t.Fatalf("a session created after the restart: Authenticate = %v", err)
	}
	if _, err := a.m.Authenticate(bg, tok); !errors.Is(err, ErrRestarting) {
		t.Fatalf("the older session while settling: Authenticate = %v, want ErrRestarting", err)
	}
	eventually(t, restartWait, "the older session to be served again", func() bool {
		_, err := a.m.Authenticate(bg, tok)
		if err != nil && !errors.Is(err, ErrRestarting) {
			t.Fatalf("Authenticate = %v; want the session, or ErrRestarting meanwhile", err)
		}
		return err == nil
	})
}
