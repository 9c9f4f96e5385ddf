package redis

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
)

// KeyStore is a [sessionbridge.KeyStore] in Redis: one hash per key, a
// sorted set per user and an expiry index per shard, all tagged with the
// owner's shard, so that every write is one script on one Cluster slot, and
// the PUBLISH of its event runs in that same script. Only the SHA-256 of a
// key's secret is stored, and no event carries it. Errors wrap
// sessionbridge.ErrKeyNotFound, ErrExists, ErrVersionConflict and
// ErrUnavailable.
type KeyStore struct {
	b       *Backend
	sc      keyScripts
	claimMu sync.Mutex
}

var _ sessionbridge.KeyStore = (*KeyStore)(nil)

// keyRetention is how long a key's hash outlives its expiry, so that a
// roll's old key can still be shown as expired for a while.
const keyRetention = 24 * time.Hour

func (b *Backend) apiKeyKey(id string) string {
	return b.prefix + "k:{" + sessionbridge.ShardOfID(id) + "}" + id
}

func (b *Backend) userKeysKey(userID string) string {
	return b.prefix + "uk:{" + sessionbridge.Shard(userID) + "}" + userID
}

func (b *Backend) apiKeyKeyPrefix(shard string) string { return b.prefix + "k:{" + shard + "}" }

// keyExpiryKey is the expiry index of the keys of one shard: key IDs scored
// by their expiry in Unix ms.
func (b *Backend) keyExpiryKey(shard string) string { return b.prefix + "kx:{" + shard + "}" }

// keyScore is a key's expiry index score, "0" for a key that never expires
// (and is then kept out of the index).
func keyScore(t time.Time) string {
	if t.IsZero() {
		return "0"
	}
	return millis(t)
}

// Placeholder of an API key ID that a script fills in; see luaKeyPrelude.
const phKeyID = "@@sb:key_id@@"

// keyEvent returns the payload of a key event of type typ. Where the script
// knows what Go does not, Go leaves placeholders (and says which in flags).
func keyEvent(typ sessionbridge.EventType, ev sessionbridge.Event, keyID, userID string, version uint64) (payload, flags string, err error) {
	ev.Type, ev.SessionID = typ, ""
	ev.KeyID, ev.UserID, ev.Version = keyID, userID, version
	if keyID == "" {
		ev.KeyID, flags = phKeyID, flags+"k"
	}
	if userID == "" {
		ev.UserID, flags = phUserID, flags+"u"
	}
	if version == 0 {
		ev.Version, flags = phVersion, flags+"v"
	}
	payload, err = marshalEvent(ev)
	return payload, flags, err
}

// API key hash fields; see docs/redis.md.
const (
	kfID       = "id"
	kfUserID   = "user_id"
	kfName     = "name"
	kfScopes   = "scopes"
	kfLimits   = "limits"
	kfMeta     = "meta"
	kfHash     = "secret_hash"
	kfCreated  = "created_at"
	kfExpires  = "expires_at"
	kfLastUsed = "last_used_at"
	kfLastIP   = "last_ip"
	kfVersion  = "version"
)

// keyFields returns the HSET field-value pairs of k, last use excluded:
// only MarkUsed writes those.
func keyFields(k *sessionbridge.APIKey) ([]string, error) {
	scopes, err := json.Marshal(k.Scopes)
	if err != nil {
		return nil, fmt.Errorf("encode scopes: %w", err)
	}
	limits, err := json.Marshal(k.Limits)
	if err != nil {
		return nil, fmt.Errorf("encode limits: %w", err)
	}
	if k.Scopes == nil {
		scopes = []byte("[]")
	}
	return []string{
		kfID, k.ID,
		kfUserID, k.UserID,
		kfName, k.Name,
		kfScopes, string(scopes),
		kfLimits, string(limits),
		kfMeta, string(k.Meta),
		kfHash, hex.EncodeToString(k.SecretHash[:]),
		kfCreated, nanos(k.CreatedAt),
		kfExpires, nanos(k.ExpiresAt),
		kfVersion, strconv.FormatUint(k.Version, 10),
	}, nil
}

