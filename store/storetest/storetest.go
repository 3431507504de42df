// Package storetest is the conformance suite of store.Store: the promises
// written in store/store.go, checked against a real engine. Every engine
// runs it from a test of its own:
//
//	func TestConformance(t *testing.T) {
//		storetest.Run(t, func(t *testing.T) storetest.Opener {
//			path := filepath.Join(t.TempDir(), "conformance.db")
//			return func(opts store.Options) (store.Store, error) {
//				return boltstore.Open(path, boltstore.Options{Options: opts})
//			}
//		})
//	}
//
// The suite checks what a client relies on, through the interface only: it
// never looks inside the backing state. Where a promise leaves room for
// more than one reading, the test says which one it holds the engine to.
//
// Timing: the suite uses short client timeouts (a few hundred
// milliseconds) so that silent members go quickly, but it waits up to
// several seconds for anything that must happen, and a check that something
// must not have happened yet is made only when the machine was fast enough
// for the answer to mean something. A slow machine makes the suite slower,
// never wrong.
package storetest

import (
	"testing"

	"github.com/tincan/tincan/store"
)

// Opener opens the engine under test on one backing state (a bbolt file,
// an etcd prefix) with the given rules. The suite closes every store it
// opens. Opening again after Close is a restart: the new store must find
// everything the closed one made durable. The rules may differ from one
// opening to the next (a test may shorten the client timeout for the
// restart); the state is the same.
type Opener func(opts store.Options) (store.Store, error)

// Run runs the suite as subtests of t, one group per part of the contract
// (Join, Leave, Append, Read, Prune, IDs, Subscribe, Presence, Restart,
// Lifecycle, Apps), each test independent of the others. The tests of a group
// run in parallel with each other; Run returns when all have finished.
//
// newEngine is called once by every test, from that test's goroutine, and
// returns an Opener on fresh, empty backing state; it may use t (for
// t.TempDir, t.Cleanup, t.Fatal) and must be safe to call from parallel
// tests.
func Run(t *testing.T, newEngine func(t *testing.T) Opener) {
	for _, g := range groups {
		t.Run(g.name, func(t *testing.T) {
			for _, c := range g.tests {
				t.Run(c.name, func(t *testing.T) {
					t.Parallel()
					c.run(t, newEngine(t))
				})
			}
		})
	}
}

// test is one subtest of the suite.
type test struct {
	name string
	run  func(t testing.TB, open Opener)
}

type group struct {
	name  string
	tests []test
}

var groups = []group{
	{"Join", []test{
		{"FirstMember", testJoinFirstMember},
		{"PeersInJoinOrder", testJoinPeersInJoinOrder},
		{"PeerJoinedEvent", testJoinPeerJoinedEvent},
		{"Capacity", testJoinCapacity},
		{"Password", testJoinPassword},
		{"PasswordRace", testJoinPasswordRace},
		{"Resume", testJoinResume},
		{"TooManyRooms", testJoinTooManyRooms},
		{"Profile", testJoinProfile},
		{"ResumeByIdentity", testJoinResumeByIdentity},
	}},
	{"Leave", []test{
		{"PeerLeft", testLeavePeerLeft},
		{"LastMemberDeletesRoom", testLeaveLastMemberDeletesRoom},
	}},
	{"Append", []test{
		{"Broadcast", testAppendBroadcast},
		{"Direct", testAppendDirect},
		{"KeptForNextJoiner", testAppendKeptForNextJoiner},
		{"Idempotency", testAppendIdempotency},
		{"Concurrent", testAppendConcurrent},
		{"TooManyMessages", testAppendTooManyMessages},
		{"LimitCountsRetainedOnly", testAppendLimitCountsRetainedOnly},
		{"Batch", testAppendBatch},
		{"BatchAllOrNothing", testAppendBatchAllOrNothing},
		{"BatchIdempotent", testAppendBatchIdempotent},
		{"BatchKeptForNextJoiner", testAppendBatchKeptForNextJoiner},
		{"FromServer", testAppendFromServer},
	}},
	{"Read", []test{
		{"AfterAndLimit", testReadAfterAndLimit},
		{"Acknowledge", testReadAcknowledge},
		{"TTL", testReadTTL},
	}},
	{"Prune", []test{
		{"Acknowledged", testPruneAcknowledged},
		{"LeftRecipients", testPruneLeftRecipients},
		{"KeptForNextJoiner", testPruneKeptForNextJoiner},
		{"OnItsOwn", testPruneOnItsOwn},
	}},
	{"IDs", []test{
		{"NeverReused", testIDsNeverReused},
	}},
	{"Subscribe", []test{
		{"EachChange", testSubscribeEachChange},
		{"NoGapsNoDuplicates", testSubscribeNoGapsNoDuplicates},
		{"Removal", testSubscribeRemoval},
		{"Cancel", testSubscribeCancel},
	}},
	{"Presence", []test{
		{"SilentMemberRemovedOnce", testPresenceSilentMemberRemovedOnce},
		{"HoldKeepsMember", testPresenceHoldKeepsMember},
		{"TouchExtends", testPresenceTouchExtends},
		{"RestartGivesWholeTimeout", testPresenceRestartGivesWholeTimeout},
	}},
	{"Restart", []test{
		{"KeepsEverything", testRestartKeepsEverything},
		{"Acknowledgements", testRestartAcknowledgements},
	}},
	{"Lifecycle", []test{
		{"Secret", testSecret},
		{"Ping", testPing},
		{"CallsAfterClose", testCallsAfterClose},
	}},
	{"Apps", []test{
		{"OutboxOffWithoutWebhooks", testAppsOutboxOff},
		{"OutboxJoinAndLeave", testAppsOutboxJoinAndLeave},
		{"OutboxTimeout", testAppsOutboxTimeout},
		{"OutboxKickAndClose", testAppsOutboxKickAndClose},
		{"OutboxNoEventForRefusal", testAppsOutboxNoEventForRefusal},
		{"OutboxRestartAndDelivered", testAppsOutboxRestartAndDelivered},
		{"OutboxChanged", testAppsOutboxChanged},
		{"ClaimOutbox", testAppsClaimOutbox},
		{"Rooms", testAppsRooms},
		{"Room", testAppsRoom},
		{"NotFound", testAppsNotFound},
		{"Kick", testAppsKick},
		{"CloseRoom", testAppsCloseRoom},
	}},
}
