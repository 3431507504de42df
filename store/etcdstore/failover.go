package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/connectivity"
	"google.golang.org/grpc/status"
)

// Which etcd member each request goes to, and what the engine does when
// one stops answering.
//
// clientv3 spreads unary calls round-robin over its connections, one per
// endpoint, and keeps a watch stream on the connection it opened it on.
// Neither notices a member that stops answering without closing its
// connections (its process stopped, its machine paused, the packets to it
// dropped) before gRPC keepalive does, 10 s and more later: meanwhile a
// share of every instance's requests waits out the request timeout, and a
// watch through that member stays silent.
//
// So Open makes, besides the client the engine's calls go through, one
// client pinned to each endpoint (a node: one member as this instance
// reaches it), and routes through them what it can:
//
//   - Every KV call (Get, Put, Delete, Txn) goes to a node that is neither
//     suspect nor known disconnected. A write goes to the leader's node
//     (learnt from the members' status at start and whenever an answer
//     shows a new raft term): no member forwards it, and a leader handing
//     over refuses it at once rather than drop it unanswered. While the
//     leader's node cannot be reached, a write waits (2×MemberTimeout
//     at most) until the members name a new leader, unless the others
//     answer a linearizable read (the leader works; this instance alone
//     cannot reach it). A read, or a write while the leader is unknown,
//     goes to the next node in turn.
//   - A call refused with "raft proposal dropped" (by a leader handing
//     over, or a member that knows no leader) was not acted on: it is
//     sent again after a short pause, writes included.
//   - A call without an answer after MemberTimeout makes the engine ask
//     its node a serializable read (which the member answers alone, with
//     its raft term), within MemberTimeout/2. No answer: the node is
//     suspect, no call goes there until it answers such a read again
//     (tried every probeEvery), and the call ends. An answer in a later
//     raft term: the leader changed while the call waited, and etcd never
//     answers a proposal that the old leader dropped; after a grace for a
//     proposal that the new leader commits all the same, the call ends.
//     Any node's answer in a later term than a call began in does the
//     same at once. An answer in the same term: the member is alive and
//     the cluster slow; the call waits on, checked every MemberTimeout/4.
//   - A call ended so: a read goes at once to another node. A write fails
//     with codes.Unavailable, its outcome unknown as when etcd times out,
//     and the caller sends it again when it can tell whether the first
//     attempt applied (Store.again's safe); it then goes to another node.
//     Only repeatable writes are ended so (a transaction that compares
//     what it writes: an idempotency key, a record's revision; see
//     repeatable): any other waits for its answer or its deadline, since
//     nobody could tell what a second attempt would do, and a member
//     slow rather than silent still answers it.
//   - Lease grants and revocations likewise (both may be repeated: a
//     repeated grant makes a lease nobody uses, which lapses).
//   - The watch (watch.go) runs on one node; progress.go checks that it
//     follows and moves it to another node when it does not, or when its
//     node is found silent.
//
// What stays on the shared client, round-robin: lease keep-alive streams,
// the outbox claim's watch, compaction.
//
// OpenClient, on a caller's client, keeps that client's behaviour: no
// pinned clients, calls unguarded; only the watch is checked, and
// reopened on a new stream of the same client when it does not follow.

// Defaults of the settings above.
const (
	defaultMemberTimeout = time.Second
	probeEvery           = 250 * time.Millisecond
	leaderChangeGrace    = 300 * time.Millisecond
)

// errNoAnswer is the cause of a call ended because its node did not
// answer.
var errNoAnswer = errors.New("etcd member did not answer")

// node is one member as this instance reaches it: a client pinned to its
// endpoint.
type node struct {
	url    string
	client *clientv3.Client
	kv     clientv3.KV    // the pinned client's own
	lease  clientv3.Lease // the pinned client's own
	term   atomic.Uint64  // the latest raft term seen in its answers
	id     atomic.Uint64  // its member id, from its answers
	// suspect: it did not answer; no call goes to it until it answers a
	// probe again.
	suspect atomic.Bool
}