// keyExpiry is the Redis expiry of a key's hash in Unix ms, "0" for none.
func keyExpiry(k *sessionbridge.APIKey) string {
	if k.ExpiresAt.IsZero() {
		return "0"
	}
	return millis(k.ExpiresAt.Add(keyRetention))
}

func decodeKey(m map[string]string) (*sessionbridge.APIKey, error) {
	if len(m) == 0 {
		return nil, nil
	}
	k := &sessionbridge.APIKey{ID: m[kfID], UserID: m[kfUserID], Name: m[kfName], LastIP: m[kfLastIP]}
	if !sessionbridge.ValidAPIKeyID(k.ID) {
		return nil, errors.New("corrupt api key hash: bad id")
	}
	if err := json.Unmarshal([]byte(m[kfScopes]), &k.Scopes); err != nil {
		return nil, fmt.Errorf("corrupt api key %s: scopes: %w", k.ID, err)
	}
	if err := json.Unmarshal([]byte(m[kfLimits]), &k.Limits); err != nil {
		return nil, fmt.Errorf("corrupt api key %s: limits: %w", k.ID, err)
	}
	if len(k.Scopes) == 0 {
		k.Scopes = nil
	}
	if meta := m[kfMeta]; meta != "" {
		k.Meta = json.RawMessage(meta)
	}
	h, err := hex.DecodeString(m[kfHash])
	if err != nil || len(h) != len(k.SecretHash) {
		return nil, fmt.Errorf("corrupt api key %s: bad secret hash", k.ID)
	}
	copy(k.SecretHash[:], h)
	if k.Version, err = strconv.ParseUint(m[kfVersion], 10, 64); err != nil {
		return nil, fmt.Errorf("corrupt api key %s: version: %w", k.ID, err)
	}
	for _, f := range []struct {
		name string
		dst  *time.Time
	}{{kfCreated, &k.CreatedAt}, {kfExpires, &k.ExpiresAt}, {kfLastUsed, &k.LastUsedAt}} {
		v := m[f.name]
		if v == "" {
			continue
		}
		if *f.dst, err = parseNanos(v); err != nil {
			return nil, fmt.Errorf("corrupt api key %s: %s: %w", k.ID, f.name, err)
		}
	}
	return k, nil
}

func checkKeyIDs(op string, k *sessionbridge.APIKey) error {
	if k == nil || !sessionbridge.ValidAPIKeyID(k.ID) {
		return fmt.Errorf("redis: %s api key: invalid id", op)
	}
	if sessionbridge.ShardOfID(k.ID) != sessionbridge.Shard(k.UserID) {
		return fmt.Errorf("redis: %s api key %s: id is not of the user's shard", op, k.ID)
	}
	return nil
}

