package main

import (
	"fmt"
	"io"
	"runtime/debug"

	"github.com/prometheus/client_golang/prometheus"
)

// buildInfo is what the binary knows of its own build, from
// runtime/debug.ReadBuildInfo: the module version (a release tag for `go
// install …@v1.2.3`, a pseudo-version built from the VCS for `go build` in
// a checkout, "+dirty" when it had changes; "(devel)" without VCS
// information) and the VCS revision ("unknown" without it).
type buildInfo struct {
	version   string
	revision  string
	modified  bool // the checkout had changes not committed
	goVersion string
}

func readBuildInfo() buildInfo {
	b := buildInfo{version: "(devel)", revision: "unknown", goVersion: "unknown"}
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return b
	}
	b.goVersion = info.GoVersion
	if info.Main.Version != "" {
		b.version = info.Main.Version
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			b.revision = s.Value
		case "vcs.modified":
			b.modified = s.Value == "true"
		}
	}
	return b
}

// printVersion is `tincan -version` and `tincan version`: one line, such
// as "tincan v0.0.0-20260101120000-0123456789ab revision 0123456789ab…
// (modified) go1.26.8".
func printVersion(w io.Writer, b buildInfo) {
	modified := ""
	if b.modified {
		modified = " (modified)"
	}
	fmt.Fprintf(w, "tincan %s revision %s%s %s\n", b.version, b.revision, modified, b.goVersion)
}

// registerBuildInfo exports b as the gauge tincan_build_info{version,
// revision}, always 1.
func registerBuildInfo(reg prometheus.Registerer, b buildInfo) {
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "tincan_build_info", Help: "Always 1; its labels are the module version and the VCS revision of the binary.",
	}, []string{"version", "revision"})
	g.WithLabelValues(b.version, b.revision).Set(1)
	reg.MustRegister(g)
}
