package main

import (
	"context"
	"io"

	"github.com/tincan/tincan/bench"
)

// runBench is the bench subcommand (issue 6): `tincan bench -h` lists its
// flags; BENCHMARKS.md shows how it is used.
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return bench.Run(ctx, args, stdout, stderr)
}
