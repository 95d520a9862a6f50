package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const goodHash = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"

// writeKeys writes a key file with mode perm and returns its path.
func writeKeys(t *testing.T, content string, perm os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p, perm); err != nil {
		t.Fatal(err)
	}
	return p
}

func minimal(keyFile string) string {
	return `tokens:
  - name: a
    sha256: ` + goodHash + `
upstreams:
  - name: openai
    prefix: /openai
    target: https://api.openai.com
    keys: {file: ` + keyFile + `}
`
}

func TestMinimalDefaults(t *testing.T) {
	kf := writeKeys(t, "# comment\n\nsk-one-AAAA\nnamed sk-two-BBBB\n", 0o600)
	c, err := Parse("apipool.yaml", []byte(minimal(kf)))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != DefaultListen || c.Server.ReadHeaderTimeout != DefaultReadHeaderTimeout || c.Recorder.Type != "memory" {
		t.Errorf("defaults: %+v", c)
	}
	u := c.Upstreams[0]
	if len(u.Keys) != 2 || u.Keys[1].ID != "openai/named" || !strings.HasPrefix(u.Keys[0].ID, "openai/") || len(u.Keys[0].ID) != len("openai/")+8 {
		t.Fatalf("keys: %v", u.Keys)
	}
	if u.Keys[0].Secret.Reveal() != "sk-one-AAAA" || u.Inject.Kind != "bearer" || u.Target.String() != "https://api.openai.com" {
		t.Errorf("upstream: %+v", u)
	}
	if c.Tokens[0].MaxBody != DefaultMaxBody {
		t.Errorf("token max body %d", c.Tokens[0].MaxBody)
	}
}

func TestEnvExpansion(t *testing.T) {
	t.Setenv("APIPOOL_T_TARGET", "https://example.com/api/")
	t.Setenv("APIPOOL_T_KEYS", "sk-x-1111, id2 sk-y-2222\nsk-z-3333")
	t.Setenv("APIPOOL_T_TOKEN", "a-token-that-is-long-enough")
	t.Setenv("APIPOOL_T_PORT", "9999")
	t.Setenv("APIPOOL_T_PW", "pa$$word")
	y := `listen: 127.0.0.1:${APIPOOL_T_PORT}
tokens:
  - name: a
    env: APIPOOL_T_TOKEN
upstreams:
  - name: x
    prefix: /x
    target: ${APIPOOL_T_TARGET}
    keys: {env: APIPOOL_T_KEYS}
    inject: header:x-api-key
    max_attempts: 2
redis:
  addr: 127.0.0.1:6379
  password: ${APIPOOL_T_PW}
`
	c, err := Parse("f.yaml", []byte(y))
	if err != nil {
		t.Fatal(err)
	}
	if c.Listen != "127.0.0.1:9999" || c.Upstreams[0].Target.String() != "https://example.com/api" || c.Redis.Password != "pa$$word" {
		t.Errorf("expanded: listen %q target %q password %q", c.Listen, c.Upstreams[0].Target, c.Redis.Password)
	}
	if n := len(c.Upstreams[0].Keys); n != 3 || c.Upstreams[0].Keys[1].ID != "x/id2" {
		t.Errorf("keys from env: %v", c.Upstreams[0].Keys)
	}
	if c.Upstreams[0].Inject.Name != "X-Api-Key" {
		t.Errorf("inject %+v", c.Upstreams[0].Inject)
	}
}

