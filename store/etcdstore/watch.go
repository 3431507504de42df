package etcdstore

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/metadata"

	"github.com/tincan/tincan/store"
)

// One watch of the whole prefix feeds the mirror, from the revision after
// the one it was loaded at. Each response holds whole transactions in
// revision order; the mirror applies them, and only then are subscribers
// notified, so that what a notification announces is visible to Read.
//
// When the watch breaks, it starts again from the revision after the
// mirror's: nothing is skipped and nothing applied twice. When that
// revision has been compacted away, the mirror is loaded again by a range
// read of the prefix and the watch goes on from there; every subscriber is
// notified, since nobody knows what changed meanwhile (readers read after
// their last id, so a notification for nothing costs a read, no duplicate).
//
// Freshness: the mirror is known to hold every change committed before
// freshAt. A linearizable read tells the cluster's current revision; once
// the watch has delivered up to it (events, or a progress notification
// asked for), everything committed before that read began is in the
// mirror. The guard (progress.go) does that every MemberTimeout/2 when
// nothing else has (each of this instance's own writes does it too), and
// moves the watch to another member when it does not follow. Authenticate and Read
// refuse with store.ErrUnavailable when the mirror cannot be brought up to
// date within the request timeout after being stale for StaleAfter: an
// instance that cannot follow etcd answers 503 rather than authenticate a
// member that has left elsewhere.

// Subscribe implements store.Store. Notifications come from the watch,
// after the mirror shows the change.
func (s *Store) Subscribe(m store.Member, f func(upto uint64)) (cancel func()) {
	return s.notifier.Subscribe(m, f)
}

// watchLoop runs the watch until Close.
func (s *Store) watchLoop() {
	defer s.wg.Done()
	var last *node
	for s.ctx.Err() == nil {
		reload, err := s.follow(last)
		if s.ctx.Err() != nil {
			return
		}
		if w := s.stream.Load(); w != nil {
			last = w.node
			if errors.Is(context.Cause(w.ctx), errStalled) {
				continue // at once, on another member
			}
		}
		if reload {
			if err = s.reload(s.ctx); err == nil {
				s.metrics.reloads.Inc()
				continue
			}
		}
		if err != nil {
			s.log.Warn("etcd watch interrupted", "err", err)
		}
		s.sleep(100 * time.Millisecond)
	}
}

// watchStream is one watch of the prefix: on one node's client (the
// shared client without nodes), under a context of its own, which
// progress requests carry too (clientv3 finds the stream by its
// context's metadata).
type watchStream struct {
	node    *node
	client  *clientv3.Client
	ctx     context.Context
	cancel  context.CancelCauseFunc
	dropped atomic.Bool // by moveWatch
}

// requestProgress asks the stream's member to say how far the stream is.
func (w *watchStream) requestProgress() {
	ctx, cancel := context.WithTimeout(w.ctx, 100*time.Millisecond)
	w.client.RequestProgress(ctx)
	cancel()
}

// follow watches from the mirror's revision on until the watch ends, on a
// node other than avoid when there is one. It reports whether the mirror
// must be loaded again (the watch fell behind compaction).
func (s *Store) follow(avoid *node) (reload bool, err error) {
	w := &watchStream{client: s.client}
	if s.nodes != nil {
		w.node = s.nodes.pick(avoid, false)
		w.client = w.node.client
	}
	// A name of its own: a new gRPC stream, never one that is closing.
	ctx := metadata.AppendToOutgoingContext(s.watchCtx, "tincan-watch", strconv.FormatUint(s.streams.Add(1), 10))
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	defer w.cancel(nil)
	s.stream.Store(w)
	from := s.mirror.revision() + 1
	for resp := range w.client.Watch(w.ctx, s.keys.prefix, clientv3.WithPrefix(), clientv3.WithRev(from)) {
		switch {
		case resp.CompactRevision != 0:
			s.log.Warn("etcd watch fell behind compaction; loading the state again", "from", from, "compacted", resp.CompactRevision)
			return true, nil
		case resp.Err() != nil:
			return false, resp.Err()
		case resp.IsProgressNotify():
			s.mirror.progress(resp.Header.Revision)
		case len(resp.Events) > 0:
			s.applyEvents(resp.Events)
		}
	}
	if cause := context.Cause(w.ctx); cause != nil {
		return false, cause
	}
	return false, errors.New("watch channel closed")
}

// applyEvents applies events to the mirror, then notifies.
func (s *Store) applyEvents(events []*clientv3.Event) {
	wakes, lapsed, outboxed := s.mirror.apply(events)
	s.notify(wakes)
	if outboxed {
		s.outboxWatchers.Notify()
	}
	if len(lapsed) > 0 {
		s.presence.lapsed(lapsed)
	}
}

