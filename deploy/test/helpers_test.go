package test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"helm.sh/helm/v3/pkg/chart"
	"helm.sh/helm/v3/pkg/chart/loader"
	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/engine"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/yaml"
)

// repoRoot is the repository's root: this module is deploy/test.
var repoRoot = func() string {
	wd, err := os.Getwd()
	if err != nil {
		panic(err)
	}
	return filepath.Clean(filepath.Join(wd, "..", ".."))
}()

var chartDir = filepath.Join(repoRoot, "deploy", "helm", "apipool")

const (
	release   = "rel"
	namespace = "ns"
)

// loadChart loads the chart from its directory, as helm install does.
func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	ch, err := loader.Load(chartDir)
	if err != nil {
		t.Fatalf("load the chart: %v", err)
	}
	return ch
}

// render renders the chart as `helm template` does, with vals over the
// chart's values.yaml, for a cluster of kubeVersion ("" for Helm's
// default). The values are checked against values.schema.json first; a
// value the schema refuses is render's error.
func render(t *testing.T, vals map[string]any, kubeVersion string) (map[string]string, error) {
	t.Helper()
	ch := loadChart(t)
	caps := chartutil.DefaultCapabilities.Copy()
	if kubeVersion != "" {
		kv, err := chartutil.ParseKubeVersion(kubeVersion)
		if err != nil {
			t.Fatal(err)
		}
		caps.KubeVersion = *kv
	}
	opts := chartutil.ReleaseOptions{Name: release, Namespace: namespace, Revision: 1, IsInstall: true}
	rv, err := chartutil.ToRenderValues(ch, vals, opts, caps)
	if err != nil {
		return nil, err
	}
	return engine.Render(ch, rv)
}

// manifests is a rendered chart, decoded strictly into the Kubernetes API
// types: a field the type does not have, or a value of the wrong type, is
// an error, as the API server's strict field validation makes it.
type manifests struct {
	Deployment     *appsv1.Deployment
	Service        *corev1.Service
	ConfigMap      *corev1.ConfigMap
	ServiceAccount *corev1.ServiceAccount
	PDB            *policyv1.PodDisruptionBudget
	HPA            *autoscalingv2.HorizontalPodAutoscaler
	ServiceMonitor map[string]any // a CRD's object: no Go type here
	Notes          string
	kinds          []string
}

// mustRender renders the chart with vals and decodes its objects.
func mustRender(t *testing.T, vals map[string]any) *manifests {
	t.Helper()
	return mustRenderFor(t, vals, "")
}

func mustRenderFor(t *testing.T, vals map[string]any, kubeVersion string) *manifests {
	t.Helper()
	out, err := render(t, vals, kubeVersion)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	return decode(t, out)
}

func decode(t *testing.T, out map[string]string) *manifests {
	t.Helper()
	m := &manifests{}
	names := slices.Sorted(func(yield func(string) bool) {
		for k := range out {
			if !yield(k) {
				return
			}
		}
	})
	for _, name := range names {
		text := out[name]
		if strings.HasSuffix(name, "NOTES.txt") {
			m.Notes = text
			continue
		}
		for _, doc := range splitYAML(text) {
			var tm metav1.TypeMeta
			if err := yaml.Unmarshal([]byte(doc), &tm); err != nil {
				t.Fatalf("%s: not YAML: %v\n%s", name, err, doc)
			}
			var dst any
			switch tm.APIVersion + " " + tm.Kind {
			case "apps/v1 Deployment":
				m.Deployment = &appsv1.Deployment{}
				dst = m.Deployment
			case "v1 Service":
				m.Service = &corev1.Service{}
				dst = m.Service
			case "v1 ConfigMap":
				m.ConfigMap = &corev1.ConfigMap{}
				dst = m.ConfigMap
			case "v1 ServiceAccount":
				m.ServiceAccount = &corev1.ServiceAccount{}
				dst = m.ServiceAccount
			case "policy/v1 PodDisruptionBudget":
				m.PDB = &policyv1.PodDisruptionBudget{}
				dst = m.PDB
			case "autoscaling/v2 HorizontalPodAutoscaler":
				m.HPA = &autoscalingv2.HorizontalPodAutoscaler{}
				dst = m.HPA
			case "monitoring.coreos.com/v1 ServiceMonitor":
				m.ServiceMonitor = map[string]any{}
				dst = &m.ServiceMonitor
			default:
				t.Fatalf("%s: an object of %s %s, which the test does not know", name, tm.APIVersion, tm.Kind)
			}
			if err := yaml.UnmarshalStrict([]byte(doc), dst); err != nil {
				t.Fatalf("%s: %s %s does not decode strictly: %v\n%s", name, tm.APIVersion, tm.Kind, err, doc)
			}
			m.kinds = append(m.kinds, tm.Kind)
		}
	}
	return m
}

