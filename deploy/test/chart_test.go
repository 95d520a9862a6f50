package test

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v3/pkg/chartutil"
	"helm.sh/helm/v3/pkg/lint"
	"helm.sh/helm/v3/pkg/lint/support"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// helm lint finds nothing to say but INFO (an icon is recommended).
func TestChartLint(t *testing.T) {
	for _, kv := range []string{"1.25.0", "1.32.0"} {
		v, err := chartutil.ParseKubeVersion(kv)
		if err != nil {
			t.Fatal(err)
		}
		l := lint.AllWithKubeVersion(chartDir, nil, namespace, v)
		for _, m := range l.Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("helm lint (Kubernetes %s): %s", kv, m)
			}
		}
	}
}

// The default values render, and every object decodes strictly as its
// Kubernetes type.
func TestChartDefaults(t *testing.T) {
	m := mustRender(t, nil)
	for _, k := range []string{"Deployment", "Service", "ConfigMap", "ServiceAccount", "PodDisruptionBudget"} {
		if !slices.Contains(m.kinds, k) {
			t.Errorf("no %s rendered (got %v)", k, m.kinds)
		}
	}
	if m.HPA != nil {
		t.Error("an HPA by default")
	}
	if m.ServiceMonitor != nil {
		t.Error("a ServiceMonitor by default")
	}
	checkObjects(t, m)
}

