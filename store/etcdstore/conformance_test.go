package etcdstore

import (
	"context"
	"testing"
	"time"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/storetest"
)

// The conformance suite, on the in-process three-member etcd: each test
// gets a prefix of its own, and every store the suite opens on it is a
// new instance with its own client (a restart is an instance closed and
// another opened).
func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Opener {
		prefix := testPrefix(t)
		return func(opts store.Options) (store.Store, error) {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			return Open(ctx, Options{Options: opts, Endpoints: cluster.endpoints, Prefix: prefix})
		}
	})
}
