package redistest

import (
	"fmt"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// clusterNodeTimeout is the cluster-node-timeout of a MultiCluster, in ms:
// how long a master must be unreachable before its replica is promoted. Short,
// so that a failover test takes a few seconds, yet long enough that a busy
// machine does not fail a master over by itself.
const clusterNodeTimeout = "2000"

// MultiCluster is a Redis Cluster of several masters, each with its
// replicas, every node a private redis-server on a loopback port. Its
// methods are safe for concurrent use, but the failover and resharding
// helpers are meant to be called from the test's goroutine.
type MultiCluster struct {
	t     testing.TB
	cli   string
	nodes []*Server

	mu       sync.Mutex
	replicas map[string][]string // addresses of a killed master's replicas, by its ID
}

// StartMultiCluster starts masters×(1+replicasPerMaster) cluster-enabled
// redis-servers (each in its own directory, with its own nodes.conf), joins
// them as `redis-cli --cluster create --cluster-replicas` would (slots split
// evenly, CLUSTER MEET, CLUSTER REPLICATE), and waits until every node
// reports cluster_state:ok and every replica is in sync with its master.
// extraArgs go on every server's command line (e.g.
// "--cluster-require-full-coverage", "no"). Every process is stopped when
// the test ends. redis-cli must be on PATH
// beside redis-server. Redis requires at least three masters.
func StartMultiCluster(t testing.TB, masters, replicasPerMaster int, extraArgs ...string) *MultiCluster {
	t.Helper()
	if masters < 3 {
		t.Fatalf("redistest: a Redis Cluster needs at least 3 masters, not %d", masters)
	}
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: redis-cli not found on PATH (%v); install it with redis-server", err)
	}
	c := &MultiCluster{t: t, cli: cli, replicas: map[string][]string{}}
	n := masters * (1 + replicasPerMaster)
	for range n {
		s := Start(t, append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
			"--cluster-node-timeout", clusterNodeTimeout,
			// A replica takes over whatever its replication offset.
			"--cluster-replica-validity-factor", "0",
			// A replica's first sync at once, not after the default 5 s.
			"--repl-diskless-sync-delay", "0"}, extraArgs...)...)
		c.nodes = append(c.nodes, s)
	}
	// What redis-cli --cluster create does, without its one-second pauses:
	// slots to the masters, every node meets the first, then each replica
	// follows its master.
	per := 16384 / masters
	for i := range masters {
		lo, hi := i*per, (i+1)*per-1
		if i == masters-1 {
			hi = 16383
		}
		c.nodes[i].MustDo("CLUSTER", "ADDSLOTSRANGE", strconv.Itoa(lo), strconv.Itoa(hi))
	}
	for _, s := range c.nodes[1:] {
		s.MustDo("CLUSTER", "MEET", "127.0.0.1", strconv.Itoa(c.nodes[0].port))
	}
	ids := make([]string, masters)
	for i := range masters {
		ids[i], _ = c.nodes[i].MustDo("CLUSTER", "MYID").(string)
	}
	for i, s := range c.nodes[masters:] {
		master := ids[i%masters]
		c.poll("a replica to learn its master", func() bool {
			_, err := s.Do("CLUSTER", "REPLICATE", master)
			return err == nil
		})
	}
	c.WaitHealthy()
	// Every replica in sync with its master before a test may kill one.
	c.poll("every replica to be in sync", func() bool {
		view, err := c.Topology()
		if err != nil || len(view) != n {
			return false
		}
		for _, s := range c.nodes[masters:] {
			v, err := s.Do("INFO", "replication")
			info, _ := v.(string)
			if err != nil || !strings.Contains(info, "master_link_status:up") {
				return false
			}
		}
		// And every node knows every master's replicas.
		for _, s := range c.nodes {
			v, err := s.Do("CLUSTER", "NODES")
			text, _ := v.(string)
			tp, perr := parseNodes(text)
			if err != nil || perr != nil {
				return false
			}
			for _, id := range ids {
				if len(tp.ReplicasOf(id)) < replicasPerMaster {
					return false
				}
			}
		}
		return true
	})
	return c
}

// Nodes returns every server of the cluster, masters and replicas, in the
// order they were started; a node keeps its place whatever its role.
func (c *MultiCluster) Nodes() []*Server { return slices.Clone(c.nodes) }

// URL returns a redis:// URL that names every node as a seed, as an
// application configures a Cluster.
func (c *MultiCluster) URL() string {
	var b strings.Builder
	b.WriteString("redis://" + c.nodes[0].Addr())
	for i, s := range c.nodes[1:] {
		if i == 0 {
			b.WriteString("?")
		} else {
			b.WriteString("&")
		}
		b.WriteString("addr=" + s.Addr())
	}
	return b.String()
}

// Node is one line of CLUSTER NODES.
type Node struct {
	ID       string
	Addr     string // host:port
	Master   bool
	MasterID string // a replica's master
	Failed   bool   // flagged fail or fail?
	Slots    [][2]int
}