// checkObjects checks what the API server, or the pod once started, would
// refuse: names, selectors that select the pods, ports and volumes that
// the references name, and the pod's security.
func checkObjects(t *testing.T, m *manifests) {
	t.Helper()
	d := m.Deployment
	pod := d.Spec.Template
	c := m.container(t)

	for _, name := range []string{d.Name, m.Service.Name, m.ConfigMap.Name} {
		if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			t.Errorf("name %q: %v", name, errs)
		}
	}
	for k, v := range d.Spec.Selector.MatchLabels {
		if pod.Labels[k] != v {
			t.Errorf("the Deployment's selector %s=%s does not select its pods (%v)", k, v, pod.Labels)
		}
	}
	for k, v := range m.Service.Spec.Selector {
		if pod.Labels[k] != v {
			t.Errorf("the Service's selector %s=%s does not select the pods (%v)", k, v, pod.Labels)
		}
	}
	if m.PDB != nil {
		for k, v := range m.PDB.Spec.Selector.MatchLabels {
			if pod.Labels[k] != v {
				t.Errorf("the PDB's selector %s=%s does not select the pods", k, v)
			}
		}
	}

	// Ports: named, and the Service's and probes' refer to them.
	ports := map[string]int32{}
	for _, p := range c.Ports {
		if errs := validation.IsValidPortName(p.Name); len(errs) > 0 {
			t.Errorf("container port name %q: %v", p.Name, errs)
		}
		ports[p.Name] = p.ContainerPort
	}
	portOf := func(what string, p intstr.IntOrString) int32 {
		if p.Type == intstr.Int {
			return p.IntVal
		}
		n, ok := ports[p.StrVal]
		if !ok {
			t.Errorf("%s names the port %q, which the container does not have (%v)", what, p.StrVal, ports)
		}
		return n
	}
	var svcPorts []string
	for _, p := range m.Service.Spec.Ports {
		portOf("the Service's port "+p.Name, p.TargetPort)
		svcPorts = append(svcPorts, p.Name)
	}
	if !slices.Contains(svcPorts, "proxy") || !slices.Contains(svcPorts, "admin") {
		t.Errorf("the Service's ports %v: want proxy and admin", svcPorts)
	}

	// Probes: on the admin listener's /healthz and /readyz.
	for _, p := range []struct {
		name, path string
		probe      *corev1.Probe
	}{{"liveness", "/healthz", c.LivenessProbe}, {"readiness", "/readyz", c.ReadinessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil {
			t.Errorf("no %s probe by HTTP GET", p.name)
			continue
		}
		if p.probe.HTTPGet.Path != p.path {
			t.Errorf("%s probe on %s, want %s", p.name, p.probe.HTTPGet.Path, p.path)
		}
		if n := portOf(p.name+" probe", p.probe.HTTPGet.Port); n != ports["admin"] {
			t.Errorf("%s probe on port %d, want the admin port %d", p.name, n, ports["admin"])
		}
	}

	// The pod and container run as a user other than root, on a root
	// file system they cannot write, with no capability.
	psc := pod.Spec.SecurityContext
	if psc == nil || psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot {
		t.Error("the pod is not runAsNonRoot")
	}
	if psc == nil || psc.RunAsUser == nil || *psc.RunAsUser == 0 {
		t.Error("the pod's runAsUser is not set to a user other than root")
	}
	if psc == nil || psc.FSGroup == nil {
		t.Error("no fsGroup: the key files (mode 0440) would not be readable by the proxy's user")
	}
	sc := c.SecurityContext
	if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem {
		t.Error("the root file system is writable")
	}
	if sc == nil || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation {
		t.Error("privilege escalation is allowed")
	}
	if sc == nil || sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") {
		t.Error("capabilities are not dropped")
	}
	if pod.Spec.AutomountServiceAccountToken == nil || *pod.Spec.AutomountServiceAccountToken {
		t.Error("the pod mounts a service account token it has no use for")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Errorf("no resource requests: %v", c.Resources.Requests)
	}

	// Volumes: every mount names a volume; the config is at the path the
	// image's CMD and the container's args give.
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		if errs := validation.IsDNS1123Label(v.Name); len(errs) > 0 {
			t.Errorf("volume name %q: %v", v.Name, errs)
		}
		vols[v.Name] = v
	}
	mounts := map[string]corev1.VolumeMount{}
	for _, vm := range c.VolumeMounts {
		if _, ok := vols[vm.Name]; !ok {
			t.Errorf("the mount of %s names no volume (%s)", vm.MountPath, vm.Name)
		}
		mounts[vm.MountPath] = vm
	}
	cfgMount, ok := mounts["/etc/apipool/apipool.yaml"]
	if !ok {
		t.Fatal("nothing mounted at /etc/apipool/apipool.yaml")
	}
	if v := vols[cfgMount.Name]; v.ConfigMap == nil || v.ConfigMap.Name != m.ConfigMap.Name || cfgMount.SubPath != "apipool.yaml" {
		t.Errorf("/etc/apipool/apipool.yaml is not the ConfigMap's apipool.yaml: %+v", cfgMount)
	}
	if want := []string{"serve", "-config", "/etc/apipool/apipool.yaml"}; !slices.Equal(c.Args, want) {
		t.Errorf("args %q, want %q", c.Args, want)
	}
	// What the proxy writes (a spill directory, SQLite) and /tmp are
	// volumes: the root file system is read-only.
	for _, p := range []string{"/var/lib/apipool", "/tmp"} {
		if _, ok := mounts[p]; !ok {
			t.Errorf("nothing mounted at %s", p)
		}
	}
	// Secrets are mounted 0440: the proxy refuses key files open to
	// others.
	for _, v := range pod.Spec.Volumes {
		if v.Secret == nil {
			continue
		}
		if v.Secret.DefaultMode == nil {
			t.Errorf("the Secret %s is mounted with the kubelet's default mode 0644, open to other users", v.Secret.SecretName)
		} else if *v.Secret.DefaultMode&0o007 != 0 {
			t.Errorf("the Secret %s is mounted open to other users (defaultMode %#o)", v.Secret.SecretName, *v.Secret.DefaultMode)
		}
	}
}

