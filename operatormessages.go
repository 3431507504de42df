package main

import (
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
)

// The operator's messages at start: a warning for each setting that cannot
// work as meant (the server serves anyway), where the TURN secret comes
// from, and a URL that a person can open.

// warnUnknownEnv warns of each TINCAN_* variable of environ (os.Environ's
// NAME=value form) that is the twin of no flag in twins (twin -> flag),
// most likely a typo: it is ignored. The warning names the nearest twin
// when one is close.
func warnUnknownEnv(log *slog.Logger, environ []string, twins map[string]string) {
	known := make([]string, 0, len(twins))
	for twin := range twins {
		known = append(known, twin)
	}
	slices.Sort(known)
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "TINCAN_") || twins[name] != "" {
			continue
		}
		attrs := []any{"variable", name}
		if near := nearest(name, known); near != "" {
			attrs = append(attrs, "did_you_mean", near, "flag", "-"+twins[near])
		}
		log.Warn("ignored: this TINCAN_ variable is the twin of no flag (see tincan -h)", attrs...)
	}
}

// nearest is the name among names (TINCAN_* all) that a typo of name
// could be, the closest (the first of equals), or "": after the prefix,
// one edit in a name of up to 7 bytes, two in a longer one.
func nearest(name string, names []string) string {
	suffix := strings.TrimPrefix(name, "TINCAN_")
	best, bestDist := "", min(2, max(1, len(suffix)/4))+1
	for _, n := range names {
		if d := editDistance(suffix, strings.TrimPrefix(n, "TINCAN_")); d < bestDist {
			best, bestDist = n, d
		}
	}
	return best
}

// editDistance is the Levenshtein distance between a and b, in bytes.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// turnSecretSource says where the TURN secret comes from, for the log; it
// never contains the secret.
func turnSecretSource(cfg config) string {
	switch {
	case cfg.turnSecret != "" && cfg.fromEnv["turn-secret"]:
		return "the environment (TINCAN_TURN_SECRET)"
	case cfg.turnSecret != "":
		return "the -turn-secret flag"
	case len(cfg.etcdEndpoints) > 0:
		return "etcd, under " + cfg.etcdPrefix + " (made by the first instance that needed it, shared by all)"
	default:
		return "the db file " + cfg.db + " (made on its first start)"
	}
}

// warnExternalTURN warns when -ice-server hands out turn: or turns: URLs
// while the embedded TURN server is off and no -turn-secret is set: their
// credentials are then made with a secret of tincan's own, kept in its
// store, that the external server cannot know, so it refuses them.
func warnExternalTURN(log *slog.Logger, cfg config) {
	if cfg.turn || cfg.turnSecret != "" {
		return
	}
	for _, u := range cfg.iceServers {
		scheme, _, _ := strings.Cut(strings.ToLower(u), ":")
		if scheme == "turn" || scheme == "turns" {
			log.Warn("the TURN credentials for -ice-server are made with a secret that tincan generated and keeps to itself, which your TURN server cannot check: set -turn-secret (or TINCAN_TURN_SECRET) to its static-auth-secret",
				"ice_server", u)
			return
		}
	}
}

// warnLoopbackTURN warns when the embedded TURN server listens on a
// loopback address while the URLs it hands out (urls, its Server.URLs)
// name another address: nobody but this host can reach it there.
func warnLoopbackTURN(log *slog.Logger, cfg config, urls []string) {
	host, _, err := net.SplitHostPort(cfg.turnAddr)
	if err != nil || !isLoopbackHost(host) || len(urls) == 0 {
		return
	}
	_, hostPort, _ := strings.Cut(urls[0], ":") // stun:IP:PORT
	relay, _, err := net.SplitHostPort(hostPort)
	if err != nil || isLoopbackHost(relay) {
		return
	}
	log.Warn("the TURN server listens on loopback only, but tells peers to reach it at another address, where nothing answers: listen there or on every address (-turn-addr :3478), or hand out a loopback address for local tests (-turn-public-ip 127.0.0.1)",
		"turn_addr", cfg.turnAddr, "public_ip", relay)
}

