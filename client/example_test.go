package client_test

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"log"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/tincan/tincan/client"
)

// Two members of a room: one sends, the other receives. (exampleURL is a
// tincan server, "http://localhost:8080" when you run `go run .`.)
func Example() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.New(exampleURL)
	if err != nil {
		log.Fatal(err)
	}
	alice, err := c.Join(ctx, "example", client.JoinOptions{})
	if err != nil {
		log.Fatal(err)
	}
	bob, err := c.Join(ctx, "example", client.JoinOptions{})
	if err != nil {
		log.Fatal(err)
	}
	if _, err := bob.Send(ctx, map[string]string{"type": "chat", "text": "hello, alice"}, nil); err != nil {
		log.Fatal(err)
	}
	for msg, err := range alice.Receive(ctx, nil) {
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(msg.Type(), msg.From() == bob.ClientID)
		if msg.Type() == "chat" {
			break
		}
	}
	bob.Leave(ctx)
	alice.Leave(ctx)
	// Output:
	// peer-joined false
	// chat true
}

// A receive loop resumes by itself after a broken connection or a server
// restart; it ends for good only when the member is gone.
func ExampleMember_Receive() {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, _ := client.New(exampleURL)
	m, err := c.Join(ctx, "example-receive", client.JoinOptions{})
	if err != nil {
		log.Fatal(err)
	}
	other, _ := c.Join(ctx, "example-receive", client.JoinOptions{})
	other.Leave(ctx)
	for msg, err := range m.Receive(ctx, &client.ReceiveOptions{Transport: client.LongPoll}) {
		if err != nil {
			fmt.Println("gone:", err)
			return
		}
		var ev struct{ Type, Reason string }
		msg.Decode(&ev)
		fmt.Println(strings.TrimSpace(ev.Type + " " + ev.Reason))
		if ev.Type == "peer-left" {
			break
		}
	}
	m.Leave(ctx)
	// Output:
	// peer-joined
	// peer-left left
}

// An application's backend admits its users with join tokens, for a
// server run with -auth jwt and the same secret in TINCAN_JWT_SECRET.
func ExampleMintJoinToken() {
	secret := []byte("at-least-32-bytes-of-secret-for-hs256")
	token, err := client.MintJoinToken(secret, "HS256", client.JoinClaims{
		Subject: "user-42", Room: "standup", TTL: time.Minute, Name: "Ada",
	})
	if err != nil {
		log.Fatal(err)
	}
	// The browser joins with it: join('standup', { token }) in tincan.js,
	// or client.JoinOptions{JoinToken: token} in Go.
	fmt.Println(strings.Count(token, "."))
	// Output: 2
}

// A webhook receiver checks every request before it trusts it.
func ExampleVerifyWebhook() {
	const secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
	http.HandleFunc("/hooks/tincan", func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
		if err != nil {
			return
		}
		ev, err := client.VerifyWebhook(secret, r.Header, body, time.Now())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		log.Printf("%s in %s (%d now)", ev.Type, ev.Data.Room, ev.Data.Occupants)
	})

	// What tincan sends, signed as the Standard Webhooks say:
	body := []byte(`{"type":"member.joined","timestamp":"2026-12-06T09:10:12.345Z","data":{"room":"abc","client_id":"q06SL_jB7euYaz22","identity":"alice","occupants":2,"seq":7}}`)
	now := time.Now()
	key, _ := base64.StdEncoding.DecodeString(strings.TrimPrefix(secret, "whsec_"))
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte("msg_1_7." + strconv.FormatInt(now.Unix(), 10) + "."))
	mac.Write(body)
	h := http.Header{}
	h.Set("webhook-id", "msg_1_7")
	h.Set("webhook-timestamp", strconv.FormatInt(now.Unix(), 10))
	h.Set("webhook-signature", "v1,"+base64.StdEncoding.EncodeToString(mac.Sum(nil)))

	ev, err := client.VerifyWebhook(secret, h, body, now)
	fmt.Println(ev.Type, ev.Data.Identity, ev.Data.Occupants, err)
	_, err = client.VerifyWebhook(secret, h, append(body, ' '), now)
	fmt.Println(err)
	// Output:
	// member.joined alice 2 <nil>
	// tincan: webhook not verified: no signature matches
}