// The values schema takes the defaults and the documented value sets,
// and refuses wrong types and unknown keys with an error that names them.
func TestChartValuesSchema(t *testing.T) {
	good := map[string]string{
		"defaults":   ``,
		"redis":      "redis: {addr: 'redis:6379', passwordSecret: {name: redis, key: password}}\nreplicaCount: 3\n",
		"clickhouse": "clickhouse: {addrs: ['clickhouse:9000'], username: apipool, passwordSecret: {name: ch, key: password}}\n",
		"tls":        "secretMounts: {tls: apipool-tls}\nconfig: {tls: {cert_file: tls/tls.crt, key_file: tls/tls.key}}\n",
		"digest":     "image: {repository: registry.example.com/apipool, digest: 'sha256:" + strings.Repeat("ab", 32) + "'}\n",
		"hpa":        "autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 4}\n",
		"monitor":    "serviceMonitor: {enabled: true, labels: {release: prom}}\n",
		"env":        "env: {TZ: Europe/Paris, GOMAXPROCS: 2}\nsecretEnv: {APIPOOL_TOKEN: null, WEB_TOKEN: {secretName: tokens, key: web}}\n",
		"no pdb":     "podDisruptionBudget: {enabled: false}\n",
	}
	for name, y := range good {
		t.Run("good/"+name, func(t *testing.T) {
			if _, err := render(t, values(t, y), ""); err != nil {
				t.Errorf("refused: %v", err)
			}
		})
	}
	bad := []struct{ name, values, want string }{
		{"unknown top-level key", "replicas: 3\n", "replicas"},
		{"misspelt nested key", "redis: {adr: 'redis:6379'}\n", "adr"},
		{"string for a number", "replicaCount: three\n", "replicaCount"},
		{"port out of range", "ports: {proxy: 70000}\n", "proxy"},
		{"pull policy", "image: {pullPolicy: Sometimes}\n", "pullPolicy"},
		{"digest", "image: {digest: latest}\n", "digest"},
		{"unknown config setting", "config: {upstream: []}\n", "upstream"},
		{"config listen", "config: {listen: ':80'}\n", "listen"},
		{"config admin listen", "config: {admin: {listen: ':81'}}\n", "listen"},
		{"env name", "env: {'9X': y}\n", "9X"},
		{"secretEnv without key", "secretEnv: {X: {secretName: s}}\n", "key"},
		{"secret in values", "secretEnv: {X: {secretName: s, key: k, value: sk-123}}\n", "value"},
		{"secretMounts name", "secretMounts: {'Keys/..': s}\n", "Keys/.."},
		{"bool as string", "autoscaling: {enabled: 'yes'}\n", "enabled"},
	}
	for _, c := range bad {
		t.Run("bad/"+c.name, func(t *testing.T) {
			_, err := render(t, values(t, c.values), "")
			if err == nil {
				t.Fatalf("%s: accepted", strings.TrimSpace(c.values))
			}
			if !strings.Contains(err.Error(), "schema") || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: want the schema's error naming %q, got: %v", strings.TrimSpace(c.values), c.want, err)
			}
		})
	}
}

// Every setting of apipool.example.yaml (which uses them all) is one the
// schema lets through config, but listen and admin.listen, which the
// chart writes.
func TestChartSchemaTakesEverySetting(t *testing.T) {
	var cfg map[string]any
	if err := yaml.Unmarshal(must(os.ReadFile(filepath.Join(repoRoot, "cmd", "apipool", "apipool.example.yaml"))), &cfg); err != nil {
		t.Fatal(err)
	}
	delete(cfg, "listen")
	if a, ok := cfg["admin"].(map[string]any); ok {
		delete(a, "listen")
	}
	if _, err := render(t, map[string]any{"config": cfg}, ""); err != nil {
		t.Errorf("the example's settings as config (a new setting of apipool.yaml goes into values.schema.json's config too): %v", err)
	}
}

// What the templates refuse, with a message that says what to do.
func TestChartTemplateErrors(t *testing.T) {
	cases := []struct{ name, values, want string }{
		{"redis twice", "redis: {addr: 'r:6379'}\nconfig: {redis: {addr: 'r:6379'}}\n", "redis: given both"},
		{"recorder twice", "clickhouse: {addrs: ['c:9000']}\nconfig: {recorder: {type: memory}}\n", "recorder: given both"},
		{"same ports", "ports: {proxy: 8080, admin: 8080}\n", "must differ"},
		{"monitor without metrics", "serviceMonitor: {enabled: true}\nconfig: {telemetry: {prometheus: false}}\n", "config.telemetry.prometheus"},
		{"reserved variable", "secretEnv: {APIPOOL_REDIS_PASSWORD: {secretName: s, key: k}}\n", "APIPOOL_REDIS_PASSWORD"},
		{"variable twice", "env: {APIPOOL_TOKEN: x}\n", "given both in env and in secretEnv"},
		{"hpa bounds", "autoscaling: {enabled: true, minReplicas: 5, maxReplicas: 2}\n", "minReplicas"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := render(t, values(t, c.values), "")
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("want an error saying %q, got %v", c.want, err)
			}
		})
	}
}

