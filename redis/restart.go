package redis

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"maps"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
)

// restartCheckEvery is how often a node asks the servers for their run IDs
// when nothing else made it look: a new connection or a revoked session
// found in Redis make it look at once.
const restartCheckEvery = 2 * time.Second

// restartSettle is how long after it noticed a restart a node refuses every
// session created before (ErrUnavailable): the other nodes, which look at
// least every restartCheckEvery, write the revocations they know of again
// meanwhile, including those this node never received.
const restartSettle = 5 * time.Second

// ErrRestarting is wrapped (with sessionbridge.ErrUnavailable) by reads of a
// session while this node re-applies revocations after a Redis restart.
var ErrRestarting = errors.New("redis: the server restarted; re-applying revocations")

// reapplyBatch is how many revocations one pipelined round of a re-apply
// sends.
const reapplyBatch = 500

// Persistence is what a Redis server keeps across a restart, as CONFIG GET
// reports it. With several servers (a Cluster), it is the weakest of them.
type Persistence struct {
	// Known is false when the configuration could not be read: CONFIG is
	// disabled, renamed or refused by an ACL.
	Known bool
	// AOF is appendonly: every write is appended to a file, replayed at
	// start.
	AOF bool
	// AppendFsync is the AOF's fsync policy: always, everysec or no.
	AppendFsync string
	// Save is the RDB snapshot schedule ("3600 1 300 100"); empty means no
	// automatic snapshots.
	Save string
}

// Mode names the persistence: "aof", "rdb", "none" or "unknown".
func (p Persistence) Mode() string {
	switch {
	case !p.Known:
		return "unknown"
	case p.AOF:
		return "aof"
	case p.Save != "":
		return "rdb"
	}
	return "none"
}

// Durable reports whether every acknowledged write, revocations included,
// survives a restart of the Redis process and, but for at most about a
// second of writes, a crash of its machine: an AOF with appendfsync always
// or everysec. Without persistence nothing survives, so no revocation can
// come back either, but every session is lost: that is not Durable.
func (p Persistence) Durable() bool {
	return p.Known && p.AOF && (p.AppendFsync == "always" || p.AppendFsync == "everysec")
}

// Risk says in one sentence what a restart of Redis may undo; empty when
// the persistence is Durable.
func (p Persistence) Risk() string {
	switch p.Mode() {
	case "unknown":
		return "the Redis persistence configuration cannot be read (CONFIG refused); revocations may be lost by a restart"
	case "rdb":
		return "RDB snapshots only: a restart brings back every session revoked since the last snapshot; configure appendonly yes with appendfsync everysec"
	case "none":
		return "no persistence: a restart of Redis signs every user out"
	}
	if !p.Durable() {
		return "appendfsync " + p.AppendFsync + ": a crash of the Redis machine can lose up to about 30 s of writes, revocations included; configure appendfsync everysec"
	}
	return ""
}

// Details is the persistence as /readyz shows it.
func (p Persistence) Details() map[string]any {
	d := map[string]any{"mode": p.Mode(), "durable": p.Durable()}
	if p.Known {
		d["appendonly"] = p.AOF
		d["appendfsync"] = p.AppendFsync
		d["save"] = p.Save
	}
	if r := p.Risk(); r != "" {
		d["risk"] = r
	}
	return d
}

// Persistence returns the persistence of the Redis server(s) as last read:
// at New, and again whenever a server restarted.
func (b *Backend) Persistence() Persistence {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.persistence
}

