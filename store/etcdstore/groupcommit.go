package etcdstore

import (
	"context"
	"errors"
	"sync"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/tincan/tincan/store"
)

// Group commit. Every write to etcd is a raft proposal that a quorum of
// members fsyncs before it is answered: about 4 ms on a 2-core machine
// with one disk, whatever the proposal carries. A post that waits alone
// for a transaction of its own pays that in full; 100 posts in flight on
// one instance pay it 100 times over (issue 19 measured tincan's cluster
// at about a third of what the same etcd commits for the same writes).
//
// So posts, joins and leaves that arrive while a transaction is in flight
// go to etcd together in the next one: one request, one proposal, one
// fsync. Each
// keeps its own condition and outcome: it is one nested transaction
// (clientv3.OpTxn) of the group's, with its own comparisons, its own
// operations when they hold and its own reads when they do not. etcd
// evaluates every comparison of a transaction, nested ones included,
// against the state before the transaction, so two parts never see each
// other's writes: parts that write the same key are not sent together
// (etcd refuses such a request whole), a join or a leave shares its group
// with no other write of its room (exclusive), and a part that must count
// what another part of the same group adds (the room's message limit) is
// given the count (groupBatch.pending).
//
// The target it serves (BENCHMARKS §11, issue 19): 3 instances on a
// 3-member etcd reach at least single-node bbolt's pingpong messages a
// second, and call setups at 5 at once within 1.5x of bbolt's latency.
//
// Up to maxInFlight groups are in flight at once, and the writes of one
// room go one group after another: a room's next write is built from the
// mirror once the group before it has reached the mirror (the committer
// waits for its own watch, as every write does), so that it sees this
// instance's writes before it and does not fail its comparison for want
// of them. So a post to a quiet room goes at once, without waiting for
// another room's group, and under load each group carries what queued
// while the others were in flight.
//
// Limits: a group holds at most idsPerRevision entries (ids are
// revision*idsPerRevision + index, keys.go), maxTxnOps operations at its
// top level plus in its largest part (etcd's --max-txn-ops counts each
// level's operations against what the levels above left), and
// maxGroupBytes of keys and values (under etcd's --max-request-bytes,
// 1.5 MiB by default). What does not fit goes in the next group.

// maxTxnOps is etcd's default --max-txn-ops. A group's top level and its
// largest part together stay within it.
const maxTxnOps = 128

// maxGroupBytes bounds the keys and values of one group, under etcd's
// default --max-request-bytes of 1.5 MiB. A single part larger than that
// goes alone (and etcd refuses it if it is over etcd's own limit).
const maxGroupBytes = 1 << 20

// maxInFlight is how many groups an instance has in flight at most. One
// would make a post wait for an unrelated group before its own (about
// twice the commit latency at low load), and cap what an instance sends
// at idsPerRevision entries per commit latency (50 call setups at once,
// whose candidate batches take 20 entries each, queued behind 2 groups:
// BENCHMARKS §11); many would send groups of one.
const maxInFlight = 8

// errNextGroup is what a part's build answers when it does not fit in the
// group being built: it is built again for the next one.
var errNextGroup = errors.New("next group")

// groupCommit queues writes and sends them to etcd in groups, built by
// one goroutine (run) until Close. Close waits for the groups in flight;
// writes still queued then answer store.ErrClosed with nothing written.
type groupCommit struct {
	s    *Store
	wake chan struct{} // a write was queued, or a group came back

	mu       sync.Mutex
	queue    []*groupWrite
	busy     map[string]bool // rooms with a write in a group in flight
	inFlight int
	stopped  bool
}

// groupWrite is one caller's write waiting for a group.
type groupWrite struct {
	ctx  context.Context
	room string // writes of one room go one group after another
	// build makes the write's part of group b, from the mirror as it is
	// now. It answers the part to send; or nil and no error when the write
	// is answered without etcd (build recorded the answer for its caller);
	// or errNextGroup; or an error that is the write's answer.
	build func(b *groupBatch) (*groupPart, error)
	done  chan groupResult // buffered: the committer never waits for the caller
}

// groupPart is one write's share of a group: a nested transaction.
type groupPart struct {
	cmps         []clientv3.Cmp
	then, orElse []clientv3.Op
	op           string   // what it is, for the metrics: append, join, leave
	entries      int      // ids (and outbox seqs) it takes, from the index its build was given
	puts         []string // keys it writes that another part might write too
	// exclusive: no other part of its room shares its group (a join or a
	// leave rewrites the room record that posts compare, and a room's
	// last leave deletes the room's keys, which etcd refuses beside
	// another part's write under them).
	exclusive bool
	// guard names a write the group makes once, after its parts, for
	// all the parts that name it ("" none): guardOp.
	guard   string
	guardOp clientv3.Op
	bytes   int // of its keys and values, roughly
}

