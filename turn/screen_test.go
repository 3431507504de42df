package turn

import (
	"testing"

	"github.com/pion/stun/v4"
)

// screenSeeds are STUN messages of the kinds pion's server parses.
func screenSeeds(t testing.TB) [][]byte {
	allocate := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodAllocate, stun.ClassRequest),
		requestedUDP, stun.NewUsername("1700000000:alice"), stun.NewRealm("tincan"), stun.NewNonce("n"),
		stun.NewLongTermIntegrity("1700000000:alice", "tincan", "pw"), stun.Fingerprint)
	emptyPeer := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodCreatePermission, stun.ClassRequest),
		setterFunc(func(m *stun.Message) error { m.Add(stun.AttrXORPeerAddress, nil); return nil }),
		stun.NewUsername("1700000000:alice"), stun.NewRealm("tincan"), stun.NewNonce("n"),
		stun.NewLongTermIntegrity("1700000000:alice", "tincan", "pw"))
	send := stun.MustBuild(stun.TransactionID, stun.NewType(stun.MethodSend, stun.ClassIndication),
		setterFunc(func(m *stun.Message) error { m.Add(stun.AttrData, []byte("payload")); return nil }),
		&stun.XORMappedAddress{IP: []byte{8, 8, 8, 8}, Port: 53})
	return [][]byte{
		allocate.Raw,
		emptyPeer.Raw,
		send.Raw,
		stun.MustBuild(stun.TransactionID, stun.BindingRequest).Raw,
		{0x40, 0x00, 0x00, 0x04, 1, 2, 3, 4}, // ChannelData
		{0x00, 0x01, 0x00, 0x00},
		{},
	}
}

func TestScreenPacket(t *testing.T) {
	for i, b := range screenSeeds(t) {
		if !screenPacket(b) {
			t.Errorf("seed %d: screenPacket = false", i)
		}
	}
}

// FuzzParseLikeServer feeds arbitrary packets to the pion/stun decoders
// pion's TURN server uses (without the recover of screenPacket), looking
// for panics like GHSA-34rh-wp3j-6cxc.
func FuzzParseLikeServer(f *testing.F) {
	for _, b := range screenSeeds(f) {
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		parseLikeServer(b)
	})
}
