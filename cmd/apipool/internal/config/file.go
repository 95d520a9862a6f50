package config

// The file's layout, as the decoder (decode.go) reads it. Every scalar is
// a Value, so that validation can name its line; a struct's Line field,
// untagged, is set to its mapping's line.

type fileT struct {
	Listen         Value[string]   `yaml:"listen"`
	TLS            *tlsT           `yaml:"tls"`
	Admin          adminT          `yaml:"admin"`
	Log            logT            `yaml:"log"`
	Server         serverT         `yaml:"server"`
	FingerprintKey Value[string]   `yaml:"fingerprint_key"`
	Tokens         []tokenT        `yaml:"tokens"`
	Upstreams      []upstreamT     `yaml:"upstreams"`
	Recorder       recorderT       `yaml:"recorder"`
	Redis          *redisT         `yaml:"redis"`
	Dashboard      dashboardT      `yaml:"dashboard"`
	Telemetry      telemetryT      `yaml:"telemetry"`
	Reload         reloadT         `yaml:"reload"`
	Defaults       limitsDefaultsT `yaml:"limits"`
	Alerts         alertsT         `yaml:"alerts"` // alerts.go
}

type adminT struct {
	Listen Value[string] `yaml:"listen"`
	TLS    *tlsT         `yaml:"tls"`
	Users  []userT       `yaml:"users"`
}

type tlsT struct {
	Line         int
	CertFile     Value[string] `yaml:"cert_file"`
	KeyFile      Value[string] `yaml:"key_file"`
	ClientCAFile Value[string] `yaml:"client_ca_file"`
	MinVersion   Value[string] `yaml:"min_version"`
}

type logT struct {
	Format Value[string] `yaml:"format"`
	Level  Value[string] `yaml:"level"`
}

type serverT struct {
	ReadHeaderTimeout Value[Duration] `yaml:"read_header_timeout"`
	ReadTimeout       Value[Duration] `yaml:"read_timeout"`
	WriteTimeout      Value[Duration] `yaml:"write_timeout"`
	IdleTimeout       Value[Duration] `yaml:"idle_timeout"`
	ShutdownTimeout   Value[Duration] `yaml:"shutdown_timeout"`
	MaxHeaderBytes    Value[Size]     `yaml:"max_header_bytes"`
}

type limitsDefaultsT struct {
	Rate    Value[float64] `yaml:"rate"`
	Burst   Value[int]     `yaml:"burst"`
	MaxBody Value[Size]    `yaml:"max_body"`
}

type tokenT struct {
	Name      Value[string]   `yaml:"name"`
	SHA256    Value[string]   `yaml:"sha256"`
	Env       Value[string]   `yaml:"env"`
	Rate      Value[float64]  `yaml:"rate"`
	Burst     Value[int]      `yaml:"burst"`
	MaxBody   Value[Size]     `yaml:"max_body"`
	Upstreams []Value[string] `yaml:"upstreams"`
	Budgets   *budgetsT       `yaml:"budgets"` // budgets.go
}

type upstreamT struct {
	Name                  Value[string]   `yaml:"name"`
	Prefix                Value[string]   `yaml:"prefix"`
	Host                  Value[string]   `yaml:"host"`
	Target                Value[string]   `yaml:"target"`
	Keys                  keysT           `yaml:"keys"`
	Inject                Value[string]   `yaml:"inject"`
	Strategy              Value[string]   `yaml:"strategy"`
	MaxAttempts           Value[int]      `yaml:"max_attempts"`
	MaxWait               Value[Duration] `yaml:"max_wait"`
	Cooldown              Value[Duration] `yaml:"cooldown"`
	MaxCooldown           Value[Duration] `yaml:"max_cooldown"`
	MaxBufferedBody       Value[Size]     `yaml:"max_buffered_body"`
	RetryNonIdempotent    Value[bool]     `yaml:"retry_non_idempotent"`
	Timeout               Value[Duration] `yaml:"timeout"`
	ResponseHeaderTimeout Value[Duration] `yaml:"response_header_timeout"`
	KeyLimits             keyLimitsT      `yaml:"key_limits"`
	KeyBudgets            *budgetsT       `yaml:"key_budgets"` // budgets.go
	Classifier            classifierT     `yaml:"classifier"`
	Probe                 *probeT         `yaml:"probe"`

	Routing    *routingT            `yaml:"routing"`     // routing.go
	KeyTiers   namedMap[Value[int]] `yaml:"key_tiers"`   // routing.go
	KeyWeights namedMap[Value[int]] `yaml:"key_weights"` // routing.go
	KeyModels  namedMap[modelList]  `yaml:"key_models"`  // routing.go
	Usage      *usageT              `yaml:"usage"`       // usage.go
}

