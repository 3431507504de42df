package turn

import (
	"net/netip"
	"testing"
)

func TestPeerAllowedDeniedRanges(t *testing.T) {
	// One or more addresses inside each denied range (first, last, and a
	// well-known one), and their IPv4-mapped forms.
	denied := []string{
		"0.0.0.0", "0.255.255.255",
		"10.0.0.1", "10.255.255.255",
		"100.64.0.1", "100.127.255.255",
		"127.0.0.1", "127.255.255.254",
		"169.254.169.254", "169.254.0.1",
		"172.16.0.1", "172.31.255.255",
		"192.0.0.1", "192.0.0.170",
		"192.0.2.1", "192.88.99.1",
		"192.168.0.1", "192.168.255.255",
		"198.18.0.1", "198.19.255.255",
		"198.51.100.7", "203.0.113.7",
		"224.0.0.1", "239.255.255.250",
		"240.0.0.1", "255.255.255.255",
		"::", "::1", "::127.0.0.1", "::a00:1",
		"64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe",
		"64:ff9b:1::1",
		"100::1",
		"2001:db8::1",
		"2002:7f00:1::1", "2002:a9fe:a9fe::1",
		"fc00::1", "fd12:3456::1", "fdff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
		"fe80::1", "febf::1",
		"fec0::1", "feff::1",
		"ff02::1", "ff0e::1",
	}
	for _, s := range denied {
		a := netip.MustParseAddr(s)
		if PeerAllowed(a, false, nil) {
			t.Errorf("PeerAllowed(%s) = true, want false", s)
		}
		if a.Is4() {
			mapped := netip.AddrFrom16(a.As16())
			if PeerAllowed(mapped, false, nil) {
				t.Errorf("PeerAllowed(%s) = true, want false (mapped form of %s)", mapped, s)
			}
		}
	}
	// Every prefix of the list: its first and last address.
	for _, p := range deniedPeers {
		first := p.Masked().Addr()
		last := lastAddr(p)
		for _, a := range []netip.Addr{first, last} {
			if PeerAllowed(a, false, nil) {
				t.Errorf("PeerAllowed(%s) = true, want false (in %s)", a, p)
			}
		}
	}
}

// lastAddr returns the last address of p.
func lastAddr(p netip.Prefix) netip.Addr {
	b := p.Masked().Addr().AsSlice()
	for i := p.Bits(); i < len(b)*8; i++ {
		b[i/8] |= 0x80 >> (i % 8)
	}
	a, _ := netip.AddrFromSlice(b)
	return a
}

func TestPeerAllowedPublic(t *testing.T) {
	for _, s := range []string{
		"8.8.8.8", "1.1.1.1", "100.63.255.255", "100.128.0.0", "172.15.255.255", "172.32.0.0",
		"192.0.1.1", "192.169.0.1", "198.17.255.255", "198.20.0.0", "223.255.255.255",
		"::ffff:8.8.8.8", "2606:4700:4700::1111", "2a00:1450:4001::1",
		"2001:4860:4860::8888", "fbff::1",
	} {
		if !PeerAllowed(netip.MustParseAddr(s), false, nil) {
			t.Errorf("PeerAllowed(%s) = false, want true", s)
		}
	}
}

func TestPeerAllowedFlags(t *testing.T) {
	allow := []netip.Prefix{
		netip.MustParsePrefix("10.1.0.0/16"),
		netip.MustParsePrefix("fd00:1::/32"),
		netip.MustParsePrefix("::ffff:192.168.7.0/120"), // mapped form of 192.168.7.0/24
		netip.MustParsePrefix("203.0.113.9/32"),
	}
	for _, tc := range []struct {
		addr          string
		allowLoopback bool
		allow         []netip.Prefix
		want          bool
	}{
		// Loopback in every form, with and without the flag.
		{"127.0.0.1", false, nil, false},
		{"127.0.0.1", true, nil, true},
		{"127.3.2.1", true, nil, true},
		{"::1", false, nil, false},
		{"::1", true, nil, true},
		{"::ffff:127.0.0.1", false, nil, false},
		{"::ffff:127.0.0.1", true, nil, true},
		// The flag admits loopback only, not what else reaches the host.
		{"0.0.0.0", true, nil, false},
		{"::", true, nil, false},
		{"::ffff:0.0.0.0", true, nil, false},
		{"10.0.0.1", true, nil, false},
		{"::ffff:10.0.0.1", false, nil, false},
		{"::ffff:10.0.0.1", true, nil, false},
		{"169.254.169.254", true, nil, false},
		// Allow prefixes beat the deny list, in plain and mapped forms.
		{"10.1.2.3", false, allow, true},
		{"::ffff:10.1.2.3", false, allow, true},
		{"10.2.0.1", false, allow, false},
		{"fd00:1::5", false, allow, true},
		{"fd00:2::5", false, allow, false},
		{"192.168.7.7", false, allow, true},
		{"192.168.8.7", false, allow, false},
		{"203.0.113.9", false, allow, true},
		{"203.0.113.10", false, allow, false},
		{"127.0.0.1", false, allow, false},
		{"127.0.0.1", false, []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}, true},
		// Zones are dropped before matching.
		{"fe80::1%eth0", false, nil, false},
		{"fe80::1%eth0", false, []netip.Prefix{netip.MustParsePrefix("fe80::/10")}, true},
		{"2606:4700::1%eth0", false, nil, true},
	} {
		if got := PeerAllowed(netip.MustParseAddr(tc.addr), tc.allowLoopback, tc.allow); got != tc.want {
			t.Errorf("PeerAllowed(%s, loopback=%v, allow=%v) = %v, want %v", tc.addr, tc.allowLoopback, tc.allow, got, tc.want)
		}
	}
	if PeerAllowed(netip.Addr{}, true, []netip.Prefix{netip.MustParsePrefix("0.0.0.0/0")}) {
		t.Error("PeerAllowed(zero Addr) = true")
	}
}

