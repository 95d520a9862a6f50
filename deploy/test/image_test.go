package test

import (
	"bufio"
	"debug/buildinfo"
	"debug/elf"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// instruction is one Dockerfile instruction, continuation lines joined.
type instruction struct {
	Cmd  string // upper case: FROM, RUN, ...
	Args string
	Line int
}

// stage is a build stage: its FROM and the instructions after it.
type stage struct {
	From  instruction
	Image string // after ARG substitution
	Name  string
	Insts []instruction
}

type dockerfile struct {
	Args   map[string]string // global ARGs (before the first FROM) with defaults
	Stages []stage
}

func parseDockerfile(t *testing.T) *dockerfile {
	t.Helper()
	d, err := readDockerfile()
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// readDockerfile reads and parses the repository's Dockerfile.
func readDockerfile() (*dockerfile, error) {
	b, err := os.ReadFile(filepath.Join(repoRoot, "Dockerfile"))
	if err != nil {
		return nil, err
	}
	var insts []instruction
	var cur strings.Builder
	start := 0
	for i, l := range strings.Split(string(b), "\n") {
		trimmed := strings.TrimSpace(l)
		if cur.Len() == 0 && (trimmed == "" || strings.HasPrefix(trimmed, "#")) {
			continue
		}
		if cur.Len() > 0 && strings.HasPrefix(trimmed, "#") {
			continue // a comment inside a continued instruction
		}
		if cur.Len() == 0 {
			start = i + 1
		}
		if s, ok := strings.CutSuffix(trimmed, `\`); ok {
			cur.WriteString(s + " ")
			continue
		}
		cur.WriteString(trimmed)
		cmd, args, _ := strings.Cut(cur.String(), " ")
		insts = append(insts, instruction{strings.ToUpper(cmd), strings.TrimSpace(args), start})
		cur.Reset()
	}
	d := &dockerfile{Args: map[string]string{}}
	for _, in := range insts {
		switch {
		case in.Cmd == "FROM":
			f := strings.Fields(in.Args)
			for len(f) > 0 && strings.HasPrefix(f[0], "--") {
				f = f[1:]
			}
			st := stage{From: in}
			if len(f) > 0 {
				st.Image = os.Expand(f[0], func(k string) string { return d.Args[k] })
			}
			if len(f) == 3 && strings.EqualFold(f[1], "AS") {
				st.Name = f[2]
			}
			d.Stages = append(d.Stages, st)
		case len(d.Stages) == 0 && in.Cmd == "ARG":
			k, v, _ := strings.Cut(in.Args, "=")
			d.Args[k] = v
		case len(d.Stages) > 0:
			s := &d.Stages[len(d.Stages)-1]
			s.Insts = append(s.Insts, in)
		}
	}
	if len(d.Stages) == 0 {
		return nil, errors.New("the Dockerfile has no FROM")
	}
	return d, nil
}

// final returns the image's stage, the last.
func (d *dockerfile) final() *stage { return &d.Stages[len(d.Stages)-1] }

// all returns the stage's instructions named cmd.
func (s *stage) all(cmd string) []instruction {
	var out []instruction
	for _, in := range s.Insts {
		if in.Cmd == cmd {
			out = append(out, in)
		}
	}
	return out
}

// last returns the stage's last instruction named cmd (the one in force).
func (s *stage) last(t *testing.T, cmd string) instruction {
	t.Helper()
	all := s.all(cmd)
	if len(all) == 0 {
		t.Fatalf("the image's stage (line %d) has no %s", s.From.Line, cmd)
	}
	return all[len(all)-1]
}

// execForm decodes an instruction's JSON array (exec form).
func execForm(t *testing.T, in instruction) []string {
	t.Helper()
	var v []string
	if err := json.Unmarshal([]byte(in.Args), &v); err != nil {
		t.Fatalf("line %d: %s %s is not in exec form (a JSON array): %v", in.Line, in.Cmd, in.Args, err)
	}
	return v
}

// The build stage uses the Go release of go.mod, pinned to a patch
// version, and every base image is pinned (a version or a digest;
// scratch has none).
func TestDockerfileBaseImages(t *testing.T) {
	d := parseDockerfile(t)
	gomod, err := os.ReadFile(filepath.Join(repoRoot, "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^go (\d+)\.(\d+)(?:\.(\d+))?$`).FindSubmatch(gomod)
	if m == nil {
		t.Fatal("go.mod has no go line")
	}
	goMinor := string(m[1]) + "." + string(m[2])
	goPatch, _ := strconv.Atoi(string(m[3]))

	pinned := regexp.MustCompile(`^[^@]+(:[a-z0-9._-]*\d+\.\d+[a-z0-9._-]*)?@sha256:[a-f0-9]{64}$|^[^@:]+(/[^@:]+)*:[a-z0-9._-]*\d+\.\d+[a-z0-9._-]*$`)
	sawGo := false
	for _, s := range d.Stages {
		switch {
		case s.Image == "scratch":
		case strings.Contains(s.Image, "$"):
			t.Errorf("line %d: FROM %s: an ARG without a default", s.From.Line, s.From.Args)
		case !pinned.MatchString(s.Image):
			t.Errorf("line %d: FROM %s: not pinned to a version (x.y) or a digest", s.From.Line, s.Image)
		}
		if strings.Contains(s.Image, "latest") {
			t.Errorf("line %d: FROM %s: latest is not a pin", s.From.Line, s.Image)
		}
		if name, tag, ok := strings.Cut(s.Image, ":"); ok && (name == "golang" || strings.HasSuffix(name, "/golang")) {
			sawGo = true
			gm := regexp.MustCompile(`^(\d+)\.(\d+)\.(\d+)`).FindStringSubmatch(tag)
			if gm == nil {
				t.Errorf("line %d: %s: want a Go patch version (1.26.8-...)", s.From.Line, s.Image)
				continue
			}
			if gm[1]+"."+gm[2] != goMinor {
				t.Errorf("line %d: %s is Go %s.%s; go.mod says go %s", s.From.Line, s.Image, gm[1], gm[2], goMinor)
			}
			if p, _ := strconv.Atoi(gm[3]); p < goPatch {
				t.Errorf("line %d: %s is older than go.mod's go %s.%d", s.From.Line, s.Image, goMinor, goPatch)
			}
		}
	}
	if !sawGo {
		t.Error("no build stage FROM golang:<version>")
	}
	if img := d.final().Image; img != "scratch" && !strings.Contains(img, "distroless") {
		t.Errorf("the image is based on %s; want scratch or distroless", img)
	}
}

// The image runs apipool serve with the config at /etc/apipool, as a user
// that is not root, exposes the ports the chart uses, carries CA
// certificates for HTTPS upstreams and OCI labels.
func TestDockerfileImage(t *testing.T) {
	d := parseDockerfile(t)
	img := d.final()

	user := img.last(t, "USER").Args
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %s: want a numeric user ID other than 0 (runAsNonRoot can only check a number)", user)
	}
	if ep := execForm(t, img.last(t, "ENTRYPOINT")); !slices.Equal(ep, []string{"apipool"}) {
		t.Errorf("ENTRYPOINT %q, want [\"apipool\"]", ep)
	}
	cmd := execForm(t, img.last(t, "CMD"))
	if want := []string{"serve", "-config", "/etc/apipool/apipool.yaml"}; !slices.Equal(cmd, want) {
		t.Errorf("CMD %q, want %q", cmd, want)
	}
	if !slices.ContainsFunc(img.all("ENV"), func(in instruction) bool { return strings.Contains(in.Args, "PATH=/usr/local/bin") }) {
		t.Error("no ENV PATH=/usr/local/bin: ENTRYPOINT [\"apipool\"] is looked up on the PATH")
	}
	copies := img.all("COPY")
	copied := func(dst string) bool {
		return slices.ContainsFunc(copies, func(in instruction) bool {
			f := strings.Fields(in.Args)
			return len(f) > 0 && f[len(f)-1] == dst
		})
	}
	for _, dst := range []string{"/usr/local/bin/apipool", "/etc/ssl/certs/ca-certificates.crt"} {
		if !copied(dst) {
			t.Errorf("the image's stage copies nothing to %s", dst)
		}
	}

	var exposed []string
	for _, in := range img.all("EXPOSE") {
		exposed = append(exposed, strings.Fields(in.Args)...)
	}
	// The chart's ports (values.yaml) are the image's.
	defaults := values(t, string(must(os.ReadFile(filepath.Join(chartDir, "values.yaml")))))
	ports := defaults["ports"].(map[string]any)
	for _, name := range []string{"proxy", "admin"} {
		p := fmt.Sprint(ports[name])
		if !slices.Contains(exposed, p) && !slices.Contains(exposed, p+"/tcp") {
			t.Errorf("EXPOSE %v lacks the %s port %s of the chart's values", exposed, name, p)
		}
	}

	labels := map[string]string{}
	re := regexp.MustCompile(`([a-z0-9.]+)="([^"]*)"`)
	for _, in := range img.all("LABEL") {
		for _, m := range re.FindAllStringSubmatch(in.Args, -1) {
			labels[m[1]] = m[2]
		}
	}
	for _, k := range []string{"title", "description", "source", "licenses", "version", "revision"} {
		if labels["org.opencontainers.image."+k] == "" {
			t.Errorf("no LABEL org.opencontainers.image.%s", k)
		}
	}
	lic := string(must(os.ReadFile(filepath.Join(repoRoot, "LICENSE"))))
	if l := labels["org.opencontainers.image.licenses"]; !strings.HasPrefix(lic, l+" License") {
		t.Errorf("org.opencontainers.image.licenses=%q; LICENSE starts %q", l, strings.SplitN(lic, "\n", 2)[0])
	}
}

// buildLine returns the Dockerfile's RUN instruction that runs go build,
// without its --mount flags.
func buildLine(d *dockerfile) (string, error) {
	for _, s := range d.Stages {
		for _, in := range s.all("RUN") {
			if !strings.Contains(in.Args, "go build") {
				continue
			}
			args := in.Args
			for strings.HasPrefix(args, "--") {
				_, args, _ = strings.Cut(args, " ")
				args = strings.TrimSpace(args)
			}
			return args, nil
		}
	}
	return "", errors.New("no RUN ... go build in the Dockerfile")
}

// buildFromDockerfile copies the build context (the repository less what
// .dockerignore leaves out) into dir/context and runs the Dockerfile's go
// build line there, with its /out/ directory moved to dir/out/. It
// returns the binary.
func buildFromDockerfile(dir string) (string, error) {
	d, err := readDockerfile()
	if err != nil {
		return "", err
	}
	line, err := buildLine(d)
	if err != nil {
		return "", err
	}
	if !strings.Contains(line, "/out/apipool") {
		return "", fmt.Errorf("the build line does not write /out/apipool: %s", line)
	}
	ctxDir := filepath.Join(dir, "context")
	if err := copyContext(repoRoot, ctxDir); err != nil {
		return "", err
	}
	out := filepath.Join(dir, "out")
	vars := map[string]string{"TARGETOS": "linux", "TARGETARCH": runtime.GOARCH}
	words, err := shellWords(line, func(k string) string { return vars[k] })
	if err != nil {
		return "", fmt.Errorf("%s: %v", line, err)
	}
	// Leading NAME=value words are the command's environment.
	env := append(os.Environ(), "GOFLAGS=")
	for len(words) > 0 && regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*=`).MatchString(words[0]) {
		env = append(env, words[0])
		words = words[1:]
	}
	if len(words) < 2 || words[0] != "go" || words[1] != "build" {
		return "", fmt.Errorf("the build line does not run go build: %s", line)
	}
	for i, w := range words {
		words[i] = strings.Replace(w, "/out/", out+"/", 1)
	}
	cmd := exec.Command(goCmd(), words[1:]...)
	dieWithTest(cmd)
	cmd.Dir = ctxDir
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("%s: %v\n%s", line, err, b)
	}
	return filepath.Join(out, "apipool"), nil
}

// The image's binary, built by the Dockerfile's own line from the build
// context .dockerignore leaves, is static (no interpreter, no shared
// library: it runs on scratch), for Linux, with the time zone database
// inside (quota days in a time zone; scratch has no /usr/share/zoneinfo)
// and without cgo.
func TestDockerfileBuildsStaticBinary(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is Linux's")
	}
	bin := apipoolBinary(t)
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatalf("not an ELF binary: %v", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary asks for a dynamic loader (PT_INTERP): not static")
		}
		if p.Type == elf.PT_DYNAMIC {
			t.Error("the binary has a dynamic section: not static")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v", libs)
	}

	bi, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("no build info: %v", err)
	}
	settings := map[string]string{}
	for _, s := range bi.Settings {
		settings[s.Key] = s.Value
	}
	if settings["CGO_ENABLED"] != "0" {
		t.Errorf("CGO_ENABLED=%q, want 0", settings["CGO_ENABLED"])
	}
	if settings["GOOS"] != "linux" {
		t.Errorf("GOOS=%q, want linux", settings["GOOS"])
	}
	if !slices.Contains(strings.Split(settings["-tags"], ","), "timetzdata") {
		t.Errorf("-tags=%q: want timetzdata (the time zones inside the binary)", settings["-tags"])
	}
	if settings["-trimpath"] != "true" {
		t.Error("built without -trimpath: the build machine's paths are in the binary")
	}
	if bi.Path != "github.com/apipool-ng/apipool/cmd/apipool" {
		t.Errorf("built %s, want the cmd/apipool command", bi.Path)
	}

	// It runs (here, on Linux, as it will on scratch).
	stdout, stderr, code := run(t, bin, nil, "version")
	if code != 0 || !strings.Contains(stdout, "go1.") {
		t.Errorf("apipool version: status %d, %q %q", code, stdout, stderr)
	}
}

// shellWords splits a shell command line into words as sh does for a
// simple command: blanks separate words, '...' and "..." quote, ${NAME}
// and $NAME expand (from vars). Anything else of the shell's (;, |, &,
// <, >, `, $(...), \\) is an error: this test does not run a shell.
func shellWords(line string, vars func(string) string) ([]string, error) {
	var words []string
	var cur strings.Builder
	inWord := false
	nameRE := regexp.MustCompile(`^\$(\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))`)
	expand := func(i int) (int, error) {
		m := nameRE.FindStringSubmatch(line[i:])
		if m == nil {
			return 0, fmt.Errorf("a $ at %d that is not ${NAME} or $NAME", i)
		}
		cur.WriteString(vars(m[2] + m[3]))
		return len(m[0]), nil
	}
	for i := 0; i < len(line); {
		c := line[i]
		switch {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
			i++
		case c == '\'':
			j := strings.IndexByte(line[i+1:], '\'')
			if j < 0 {
				return nil, errors.New("an unclosed '")
			}
			cur.WriteString(line[i+1 : i+1+j])
			inWord = true
			i += j + 2
		case c == '"':
			i++
			for ; i < len(line) && line[i] != '"'; i++ {
				switch line[i] {
				case '$':
					n, err := expand(i)
					if err != nil {
						return nil, err
					}
					i += n - 1
				case '\\', '`':
					return nil, fmt.Errorf("%q inside \"...\": not handled", line[i])
				default:
					cur.WriteByte(line[i])
				}
			}
			if i == len(line) {
				return nil, errors.New(`an unclosed "`)
			}
			inWord = true
			i++
		case c == '$':
			n, err := expand(i)
			if err != nil {
				return nil, err
			}
			inWord = true
			i += n
		case strings.IndexByte(";|&<>`\\(){}*?[#~", c) >= 0:
			return nil, fmt.Errorf("%q: this test runs simple commands only, not a shell", c)
		default:
			cur.WriteByte(c)
			inWord = true
			i++
		}
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words, nil
}

// copyContext copies root to dst, less what .dockerignore excludes.
func copyContext(root, dst string) error {
	ig, err := readDockerignore(filepath.Join(root, ".dockerignore"))
	if err != nil {
		return err
	}
	return filepath.WalkDir(root, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(root, p)
		if err != nil {
			return err
		}
		if rel == "." {
			return os.MkdirAll(dst, 0o755)
		}
		rel = filepath.ToSlash(rel)
		if ig.excluded(rel) {
			if e.IsDir() {
				return filepath.SkipDir
			}
			return nil
		}
		target := filepath.Join(dst, rel)
		switch {
		case e.IsDir():
			return os.MkdirAll(target, 0o755)
		case e.Type().IsRegular():
			return copyFile(p, target)
		}
		return nil // symlinks and others: the build does not use any
	})
}

func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// dockerignore is the patterns of a .dockerignore, as Docker reads them
// (https://docs.docker.com/build/concepts/context/#dockerignore-files):
// paths relative to the context's root, * and ? within a path element,
// ** across elements; a pattern that matches a directory excludes what is
// under it. Exceptions (!) are refused: this reader does not apply them.
type dockerignore []*regexp.Regexp

func readDockerignore(path string) (dockerignore, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out dockerignore
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		l := strings.TrimSpace(sc.Text())
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		if strings.HasPrefix(l, "!") {
			return nil, fmt.Errorf(".dockerignore: exception %q: this test's reader does not handle exceptions; extend it", l)
		}
		l = strings.TrimPrefix(filepath.ToSlash(filepath.Clean(l)), "/")
		var re strings.Builder
		re.WriteString("^")
		for i := 0; i < len(l); i++ {
			switch c := l[i]; {
			case strings.HasPrefix(l[i:], "**/"):
				re.WriteString("(.*/)?")
				i += 2
			case strings.HasPrefix(l[i:], "**"):
				re.WriteString(".*")
				i++
			case c == '*':
				re.WriteString("[^/]*")
			case c == '?':
				re.WriteString("[^/]")
			default:
				re.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		re.WriteString("$")
		out = append(out, regexp.MustCompile(re.String()))
	}
	return out, sc.Err()
}

// excluded reports whether rel (slash-separated), or a directory it is
// in, matches a pattern.
func (d dockerignore) excluded(rel string) bool {
	for p := rel; p != "." && p != ""; p = pathDir(p) {
		for _, re := range d {
			if re.MatchString(p) {
				return true
			}
		}
	}
	return false
}

func pathDir(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return ""
	}
	return p[:i]
}

// The .dockerignore keeps secrets and bulk out of the build context:
// the repository's .git, Node modules, local databases, and the other
// modules (which the image does not build).
func TestDockerignore(t *testing.T) {
	ig, err := readDockerignore(filepath.Join(repoRoot, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{".git", ".git/config", "cmd/apipool/testdata/node/node_modules/x.js", "usage.db", "examples/sqlite/usage.db-wal", "deploy/helm/apipool/values.yaml", "bench/go.mod", ".tmp/browser/x.png"} {
		if !ig.excluded(p) {
			t.Errorf("%s is sent to the builder", p)
		}
	}
	for _, p := range []string{"go.mod", "go.sum", "cmd/apipool/main.go", "dashboard/static", "dashboard/templates", "recorder/sql/store.go"} {
		if ig.excluded(p) {
			t.Errorf("%s is left out of the build context, and the build needs it", p)
		}
	}
}

// shellWords reads the build line as sh would, and refuses what it does
// not handle rather than misreading it.
func TestShellWords(t *testing.T) {
	vars := func(k string) string { return map[string]string{"A": "x y", "B": "b"}[k] }
	got, err := shellWords(`CGO_ENABLED=0 GOARCH=${B} go build -ldflags='-s -w' -o "/out/$B" ./cmd/apipool`, vars)
	want := []string{"CGO_ENABLED=0", "GOARCH=b", "go", "build", "-ldflags=-s -w", "-o", "/out/b", "./cmd/apipool"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("got %q, %v; want %q", got, err, want)
	}
	for _, bad := range []string{"go build && rm x", "go build; x", "go build $(x)", "go build `x`", "go build 'x", "go build > f", "go build $"} {
		if _, err := shellWords(bad, vars); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}