type keysT struct {
	Env  Value[string] `yaml:"env"`
	File Value[string] `yaml:"file"`
}

type keyLimitsT struct {
	PerSecond   Value[float64] `yaml:"per_second"`
	PerMinute   Value[int]     `yaml:"per_minute"`
	PerDay      Value[int]     `yaml:"per_day"`
	MaxInFlight Value[int]     `yaml:"max_in_flight"`
}

type classifierT struct {
	RateLimitCodes  []Value[int] `yaml:"rate_limit_codes"`
	InvalidKeyCodes []Value[int] `yaml:"invalid_key_codes"`
}

type probeT struct {
	Line     int
	Method   Value[string]   `yaml:"method"`
	Path     Value[string]   `yaml:"path"`
	Interval Value[Duration] `yaml:"interval"`
}

type recorderT struct {
	Type       Value[string] `yaml:"type"`
	Memory     memoryT       `yaml:"memory"`
	ClickHouse *clickhouseT  `yaml:"clickhouse"`
	SQL        *sqlT         `yaml:"sql"`
}

type memoryT struct {
	Retention Value[Duration] `yaml:"retention"`
}

type clickhouseT struct {
	Addrs     []Value[string] `yaml:"addrs"`
	Database  Value[string]   `yaml:"database"`
	Table     Value[string]   `yaml:"table"`
	Username  Value[string]   `yaml:"username"`
	Password  Value[string]   `yaml:"password"`
	SpillDir  Value[string]   `yaml:"spill_dir"`
	BatchSize Value[int]      `yaml:"batch_size"`
	TTL       Value[Duration] `yaml:"ttl"`
	// Cluster names the server's remote_servers cluster: replicated
	// tables behind a Distributed table (see recorder/clickhouse).
	Cluster           Value[string] `yaml:"cluster"`
	InsertDistributed Value[bool]   `yaml:"insert_distributed"`
}

type sqlT struct {
	Driver      Value[string]   `yaml:"driver"`
	DSN         Value[string]   `yaml:"dsn"`
	TablePrefix Value[string]   `yaml:"table_prefix"`
	Retention   Value[Duration] `yaml:"retention"`
}

type redisT struct {
	Line     int
	Addr     Value[string] `yaml:"addr"`
	Username Value[string] `yaml:"username"`
	Password Value[string] `yaml:"password"`
	DB       Value[int]    `yaml:"db"`
	Prefix   Value[string] `yaml:"prefix"`
}

type dashboardT struct {
	Enabled Value[bool]   `yaml:"enabled"`
	Path    Value[string] `yaml:"path"`
	Actions Value[bool]   `yaml:"actions"`
	Users   []userT       `yaml:"users"`
}

type userT struct {
	Name   Value[string] `yaml:"name"`
	SHA256 Value[string] `yaml:"password_sha256"`
}

type telemetryT struct {
	ServiceName Value[string] `yaml:"service_name"`
	Prometheus  Value[bool]   `yaml:"prometheus"`
	OTLP        *otlpT        `yaml:"otlp"`
}

type otlpT struct {
	Endpoint Value[string]   `yaml:"endpoint"`
	Traces   Value[bool]     `yaml:"traces"`
	Metrics  Value[bool]     `yaml:"metrics"`
	Interval Value[Duration] `yaml:"interval"`
}

type reloadT struct {
	Interval Value[Duration] `yaml:"interval"`
}
