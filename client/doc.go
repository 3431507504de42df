// Package client is the Go client of tincan, the WebRTC signaling server:
// for peers and bots that join rooms (a pion/webrtc program, a test, a
// recorder), and for the application's backend that mints join tokens,
// verifies webhooks and calls the admin API. It uses the standard library
// only, plus golang-jwt for MintJoinToken.
//
// A member joins, sends and receives:
//
//	c, _ := client.New("https://signal.example.com")
//	m, err := c.Join(ctx, "standup", client.JoinOptions{JoinToken: jwt})
//	id, err := m.Send(ctx, map[string]any{"type": "offer", "sdp": sdp, "to": peer}, nil)
//	for msg, err := range m.Receive(ctx, nil) { … }
//	m.Leave(ctx)
//
// What it promises, on top of the server's durability:
//
//   - Send returns once the message is durable, and stores it once however
//     often it is retried: every call carries an Idempotency-Key, and network
//     failures, 408, 429 and 5xx are retried with it (Retry-After honoured).
//   - Receive delivers each message once, in id order, across broken
//     connections, proxies' timeouts and server restarts: it resumes from the
//     last id it delivered (Last-Event-ID, or since=). It receives over
//     Server-Sent Events and falls back to long-poll where a proxy holds the
//     stream back, and acknowledges what arrived so that the server can
//     prune it.
//   - Refusals are *Error, carrying the problem+json code: use errors.Is with
//     ErrRoomFull, ErrKicked and the other sentinels.
//
// The wire protocol is docs/api.md in the tincan repository; the client
// needs nothing beyond it.
package client
