package webhook

import (
	"context"
	"time"

	"github.com/tincan/tincan/store"
)

// remover takes delivered events out of the outbox in batches, one
// Delivered call at a time, so that a room's next event need not wait for
// the commit that removes the one before, and many removals share one
// commit. It serves the throughput of delivery under load (BENCHMARKS.md
// §9: with one Delivered commit per event, each waited for before the
// room's next event, delivery fell behind the calls workload, at ~400
// events/s with 8 rooms in flight).
//
// An event stays in removing from its 2xx until its removal has
// committed; the deliverer leaves such events out of what it reads from
// the outbox, so that a read made before the commit does not send them
// again. A crash before the commit sends them again after the restart:
// at least once, as before. Only the deliverer's goroutine calls it.
type remover struct {
	removing map[uint64]bool // delivered, not yet removed
	queued   []store.Event   // delivered, no Delivered call yet
	inFlight bool
	failing  bool      // the last Delivered failed
	retryAt  time.Time // after a failure, no call before
}

// maxRemoveBatch bounds one Delivered call.
const maxRemoveBatch = 1024

func newRemover() *remover { return &remover{removing: map[uint64]bool{}} }

// add queues e, delivered (or dropped), for removal.
func (r *remover) add(e store.Event) {
	r.removing[e.Seq] = true
	r.queued = append(r.queued, e)
}

// filter drops from evs the events on their way out.
func (r *remover) filter(evs []store.Event) []store.Event {
	if len(r.removing) == 0 {
		return evs
	}
	out := evs[:0]
	for _, e := range evs {
		if !r.removing[e.Seq] {
			out = append(out, e)
		}
	}
	return out
}

// start returns the next batch to remove, or nil when one is in flight,
// none is queued, or a failure's wait is not over at now.
func (r *remover) start(now time.Time) []store.Event {
	if r.inFlight || len(r.queued) == 0 || now.Before(r.retryAt) {
		return nil
	}
	n := min(len(r.queued), maxRemoveBatch)
	batch := r.queued[:n:n]
	r.queued = r.queued[n:]
	r.inFlight = true
	return batch
}

// done records a batch's Delivered call: removed, or queued again after
// wait.
func (r *remover) done(batch []store.Event, err error, now time.Time, wait time.Duration) {
	r.inFlight = false
	if err != nil {
		r.queued = append(batch, r.queued...)
		r.failing, r.retryAt = true, now.Add(wait)
		return
	}
	r.failing = false
	for _, e := range batch {
		delete(r.removing, e.Seq)
	}
}

// flushLast makes a last attempt at removing what is queued, within
// limit, when the deliverer stops: what it cannot remove is sent again
// after a restart.
func (r *remover) flushLast(ctx context.Context, outbox Outbox, limit time.Duration) {
	if len(r.queued) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), limit)
	defer cancel()
	for len(r.queued) > 0 && ctx.Err() == nil {
		n := min(len(r.queued), maxRemoveBatch)
		if outbox.Delivered(ctx, r.queued[:n]) != nil {
			return
		}
		r.queued = r.queued[n:]
	}
}
