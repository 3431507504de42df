package main

// The Dockerfile, checked without Docker: its instructions are read and
// held to what the image must be (two stages, a non-root user, the db in
// the /data volume, the ports), and its build command is run here with
// the same environment and flags, so that the binary it makes is known to
// be static.

import (
	"context"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// instruction is one Dockerfile instruction: its keyword in upper case and
// the rest of its line, continuation lines joined.
type instruction struct {
	Cmd, Args string
	Line      int // where it begins, for messages
}

// stage is the instructions from one FROM up to the next.
type stage struct {
	From, Name string // the base image and the AS name ("" without one)
	Body       []instruction
}

// readDockerfile splits the Dockerfile at path into its build stages.
// It knows what this repository's Dockerfile uses: comments, blank lines,
// lines continued with a trailing backslash.
func readDockerfile(t *testing.T, path string) []stage {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var (
		stages  []stage
		pending string
		begin   int
	)
	for i, line := range strings.Split(string(data), "\n") {
		trimmed := strings.TrimSpace(line)
		if pending == "" && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if pending == "" {
			begin = i + 1
		}
		if cont, ok := strings.CutSuffix(trimmed, `\`); ok {
			pending += cont + " "
			continue
		}
		whole := pending + trimmed
		pending = ""
		cmd, args, _ := strings.Cut(whole, " ")
		in := instruction{Cmd: strings.ToUpper(cmd), Args: strings.TrimSpace(args), Line: begin}
		if in.Cmd == "FROM" {
			f := strings.Fields(in.Args)
			st := stage{From: f[0]}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			stages = append(stages, st)
			continue
		}
		if len(stages) == 0 {
			t.Fatalf("Dockerfile:%d: %s before the first FROM", in.Line, in.Cmd)
		}
		stages[len(stages)-1].Body = append(stages[len(stages)-1].Body, in)
	}
	return stages
}

// all returns the stage's instructions with keyword cmd.
func (s stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Body {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// env is what the stage's ENV instructions set (KEY=value, or the old
// "KEY value" form).
func (s stage) env(t *testing.T) map[string]string {
	t.Helper()
	env := map[string]string{}
	for _, in := range s.all("ENV") {
		if !strings.Contains(strings.Fields(in.Args)[0], "=") {
			k, v, _ := strings.Cut(in.Args, " ")
			env[k] = strings.TrimSpace(v)
			continue
		}
		for _, kv := range strings.Fields(in.Args) {
			k, v, _ := strings.Cut(kv, "=")
			env[k] = strings.Trim(v, `"`)
		}
	}
	return env
}

// execForm reads an instruction written in exec form, ["a", "b"], failing
// t when it is not.
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var argv []string
	if err := json.Unmarshal([]byte(in.Args), &argv); err != nil || len(argv) == 0 {
		t.Fatalf("Dockerfile:%d: %s %s: want the exec form [\"…\", …]", in.Line, in.Cmd, in.Args)
	}
	return argv
}

// TestDockerfile holds the image's recipe to what the README promises:
// a builder stage that makes a static binary, a runtime stage that runs it
// as a non-root user with the db in the /data volume, and the ports of
// HTTP, STUN/TURN and the relay range.
func TestDockerfile(t *testing.T) {
	stages := readDockerfile(t, "Dockerfile")
	if len(stages) != 2 {
		t.Fatalf("Dockerfile has %d stages, want 2 (a builder and the runtime image)", len(stages))
	}
	build, final := stages[0], stages[1]
	if build.Name == "" || !strings.HasPrefix(build.From, "golang:") {
		t.Errorf("first stage FROM %s AS %q: want a golang image, named", build.From, build.Name)
	}
	if strings.HasPrefix(final.From, "golang:") {
		t.Errorf("runtime stage FROM %s: want a minimal image, not the toolchain", final.From)
	}

	// The builder: its go build command, and where the binary goes.
	argv, out := dockerBuildCommand(t, build)
	if !slices.Contains(argv, "-trimpath") {
		t.Errorf("go build %v: no -trimpath", argv)
	}
	if got := build.env(t)["CGO_ENABLED"]; got != "0" {
		t.Errorf("builder stage: CGO_ENABLED=%q, want 0 (a static binary)", got)
	}

	// The runtime stage runs what the builder made.
	var binary string
	for _, in := range final.all("COPY") {
		f := strings.Fields(in.Args)
		if slices.Contains(f, "--from="+build.Name) && f[len(f)-2] == out {
			binary = f[len(f)-1]
		}
	}
	if binary == "" {
		t.Errorf("runtime stage: no COPY --from=%s of %s", build.Name, out)
	}
	entry := final.all("ENTRYPOINT")
	if len(entry) != 1 || execForm(t, entry[0])[0] != binary {
		t.Errorf("runtime stage: ENTRYPOINT %v, want the exec form running %s", entry, binary)
	}

	users := final.all("USER")
	if len(users) == 0 {
		t.Error("runtime stage: no USER (it would run as root)")
	} else if user, _, _ := strings.Cut(users[len(users)-1].Args, ":"); user == "root" || user == "0" {
		t.Errorf("runtime stage: USER %s, want a non-root user", users[len(users)-1].Args)
	}

	var volumes []string
	for _, in := range final.all("VOLUME") {
		volumes = append(volumes, strings.Fields(strings.Trim(in.Args, "[]"))...)
	}
	if !slices.ContainsFunc(volumes, func(v string) bool { return strings.Trim(v, `",`) == "/data" }) {
		t.Errorf("runtime stage: VOLUME %v, want /data", volumes)
	}
	// The db in the volume, whatever flags a docker run adds: the
	// environment twin of -db, which every flag list leaves alone.
	if db := final.env(t)["TINCAN_DB"]; !strings.HasPrefix(db, "/data/") {
		t.Errorf("runtime stage: TINCAN_DB=%q, want the db under /data", db)
	}

	cfg, err := parseFlags([]string{"tincan"}, func(string) string { return "" }, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	_, httpPort, _ := strings.Cut(cfg.addr, ":")
	_, turnPort, _ := strings.Cut(cfg.turnAddr, ":")
	var exposed []string
	for _, in := range final.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.Args)...)
	}
	for _, want := range []string{httpPort + "/tcp", turnPort + "/udp", turnPort + "/tcp", cfg.turnRelayPorts + "/udp"} {
		if !slices.Contains(exposed, want) {
			t.Errorf("runtime stage: EXPOSE %v lacks %s (the defaults of -addr, -turn-addr, -turn-relay-ports)", exposed, want)
		}
	}
}

