package redistest

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestStartDoRestartStop(t *testing.T) {
	s := Start(t)
	if got := s.MustDo("PING"); got != "PONG" {
		t.Fatalf("PING = %v, want PONG", got)
	}
	if got := s.MustDo("SET", "k", "v"); got != "OK" {
		t.Fatalf("SET = %v", got)
	}
	if got := s.MustDo("GET", "k"); got != "v" {
		t.Fatalf("GET = %v, want v", got)
	}
	if got := s.MustDo("INCRBY", "n", "3"); got != int64(3) {
		t.Fatalf("INCRBY = %#v, want 3", got)
	}
	if got := s.MustDo("GET", "missing"); got != nil {
		t.Fatalf("GET missing = %#v, want nil", got)
	}
	if got, ok := s.MustDo("CONFIG", "GET", "save").([]any); !ok || len(got) != 2 || got[1] != "" {
		t.Fatalf("CONFIG GET save = %#v, want persistence off", got)
	}
	if _, err := s.Do("NOSUCHCOMMAND"); err == nil {
		t.Fatal("unknown command: want an error")
	}
	s.MustDo("CONFIG", "SET", "client-output-buffer-limit", "pubsub 1mb 1mb 0")
	s.MustDo("DEBUG", "SLEEP", "0")

	addr, url := s.Addr(), s.URL()
	if url != "redis://"+addr+"/0" {
		t.Fatalf("URL = %q, addr %q", url, addr)
	}
	s.Restart()
	if s.Addr() != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, s.Addr())
	}
	if got := s.MustDo("GET", "k"); got != nil {
		t.Fatalf("after restart GET = %#v, want an empty server", got)
	}
	s.Stop()
	if _, err := s.Do("PING"); err == nil {
		t.Fatal("PING after Stop: want an error")
	}
	s.Stop() // idempotent
}

func TestExtraArgs(t *testing.T) {
	s := Start(t, "--maxmemory", "12345678")
	got, ok := s.MustDo("CONFIG", "GET", "maxmemory").([]any)
	if !ok || len(got) != 2 || got[1] != "12345678" {
		t.Fatalf("CONFIG GET maxmemory = %#v", got)
	}
}

func TestTwoServersAreSeparate(t *testing.T) {
	a, b := Start(t), Start(t)
	if a.Addr() == b.Addr() {
		t.Fatal("two servers share an address")
	}
	a.MustDo("SET", "k", "a")
	if got := b.MustDo("GET", "k"); got != nil {
		t.Fatalf("b sees a's key: %#v", got)
	}
}

func TestSentinel(t *testing.T) {
	master := Start(t)
	s := StartSentinel(t, master, "mymaster")
	got, ok := s.MustDo("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster").([]any)
	if !ok || len(got) != 2 || got[0] != "127.0.0.1" || "127.0.0.1:"+got[1].(string) != master.Addr() {
		t.Fatalf("sentinel reports %v, want %s", got, master.Addr())
	}
}

func TestCluster(t *testing.T) {
	s := StartCluster(t)
	if _, err := s.Do("MSET", "a", "1", "b", "2"); err == nil || !strings.Contains(err.Error(), "CROSSSLOT") {
		t.Fatalf("cross-slot MSET = %v, want CROSSSLOT", err)
	}
	s.MustDo("MSET", "{t}a", "1", "{t}b", "2")
}

func TestRDBSurvivesACrashUpToTheLastSave(t *testing.T) {
	s := Start(t, RDBSnapshots()...)
	s.MustDo("SET", "saved", "1")
	s.MustDo("SAVE")
	s.MustDo("SET", "unsaved", "1")
	runID := runIDOf(t, s)
	s.RestartKeepingData()
	if runID == runIDOf(t, s) {
		t.Fatal("the run id did not change across a restart")
	}
	if got := s.MustDo("GET", "saved"); got != "1" {
		t.Fatalf("after a crash GET saved = %#v, want the snapshot's 1", got)
	}
	if got := s.MustDo("GET", "unsaved"); got != nil {
		t.Fatalf("after a crash GET unsaved = %#v, want nil: it was written after the snapshot", got)
	}
	s.Restart()
	if got := s.MustDo("GET", "saved"); got != nil {
		t.Fatalf("after Restart GET saved = %#v, want an empty server", got)
	}
}