// TestErrors checks that each mistake is reported with its line and field.
func TestErrors(t *testing.T) {
	kf := writeKeys(t, "sk-one\n", 0o600)
	base := minimal(kf)
	cases := []struct {
		name, yaml, want string
	}{
		{"empty", "", "f.yaml: the file is empty"},
		{"unknown setting", base + "listn: x\n", "f.yaml:9: listn: unknown setting; did you mean listen?"},
		{"unknown nested setting", strings.Replace(base, "    prefix:", "    prefx: /a\n    prefix:", 1), "f.yaml:6: upstreams[0].prefx: unknown setting; did you mean prefix?"},
		{"bad target", strings.Replace(base, "https://api.openai.com", "ftp://x", 1), "f.yaml:7: upstreams[0].target: want an http or https URL"},
		{"bad duration", base + "server: {read_timeout: soon}\n", `f.yaml:9: server.read_timeout: want a duration such as 500ms, 30s`},
		{"zero header timeout", base + "server: {read_header_timeout: 0s}\n", "f.yaml:9: server.read_header_timeout: 0 would let a client hold"},
		{"bad int", strings.Replace(base, "    keys:", "    max_attempts: many\n    keys:", 1), `f.yaml:8: upstreams[0].max_attempts: want an integer`},
		{"unset variable", strings.Replace(base, "https://api.openai.com", "${APIPOOL_NOT_SET_X}", 1), "f.yaml:7: upstreams[0].target: environment variable APIPOOL_NOT_SET_X is not set"},
		{"lone dollar", strings.Replace(base, "/openai", "/open$ai", 1), "f.yaml:6: upstreams[0].prefix: a lone $"},
		{"bad hash", strings.Replace(base, goodHash, "abc", 1), "f.yaml:3: tokens[0].sha256: want 64 hex digits"},
		{"no tokens", strings.Replace(base, "tokens:\n  - name: a\n    sha256: "+goodHash+"\n", "", 1), "f.yaml: tokens: no client token configured"},
		{"literal password", base + "redis: {addr: 'r:6379', password: hunter2}\n", "f.yaml:9: redis.password: is a secret: write it as ${VAR}"},
		{"literal clickhouse password", base + "recorder: {type: clickhouse, clickhouse: {password: hunter2}}\n", "f.yaml:9: recorder.clickhouse.password: is a secret"},
		{"reserved prefix", strings.Replace(base, "/openai", "/metrics", 1), "f.yaml:6: upstreams[0].prefix: \"/metrics\" is taken"},
		{"bad strategy", strings.Replace(base, "    keys:", "    strategy: fastest\n    keys:", 1), "f.yaml:8: upstreams[0].strategy:"},
		{"bad inject", strings.Replace(base, "    keys:", "    inject: cookie\n    keys:", 1), "f.yaml:8: upstreams[0].inject: want bearer, header:NAME or query:NAME"},
		{"bad inject header name", strings.Replace(base, "    keys:", "    inject: 'header:X Api Key'\n    keys:", 1), "f.yaml:8: upstreams[0].inject: want bearer, header:NAME or query:NAME"},
		{"key rate above the pool's bound", strings.Replace(base, "    keys:", "    key_limits: {per_second: 2000000}\n    keys:", 1), "f.yaml:8: upstreams[0].key_limits.per_second: want 0 to 1000000"},
		{"key per minute above the pool's bound", strings.Replace(base, "    keys:", "    key_limits: {per_minute: 20000000}\n    keys:", 1), "f.yaml:8: upstreams[0].key_limits.per_minute: want 0 to 10000000"},
		{"max_cooldown below the default cooldown", strings.Replace(base, "    keys:", "    max_cooldown: 1s\n    keys:", 1), "f.yaml:8: upstreams[0].cooldown: want 0 < cooldown <= max_cooldown"},
		{"bad code", strings.Replace(base, "    keys:", "    classifier: {rate_limit_codes: [429, 999]}\n    keys:", 1), "f.yaml:8: upstreams[0].classifier.rate_limit_codes[1]: 999 is not an HTTP status code"},
		{"missing key env", strings.Replace(base, "{file: "+kf+"}", "{env: APIPOOL_NO_KEYS_X}", 1), "f.yaml:8: upstreams[0].keys.env: environment variable APIPOOL_NO_KEYS_X is not set"},
		{"dashboard without users", base + "dashboard: {enabled: true}\n", "f.yaml:9: dashboard.users: the dashboard needs at least one user"},
		{"unknown token upstream", strings.Replace(base, "    sha256: "+goodHash, "    sha256: "+goodHash+"\n    upstreams: [nope]", 1), `f.yaml:4: tokens[0].upstreams[0]: no upstream is named "nope"`},
		{"two documents", base + "---\nlisten: x\n", "more than one YAML document"},
		{"not a mapping", "- a\n- b\n", "f.yaml:1:"},
		{"listen port not a number", base + "listen: '127.0.0.1:notaport'\n", "f.yaml:9: listen: want host:port with a port from 0 to 65535"},
		{"listen port too large", base + "listen: '127.0.0.1:99999'\n", "f.yaml:9: listen: want host:port with a port from 0 to 65535"},
		{"list for a scalar", strings.Replace(base, "/openai", "[a, b]", 1), "f.yaml:6: upstreams[0].prefix: want a single value, got a list"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			var es Errors
			if !errors.As(err, &es) {
				t.Fatalf("error %T, want Errors", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error:\n%v\nwant it to contain:\n%s", err, c.want)
			}
		})
	}
}

func TestSeveralErrorsReported(t *testing.T) {
	y := `tokens:
  - name: a
    sha256: nothex
upstreams:
  - name: u
    target: nope
    keys: {env: APIPOOL_NOT_SET_Y}
`
	_, err := Parse("f.yaml", []byte(y))
	es, _ := err.(Errors)
	if len(es) < 4 {
		t.Fatalf("want at least 4 errors, got:\n%v", err)
	}
}