// saw records the raft term of an answer.
func (n *node) saw(h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	n.id.Store(h.MemberId)
	for {
		old := n.term.Load()
		if h.RaftTerm <= old || n.term.CompareAndSwap(old, h.RaftTerm) {
			return
		}
	}
}

// usable reports whether calls may go to n: not suspect and not known
// disconnected.
func (n *node) usable() bool {
	if n.suspect.Load() {
		return false
	}
	switch n.client.ActiveConnection().GetState() {
	case connectivity.TransientFailure, connectivity.Shutdown:
		return false
	}
	return true
}

// nodes are the pinned clients of one Store, with the failover above.
type nodes struct {
	s       *Store
	all     []*node
	next    atomic.Uint64
	timeout time.Duration // MemberTimeout

	// term is the latest raft term seen in any node's answer. When it
	// grows, the leader changed: the calls that began before may wait
	// for good (see above), and end after a grace.
	term     atomic.Uint64
	inflight sync.Map // *attemptState -> true: the calls under way
	// leader is the node of the member that leads, as last asked (nil:
	// unknown); finding is set while it is being asked.
	leader    atomic.Pointer[node]
	finding   atomic.Bool
	leaderMu  sync.Mutex
	leaderSet chan struct{} // closed and replaced by setLeader

	mu     sync.Mutex
	closed bool
	wg     sync.WaitGroup // probes of suspect nodes
}

// attemptState is a call under way on a node.
type attemptState struct {
	n       *node
	term    uint64 // ns.term when it began
	cancel  context.CancelCauseFunc
	flagged atomic.Bool // its end is scheduled
}

// saw records the raft term of an answer of n; a later term than any
// seen ends, after a grace, the calls that began before it.
func (ns *nodes) saw(n *node, h *pb.ResponseHeader) {
	if h == nil {
		return
	}
	n.saw(h)
	for {
		old := ns.term.Load()
		if h.RaftTerm <= old {
			return
		}
		if ns.term.CompareAndSwap(old, h.RaftTerm) {
			break
		}
	}
	// Writes go on to the node that led until the members tell which
	// leads now: if it still leads, or follows a leader it knows, all is
	// well; if it lost its leader, it refuses them at once. A follower
	// picked instead could forward them to a leader handing over, which
	// would drop them unanswered.
	ns.findLeader()
	ns.inflight.Range(func(k, _ any) bool {
		a := k.(*attemptState)
		if a.term != 0 && a.term < h.RaftTerm && a.flagged.CompareAndSwap(false, true) {
			time.AfterFunc(leaderChangeGrace, func() {
				a.cancel(fmt.Errorf("%w: %s, the leader changed while it waited", errNoAnswer, a.n.url))
			})
		}
		return true
	})
}

// newNodes makes a client pinned to each endpoint, configured as cfg.
func newNodes(cfg clientv3.Config, endpoints []string, timeout time.Duration) (*nodes, error) {
	ns := &nodes{timeout: timeout, leaderSet: make(chan struct{})}
	for _, ep := range endpoints {
		cfg.Endpoints = []string{ep}
		c, err := clientv3.New(cfg)
		if err != nil {
			ns.closeClients()
			return nil, err
		}
		ns.all = append(ns.all, &node{url: ep, client: c, kv: c.KV, lease: c.Lease})
	}
	return ns, nil
}

// install routes c's KV calls and lease grants through the nodes, for s.
func (ns *nodes) install(s *Store, c *clientv3.Client) {
	ns.s = s
	c.KV = failoverKV{KV: c.KV, ns: ns}
	c.Lease = failoverLease{Lease: c.Lease, ns: ns}
	ns.spawn(func() {
		// Learn each node's member id and term, then the leader.
		var wg sync.WaitGroup
		for _, n := range ns.all {
			wg.Go(func() { ns.probe(s.ctx, n) })
		}
		wg.Wait()
		ns.findLeader()
	})
}

