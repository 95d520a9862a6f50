package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// canary is a made-up key. No error may show it, nor any 8 characters of
// it, wherever the file or a variable puts it.
const canary = "CANARY-sk-9f3eA7c1Qx5Zt2Lm8Wd4"

// numCanary is a made-up numeric secret (a PIN, a port someone keeps
// private): shown neither when it comes from a variable.
const numCanary = "987654321"

// leaks returns the canary's fragments that msg shows: any 8 characters
// in a row, or its first 7 (yaml's type errors quoted 7 and "...").
func leaks(msg string) []string {
	var out []string
	if strings.Contains(msg, canary[:7]) {
		out = append(out, canary[:7])
	}
	for i := 0; i+8 <= len(canary); i++ {
		if f := canary[i : i+8]; strings.Contains(msg, f) {
			out = append(out, f)
		}
	}
	if strings.Contains(msg, numCanary) {
		out = append(out, numCanary)
	}
	return out
}

// setCanaryEnv sets the variables the cases use: each holds the canary.
func setCanaryEnv(t *testing.T) {
	t.Helper()
	for k, v := range map[string]string{
		"CANARY_KEYS":     canary + "," + canary + "-two",
		"CANARY_VALUE":    canary,
		"CANARY_URL":      "https://user:" + canary + "@api.example.com/v1?key=" + canary,
		"CANARY_SHORT":    canary[:8], // a token shorter than MinTokenLength
		"CANARY_NUM":      numCanary,
		"CANARY_RET":      numCanary + "s",
		"CANARY_DUP":      "id1 " + canary + ",id2 " + canary,
		"CANARY_3":        "a b " + canary,
		"CANARY_BADID":    "a/b " + canary,
		"CANARY_IDKEY":    canary + " other-" + canary,
		"CANARY_EMPTY":    "# " + canary,
		"APIPOOL_EMPTY_T": "",
		// A variable whose name looks like a key is still set here: its
		// name is shown nowhere either.
	} {
		t.Setenv(k, v)
	}
}

