package turn

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
)

// deniedPeers are the peer prefixes a relay refuses by default: addresses that
// reach the server host itself or networks behind it, and reserved ranges.
// Addresses are compared after unmapping IPv4-mapped IPv6 forms (coturn's
// CVE-2026-27624 was a mapped address slipping past such a list).
var deniedPeers = []netip.Prefix{
	netip.MustParsePrefix("0.0.0.0/8"),       // "this network"; 0.0.0.0 reaches loopback
	netip.MustParsePrefix("10.0.0.0/8"),      // RFC 1918
	netip.MustParsePrefix("100.64.0.0/10"),   // CGNAT, RFC 6598
	netip.MustParsePrefix("127.0.0.0/8"),     // loopback
	netip.MustParsePrefix("169.254.0.0/16"),  // link-local, cloud metadata
	netip.MustParsePrefix("172.16.0.0/12"),   // RFC 1918
	netip.MustParsePrefix("192.0.0.0/24"),    // IETF protocol assignments
	netip.MustParsePrefix("192.0.2.0/24"),    // TEST-NET-1
	netip.MustParsePrefix("192.88.99.0/24"),  // deprecated 6to4 relay anycast
	netip.MustParsePrefix("192.168.0.0/16"),  // RFC 1918
	netip.MustParsePrefix("198.18.0.0/15"),   // benchmarking
	netip.MustParsePrefix("198.51.100.0/24"), // TEST-NET-2
	netip.MustParsePrefix("203.0.113.0/24"),  // TEST-NET-3
	netip.MustParsePrefix("224.0.0.0/4"),     // multicast
	netip.MustParsePrefix("240.0.0.0/4"),     // reserved, broadcast
	netip.MustParsePrefix("::/96"),           // unspecified, loopback, IPv4-compatible
	netip.MustParsePrefix("64:ff9b::/96"),    // NAT64
	netip.MustParsePrefix("64:ff9b:1::/48"),  // local-use NAT64
	netip.MustParsePrefix("100::/64"),        // discard-only
	netip.MustParsePrefix("2001:db8::/32"),   // documentation
	netip.MustParsePrefix("2002::/16"),       // 6to4, embeds IPv4 addresses
	netip.MustParsePrefix("fc00::/7"),        // unique local
	netip.MustParsePrefix("fe80::/10"),       // link-local
	netip.MustParsePrefix("fec0::/10"),       // deprecated site-local
	netip.MustParsePrefix("ff00::/8"),        // multicast
}

// PeerAllowed reports whether a TURN client may relay to peer address addr.
//
// The address is first normalised: an IPv6 zone is dropped and an
// IPv4-mapped IPv6 address (::ffff:a.b.c.d) is treated as the IPv4 address
// it carries. A prefix in allow that contains it admits it (an operator's
// allow-list beats the deny list). Otherwise loopback (127.0.0.0/8, ::1) is
// admitted only when allowLoopback is set, and every other address in the
// deny list (unspecified, private, CGNAT, link-local, unique local,
// multicast, NAT64, 6to4, documentation and other reserved ranges) is
// refused. The zero Addr is refused.
func PeerAllowed(addr netip.Addr, allowLoopback bool, allow []netip.Prefix) bool {
	a := normalize(addr)
	if !a.IsValid() {
		return false
	}
	if prefixesContain(allow, a) {
		return true
	}
	if a.IsLoopback() {
		return allowLoopback
	}
	for _, p := range deniedPeers {
		if p.Contains(a) {
			return false
		}
	}
	return true
}

// normalize drops a zone and unmaps an IPv4-mapped IPv6 address:
// netip.Prefix.Contains is false for zoned addresses and never matches a
// mapped address against an IPv4 prefix.
func normalize(a netip.Addr) netip.Addr {
	return a.WithZone("").Unmap()
}

// prefixesContain reports whether one of ps contains the normalised address
// a. A prefix written in IPv4-mapped form (::ffff:10.0.0.0/104) is matched
// as the IPv4 prefix it denotes.
func prefixesContain(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Addr().Is4In6() && p.Bits() >= 96 {
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		if p.Masked().Contains(a) {
			return true
		}
	}
	return false
}

// FirstNonLoopbackIP returns the address the embedded server announces when
// no public IP is configured: the first IPv4 address of an up, non-loopback
// interface that is not link-local, else the first such global IPv6
// address. It returns an error when the host has none.
func FirstNonLoopbackIP() (netip.Addr, error) {
	ifaces, err := net.Interfaces()
	if err != nil {
		return netip.Addr{}, fmt.Errorf("list network interfaces: %w", err)
	}
	var v6 netip.Addr
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 || ifc.Flags&net.FlagLoopback != 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			ipn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(ipn.IP)
			if !ok {
				continue
			}
			ip = ip.Unmap()
			switch {
			case ip.IsLoopback(), ip.IsLinkLocalUnicast(), ip.IsUnspecified(), ip.IsMulticast():
			case ip.Is4():
				return ip, nil
			case !v6.IsValid():
				v6 = ip
			}
		}
	}
	if v6.IsValid() {
		return v6, nil
	}
	return netip.Addr{}, errors.New("no non-loopback address found; set the public IP explicitly")
}

// peerPolicy is the server's complete relay policy: PeerAllowed plus the
// host's own addresses. The host's addresses are refused as peers (they
// would reach services such as our own HTTP port), except the relay address
// itself, which a relayed peer must reach to talk to another relayed peer:
// for it, the data path admits only ports of the relay range.
type peerPolicy struct {
	allowLoopback bool
	allow         []netip.Prefix
	relayIP       netip.Addr          // normalised public relay address
	own           map[netip.Addr]bool // normalised addresses of this host
	portMin       uint16
	portMax       uint16
}

// verdict reports whether a may be a peer, and whether it is the relay
// address admitted only for relay-range ports.
func (p *peerPolicy) verdict(addr netip.Addr) (ok, relayPortsOnly bool) {
	a := normalize(addr)
	if !a.IsValid() {
		return false, false
	}
	if prefixesContain(p.allow, a) {
		return true, false
	}
	if a.IsLoopback() && p.allowLoopback {
		return true, false
	}
	if a == p.relayIP && !a.IsLoopback() {
		return true, true
	}
	if p.own[a] {
		return false, false
	}
	return PeerAllowed(a, p.allowLoopback, nil), false
}

// permit is the permission check (CreatePermission, ChannelBind).
func (p *peerPolicy) permit(ip netip.Addr) bool {
	ok, _ := p.verdict(ip)
	return ok
}

// permitDest is the data path check for one datagram to dst.
func (p *peerPolicy) permitDest(dst netip.AddrPort) bool {
	ok, relayPortsOnly := p.verdict(dst.Addr())
	if !ok {
		return false
	}
	if relayPortsOnly {
		return dst.Port() >= p.portMin && dst.Port() <= p.portMax
	}
	return true
}

// hostAddrs returns the normalised addresses of this host's interfaces.
func hostAddrs() map[netip.Addr]bool {
	own := make(map[netip.Addr]bool)
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return own
	}
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(ipn.IP); ok {
				own[normalize(ip)] = true
			}
		}
	}
	return own
}
