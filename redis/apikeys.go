package redis

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/rueidis"

	"github.com/sessionbridge/sessionbridge"
)

// KeyStore is a [sessionbridge.KeyStore] in Redis: one hash per key and a
// sorted set per user, both tagged with the owner's shard, so that every
// write is one script on one Cluster slot. Only the SHA-256 of a key's
// secret is stored. Errors wrap sessionbridge.ErrKeyNotFound, ErrExists,
// ErrVersionConflict and ErrUnavailable.
type KeyStore struct {
	b  *Backend
	sc keyScripts
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
	args := append([]string{k.ID, millis(k.CreatedAt), keyExpiry(k)}, fields...)
	n, err := ks.sc.create.Exec(ctx, b.client, []string{b.apiKeyKey(k.ID), b.userKeysKey(k.UserID)}, args).AsInt64()
	if err != nil {
		return b.fail("create api key", err)
	}
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

// UpdateKey replaces the key if its stored version is prevVersion.
func (ks *KeyStore) UpdateKey(ctx context.Context, k *sessionbridge.APIKey, prevVersion uint64) error {
	if err := checkKeyIDs("update", k); err != nil {
		return err
	}
	fields, err := keyFields(k)
	if err != nil {
		return fmt.Errorf("redis: update api key: %w", err)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	args := append([]string{strconv.FormatUint(prevVersion, 10), k.UserID, hex.EncodeToString(k.SecretHash[:]), keyExpiry(k)}, fields...)
	n, err := ks.sc.update.Exec(ctx, b.client, []string{b.apiKeyKey(k.ID)}, args).AsInt64()
	if err != nil {
		return b.fail("update api key", err)
	}
	switch n {
	case 0:
		return fmt.Errorf("redis: api key %s: %w", k.ID, sessionbridge.ErrKeyNotFound)
	case -1:
		return fmt.Errorf("redis: api key %s: %w", k.ID, sessionbridge.ErrVersionConflict)
	case -2:
		return fmt.Errorf("redis: api key %s: an update may not change its owner or secret", k.ID)
	}
	return nil
}

// DeleteKey removes the key and returns it as it was.
func (ks *KeyStore) DeleteKey(ctx context.Context, id string) (*sessionbridge.APIKey, error) {
	if !sessionbridge.ValidAPIKeyID(id) {
		return nil, fmt.Errorf("redis: delete api key: %w", sessionbridge.ErrKeyNotFound)
	}
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	kv, err := ks.sc.del.Exec(ctx, b.client, []string{b.apiKeyKey(id)}, []string{b.prefix + "uk:{" + sessionbridge.ShardOfID(id) + "}", id}).AsStrSlice()
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

// RollKey stores next and sets the old key's expiry in one script.
func (ks *KeyStore) RollKey(ctx context.Context, oldID string, oldExpiresAt time.Time, next *sessionbridge.APIKey) error {
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
	b := ks.b
	ctx, cancel := b.opCtx(ctx)
	defer cancel()
	oldExpiry := "0"
	if !oldExpiresAt.IsZero() {
		oldExpiry = millis(oldExpiresAt.Add(keyRetention))
	}
	args := append([]string{next.ID, millis(next.CreatedAt), keyExpiry(next), nanos(oldExpiresAt), oldExpiry, next.UserID}, fields...)
	n, err := ks.sc.roll.Exec(ctx, b.client, []string{b.apiKeyKey(oldID), b.apiKeyKey(next.ID), b.userKeysKey(next.UserID)}, args).AsInt64()
	if err != nil {
		return b.fail("roll api key", err)
	}
	switch n {
	case 0:
		return fmt.Errorf("redis: api key %s: %w", oldID, sessionbridge.ErrKeyNotFound)
	case -1:
		return fmt.Errorf("redis: api key %s: %w", next.ID, sessionbridge.ErrExists)
	case -2:
		return fmt.Errorf("redis: roll api key %s: the new key is not of the same user", oldID)
	}
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

type keyScripts struct {
	create, update, del, roll, used *rueidis.Lua
}

func newKeyScripts() keyScripts {
	return keyScripts{
		create: rueidis.NewLuaScript(luaKeyCreate),
		update: rueidis.NewLuaScript(luaKeyUpdate),
		del:    rueidis.NewLuaScript(luaKeyDelete),
		roll:   rueidis.NewLuaScript(luaKeyRoll),
		used:   rueidis.NewLuaScript(luaKeyUsed),
	}
}

// API key scripts. Times are Unix nanoseconds as decimal strings (compared
// with lt), index scores and hash expiries Unix milliseconds ("0": none).
const luaKeyPrelude = luaPrelude + `
local function expireat(key, at)
  if at == '0' then redis.call('PERSIST', key) else redis.call('PEXPIREAT', key, at) end
end
`

// create: KEYS key hash, user index. ARGV id, created ms, hash expiry,
// field/value pairs... Returns 1, or 0 if the ID is taken.
const luaKeyCreate = luaKeyPrelude + `
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
expireat(KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
return 1
`

// update: KEYS key hash. ARGV previous version, user id, secret hash, hash
// expiry, field/value pairs... Returns 1, 0 if gone, -1 on a version
// conflict, -2 if the owner or secret would change.
const luaKeyUpdate = luaKeyPrelude + `
local cur = redis.call('HMGET', KEYS[1], 'version', 'user_id', 'secret_hash')
if not cur[1] then return 0 end
if cur[1] ~= ARGV[1] then return -1 end
if cur[2] ~= ARGV[2] or cur[3] ~= ARGV[3] then return -2 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
expireat(KEYS[1], ARGV[4])
return 1
`

// delete: KEYS key hash. ARGV user index prefix, id. Returns the hash as it
// was (empty if gone). The user index key is built here from the stored
// owner, which Go does not know before the read.
const luaKeyDelete = luaKeyPrelude + `
local h = redis.call('HGETALL', KEYS[1])
if #h == 0 then return h end
local m = hmap(h)
redis.call('DEL', KEYS[1])
redis.call('ZREM', ARGV[1] .. m['user_id'], ARGV[2])
return h
`

// roll: KEYS old key hash, new key hash, user index. ARGV new id, created
// ms, new hash expiry, old expires_at ns, old hash expiry, user id,
// field/value pairs of the new key... Returns 1, 0 if the old key is gone,
// -1 if the new ID is taken, -2 if the old key is another user's.
const luaKeyRoll = luaKeyPrelude + `
local owner = redis.call('HGET', KEYS[1], 'user_id')
if not owner then return 0 end
if owner ~= ARGV[6] then return -2 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('HSET', KEYS[2], unpack(ARGV, 7))
expireat(KEYS[2], ARGV[3])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[1], 'expires_at', ARGV[4])
redis.call('HINCRBY', KEYS[1], 'version', 1)
expireat(KEYS[1], ARGV[5])
return 1
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
