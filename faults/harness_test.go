package faults

// The system under test: three etcd members as processes (etcdproc), each
// advertising its peer URL at a Proxy so that its peer links can be cut;
// three tincan binaries (tincantest), each reaching every member through
// a Proxy of its own (path[i][j]: instance i to member j) so that one
// client path can be blackholed; a round-robin balancer in front of the
// instances; and a webhook receiver.

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/tincan/tincan/client"
	"github.com/tincan/tincan/faults/etcdproc"
	"github.com/tincan/tincan/internal/tincantest"
)

// The servers' rules in every run.
const (
	capacity        = 6
	maxRoomMessages = 1000
	// clientTimeout is well above the 4 s in which issue 19 wants an
	// instance to notice a silent etcd member, and as long as the longest
	// fault (a stopped member, 10 s): a member whose stream is open must
	// outlive every fault, and a silent one is removed within the run.
	clientTimeout = 10 * time.Second
	webhookSecret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
)

type cluster struct {
	etcd    *etcdproc.Cluster
	cli     *clientv3.Client // straight to the members, for the faults
	peer    []*Proxy         // member i's advertised peer address
	path    [][]*Proxy       // instance i to member j
	tincan  []*tincantest.Server
	url     string // the balancer
	hooks   *receiver
	h       *History
	started time.Time
}

// startCluster starts everything and records webhooks into h.
func startCluster(t *testing.T, h *History) *cluster {
	t.Helper()
	c := &cluster{h: h, started: time.Now()}
	c.etcd = etcdproc.Start(t, etcdproc.Config{Members: 3, Advertise: func(i int, listen string) string {
		p := NewPeerProxy(t, listen)
		c.peer = append(c.peer, p) // Advertise is called in member order
		return p.Addr()
	}})
	c.cli = c.etcd.Client(t)
	c.hooks = newReceiver(t, h)
	bin := tincantest.Build(t)
	prefix := fmt.Sprintf("/faults/%d/", time.Now().UnixNano())
	for range 3 {
		var eps []string
		var paths []*Proxy
		for _, m := range c.etcd.Members {
			u, _ := url.Parse(m.Client)
			p := NewProxy(t, u.Host)
			paths = append(paths, p)
			eps = append(eps, "http://"+p.Addr())
		}
		c.path = append(c.path, paths)
		s := tincantest.Start(t, bin, nil, "-etcd", strings.Join(eps, ","), "-etcd-prefix", prefix,
			"-room-capacity", strconv.Itoa(capacity), "-max-room-messages", strconv.Itoa(maxRoomMessages),
			"-client-timeout", clientTimeout.String(),
			"-webhook-url", c.hooks.url, "-webhook-secret", webhookSecret, "-webhook-max-backoff", "1s")
		c.tincan = append(c.tincan, s)
	}
	c.url = newBalancer(t, c.tincan)
	return c
}

// leader is the index of etcd's leader now.
func (c *cluster) leader(t *testing.T) int { return c.etcd.WaitLeader(t, c.cli) }

// isolate cuts member i's peer links both ways: the connections to it
// (its advertised address) and those it opened to the others.
func (c *cluster) isolate(i int) {
	c.peer[i].Blackhole()
	from := strconv.FormatUint(c.etcd.Members[i].ID(), 16)
	for j, p := range c.peer {
		if j != i {
			p.BlackholeFrom(from)
		}
	}
}

func (c *cluster) heal() {
	for _, p := range c.peer {
		p.Restore()
	}
	for _, ps := range c.path {
		for _, p := range ps {
			p.Restore()
		}
	}
}

