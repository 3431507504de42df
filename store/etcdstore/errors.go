package etcdstore

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/tincan/tincan/store"
)

// Errors: a refusal is a *store.Error, as for every engine. When etcd does
// not answer in time (no quorum, no leader, no connection, no space) the
// error wraps store.ErrUnavailable and etcd's own error, so errors.Is and
// errors.As find store.ErrUnavailable (code "unavailable") and the log
// finds the cause. A write that failed so may have happened all the same:
// the client retries with its Idempotency-Key. A conflict between
// transactions is never an error: the engine retries it.

// opContext bounds one operation by the request timeout, and makes etcd
// refuse it at once (with "no leader") rather than queue it on a member
// cut off from its leader.
func (s *Store) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithTimeout(ctx, s.opts.RequestTimeout)
	return clientv3.WithRequireLeader(ctx), cancel
}

// failure turns the error of operation op, called with the caller's ctx,
// into the engine's answer.
func (s *Store) failure(ctx context.Context, op string, err error) error {
	var se *store.Error
	switch {
	case errors.As(err, &se):
		return err
	case s.closed.Load():
		return store.ErrClosed
	case ctx.Err() != nil:
		return ctx.Err() // the caller gave up
	case unavailable(err):
		return fmt.Errorf("%w: %s: %w", store.ErrUnavailable, op, err)
	}
	return fmt.Errorf("%s: %w", op, err)
}

// unavailable reports whether err means that etcd did not answer now,
// rather than that the request was wrong.
func unavailable(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) || errors.Is(err, errLeaseGone) {
		return true
	}
	code := status.Code(err)
	var ee rpctypes.EtcdError
	if errors.As(err, &ee) {
		code = ee.Code()
	}
	switch code {
	case codes.Unavailable, codes.DeadlineExceeded, codes.ResourceExhausted, codes.Canceled, codes.Aborted:
		return true
	case codes.Unknown:
		// Raft's own errors reach the client as they are, when the member
		// that took the request stops or drops it.
		desc := rpctypes.ErrorDesc(err)
		return desc == "raft: stopped" || desc == "raft: proposal dropped" || desc == "raft proposal dropped"
	}
	return false
}

// notApplied reports whether err proves that etcd refused a request before
// acting on it, so that even a write that must not happen twice may be
// sent again.
func notApplied(err error) bool {
	for _, e := range []error{rpctypes.ErrNoLeader, rpctypes.ErrGRPCNoLeader, rpctypes.ErrTooManyRequests, rpctypes.ErrGRPCRequestTooManyRequests, errLeaseGone} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// again decides whether an operation that failed with err on its attempt
// (0 for the first) is tried again, and waits before it does: only when
// etcd was unavailable, when the operation may be repeated (safe: it
// checks in its transaction whether it happened already) or etcd surely
// did not act on it, and while ctx and the store last.
func (s *Store) again(ctx context.Context, attempt int, safe bool, err error) bool {
	if !unavailable(err) || !(safe || notApplied(err)) || ctx.Err() != nil || s.closed.Load() {
		return false
	}
	return s.pause(ctx, min(20*time.Millisecond<<min(attempt, 5), 500*time.Millisecond))
}

// pause waits d; false when ctx or the store ended first.
func (s *Store) pause(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.ctx.Done():
		return false
	}
}

// sleep waits d or until Close.
func (s *Store) sleep(d time.Duration) { s.pause(context.Background(), d) }