// readPersistence asks every server of the client for its persistence and
// returns the weakest; Known is false if any of them refuses CONFIG.
func (b *Backend) readPersistence(ctx context.Context) (Persistence, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	var weakest *Persistence
	for _, c := range b.client.Nodes() {
		m, err := c.Do(ctx, c.B().ConfigGet().Parameter("appendonly", "appendfsync", "save").Build()).AsStrMap()
		if err != nil {
			ferr := b.fail("config_get", err)
			if _, isReply := rueidis.IsRedisErr(err); isReply && !errors.Is(ferr, sessionbridge.ErrUnavailable) {
				// CONFIG disabled, renamed or refused: say so rather than
				// fail, the sessions work all the same.
				return Persistence{}, nil
			}
			return Persistence{}, ferr
		}
		p := Persistence{Known: true, AOF: m["appendonly"] == "yes", AppendFsync: m["appendfsync"], Save: m["save"]}
		if weakest == nil || rank(p) < rank(*weakest) {
			weakest = &p
		}
	}
	if weakest == nil {
		return Persistence{}, fmt.Errorf("redis: config_get: %w: no server", sessionbridge.ErrUnavailable)
	}
	return *weakest, nil
}

// rank orders persistence from weakest to strongest for revocations.
func rank(p Persistence) int {
	switch {
	case p.Durable() && p.AppendFsync == "always":
		return 5
	case p.Durable():
		return 4
	case p.AOF:
		return 3
	case p.Mode() == "none":
		return 2 // nothing comes back: revocations cannot be undone
	case p.Mode() == "rdb":
		return 1
	}
	return 0
}

// errNoRunID says that a server does not report a run ID, so restarts can
// only be noticed by a revoked session reappearing.
var errNoRunID = errors.New("redis: the server reports no run_id")

// runIDs returns the run ID of every server of the client, by address. A
// server's run ID changes whenever its process starts; a promoted replica
// has its own.
//
// In a Cluster, a node that cannot be reached keeps the run ID last seen at
// its address, as long as one node answers: a dead master (or a shard that
// is down) must not hold up, behind the restart check, reads that other
// nodes serve. No read can have been served by the unreachable node; when it
// comes back, its reconnection makes the watcher look again and a new run
// ID at its address is a restart.
func (b *Backend) runIDs(ctx context.Context) (map[string]string, error) {
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	cluster := b.client.Mode() == rueidis.ClientModeCluster
	ids := map[string]string{}
	var unreachable []string
	var lastErr error
	for addr, c := range b.client.Nodes() {
		info, err := c.Do(ctx, c.B().Info().Section("server").Build()).ToString()
		if err != nil {
			ferr := b.fail("info", err)
			if _, isReply := rueidis.IsRedisErr(err); isReply && !errors.Is(ferr, sessionbridge.ErrUnavailable) {
				// INFO refused (ACL, renamed): no run ID to compare.
				return nil, fmt.Errorf("%w: %w", errNoRunID, ferr)
			}
			if cluster && ctx.Err() == nil {
				unreachable, lastErr = append(unreachable, addr), ferr
				continue
			}
			return nil, ferr
		}
		id := ""
		for line := range strings.Lines(info) {
			if v, ok := strings.CutPrefix(strings.TrimSpace(line), "run_id:"); ok {
				id = v
				break
			}
		}
		if id == "" {
			return nil, errNoRunID
		}
		ids[addr] = id
	}
	if len(ids) == 0 {
		if lastErr != nil {
			return nil, lastErr
		}
		return nil, fmt.Errorf("redis: info: %w: no server", sessionbridge.ErrUnavailable)
	}
	if len(unreachable) > 0 {
		b.mu.Lock()
		for _, addr := range unreachable {
			if id, ok := b.serverIDs[addr]; ok {
				ids[addr] = id
			}
		}
		b.mu.Unlock()
	}
	return ids, nil
}

// restartedServer reports whether the servers now (run IDs by address) may
// have lost writes since prev: a server at a known address has a new run ID
// (it restarted), or, with one master (standalone, Sentinel), the master is
// a server not seen before (a failover promoted a replica that may lack the
// last writes). In a Cluster, a new address is a node that joined; its
// slots come with their data.
func restartedServer(prev, now map[string]string, cluster bool) bool {
	if prev == nil {
		return false
	}
	for addr, id := range now {
		old, known := prev[addr]
		if known && old != id {
			return true
		}
		if !known && !cluster {
			seen := false
			for _, p := range prev {
				seen = seen || p == id
			}
			if !seen {
				return true
			}
		}
	}
	return false
}

