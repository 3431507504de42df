// Package e2e holds the end-to-end tests of tincan (test files only): they
// build the binary and run it (internal/tincantest), kill it with SIGKILL,
// stop it with SIGTERM, start it again on the same file or run several of it
// on etcd behind a balancer, and speak to it through the Go client
// (package client), as an application would. Raw HTTP is used only where a
// test checks exact statuses, headers or frames.
//
// The contract tests of the API, which drive the server in-process, are in
// the module's root (package main).
package e2e