// findLeader asks the members which one leads, unless that is being
// asked already, until one knows (an election may be under way) and its
// node can be reached. A leader that cannot be reached is waited out for
// 2×MemberTimeout (it is probably gone, and the members will elect
// another); after that the leader counts as unknown, and writes go round
// the members, which forward them.
func (ns *nodes) findLeader() {
	if !ns.finding.CompareAndSwap(false, true) {
		return
	}
	ns.spawn(func() {
		defer ns.finding.Store(false)
		giveUp := time.Now().Add(2 * ns.timeout)
		asked := false // whether the others answer without the leader's node
		for attempt := 0; attempt < 50; attempt++ {
			if attempt > 0 && !ns.s.pause(ns.s.ctx, 100*time.Millisecond) {
				return
			}
			l := ns.askLeader()
			switch {
			case l == nil:
			case l.usable():
				ns.setLeader(l)
				return
			case time.Now().After(giveUp) || (!asked && ns.quorumAnswers(l)):
				// Reachable through the others: they forward writes.
				ns.setLeader(nil)
				return
			default:
				asked = true
			}
		}
		ns.setLeader(nil)
	})
}

// askLeader asks the members' status for the leader's node; nil when no
// member that answers knows.
func (ns *nodes) askLeader() *node {
	for _, n := range ns.all {
		if !n.usable() {
			continue
		}
		ctx, cancel := context.WithTimeout(ns.s.ctx, ns.timeout/2)
		resp, err := pb.NewMaintenanceClient(n.client.ActiveConnection()).Status(ctx, &pb.StatusRequest{})
		cancel()
		if err != nil || resp.Leader == 0 {
			continue
		}
		n.saw(resp.Header)
		for _, l := range ns.all {
			if l.id.Load() == resp.Leader {
				return l
			}
		}
	}
	return nil
}

// quorumAnswers reports whether a member other than except's answers a
// linearizable read within MemberTimeout/2: then the leader works, though
// this instance cannot reach it.
func (ns *nodes) quorumAnswers(except *node) bool {
	var answered atomic.Bool
	var wg sync.WaitGroup
	for _, n := range ns.all {
		if n == except || !n.usable() {
			continue
		}
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(clientv3.WithRequireLeader(ns.s.ctx), ns.timeout/2)
			defer cancel()
			if _, err := n.kv.Get(ctx, "\x00", clientv3.WithCountOnly()); err == nil {
				answered.Store(true)
			}
		})
	}
	wg.Wait()
	return answered.Load()
}

// setLeader records the leader's node (nil: unknown) and wakes the writes
// waiting for it.
func (ns *nodes) setLeader(l *node) {
	ns.leader.Store(l)
	ns.leaderMu.Lock()
	defer ns.leaderMu.Unlock()
	close(ns.leaderSet)
	ns.leaderSet = make(chan struct{})
}

// awaitLeader holds a write while the leader's node cannot be reached,
// until the members tell which leads (see findLeader): sent to a follower
// meanwhile, it would be forwarded to the lost leader and wait there
// unanswered.
func (ns *nodes) awaitLeader(ctx context.Context) {
	limit := time.NewTimer(3 * ns.timeout)
	defer limit.Stop()
	for {
		l := ns.leader.Load()
		if l == nil || l.usable() {
			return
		}
		ns.leaderMu.Lock()
		set := ns.leaderSet
		ns.leaderMu.Unlock()
		ns.findLeader()
		select {
		case <-set:
		case <-limit.C:
			return
		case <-ctx.Done():
			return
		case <-ns.s.ctx.Done():
			return
		}
	}
}

// close ends the probes (after the store's context ended) and closes the
// clients.
func (ns *nodes) close() {
	ns.mu.Lock()
	ns.closed = true
	ns.mu.Unlock()
	ns.wg.Wait()
	ns.closeClients()
}

func (ns *nodes) closeClients() {
	for _, n := range ns.all {
		n.client.Close()
	}
}

