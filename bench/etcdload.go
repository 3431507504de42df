package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
)

// etcd is -workload etcd: what the etcd cluster at -etcd commits without
// tincan, for writes of the shape a tincan post makes there, so that the
// cluster figures of pingpong and calls can be given as a ratio to
// etcd's own, measured in the same run (BENCHMARKS §11).
//
// -rooms writers each write one message after another, as many at once
// as a pingpong of -rooms rooms has posts in flight (and as calls of
// -rooms at once, one write at a time per call). Each message is one
// conditional transaction, as the etcd engine sends for a post with an
// Idempotency-Key: if the room record and the key are as read, put the
// message (-size bytes) and the key, else read the key. With
// -etcd-watch each writer also waits until a watch of the run's prefix
// has delivered its write, as the engine waits for its mirror. Reported:
// transactions per second as messages/s, and each one's latency as
// "post". Everything is written under /tincan-bench-etcd/<run>/ and
// deleted at the end.
func (b *bench) etcd(ctx context.Context, res *Result) error {
	cfg := b.cfg
	if cfg.etcd == "" {
		return errors.New("-workload etcd needs -etcd (the client URLs, comma-separated)")
	}
	c, err := clientv3.New(clientv3.Config{
		Endpoints: strings.Split(cfg.etcd, ","), DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
	})
	if err != nil {
		return fmt.Errorf("-etcd: %w", err)
	}
	defer c.Close()
	prefix := "/tincan-bench-etcd/" + b.runID + "/"
	defer func() {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		c.Delete(dctx, prefix, clientv3.WithPrefix())
	}()

	// The watch, as the engine's mirror: how far it has delivered.
	var seen struct {
		sync.Mutex
		rev  int64
		more chan struct{}
	}
	seen.more = make(chan struct{})
	wctx, stopWatch := context.WithCancel(ctx)
	defer stopWatch()
	setupStart := time.Now()
	if cfg.etcdWatch {
		ch := c.Watch(wctx, prefix, clientv3.WithPrefix(), clientv3.WithCreatedNotify())
		if _, ok := <-ch; !ok {
			return errors.New("etcd watch did not start")
		}
		go func() {
			for resp := range ch {
				if len(resp.Events) == 0 {
					continue
				}
				seen.Lock()
				seen.rev = resp.Events[len(resp.Events)-1].Kv.ModRevision
				close(seen.more)
				seen.more = make(chan struct{})
				seen.Unlock()
			}
		}()
	}
	waitFor := func(ctx context.Context, rev int64) {
		for {
			seen.Lock()
			at, more := seen.rev, seen.more
			seen.Unlock()
			if at >= rev {
				return
			}
			select {
			case <-more:
			case <-ctx.Done():
				return
			}
		}
	}

	// One room record per writer, which each message compares.
	infoRevs := make([]int64, cfg.rooms)
	err = parallel(ctx, cfg.rooms, cfg.conc, func(ctx context.Context, i int) error {
		resp, err := c.Put(ctx, prefix+"room/"+strconv.Itoa(i)+"/info", `{"ct":1}`)
		if err == nil {
			infoRevs[i] = resp.Header.Revision
		}
		return err
	})
	res.SetupSec = round2(time.Since(setupStart).Seconds())
	if err != nil {
		return fmt.Errorf("etcd: set up: %w", err)
	}
	value := strings.Repeat("x", cfg.size+40) // a message as the engine stores it: header, recipients, body
	stop, cancelStop := context.WithTimeout(ctx, cfg.duration)
	defer cancelStop()
	b.measure(ctx, res, nil, func() {
		var wg sync.WaitGroup
		for i := range cfg.rooms {
			wg.Go(func() {
				room := prefix + "room/" + strconv.Itoa(i) + "/"
				for n := 0; n < cfg.k && stop.Err() == nil && b.take(); n++ {
					start := time.Now()
					idem := room + "idem/a/" + strconv.Itoa(n)
					octx, cancel := b.opCtx(ctx)
					resp, err := c.Txn(octx).
						If(clientv3.Compare(clientv3.ModRevision(room+"info"), "=", infoRevs[i]),
							clientv3.Compare(clientv3.ModRevision(idem), "=", 0)).
						Then(clientv3.OpPut(room+"msg/"+strconv.Itoa(n), value), clientv3.OpPut(idem, "0123456789")).
						Else(clientv3.OpGet(idem)).
						Commit()
					if err == nil && !resp.Succeeded {
						err = errors.New("comparison failed")
					}
					if err == nil && cfg.etcdWatch {
						waitFor(octx, resp.Header.Revision)
					}
					cancel()
					if err != nil {
						if ctx.Err() == nil {
							b.c.fail("etcd txn: " + err.Error())
						}
						continue
					}
					b.post.add(time.Since(start))
					b.c.messages.Add(1)
					b.c.posted.Add(1)
				}
			})
		}
		wg.Wait()
	})
	return ctx.Err()
}