// ops is what etcd counts of the part against --max-txn-ops.
func (p *groupPart) ops() int { return max(len(p.cmps), len(p.then), len(p.orElse)) }

// groupResult is what became of a write.
type groupResult struct {
	sent bool            // a part went to etcd (else build answered)
	resp *pb.TxnResponse // the part's own outcome, when sent without error
	rev  int64           // the group's revision
	err  error           // etcd's failure (the part may have been applied: see Store.again), or build's
}

// groupBatch is the group being built, as a part's build sees it.
type groupBatch struct {
	index    int            // the next free entry index
	pending  map[string]int // per guard: entries the group's parts before add
	puts     map[string]bool
	guards   []string
	guardOps []clientv3.Op
	rooms    map[string]int  // parts per room
	alone    map[string]bool // rooms with an exclusive part
	parts    []*groupPart
	writes   []*groupWrite
	bytes    int
	widest   int // the largest part's operations
}

func newGroupCommit(s *Store) *groupCommit {
	return &groupCommit{s: s, wake: make(chan struct{}, 1), busy: map[string]bool{}}
}

func (g *groupCommit) poke() { signal(g.wake) }

// do queues a write and waits for its outcome, or for ctx. When ctx ends
// before the write was taken into a group, it is dropped and do answers
// ctx's error; when it ends after, do answers ctx's error too (the write
// may be applied: the caller cannot know, as with any write whose answer
// it did not wait for) and build's records must not be read.
func (g *groupCommit) do(ctx context.Context, room string, build func(b *groupBatch) (*groupPart, error)) groupResult {
	w := &groupWrite{ctx: ctx, room: room, build: build, done: make(chan groupResult, 1)}
	g.mu.Lock()
	if g.stopped {
		g.mu.Unlock()
		return groupResult{err: errClosedGroup}
	}
	g.queue = append(g.queue, w)
	g.mu.Unlock()
	g.poke()
	select {
	case r := <-w.done:
		return r
	case <-ctx.Done():
		g.mu.Lock()
		defer g.mu.Unlock()
		for i, q := range g.queue {
			if q == w {
				g.queue = append(g.queue[:i:i], g.queue[i+1:]...)
				return groupResult{err: ctx.Err()}
			}
		}
		// Taken into a group already: its outcome may be there.
		select {
		case r := <-w.done:
			return r
		default:
			return groupResult{err: ctx.Err(), sent: true}
		}
	}
}

// errLeaseGone answers the writes of a group that etcd refused, whole
// and unapplied, because a lease one of its joins puts its live key on is
// gone. A pooled lease can be: a leader resumed after SIGSTOP revokes the
// leases expired by its clock, and the new leader applies it (see
// presence). Every write may be sent again (errors.go: unavailable,
// notApplied); a join takes another lease first, and the pool is emptied.
var errLeaseGone = errors.New("etcdstore: a lease in the group was revoked meanwhile")

// errClosedGroup answers writes queued when the store closes.
var errClosedGroup = errors.New("etcdstore: closed")

// groupErr is a group's error as a write answers it.
func groupErr(err error) error {
	if errors.Is(err, errClosedGroup) {
		return store.ErrClosed
	}
	return err
}

// run sends groups until Close, then waits for those in flight and
// answers what is still queued.
func (g *groupCommit) run() {
	defer g.s.wg.Done()
	var flights sync.WaitGroup
	for {
		select {
		case <-g.wake:
		case <-g.s.ctx.Done():
			flights.Wait()
			g.mu.Lock()
			g.stopped = true
			queued := g.queue
			g.queue = nil
			g.mu.Unlock()
			for _, w := range queued {
				w.done <- groupResult{err: errClosedGroup}
			}
			return
		}
		for g.s.ctx.Err() == nil {
			b := g.next()
			if b == nil {
				break
			}
			flights.Go(func() {
				g.commit(b)
				g.mu.Lock()
				g.inFlight--
				for _, w := range b.writes {
					delete(g.busy, w.room)
				}
				g.mu.Unlock()
				g.poke()
			})
		}
	}
}