// spawn runs f in a goroutine that close waits for, unless closed.
func (ns *nodes) spawn(f func()) {
	ns.mu.Lock()
	defer ns.mu.Unlock()
	if ns.closed {
		return
	}
	ns.wg.Go(f)
}

// pick chooses the node for a call: for a write the leader's, when it
// is known, usable and not avoid; otherwise the next usable one in turn
// but avoid; when none is usable, the next but avoid all the same (it
// may have come back).
func (ns *nodes) pick(avoid *node, write bool) *node {
	if l := ns.leader.Load(); write && l != nil && l != avoid && l.usable() {
		return l
	}
	k := len(ns.all)
	start := int(ns.next.Add(1) % uint64(k))
	var fallback *node
	for i := range k {
		n := ns.all[(start+i)%k]
		if n == avoid && k > 1 {
			continue
		}
		if n.usable() {
			return n
		}
		if fallback == nil {
			fallback = n
		}
	}
	return fallback
}

// avoidKey marks a context whose calls should not go to a node.
type avoidKey struct{}

// avoiding makes the calls under ctx go to another node than n (unless
// no other is usable).
func avoiding(ctx context.Context, n *node) context.Context {
	return context.WithValue(ctx, avoidKey{}, n)
}

// call runs f on a node as the comment at the top says. write says
// whether f may change something (then it is not sent again here, and
// goes to the leader); repeatable, whether it may all the same be ended
// when its node is silent (its outcome can be learnt by sending it
// again; see repeatable).
func (ns *nodes) call(ctx context.Context, write, repeatable bool, f func(context.Context, *node) (*pb.ResponseHeader, error)) error {
	avoid, _ := ctx.Value(avoidKey{}).(*node)
	if write {
		ns.awaitLeader(ctx)
	}
	for tried, dropped := 0, 0; ; {
		n := ns.pick(avoid, write)
		err, silent := ns.attempt(ctx, n, !write || repeatable, f)
		switch {
		case proposalDropped(err) && ns.s.pause(ctx, min(10*time.Millisecond<<dropped, 200*time.Millisecond)):
			// Refused before anything was written (the leader hands
			// over, or the member knows no leader): sent again, writes
			// too.
			dropped++
		case !silent || write:
			return err
		default:
			if tried++; tried >= len(ns.all) {
				return err
			}
		}
		avoid = n
	}
}

// proposalDropped reports whether err is raft's ErrProposalDropped, which
// a member returns before it writes anything: while the leader hands its
// leadership over, or when the member knows no leader.
func proposalDropped(err error) bool {
	if err == nil {
		return false
	}
	desc := rpctypes.ErrorDesc(err)
	return desc == "raft proposal dropped" || desc == "raft: proposal dropped"
}

// attempt runs f on n, overseen; silent reports that it ended because n
// did not answer (or the leader changed), not the caller. Unless
// endable, a call on a silent node is not ended (nobody could tell
// whether it applied): it waits for its answer or its deadline.
func (ns *nodes) attempt(ctx context.Context, n *node, endable bool, f func(context.Context, *node) (*pb.ResponseHeader, error)) (err error, silent bool) {
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	if !endable {
		cancel = func(error) {}
	}
	state := &attemptState{n: n, term: ns.term.Load(), cancel: cancel}
	if endable {
		ns.inflight.Store(state, true)
		defer ns.inflight.Delete(state)
	}
	term := n.term.Load()
	t := time.AfterFunc(ns.timeout, func() {
		for actx.Err() == nil {
			switch ns.judge(actx, n, term) {
			case answering:
				ns.s.pause(actx, ns.timeout/4)
			case silentNode:
				cancel(fmt.Errorf("%w: %s, not within %v", errNoAnswer, n.url, ns.timeout))
				return
			case newLeader:
				if ns.s.pause(actx, leaderChangeGrace) {
					cancel(fmt.Errorf("%w: %s, the leader changed while it waited", errNoAnswer, n.url))
				}
				return
			}
		}
	})
	h, err := f(actx, n)
	t.Stop()
	ns.saw(n, h)
	if err != nil && ctx.Err() == nil {
		if cause := context.Cause(actx); errors.Is(cause, errNoAnswer) {
			return status.Error(codes.Unavailable, cause.Error()), true
		}
	}
	return err, false
}

