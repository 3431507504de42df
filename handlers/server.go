// Package handlers is tincan's HTTP API: rooms, messages, and their delivery
// over Server-Sent Events and long-poll, as in the API contract
// (README.md, "API"). Durable state lives in the store; this package keeps
// only what may be lost on a restart: who is listening, and the wake-ups.
package handlers

import (
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/r3labs/sse/v2"

	"github.com/tincan/tincan/store"
)

// Config holds what the handlers need besides the store.
type Config struct {
	ClientTimeout time.Duration // silence after which a member is removed
	Heartbeat     time.Duration // SSE comment interval
	StallTimeout  time.Duration // an SSE reader that takes no frame for this long is evicted
	MaxStreamLife time.Duration // streams end after about this long (randomized); 0 = never
	DefaultWait   time.Duration // long-poll wait when the client names none
	MaxWait       time.Duration // longest long-poll wait
	MaxBody       int64         // largest message body
	PruneEvery    time.Duration // how often retained messages are pruned
	AllowOrigins  []string      // CORS origins; none = same origin only
	SSEPadding    int           // bytes of comment sent first on a stream, for buffering middleboxes

	// Per client IP (0 switches a limit off).
	RateLimit    float64 // requests per second
	RateBurst    int     // requests at once
	MaxOpenPerIP int     // event streams and long-polls open at once
	TrustProxy   bool    // take the client IP from X-Forwarded-For

	// ICEServers returns the ICE servers (with fresh credentials) for a
	// client: a JSON-encodable list as the contract's "ice_servers".
	ICEServers func(clientID string) any
	Static     fs.FS // the web page: index.html, room.html and the files under /static/
	Logger     *slog.Logger
	Registry   *prometheus.Registry
	Now        func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.ClientTimeout, 60*time.Second)
	def(&c.Heartbeat, 15*time.Second)
	def(&c.StallTimeout, 10*time.Second)
	def(&c.DefaultWait, 25*time.Second)
	def(&c.MaxWait, 60*time.Second)
	def(&c.PruneEvery, 30*time.Second)
	if c.MaxBody == 0 {
		c.MaxBody = 65536
	}
	if c.ICEServers == nil {
		c.ICEServers = func(string) any { return []any{} }
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	if c.Registry == nil {
		c.Registry = prometheus.NewRegistry()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
}

// Server is the HTTP API. Serve it with net/http and run Run beside it.
type Server struct {
	cfg      Config
	store    *store.Store
	log      *slog.Logger
	hub      *hub
	presence *presence
	metrics  *metrics
	limits   *limiter
	events   *sse.Server
	handler  http.Handler

	draining  chan struct{} // closed by Drain
	streamN   atomic.Uint64
	subs      subscriptions
	streamsMu sync.Mutex
	streams   map[*eventStream]struct{} // open event streams
	streamsWG sync.WaitGroup            // their goroutines, hijacked ones included
	hangups   hangups                   // watches hijacked connections; closed by Drain
	drainOnce sync.Once
}

// New builds the API over st. It registers its metrics in cfg.Registry.
func New(cfg Config, st *store.Store) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:      cfg,
		store:    st,
		log:      cfg.Logger,
		hub:      newHub(),
		presence: newPresence(cfg.Now),
		draining: make(chan struct{}),
		streams:  map[*eventStream]struct{}{},
		hangups:  newHangups(),
		limits:   newLimiter(cfg.RateLimit, cfg.RateBurst, cfg.MaxOpenPerIP, cfg.TrustProxy),
	}
	s.metrics = newMetrics(cfg.Registry, s)
	s.events = newEventServer(&s.subs)
	s.handler = s.middleware(s.limitRequests(s.routes()))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Run does the background work until ctx ends: heartbeats, removing silent
// members, pruning messages. Members already in the store start afresh.
func (s *Server) Run(ctx context.Context) error {
	members, err := s.store.Members()
	if err != nil {
		return err
	}
	for _, m := range members {
		s.presence.touch(m)
	}
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	reap := time.NewTicker(min(time.Second, s.cfg.ClientTimeout/4))
	defer reap.Stop()
	prune := time.NewTicker(s.cfg.PruneEvery)
	defer prune.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-heartbeat.C:
			s.heartbeat()
		case now := <-reap.C:
			s.removeSilent(ctx)
			s.limits.sweep(now.Add(-time.Minute))
		case <-prune.C:
			if _, err := s.store.Prune(ctx); err != nil {
				s.log.Error("prune", "err", err)
			}
		}
	}
}

func (s *Server) removeSilent(ctx context.Context) {
	for _, m := range s.presence.silent(s.cfg.ClientTimeout) {
		// Each removal is a commit: a member may have come back while the
		// ones before it were removed.
		if !s.presence.isSilent(m, s.cfg.ClientTimeout) {
			continue
		}
		if _, err := s.store.Leave(ctx, m, store.ReasonTimeout); err != nil {
			s.log.Error("remove silent member", "room", m.Room, "client", m.ID, "err", err)
			continue
		}
		s.presence.forget(m)
		s.hub.wake(m.Room)
		s.log.Info("member timed out", "room", m.Room, "client", m.ID)
	}
}

// Drain ends every event stream and long-poll so that clients reconnect
// elsewhere (or after the restart), and refuses new ones. It returns when
// the event streams have ended (each ends at once). Call it before
// http.Server.Shutdown, which waits for the long-polls and other requests
// in flight but not for streams on hijacked connections.
func (s *Server) Drain() {
	s.streamsMu.Lock()
	if !s.isDraining() {
		close(s.draining)
	}
	s.streamsMu.Unlock()
	for _, st := range s.openStreams() {
		st.end()
	}
	s.streamsWG.Wait()
	s.drainOnce.Do(s.hangups.close)
}

func (s *Server) isDraining() bool {
	select {
	case <-s.draining:
		return true
	default:
		return false
	}
}