func checksum(t *testing.T, m *manifests) string {
	t.Helper()
	s := m.Deployment.Spec.Template.Annotations["checksum/config"]
	if s == "" {
		t.Fatal("no checksum/config annotation on the pod template")
	}
	return s
}

// A change of the config changes the pod template (so the pods roll);
// a change elsewhere does not touch the checksum.
func TestChartConfigChecksum(t *testing.T) {
	base := mustRender(t, nil)
	sum := checksum(t, base)
	data := base.config(t)
	h := sha256.Sum256([]byte(strings.TrimSuffix(data, "\n")))
	if sum != hex.EncodeToString(h[:]) {
		t.Errorf("checksum/config %s is not the SHA-256 of the ConfigMap's apipool.yaml", sum)
	}
	changes := map[string]map[string]any{
		"config.log.level":  setPath(map[string]any{}, "config.log.level", "debug"),
		"ports.proxy":       setPath(map[string]any{}, "ports.proxy", 8081),
		"redis.addr":        setPath(map[string]any{}, "redis.addr", "redis:6379"),
		"clickhouse.addrs":  setPath(map[string]any{}, "clickhouse.addrs", []any{"ch:9000"}),
		"config.upstreams":  values(t, "config: {upstreams: [{name: x, prefix: /x, target: 'https://x.example', keys: {file: keys/x.keys}}]}"),
		"config.tokens env": values(t, "config: {tokens: [{name: default, env: OTHER_TOKEN}]}"),
	}
	for name, vals := range changes {
		m := mustRender(t, vals)
		if m.config(t) == data {
			t.Errorf("%s: apipool.yaml unchanged", name)
		}
		if checksum(t, m) == sum {
			t.Errorf("%s changed apipool.yaml, not checksum/config: the pods would not roll", name)
		}
	}
	same := mustRender(t, values(t, "resources: {requests: {cpu: 1}}\nreplicaCount: 2\n"))
	if checksum(t, same) != sum {
		t.Error("checksum/config changed with the config unchanged")
	}
}

