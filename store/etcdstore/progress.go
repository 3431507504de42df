package etcdstore

import (
	"context"
	"errors"
	"time"
)

// The guard: that the watch follows the cluster, checked, and the watch
// moved to another member when it does not.
//
// A watch through a member that stopped answering, or that a silent
// network cut from this instance, neither delivers nor ends: gRPC
// keepalive notices after 10 s and more, and WithRequireLeader only helps
// when the member itself lost its leader. A progress notification alone
// proves nothing either: it carries the member's revision, which stops
// where the member stopped.
//
// So, as Kubernetes' API server does (KEP-2340): every MemberTimeout/2,
// unless something else (a write of this instance reaching the mirror, a
// catch-up) confirmed the mirror current meanwhile, the guard reads the
// cluster's revision with a linearizable read (on another member than the
// watch's; failover.go takes it away from one that does not answer), then
// asks the watch for progress every 100 ms until the mirror reaches that
// revision. If the mirror does not move at all for MemberTimeout while
// behind, the watch is dropped and opened again on another member, from
// the revision after the mirror's: nothing is skipped, nothing applied
// twice. A mirror that moves but slowly (a busy cluster) is waited for.
// A write of this instance that waits for its own change to reach the
// mirror (settle, watch.go) does the same with the revision etcd gave it.
// Meanwhile requests are answered as before: a write waits for its own
// change to reach the mirror, a refusal waits for a catch-up, and
// Authenticate, Read and Ping first catch up (or answer
// store.ErrUnavailable) once the mirror is StaleAfter old.

// moveWatch drops w, the watch that stays at revision at while the
// cluster is at target (0: unknown, its member does not answer), so that
// it is opened again on another member; unless w is gone already.
func (s *Store) moveWatch(w *watchStream, at, target int64, stalled time.Duration) {
	if w == nil || w != s.stream.Load() || !w.dropped.CompareAndSwap(false, true) {
		return
	}
	where := "etcd"
	if w.node != nil {
		where = w.node.url
	}
	if target == 0 { // its member was found silent
		s.log.Warn("etcd watch is on a member that does not answer; opening it on another member", "member", where, "at", at)
	} else {
		s.log.Warn("etcd watch does not follow; opening it on another member", "member", where, "at", at, "cluster", target, "stalled", stalled)
	}
	s.metrics.watchMoves.Inc()
	w.cancel(errStalled)
}

// errStalled is the cause of a watch dropped by the guard.
var errStalled = errors.New("the etcd watch did not follow the cluster")

// guardLoop runs the guard until Close.
func (s *Store) guardLoop() {
	defer s.wg.Done()
	every := s.opts.MemberTimeout / 2
	t := time.NewTicker(every)
	defer t.Stop()
	failing := false
	for {
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return
		}
		if s.staleness() < every {
			continue
		}
		err := s.check()
		switch {
		case err != nil && !failing && s.ctx.Err() == nil:
			s.log.Warn("etcd does not answer; the mirror may be stale", "err", err)
			failing = true
		case err == nil && failing:
			s.log.Info("etcd answers again")
			failing = false
		}
	}
}

// check confirms the mirror current, or drops a watch that does not move
// (see above). It fails when the cluster's revision cannot be read, or
// the mirror does not reach it within StaleAfter.
func (s *Store) check() error {
	ctx, cancel := context.WithTimeout(s.ctx, s.opts.StaleAfter)
	defer cancel()
	start := time.Now()
	w := s.stream.Load()
	rctx := ctx
	if w != nil && w.node != nil {
		rctx = avoiding(ctx, w.node)
	}
	target, err := s.clusterRevision(rctx)
	if err != nil {
		return err
	}
	at, moved := s.mirror.revision(), time.Now()
	for at < target {
		if cur := s.stream.Load(); cur != w {
			w, moved = cur, time.Now() // reopened meanwhile: give it its time
		}
		if w != nil {
			w.requestProgress()
		}
		wctx, wcancel := context.WithTimeout(ctx, 100*time.Millisecond)
		s.mirror.wait(wctx, target)
		wcancel()
		if err := ctx.Err(); err != nil {
			return err
		}
		if now := s.mirror.revision(); now > at {
			at, moved = now, time.Now()
			continue
		}
		if stalled := time.Since(moved); stalled >= s.opts.MemberTimeout {
			s.moveWatch(w, at, target, stalled)
			moved = time.Now()
		}
	}
	s.markFresh(start)
	return nil
}
