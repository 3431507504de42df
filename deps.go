//go:build tools

package main

import (
	_ "github.com/chromedp/chromedp"
	_ "github.com/julienschmidt/httprouter"
	_ "github.com/pion/turn/v5"
	_ "github.com/pion/webrtc/v4"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/r3labs/sse/v2"
	_ "go.etcd.io/bbolt"
	_ "go.uber.org/goleak"
	_ "golang.org/x/crypto/bcrypt"
)
