package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/tincan/tincan/turn"
)

// config is the command line, after environment twins are applied.
type config struct {
	addr, db        string
	etcd            string   // -etcd as given: comma-separated client URLs
	etcdEndpoints   []string // parsed from etcd; none: the bbolt file
	etcdPrefix      string
	etcdCA          string
	etcdCert        string
	etcdKey         string
	etcdMember      time.Duration // -etcd-member-timeout
	tlsCert, tlsKey string
	capacity        int
	clientTimeout   time.Duration
	messageTTL      time.Duration
	heartbeat       time.Duration
	stallTimeout    time.Duration
	maxStreamLife   time.Duration
	maxRoomMessages int
	deliveryCache   int
	maxBody         int64
	maxHeaderBytes  int
	bodyTimeout     time.Duration
	allowOrigins    stringList
	debug           bool
	pprofAddr       string
	metricsAddr     string
	ssePadding      int
	rateLimit       float64
	rateBurst       int
	maxOpenPerIP    int
	maxRooms        int
	trustProxy      bool
	redirectAddr    string
	h2c             bool

	memberRateLimit  float64
	memberRateBurst  int
	maxOpenPerMember int

	passwordGuesses     int
	roomPasswordGuesses int
	passwordGuessWindow time.Duration

	turn                     bool
	turnAddr                 string
	turnPublicIP             string
	turnRealm                string
	turnSecret               string
	turnTTL                  time.Duration
	turnAllowLoopback        bool
	turnAllowPeers           prefixList
	turnRelayPorts           string
	turnPortMin, turnPortMax uint16
	turnMaxAllocations       int
	turnUserAllocations      int
	turnMaxLifetime          time.Duration
	iceServers               stringList

	auth          string     // -auth: open or jwt
	jwtSecrets    stringList // HS256/384/512 secrets; any verifies
	jwtPublicKeys stringList // PEM files
	jwtJWKSURL    string
	jwtAudience   string
	jwtIssuer     string

	webhookURL        string
	webhookSecrets    stringList
	webhookTimeout    time.Duration
	webhookMaxAge     time.Duration
	webhookMaxBackoff time.Duration

	adminKey string

	version bool              // -version: print it and exit
	twins   map[string]string // every flag's environment twin (TINCAN_CLIENT_TIMEOUT) -> its name
	fromEnv map[string]bool   // the flags that their twin set
}