type verdict int

const (
	answering  verdict = iota // alive, same term: slow
	silentNode                // no answer
	newLeader                 // alive, and the term moved on since the call began
)

// judge asks n a serializable read: whether it answers, and in which term.
func (ns *nodes) judge(ctx context.Context, n *node, term uint64) verdict {
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ns.timeout/2)
	defer cancel()
	resp, err := n.kv.Get(pctx, "\x00", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		if ctx.Err() == nil {
			ns.suspect(n)
		}
		return silentNode
	}
	ns.saw(n, resp.Header)
	if term != 0 && resp.Header.RaftTerm > term {
		return newLeader
	}
	return answering
}

// suspect marks n suspect and probes it until it answers again.
func (ns *nodes) suspect(n *node) {
	if !n.suspect.CompareAndSwap(false, true) {
		return
	}
	ns.s.log.Warn("etcd member does not answer; requests go to the others", "member", n.url)
	ns.s.metrics.suspects.Inc()
	if w := ns.s.stream.Load(); w != nil && w.node == n {
		// Its watch is as silent: move it now rather than when the
		// guard notices.
		ns.s.moveWatch(w, ns.s.mirror.revision(), 0, ns.timeout)
	}
	ns.spawn(func() {
		for ns.s.pause(ns.s.ctx, probeEvery) {
			if ns.probe(ns.s.ctx, n) {
				n.suspect.Store(false)
				ns.s.log.Info("etcd member answers again", "member", n.url)
				ns.findLeader()
				return
			}
		}
	})
}

// probe reports whether n answers a serializable read within
// MemberTimeout/2.
func (ns *nodes) probe(ctx context.Context, n *node) bool {
	pctx, cancel := context.WithTimeout(ctx, ns.timeout/2)
	defer cancel()
	resp, err := n.kv.Get(pctx, "\x00", clientv3.WithSerializable(), clientv3.WithCountOnly())
	if err != nil {
		return false
	}
	ns.saw(n, resp.Header)
	return true
}

// failoverKV is the shared client's KV with the calls the engine makes
// routed through the nodes.
type failoverKV struct {
	clientv3.KV // the shared client's: GetStream, Compact
	ns          *nodes
}

func (k failoverKV) Put(ctx context.Context, key, val string, opts ...clientv3.OpOption) (*clientv3.PutResponse, error) {
	r, err := k.Do(ctx, clientv3.OpPut(key, val, opts...))
	return r.Put(), err
}

func (k failoverKV) Get(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.GetResponse, error) {
	r, err := k.Do(ctx, clientv3.OpGet(key, opts...))
	return r.Get(), err
}

func (k failoverKV) Delete(ctx context.Context, key string, opts ...clientv3.OpOption) (*clientv3.DeleteResponse, error) {
	r, err := k.Do(ctx, clientv3.OpDelete(key, opts...))
	return r.Del(), err
}

func (k failoverKV) Do(ctx context.Context, op clientv3.Op) (clientv3.OpResponse, error) {
	var out clientv3.OpResponse
	err := k.ns.call(ctx, writes(op), k.ns.repeatable(op), func(ctx context.Context, n *node) (*pb.ResponseHeader, error) {
		r, err := n.kv.Do(ctx, op)
		out = r
		switch {
		case r.Get() != nil:
			return r.Get().Header, err
		case r.Put() != nil:
			return r.Put().Header, err
		case r.Del() != nil:
			return r.Del().Header, err
		case r.Txn() != nil:
			return r.Txn().Header, err
		}
		return nil, err
	})
	return out, err
}