// The Deployment and friends follow the values: replicas or an HPA, the
// ServiceMonitor, the PDB, the image, the pre-stop pause by Kubernetes
// version, the variables from Secrets.
func TestChartValues(t *testing.T) {
	m := mustRender(t, values(t, "autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 6}\nreplicaCount: 9\n"))
	if m.HPA == nil || m.HPA.Spec.MaxReplicas != 6 || *m.HPA.Spec.MinReplicas != 2 || m.HPA.Spec.ScaleTargetRef.Name != m.Deployment.Name {
		t.Errorf("HPA: %+v", m.HPA)
	}
	if m.Deployment.Spec.Replicas != nil {
		t.Error("the Deployment sets replicas under an HPA (each upgrade would reset them)")
	}
	if !strings.Contains(m.Notes, "without Redis") {
		t.Errorf("NOTES: no warning about replicas without Redis:\n%s", m.Notes)
	}

	m = mustRender(t, values(t, "replicaCount: 3\n"))
	if *m.Deployment.Spec.Replicas != 3 {
		t.Errorf("replicas %d, want 3", *m.Deployment.Spec.Replicas)
	}

	m = mustRender(t, values(t, "serviceMonitor: {enabled: true, interval: 15s, labels: {release: prom}}\n"))
	if m.ServiceMonitor == nil {
		t.Fatal("no ServiceMonitor")
	}
	spec := m.ServiceMonitor["spec"].(map[string]any)
	ep := spec["endpoints"].([]any)[0].(map[string]any)
	if ep["port"] != "admin" || ep["path"] != "/metrics" || ep["interval"] != "15s" || ep["scheme"] != "http" {
		t.Errorf("ServiceMonitor endpoint %v", ep)
	}
	if md := m.ServiceMonitor["metadata"].(map[string]any); md["labels"].(map[string]any)["release"] != "prom" {
		t.Errorf("ServiceMonitor labels %v", md["labels"])
	}

	m = mustRender(t, values(t, "podDisruptionBudget: {enabled: false}\n"))
	if m.PDB != nil {
		t.Error("a PDB though disabled")
	}
	m = mustRender(t, values(t, "podDisruptionBudget: {minAvailable: 1}\n"))
	if m.PDB.Spec.MinAvailable == nil || m.PDB.Spec.MinAvailable.IntValue() != 1 || m.PDB.Spec.MaxUnavailable != nil {
		t.Errorf("PDB %+v, want minAvailable 1 only", m.PDB.Spec)
	}

	digest := "sha256:" + strings.Repeat("0f", 32)
	m = mustRender(t, values(t, "image: {repository: reg.example/apipool, tag: v1, digest: '"+digest+"'}\n"))
	if img := m.container(t).Image; img != "reg.example/apipool@"+digest {
		t.Errorf("image %s", img)
	}
	m = mustRender(t, values(t, "image: {repository: reg.example/apipool, tag: v1.2.3}\n"))
	if img := m.container(t).Image; img != "reg.example/apipool:v1.2.3" {
		t.Errorf("image %s", img)
	}

	// The pre-stop pause (lifecycle sleep) exists from Kubernetes 1.30.
	if m := mustRenderFor(t, nil, "v1.29.0"); m.container(t).Lifecycle != nil {
		t.Error("a preStop sleep on Kubernetes 1.29, which has no sleep action")
	}
	if m := mustRenderFor(t, nil, "v1.31.0"); m.container(t).Lifecycle == nil || m.container(t).Lifecycle.PreStop.Sleep == nil || m.container(t).Lifecycle.PreStop.Sleep.Seconds != 5 {
		t.Errorf("no 5s preStop sleep on Kubernetes 1.31: %+v", m.container(t).Lifecycle)
	}

	// Secrets reach the container as references, never as values.
	m = mustRender(t, values(t, "redis: {addr: 'redis:6379', passwordSecret: {name: redis-auth, key: pw}}\nclickhouse: {addrs: ['ch:9000'], passwordSecret: {name: ch-auth, key: password}}\n"))
	env := map[string]corev1.EnvVar{}
	for _, e := range m.container(t).Env {
		env[e.Name] = e
	}
	for name, ref := range map[string][2]string{
		"APIPOOL_TOKEN":               {"apipool-tokens", "default"},
		"APIPOOL_REDIS_PASSWORD":      {"redis-auth", "pw"},
		"APIPOOL_CLICKHOUSE_PASSWORD": {"ch-auth", "password"},
	} {
		e, ok := env[name]
		if !ok || e.Value != "" || e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
			t.Errorf("%s: want a secretKeyRef, got %+v", name, e)
			continue
		}
		if r := e.ValueFrom.SecretKeyRef; r.Name != ref[0] || r.Key != ref[1] {
			t.Errorf("%s from %s/%s, want %s/%s", name, r.Name, r.Key, ref[0], ref[1])
		}
	}
	cfg := m.config(t)
	for _, want := range []string{"password: ${APIPOOL_REDIS_PASSWORD}", "password: ${APIPOOL_CLICKHOUSE_PASSWORD}", "addr: redis:6379", "type: clickhouse"} {
		if !strings.Contains(cfg, want) {
			t.Errorf("apipool.yaml lacks %q:\n%s", want, cfg)
		}
	}
}

// A fake of what the kubelet gives the container: the Secrets' entries
// and the variables' values. Fake secrets: long enough for tokens.
var fakeSecrets = map[string]map[string]string{
	"apipool-keys":   {"openai.keys": "k0 sk-test-0000000000000000000000\nk1 sk-test-1111111111111111111111\n", "gemini.keys": "AIzaTest000000000000000000000\n"},
	"apipool-tokens": {"default": "test-token-0123456789abcdef"},
	"tokens":         {"web": "test-token-web-0123456789abcdef"},
	"redis-auth":     {"pw": "redis-password"},
	"ch-auth":        {"password": "clickhouse-password"},
	"pg":             {"dsn": "postgres://apipool:pw@pg:5432/apipool"},
}