// parseFlags reads the flags; a flag not given on the command line takes its
// environment twin (-client-timeout <-> TINCAN_CLIENT_TIMEOUT) when set.
// Repeatable flags take a comma-separated list from the environment.
func parseFlags(args []string, getenv func(string) string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("tincan", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: tincan [flags]          serve the API, the web page and STUN/TURN
       tincan bench [flags]    drive a running tincan (tincan bench -h)
       tincan token [flags]    print a join token for -auth jwt (tincan token -h)
       tincan version          print the version and VCS revision

Every flag has an environment twin, TINCAN_ and its name in capitals with _ for -
(-client-timeout 30s <-> TINCAN_CLIENT_TIMEOUT=30s); repeatable flags take a
comma-separated list there; a flag on the command line wins. -version has none.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.StringVar(&c.addr, "addr", ":8080", "HTTP listen address")
	fs.StringVar(&c.db, "db", "tincan.db", "bbolt file (not used with -etcd)")
	fs.StringVar(&c.etcd, "etcd", "", "etcd client URLs, comma-separated (e.g. http://10.0.0.1:2379,http://10.0.0.2:2379): keep the state in etcd, shared by every instance; unset = the -db file")
	fs.StringVar(&c.etcdPrefix, "etcd-prefix", "/tincan/", "with -etcd: the key prefix of this deployment (tincan writes nothing outside it)")
	fs.StringVar(&c.etcdCA, "etcd-ca", "", "with -etcd: CA certificate file (PEM) that etcd's certificates are checked against (default: the system's)")
	fs.StringVar(&c.etcdCert, "etcd-cert", "", "with -etcd: client certificate file (PEM) for etcd (with -etcd-key)")
	fs.StringVar(&c.etcdKey, "etcd-key", "", "with -etcd: client key file (PEM)")
	fs.DurationVar(&c.etcdMember, "etcd-member-timeout", time.Second, "with -etcd: how long one etcd member may leave a request or the watch unanswered before tincan turns to another (100ms-4s)")
	fs.StringVar(&c.tlsCert, "tls-cert", "", "TLS certificate file: serve HTTPS (with -tls-key)")
	fs.StringVar(&c.tlsKey, "tls-key", "", "TLS key file")
	fs.IntVar(&c.capacity, "room-capacity", 2, "members per room (2-16)")
	fs.DurationVar(&c.clientTimeout, "client-timeout", 60*time.Second, "silence after which a member is removed")
	fs.DurationVar(&c.messageTTL, "message-ttl", 10*time.Minute, "longest a message is retained")
	fs.DurationVar(&c.heartbeat, "heartbeat", 15*time.Second, "SSE comment interval")
	fs.DurationVar(&c.stallTimeout, "stall-timeout", 10*time.Second, "evict an SSE reader that takes no frame (a long-poll reader no 64 KiB of its answer) for this long")
	fs.DurationVar(&c.maxStreamLife, "max-stream-life", 30*time.Minute, "end SSE streams after about this long (randomized ±25%; clients resume); 0 = never")
	fs.IntVar(&c.ssePadding, "sse-padding", 0, "bytes of comment padding at the start of each SSE stream, for buffering middleboxes")
	fs.Float64Var(&c.rateLimit, "rate-limit", 50, "calls without a member's token (joins, room info, a missing or unknown token) per second per client IP; 0 = unlimited")
	fs.IntVar(&c.rateBurst, "rate-burst", 200, "such calls at once per client IP")
	fs.Float64Var(&c.memberRateLimit, "member-rate-limit", 20, "calls with a member's token per second per member; 0 = unlimited")
	fs.IntVar(&c.memberRateBurst, "member-rate-burst", 100, "such calls at once per member")
	fs.IntVar(&c.maxOpenPerMember, "max-streams-per-member", 4, "open event streams and long-polls per member; 0 = unlimited")
	fs.IntVar(&c.maxOpenPerIP, "max-streams-per-ip", 5000, "open event streams and long-polls of all the members behind one client IP; 0 = unlimited")
	fs.IntVar(&c.maxRooms, "max-rooms", 100000, "rooms in total; 0 = unlimited")
	fs.IntVar(&c.passwordGuesses, "password-guesses", 5, "failed password guesses per room and client IP within -password-guess-window; then 429; 0 = unlimited")
	fs.IntVar(&c.roomPasswordGuesses, "room-password-guesses", 30, "failed password guesses per room from every IP within -password-guess-window; then 429 (members resuming are let in); 0 = unlimited")
	fs.DurationVar(&c.passwordGuessWindow, "password-guess-window", time.Minute, "the window in which failed password guesses are counted")
	fs.BoolVar(&c.trustProxy, "trust-proxy", false, "take the client IP from X-Forwarded-For (only behind a proxy you run)")
	fs.BoolVar(&c.h2c, "h2c", false, "on plain HTTP also serve HTTP/2 without TLS (h2c, prior knowledge), for reverse proxies that speak it upstream")
	fs.StringVar(&c.redirectAddr, "http-redirect-addr", "", "with TLS: also listen here with plain HTTP and redirect to HTTPS (e.g. :80); unset = plain HTTP refused")
	fs.IntVar(&c.maxRoomMessages, "max-room-messages", 20000, "retained (unacknowledged) messages per room; 0 = unlimited")
	fs.IntVar(&c.deliveryCache, "delivery-cache", 16, "MiB of the newest messages kept in memory, so that live delivery does not read the disk; 0 = none")
	fs.Int64Var(&c.maxBody, "max-body", 65536, "largest message body in bytes")
	fs.IntVar(&c.maxHeaderBytes, "max-header-bytes", 16<<10, "largest request header block in bytes")
	fs.DurationVar(&c.bodyTimeout, "body-timeout", 15*time.Second, "longest a client may take to send a request body, after its header; then 408 and the connection is closed")
	fs.Var(&c.allowOrigins, "allow-origin", "CORS origin allowed to call the API (repeatable; * for any)")
	fs.BoolVar(&c.debug, "debug", false, "log every request")
	fs.StringVar(&c.metricsAddr, "metrics-addr", "", "serve /metrics on this address only (e.g. 127.0.0.1:9090), not on the API's listener; unset = on -addr, with the API")
	fs.StringVar(&c.pprofAddr, "pprof-addr", "", "serve net/http/pprof on this address for profiling (keep it on loopback); unset = off")

	fs.BoolVar(&c.turn, "turn", true, "run the embedded STUN/TURN server")
	fs.StringVar(&c.turnAddr, "turn-addr", ":3478", "STUN/TURN UDP and TCP listen address")
	fs.StringVar(&c.turnPublicIP, "turn-public-ip", "", "relay address handed to peers (default: first non-loopback address)")
	fs.StringVar(&c.turnRealm, "turn-realm", "tincan", "TURN realm")
	fs.StringVar(&c.turnSecret, "turn-secret", "", "shared secret for TURN REST credentials (default: generated once, kept in the db, or in etcd for every instance)")
	fs.DurationVar(&c.turnTTL, "turn-ttl", time.Hour, "lifetime of issued TURN credentials")
	fs.BoolVar(&c.turnAllowLoopback, "turn-allow-loopback", false, "let TURN relay to loopback peers (local testing only)")
	fs.Var(&c.turnAllowPeers, "turn-allow-peer", "CIDR prefix TURN may relay to despite the deny list (repeatable)")
	fs.StringVar(&c.turnRelayPorts, "turn-relay-ports", "49152-65535", "UDP relay port range MIN-MAX")
	fs.IntVar(&c.turnMaxAllocations, "turn-max-allocations", 10000, "TURN allocations in total; 0 = unlimited")
	fs.IntVar(&c.turnUserAllocations, "turn-user-allocations", 64, "TURN allocations per user; 0 = unlimited")
	fs.DurationVar(&c.turnMaxLifetime, "turn-max-lifetime", 12*time.Hour, "longest TURN allocation lifetime")
	fs.StringVar(&c.auth, "auth", "open", "who may join a room: open (anyone who knows its name) or jwt (who brings the application's join token; see -jwt-*)")
	fs.Var(&c.jwtSecrets, "jwt-secret", "with -auth jwt: HMAC secret that join tokens are signed with (HS256/384/512); repeatable or comma-separated: any of them verifies, for rotation")
	fs.Var(&c.jwtPublicKeys, "jwt-public-key", "with -auth jwt: PEM file of a public key that verifies join tokens (RSA: RS*/PS*, ECDSA: ES*, Ed25519: EdDSA); repeatable")
	fs.StringVar(&c.jwtJWKSURL, "jwt-jwks-url", "", "with -auth jwt: URL of a JWKS with the keys that verify join tokens (chosen by kid; refreshed)")
	fs.StringVar(&c.jwtAudience, "jwt-audience", "", "with -auth jwt: the aud a join token must name; unset = not checked")
	fs.StringVar(&c.jwtIssuer, "jwt-issuer", "", "with -auth jwt: the iss a join token must have; unset = not checked")
	fs.StringVar(&c.webhookURL, "webhook-url", "", "URL that room and member events are POSTed to (Standard Webhooks); unset = no webhooks")
	fs.Var(&c.webhookSecrets, "webhook-secret", "with -webhook-url: whsec_<base64> secret that signs webhooks; repeatable or comma-separated: each signs, for rotation")
	fs.DurationVar(&c.webhookTimeout, "webhook-timeout", 5*time.Second, "longest a webhook delivery may take")
	fs.DurationVar(&c.webhookMaxAge, "webhook-max-age", 24*time.Hour, "how long an undelivered webhook event is retried before it is dropped")
	fs.DurationVar(&c.webhookMaxBackoff, "webhook-max-backoff", 10*time.Second, "longest wait between retries of a webhook event")
	fs.StringVar(&c.adminKey, "admin-key", "", "bearer key of the admin API under /admin/v1/; unset = no admin API (404)")
	fs.BoolVar(&c.version, "version", false, "print the version and VCS revision, then exit (also: tincan version); it has no environment twin")
	fs.Var(&c.iceServers, "ice-server", "extra ICE server URL to hand out (repeatable), e.g. turn:turn.example.com:3478")

	if err := fs.Parse(args[1:]); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q (flags only; or: tincan bench -h, tincan token -h, tincan version)", fs.Arg(0))
	}
	if c.version {
		return c, nil // nothing else matters
	}
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[f.Name] = true })
	var errs []error
	c.twins, c.fromEnv = map[string]string{}, map[string]bool{}
	fs.VisitAll(func(f *flag.Flag) {
		if f.Name == "version" {
			return // TINCAN_VERSION=… must not turn a server into a version print
		}
		env := "TINCAN_" + strings.ToUpper(strings.ReplaceAll(f.Name, "-", "_"))
		c.twins[env] = f.Name
		v := getenv(env)
		if given[f.Name] || v == "" {
			return
		}
		c.fromEnv[f.Name] = true
		values := []string{v}
		if _, repeatable := f.Value.(interface{ repeatable() }); repeatable {
			values = strings.Split(v, ",")
		}
		for _, v := range values {
			if err := f.Value.Set(strings.TrimSpace(v)); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %w", env, v, err))
			}
		}
	})
	if err := errors.Join(errs...); err != nil {
		return c, err
	}
	if c.capacity < 2 || c.capacity > 16 {
		return c, fmt.Errorf("-room-capacity %d: must be between 2 and 16", c.capacity)
	}
	if (c.tlsCert == "") != (c.tlsKey == "") {
		return c, errors.New("-tls-cert and -tls-key go together")
	}
	if err := c.parseEtcd(); err != nil {
		return c, err
	}
	if err := c.checkApps(); err != nil {
		return c, err
	}
	lo, hi, _ := strings.Cut(c.turnRelayPorts, "-")
	portMin, err1 := strconv.ParseUint(lo, 10, 16)
	portMax, err2 := strconv.ParseUint(hi, 10, 16)
	if err1 != nil || err2 != nil || portMin == 0 || portMin > portMax {
		return c, fmt.Errorf("-turn-relay-ports %q: want MIN-MAX, e.g. 49152-65535", c.turnRelayPorts)
	}
	c.turnPortMin, c.turnPortMax = uint16(portMin), uint16(portMax)
	for _, u := range c.iceServers {
		if err := turn.CheckURL(u); err != nil {
			return c, fmt.Errorf("-ice-server %q: %w", u, err)
		}
	}
	for name, d := range map[string]time.Duration{"client-timeout": c.clientTimeout, "message-ttl": c.messageTTL,
		"heartbeat": c.heartbeat, "stall-timeout": c.stallTimeout, "turn-ttl": c.turnTTL, "body-timeout": c.bodyTimeout,
		"password-guess-window": c.passwordGuessWindow, "webhook-timeout": c.webhookTimeout, "webhook-max-age": c.webhookMaxAge,
		"webhook-max-backoff": c.webhookMaxBackoff} {
		if d <= 0 {
			return c, fmt.Errorf("-%s must be positive", name)
		}
	}
	if c.redirectAddr != "" && c.tlsCert == "" {
		return c, errors.New("-http-redirect-addr needs -tls-cert and -tls-key")
	}
	if c.rateLimit < 0 || c.rateBurst < 0 || c.memberRateLimit < 0 || c.memberRateBurst < 0 || c.maxOpenPerMember < 0 || c.maxOpenPerIP < 0 || c.maxRooms < 0 || c.maxRoomMessages < 0 || c.ssePadding < 0 || c.deliveryCache < 0 ||
		c.passwordGuesses < 0 || c.roomPasswordGuesses < 0 {
		return c, errors.New("limits cannot be negative (0 switches one off)")
	}
	if c.maxHeaderBytes < 4096 {
		return c, errors.New("-max-header-bytes must be at least 4096")
	}
	if c.maxBody <= 0 {
		return c, errors.New("-max-body must be positive")
	}
	return c, nil
}

// stringList is a repeatable string flag.
type stringList []string

func (l *stringList) String() string     { return strings.Join(*l, ",") }
func (l *stringList) Set(v string) error { *l = append(*l, v); return nil }
func (l *stringList) repeatable()        {}

// prefixList is a repeatable CIDR flag.
type prefixList []netip.Prefix

func (l *prefixList) String() string {
	var s []string
	for _, p := range *l {
		s = append(s, p.String())
	}
	return strings.Join(s, ",")
}

func (l *prefixList) Set(v string) error {
	p, err := netip.ParsePrefix(v)
	if err != nil {
		return err
	}
	*l = append(*l, p)
	return nil
}
func (l *prefixList) repeatable() {}