// Topology is the cluster as one node sees it.
type Topology []Node

// ReplicasOf returns the replicas of the master with that ID.
func (tp Topology) ReplicasOf(id string) []Node {
	var out []Node
	for _, n := range tp {
		if !n.Master && n.MasterID == id {
			out = append(out, n)
		}
	}
	return out
}

// OwnerOf returns the master serving slot.
func (tp Topology) OwnerOf(slot int) (Node, bool) {
	for _, n := range tp {
		if !n.Master || n.Failed {
			continue
		}
		for _, r := range n.Slots {
			if slot >= r[0] && slot <= r[1] {
				return n, true
			}
		}
	}
	return Node{}, false
}

// Topology reads CLUSTER NODES from the first node that answers.
func (c *MultiCluster) Topology() (Topology, error) {
	var lastErr error
	for _, s := range c.nodes {
		v, err := s.Do("CLUSTER", "NODES")
		if err != nil {
			lastErr = err
			continue
		}
		text, _ := v.(string)
		return parseNodes(text)
	}
	return nil, fmt.Errorf("redistest: no node answers CLUSTER NODES: %w", lastErr)
}

func parseNodes(text string) (Topology, error) {
	var out Topology
	for line := range strings.Lines(text) {
		f := strings.Fields(line)
		if len(f) < 8 {
			continue
		}
		addr, _, _ := strings.Cut(f[1], "@")
		flags := strings.Split(f[2], ",")
		n := Node{
			ID: f[0], Addr: addr,
			Master: slices.Contains(flags, "master"),
			Failed: slices.Contains(flags, "fail") || slices.Contains(flags, "fail?"),
		}
		if f[3] != "-" {
			n.MasterID = f[3]
		}
		for _, r := range f[8:] {
			if strings.HasPrefix(r, "[") {
				continue // a slot being migrated or imported
			}
			lo, hi, ok := strings.Cut(r, "-")
			if !ok {
				hi = lo
			}
			a, err1 := strconv.Atoi(lo)
			b, err2 := strconv.Atoi(hi)
			if err1 != nil || err2 != nil {
				return nil, fmt.Errorf("redistest: bad slot range %q in CLUSTER NODES", r)
			}
			n.Slots = append(n.Slots, [2]int{a, b})
		}
		out = append(out, n)
	}
	return out, nil
}

// Server returns the server listening at addr (host:port), or nil.
func (c *MultiCluster) Server(addr string) *Server {
	for _, s := range c.nodes {
		if s.Addr() == addr {
			return s
		}
	}
	return nil
}

// KeySlot returns the hash slot of key, as the cluster computes it.
func (c *MultiCluster) KeySlot(key string) int {
	c.t.Helper()
	for _, s := range c.nodes {
		if v, err := s.Do("CLUSTER", "KEYSLOT", key); err == nil {
			if n, ok := v.(int64); ok {
				return int(n)
			}
		}
	}
	c.t.Fatalf("redistest: no node answers CLUSTER KEYSLOT")
	return -1
}

// MasterOf returns the server of the master that serves key's slot now.
func (c *MultiCluster) MasterOf(key string) *Server {
	c.t.Helper()
	slot := c.KeySlot(key)
	tp, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	n, ok := tp.OwnerOf(slot)
	if !ok {
		c.t.Fatalf("redistest: no master serves slot %d", slot)
	}
	return c.Server(n.Addr)
}

// DoKey runs a command on the master that serves key's slot.
func (c *MultiCluster) DoKey(key string, args ...string) (any, error) {
	return c.MasterOf(key).Do(args...)
}

// KillReplicasOf kills (SIGKILL) every replica of the master with ID id,
// so that nothing can take over its slots.
func (c *MultiCluster) KillReplicasOf(id string) {
	c.t.Helper()
	tp, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	for _, r := range tp.ReplicasOf(id) {
		c.Server(r.Addr).Stop()
	}
}

// KillMasterOf kills (SIGKILL) the master serving key's slot, as a crash
// would, and returns it with its node ID. It does not wait for the
// failover: see WaitPromoted.
func (c *MultiCluster) KillMasterOf(key string) (killed *Server, id string) {
	c.t.Helper()
	killed = c.MasterOf(key)
	v := killed.MustDo("CLUSTER", "MYID")
	id, _ = v.(string)
	tp, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	var replicas []string
	for _, r := range tp.ReplicasOf(id) {
		replicas = append(replicas, r.Addr)
	}
	if len(replicas) == 0 {
		c.t.Fatalf("redistest: master %s has no replica to take over", id)
	}
	c.mu.Lock()
	c.replicas[id] = replicas
	c.mu.Unlock()
	killed.Stop()
	return killed, id
}