// next builds the next group from the queued writes whose rooms have
// nothing in flight, and marks their rooms busy. It answers nil when
// maxInFlight groups are in flight, or none can be built now.
func (g *groupCommit) next() *groupBatch {
	g.mu.Lock()
	if g.inFlight >= maxInFlight {
		g.mu.Unlock()
		return nil
	}
	var ready, waiting []*groupWrite
	for _, w := range g.queue {
		if g.busy[w.room] {
			waiting = append(waiting, w)
		} else {
			ready = append(ready, w)
		}
	}
	g.queue = waiting
	g.mu.Unlock()

	b := &groupBatch{pending: map[string]int{}, puts: map[string]bool{}, rooms: map[string]int{}, alone: map[string]bool{}}
	var later []*groupWrite
	for i, w := range ready {
		if w.ctx.Err() != nil {
			w.done <- groupResult{err: w.ctx.Err()}
			continue
		}
		if b.index >= idsPerRevision {
			later = append(later, ready[i:]...)
			break
		}
		part, err := w.build(b)
		switch {
		case errors.Is(err, errNextGroup):
			later = append(later, w)
			continue
		case err != nil:
			w.done <- groupResult{err: err}
			continue
		case part == nil:
			w.done <- groupResult{}
			continue
		}
		if !b.fits(w.room, part) {
			later = append(later, w)
			continue
		}
		b.add(w, part)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(later) > 0 {
		g.queue = append(later, g.queue...)
	}
	if len(b.parts) == 0 {
		return nil
	}
	for _, w := range b.writes {
		g.busy[w.room] = true
	}
	g.inFlight++
	return b
}

// fits reports whether part can join the group: its entries, its
// operations and its bytes within the limits (a part alone always fits:
// etcd judges it), and none of its keys written by another part.
func (b *groupBatch) fits(room string, p *groupPart) bool {
	if len(b.parts) == 0 {
		return true
	}
	if b.alone[room] || (p.exclusive && b.rooms[room] > 0) {
		return false
	}
	if b.index+p.entries > idsPerRevision || b.bytes+p.bytes > maxGroupBytes {
		return false
	}
	top := len(b.parts) + 1 + len(b.guards)
	if p.guard != "" && !b.hasGuard(p.guard) {
		top++
	}
	if top+max(b.widest, p.ops()) > maxTxnOps {
		return false
	}
	for _, k := range p.puts {
		if b.puts[k] {
			return false
		}
	}
	return true
}

func (b *groupBatch) hasGuard(guard string) bool {
	for _, g := range b.guards {
		if g == guard {
			return true
		}
	}
	return false
}

func (b *groupBatch) add(w *groupWrite, p *groupPart) {
	b.parts = append(b.parts, p)
	b.writes = append(b.writes, w)
	b.index += p.entries
	b.bytes += p.bytes
	b.widest = max(b.widest, p.ops())
	b.rooms[w.room]++
	if p.exclusive {
		b.alone[w.room] = true
	}
	for _, k := range p.puts {
		b.puts[k] = true
	}
	if p.guard != "" {
		if !b.hasGuard(p.guard) {
			b.guards = append(b.guards, p.guard)
			b.guardOps = append(b.guardOps, p.guardOp)
		}
		b.pending[p.guard] += p.entries
	}
}

// commit sends group b as one transaction, waits until the mirror shows
// it, and answers each write with its own part's outcome. The group's
// context is not any caller's (they share it): it is bounded by the
// request timeout, and Close waits for it.
func (g *groupCommit) commit(b *groupBatch) {
	s := g.s
	ctx, cancel := s.opContext(context.Background())
	defer cancel()
	ops := make([]clientv3.Op, 0, len(b.parts)+len(b.guards))
	for _, p := range b.parts {
		ops = append(ops, clientv3.OpTxn(p.cmps, p.then, p.orElse))
	}
	ops = append(ops, b.guardOps...)
	start := time.Now()
	resp, err := s.client.Txn(ctx).Then(ops...).Commit()
	observed := map[string]bool{}
	for _, p := range b.parts {
		if !observed[p.op] {
			observed[p.op] = true
			s.metrics.observe(p.op, start)
		}
	}
	if errors.Is(err, rpctypes.ErrLeaseNotFound) {
		// One part's lease is gone (see errLeaseGone): etcd refused the
		// whole group before applying any of it.
		s.presence.flushPool()
		err = errLeaseGone
	}
	if err != nil {
		for _, w := range b.writes {
			w.done <- groupResult{sent: true, err: err}
		}
		return
	}
	rev := resp.Header.Revision
	s.settle(ctx, rev, start)
	for i, w := range b.writes {
		w.done <- groupResult{sent: true, resp: resp.Responses[i].GetResponseTxn(), rev: rev}
	}
}
