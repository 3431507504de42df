package storetest_test

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
)

// A breakage is a real engine (boltstore) with one promise broken, and the
// test of the suite that must catch it.
type breakage struct {
	catches string // the suite's test, as Run names it
	open    func(path string, opts store.Options) (store.Store, error)
}

// openBolt opens the real engine.
func openBolt(path string, opts store.Options) (store.Store, error) {
	return boltstore.Open(path, boltstore.Options{Options: opts})
}

var breakages = map[string]breakage{
	"drop-every-second-notification": {"Subscribe/EachChange", func(path string, opts store.Options) (store.Store, error) {
		s, err := openBolt(path, opts)
		return dropNotifications{s}, err
	}},
	"admit-one-over-capacity": {"Join/Capacity", func(path string, opts store.Options) (store.Store, error) {
		capacity := opts.WithDefaults().Capacity
		opts.Capacity = capacity + 1
		s, err := openBolt(path, opts)
		return overCapacity{s, capacity}, err
	}},
	"ignore-idempotency-keys": {"Append/Idempotency", func(path string, opts store.Options) (store.Store, error) {
		s, err := openBolt(path, opts)
		return ignoreIdempotency{s}, err
	}},
	"never-remove-silent-members": {"Presence/SilentMemberRemovedOnce", func(path string, opts store.Options) (store.Store, error) {
		opts.ClientTimeout = 1000 * time.Hour
		return openBolt(path, opts)
	}},
	"forget-acknowledgements-on-restart": {"Restart/Acknowledgements", func(path string, opts store.Options) (store.Store, error) {
		s, err := openBolt(path, opts)
		return &forgetAcks{Store: s, acked: map[store.Member]uint64{}}, err
	}},
}

// dropNotifications calls a subscriber for every other change only.
type dropNotifications struct{ store.Store }

func (s dropNotifications) Subscribe(m store.Member, f func(upto uint64)) (cancel func()) {
	var calls atomic.Int64
	return s.Store.Subscribe(m, func(upto uint64) {
		if calls.Add(1)%2 == 0 {
			return
		}
		f(upto)
	})
}

// overCapacity says its capacity is one less than what it admits.
type overCapacity struct {
	store.Store
	capacity int
}

func (s overCapacity) Capacity() int { return s.capacity }

// ignoreIdempotency stores every post, repeated key or not.
type ignoreIdempotency struct{ store.Store }

func (s ignoreIdempotency) Append(ctx context.Context, p store.Post) (store.Appended, error) {
	p.IdempotencyKey = ""
	return s.Store.Append(ctx, p)
}

// forgetAcks keeps acknowledgements in its own memory, never in the
// engine: Read honours them while the process lives, and a restart loses
// them all.
type forgetAcks struct {
	store.Store
	mu    sync.Mutex
	acked map[store.Member]uint64
}

func (s *forgetAcks) Read(ctx context.Context, m store.Member, q store.ReadRequest) ([]store.Message, uint64, error) {
	s.mu.Lock()
	acked := s.acked[m]
	if q.Acknowledge && q.After > acked {
		s.acked[m] = q.After
	}
	s.mu.Unlock()
	cursor := max(q.After, acked)
	msgs, _, err := s.Store.Read(ctx, m, store.ReadRequest{After: cursor, Limit: q.Limit})
	return msgs, cursor, err
}