func TestKeyFile(t *testing.T) {
	t.Run("readable by others", func(t *testing.T) {
		kf := writeKeys(t, "sk-secret-CANARY\n", 0o644)
		_, err := Parse("f.yaml", []byte(minimal(kf)))
		if err == nil || !strings.Contains(err.Error(), "f.yaml:8: upstreams[0].keys.file: key file "+kf+": open to other users (mode 0644)") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("group may read", func(t *testing.T) {
		kf := writeKeys(t, "sk-secret-CANARY\n", 0o640)
		if _, err := Parse("f.yaml", []byte(minimal(kf))); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing", func(t *testing.T) {
		_, err := Parse("f.yaml", []byte(minimal("/nonexistent/keys")))
		if err == nil || !strings.Contains(err.Error(), "key file /nonexistent/keys: no such file or directory") {
			t.Fatalf("err = %v", err)
		}
	})
	cases := []struct{ name, content, want string }{
		{"duplicate secret", "a sk-secret-CANARY\nb sk-secret-CANARY\n", "line 2: the same secret as"},
		{"duplicate id", "a sk-secret-CANARY1\na sk-secret-CANARY2\n", "line 2: the same key ID as"},
		{"three fields", "a b sk-secret-CANARY\n", "line 1: want a secret, or an ID and a secret"},
		{"bad id", "a/b sk-secret-CANARY\n", "line 1: the key ID is not a name"},
		{"empty", "# nothing\n", "no keys found"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			kf := writeKeys(t, c.content, 0o600)
			_, err := Parse("f.yaml", []byte(minimal(kf)))
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err = %v, want %q", err, c.want)
			}
			if strings.Contains(err.Error(), "CANARY") {
				t.Fatalf("the error shows a secret: %v", err)
			}
		})
	}
}

