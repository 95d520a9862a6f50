// Command apipool-image builds the apipool proxy's container image without
// a container engine: it builds the static binary with the Dockerfile's
// flags, lays it out with CA certificates, /etc/passwd and /etc/group on
// an empty base (scratch), in one layer, and writes a tarball that docker
// load, podman load and crane push read.
//
//	cd deploy/image && go run . -repo ../.. -o ../../apipool.tar   # or: make image
//	docker load < apipool.tar            # or: podman load -i apipool.tar
//	crane push apipool.tar registry.example.com/apipool:v1
//
// The image is the Dockerfile's (../../Dockerfile), file for file and
// setting for setting; deploy/test builds both and checks that they
// agree. It is reproducible: the same sources, Go release and
// -created time give the same image digest.
//
// It is a module of its own so that go-containerregistry stays out of the
// library's dependencies.
package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// What the image holds and how it runs: the Dockerfile's final stage.
const (
	uid        = 65532
	gid        = 65532
	binPath    = "usr/local/bin/apipool"
	caPath     = "etc/ssl/certs/ca-certificates.crt"
	workDir    = "/var/lib/apipool"
	configPath = "/etc/apipool/apipool.yaml"
	passwd     = "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/var/lib/apipool:/sbin/nologin\n"
	group      = "root:x:0:\nnonroot:x:65532:\n"
)

// buildArgs are the Dockerfile's go build flags (CGO_ENABLED=0 is set in
// the environment): static, no build machine paths, the time zone
// database inside, no VCS stamp, no symbol table.
var buildArgs = []string{"build", "-trimpath", "-buildvcs=false", "-tags", "timetzdata", "-ldflags=-s -w"}

type options struct {
	repo     string // the repository's root
	out      string // the tarball
	tag      string // its repository:tag (docker load names the image so)
	arch     string // GOARCH of the image
	ca       string // the CA certificates copied in
	version  string // org.opencontainers.image.version
	revision string // org.opencontainers.image.revision
	created  time.Time
}

func main() {
	o := options{}
	flag.StringVar(&o.repo, "repo", ".", "the apipool repository's root directory")
	flag.StringVar(&o.out, "o", "apipool.tar", "the image tarball to write")
	flag.StringVar(&o.tag, "t", "apipool:devel", "the image's name and tag in the tarball")
	flag.StringVar(&o.arch, "arch", runtime.GOARCH, "the image's architecture (GOARCH)")
	flag.StringVar(&o.ca, "ca", "/etc/ssl/certs/ca-certificates.crt", "the CA certificates bundle to copy into the image")
	flag.StringVar(&o.version, "version", "devel", "the version label (org.opencontainers.image.version)")
	flag.StringVar(&o.revision, "revision", "unknown", "the revision label (org.opencontainers.image.revision)")
	created := flag.String("created", "", "the image's creation time, RFC 3339 or Unix seconds (default $SOURCE_DATE_EPOCH, else 1970-01-01: reproducible)")
	flag.Parse()
	if flag.NArg() > 0 {
		fatal(fmt.Errorf("unexpected arguments %q", flag.Args()))
	}
	var err error
	if *created == "" {
		*created = os.Getenv("SOURCE_DATE_EPOCH")
	}
	if o.created, err = parseTime(*created); err != nil {
		fatal(err)
	}
	if err := build(o); err != nil {
		fatal(err)
	}
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "apipool-image:", err)
	os.Exit(1)
}

// parseTime reads Unix seconds or an RFC 3339 time; "" is the Unix epoch.
func parseTime(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0).UTC(), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("creation time %q: want Unix seconds or RFC 3339", s)
	}
	return t.UTC(), nil
}