func (k failoverKV) Txn(ctx context.Context) clientv3.Txn { return &failoverTxn{kv: k, ctx: ctx} }

// failoverTxn collects a transaction and commits it through the nodes.
type failoverTxn struct {
	kv              failoverKV
	ctx             context.Context
	cmps            []clientv3.Cmp
	thenOps, elseOp []clientv3.Op
}

func (t *failoverTxn) If(cs ...clientv3.Cmp) clientv3.Txn {
	t.cmps = append(t.cmps, cs...)
	return t
}

func (t *failoverTxn) Then(ops ...clientv3.Op) clientv3.Txn {
	t.thenOps = append(t.thenOps, ops...)
	return t
}

func (t *failoverTxn) Else(ops ...clientv3.Op) clientv3.Txn {
	t.elseOp = append(t.elseOp, ops...)
	return t
}

func (t *failoverTxn) Commit() (*clientv3.TxnResponse, error) {
	r, err := t.kv.Do(t.ctx, clientv3.OpTxn(t.cmps, t.thenOps, t.elseOp))
	return r.Txn(), err
}

// writes reports whether op may change something.
func writes(op clientv3.Op) bool {
	switch {
	case op.IsGet():
		return false
	case op.IsTxn():
		_, thenOps, elseOps := op.Txn()
		for _, o := range append(thenOps, elseOps...) {
			if writes(o) {
				return true
			}
		}
		return false
	}
	return true
}

// repeatable reports whether op, applied twice, changes nothing more
// than applied once, so that a caller can send it again when it does not
// know whether it applied (the second attempt then tells, by its
// comparison failing): it reads only, or each of its writes is in a
// transaction that compares, for equality (or a value for "less than"),
// a key that it writes; and what such a transaction does when the
// comparison fails is repeatable too. A post with an idempotency key is
// (it compares and writes the key); one without is not. A room's seq key
// (keys.go) counts posts for MaxRoomMessages: rewriting it once more only
// makes a later post compare again, so its rewrite counts as repeatable.
func (ns *nodes) repeatable(op clientv3.Op) bool {
	switch {
	case op.IsGet():
		return true
	case op.IsPut() && ns.s != nil && ns.s.keys.parse(op.KeyBytes()).kind == kindSeq:
		return true
	case !op.IsTxn():
		return false // a put or delete alone
	}
	cmps, thenOps, elseOps := op.Txn()
	written := map[string]bool{}
	for _, o := range thenOps {
		if o.IsPut() || o.IsDelete() {
			written[string(o.KeyBytes())] = true
		}
	}
	guarded := false
	for _, c := range cmps {
		pc := c.GetCompare()
		if written[string(pc.Key)] && (pc.Result == pb.Compare_EQUAL || (pc.Result == pb.Compare_LESS && pc.Target == pb.Compare_VALUE)) {
			guarded = true
		}
	}
	check := elseOps
	if !guarded {
		check = append(slices.Clip(thenOps), elseOps...)
	}
	for _, o := range check {
		if !ns.repeatable(o) {
			return false
		}
	}
	return true
}

// failoverLease is the shared client's Lease with grants and revocations
// routed through the nodes (keep-alives stay on the shared client).
type failoverLease struct {
	clientv3.Lease
	ns *nodes
}

func (l failoverLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	var out *clientv3.LeaseGrantResponse
	err := l.ns.call(ctx, false, true, func(ctx context.Context, n *node) (*pb.ResponseHeader, error) {
		r, err := n.lease.Grant(ctx, ttl)
		if r == nil {
			return nil, err
		}
		out = r
		return r.ResponseHeader, err
	})
	return out, err
}

func (l failoverLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	var out *clientv3.LeaseRevokeResponse
	err := l.ns.call(ctx, false, true, func(ctx context.Context, n *node) (*pb.ResponseHeader, error) {
		r, err := n.lease.Revoke(ctx, id)
		if r == nil {
			return nil, err
		}
		out = r
		return r.Header, err
	})
	return out, err
}