// WaitPromoted waits until one of the replicas the master with ID id had
// when KillMasterOf killed it serves slots as a master and every running
// node reports cluster_state:ok again, and returns that new master.
func (c *MultiCluster) WaitPromoted(id string) *Server {
	c.t.Helper()
	c.mu.Lock()
	replicas := c.replicas[id]
	c.mu.Unlock()
	var promoted *Server
	c.poll("a replica of "+id+" to be promoted", func() bool {
		tp, err := c.Topology()
		if err != nil {
			return false
		}
		for _, n := range tp {
			if n.Master && !n.Failed && len(n.Slots) > 0 && slices.Contains(replicas, n.Addr) {
				promoted = c.Server(n.Addr)
				return true
			}
		}
		return false
	})
	c.WaitHealthy()
	return promoted
}

// WaitHealthy waits until every running node reports cluster_state:ok and
// agrees that no slot is unserved.
func (c *MultiCluster) WaitHealthy() {
	c.t.Helper()
	c.poll("cluster_state:ok on every running node", func() bool {
		for _, s := range c.nodes {
			if !s.running() {
				continue
			}
			v, err := s.Do("CLUSTER", "INFO")
			info, _ := v.(string)
			if err != nil || !strings.Contains(info, "cluster_state:ok") || !strings.Contains(info, "cluster_slots_assigned:16384") {
				return false
			}
		}
		return true
	})
}

// RestartNode starts a stopped node again from its directory: it keeps its
// node ID (nodes.conf) and rejoins the cluster, as a replica if it was
// failed over meanwhile. It waits until every node sees it up, it has taken
// its role (a master that was failed over has become a replica) and the
// cluster is healthy. A master without slots does not settle.
func (c *MultiCluster) RestartNode(s *Server) {
	c.t.Helper()
	s.RestartKeepingData()
	id, _ := s.MustDo("CLUSTER", "MYID").(string)
	c.poll("every node to see the restarted node up, in its role", func() bool {
		for _, o := range c.nodes {
			if !o.running() {
				continue
			}
			v, err := o.Do("CLUSTER", "NODES")
			text, _ := v.(string)
			tp, perr := parseNodes(text)
			if err != nil || perr != nil {
				return false
			}
			for _, n := range tp {
				// A master that was failed over comes back still a
				// master, with no slots, until the newer configuration
				// makes it a replica: every node must see that too.
				if n.ID == id && (n.Failed || n.Master && len(n.Slots) == 0) {
					return false
				}
			}
		}
		return true
	})
	c.WaitHealthy()
}

// SlotsOf returns how many slots the master with ID id serves.
func (c *MultiCluster) SlotsOf(id string) int {
	c.t.Helper()
	tp, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	n := 0
	for _, nd := range tp {
		if nd.ID == id {
			for _, r := range nd.Slots {
				n += r[1] - r[0] + 1
			}
		}
	}
	return n
}

// Reshard moves n slots from the master with ID from to the master with ID
// to with `redis-cli --cluster reshard`, key by key (MIGRATE) while clients
// keep working, and waits until the cluster is healthy again.
func (c *MultiCluster) Reshard(from, to string, n int) {
	c.t.Helper()
	out, err := c.redisCLI("--cluster", "reshard", c.liveAddr(),
		"--cluster-from", from, "--cluster-to", to,
		"--cluster-slots", strconv.Itoa(n), "--cluster-yes")
	if err != nil {
		c.t.Fatalf("redistest: redis-cli --cluster reshard: %v\n%s", err, out)
	}
	c.WaitHealthy()
}

// MasterIDs returns the IDs of the masters that serve slots, sorted by
// their first slot.
func (c *MultiCluster) MasterIDs() []string {
	c.t.Helper()
	tp, err := c.Topology()
	if err != nil {
		c.t.Fatal(err)
	}
	var ms []Node
	for _, n := range tp {
		if n.Master && !n.Failed && len(n.Slots) > 0 {
			ms = append(ms, n)
		}
	}
	slices.SortFunc(ms, func(a, b Node) int { return a.Slots[0][0] - b.Slots[0][0] })
	ids := make([]string, len(ms))
	for i, n := range ms {
		ids[i] = n.ID
	}
	return ids
}

func (c *MultiCluster) liveAddr() string {
	for _, s := range c.nodes {
		if s.running() {
			return s.Addr()
		}
	}
	c.t.Fatal("redistest: no cluster node is running")
	return ""
}

func (c *MultiCluster) redisCLI(args ...string) (string, error) {
	cmd := exec.Command(c.cli, args...)
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// poll waits until cond holds, failing the test after startTimeout.
func (c *MultiCluster) poll(what string, cond func() bool) {
	c.t.Helper()
	deadline := time.Now().Add(startTimeout)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			c.t.Fatalf("redistest: timed out after %v waiting for %s", startTimeout, what)
		}
		<-tick.C
	}
}

// running reports whether the server's process runs.
func (s *Server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cmd != nil
}
