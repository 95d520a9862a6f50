package test

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const imageTag = "apipool:test"

var (
	imgOnce sync.Once
	imgPath string
	imgErr  error
	imgDir  string
)

// builtImage builds deploy/image's command and runs it as make image
// does, once per test run, and returns the image tarball it writes.
func builtImage(t *testing.T) string {
	t.Helper()
	imgOnce.Do(func() {
		imgDir, imgErr = os.MkdirTemp("", "apipool-image-test-")
		if imgErr != nil {
			return
		}
		imgPath, imgErr = buildImage(imgDir, "a")
	})
	if imgErr != nil {
		t.Fatalf("build the image: %v", imgErr)
	}
	return imgPath
}

// buildImage runs apipool-image (built into dir once) to write
// dir/<name>.tar.
func buildImage(dir, name string) (string, error) {
	tool := filepath.Join(dir, "apipool-image")
	if _, err := os.Stat(tool); err != nil {
		cmd := exec.Command(goCmd(), "build", "-o", tool, ".")
		dieWithTest(cmd)
		cmd.Dir = filepath.Join(repoRoot, "deploy", "image")
		cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
		if b, err := cmd.CombinedOutput(); err != nil {
			return "", fmt.Errorf("go build deploy/image: %v\n%s", err, b)
		}
	}
	out := filepath.Join(dir, name+".tar")
	cmd := exec.Command(tool, "-repo", repoRoot, "-o", out, "-t", imageTag)
	dieWithTest(cmd)
	cmd.Env = append(os.Environ(), "SOURCE_DATE_EPOCH=")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("apipool-image: %v\n%s", err, b)
	}
	return out, nil
}

// imageFile is a file of the image's layer.
type imageFile struct {
	hdr  *tar.Header
	data []byte
}

// readImage reads the tarball as docker load would, and the files of its
// one layer.
func readImage(t *testing.T, p string) (v1.Image, *v1.ConfigFile, map[string]imageFile) {
	t.Helper()
	img, err := tarball.ImageFromPath(p, nil)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1 (on an empty base)", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	files := map[string]imageFile{}
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files["/"+strings.TrimSuffix(h.Name, "/")] = imageFile{h, b}
	}
	return img, cf, files
}

// The image holds the binary, CA certificates, /etc/passwd and /etc/group
// and its directories, nothing else (no shell, no package manager); it
// runs as a user that is not root and that /etc/passwd names, in a
// working directory that user owns, and starts apipool serve with the
// config at /etc/apipool.
func TestImageContents(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is Linux's")
	}
	_, cf, files := readImage(t, builtImage(t))

	if cf.OS != "linux" || cf.Architecture != runtime.GOARCH {
		t.Errorf("platform %s/%s, want linux/%s", cf.OS, cf.Architecture, runtime.GOARCH)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532 (numeric: runAsNonRoot can only check a number)", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"apipool"}) || !slices.Equal(c.Cmd, []string{"serve", "-config", "/etc/apipool/apipool.yaml"}) {
		t.Errorf("Entrypoint %q Cmd %q", c.Entrypoint, c.Cmd)
	}
	if len(c.Shell) > 0 || c.Healthcheck != nil || len(c.Volumes) > 0 {
		t.Errorf("Shell %q, Healthcheck %v, Volumes %v: want none", c.Shell, c.Healthcheck, c.Volumes)
	}

	type want struct {
		mode     int64
		uid, gid int
	}
	dir, file, exe := want{0o755, 0, 0}, want{0o644, 0, 0}, want{0o755, 0, 0}
	expected := map[string]want{
		"/etc": dir, "/etc/apipool": dir, "/etc/group": file, "/etc/passwd": file,
		"/etc/ssl": dir, "/etc/ssl/certs": dir, "/etc/ssl/certs/ca-certificates.crt": file,
		"/tmp": {0o1777, 0, 0},
		"/usr": dir, "/usr/local": dir, "/usr/local/bin": dir, "/usr/local/bin/apipool": exe,
		"/var": dir, "/var/lib": dir, "/var/lib/apipool": {0o755, 65532, 65532},
	}
	for name, f := range files {
		w, ok := expected[name]
		switch {
		case !ok:
			t.Errorf("%s is in the image: want nothing but %v", name, slices.Sorted(func(yield func(string) bool) {
				for k := range expected {
					if !yield(k) {
						return
					}
				}
			}))
		case f.hdr.Mode != w.mode || f.hdr.Uid != w.uid || f.hdr.Gid != w.gid:
			t.Errorf("%s: mode %#o owner %d:%d, want %#o %d:%d", name, f.hdr.Mode, f.hdr.Uid, f.hdr.Gid, w.mode, w.uid, w.gid)
		case f.hdr.Typeflag != tar.TypeDir && f.hdr.Typeflag != tar.TypeReg:
			t.Errorf("%s: tar type %q, want a file or a directory", name, f.hdr.Typeflag)
		}
	}
	for name := range expected {
		if _, ok := files[name]; !ok {
			t.Errorf("%s is missing", name)
		}
	}

	// The user the image runs as is named, with its home in the working
	// directory, which it owns.
	uid, gid, _ := strings.Cut(c.User, ":")
	var user []string
	for _, l := range strings.Split(string(files["/etc/passwd"].data), "\n") {
		if f := strings.Split(l, ":"); len(f) == 7 && f[2] == uid {
			user = f
		}
	}
	if user == nil || user[3] != gid || user[5] != c.WorkingDir || user[6] != "/sbin/nologin" {
		t.Errorf("/etc/passwd has no user %s with group %s, home %s and no login shell:\n%s", uid, gid, c.WorkingDir, files["/etc/passwd"].data)
	}
	if !regexp.MustCompile(`(?m)^[a-z]+:x:` + gid + `:$`).Match(files["/etc/group"].data) {
		t.Errorf("/etc/group has no group %s:\n%s", gid, files["/etc/group"].data)
	}
	if w := files[c.WorkingDir]; w.hdr == nil || strconv.Itoa(w.hdr.Uid) != uid {
		t.Errorf("the working directory %s is not owned by the user %s", c.WorkingDir, uid)
	}

	// The build machine's CA certificates, as Debian's ca-certificates
	// writes them (HTTPS upstreams need them).
	host, err := os.ReadFile("/etc/ssl/certs/ca-certificates.crt")
	if err != nil {
		t.Fatalf("the build machine's CA certificates: %v", err)
	}
	if ca := files["/etc/ssl/certs/ca-certificates.crt"].data; !bytes.Equal(ca, host) || !bytes.Contains(ca, []byte("BEGIN CERTIFICATE")) {
		t.Errorf("the image's CA certificates (%d bytes) are not the build machine's (%d bytes)", len(ca), len(host))
	}
}