// podFiles lays out, under dir, what the pod would see under /etc/apipool:
// apipool.yaml from the ConfigMap, and each Secret volume mounted there
// as the kubelet writes it (the entries are symbolic links through ..data
// to a directory of the files, with the volume's defaultMode; see
// writeSecret). It returns the config file's path and the container's
// environment (its variables, secret ones resolved from fakeSecrets).
// Paths outside /etc/apipool (the state volume) are not laid out: the
// config's relative paths start at /etc/apipool.
func podFiles(t *testing.T, m *manifests, dir string) (string, []string) {
	t.Helper()
	pod := m.Deployment.Spec.Template.Spec
	c := m.container(t)
	vols := map[string]corev1.Volume{}
	for _, v := range pod.Volumes {
		vols[v.Name] = v
	}
	cfgPath := filepath.Join(dir, "apipool.yaml")
	if err := os.WriteFile(cfgPath, []byte(m.config(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, vm := range c.VolumeMounts {
		v := vols[vm.Name]
		if v.Secret == nil {
			continue
		}
		if vm.SubPath != "" {
			t.Fatalf("the Secret %s is mounted with a subPath: the kubelet never updates such a file", v.Secret.SecretName)
		}
		rel, ok := strings.CutPrefix(vm.MountPath, "/etc/apipool/")
		if !ok {
			t.Fatalf("the Secret %s is mounted at %s, outside /etc/apipool", v.Secret.SecretName, vm.MountPath)
		}
		entries, ok := fakeSecrets[v.Secret.SecretName]
		if !ok {
			t.Fatalf("the test has no fake of the Secret %s", v.Secret.SecretName)
		}
		mode := os.FileMode(0o644) // the kubelet's default
		if v.Secret.DefaultMode != nil {
			mode = os.FileMode(*v.Secret.DefaultMode)
		}
		writeSecret(t, filepath.Join(dir, filepath.FromSlash(rel)), mode, entries)
	}
	env := []string{"PATH=/usr/local/bin", "HOME=" + dir}
	for _, e := range c.Env {
		switch {
		case e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil:
			r := e.ValueFrom.SecretKeyRef
			v, ok := fakeSecrets[r.Name][r.Key]
			if !ok {
				t.Fatalf("%s: the test has no fake of %s/%s", e.Name, r.Name, r.Key)
			}
			env = append(env, e.Name+"="+v)
		case e.ValueFrom != nil:
			t.Fatalf("%s: a valueFrom the test does not fake", e.Name)
		default:
			env = append(env, e.Name+"="+e.Value)
		}
	}
	return cfgPath, env
}

// writeSecret writes a Secret volume's entries into dir as the kubelet's
// atomic writer does, first and on every update of the Secret: the files
// go into a new directory, ..data (a symbolic link) is switched to it by
// a rename, each entry is a symbolic link to ..data/ENTRY, and the old
// directory is removed.
func writeSecret(t *testing.T, dir string, mode os.FileMode, entries map[string]string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	old, _ := os.Readlink(filepath.Join(dir, "..data"))
	ts, err := os.MkdirTemp(dir, "..ts-")
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range entries {
		p := filepath.Join(ts, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chmod(ts, 0o755); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(dir, "..data_tmp")
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
		t.Fatal(err)
	}
	for name := range entries {
		link := filepath.Join(dir, name)
		if _, err := os.Lstat(link); err == nil {
			continue
		}
		if err := os.Symlink(filepath.Join("..data", name), link); err != nil {
			t.Fatal(err)
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			t.Fatal(err)
		}
	}
}

// The chart's apipool.yaml, with the files and variables its Deployment
// gives the container, is valid for the image's binary (apipool validate:
// the real config loader, the keys read from the mounted files), for the
// default values and the documented value sets.
func TestChartConfigValidForApipool(t *testing.T) {
	bin := apipoolBinary(t)
	cases := []struct{ name, values, want string }{
		{"defaults", ``, "ok (1 upstreams, 2 keys, 1 tokens)"},
		{"redis and clickhouse", "redis: {addr: 'redis:6379', passwordSecret: {name: redis-auth, key: pw}}\nclickhouse: {addrs: ['ch:9000'], passwordSecret: {name: ch-auth, key: password}}\nreplicaCount: 3\n", "ok (1 upstreams, 2 keys, 1 tokens)"},
		{"redis without password", "redis: {addr: 'redis:6379', db: 2, prefix: pool}\n", "ok"},
		{"two upstreams, tokens by hash and by variable", `
config:
  tokens:
    - {name: batch, sha256: 2c624232cdd221771294dfbb310aca000a0df6ac8b66b696d90ef06fdefb64a3, upstreams: [openai]}
    - {name: web, env: WEB_TOKEN}
  upstreams:
    - {name: openai, prefix: /openai, target: 'https://api.openai.com', keys: {file: keys/openai.keys}}
    - {name: gemini, host: gemini.proxy.internal, target: 'https://generativelanguage.googleapis.com', keys: {file: /etc/apipool/keys/gemini.keys}, inject: 'header:x-goog-api-key'}
  dashboard: {enabled: true, users: [{name: ops, password_sha256: 8d969eef6ecad3c29a3a629280e686cf0c3f5d5a86aff3ca12020c923adc6c92}]}
secretEnv: {APIPOOL_TOKEN: null, WEB_TOKEN: {secretName: tokens, key: web}}
env: {TZ: UTC}
`, "ok (2 upstreams, 3 keys, 2 tokens)"},
		{"postgres DSN from a Secret", "config: {recorder: {type: sql, sql: {driver: postgres, dsn: '${APIPOOL_PG_DSN}'}}}\nsecretEnv: {APIPOOL_PG_DSN: {secretName: pg, key: dsn}}\n", "ok"},
		{"monitor", "serviceMonitor: {enabled: true}\n", "ok"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := mustRender(t, values(t, c.values))
			dir := t.TempDir()
			// Absolute paths under /etc/apipool are the pod's; here they
			// are under dir, where the relative ones resolve.
			cfgPath, env := podFiles(t, m, dir)
			text := strings.ReplaceAll(m.config(t), "/etc/apipool/", dir+"/")
			if err := os.WriteFile(cfgPath, []byte(text), 0o644); err != nil {
				t.Fatal(err)
			}
			stdout, stderr, code := run(t, bin, env, "validate", "-config", cfgPath)
			if code != 0 || !strings.Contains(stdout, c.want) {
				t.Fatalf("apipool validate: status %d, want 0 and %q\nstdout: %s\nstderr: %s\napipool.yaml:\n%s", code, c.want, stdout, stderr, text)
			}
		})
	}
}

// What apipool refuses in the chart's config is refused when the chart's
// output is validated: the check above can fail. Among what it catches:
// a key file mounted open to other users, a token variable the
// Deployment does not set, a config error of the user's.
func TestChartConfigRefusedByApipool(t *testing.T) {
	bin := apipoolBinary(t)
	cases := []struct {
		name, values string
		edit         func(m *manifests)
		want         string
	}{
		{"bad target", "config: {upstreams: [{name: openai, prefix: /openai, target: 'ftp://x', keys: {file: keys/openai.keys}}]}\n", nil, "upstreams[0].target"},
		{"key file not mounted", "config: {upstreams: [{name: openai, prefix: /openai, target: 'https://x.example', keys: {file: keys/other.keys}}]}\n", nil, "upstreams[0].keys.file"},
		{"token variable not set", "secretEnv: {APIPOOL_TOKEN: null}\n", nil, "APIPOOL_TOKEN"},
		{"key files open to others", "", func(m *manifests) {
			mode := int32(0o444)
			for i := range m.Deployment.Spec.Template.Spec.Volumes {
				if s := m.Deployment.Spec.Template.Spec.Volumes[i].Secret; s != nil {
					s.DefaultMode = &mode
				}
			}
		}, "open to other users"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := mustRender(t, values(t, c.values))
			if c.edit != nil {
				c.edit(m)
			}
			cfgPath, env := podFiles(t, m, t.TempDir())
			stdout, stderr, code := run(t, bin, env, "validate", "-config", cfgPath)
			if code != 2 || !strings.Contains(stderr, c.want) {
				t.Errorf("apipool validate: status %d, want 2 and an error naming %q\nstdout: %s\nstderr: %s", code, c.want, stdout, stderr)
			}
			for _, s := range fakeSecrets {
				for _, v := range s {
					for _, line := range strings.Split(v, "\n") {
						for _, f := range strings.Fields(line) {
							if len(f) >= 8 && strings.Contains(stderr, f) {
								t.Errorf("the error shows a secret (%s...)", f[:4])
							}
						}
					}
				}
			}
		})
	}
}
