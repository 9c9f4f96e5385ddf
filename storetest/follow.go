package storetest

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/sessionbridge/sessionbridge"
)

// A routing bus ([sessionbridge.Router]) delivers only the events of the
// sessions and users a node follows. The suite follows every session and
// user it writes, before the write, and waits until the subscription is in
// place, so that it sees every event as on a broadcast bus.

// follower remembers what a subtest follows and the recorder watching it.
type follower struct {
	t      *testing.T
	router sessionbridge.Router

	mu     sync.Mutex
	topics map[sessionbridge.Topic]bool
	rec    *recorder
}

// follow follows the topics not yet followed and, while a recorder watches,
// waits until it was told they are.
func (f *follower) follow(topics ...sessionbridge.Topic) {
	f.mu.Lock()
	for _, tp := range topics {
		if !f.topics[tp] {
			f.topics[tp] = true
			f.router.Follow(tp)
		}
	}
	rec := f.rec
	f.mu.Unlock()
	if rec != nil {
		rec.awaitFollowed(f.t, topics)
	}
}

// followLater follows topics without waiting: the next write about one of
// them waits.
func (f *follower) followLater(topics ...sessionbridge.Topic) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, tp := range topics {
		if !f.topics[tp] {
			f.topics[tp] = true
			f.router.Follow(tp)
		}
	}
}

func (f *follower) all() []sessionbridge.Topic {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]sessionbridge.Topic, 0, len(f.topics))
	for tp := range f.topics {
		out = append(out, tp)
	}
	return out
}

// followingBus is the harness's bus when the store's bus routes events.
type followingBus struct {
	sessionbridge.Router
	f *follower
}

// followingStore follows what each write is about before writing.
type followingStore struct {
	sessionbridge.Store
	f *follower
}

func (s *followingStore) Create(ctx context.Context, sess *sessionbridge.Session, ev sessionbridge.Event) error {
	s.f.follow(sessionbridge.SessionTopic(sess.ID), sessionbridge.UserTopic(sess.UserID))
	return s.Store.Create(ctx, sess, ev)
}

func (s *followingStore) Update(ctx context.Context, sess *sessionbridge.Session, prev uint64, ev sessionbridge.Event) error {
	s.f.follow(sessionbridge.SessionTopic(sess.ID))
	return s.Store.Update(ctx, sess, prev, ev)
}

func (s *followingStore) Touch(ctx context.Context, id string, seen, expiresAt, ifSeenBefore time.Time, ev sessionbridge.Event) (bool, error) {
	s.f.follow(sessionbridge.SessionTopic(id))
	return s.Store.Touch(ctx, id, seen, expiresAt, ifSeenBefore, ev)
}

func (s *followingStore) Delete(ctx context.Context, id string, ev sessionbridge.Event) (*sessionbridge.Session, error) {
	s.f.follow(sessionbridge.SessionTopic(id))
	return s.Store.Delete(ctx, id, ev)
}

func (s *followingStore) Rotate(ctx context.Context, oldID string, sess *sessionbridge.Session, deleted, created sessionbridge.Event) error {
	// The new session's own channel carries only later events: waiting for
	// it here would give updates racing the rotation more time to win.
	s.f.followLater(sessionbridge.SessionTopic(sess.ID))
	s.f.follow(sessionbridge.SessionTopic(oldID), sessionbridge.UserTopic(sess.UserID))
	return s.Store.Rotate(ctx, oldID, sess, deleted, created)
}

// HandleFollowed records which topics the bus delivers now.
func (r *recorder) HandleFollowed(topics []sessionbridge.Topic) {
	r.mu.Lock()
	if r.followed == nil {
		r.followed = map[sessionbridge.Topic]bool{}
	}
	for _, tp := range topics {
		r.followed[tp] = true
	}
	r.mu.Unlock()
	r.signal()
}

// awaitFollowed waits until every topic was reported followed. It may run on
// a goroutine other than the test's, so it reports with Errorf.
func (r *recorder) awaitFollowed(t *testing.T, topics []sessionbridge.Topic) {
	deadline := time.Now().Add(eventWait)
	for {
		r.mu.Lock()
		missing := 0
		for _, tp := range topics {
			if !r.followed[tp] {
				missing++
			}
		}
		r.mu.Unlock()
		if missing == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("%d of %d topics not followed within %v", missing, len(topics), eventWait)
			return
		}
		// Polled, not signalled: r.changed belongs to wait.
		time.Sleep(2 * time.Millisecond)
	}
}