// TestNoSecretInErrors runs every error path of the loader (each error
// it creates: grep for fail(, bad(, Errors{, &Error{, keyErr{, Errorf and
// errors.New) with the canary in every place that can hold a secret: a
// key or token variable's value, a secret setting, a URL's user and query,
// a value the YAML decoder would quote, a name where a variable's name
// belongs, a key written as a setting's name. Each case checks that its
// error was reported (want) and that it shows no part of the canary.
func TestNoSecretInErrors(t *testing.T) {
	// The messages themselves must not quote a value: scrub, the last
	// guard, is off.
	noScrub = true
	defer func() { noScrub = false }()
	setCanaryEnv(t)
	dir := t.TempDir()
	kf := filepath.Join(dir, "keys")
	if err := os.WriteFile(kf, []byte("k1 sk-one-AAAA\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	keyFile := func(name, content string, perm os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, perm); err != nil {
			t.Fatal(err)
		}
		return p
	}
	base := minimal(kf)
	cert, certKey := writePair(t, dir, "tls")
	// up puts settings into the upstream, before its keys.
	up := func(s string) string { return strings.Replace(base, "    keys:", "    "+s+"\n    keys:", 1) }
	// keys replaces the upstream's keys.
	keys := func(s string) string { return strings.Replace(base, "{file: "+kf+"}", s, 1) }
	// tok replaces the token's sha256 line.
	tok := func(s string) string { return strings.Replace(base, "    sha256: "+goodHash, "    "+s, 1) }
	// target replaces the upstream's target.
	target := func(s string) string { return strings.Replace(base, "https://api.openai.com", s, 1) }
	C := canary

	cases := []struct{ name, yaml, want string }{
		// Parse: the YAML parser's errors.
		{"syntax: unclosed quote", base + "listen: '" + C + "\n", "f.yaml:"},
		{"syntax: bad indentation", base + "  listen: " + C + "\n  - " + C + "\n", "f.yaml:"},
		{"syntax: tab in the indentation", "tokens:\n  - name: a\n\tsha256: " + C + "\n", "f.yaml:3: a tab in the indentation"},
		{"syntax: unknown anchor", base + "listen: *" + C + "\n", "refers to no anchor"},
		{"syntax: ${VAR} unquoted in a flow mapping", keys("{env: ${CANARY_KEYS}}"), "must be quoted"},
		{"two documents", base + "---\nlisten: " + C + "\n", "more than one YAML document"},
		// The decoder: shapes, names, scalars.
		{"a key as a setting's name", keys("{" + C + "}"), "upstreams[0].keys: unknown setting, whose name is not shown"},
		{"a key as a top-level setting", base + C + ": x\n", "unknown setting, whose name is not shown"},
		{"near-miss setting", base + "listn: " + C + "\n", "listn: unknown setting; did you mean listen?"},
		{"set twice", base + "listen: " + C + "\nlisten: " + C + "\n", "listen: set twice"},
		{"keys: a key instead of a mapping", keys(C), "upstreams[0].keys: want a mapping of settings (env, file), got a single value"},
		{"tokens: a key instead of a list", strings.Replace(base, "tokens:\n  - name: a\n    sha256: "+goodHash+"\n", "tokens: "+C+"\n", 1), "tokens: want a list, got a single value"},
		{"a list as a key", base + "? [" + C + "]\n: x\n", "want a setting name, got a list as a key"},
		{"merge of a scalar", base + "<<: " + C + "\n", "a merge key (<<) wants a mapping"},
		{"list for a single value", base + "listen: [" + C + "]\n", "listen: want a single value, got a list"},
		{"lone $", strings.Replace(base, "prefix: /openai", "prefix: /"+C+"$x", 1), "a lone $"},
		{"unclosed ${", up("host: ${" + C), "unclosed ${"},
		{"a key inside ${}", target("${" + C + "}"), "does not hold a variable name: it holds a '-'"},
		{"unset variable named like a key", target("${CANARYsk9f3eA7c1Qx5Zt2Lm8Wd4}"), "whose name looks like a key (not shown) is not set"},
		{"unset variable", target("${APIPOOL_UNSET_T}"), "environment variable APIPOOL_UNSET_T is not set"},
		{"integer", up("max_attempts: " + C), "upstreams[0].max_attempts: want an integer"},
		{"integer from a variable", up("max_attempts: ${CANARY_VALUE}"), "want an integer (the value comes from ${CANARY_VALUE} and is not shown)"},
		{"bool", up("retry_non_idempotent: " + C), "want true or false"},
		{"number", "limits: {rate: " + C + "}\n" + base, "limits.rate: want a number"},
		{"duration", up("timeout: " + C), "upstreams[0].timeout: want a duration"},
		{"duration from a variable", up("timeout: ${CANARY_VALUE}"), "want a duration such as 500ms, 30s, 5m or 1h (the value comes from ${CANARY_VALUE}"},
		{"negative duration", up("max_wait: -1s"), "not a negative one"},
		{"size", up("max_buffered_body: " + C), "want a size"},
		{"empty value", base + "listen:\n", "listen: empty value"},
		// The validator.
		{"log format", base + "log: {format: " + C + "}\n", "log.format: want text or json, got a value that is not shown"},
		{"log level from a variable", base + "log: {level: '${CANARY_VALUE}'}\n", "log.level: want debug, info, warn or error, got the value of ${CANARY_VALUE} (not shown)"},
		{"fingerprint key written in the file", base + "fingerprint_key: " + C + "\n", "fingerprint_key: is a secret"},
		{"empty fingerprint key", base + "fingerprint_key: ${APIPOOL_EMPTY_T}\n", "fingerprint_key: is empty"},
		{"two upstreams of one name", base + "  - {name: " + C + ", prefix: /b, target: 'https://b', keys: {file: " + kf + "}}\n  - {name: " + C + ", prefix: /c, target: 'https://c', keys: {file: " + kf + "}}\n", "upstreams[2].name: a value that is not shown (it could be a secret) names another upstream too"},
		{"same route", base + "  - {name: b, prefix: /openai, target: 'https://b', keys: {file: " + kf + "}}\n", "same host and prefix as upstreams[0]"},
		{"no upstream", strings.Split(base, "upstreams:")[0], "upstreams: no upstream configured"},
		{"no token", "upstreams:" + strings.SplitN(base, "upstreams:", 2)[1], "tokens: no client token configured"},
		{"two tokens of one name", strings.Replace(base, "tokens:\n", "tokens:\n  - {name: "+C+", env: CANARY_VALUE}\n  - {name: "+C+", sha256: "+goodHash+"}\n", 1), "names another token too"},
		{"two tokens of one value", strings.Replace(base, "tokens:\n", "tokens:\n  - {name: b, env: CANARY_VALUE}\n  - {name: c, env: CANARY_VALUE}\n", 1), "same token as tokens[0]"},
		{"listen not host:port", base + "listen: " + C + "\n", "listen: want host:port, got a value that is not shown"},
		{"listen with a password", base + "listen: 'u:" + C + "@h:80'\n", "listen: want host:port"},
		{"redis addr from a variable", base + "redis: {addr: '${CANARY_VALUE}'}\n", "redis.addr: want host:port, got the value of ${CANARY_VALUE} (not shown)"},
		{"negative", base + "limits: {burst: -1}\n", "limits.burst: must not be negative"},
		{"token name", strings.Replace(base, "name: a", "name: '"+C+" x'", 1), "tokens[0].name: want a name of letters"},
		{"token sha256 and env", tok("sha256: " + goodHash + "\n    env: CANARY_VALUE"), "give sha256 or env, not both"},
		{"token sha256 not hex", tok("sha256: " + C), "tokens[0].sha256: want 64 hex digits"},
		{"token env: the token itself", tok("env: " + C), "tokens[0].env: the value is not a valid environment variable name (not shown, as it may be a secret): it holds a '-'"},
		{"token env: ${VAR}", tok("env: '${CANARY_VALUE}'"), "tokens[0].env: names the variable that holds the token: write CANARY_VALUE, not ${CANARY_VALUE}"},
		{"token env: ${VAR} named like a key", tok("env: '${CANARYsk9f3eA7c1Qx5Zt2Lm8Wd4}'"), "tokens[0].env:"},
		{"token env unset", tok("env: APIPOOL_UNSET_T"), "tokens[0].env: environment variable APIPOOL_UNSET_T is not set"},
		{"token env unset, named like a key", tok("env: CANARYsk9f3eA7c1Qx5Zt2Lm8Wd4"), "whose name looks like a key (not shown) is not set"},
		{"token too short", tok("env: CANARY_SHORT"), "the token in CANARY_SHORT is shorter than 16 characters"},
		{"token without a value", tok("rate: 1"), "give the token's sha256, or env"},
		{"token's unknown upstream", tok("sha256: " + goodHash + "\n    upstreams: ['" + C + "', '${CANARY_VALUE}', opena]"), "tokens[0].upstreams[2]: no upstream is named \"opena\"; did you mean openai?"},
		{"upstream name", strings.Replace(base, "name: openai", "name: '"+C+" x'", 1), "upstreams[0].name: want a name of letters, digits, '-', '_' or '.', got a value that is not shown"},
		{"prefix", strings.Replace(base, "prefix: /openai", "prefix: "+C, 1), "upstreams[0].prefix: want a path such as /openai"},
		{"reserved prefix from a variable", strings.Replace(base, "prefix: /openai", "prefix: /metrics${APIPOOL_EMPTY_T}", 1), "is taken by the proxy's own endpoints"},
		{"host", up("host: '" + C + "@x'"), "upstreams[0].host: want a host name"},
		{"neither prefix nor host", strings.Replace(base, "    prefix: /openai\n", "", 1), "give a prefix (such as /openai) or a host"},
		{"target missing", strings.Replace(base, "    target: https://api.openai.com\n", "", 1), "upstreams[0].target: missing"},
		{"target with a password", target("'https://user:" + C + "@api.example.com'"), "upstreams[0].target: want an http or https URL with a host and no user, query or fragment, such as https://api.openai.com: it holds a user or a password"},
		{"target with a query", target("'https://api.example.com/v1?key=" + C + "'"), "it holds a query"},
		{"target with a fragment", target("'https://api.example.com/v1#" + C + "'"), "it has a fragment"},
		{"target's scheme", target(C), "its scheme is not http or https"},
		{"target without a host", target("'https:///" + C + "'"), "it has no host"},
		{"target not a URL", target("'https://%zz" + C + "'"), "it is not a URL"},
		{"target from a variable", target("'${CANARY_URL}'"), "it holds a user or a password (user:password@): keys go in keys, and the proxy injects them (the value comes from ${CANARY_URL} and is not shown)"},
		{"inject", up("inject: " + C), "upstreams[0].inject: want bearer, header:NAME or query:NAME, got a value that is not shown"},
		{"strategy", up("strategy: " + C), "upstreams[0].strategy: want round-robin, random, weighted, least-in-flight, most-quota-left, got a value that is not shown"},
		{"max attempts", up("max_attempts: 0"), "want 1 to 100"},
		{"cooldown", up("cooldown: 2h"), "want 0 < cooldown <= max_cooldown"},
		{"timeout", up("timeout: 0s"), "0 would let a request run forever"},
		{"status code", up("classifier: {invalid_key_codes: [1000]}"), "1000 is not an HTTP status code"},
		{"status code from a variable", up("classifier: {rate_limit_codes: ['${CANARY_NUM}']}"), "rate_limit_codes[0]: want an HTTP status code (100-599) (the value comes from ${CANARY_NUM} and is not shown)"},
		{"probe method", up("probe: {method: '" + C + " x'}"), "upstreams[0].probe.method: want an HTTP method such as GET"},
		{"probe path", up("probe: {path: " + C + "}"), "upstreams[0].probe.path: want a path such as /v1/models"},
		{"probe: unknown setting", up("probe: {pth: /v1/models}"), "upstreams[0].probe.pth: unknown setting; did you mean path?"},
		// Keys.
		{"keys.env: the key itself", keys("{env: " + C + "}"), "upstreams[0].keys.env: the value is not a valid environment variable name (not shown, as it may be a secret): it holds a '-'"},
		{"keys.env: keys, comma-separated", keys("{env: '" + C + "," + C + "'}"), "it holds a comma"},
		{"keys.env: ${VAR}", keys("{env: '${CANARY_KEYS}'}"), "upstreams[0].keys.env: names the variable that holds the keys: write CANARY_KEYS, not ${CANARY_KEYS}"},
		{"keys.env: a ${VAR} among text", keys("{env: 'X${CANARY_KEYS}'}"), "write its name, such as OPENAI_KEYS, without ${...}"},
		{"keys.env unset", keys("{env: APIPOOL_UNSET_T}"), "upstreams[0].keys.env: environment variable APIPOOL_UNSET_T is not set"},
		{"keys.env unset, named like a key", keys("{env: CANARYsk9f3eA7c1Qx5Zt2Lm8Wd4}"), "whose name looks like a key (not shown) is not set"},
		{"keys.env: one secret twice", keys("{env: CANARY_DUP}"), "CANARY_DUP item 2: the same secret as CANARY_DUP item 1"},
		{"keys.env: three fields", keys("{env: CANARY_3}"), "CANARY_3 item 1: want a secret, or an ID and a secret"},
		{"keys.env: a bad ID", keys("{env: CANARY_BADID}"), "the key ID is not a name"},
		{"keys.env: the secret first", keys("{env: CANARY_IDKEY}"), "CANARY_IDKEY item 1: the key ID looks like a secret"},
		{"keys.env: no keys", keys("{env: CANARY_EMPTY}"), "upstreams[0].keys.env: no keys found"},
		{"keys: none", keys("{}"), "upstreams[0].keys: no keys: give env"},
		{"keys.file: the key itself", keys("{file: " + C + "}"), "upstreams[0].keys.file: the key file (its name is not shown: it looks like a secret, not a path): no such file or directory"},
		{"keys.file from a variable", keys("{file: '${CANARY_VALUE}'}"), "the key file named by ${CANARY_VALUE}: no such file"},
		{"keys.file open to others", keys("{file: " + keyFile("open", C+"\n", 0o644) + "}"), "open to other users (mode 0644)"},
		{"keys.file a directory", keys("{file: " + dir + "}"), "not a regular file"},
		{"keys.file: one secret twice", keys("{file: " + keyFile("dup", C+"\n"+C+"\n", 0o600) + "}"), "line 2: the same secret as"},
		{"keys.file: one ID twice", keys("{file: " + keyFile("dupid", "a "+C+"\na x"+C+"\n", 0o600) + "}"), "line 2: the same key ID as"},
		{"keys.file: the secret first", keys("{file: " + keyFile("swapped", C+" my-id\n", 0o600) + "}"), "line 1: the key ID looks like a secret"},
		{"keys.file: no keys", keys("{file: " + keyFile("empty", "# "+C+"\n", 0o600) + "}"), "no keys found"},
		// Secrets, the recorder, redis, the dashboard, telemetry.
		{"redis password in the file", base + "redis: {addr: 'r:6379', password: " + C + "}\n", "redis.password: is a secret"},
		{"redis addr missing", base + "redis: {password: '${CANARY_VALUE}'}\n", "redis.addr: missing"},
		{"redis prefix", base + "redis: {addr: 'r:6379', prefix: '{" + C + "}'}\n", "redis.prefix: must not contain braces"},
		{"clickhouse password in the file", base + "recorder: {type: clickhouse, clickhouse: {password: " + C + "}}\n", "recorder.clickhouse.password: is a secret"},
		{"clickhouse addr", base + "recorder: {type: clickhouse, clickhouse: {addrs: [" + C + "]}}\n", "recorder.clickhouse.addrs: want host:port, got a value that is not shown"},
		{"clickhouse missing", base + "recorder: {type: clickhouse}\n", "recorder.clickhouse: missing"},
		{"sql missing", base + "recorder: {type: sql}\n", "recorder.sql: missing"},
		{"sql driver", base + "recorder: {type: sql, sql: {driver: " + C + ", dsn: '${CANARY_VALUE}'}}\n", "recorder.sql.driver: want sqlite, postgres or mysql, got a value that is not shown"},
		{"sqlite dsn: a key as the path", base + "recorder: {type: sql, sql: {driver: sqlite, dsn: " + C + "/x.db}}\n", "recorder.sql.dsn: the SQLite database (its name is not shown: it looks like a secret, not a path): its directory does not exist"},
		{"sqlite dsn from a variable", base + "recorder: {type: sql, sql: {driver: sqlite, dsn: '${CANARY_VALUE}/x.db'}}\n", "recorder.sql.dsn: the SQLite database named by ${CANARY_VALUE}: its directory does not exist"},
		{"keys.file: a relative key as the path", keys("{file: 'x/" + C + "'}"), "upstreams[0].keys.file: the key file (its name is not shown"},
		{"memory retention out of range", base + "recorder: {memory: {retention: 745h}}\n", "recorder.memory.retention: want 5m to 744h (31 days)"},
		{"memory retention from a variable", base + "recorder: {memory: {retention: '${CANARY_RET}'}}\n", "recorder.memory.retention: want 5m to 744h (31 days) (the value comes from ${CANARY_RET} and is not shown)"},
		{"tls cert_file: a key as the path", base + "tls: {cert_file: " + C + ", key_file: " + certKey + "}\n", "tls.cert_file: the certificate file (its name is not shown: it looks like a secret, not a path): no such file or directory"},
		{"tls key_file from a variable", base + "tls: {cert_file: " + cert + ", key_file: '${CANARY_VALUE}'}\n", "tls.key_file: the key file named by ${CANARY_VALUE}: no such file or directory"},
		{"tls key_file holding a key, not PEM", base + "tls: {cert_file: " + cert + ", key_file: " + keyFile("notpem", C+"\n", 0o600) + "}\n", "tls: the certificate and key do not load as a pair"},
		{"tls cert_file holding a key, not PEM", base + "tls: {cert_file: " + keyFile("notpem.crt", C+"\n", 0o600) + ", key_file: " + certKey + "}\n", "tls: the certificate and key do not load as a pair"},
		{"admin client_ca_file holding a key", base + "admin: {listen: '127.0.0.1:0', tls: {cert_file: " + cert + ", key_file: " + certKey + ", client_ca_file: " + keyFile("ca", C+"\n", 0o600) + "}}\n", "admin.tls.client_ca_file: the client CA file"},
		{"admin tls without admin listen", base + "admin: {tls: {cert_file: " + cert + ", key_file: " + certKey + "}}\n", "admin.tls: needs admin.listen"},
		{"tls min_version", base + "tls: {cert_file: " + cert + ", key_file: " + certKey + ", min_version: " + C + "}\n", "tls.min_version: want 1.2 or 1.3, got a value that is not shown"},
		{"tls min_version 1.1", base + "tls: {cert_file: " + cert + ", key_file: " + certKey + ", min_version: '1.1'}\n", "tls.min_version: TLS below 1.2 is refused"},
		{"sql dsn missing", base + "recorder: {type: sql, sql: {driver: sqlite}}\n", "recorder.sql.dsn: missing"},
		{"sql dsn with a password", base + "recorder: {type: sql, sql: {driver: postgres, dsn: 'postgres://u:" + C + "@h/db'}}\n", "recorder.sql.dsn: holds a password"},
		{"recorder type", base + "recorder: {type: " + C + "}\n", "recorder.type: want memory, clickhouse or sql, got a value that is not shown"},
		{"dashboard path", base + "dashboard: {path: " + C + "}\n", "dashboard.path: want a path such as /dashboard/, got a value that is not shown"},
		{"dashboard user name", base + "dashboard: {users: [{name: 'u:" + C + "', password_sha256: " + goodHash + "}]}\n", "dashboard.users[0].name: want a user name without ':'"},
		{"dashboard password", base + "dashboard: {users: [{name: u, password_sha256: " + C + "}]}\n", "dashboard.users[0].password_sha256: want 64 hex digits"},
		{"dashboard without users", base + "dashboard: {enabled: true}\n", "dashboard.users: the dashboard needs at least one user"},
		{"admin user name", base + "admin: {users: [{name: 'u:" + C + "', password_sha256: " + goodHash + "}]}\n", "admin.users[0].name: want a user name without ':'"},
		{"admin password", base + "admin: {users: [{name: u, password_sha256: " + C + "}]}\n", "admin.users[0].password_sha256: want 64 hex digits"},
		{"admin password from a variable", base + "admin: {users: [{name: u, password_sha256: '${CANARY_VALUE}'}]}\n", "admin.users[0].password_sha256: want 64 hex digits"},
		{"otlp endpoint", base + "telemetry: {otlp: {endpoint: " + C + "}}\n", "telemetry.otlp.endpoint: want an http or https URL"},
		{"otlp endpoint from a variable", base + "telemetry: {otlp: {endpoint: 'ftp://${CANARY_VALUE}'}}\n", "telemetry.otlp.endpoint: want an http or https URL with a host and no user, query or fragment, such as http://collector:4318: its scheme is not http or https (the value comes from ${CANARY_VALUE}"},
		{"server: header bytes", base + "server: {max_header_bytes: 1}\n", "server.max_header_bytes: want 1KiB to 16MiB"},
		{"server: zero timeouts", base + "server: {read_header_timeout: 0s, read_timeout: 0s, idle_timeout: 0s}\n", "server.idle_timeout: 0 would keep idle connections forever"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("f.yaml", []byte(c.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			msg := err.Error()
			if l := leaks(msg); len(l) > 0 {
				t.Errorf("LEAK: the error shows %q:\n%s", l, msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error:\n%s\nwant it to contain:\n%s", msg, c.want)
			}
		})
	}
}

// CheckKey (the admin API's check of a key) never shows the secret, nor
// an ID that looks like one.
func TestCheckKeyNoSecret(t *testing.T) {
	for _, c := range []struct{ id, secret, want string }{
		{canary, "s3cr3t-value", "looks like a secret"},
		{"a/" + canary, "s3cr3t-value", "not a name"},
		{"ok", canary + " " + canary, "holds spaces"},
		{"ok", canary + "\n", "holds spaces"},
		{"ok", canary + "\x7f", "printable ASCII"},
		{"ok", "", "empty"},
	} {
		err := CheckKey(c.id, c.secret)
		if err == nil {
			t.Errorf("%q: no error", c.want)
			continue
		}
		if l := leaks(err.Error()); len(l) > 0 || strings.Contains(err.Error(), canary) {
			t.Errorf("LEAK: %s", err)
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("error %q, want %q", err, c.want)
		}
	}
	if err := CheckKey("prod-1", canary); err != nil {
		t.Errorf("a good key: %v", err)
	}
}

// looksLikeKey tells random strings from names, IDs and paths.
func TestLooksLikeKey(t *testing.T) {
	for _, s := range []string{
		canary, "CANARYsk9f3eA7c1Qx5Zt2Lm8Wd4", goodHash, "123e4567-e89b-12d3-a456-426614174000",
		"sk-proj-abc", "AIzaSyA1b2C3", "ghp_x", "xoxb-1", "k7x2m9q4w8e1r5t3", "AbCdEfGhIjKlMnOpQr",
		"Bearer Zk3jH8sLq0Wm2Xc9Vb7N",
	} {
		if !looksLikeKey(s) {
			t.Errorf("%q: not taken as a key", s)
		}
	}
	for _, s := range []string{
		"prod-key-2024-01-15", "OPENAI_KEYS_2024", "/v1/chat/completions", "least-in-flight",
		"/tmp/TestKeyFilereadable_by_others2911605366/001/keys", "generativelanguage.googleapis.com",
		"127.0.0.1:8080", "APIPOOL_FINGERPRINT_KEY", "batch-jobs", "x-goog-api-key",
	} {
		if looksLikeKey(s) {
			t.Errorf("%q: taken as a key", s)
		}
	}
}

// scrub takes out of errors the values read from the environment, whole
// or item by item, should a message ever quote one.
func TestScrub(t *testing.T) {
	es := Errors{{Field: "x", Reason: "got " + canary + " and k2 " + canary + "-two, short"}}
	scrub(es, []string{"short", "a " + canary + ",k2 " + canary + "-two"})
	if got, want := es[0].Reason, "got [not shown] and [not shown], short"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