func TestExpand(t *testing.T) {
	env := map[string]string{"A": "1", "B_2": "two"}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	for in, want := range map[string]string{"": "", "x": "x", "${A}": "1", "a${A}b${B_2}": "a1btwo", "$$": "$", "$${A}": "${A}"} {
		got, err := expand(in, lookup)
		if err != nil || got != want {
			t.Errorf("expand(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"$", "$A", "${", "${A", "${}", "${1A}", "${C}", "${A-B}"} {
		if _, err := expand(in, lookup); err == nil {
			t.Errorf("expand(%q): no error", in)
		}
	}
}

func TestSize(t *testing.T) {
	for in, want := range map[string]int64{"0": 0, "1024": 1024, "1KiB": 1024, "10MiB": 10 << 20, "1 GiB": 1 << 30, "5KB": 5000, "7B": 7} {
		var z Size
		if err := z.UnmarshalText([]byte(in)); err != nil || int64(z) != want {
			t.Errorf("%q: %d, %v; want %d", in, z, err, want)
		}
	}
	for _, in := range []string{"", "-1", "1TiB", "x", "99999999999GiB"} {
		var z Size
		if err := z.UnmarshalText([]byte(in)); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// FuzzParse checks that no file makes Parse panic, that every rejection
// is an Errors list, and that no error shows the canary: neither the value
// of a variable (APIPOOL_FUZZ_CANARY holds one, which the fuzzer can only
// reach as ${APIPOOL_FUZZ_CANARY}: no 8 characters of it may show), nor
// the canary written in the file.
func FuzzParse(f *testing.F) {
	f.Add([]byte(minimal("/nonexistent")))
	f.Add([]byte("tokens: [{name: a, sha256: x}]\nupstreams: [{name: u, prefix: /u, target: 'http://h', keys: {env: X}}]\n"))
	f.Add([]byte("listen: ${X}\nserver: {read_timeout: 1s, max_header_bytes: 1MiB}\n"))
	f.Add([]byte("a: &x [1]\nb: *x\n"))
	f.Add([]byte("tokens: [{name: a, env: '${APIPOOL_FUZZ_CANARY}'}]\nupstreams: [{name: u, prefix: /u, target: 'https://u:${APIPOOL_FUZZ_CANARY}@h?k=" + canary + "', keys: {env: " + canary + "}}]\nlisten: ${APIPOOL_FUZZ_CANARY}\n"))
	f.Add([]byte("upstreams:\n  - name: " + canary + "\n    keys: " + canary + "\n    max_attempts: '${APIPOOL_FUZZ_CANARY}'\n    " + canary + ": 1\n"))
	const envCanary = "FUZZ-sk-Q7w2Xe9Rt4Yu6Io1Pa3S"
	f.Setenv("APIPOOL_FUZZ_CANARY", envCanary)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse("f.yaml", data)
		if err == nil {
			if c == nil || len(c.Upstreams) == 0 || len(c.Tokens) == 0 {
				t.Fatal("accepted a config without upstreams or tokens")
			}
			return
		}
		var es Errors
		if !errors.As(err, &es) || len(es) == 0 {
			t.Fatalf("error %T %v, want Errors", err, err)
		}
		msg := err.Error()
		for i := 0; i+8 <= len(envCanary); i++ {
			if strings.Contains(msg, envCanary[i:i+8]) {
				t.Fatalf("the error shows a variable's value:\n%s", msg)
			}
		}
		if strings.Contains(string(data), canary) && strings.Contains(msg, canary) {
			t.Fatalf("the error shows the canary written in the file:\n%s", msg)
		}
	})
}

// Anchors, aliases and merge keys read as the yaml package read them.
func TestAnchorsAndMerge(t *testing.T) {
	kf := writeKeys(t, "sk-one-AAAA\n", 0o600)
	y := minimal(kf) + `  - &up
    name: b
    prefix: /b
    target: https://b.example.com
    keys: {file: ` + kf + `}
    max_attempts: 3
  - <<: *up
    name: c
    prefix: /c
limits: &lim {rate: 2, burst: 3}
x_unused: *lim
`
	_, err := Parse("f.yaml", []byte(y))
	if err == nil || !strings.Contains(err.Error(), "f.yaml:19: x_unused: unknown setting") {
		t.Fatalf("want x_unused refused, got %v", err)
	}
	c, err := Parse("f.yaml", []byte(strings.Replace(y, "x_unused: *lim\n", "", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Upstreams) != 3 || c.Upstreams[2].Name != "c" || c.Upstreams[2].Prefix != "/c" || c.Upstreams[2].MaxAttempts != 3 || c.Upstreams[2].Target.Host != "b.example.com" {
		t.Fatalf("merged upstream: %+v", c.Upstreams[2])
	}
	if c.Tokens[0].Rate != 2 || c.Tokens[0].Burst != 3 {
		t.Fatalf("token limits from an anchored mapping: %+v", c.Tokens[0])
	}
}

// The ClickHouse recorder's cluster settings reach the store's config.
func TestClickHouseCluster(t *testing.T) {
	kf := writeKeys(t, "sk-one-AAAA\n", 0o600)
	src := minimal(kf) + "recorder: {type: clickhouse, clickhouse: {addrs: [\"127.0.0.1:9000\", \"127.0.0.1:9001\"], cluster: usage, insert_distributed: true}}\n"
	c, err := Parse("apipool.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	ch := c.Recorder.ClickHouse
	if ch.Cluster != "usage" || !ch.InsertDistributed || len(ch.Addrs) != 2 {
		t.Fatalf("clickhouse settings %+v", ch)
	}
}

// The settings of a recorder type other than the one in use are refused,
// not ignored: a forgotten `type: clickhouse` would otherwise run on the
// memory recorder unnoticed (and accept a password written in the file).
func TestRecorderSectionOfAnotherType(t *testing.T) {
	kf := writeKeys(t, "sk-one\n", 0o600)
	base := minimal(kf)
	cases := []struct {
		name, yaml string
		want       []string
	}{
		{"clickhouse without type", base + "recorder:\n  clickhouse: {addrs: ['127.0.0.1:9000'], password: hunter2}\n",
			[]string{"f.yaml:10: recorder.clickhouse: set, but recorder.type is memory", "set type: clickhouse", "f.yaml:10: recorder.clickhouse.password: is a secret"}},
		{"sql with type clickhouse", base + "recorder:\n  type: clickhouse\n  clickhouse: {addrs: ['127.0.0.1:9000']}\n  sql: {driver: sqlite, dsn: usage.db}\n",
			[]string{"f.yaml:12: recorder.sql: set, but recorder.type is clickhouse"}},
		{"memory retention with type sql", base + "recorder:\n  type: sql\n  sql: {driver: sqlite, dsn: usage.db}\n  memory: {retention: 1h}\n",
			[]string{"f.yaml:12: recorder.memory: set, but recorder.type is sql"}},
		{"empty section", base + "recorder:\n  type: memory\n  sql: {}\n",
			[]string{"f.yaml:10: recorder.sql: set, but recorder.type is memory"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(filepath.Join(t.TempDir(), "f.yaml"), []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error:\n%v\nwant it to contain:\n%s", err, w)
				}
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("the password is shown: %v", err)
			}
		})
	}
	for _, ok := range []string{
		base + "recorder:\n  type: memory\n  memory: {retention: 1h}\n",
		base + "recorder:\n  memory: {retention: 1h}\n",
	} {
		if _, err := Parse("f.yaml", []byte(ok)); err != nil {
			t.Errorf("%s: %v", ok, err)
		}
	}
}