// The image and the Dockerfile's image are one: the same binary (built by
// the Dockerfile's own go build line, byte for byte), user, working
// directory, environment, ports, entry point, command and labels, the
// same /etc/passwd and /etc/group, and every path the Dockerfile creates
// or copies, with its owner and mode. A change to one that is not made to
// the other fails here.
func TestImageAgreesWithDockerfile(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is Linux's")
	}
	_, cf, files := readImage(t, builtImage(t))
	c := cf.Config
	d := parseDockerfile(t)
	st := d.final()
	if st.Image != "scratch" {
		t.Errorf("the Dockerfile's image is on %s; apipool-image builds on an empty base (scratch)", st.Image)
	}

	if u := st.last(t, "USER").Args; u != c.User {
		t.Errorf("USER %s; the image's user %s", u, c.User)
	}
	if w := st.last(t, "WORKDIR").Args; w != c.WorkingDir {
		t.Errorf("WORKDIR %s; the image's %s", w, c.WorkingDir)
	}
	if ep := execForm(t, st.last(t, "ENTRYPOINT")); !slices.Equal(ep, c.Entrypoint) {
		t.Errorf("ENTRYPOINT %q; the image's %q", ep, c.Entrypoint)
	}
	if cmd := execForm(t, st.last(t, "CMD")); !slices.Equal(cmd, c.Cmd) {
		t.Errorf("CMD %q; the image's %q", cmd, c.Cmd)
	}
	var env []string
	for _, in := range st.all("ENV") {
		env = append(env, strings.Fields(in.Args)...)
	}
	if !slices.Equal(env, c.Env) {
		t.Errorf("ENV %q; the image's %q", env, c.Env)
	}
	var ports []string
	for _, in := range st.all("EXPOSE") {
		for _, p := range strings.Fields(in.Args) {
			if !strings.Contains(p, "/") {
				p += "/tcp"
			}
			ports = append(ports, p)
		}
	}
	slices.Sort(ports)
	var imgPorts []string
	for p := range c.ExposedPorts {
		imgPorts = append(imgPorts, p)
	}
	slices.Sort(imgPorts)
	if !slices.Equal(ports, imgPorts) {
		t.Errorf("EXPOSE %v; the image's %v", ports, imgPorts)
	}

	// LABELs, with the stage's ARG defaults (the tool's -version and
	// -revision defaults are the same).
	args := map[string]string{}
	for _, in := range st.all("ARG") {
		k, v, _ := strings.Cut(in.Args, "=")
		args[k] = v
	}
	labels := map[string]string{}
	re := regexp.MustCompile(`([a-z0-9.]+)="([^"]*)"`)
	for _, in := range st.all("LABEL") {
		for _, m := range re.FindAllStringSubmatch(in.Args, -1) {
			labels[m[1]] = os.Expand(m[2], func(k string) string { return args[k] })
		}
	}
	if fmt.Sprint(labels) != fmt.Sprint(c.Labels) {
		t.Errorf("LABEL %v;\nthe image's %v", labels, c.Labels)
	}

	// What the image's stage copies is in the image; the binary is the
	// one the Dockerfile's build line makes.
	for _, in := range st.all("COPY") {
		f := strings.Fields(in.Args)
		dst := path.Clean(f[len(f)-1])
		if dst == "/" {
			continue // the build stage's /rootfs/: checked below
		}
		if _, ok := files[dst]; !ok {
			t.Errorf("line %d: COPY to %s: not in the image", in.Line, dst)
		}
	}
	want, err := os.ReadFile(apipoolBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if got := files["/usr/local/bin/apipool"].data; !bytes.Equal(got, want) {
		t.Errorf("the image's binary (%d bytes) differs from the Dockerfile's build (%d bytes): not the same go build flags?", len(got), len(want))
	}

	// The build stage's /rootfs: its directories, owners, modes, passwd
	// and group.
	var rootfs string
	for _, s := range d.Stages[:len(d.Stages)-1] {
		for _, in := range s.all("RUN") {
			if strings.Contains(in.Args, "/rootfs/") {
				rootfs += in.Args + " && "
			}
		}
	}
	if rootfs == "" {
		t.Fatal("no RUN in a build stage lays out /rootfs/")
	}
	steps := 0
	for _, step := range strings.Split(rootfs, "&&") {
		step = strings.TrimSpace(step)
		f := strings.Fields(step)
		switch {
		case step == "":
		case len(f) > 2 && f[0] == "mkdir" && f[1] == "-p":
			for _, p := range f[2:] {
				if _, ok := files[strings.TrimPrefix(p, "/rootfs")]; !ok {
					t.Errorf("%s: %s is not in the image", step, p)
				}
			}
		case len(f) == 3 && f[0] == "chown":
			u, g, _ := strings.Cut(f[1], ":")
			if h := files[strings.TrimPrefix(f[2], "/rootfs")].hdr; h == nil || strconv.Itoa(h.Uid) != u || strconv.Itoa(h.Gid) != g {
				t.Errorf("%s: the image's %s is not so owned", step, f[2])
			}
		case len(f) == 3 && f[0] == "chmod":
			m, err := strconv.ParseInt(f[1], 8, 64)
			if h := files[strings.TrimPrefix(f[2], "/rootfs")].hdr; err != nil || h == nil || h.Mode != m {
				t.Errorf("%s: the image's %s has not that mode", step, f[2])
			}
		default:
			m := regexp.MustCompile(`^printf '([^']*)' > /rootfs(/\S+)$`).FindStringSubmatch(step)
			if m == nil {
				t.Errorf("a step of /rootfs/ this test does not read: %s", step)
				continue
			}
			text := strings.ReplaceAll(m[1], `\n`, "\n")
			if strings.Contains(text, `\`) || strings.Contains(text, "%") {
				t.Errorf("%s: a printf escape this test does not read", step)
			}
			if got := string(files[m[2]].data); got != text {
				t.Errorf("the image's %s is %q; the Dockerfile writes %q", m[2], got, text)
			}
		}
		steps++
	}
	if steps < 5 {
		t.Errorf("read %d steps of the /rootfs/ layout: %s", steps, rootfs)
	}
}

// The same sources give the same image: the digest does not depend on
// when or where it was built.
func TestImageReproducible(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is Linux's")
	}
	a, _, _ := readImage(t, builtImage(t))
	p, err := buildImage(imgDir, "b")
	if err != nil {
		t.Fatal(err)
	}
	b, _, _ := readImage(t, p)
	da, err := a.Digest()
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if da != db {
		t.Errorf("two builds: image %s then %s", da, db)
	}
}

// extract writes the image's files under dir, as a container's root file
// system.
func extract(t *testing.T, files map[string]imageFile, dir string) {
	t.Helper()
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range files {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		f := files[name]
		p := filepath.Join(dir, filepath.FromSlash(path.Clean(name)))
		if !strings.HasPrefix(p, dir+string(filepath.Separator)) {
			t.Fatalf("%s: outside the root", name)
		}
		var err error
		if f.hdr.Typeflag == tar.TypeDir {
			err = os.Mkdir(p, 0o755)
		} else {
			err = os.WriteFile(p, f.data, os.FileMode(f.hdr.Mode))
		}
		if err != nil {
			t.Fatal(err)
		}
	}
}

// The image's binary, taken out of the image, runs: apipool version, and
// apipool serve with the chart's config, whose readiness probe (/readyz
// on the admin port) answers 200.
func TestImageBinaryRuns(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("the image is Linux's")
	}
	_, _, files := readImage(t, builtImage(t))
	root := t.TempDir()
	extract(t, files, root)
	bin := filepath.Join(root, "usr", "local", "bin", "apipool")

	stdout, stderr, code := run(t, bin, nil, "version")
	if code != 0 || !strings.Contains(stdout, "go1.") {
		t.Fatalf("apipool version: status %d, %q %q", code, stdout, stderr)
	}
	s := startChart(t, bin, map[string]any{})
	resp, err := http.Get(probeURL(t, s.c, s.c.ReadinessProbe))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("/readyz: %s", resp.Status)
	}
}