// unreachableRanges are the address ranges that peers on the internet
// cannot reach a relay at, besides loopback and the private ranges.
var unreachableRanges = []struct {
	prefix netip.Prefix
	what   string
}{
	{netip.MustParsePrefix("192.0.2.0/24"), "a documentation range (RFC 5737)"},
	{netip.MustParsePrefix("198.51.100.0/24"), "a documentation range (RFC 5737)"},
	{netip.MustParsePrefix("203.0.113.0/24"), "a documentation range (RFC 5737)"},
	{netip.MustParsePrefix("2001:db8::/32"), "a documentation range (RFC 3849)"},
	{netip.MustParsePrefix("100.64.0.0/10"), "shared address space (RFC 6598, carrier-grade NAT)"},
}

// unreachableRelay says why peers on the internet cannot reach a relay
// at ip, or "" when they can.
func unreachableRelay(ip netip.Addr) string {
	ip = ip.Unmap()
	switch {
	case ip.IsLoopback():
		return "loopback"
	case ip.IsPrivate():
		return "a private address"
	case ip.IsLinkLocalUnicast():
		return "link-local"
	}
	for _, r := range unreachableRanges {
		if r.prefix.Contains(ip) {
			return r.what
		}
	}
	return ""
}

// warnUnreachableTURN warns when the relay address that the embedded TURN
// server hands out (urls, its Server.URLs: chosen by -turn-public-ip, else
// the host's first non-loopback address) is one that peers on the internet
// cannot reach: loopback, private, link-local, shared (CGNAT) or a
// documentation range. A loopback address with -turn-addr on loopback too
// is the setup for local tests (warnLoopbackTURN advises it): no warning.
func warnUnreachableTURN(log *slog.Logger, cfg config, urls []string) {
	if len(urls) == 0 {
		return
	}
	_, hostPort, _ := strings.Cut(urls[0], ":") // stun:IP:PORT
	host, _, err := net.SplitHostPort(hostPort)
	if err != nil {
		return
	}
	ip, err := netip.ParseAddr(host)
	if err != nil {
		return
	}
	why := unreachableRelay(ip)
	if why == "" {
		return
	}
	if listen, _, err := net.SplitHostPort(cfg.turnAddr); why == "loopback" && err == nil && isLoopbackHost(listen) {
		return
	}
	chosen := "the host's first non-loopback address, as -turn-public-ip is unset"
	if cfg.turnPublicIP != "" {
		chosen = "-turn-public-ip"
		if cfg.fromEnv["turn-public-ip"] {
			chosen = "TINCAN_TURN_PUBLIC_IP"
		}
	}
	log.Warn("the TURN relay address handed to peers is "+why+", which peers elsewhere on the internet cannot reach, so calls that need a relay fail: set -turn-public-ip (or TINCAN_TURN_PUBLIC_IP) to this host's public address (behind 1:1 NAT, the address the NAT maps to it)",
		"public_ip", ip.String(), "chosen_by", chosen)
}

// isLoopbackHost reports whether host (a name or an address, as in a
// listen address) is loopback.
func isLoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// openURL is the URL a person can open for the HTTP listener at addr:
// localhost when it listens on every address, the name of -addr when it
// gives one, else the address.
func openURL(cfg config, addr net.Addr) string {
	scheme := "http"
	if cfg.tlsCert != "" {
		scheme = "https"
	}
	host, port, err := net.SplitHostPort(addr.String())
	if err != nil {
		return scheme + "://" + addr.String() + "/"
	}
	if name, _, err := net.SplitHostPort(cfg.addr); err == nil && name != "" {
		if _, err := netip.ParseAddr(name); err != nil {
			host = name // a host name, as the operator wrote it
		}
	}
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "localhost"
	}
	return scheme + "://" + net.JoinHostPort(host, port) + "/"
}