// TestPeerPolicyOwnAddresses checks the server policy around the host's
// own addresses: the public relay address is a peer on relay ports only,
// other own addresses are refused, loopback follows AllowLoopback.
func TestPeerPolicyOwnAddresses(t *testing.T) {
	relay := netip.MustParseAddr("198.51.100.20") // stands for a public address
	own := map[netip.Addr]bool{
		relay:                               true,
		netip.MustParseAddr("8.8.4.4"):      true, // a public address of another interface
		netip.MustParseAddr("127.0.0.1"):    true,
		netip.MustParseAddr("2001:4860::1"): true,
	}
	// The relay address is admitted on relay ports even inside a denied
	// range (a LAN deployment relays from a private address).
	p := &peerPolicy{relayIP: relay, own: own, portMin: 50000, portMax: 50100}
	for _, tc := range []struct {
		dst  string
		want bool
	}{
		{"198.51.100.20:50000", true},
		{"198.51.100.20:50100", true},
		{"[::ffff:198.51.100.20]:50050", true},
		{"198.51.100.20:8080", false}, // our HTTP port
		{"198.51.100.20:3478", false}, // our TURN port
		{"198.51.100.20:50101", false},
		{"8.8.4.4:50000", false},
		{"[2001:4860::1]:50000", false},
		{"127.0.0.1:50000", false},
		{"8.8.8.8:53", true},
	} {
		ap := netip.MustParseAddrPort(tc.dst)
		if got := p.permitDest(ap); got != tc.want {
			t.Errorf("permitDest(%s) = %v, want %v", tc.dst, got, tc.want)
		}
		if got, want := p.permit(ap.Addr()), tc.want || ap.Addr().Unmap() == relay; got != want {
			t.Errorf("permit(%s) = %v, want %v", ap.Addr(), got, want)
		}
	}

	// A loopback relay address is not admitted by itself: AllowLoopback decides.
	lo := netip.MustParseAddr("127.0.0.1")
	p = &peerPolicy{relayIP: lo, own: map[netip.Addr]bool{lo: true}, portMin: 50000, portMax: 50100}
	if p.permit(lo) || p.permitDest(netip.AddrPortFrom(lo, 50000)) {
		t.Error("loopback relay address admitted without AllowLoopback")
	}
	p.allowLoopback = true
	if !p.permit(lo) || !p.permitDest(netip.AddrPortFrom(lo, 8080)) {
		t.Error("loopback refused with AllowLoopback")
	}
	// The allow-list admits an own address on any port.
	p = &peerPolicy{relayIP: relay, own: own, portMin: 50000, portMax: 50100,
		allow: []netip.Prefix{netip.MustParsePrefix("198.51.100.20/32")}}
	if !p.permitDest(netip.MustParseAddrPort("198.51.100.20:8080")) {
		t.Error("allow-listed own address refused")
	}
}

func TestFirstNonLoopbackIP(t *testing.T) {
	ip, err := FirstNonLoopbackIP()
	if err != nil {
		t.Skipf("no non-loopback address here: %v", err)
	}
	if ip.IsLoopback() || ip.IsUnspecified() || ip.IsLinkLocalUnicast() || !ip.IsValid() {
		t.Errorf("FirstNonLoopbackIP() = %s", ip)
	}
}
