package boltstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/tincan/tincan/store"
)

// Live readers and presence: what the store tells the handlers' streams
// and polls, and how it decides that a silent member has gone. Both are
// in memory: after a restart nobody is listening yet, and every member
// gets the whole client timeout to come back.

// errRoomChanged: the room changed between a join's password check and
// its transaction; the join starts over. An *store.Error, so that the
// commit loop takes it as a refusal that wrote nothing.
var errRoomChanged = &store.Error{Code: "retry", Msg: "room changed while joining"}

// Subscribe implements store.Store. Notifications are sent by the commit
// loop, after the commit and after the index and the directory show it.
func (s *Store) Subscribe(m store.Member, f func(upto uint64)) (cancel func()) {
	return s.notifier.Subscribe(m, f)
}

// Touch implements store.Store.
func (s *Store) Touch(m store.Member) { s.presence.Touch(m) }

// Hold implements store.Store.
// The store counts the holds too, for Room's Listening.
func (s *Store) Hold(m store.Member) (release func()) {
	s.listenMu.Lock()
	s.listening[m]++
	s.listenMu.Unlock()
	held := s.presence.Hold(m)
	var once sync.Once
	return func() {
		once.Do(func() {
			s.listenMu.Lock()
			if s.listening[m]--; s.listening[m] <= 0 {
				delete(s.listening, m)
			}
			s.listenMu.Unlock()
			held()
		})
	}
}

// isListening reports whether m holds now.
func (s *Store) isListening(m store.Member) bool {
	s.listenMu.Lock()
	defer s.listenMu.Unlock()
	return s.listening[m] > 0
}

// startPresence gives every member on disk the whole client timeout.
func (s *Store) startPresence() error {
	members, err := s.members()
	for _, m := range members {
		s.presence.Touch(m)
	}
	return err
}

// reapLoop removes silent members until Close.
func (s *Store) reapLoop() {
	defer s.background.Done()
	t := time.NewTicker(min(time.Second, s.opts.ClientTimeout/4))
	defer t.Stop()
	for {
		select {
		case <-t.C:
			s.removeSilent()
			s.tombs.sweep(time.Now())
		case <-s.closing:
			return
		}
	}
}

// timeoutsPerCommit bounds the removals of silent members that share one
// commit: when thousands lapse together (a proxy restarts, a region loses
// its network), they go in a few commits instead of one each, and posts
// queued meanwhile wait for one such commit at most.
const timeoutsPerCommit = 256

// removeSilent removes the members that have been silent for longer than
// the client timeout, timeoutsPerCommit at a time, each with its peer-left
// event in the commit that removes it.
func (s *Store) removeSilent() {
	timeout := s.opts.ClientTimeout
	silent := s.presence.Silent(timeout)
	for len(silent) > 0 {
		chunk := silent[:min(timeoutsPerCommit, len(silent))]
		silent = silent[len(chunk):]
		var removed []store.Member
		err := s.update(context.Background(), func(tx *bolt.Tx) error {
			removed = removed[:0]
			for room, ids := range stillSilent(chunk, s.presence, timeout) {
				gone, _, err := s.leave(tx, room, ids, store.ReasonTimeout)
				if err != nil {
					return fmt.Errorf("room %s: %w", room, err)
				}
				for _, id := range gone {
					removed = append(removed, store.Member{Room: room, ID: id})
				}
			}
			return nil
		})
		if err != nil {
			if !errors.Is(err, store.ErrClosed) {
				s.opts.Logger.Error("remove silent members", "err", err)
			}
			return
		}
		for _, m := range removed {
			s.forget(m)
			s.opts.Logger.Debug("member timed out", "room", m.Room, "client", m.ID)
		}
		// One line per commit: thousands lapsing at once must not flood the log.
		if len(removed) > 0 {
			s.opts.Logger.Info("members timed out", "n", len(removed), "first_room", removed[0].Room, "first_client", removed[0].ID)
		}
	}
}

// stillSilent groups by room the members of list that are still silent:
// one may have come back since the list was made.
func stillSilent(list []store.Member, p *store.Presence, timeout time.Duration) map[string][]string {
	rooms := map[string][]string{}
	for _, m := range list {
		if p.IsSilent(m, timeout) {
			rooms[m.Room] = append(rooms[m.Room], m.ID)
		}
	}
	return rooms
}

// pruneLoop prunes every PruneEvery until Close.
func (s *Store) pruneLoop() {
	defer s.background.Done()
	t := time.NewTicker(s.opts.PruneEvery)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if _, err := s.Prune(context.Background()); err != nil && !errors.Is(err, store.ErrClosed) {
				s.opts.Logger.Error("prune", "err", err)
			}
		case <-s.closing:
			return
		}
	}
}