func (s *Store) notify(wakes []wake) {
	for _, w := range wakes {
		if w.all {
			s.notifier.Notify(w.room, w.upto)
		} else if len(w.ids) > 0 {
			s.notifier.Notify(w.room, w.upto, w.ids...)
		}
	}
}

// reload loads the mirror from a range read of the whole prefix.
func (s *Store) reload(ctx context.Context) error {
	start := time.Now()
	kvs, rev, err := s.rangeAll(ctx)
	if err != nil {
		return err
	}
	wakes, lapsed := s.mirror.load(kvs, rev)
	s.notify(wakes)
	s.outboxWatchers.Notify() // nobody knows what came meanwhile
	s.markFresh(start)
	s.presence.lapsed(lapsed)
	return nil
}

// rangeAll reads every key under the prefix at one revision, a page at a
// time.
func (s *Store) rangeAll(ctx context.Context) ([]*mvccpb.KeyValue, int64, error) {
	const page = 1000
	end := clientv3.GetPrefixRangeEnd(s.keys.prefix)
	for {
		var kvs []*mvccpb.KeyValue
		var rev int64
		from := s.keys.prefix
		for {
			opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(page)}
			if rev != 0 {
				opts = append(opts, clientv3.WithRev(rev))
			}
			octx, cancel := s.opContext(ctx)
			resp, err := s.client.Get(octx, from, opts...)
			cancel()
			if errors.Is(err, rpctypes.ErrCompacted) {
				break // compacted between two pages: start over
			}
			if err != nil {
				return nil, 0, err
			}
			if rev == 0 {
				rev = resp.Header.Revision
			}
			kvs = append(kvs, resp.Kvs...)
			if !resp.More || len(resp.Kvs) == 0 {
				return kvs, rev, nil
			}
			from = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
		}
	}
}

// catchUp brings the mirror up to the cluster's revision as of now.
func (s *Store) catchUp(ctx context.Context) error {
	start := time.Now()
	target, err := s.clusterRevision(ctx)
	if err != nil {
		return err
	}
	for !s.mirror.reached(target) {
		// Nothing under the prefix may have changed for a while: ask the
		// watch to say how far it is.
		if w := s.stream.Load(); w != nil {
			w.requestProgress()
		}
		wctx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		s.mirror.wait(wctx, target)
		cancel()
		if err := ctx.Err(); err != nil {
			return err
		}
	}
	s.markFresh(start)
	return nil
}

// clusterRevision is the cluster's revision as of now: a linearizable
// read, which a member answers only once it knows the leader's commit.
func (s *Store) clusterRevision(ctx context.Context) (int64, error) {
	resp, err := s.client.Get(clientv3.WithRequireLeader(ctx), s.keys.ping(), clientv3.WithCountOnly())
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}

// markFresh records that the mirror holds every change committed before t.
func (s *Store) markFresh(t time.Time) {
	n := t.UnixNano()
	for {
		old := s.freshAt.Load()
		if n <= old || s.freshAt.CompareAndSwap(old, n) {
			return
		}
	}
}

// staleness is how long ago the mirror was last known up to date.
func (s *Store) staleness() time.Duration { return time.Since(time.Unix(0, s.freshAt.Load())) }

// ensureFresh brings a mirror stale for longer than StaleAfter up to date,
// or answers store.ErrUnavailable.
func (s *Store) ensureFresh(ctx context.Context) error {
	if s.staleness() <= s.opts.StaleAfter {
		return nil
	}
	octx, cancel := s.opContext(ctx)
	defer cancel()
	if err := s.catchUp(octx); err != nil {
		return s.failure(ctx, "catch up", err)
	}
	return nil
}

// settle waits until the mirror shows this instance's own write of
// revision rev, sent at sent. The write is durable already: if the watch
// is broken the wait gives up after the request timeout, and the write
// still succeeds. A watch that does not move at all for MemberTimeout
// while the cluster has rev is behind for sure: it is moved to another
// member (progress.go), as the guard would a little later.
func (s *Store) settle(ctx context.Context, rev int64, sent time.Time) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	defer cancel()
	defer context.AfterFunc(s.ctx, cancel)() // Close ends the wait
	for {
		w, at := s.stream.Load(), s.mirror.revision()
		wctx, wcancel := context.WithTimeout(ctx, s.opts.MemberTimeout)
		reached := s.mirror.wait(wctx, rev)
		wcancel()
		switch {
		case reached:
			s.markFresh(sent)
			return
		case ctx.Err() != nil:
			return
		case s.mirror.revision() == at:
			s.moveWatch(w, at, rev, s.opts.MemberTimeout)
		}
	}
}

// reached reports whether the mirror is at rev or later.
func (mr *mirror) reached(rev int64) bool { return mr.revision() >= rev }