// splitYAML returns the non-empty documents of a rendered template.
func splitYAML(s string) []string {
	var docs []string
	for _, d := range strings.Split("\n"+s, "\n---") {
		empty := true
		for _, l := range strings.Split(d, "\n") {
			if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
				empty = false
				break
			}
		}
		if !empty {
			docs = append(docs, d)
		}
	}
	return docs
}

// container returns the Deployment's apipool container.
func (m *manifests) container(t *testing.T) *corev1.Container {
	t.Helper()
	if m.Deployment == nil {
		t.Fatal("no Deployment rendered")
	}
	cs := m.Deployment.Spec.Template.Spec.Containers
	if len(cs) != 1 || cs[0].Name != "apipool" {
		t.Fatalf("want one container named apipool, got %d", len(cs))
	}
	return &cs[0]
}

// config returns the ConfigMap's apipool.yaml.
func (m *manifests) config(t *testing.T) string {
	t.Helper()
	if m.ConfigMap == nil {
		t.Fatal("no ConfigMap rendered")
	}
	c, ok := m.ConfigMap.Data["apipool.yaml"]
	if !ok {
		t.Fatalf("the ConfigMap has no apipool.yaml: %v", m.ConfigMap.Data)
	}
	return c
}

// goCmd returns the go command on the PATH (make puts /usr/local/go/bin
// there), or "go", which then fails to start with an error saying so.
func goCmd() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return "go"
}

var (
	binOnce sync.Once
	binPath string
	binErr  error
	binDir  string
)

// apipoolBinary builds ./cmd/apipool with the Dockerfile's build line,
// from a copy of the build context (the repository less .dockerignore),
// once per test run: the binary the image ships.
func apipoolBinary(t *testing.T) string {
	t.Helper()
	binOnce.Do(func() {
		binDir, binErr = os.MkdirTemp("", "apipool-deploy-test-")
		if binErr != nil {
			return
		}
		binPath, binErr = buildFromDockerfile(binDir)
	})
	if binErr != nil {
		t.Fatalf("build the image's binary: %v", binErr)
	}
	return binPath
}

func TestMain(m *testing.M) {
	code := m.Run()
	for _, d := range []string{binDir, imgDir} {
		if d != "" {
			os.RemoveAll(d)
		}
	}
	os.Exit(code)
}

// run runs the binary with args and env (and nothing else of the test's
// environment), bounded by a minute.
func run(t *testing.T, bin string, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	dieWithTest(cmd)
	cmd.Env = env
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if err != nil {
		if ee, ok := err.(*exec.ExitError); ok {
			return o.String(), e.String(), ee.ExitCode()
		}
		t.Fatalf("run %s %v: %v", bin, args, err)
	}
	return o.String(), e.String(), 0
}

// setPath sets the value at a dotted path (a.b.c) of a values tree,
// creating the maps on the way.
func setPath(vals map[string]any, path string, v any) map[string]any {
	parts := strings.Split(path, ".")
	m := vals
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = v
	return vals
}

// values parses YAML values, as -f values.yaml gives them.
func values(t *testing.T, y string) map[string]any {
	t.Helper()
	var v map[string]any
	if err := yaml.Unmarshal([]byte(y), &v); err != nil {
		t.Fatalf("values: %v", err)
	}
	if v == nil {
		v = map[string]any{}
	}
	return v
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(fmt.Sprint(err))
	}
	return v
}