func build(o options) error {
	ref, err := name.NewTag(o.tag)
	if err != nil {
		return fmt.Errorf("-t %s: %v", o.tag, err)
	}
	ca, err := os.ReadFile(o.ca)
	if err != nil {
		return fmt.Errorf("the CA certificates: %v (install Debian's ca-certificates, or pass -ca)", err)
	}
	tmp, err := os.MkdirTemp("", "apipool-image-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bin, err := goBuild(o, filepath.Join(tmp, "apipool"))
	if err != nil {
		return err
	}
	layer, err := rootFS(o.created, bin, ca)
	if err != nil {
		return err
	}
	img, err := image(o, layer)
	if err != nil {
		return err
	}
	if err := tarball.WriteToFile(o.out, ref, img); err != nil {
		return fmt.Errorf("write %s: %v", o.out, err)
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("wrote %s: %s (%s/%s), image %s\n", o.out, ref, "linux", o.arch, d)
	return nil
}

// goBuild builds ./cmd/apipool for linux/arch as the Dockerfile does,
// and returns the binary.
func goBuild(o options, out string) ([]byte, error) {
	goCmd := "go"
	if p, err := exec.LookPath("go"); err == nil {
		goCmd = p
	}
	cmd := exec.Command(goCmd, append(append([]string(nil), buildArgs...), "-o", out, "./cmd/apipool")...)
	cmd.Dir = o.repo
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+o.arch, "GOFLAGS=", "GOWORK=off")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("go build ./cmd/apipool in %s: %v", o.repo, err)
	}
	return os.ReadFile(out)
}

// entry is a file or directory of the image.
type entry struct {
	name     string // relative to /; a directory ends in /
	mode     int64
	uid, gid int
	data     []byte
}

// files returns the image's file system, parents before children.
func files(bin, ca []byte) []entry {
	dir := func(n string) entry { return entry{name: n, mode: 0o755} }
	file := func(n string, mode int64, b []byte) entry { return entry{name: n, mode: mode, data: b} }
	return []entry{
		dir("etc/"),
		dir("etc/apipool/"), // the config, mounted
		file("etc/group", 0o644, []byte(group)),
		file("etc/passwd", 0o644, []byte(passwd)),
		dir("etc/ssl/"),
		dir("etc/ssl/certs/"),
		file(caPath, 0o644, ca),
		{name: "tmp/", mode: 0o1777},
		dir("usr/"),
		dir("usr/local/"),
		dir("usr/local/bin/"),
		file(binPath, 0o755, bin),
		dir("var/"),
		dir("var/lib/"),
		{name: "var/lib/apipool/", mode: 0o755, uid: uid, gid: gid}, // the working directory
	}
}

// rootFS returns the image's one layer: files as a tar, every time
// mtime (reproducible).
func rootFS(mtime time.Time, bin, ca []byte) (v1.Layer, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range files(bin, ca) {
		h := &tar.Header{Name: e.name, Mode: e.mode, Uid: e.uid, Gid: e.gid, ModTime: mtime, Format: tar.FormatPAX}
		if e.name[len(e.name)-1] == '/' {
			h.Typeflag = tar.TypeDir
		} else {
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(e.data))
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.data); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	return tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(b)), nil
	}, tarball.WithCompressedCaching)
}

// image puts the layer on an empty base and sets the Dockerfile's
// ENV, WORKDIR, USER, EXPOSE, ENTRYPOINT, CMD and LABELs.
func image(o options, layer v1.Layer) (v1.Image, error) {
	img, err := mutate.Append(empty.Image, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: v1.Time{Time: o.created}, CreatedBy: "apipool-image (deploy/image)"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = "linux"
	cf.Architecture = o.arch
	cf.Created = v1.Time{Time: o.created}
	cf.Config = v1.Config{
		Env:          []string{"PATH=/usr/local/bin"},
		WorkingDir:   workDir,
		User:         strconv.Itoa(uid) + ":" + strconv.Itoa(gid),
		ExposedPorts: map[string]struct{}{"8080/tcp": {}, "9090/tcp": {}},
		Entrypoint:   []string{"apipool"},
		Cmd:          []string{"serve", "-config", configPath},
		Labels: map[string]string{
			"org.opencontainers.image.title":         "apipool",
			"org.opencontainers.image.description":   "A key-pooling reverse proxy for HTTP APIs",
			"org.opencontainers.image.source":        "https://github.com/apipool-ng/apipool",
			"org.opencontainers.image.documentation": "https://github.com/apipool-ng/apipool/tree/main/cmd/apipool",
			"org.opencontainers.image.licenses":      "MIT",
			"org.opencontainers.image.version":       o.version,
			"org.opencontainers.image.revision":      o.revision,
		},
	}
	if cf.Config.Labels["org.opencontainers.image.version"] == "" {
		return nil, errors.New("-version is empty")
	}
	return mutate.ConfigFile(img, cf)
}
