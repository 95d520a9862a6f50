package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"sigs.k8s.io/yaml"
)

// The schemas the chart's manifests are validated against, as kubeconform
// -strict would: the Kubernetes API's OpenAPI (swagger.json of the
// k8s.io/kubernetes module, the release of k8s.io/api in go.mod) and, for
// the one custom resource (the ServiceMonitor), its CRD's openAPIV3Schema
// from the Prometheus Operator's module. Both come from the Go module
// proxy (go mod download, about 20 MB and 4 MB), without entering go.mod.
const (
	kubernetesModule = "k8s.io/kubernetes"
	kubernetesVer    = "v1.36.3"
	promOpModule     = "github.com/prometheus-operator/prometheus-operator"
	promOpVer        = "v0.85.0"
	serviceMonitorGV = "monitoring.coreos.com/v1"
)

// moduleDir downloads a module with go mod download (into the module
// cache, where it stays for the next run) and returns its directory.
func moduleDir(mod, version string) (string, error) {
	dir, err := os.MkdirTemp("", "apipool-openapi-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(dir)
	cmd := exec.Command(goCmd(), "mod", "download", "-json", mod+"@"+version)
	dieWithTest(cmd)
	cmd.Dir = dir // no go.mod: nothing is added to this module's
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=off")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	var r struct{ Dir, Error string }
	if jerr := json.Unmarshal(out, &r); jerr != nil || r.Error != "" || err != nil || r.Dir == "" {
		return "", fmt.Errorf("go mod download %s@%s: %v %s %s", mod, version, err, r.Error, stderr.String())
	}
	return r.Dir, nil
}

// kubeSchemas is the definitions of swagger.json (Kubernetes' objects)
// and the ServiceMonitor CRD, made JSON schemas (draft 4) that refuse
// unknown fields, compiled on demand.
type kubeSchemas struct {
	c     *jsonschema.Compiler
	defs  map[string]string // "apps/v1 Deployment" -> its definition
	mu    sync.Mutex
	cache map[string]*jsonschema.Schema
}

const schemaURL = "file:///kubernetes-" + kubernetesVer + ".json"

var (
	schemasOnce sync.Once
	schemas     *kubeSchemas
	schemasErr  error
)

func kubernetesSchemas(t *testing.T) *kubeSchemas {
	t.Helper()
	schemasOnce.Do(func() { schemas, schemasErr = loadSchemas() })
	if schemasErr != nil {
		t.Fatalf("the Kubernetes schemas: %v", schemasErr)
	}
	return schemas
}

func loadSchemas() (*kubeSchemas, error) {
	dir, err := moduleDir(kubernetesModule, kubernetesVer)
	if err != nil {
		return nil, err
	}
	b, err := os.ReadFile(filepath.Join(dir, "api", "openapi-spec", "swagger.json"))
	if err != nil {
		return nil, err
	}
	var swagger struct{ Definitions map[string]map[string]any }
	if err := json.Unmarshal(b, &swagger); err != nil {
		return nil, fmt.Errorf("swagger.json: %v", err)
	}
	ks := &kubeSchemas{defs: map[string]string{}, cache: map[string]*jsonschema.Schema{}}
	defs := map[string]any{}
	for name, d := range swagger.Definitions {
		if gvks, ok := d["x-kubernetes-group-version-kind"].([]any); ok {
			for _, g := range gvks {
				g := g.(map[string]any)
				gv := g["version"].(string)
				if g["group"] != "" {
					gv = g["group"].(string) + "/" + gv
				}
				ks.defs[gv+" "+g["kind"].(string)] = name
			}
		}
		defs[name] = strictSchema(d)
	}
	// A quantity is a string or a number (cpu: 1): its UnmarshalJSON
	// takes both; swagger.json says string only.
	defs["io.k8s.apimachinery.pkg.api.resource.Quantity"] = map[string]any{"type": []any{"string", "number"}}

	// The ServiceMonitor: its CRD's schema for v1, its metadata an
	// ObjectMeta (the CRD says only "object").
	dir, err = moduleDir(promOpModule, promOpVer)
	if err != nil {
		return nil, err
	}
	b, err = os.ReadFile(filepath.Join(dir, "example", "prometheus-operator-crd", "monitoring.coreos.com_servicemonitors.yaml"))
	if err != nil {
		return nil, err
	}
	var crd struct {
		Spec struct {
			Group    string
			Names    struct{ Kind string }
			Versions []struct {
				Name   string
				Schema struct {
					OpenAPIV3Schema map[string]any `json:"openAPIV3Schema"`
				}
			}
		}
	}
	if err := yaml.Unmarshal(b, &crd); err != nil {
		return nil, fmt.Errorf("the ServiceMonitor CRD: %v", err)
	}
	for _, v := range crd.Spec.Versions {
		gv := crd.Spec.Group + "/" + v.Name
		s := strictSchema(v.Schema.OpenAPIV3Schema).(map[string]any)
		s["properties"].(map[string]any)["metadata"] = map[string]any{"$ref": "#/definitions/io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"}
		name := "crd." + crd.Spec.Group + "." + v.Name + "." + crd.Spec.Names.Kind
		defs[name] = s
		ks.defs[gv+" "+crd.Spec.Names.Kind] = name
	}
	if ks.defs[serviceMonitorGV+" ServiceMonitor"] == "" {
		return nil, fmt.Errorf("the CRD of %s@%s has no ServiceMonitor %s", promOpModule, promOpVer, serviceMonitorGV)
	}

	ks.c = jsonschema.NewCompiler()
	ks.c.DefaultDraft(jsonschema.Draft4)
	if err := ks.c.AddResource(schemaURL, map[string]any{"definitions": defs}); err != nil {
		return nil, err
	}
	return ks, nil
}

// strictSchema returns an OpenAPI schema (swagger's or a CRD's) as a JSON
// schema that kubeconform -strict would apply: an object with properties
// and no additionalProperties refuses others (unless the schema says
// x-kubernetes-preserve-unknown-fields), int-or-string is an integer or a
// string, and the x-kubernetes-* extensions go.
func strictSchema(v any) any {
	s, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for k, x := range s {
		switch {
		case strings.HasPrefix(k, "x-"):
		case k == "properties" || k == "patternProperties" || k == "definitions":
			m := map[string]any{}
			for name, p := range x.(map[string]any) {
				m[name] = strictSchema(p)
			}
			out[k] = m
		case k == "items" || k == "additionalProperties" || k == "not":
			out[k] = strictSchema(x)
		case k == "allOf" || k == "anyOf" || k == "oneOf":
			var l []any
			for _, e := range x.([]any) {
				l = append(l, strictSchema(e))
			}
			out[k] = l
		default:
			out[k] = x
		}
	}
	if s["format"] == "int-or-string" || s["x-kubernetes-int-or-string"] == true {
		out["type"] = []any{"integer", "string"}
		delete(out, "format")
	}
	if _, ok := s["properties"]; ok && s["additionalProperties"] == nil && s["x-kubernetes-preserve-unknown-fields"] != true {
		out["additionalProperties"] = false
	}
	return out
}

// kubeRelease is the Kubernetes release of the schemas, as a cluster's
// version: v1.36.0.
func kubeRelease() string {
	major, rest, _ := strings.Cut(kubernetesVer, ".")
	minor, _, _ := strings.Cut(rest, ".")
	return major + "." + minor + ".0"
}

// validate checks one manifest (YAML) against the schema of its
// apiVersion and kind. Fields set to null are dropped first, as the API
// server drops them.
func (ks *kubeSchemas) validate(doc string) error {
	j, err := yaml.YAMLToJSON([]byte(doc))
	if err != nil {
		return err
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(j))
	if err != nil {
		return err
	}
	inst = dropNulls(inst)
	obj, _ := inst.(map[string]any)
	apiVersion, _ := obj["apiVersion"].(string)
	kind, _ := obj["kind"].(string)
	gvk := apiVersion + " " + kind
	def, ok := ks.defs[gvk]
	if !ok {
		return fmt.Errorf("no schema for apiVersion %q kind %q in Kubernetes %s", apiVersion, kind, kubernetesVer)
	}
	ks.mu.Lock()
	sch, ok := ks.cache[def]
	if !ok {
		sch, err = ks.c.Compile(schemaURL + "#/definitions/" + def)
		if err != nil {
			ks.mu.Unlock()
			return fmt.Errorf("compile %s: %v", def, err)
		}
		ks.cache[def] = sch
	}
	ks.mu.Unlock()
	if err := sch.Validate(inst); err != nil {
		return fmt.Errorf("%s %s: %v", gvk, def, err)
	}
	return nil
}

func dropNulls(v any) any {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if x == nil {
				delete(v, k)
			} else {
				v[k] = dropNulls(x)
			}
		}
	case []any:
		for i, x := range v {
			v[i] = dropNulls(x)
		}
	}
	return v
}