// kickWatch makes the watcher look for a restart now. It never blocks.
func (b *Backend) kickWatch() {
	select {
	case b.kick <- struct{}{}:
	default:
	}
}

// wantReapply asks the watcher to write the journal's revocations again: a
// session this node knows to be revoked was found in Redis, so the server
// lost writes whatever its run ID says.
func (b *Backend) wantReapply() {
	b.reapplyWanted.Store(true)
	b.kickWatch()
}

// watch notices that a Redis server restarted (or was replaced, as in a
// failover) and writes the revocations of the journal again, since the
// restarted server may have lost some. It looks whenever a connection is
// made (every reconnect dials), when asked, and every restartCheckEvery,
// until ctx is done.
func (b *Backend) watch(ctx context.Context) {
	defer close(b.watchDone)
	tick := time.NewTicker(restartCheckEvery)
	defer tick.Stop()
	retry := time.NewTimer(time.Hour)
	retry.Stop()
	backoff := minBackoff
	for {
		select {
		case <-ctx.Done():
			retry.Stop()
			return
		case <-b.kick:
		case <-tick.C:
		case <-retry.C:
		}
		if err := b.checkRestart(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			b.log.Debug("redis: checking for a server restart; retrying", "err", err, "in", backoff)
			retry.Reset(backoff)
			backoff = min(backoff*2, maxBackoff)
			continue
		}
		backoff = minBackoff
	}
}

// checkRestart compares the servers' run IDs with those last seen and, if a
// new one appeared or a re-apply was asked for, writes the journal's
// revocations again. An error means it must be tried again.
//
// It also opens the gate that reads of sessions wait at after a new
// connection (see gate): once the run IDs are known to be the same, the
// connection reaches the server this node knew.
func (b *Backend) checkRestart(ctx context.Context) error {
	dials := b.dials.Load()
	restarted := false
	if !b.noRunID.Load() {
		ids, err := b.runIDs(ctx)
		switch {
		case errors.Is(err, errNoRunID):
			b.noRunID.Store(true)
			b.log.Warn("redis: the server does not report its run_id; a restart that loses revocations is noticed only when a revoked session is read again", "err", err)
		case err != nil:
			return err
		default:
			b.mu.Lock()
			prev := b.serverIDs
			b.serverIDs = ids
			b.mu.Unlock()
			restarted = restartedServer(prev, ids, b.client.Mode() == rueidis.ClientModeCluster)
		}
	}
	if restarted {
		// Closed before the waiting reads are let through below.
		now := time.Now()
		b.restartNoticed.Store(now.UnixNano())
		b.restartPending.Store(true)
		// Whatever came back may hold deadlines no hint announced.
		b.forEachWatch((*expiryWatch).forget)
		b.settleUntil.Store(now.Add(restartSettle).UnixNano())
		if p, err := b.readPersistence(ctx); err == nil {
			b.setPersistence(p)
		}
		b.log.Warn("redis: the server restarted or was replaced; writing the revocations this node knows of again, refusing authentications meanwhile",
			"revocations", b.store.journal.len(), "settle", restartSettle)
	}
	b.markChecked(dials)
	if !b.restartPending.Load() && !b.reapplyWanted.Load() {
		return nil
	}
	b.reapplyWanted.Store(false)
	revived, err := b.store.reapply(ctx)
	if err != nil {
		b.reapplyWanted.Store(true)
		return err
	}
	if b.restartPending.Swap(false) || revived > 0 {
		b.log.Warn("redis: revocations written again", "revived_sessions_deleted", revived)
	}
	return nil
}

