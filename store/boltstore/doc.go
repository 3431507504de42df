// Package boltstore is the single-node engine of store.Store: tincan's
// durable state in one bbolt file. It is the only package that knows bbolt.
// Its promises are store.Store's; the conformance suite in storetest proves
// them, and this package's own tests cover what is bbolt's alone (group
// commit, the file, the caches).
//
// # Writes
//
// Every change goes through one commit loop (store.go): concurrent writers
// queue up while a transaction is being fsync'd and the next transaction
// takes them all, so many posts share one fsync (group commit). A write is
// acknowledged to its caller only after its transaction committed to disk.
// A write that breaks the shared transaction (not a refusal: those write
// nothing) makes the loop retry the batch one write per transaction.
//
// # The file
//
//	meta                     sequence for message ids and event seqs; room count; secrets
//	rooms/<room>             "info" -> roomInfo (JSON: password hash, join counter, first id,
//	                         created, newest join or leave)
//	rooms/<room>/members     client id -> memberRecord (rooms.go: token hash, join place,
//	                         acknowledged id, joined, profile; 48 bytes in older files)
//	msgs                     big-endian id -> message record (record.go)
//	idem                     big-endian message id -> unix nanos, room \x00 client id \x00 key (idem.go)
//	outbox                   big-endian seq -> webhook event (outbox.go), with Options.Webhooks
//
// Messages of every room share one bucket keyed by a global sequence, so a
// group commit appends to the same few pages however many rooms it touches,
// and an id is never reused, not even by a room deleted and made again.
// Idempotency keys are stored under their message's id for the same reason.
// Webhook events take their seq from the same sequence, and are written in
// the transaction of the change they report (a join, a leave, a removal
// for silence, Kick, CloseRoom): one commit has both or neither.
//
// # What is kept in memory
//
// Reads never wait for the commit loop and most need no read transaction,
// because the file is mirrored in memory. Every mirror of the file is
// rebuilt from it at Open (loadIndex, startPresence), and changes only
// after the commit that changes the file (Store.afterCommit), so it never
// shows what is not on disk. Within a transaction being built, writes later
// in the same group commit see earlier ones through staged (index.go).
//
//   - index (index.go): per room, the ids of its messages, ascending, and
//     whether it may hold messages kept for the next joiner. Mirrors msgs;
//     changed by appends, prunes, claims and room deletion. Read and Prune
//     visit a room's ids through it instead of scanning msgs.
//   - delivery cache (cache.go): the encoded records of the newest messages,
//     up to Options.RecentBytes, so that live delivery reads from memory. A
//     bounded subset of msgs; a record that changes on disk (claimed by a
//     joiner) is replaced, one deleted leaves it. Empty after Open: the
//     first reads come from disk.
//   - directory (directory.go): token hash -> member, and member -> highest
//     acknowledged id. Mirrors the members buckets, plus acknowledgements
//     not yet written (unsaved, messages.go), which reach the disk within
//     Options.AckFlush. Authenticate and Read answer from it. A resume by
//     identity finds its member in the transaction instead (findIdentity,
//     rooms.go), so that it sees a member who joined earlier in the same
//     group commit; it then changes the member's token hash here.
//   - idempotency keys (idem.go): room -> client id and key -> message id.
//     Mirrors idem.
//   - newest message per room (index.go, index.newest): its time, for a
//     room's last activity (Rooms, Room), so that a post need not write
//     the room's info. Rebuilt at Open from the messages still in msgs.
//   - orphans (orphans.go): ids of messages and keys of deleted rooms still
//     in the file, deleted by a sweep every Options.OrphanSweep. Rebuilt at
//     Open from records whose room is gone or older than the room's First.
//
// The outbox has no mirror: its deliverer reads it a page at a time.
//
// The rest is not a mirror of the file but the engine's live state, lost
// on a restart by design: presence (store.Presence: who is listening, for
// the timeout; every member starts afresh at Open), the count of holds per
// member (Room's Listening), the subscriptions of live readers
// (store.Notifier) and of the outbox's deliverer (OutboxChanged), notified
// by the commit loop after the mirrors show a commit, and the tombstones
// of members removed by Kick or CloseRoom (apps.go: token hash and member
// -> ErrKicked or ErrRoomClosed, kept twice the client timeout; the
// promise lets a restart forget them).
package boltstore