func TestAOFKeepsEveryWriteAcrossAProcessCrash(t *testing.T) {
	s := Start(t, AOF("everysec")...)
	if got, ok := s.MustDo("CONFIG", "GET", "appendfsync").([]any); !ok || len(got) != 2 || got[1] != "everysec" {
		t.Fatalf("CONFIG GET appendfsync = %#v", got)
	}
	s.MustDo("SET", "k", "v")
	s.RestartKeepingData()
	if got := s.MustDo("GET", "k"); got != "v" {
		t.Fatalf("after a crash GET k = %#v, want v", got)
	}
	s.Restart()
	if got := s.MustDo("GET", "k"); got != nil {
		t.Fatalf("after Restart GET k = %#v, want an empty server", got)
	}
}

func TestRestartFromDiskLosesLaterWrites(t *testing.T) {
	s := Start(t, AOF("no")...)
	s.MustDo("SET", "before", "1")
	d := s.CopyDisk()
	s.MustDo("SET", "after", "1")
	s.RestartFromDisk(d)
	if got := s.MustDo("GET", "before"); got != "1" {
		t.Fatalf("GET before = %#v, want 1", got)
	}
	if got := s.MustDo("GET", "after"); got != nil {
		t.Fatalf("GET after = %#v, want nil: it was written after the copy", got)
	}
}

func runIDOf(t *testing.T, s *Server) string {
	t.Helper()
	info, _ := s.MustDo("INFO", "server").(string)
	for line := range strings.Lines(info) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
			return v
		}
	}
	t.Fatalf("no run_id in INFO server: %q", info)
	return ""
}

func TestMultiClusterFailoverAndReshard(t *testing.T) {
	start := time.Now()
	c := StartMultiCluster(t, 3, 1)
	t.Logf("3 masters + 3 replicas up in %v", time.Since(start))
	if ids := c.MasterIDs(); len(ids) != 3 {
		t.Fatalf("masters = %v, want 3", ids)
	}
	const key = "k:{x}"
	if _, err := c.DoKey(key, "SET", key, "v"); err != nil {
		t.Fatal(err)
	}
	// Replication is asynchronous: wait for the replica to have the key.
	if v, err := c.DoKey(key, "WAIT", "1", "5000"); err != nil || v != int64(1) {
		t.Fatalf("WAIT = %v, %v", v, err)
	}
	// The key's master dies; its replica takes over with the data.
	killed, id := c.KillMasterOf(key)
	start = time.Now()
	promoted := c.WaitPromoted(id)
	t.Logf("replica promoted in %v", time.Since(start))
	if promoted == killed || c.MasterOf(key) != promoted {
		t.Fatalf("the key's slot is served by %s, want the promoted %s", c.MasterOf(key).Addr(), promoted.Addr())
	}
	if v, err := c.DoKey(key, "GET", key); err != nil || v != "v" {
		t.Fatalf("GET after failover = %v, %v", v, err)
	}
	// The old master comes back as a replica.
	c.RestartNode(killed)
	tp, err := c.Topology()
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range tp {
		if n.ID == id && n.Master {
			t.Fatalf("the restarted node is a master again: %+v", n)
		}
	}
	// Move the key's slot away with redis-cli --cluster reshard.
	ids := c.MasterIDs()
	from, _ := promoted.MustDo("CLUSTER", "MYID").(string)
	to := ids[0]
	if to == from {
		to = ids[1]
	}
	slot := c.KeySlot(key)
	c.Reshard(from, to, c.SlotsOf(from)) // all of them: the key's slot goes too
	owner := c.MasterOf(key)
	if got, _ := owner.MustDo("CLUSTER", "MYID").(string); got != to {
		t.Fatalf("slot %d served by %s after reshard, want %s", slot, got, to)
	}
	if v, err := c.DoKey(key, "GET", key); err != nil || v != "v" {
		t.Fatalf("GET after reshard = %v, %v", v, err)
	}
}
