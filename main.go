// Command tincan is a WebRTC signaling server for networks where WebSocket
// does not get through: clients POST messages over plain HTTP and receive
// them over Server-Sent Events or long-poll. State lives in a bbolt file, or
// with -etcd in an etcd cluster that any number of instances share, and the
// binary embeds a STUN/TURN server. See README.md.
package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/tincan/tincan/handlers"
	"github.com/tincan/tincan/static"
	"github.com/tincan/tincan/store"
	"github.com/tincan/tincan/store/boltstore"
	"github.com/tincan/tincan/store/etcdstore"
	"github.com/tincan/tincan/turn"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args, os.Getenv, os.Stdout, os.Stderr, os.Environ()...); err != nil {
		fmt.Fprintf(os.Stderr, "tincan: %v\n", err)
		os.Exit(1)
	}
}

// run is the whole program: it serves until ctx ends, then shuts down
// gracefully and logs "stopped". It prints "tincan listening on URL" on
// stdout once the HTTP listener is up, then "open URL in a browser".
// getenv reads the flags' environment twins; environ, the environment in
// os.Environ's form, is only looked through for TINCAN_* variables that
// are no flag's twin, to warn of them.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer, environ ...string) (err error) {
	if len(args) > 1 && args[1] == "bench" {
		return runBench(ctx, args[2:], stdout, stderr)
	}
	if len(args) > 1 && args[1] == "token" {
		err := runToken(args[2:], getenv, stdout, stderr)
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	build := readBuildInfo()
	if len(args) > 1 && args[1] == "version" {
		printVersion(stdout, build)
		return nil
	}
	cfg, err := parseFlags(args, getenv, stderr)
	if errors.Is(err, flag.ErrHelp) {
		return nil // the usage is printed
	}
	if err != nil {
		return err
	}
	if cfg.version {
		printVersion(stdout, build)
		return nil
	}
	level := slog.LevelInfo
	if cfg.debug {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level}))
	log.Info("starting", "version", build.version, "revision", build.revision)
	warnUnknownEnv(log, environ, cfg.twins)
	serving := false
	defer func() { // after everything else has stopped
		switch {
		case serving && err != nil:
			log.Error("stopped", "err", err)
		case serving:
			log.Info("stopped")
		}
	}()

	recent := cfg.deliveryCache << 20
	if recent == 0 {
		recent = -1 // none; 0 would be the store's default
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	registerBuildInfo(reg, build)

	st, err := openStore(ctx, cfg, recent, reg, log)
	if err != nil {
		return err
	}
	defer st.Close()

	deliverer, err := newDeliverer(ctx, cfg, st, reg, log)
	if err != nil {
		return err
	}
	joinTokens, err := newJoinTokens(ctx, cfg, log)
	if err != nil {
		return err
	}

	ice, stopTURN, err := startTURN(ctx, cfg, st, reg, log)
	if err != nil {
		return err
	}
	defer stopTURN()

	api := handlers.New(handlers.Config{
		Heartbeat:     cfg.heartbeat,
		StallTimeout:  cfg.stallTimeout,
		MaxStreamLife: cfg.maxStreamLife,
		MaxBody:       cfg.maxBody,
		BodyTimeout:   cfg.bodyTimeout,
		AllowOrigins:  cfg.allowOrigins,
		SSEPadding:    cfg.ssePadding,
		RateLimit:     cfg.rateLimit,
		RateBurst:     cfg.rateBurst,
		MaxOpenPerIP:  cfg.maxOpenPerIP,
		TrustProxy:    cfg.trustProxy,
		ICEServers:    ice.ICEServers,
		Static:        static.FS,
		Logger:        log,
		Registry:      reg,

		MetricsElsewhere: cfg.metricsAddr != "",

		MemberRateLimit:  cfg.memberRateLimit,
		MemberRateBurst:  cfg.memberRateBurst,
		MaxOpenPerMember: cfg.maxOpenPerMember,

		AdminKey:   cfg.adminKey,
		JoinTokens: joinTokens,

		PasswordGuesses:     cfg.passwordGuesses,
		RoomPasswordGuesses: cfg.roomPasswordGuesses,
		PasswordGuessWindow: cfg.passwordGuessWindow,
	}, st)

	ln, err := net.Listen("tcp", cfg.addr)
	if err != nil {
		return fmt.Errorf("listen %s: %w", cfg.addr, err)
	}
	srv := &http.Server{
		Handler:           api,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		// net/http allows 4096 bytes beyond MaxHeaderBytes; the flag is the real limit.
		MaxHeaderBytes: max(1, cfg.maxHeaderBytes-4096),
		ErrorLog:       slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
	if cfg.tlsCert == "" && cfg.h2c {
		// HTTP/2 without TLS for proxies that speak it upstream; with TLS,
		// HTTP/2 is negotiated by ALPN anyway.
		srv.Protocols = new(http.Protocols)
		srv.Protocols.SetHTTP1(true)
		srv.Protocols.SetUnencryptedHTTP2(true)
	}
	// The side listeners first, so that a failure leaves nothing running.
	if cfg.pprofAddr != "" {
		stopPprof, err := servePprof(cfg.pprofAddr, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopPprof()
	}
	if cfg.metricsAddr != "" {
		stopMetrics, err := serveMetrics(cfg.metricsAddr, reg, log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopMetrics()
	}
	if cfg.redirectAddr != "" {
		stopRedirect, err := serveRedirect(cfg.redirectAddr, ln.Addr(), log)
		if err != nil {
			ln.Close()
			return err
		}
		defer stopRedirect()
	}

	scheme := "http"
	if cfg.tlsCert != "" {
		scheme = "https"
	}
	fmt.Fprintf(stdout, "tincan listening on %s://%s\n", scheme, ln.Addr())
	browserURL := openURL(cfg, ln.Addr())
	fmt.Fprintf(stdout, "open %s in a browser\n", browserURL)
	if len(cfg.etcdEndpoints) > 0 {
		log.Info("serving", "addr", ln.Addr().String(), "url", browserURL, "etcd", cfg.etcd, "etcd_prefix", cfg.etcdPrefix, "tls", cfg.tlsCert != "")
	} else {
		log.Info("serving", "addr", ln.Addr().String(), "url", browserURL, "db", cfg.db, "tls", cfg.tlsCert != "")
	}
	serving = true

	bgCtx, stopBackground := context.WithCancel(context.Background())
	background := make(chan error, 1)
	go func() { background <- api.Run(bgCtx) }()
	delivering := make(chan struct{})
	go func() {
		defer close(delivering)
		if deliverer != nil {
			if err := deliverer.Run(bgCtx); err != nil && bgCtx.Err() == nil {
				log.Error("webhook delivery stopped", "err", err)
			}
		}
	}()
	served := make(chan error, 1)
	go func() {
		if cfg.tlsCert != "" {
			served <- srv.ServeTLS(ln, cfg.tlsCert, cfg.tlsKey)
		} else {
			served <- srv.Serve(ln)
		}
	}()

	backgroundDone := false
	select {
	case err = <-served:
	case err = <-background:
		backgroundDone = true
	case <-ctx.Done():
	}
	log.Info("shutting down")
	api.Drain()
	// Within 5 s of the signal: requests in flight get 4 s, then connections
	// are cut (a client sending half a request must not hold us up).
	shutdownCtx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
	defer cancel()
	if serr := srv.Shutdown(shutdownCtx); serr != nil {
		srv.Close()
	}
	// The background work writes to the store: it ends before the store closes.
	stopBackground()
	if !backgroundDone {
		<-background
	}
	<-delivering
	if errors.Is(err, http.ErrServerClosed) {
		err = nil
	}
	return err
}

// openStore is the one place that picks the storage engine: etcd when
// -etcd names a cluster (the -db file is then not touched), else the bbolt
// file -db. recent is boltstore's RecentBytes.
func openStore(ctx context.Context, cfg config, recent int, reg prometheus.Registerer, log *slog.Logger) (store.Store, error) {
	rules := store.Options{
		Capacity:        cfg.capacity,
		Webhooks:        cfg.webhookURL != "",
		MessageTTL:      cfg.messageTTL,
		MaxRoomMessages: cfg.maxRoomMessages,
		MaxRooms:        cfg.maxRooms,
		ClientTimeout:   cfg.clientTimeout,
		PruneEvery:      min(30*time.Second, max(time.Second, cfg.messageTTL/10)),
	}
	if len(cfg.etcdEndpoints) == 0 {
		st, err := boltstore.Open(cfg.db, boltstore.Options{Options: rules, RecentBytes: recent, Registerer: reg, Logger: log})
		if err != nil {
			return nil, err
		}
		return st, nil
	}
	tlsConfig, err := cfg.etcdTLS()
	if err != nil {
		return nil, err
	}
	// Open fails when etcd does not answer within its RequestTimeout (5 s).
	st, err := etcdstore.Open(ctx, etcdstore.Options{
		Options:       rules,
		Endpoints:     cfg.etcdEndpoints,
		TLS:           tlsConfig,
		Prefix:        cfg.etcdPrefix,
		MemberTimeout: cfg.etcdMember,
		Registerer:    reg,
		Logger:        log,
	})
	if err != nil {
		return nil, err
	}
	return st, nil
}

// startTURN starts the embedded STUN/TURN server (unless -turn=false) and
// returns the credentials issuer for join answers.
func startTURN(ctx context.Context, cfg config, st store.Store, reg prometheus.Registerer, log *slog.Logger) (turn.Credentials, func(), error) {
	secret := []byte(cfg.turnSecret)
	if len(secret) == 0 {
		random, err := st.Secret(ctx, "turn", 32)
		if err != nil {
			return turn.Credentials{}, nil, fmt.Errorf("turn secret: %w", err)
		}
		// Printable, so that it can be given to coturn as static-auth-secret.
		secret = []byte(hex.EncodeToString(random))
	}
	log.Info("turn secret", "from", turnSecretSource(cfg))
	creds := turn.Credentials{Secret: secret, TTL: cfg.turnTTL, Extra: cfg.iceServers}
	if !cfg.turn {
		warnExternalTURN(log, cfg)
		return creds, func() {}, nil
	}
	srv, err := turn.Start(ctx, turn.Config{
		Addr:                  cfg.turnAddr,
		PublicIP:              cfg.turnPublicIP,
		Realm:                 cfg.turnRealm,
		Secret:                secret,
		RelayPortMin:          cfg.turnPortMin,
		RelayPortMax:          cfg.turnPortMax,
		AllowLoopback:         cfg.turnAllowLoopback,
		AllowPeers:            cfg.turnAllowPeers,
		MaxAllocations:        cfg.turnMaxAllocations,
		MaxAllocationsPerUser: cfg.turnUserAllocations,
		MaxLifetime:           cfg.turnMaxLifetime,
		Registerer:            reg,
		Logger:                log,
	})
	if err != nil {
		return creds, nil, fmt.Errorf("turn: %w", err)
	}
	creds.URLs = srv.URLs()
	log.Info("turn serving", "addr", cfg.turnAddr, "urls", creds.URLs)
	warnLoopbackTURN(log, cfg, creds.URLs)
	warnUnreachableTURN(log, cfg, creds.URLs)
	return creds, func() { srv.Close() }, nil
}

// serveRedirect answers plain HTTP on addr with a redirect to the same URL
// over HTTPS on the TLS listener's port.
func serveRedirect(addr string, tlsAddr net.Addr, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	_, tlsPort, _ := net.SplitHostPort(tlsAddr.String())
	srv := &http.Server{
		// The whole request, body too (it is never read, but net/http
		// reads it before answering), and the time between requests.
		ReadTimeout: 10 * time.Second,
		IdleTimeout: 120 * time.Second,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = r.Host
			}
			if tlsPort != "443" {
				host = net.JoinHostPort(host, tlsPort)
			}
			http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusPermanentRedirect)
		}),
	}
	go srv.Serve(ln)
	log.Info("redirecting plain HTTP", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}

// serveMetrics serves the Prometheus metrics of reg at /metrics on a
// listener of its own (-metrics-addr), apart from the API; every other
// path is 404.
func serveMetrics(addr string, reg *prometheus.Registry, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadTimeout: 10 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
	go srv.Serve(ln)
	log.Info("serving metrics", "addr", ln.Addr().String(), "url", "http://"+ln.Addr().String()+"/metrics")
	return func() { srv.Close() }, nil
}

// servePprof serves the Go profiler on its own listener, apart from the API.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	// ReadTimeout bounds reading the request only: a profile takes longer
	// to answer.
	srv := &http.Server{Handler: mux, ReadTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go srv.Serve(ln)
	log.Info("serving pprof", "addr", ln.Addr().String())
	return func() { srv.Close() }, nil
}
