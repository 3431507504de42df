//go:build race

package main

// raceDetector: the tests run under the race detector, which makes the
// server several times slower. Only a test that asserts a time bound
// taken from a promise looks at it, to widen that bound.
const raceDetector = true