// CreateKey stores k; ErrExists if its ID is taken.
func (ks *KeyStore) CreateKey(ctx context.Context, k *sessionbridge.APIKey) error {
	if err := checkKeyIDs("create", k); err != nil {
		return err
	}
	fields, err := keyFields(k)
	if err != nil {
		return fmt.Errorf("redis: create api key: %w", err)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	args := append([]string{k.ID, millis(k.CreatedAt), keyExpiry(k), keyScore(k.ExpiresAt)}, fields...)
	keys := []string{b.apiKeyKey(k.ID), b.userKeysKey(k.UserID), b.keyExpiryKey(sessionbridge.ShardOfID(k.ID))}
	n, err := ks.sc.create.Exec(ctx, b.client, keys, args).AsInt64()
	if err != nil {
		return b.fail("create api key", err)
	}
	b.wrote(keys[2], k.ExpiresAt)
	if n == 0 {
		return fmt.Errorf("redis: create api key %s: %w", k.ID, sessionbridge.ErrExists)
	}
	return nil
}

// GetKey returns the key with id, or ErrKeyNotFound.
func (ks *KeyStore) GetKey(ctx context.Context, id string) (*sessionbridge.APIKey, error) {
	if !sessionbridge.ValidAPIKeyID(id) {
		return nil, fmt.Errorf("redis: get api key: %w", sessionbridge.ErrKeyNotFound)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	m, err := b.client.Do(ctx, b.client.B().Hgetall().Key(b.apiKeyKey(id)).Build()).AsStrMap()
	if err != nil {
		return nil, b.fail("get api key", err)
	}
	k, err := decodeKey(m)
	if err != nil {
		return nil, fmt.Errorf("redis: get api key: %w", err)
	}
	if k == nil {
		return nil, fmt.Errorf("redis: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	return k, nil
}

// GetKeys returns the keys that exist among ids in one pipelined round
// trip. A key whose hash cannot be decoded is logged and left out, as if it
// did not exist: its sockets close (fail closed).
func (ks *KeyStore) GetKeys(ctx context.Context, ids []string) (map[string]*sessionbridge.APIKey, error) {
	out, err := readHashes(ctx, ks.b, "get api keys", "api key", ids, sessionbridge.ValidAPIKeyID, ks.b.apiKeyKey, decodeKey)
	if err != nil {
		return nil, err
	}
	for id, k := range out {
		if k.ID != id {
			delete(out, id)
		}
	}
	return out, nil
}

// UpdateKey replaces the key if its stored version is prevVersion and
// publishes ev, in one script.
func (ks *KeyStore) UpdateKey(ctx context.Context, k *sessionbridge.APIKey, prevVersion uint64, ev sessionbridge.Event) error {
	if err := checkKeyIDs("update", k); err != nil {
		return err
	}
	fields, err := keyFields(k)
	if err != nil {
		return fmt.Errorf("redis: update api key: %w", err)
	}
	payload, _, err := keyEvent(sessionbridge.EventKeyUpdated, ev, k.ID, k.UserID, k.Version)
	if err != nil {
		return fmt.Errorf("redis: update api key: %w", err)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	args := append([]string{
		strconv.FormatUint(prevVersion, 10), k.UserID, hex.EncodeToString(k.SecretHash[:]), keyExpiry(k),
		b.channel(sessionbridge.EventKeyUpdated), payload, k.ID, keyScore(k.ExpiresAt),
	}, fields...)
	keys := []string{b.apiKeyKey(k.ID), b.keyExpiryKey(sessionbridge.ShardOfID(k.ID))}
	n, err := ks.sc.update.Exec(ctx, b.client, keys, args).AsInt64()
	if err != nil {
		return b.fail("update api key", err)
	}
	b.wrote(keys[1], k.ExpiresAt)
	switch n {
	case 0:
		return fmt.Errorf("redis: api key %s: %w", k.ID, sessionbridge.ErrKeyNotFound)
	case -1:
		return fmt.Errorf("redis: api key %s: %w", k.ID, sessionbridge.ErrVersionConflict)
	case -2:
		return fmt.Errorf("redis: api key %s: an update may not change its owner or secret", k.ID)
	}
	b.metrics.EventPublished(string(sessionbridge.EventKeyUpdated))
	return nil
}

// DeleteKey removes the key, publishes ev (with the key's owner and version
// filled in by the script) and returns the key as it was.
func (ks *KeyStore) DeleteKey(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.APIKey, error) {
	if !sessionbridge.ValidAPIKeyID(id) {
		return nil, fmt.Errorf("redis: delete api key: %w", sessionbridge.ErrKeyNotFound)
	}
	payload, flags, err := keyEvent(sessionbridge.EventKeyDeleted, ev, id, "", 0)
	if err != nil {
		return nil, fmt.Errorf("redis: delete api key: %w", err)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	shard := sessionbridge.ShardOfID(id)
	kv, err := ks.sc.del.Exec(ctx, b.client,
		[]string{b.apiKeyKey(id), b.keyExpiryKey(shard)},
		[]string{b.prefix + "uk:{" + shard + "}", id, b.channel(sessionbridge.EventKeyDeleted), payload, flags},
	).AsStrSlice()
	if err != nil {
		return nil, b.fail("delete api key", err)
	}
	m := make(map[string]string, len(kv)/2)
	for i := 0; i+1 < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	k, err := decodeKey(m)
	if err != nil {
		return nil, fmt.Errorf("redis: delete api key: %w", err)
	}
	if k == nil {
		return nil, fmt.Errorf("redis: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	b.metrics.EventPublished(string(sessionbridge.EventKeyDeleted))
	return k, nil
}

// ListUserKeys returns the user's keys, oldest first. Index entries whose
// key has gone (expired out of Redis) are skipped and removed.
func (ks *KeyStore) ListUserKeys(ctx context.Context, userID string) ([]*sessionbridge.APIKey, error) {
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	index := b.userKeysKey(userID)
	ids, err := b.client.Do(ctx, b.client.B().Zrange().Key(index).Min("0").Max("-1").Build()).AsStrSlice()
	if err != nil {
		return nil, b.fail("list api keys", err)
	}
	if len(ids) == 0 {
		return nil, nil
	}
	cmds := make(rueidis.Commands, 0, len(ids))
	for _, id := range ids {
		cmds = append(cmds, b.client.B().Hgetall().Key(b.apiKeyKey(id)).Build())
	}
	out := make([]*sessionbridge.APIKey, 0, len(ids))
	var stale []string
	for i, res := range b.client.DoMulti(ctx, cmds...) {
		m, err := res.AsStrMap()
		if err != nil {
			return nil, b.fail("list api keys", err)
		}
		k, err := decodeKey(m)
		if err != nil {
			return nil, fmt.Errorf("redis: list api keys: %w", err)
		}
		if k == nil || k.UserID != userID {
			stale = append(stale, ids[i])
			continue
		}
		out = append(out, k)
	}
	if len(stale) > 0 {
		// Best effort: a failure leaves entries that the next listing skips.
		_ = b.client.Do(ctx, b.client.B().Zrem().Key(index).Member(stale...).Build()).Error()
	}
	slices.SortStableFunc(out, func(a, b *sessionbridge.APIKey) int { return a.CreatedAt.Compare(b.CreatedAt) })
	return out, nil
}

// RollKey stores next, sets the old key's expiry and publishes ev for the
// old key, in one script.
func (ks *KeyStore) RollKey(ctx context.Context, oldID string, oldExpiresAt time.Time, next *sessionbridge.APIKey, ev sessionbridge.Event) error {
	if err := checkKeyIDs("roll", next); err != nil {
		return err
	}
	if sessionbridge.ShardOfID(oldID) != sessionbridge.ShardOfID(next.ID) {
		return fmt.Errorf("redis: roll api key %s: the new key is not of the same user", oldID)
	}
	fields, err := keyFields(next)
	if err != nil {
		return fmt.Errorf("redis: roll api key: %w", err)
	}
	ev.ExpiresAt = oldExpiresAt
	payload, flags, err := keyEvent(sessionbridge.EventKeyUpdated, ev, oldID, next.UserID, 0)
	if err != nil {
		return fmt.Errorf("redis: roll api key: %w", err)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	oldExpiry := "0"
	if !oldExpiresAt.IsZero() {
		oldExpiry = millis(oldExpiresAt.Add(keyRetention))
	}
	args := append([]string{
		next.ID, millis(next.CreatedAt), keyExpiry(next), nanos(oldExpiresAt), oldExpiry, next.UserID,
		keyScore(next.ExpiresAt), keyScore(oldExpiresAt), oldID,
		b.channel(sessionbridge.EventKeyUpdated), payload, flags,
	}, fields...)
	keys := []string{b.apiKeyKey(oldID), b.apiKeyKey(next.ID), b.userKeysKey(next.UserID), b.keyExpiryKey(sessionbridge.ShardOfID(oldID))}
	n, err := ks.sc.roll.Exec(ctx, b.client, keys, args).AsInt64()
	if err != nil {
		return b.fail("roll api key", err)
	}
	// The old key's grace and the new key's expiry: the index is read once
	// more on this node's next claim.
	b.wrote(keys[3], time.Now())
	switch n {
	case 0:
		return fmt.Errorf("redis: api key %s: %w", oldID, sessionbridge.ErrKeyNotFound)
	case -1:
		return fmt.Errorf("redis: api key %s: %w", next.ID, sessionbridge.ErrExists)
	case -2:
		return fmt.Errorf("redis: roll api key %s: the new key is not of the same user", oldID)
	}
	b.metrics.EventPublished(string(sessionbridge.EventKeyUpdated))
	return nil
}

// MarkUsed records a use unless the last one is within KeyUseInterval.
func (ks *KeyStore) MarkUsed(ctx context.Context, id string, at time.Time, ip string) (bool, error) {
	if !sessionbridge.ValidAPIKeyID(id) {
		return false, fmt.Errorf("redis: mark api key used: %w", sessionbridge.ErrKeyNotFound)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	args := []string{nanos(at), nanos(at.Add(-sessionbridge.KeyUseInterval)), ip}
	n, err := ks.sc.used.Exec(ctx, b.client, []string{b.apiKeyKey(id)}, args).AsInt64()
	if err != nil {
		return false, b.fail("mark api key used", err)
	}
	if n == -1 {
		return false, fmt.Errorf("redis: api key %s: %w", id, sessionbridge.ErrKeyNotFound)
	}
	return n == 1, nil
}

// ClaimExpiredKeys claims up to limit keys (all if limit is not positive)
// whose expiry is at or before now: it reads the candidates of the 256 shard
// key expiry indexes in one pipelined round trip, then runs one claim
// script per shard, which takes each key out of its index and publishes its
// expired event. The ZREM is the claim: each expiry is published once,
// whichever node runs the script. The keys stay in Redis until their
// retention ends.
func (ks *KeyStore) ClaimExpiredKeys(ctx context.Context, now time.Time, limit int, tmpl sessionbridge.Event) ([]*sessionbridge.APIKey, error) {
	// One claim at a time per node, for the expiry watch (see
	// Store.ClaimExpired).
	ks.claimMu.Lock()
	defer ks.claimMu.Unlock()
	var out []*sessionbridge.APIKey
	for {
		n := limit - len(out)
		if limit <= 0 {
			n = claimBatch
		}
		got, more, err := ks.claimRound(ctx, now, n, tmpl)
		out = append(out, got...)
		if err != nil {
			return out, err
		}
		if !more || len(got) == 0 || limit > 0 && len(out) >= limit {
			return out, nil
		}
	}
}

func (ks *KeyStore) claimRound(ctx context.Context, now time.Time, n int, tmpl sessionbridge.Event) ([]*sessionbridge.APIKey, bool, error) {
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	due, err := b.dueShards(ctx, &b.keyExpiry, b.keyExpiryKey, now, "claim_expired_keys")
	if err != nil || len(due) == 0 {
		return nil, false, err
	}
	byShard, order, more, err := b.dueInIndexes(ctx, b.keyExpiryKey, due, now, n, "claim_expired_keys")
	if err != nil || len(order) == 0 {
		return nil, false, err
	}
	b.keyExpiry.markDue(order, now)
	tmpl.Scopes, tmpl.ExpiresAt = nil, time.Time{}
	payload, flags, err := keyEvent(sessionbridge.EventKeyExpired, tmpl, "", "", 0)
	if err != nil {
		return nil, false, fmt.Errorf("redis: claim expired api keys: %w", err)
	}
	stmts := make([]rueidis.LuaExec, 0, len(order))
	for _, sh := range order {
		args := append([]string{b.channel(sessionbridge.EventKeyExpired), payload, flags, nanos(now), millis(now), b.apiKeyKeyPrefix(sh)}, byShard[sh]...)
		stmts = append(stmts, rueidis.LuaExec{Keys: []string{b.keyExpiryKey(sh)}, Args: args})
	}
	var out []*sessionbridge.APIKey
	var firstErr error
	for _, r := range ks.sc.claim.ExecMulti(ctx, b.client, stmts...) {
		list, err := r.ToArray()
		if err != nil {
			if firstErr == nil {
				firstErr = b.fail("claim_expired_keys", err)
			}
			continue
		}
		for _, item := range list {
			kv, err := item.AsStrSlice()
			if err != nil {
				return out, false, fmt.Errorf("redis: claim expired api keys: %w", err)
			}
			m := make(map[string]string, len(kv)/2)
			for i := 0; i+1 < len(kv); i += 2 {
				m[kv[i]] = kv[i+1]
			}
			b.metrics.EventPublished(string(sessionbridge.EventKeyExpired))
			k, err := decodeKey(m)
			if err != nil || k == nil {
				// Claimed and published all the same; report what we can.
				b.log.Error("redis: decoding a claimed api key", "err", err)
				continue
			}
			out = append(out, k)
		}
	}
	return out, more, firstErr
}

type keyScripts struct {
	create, update, del, roll, used, claim *rueidis.Lua
}

func newKeyScripts() keyScripts {
	return keyScripts{
		create: rueidis.NewLuaScript(luaKeyCreate),
		update: rueidis.NewLuaScript(luaKeyUpdate),
		del:    rueidis.NewLuaScript(luaKeyDelete),
		roll:   rueidis.NewLuaScript(luaKeyRoll),
		used:   rueidis.NewLuaScript(luaKeyUsed),
		claim:  rueidis.NewLuaScript(luaKeyClaim),
	}
}

// API key scripts. Times are Unix nanoseconds as decimal strings (compared
// with lt), index scores and hash expiries Unix milliseconds ("0": none).
// Event payloads come from Go; where only the script knows a value (the
// owner or version of a key being deleted, rolled or expired), Go leaves a
// placeholder that kfill replaces, as fill does for sessions: flags 'k'
// (key ID), 'u' (user ID, both first occurrence: they come before any list
// in the payload) and 'v' (version, last occurrence).
const luaKeyPrelude = luaPrelude + `
local function expireat(key, at)
  if at == '0' then redis.call('PERSIST', key) else redis.call('PEXPIREAT', key, at) end
end
local function kfill(payload, flags, kid, uid, ver)
  if string.find(flags, 'k', 1, true) then payload = subfirst(payload, '"@@sb:key_id@@"', cjson.encode(kid)) end
  if string.find(flags, 'u', 1, true) then payload = subfirst(payload, '"@@sb:user_id@@"', cjson.encode(uid)) end
  if string.find(flags, 'v', 1, true) then payload = sublast(payload, '"version":18446744073709551615', '"version":' .. ver) end
  return payload
end
local function index(key, score, id)
  if score == '0' then redis.call('ZREM', key, id) else indexdeadline(key, score, id) end
end
`

// create: KEYS key hash, user index, expiry index. ARGV id, created ms, hash
// expiry, expiry score, field/value pairs... Returns 1, or 0 if the ID is
// taken. Creating a key publishes nothing.
const luaKeyCreate = luaKeyPrelude + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
expireat(KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
index(KEYS[3], ARGV[4], ARGV[1])
return 1
`

// update: KEYS key hash, expiry index. ARGV previous version, user id,
// secret hash, hash expiry, channel, payload, id, expiry score, field/value
// pairs... Returns 1 (and publishes), 0 if gone, -1 on a version conflict,
// -2 if the owner or secret would change.
const luaKeyUpdate = luaKeyPrelude + `
local cur = redis.call('HMGET', KEYS[1], 'version', 'user_id', 'secret_hash')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[1] then return -1 end
if cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return -2 end
redis.call('HSET', KEYS[1], unpack(ARGV, 9))
expireat(KEYS[1], ARGV[4])
index(KEYS[2], ARGV[8], ARGV[7])
redis.call('PUBLISH', ARGV[5], ARGV[6])
return 1
`

// delete: KEYS key hash, expiry index. ARGV user index prefix, id, channel,
// payload, fill flags. Returns the hash as it was (empty if gone, and then
// nothing is published). The user index key is built here from the stored
// owner, which Go does not know before the read.
const luaKeyDelete = luaKeyPrelude + `
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return h end
local m = hmap(h)
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. m['user_id'], ARGV[2])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('PUBLISH', ARGV[3], kfill(ARGV[4], ARGV[5], ARGV[2], m['user_id'], m['version']))
return h
`

// roll: KEYS old key hash, new key hash, user index, expiry index. ARGV new
// id, created ms, new hash expiry, old expires_at ns, old hash expiry, user
// id, new expiry score, old expiry score, old id, channel, payload (of the
// old key's update), fill flags, field/value pairs of the new key...
// Returns 1, 0 if the old key is gone, -1 if the new ID is taken, -2 if the
// old key is another user's.
const luaKeyRoll = luaKeyPrelude + `
local owner = redis.call('HGET', KEYS[1], 'user_id')
if not owner then return 0 end
if owner ~= ARGV[6] then return -2 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[2], unpack(ARGV, 13))
expireat(KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
index(KEYS[4], ARGV[7], ARGV[1])
redis.call('HSET', KEYS[1], 'expires_at', ARGV[4])
local ver = redis.call('HINCRBY', KEYS[1], 'version', 1)
expireat(KEYS[1], ARGV[5])
index(KEYS[4], ARGV[8], ARGV[9])
redis.call('PUBLISH', ARGV[10], kfill(ARGV[11], ARGV[12], ARGV[9], owner, tostring(ver)))
return 1
`

// claim: KEYS expiry index of one shard. ARGV channel, payload template,
// fill flags, now (ns), now (ms), key hash prefix, candidate ids...
// Claims each candidate still in the index whose expiry is at or before
// now: takes it out of the index and publishes its expired event; the ZREM
// makes each claim happen once, whoever runs the script. A candidate whose
// hash is gone is dropped from the index; one whose expiry moved is
// re-scored. Returns the claimed hashes as flat arrays.
const luaKeyClaim = luaKeyPrelude + `
local out = {}
local nowms = tonumber(ARGV[5])
for i = 7, #ARGV do
  local id = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], id)
  if score and tonumber(score) <= nowms then
    local h = redis.call('HGETALL', ARGV[6] .. id)
    if #h == 0 then
      redis.call('ZREM', KEYS[1], id)
    else
      local m = hmap(h)
      local exp = m['expires_at'] or '0'
      if exp == '0' then
        redis.call('ZREM', KEYS[1], id)
      elseif not lt(ARGV[4], exp) then
        redis.call('ZREM', KEYS[1], id)
        redis.call('PUBLISH', ARGV[1], kfill(ARGV[2], ARGV[3], id, m['user_id'], m['version']))
        table.insert(out, h)
      elseif ms(exp) > tonumber(score) then
        redis.call('ZADD', KEYS[1], ms(exp), id)
      end
    end
  end
end
return out
`

// used: KEYS key hash. ARGV at ns, at minus the interval ns, ip. Returns 1
// when written, 0 when throttled, -1 if the key is gone.
const luaKeyUsed = luaKeyPrelude + `
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local last = redis.call('HGET', KEYS[1], 'last_used_at')
if last and last ~= '0' and lt(ARGV[2], last) then return 0 end
redis.call('HSET', KEYS[1], 'last_used_at', ARGV[1], 'last_ip', ARGV[3])
return 1
`

// TakeExpiryTurn reports whether the caller holds the turn to run the
// periodic key expiry claim for the next ttl; see Store.TakeExpiryTurn.
func (ks *KeyStore) TakeExpiryTurn(ctx context.Context, ttl time.Duration) (bool, error) {
	mine, err := ks.b.takeTurn(ctx, "kexpiry:turn", ttl)
	if !mine {
		ks.b.keyExpiry.forget()
	}
	return mine, err
}
