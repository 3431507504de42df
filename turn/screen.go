package turn

import (
	"github.com/pion/stun/v4"
)

// screenKey is a dummy key: checking MESSAGE-INTEGRITY with it walks the
// same parsing code as the real check, then fails.
var screenKey = stun.MessageIntegrity("screen")

// screenPacket reports whether a UDP packet may be handed to pion's server:
// false when parsing it the way the server does panics. pion recovers from
// no panic in its packet handlers, and a panic there would take the whole
// signaling process down (pion/stun advisory GHSA-34rh-wp3j-6cxc was one).
func screenPacket(b []byte) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	parseLikeServer(b)
	return true
}

// parseLikeServer runs the pion/stun decoders that pion's TURN server
// applies to an inbound STUN message (ChannelData is left alone: pion
// decodes it with a bounds-checked header read). Errors are ignored: only
// panics matter. It is the target of FuzzParseLikeServer.
func parseLikeServer(b []byte) {
	if len(b) >= 4 && b[0] >= 0x40 && b[0] <= 0x7f {
		return // ChannelData
	}
	m := &stun.Message{Raw: append([]byte(nil), b...)}
	if err := m.Decode(); err != nil {
		return
	}
	var (
		username stun.Username
		realm    stun.Realm
		nonce    stun.Nonce
		software stun.Software
	)
	_ = username.GetFrom(m)
	_ = realm.GetFrom(m)
	_ = nonce.GetFrom(m)
	_ = software.GetFrom(m)
	_ = m.ForEach(stun.AttrXORPeerAddress, func(m *stun.Message) error {
		var peer stun.XORMappedAddress
		return peer.GetFromAs(m, stun.AttrXORPeerAddress)
	})
	for _, t := range []stun.AttrType{
		stun.AttrRequestedTransport, stun.AttrLifetime, stun.AttrEvenPort,
		stun.AttrReservationToken, stun.AttrRequestedAddressFamily,
		stun.AttrChannelNumber, stun.AttrData, stun.AttrConnectionID,
	} {
		_, _ = m.Get(t)
	}
	_ = screenKey.Check(m)
	_ = stun.Fingerprint.Check(m)
}