// documents renders the chart and returns its manifests by template
// (NOTES.txt left out).
func documents(t *testing.T, vals map[string]any, kubeVersion string) map[string][]string {
	t.Helper()
	out, err := render(t, vals, kubeVersion)
	if err != nil {
		t.Fatalf("render: %v", err)
	}
	docs := map[string][]string{}
	for name, text := range out {
		if !strings.HasSuffix(name, "NOTES.txt") {
			if d := splitYAML(text); len(d) > 0 {
				docs[name] = d
			}
		}
	}
	return docs
}

// everyPart turns on every optional part of the chart: the HPA, the
// ServiceMonitor (with TLS), Redis and ClickHouse with password Secrets,
// TLS files, variables, a claim for the state, the image by digest, and
// the pod's scheduling settings.
const everyPart = `
image: {repository: registry.example.com/apipool, digest: 'sha256:0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f0f'}
imagePullSecrets: [{name: regcred}]
autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 6, targetCPUUtilizationPercentage: 60}
serviceMonitor: {enabled: true, interval: 15s, scrapeTimeout: 10s, labels: {release: prom}, tlsConfig: {serverName: apipool}}
podDisruptionBudget: {enabled: true, maxUnavailable: 50%}
redis: {addr: 'redis:6379', username: apipool, db: 1, passwordSecret: {name: redis-auth, key: pw}}
clickhouse: {addrs: ['ch-0:9000', 'ch-1:9000'], username: apipool, passwordSecret: {name: ch-auth, key: password}}
secretMounts: {keys: apipool-keys, tls: apipool-tls}
config: {tls: {cert_file: tls/tls.crt, key_file: tls/tls.key}}
env: {TZ: Europe/Paris, GOMAXPROCS: 2}
secretEnv: {WEB_TOKEN: {secretName: tokens, key: web}}
state: {existingClaim: apipool-state}
serviceAccount: {create: true, name: proxy, annotations: {iam.example.com/role: apipool}}
podAnnotations: {example.com/team: platform}
podLabels: {team: platform}
resources: {requests: {cpu: 1, memory: 256Mi}, limits: {cpu: 2, memory: 1Gi}}
service: {type: LoadBalancer, annotations: {example.com/lb: internal}}
nodeSelector: {kubernetes.io/os: linux}
tolerations: [{key: dedicated, operator: Equal, value: proxy, effect: NoSchedule}]
affinity: {podAntiAffinity: {preferredDuringSchedulingIgnoredDuringExecution: [{weight: 100, podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: apipool}}}}]}}
topologySpreadConstraints: [{maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/name: apipool}}}]
priorityClassName: high
`

