package etcdstore

import (
	"context"
	"errors"
	"math/rand/v2"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// Prune implements store.Store. It decides from the mirror, which is safe
// even when the mirror is behind: what is prunable stays so
// (acknowledgements only grow, recipients only leave, time only passes),
// and an entry kept for the next joiner counts as claimed only once the
// mirror shows the joiner. It writes only where there is something to
// delete, a chunk of keys per transaction. Several instances pruning at
// once delete the same keys; etcd counts a key once, so the number
// returned is of entries this call deleted.
func (s *Store) Prune(ctx context.Context) (int, error) {
	if s.closed.Load() {
		return 0, store.ErrClosed
	}
	if err := s.flushAcks(ctx); err != nil {
		return 0, err
	}
	entries, idem := s.mirror.prunable(s.opts.Now().Add(-s.opts.MessageTTL).UnixNano())
	n, err := s.deleteKeys(ctx, entries)
	s.pruned.Add(uint64(n))
	if err != nil {
		return n, err
	}
	_, err = s.deleteKeys(ctx, idem)
	return n, err
}

// deleteKeys deletes keys and returns how many were still there.
func (s *Store) deleteKeys(ctx context.Context, keys []string) (int, error) {
	const perTxn = 100 // under etcd's default of 128 operations per transaction
	deleted := 0
	var rev int64
	start := time.Now()
	for chunk := range chunks(keys, perTxn) {
		ops := make([]clientv3.Op, len(chunk))
		for i, k := range chunk {
			ops[i] = clientv3.OpDelete(k)
		}
		octx, cancel := s.opContext(ctx)
		for attempt := 0; ; attempt++ {
			t := time.Now()
			resp, err := s.client.Txn(octx).Then(ops...).Commit()
			s.metrics.observe("prune", t)
			if err == nil {
				rev = resp.Header.Revision
				for _, r := range resp.Responses {
					deleted += int(r.GetResponseDeleteRange().Deleted)
				}
				break
			}
			if !s.again(octx, attempt, true, err) {
				cancel()
				return deleted, s.failure(ctx, "prune", err)
			}
		}
		cancel()
	}
	if rev != 0 {
		s.settle(ctx, rev, start)
	}
	return deleted, nil
}

// pruneLoop prunes about every PruneEvery (a little earlier or later, so
// that instances started together do not prune together) until Close.
func (s *Store) pruneLoop() {
	defer s.wg.Done()
	for {
		every := s.opts.PruneEvery
		if !s.pause(s.ctx, every-every/10+rand.N(every/5+1)) {
			return
		}
		if _, err := s.Prune(s.ctx); err != nil && s.ctx.Err() == nil && !errors.Is(err, store.ErrClosed) {
			s.log.Warn("prune", "err", err)
		}
	}
}