// newBalancer is a round-robin balancer over the instances (wherever each
// listens now), as nginx's default upstream: no sticky sessions, streams
// passed on as they come. An instance it cannot reach, or that dies
// before answering, makes it answer 502 (the client retries a post, and
// reports a join as of unknown outcome).
func newBalancer(t *testing.T, instances []*tincantest.Server) string {
	var next atomic.Uint64
	transport := &http.Transport{MaxIdleConnsPerHost: 64, DialContext: (&net.Dialer{Timeout: 2 * time.Second}).DialContext}
	proxy := &httputil.ReverseProxy{
		Rewrite: func(r *httputil.ProxyRequest) {
			i := int((next.Add(1) - 1) % uint64(len(instances)))
			u, _ := url.Parse(instances[i].URL())
			r.SetURL(u)
		},
		Transport:     transport,
		FlushInterval: -1,
		ErrorHandler: func(w http.ResponseWriter, r *http.Request, err error) {
			http.Error(w, "balancer: the instance did not answer: "+err.Error(), http.StatusBadGateway)
		},
		ErrorLog: log.New(io.Discard, "", 0),
	}
	srv := &http.Server{Handler: proxy}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(ln)
	t.Cleanup(func() {
		srv.Close()
		transport.CloseIdleConnections()
	})
	return "http://" + ln.Addr().String()
}

// receiver is the application's webhook endpoint: it verifies each
// request with client.VerifyWebhook, answers 204, and records the first
// arrival of each webhook-id in the history.
type receiver struct {
	url string
	h   *History

	mu   sync.Mutex
	seen map[string]bool
	bad  []string
}

func newReceiver(t *testing.T, h *History) *receiver {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &receiver{url: "http://" + ln.Addr().String() + "/hooks", h: h, seen: map[string]bool{}}
	srv := &http.Server{Handler: r}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return r
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return
	}
	ev, err := client.VerifyWebhook(webhookSecret, req.Header, body, time.Now())
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.bad = append(r.bad, err.Error())
		w.WriteHeader(400)
		return
	}
	if !r.seen[ev.ID] {
		r.seen[ev.ID] = true
		r.h.AddWebhook(Webhook{ID: ev.ID, Type: ev.Type, Room: ev.Data.Room, ClientID: ev.Data.ClientID, Reason: ev.Data.Reason, Seq: ev.Data.Seq, At: r.h.Now()})
	}
	w.WriteHeader(204)
}

// failures are the requests that failed verification.
func (r *receiver) failures() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.bad...)
}

// watched is, for each instance, the member whose client path from it
// carried the most bytes over a second: the one its watch streams
// through.
func (c *cluster) watched() []int {
	before := make([][]int64, len(c.path))
	for i, ps := range c.path {
		for _, p := range ps {
			before[i] = append(before[i], p.Bytes())
		}
	}
	time.Sleep(time.Second)
	var out []int
	for i, ps := range c.path {
		best, most := 0, int64(-1)
		for j, p := range ps {
			if d := p.Bytes() - before[i][j]; d > most {
				best, most = j, d
			}
		}
		out = append(out, best)
	}
	return out
}

// follower picks a follower that an instance watches through (instance
// 0's first), or else the one after the leader.
func (c *cluster) follower(t *testing.T) int {
	l := c.leader(t)
	w := c.watched()
	for _, j := range w {
		if j != l {
			t.Logf("the leader is member %d; the instances watch through members %v", l, w)
			return j
		}
	}
	return (l + 1) % 3
}

// etcdAt is a client of member i alone.
func (c *cluster) etcdAt(t *testing.T, i int) *clientv3.Client {
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{c.etcd.Members[i].Client}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// leaders is what each member says of the leader now: the leader's
// index, or -1 when it does not answer within a second or knows none.
func (c *cluster) leaders() []int {
	var out []int
	for _, m := range c.etcd.Members {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		st, err := c.cli.Status(ctx, m.Client)
		cancel()
		l := -1
		for j, o := range c.etcd.Members {
			if err == nil && o.ID() == st.Leader {
				l = j
			}
		}
		out = append(out, l)
	}
	return out
}

// revision is etcd's current revision, by a quorum read.
func (c *cluster) revision(ctx context.Context) (int64, error) {
	resp, err := c.cli.Get(ctx, "faults-revision-probe")
	if err != nil {
		return 0, err
	}
	return resp.Header.Revision, nil
}