// dockerBuildCommand finds the builder stage's go build command (a RUN in
// exec form) and returns its arguments after "go" and the path it writes
// the binary to (-o).
func dockerBuildCommand(t *testing.T, build stage) (argv []string, out string) {
	t.Helper()
	for _, in := range build.all("RUN") {
		if !strings.Contains(in.Args, "go") || !strings.Contains(in.Args, "build") || !strings.HasPrefix(in.Args, "[") {
			continue
		}
		argv = execForm(t, in)
		if len(argv) < 2 || argv[0] != "go" || argv[1] != "build" {
			continue
		}
		if i := slices.Index(argv, "-o"); i > 0 && i+1 < len(argv) {
			return argv[1:], argv[i+1]
		}
		t.Fatalf("Dockerfile:%d: %v: no -o for the binary", in.Line, argv)
	}
	t.Fatal(`builder stage: no RUN ["go", "build", …]`)
	return nil, ""
}

// TestDockerfileBinaryIsStatic builds the binary as the Dockerfile's
// builder does (its ENV and its go build flags; only the output path is
// changed) and checks that it needs nothing from the image it runs in: no
// program interpreter, no dynamic section. Then it runs it.
func TestDockerfileBinaryIsStatic(t *testing.T) {
	stages := readDockerfile(t, "Dockerfile")
	if len(stages) < 2 {
		t.Fatalf("Dockerfile has %d stages", len(stages))
	}
	argv, out := dockerBuildCommand(t, stages[0])
	bin := filepath.Join(t.TempDir(), "tincan")
	argv = slices.Clone(argv)
	argv[slices.Index(argv, out)] = bin

	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Fatalf("the go command is not on PATH: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, goTool, argv...)
	cmd.Env = os.Environ()
	for k, v := range stages[0].env(t) {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	began := time.Now()
	if output, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go %v: %v\n%s", argv, err, output)
	}
	t.Logf("go %s: built in %v", strings.Join(argv, " "), time.Since(began).Round(time.Millisecond))

	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("%s is not an ELF binary: %v", bin, err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		switch p.Type {
		case elf.PT_INTERP:
			t.Error("the binary names a program interpreter (PT_INTERP): it is dynamically linked")
		case elf.PT_DYNAMIC:
			t.Error("the binary has a dynamic segment (PT_DYNAMIC): it is dynamically linked")
		}
	}
	if s := f.Section(".dynamic"); s != nil {
		t.Error("the binary has a .dynamic section")
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs shared libraries: %v", libs)
	}

	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	settings := map[string]string{}
	for _, s := range info.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" || settings["-trimpath"] != "true" {
		t.Errorf("build settings CGO_ENABLED=%q -trimpath=%q, want 0 and true", settings["CGO_ENABLED"], settings["-trimpath"])
	}

	// It runs on its own: -h prints the usage and exits 0.
	usage, err := exec.CommandContext(ctx, bin, "-h").CombinedOutput()
	if err != nil || !strings.Contains(string(usage), "-turn-relay-ports") {
		t.Errorf("%s -h: %v\n%s", bin, err, usage)
	}
}