// markChecked records that every connection dialled up to the dials count
// has been checked, and wakes the reads waiting for it.
func (b *Backend) markChecked(dials uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if dials > b.checked.Load() {
		b.checked.Store(dials)
	}
	close(b.checkedSignal)
	b.checkedSignal = make(chan struct{})
}

// gate is passed by every read that found a session s, before it is served:
//
//   - If a connection was dialled since the last look at the run IDs, the
//     read may have gone to a restarted server that lost revocations: it
//     waits for the look (one INFO round trip), kicked at the dial.
//   - From noticing a restart until its own revocations are written again,
//     and for restartSettle after noticing it, so that the other nodes
//     have written theirs, the read fails closed with ErrUnavailable,
//     unless s was created after the restart was noticed: a session that a
//     restart brought back is older than the restart. (Node clocks are
//     assumed in step to well under the time a Redis restart takes; the
//     session deadlines assume it already.)
//
// Reads that find nothing need no gate.
func (b *Backend) gate(ctx context.Context, s *sessionbridge.Session) error {
	dials := b.dials.Load()
	for b.checked.Load() < dials {
		b.mu.Lock()
		ch := b.checkedSignal
		b.mu.Unlock()
		if b.checked.Load() >= dials {
			break
		}
		b.kickWatch()
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("redis: waiting for the restart check: %w: %w", sessionbridge.ErrUnavailable, ctx.Err())
		case <-b.done:
			return fmt.Errorf("redis: get: %w: %w", sessionbridge.ErrUnavailable, ErrClosed)
		}
	}
	if (b.restartPending.Load() || time.Now().UnixNano() < b.settleUntil.Load()) && s.CreatedAt.UnixNano() <= b.restartNoticed.Load() {
		return fmt.Errorf("redis: get: %w: %w", sessionbridge.ErrUnavailable, ErrRestarting)
	}
	return nil
}

// setPersistence records p and warns when it can undo revocations.
func (b *Backend) setPersistence(p Persistence) {
	b.mu.Lock()
	changed := b.persistence != p || !b.persistenceRead
	b.persistence, b.persistenceRead = p, true
	b.mu.Unlock()
	if changed && p.Risk() != "" {
		b.log.Warn("redis: persistence is not durable", "mode", p.Mode(), "appendfsync", p.AppendFsync, "save", p.Save, "risk", p.Risk())
	}
}

// dialNotifying wraps the client's dialer so that every new connection makes
// the watcher look for a restart: rueidis dials whenever a connection
// dropped, so a restarted server is looked at on the first reconnect.
func (b *Backend) dialNotifying(copt *rueidis.ClientOption) {
	inner := copt.DialCtxFn
	if inner == nil && copt.DialFn != nil {
		fn := copt.DialFn
		inner = func(_ context.Context, dst string, d *net.Dialer, tc *tls.Config) (net.Conn, error) {
			return fn(dst, d, tc)
		}
	}
	if inner == nil {
		inner = func(ctx context.Context, dst string, d *net.Dialer, tc *tls.Config) (net.Conn, error) {
			if tc != nil {
				return (&tls.Dialer{NetDialer: d, Config: tc}).DialContext(ctx, "tcp", dst)
			}
			return d.DialContext(ctx, "tcp", dst)
		}
	}
	copt.DialCtxFn = func(ctx context.Context, dst string, d *net.Dialer, tc *tls.Config) (net.Conn, error) {
		c, err := inner(ctx, dst, d, tc)
		if err == nil {
			// Counted before rueidis sends anything on it, so that a read
			// served by this connection waits for the check (see gate).
			b.dials.Add(1)
			b.kickWatch()
		}
		return c, err
	}
}

// serverRunIDs returns the run IDs last seen, sorted, for tests.
func (b *Backend) serverRunIDs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	ids := slices.Collect(maps.Values(b.serverIDs))
	slices.Sort(ids)
	return ids
}