// The rendered chart, with the default values and with every optional
// part on, for an older and a current cluster, is valid against the
// Kubernetes API's OpenAPI schemas (and the ServiceMonitor against its
// CRD's): every field known, every value of its type, every required
// field there.
func TestChartOpenAPI(t *testing.T) {
	ks := kubernetesSchemas(t)
	// Helm's own default (1.20) and 1.29 render no pre-stop sleep; the
	// schemas' release does.
	current := kubeRelease()
	sets := []struct{ name, values, kube string }{
		{"defaults", "", current},
		{"defaults on 1.29 (no preStop sleep)", "", "v1.29.0"},
		{"defaults on Helm's default", "", ""},
		{"every part", everyPart, current},
		{"every part on 1.29", everyPart, "v1.29.0"},
		{"replicas and minAvailable", "replicaCount: 3\npodDisruptionBudget: {minAvailable: 2}\nserviceAccount: {create: false}\n", current},
	}
	seen := map[string]bool{}
	for _, s := range sets {
		t.Run(s.name, func(t *testing.T) {
			docs := documents(t, values(t, s.values), s.kube)
			if s.kube == current && !strings.Contains(strings.Join(docs["apipool/templates/deployment.yaml"], ""), "sleep:") {
				t.Errorf("no preStop sleep rendered for Kubernetes %s: not validated", current)
			}
			for name, ds := range docs {
				seen[filepath.Base(name)] = true
				for _, d := range ds {
					if err := ks.validate(d); err != nil {
						t.Errorf("%s: %v\n%s", name, err, d)
					}
				}
			}
		})
	}
	// Every template rendered in one of the sets.
	tpls, err := filepath.Glob(filepath.Join(chartDir, "templates", "*.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range tpls {
		if !seen[filepath.Base(p)] {
			t.Errorf("templates/%s rendered nothing in any value set: not validated", filepath.Base(p))
		}
	}
}

// The validation can fail: a mistake put into a rendered manifest (a
// wrong type, an unknown field, a missing required field, an unknown
// kind) is refused, with the field named.
func TestChartOpenAPIRefuses(t *testing.T) {
	ks := kubernetesSchemas(t)
	docs := documents(t, values(t, everyPart), kubeRelease())
	object := func(tpl string) map[string]any {
		t.Helper()
		ds := docs["apipool/templates/"+tpl]
		if len(ds) != 1 {
			t.Fatalf("templates/%s: %d documents", tpl, len(ds))
		}
		var m map[string]any
		if err := yaml.Unmarshal([]byte(ds[0]), &m); err != nil {
			t.Fatal(err)
		}
		return m
	}
	container := func(m map[string]any) map[string]any {
		return m["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["containers"].([]any)[0].(map[string]any)
	}
	cases := []struct {
		name, tpl, want string
		edit            func(m map[string]any)
	}{
		{"replicas as a word", "deployment.yaml", "replicas", func(m map[string]any) { m["spec"].(map[string]any)["replicas"] = "two" }},
		{"unknown container field", "deployment.yaml", "imagePullPolicyy", func(m map[string]any) { container(m)["imagePullPolicyy"] = "Always" }},
		{"container without a name", "deployment.yaml", "name", func(m map[string]any) { delete(container(m), "name") }},
		{"port as a list", "service.yaml", "port", func(m map[string]any) {
			m["spec"].(map[string]any)["ports"].([]any)[0].(map[string]any)["port"] = []any{8080}
		}},
		{"unknown metadata field", "configmap.yaml", "labelz", func(m map[string]any) { m["metadata"].(map[string]any)["labelz"] = map[string]any{"a": "b"} }},
		{"PDB with a float", "pdb.yaml", "maxUnavailable", func(m map[string]any) { m["spec"].(map[string]any)["maxUnavailable"] = 0.5 }},
		{"HPA maxReplicas as a string", "hpa.yaml", "maxReplicas", func(m map[string]any) { m["spec"].(map[string]any)["maxReplicas"] = "6" }},
		{"ServiceMonitor unknown endpoint field", "servicemonitor.yaml", "intervall", func(m map[string]any) {
			m["spec"].(map[string]any)["endpoints"].([]any)[0].(map[string]any)["intervall"] = "15s"
		}},
		{"ServiceMonitor metadata", "servicemonitor.yaml", "namespace", func(m map[string]any) { m["metadata"].(map[string]any)["namespace"] = 7 }},
		{"unknown kind", "service.yaml", "Servic", func(m map[string]any) { m["kind"] = "Servic" }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			m := object(c.tpl)
			if err := ks.validate(string(must(yaml.Marshal(m)))); err != nil {
				t.Fatalf("templates/%s before the change: %v", c.tpl, err)
			}
			c.edit(m)
			err := ks.validate(string(must(yaml.Marshal(m))))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("want an error naming %q, got %v", c.want, err)
			}
		})
	}
}

// The schemas are those of the Kubernetes release whose k8s.io/api this
// module decodes into (go.mod): v1.N.x for v0.N.x.
func TestOpenAPIVersion(t *testing.T) {
	gomod := string(must(os.ReadFile("go.mod")))
	m := regexp.MustCompile(`(?m)^\s*k8s\.io/api v0\.(\d+)\.\d+`).FindStringSubmatch(gomod)
	if m == nil {
		t.Fatal("no k8s.io/api in go.mod")
	}
	if want := "v1." + m[1] + "."; !strings.HasPrefix(kubernetesVer, want) {
		t.Errorf("the schemas are Kubernetes %s; go.mod has k8s.io/api v0.%s (want %sx)", kubernetesVer, m[1], want)
	}
	if slices.Contains([]string{"", "v0.0.0"}, promOpVer) {
		t.Error("no Prometheus Operator version")
	}
}
