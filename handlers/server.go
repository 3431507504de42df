// Package handlers is tincan's HTTP API: rooms, messages, and their delivery
// over Server-Sent Events and long-poll, as in the API contract
// (README.md, "API"). Durable state lives in the store; this package keeps
// only what may be lost on a restart: the open streams and the rate limits.
package handlers

import (
	"context"
	"io/fs"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/r3labs/sse/v2"

	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/turn"
)

// Config holds what the handlers need besides the store.
type Config struct {
	Heartbeat     time.Duration // SSE comment interval
	StallTimeout  time.Duration // an SSE reader that takes no frame (a long-poll reader no 64 KiB of its answer) for this long is evicted
	MaxStreamLife time.Duration // streams end after about this long (randomized); 0 = never
	DefaultWait   time.Duration // long-poll wait when the client names none
	MaxWait       time.Duration // longest long-poll wait
	MaxBody       int64         // largest message body
	BodyTimeout   time.Duration // longest a request may take to send its body, after its header
	AllowOrigins  []string      // CORS origins; none = same origin only
	SSEPadding    int           // bytes of comment sent first on a stream, for buffering middleboxes

	// The request limits (limits.go says what each counts); 0 switches a
	// limit off.
	RateLimit        float64 // per client IP: calls without a member's token per second
	RateBurst        int     // per client IP: such calls at once
	MemberRateLimit  float64 // per member: calls with its token per second
	MemberRateBurst  int     // per member: such calls at once
	MaxOpenPerMember int     // per member: event streams and long-polls open at once
	MaxOpenPerIP     int     // per client IP: the event streams and long-polls of all its members
	TrustProxy       bool    // take the client IP from X-Forwarded-For

	// Failed password guesses at a room within PasswordGuessWindow
	// (default a minute), per client IP and per room from every IP; 0
	// switches a limit off. A room's members resuming are not counted.
	PasswordGuesses     int
	RoomPasswordGuesses int
	PasswordGuessWindow time.Duration

	// ICEServers returns the contract's "ice_servers" for a client, with
	// fresh TURN credentials (turn.Credentials.ICEServers); nil: none.
	ICEServers func(clientID string) []turn.ICEServer
	// JoinTokens verifies the application's join tokens: with it (-auth
	// jwt) a new member needs one. nil: anyone may join (-auth open).
	JoinTokens JoinTokens
	// AdminKey enables the admin API under /admin/v1/ for callers that
	// send it as a bearer token; "": the admin API is not served (404).
	// Wrong keys count as failed guesses of PasswordGuesses per address.
	AdminKey string
	Static   fs.FS // the web page: index.html, room.html and the files under /static/
	Logger   *slog.Logger
	Registry *prometheus.Registry
	// MetricsElsewhere: Registry is served on a listener of its own
	// (-metrics-addr), and the API answers 404 for /metrics.
	MetricsElsewhere bool
	Now              func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.Heartbeat, 15*time.Second)
	def(&c.StallTimeout, 10*time.Second)
	def(&c.DefaultWait, 25*time.Second)
	def(&c.MaxWait, 60*time.Second)
	def(&c.BodyTimeout, 15*time.Second)
	def(&c.PasswordGuessWindow, time.Minute)
	if c.MaxBody == 0 {
		c.MaxBody = 65536
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
	cfg       Config
	store     store.Store
	log       *slog.Logger
	metrics   *metrics
	addresses *limiter[string]       // per client IP
	members   *limiter[store.Member] // per member
	guesses   *guessLimiter
	adminKeys *guessLimiter // wrong admin keys, per address
	events    *sse.Server
	handler   http.Handler

	streams *streamRegistry // the open event streams; drained by Drain
	streamN atomic.Uint64   // names the r3labs streams
	subs    subscriptions
	hangups hangups // watches hijacked connections; closed by Drain
}

// New builds the API over st. It registers its metrics in cfg.Registry.
func New(cfg Config, st store.Store) *Server {
	cfg.setDefaults()
	s := &Server{
		cfg:       cfg,
		store:     st,
		log:       cfg.Logger,
		streams:   newStreamRegistry(),
		hangups:   newHangups(),
		addresses: newLimiter[string](cfg.RateLimit, cfg.RateBurst, cfg.MaxOpenPerIP),
		members:   newLimiter[store.Member](cfg.MemberRateLimit, cfg.MemberRateBurst, cfg.MaxOpenPerMember),
		guesses:   newGuessLimiter(cfg.PasswordGuesses, cfg.RoomPasswordGuesses, cfg.PasswordGuessWindow),
		adminKeys: newGuessLimiter(cfg.PasswordGuesses, 0, cfg.PasswordGuessWindow),
	}
	s.metrics = newMetrics(cfg.Registry)
	s.events = newEventServer(&s.subs)
	s.handler = asSent(s.middleware(s.limitBodyTime(s.routes())))
	return s
}

func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.handler.ServeHTTP(w, r) }

// Run does the background work until ctx ends: heartbeats, and forgetting
// the rate limits of addresses and members gone quiet and the password
// guesses past their window. (The store does its own: pruning,
// removing silent members.)
func (s *Server) Run(ctx context.Context) error {
	heartbeat := time.NewTicker(s.cfg.Heartbeat)
	defer heartbeat.Stop()
	sweep := time.NewTicker(time.Second)
	defer sweep.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-heartbeat.C:
			s.heartbeat()
		case <-sweep.C:
			now := s.cfg.Now()
			s.addresses.sweep(now.Add(-time.Minute))
			s.members.sweep(now.Add(-time.Minute))
			s.guesses.sweep(now)
			s.adminKeys.sweep(now)
		}
	}
}

// Drain ends every event stream and long-poll so that clients reconnect
// elsewhere (or after the restart), and refuses new ones. It returns when
// the event streams have ended (each ends at once). Call it before
// http.Server.Shutdown, which waits for the long-polls and other requests
// in flight but not for streams on hijacked connections.
func (s *Server) Drain() {
	if s.streams.drain() {
		s.hangups.close() // after every stream's stop, as it requires
	}
}
