// Command clickhouse records the quickstart's traffic into ClickHouse and
// queries it: an in-process fake API with a per-key quota and Retry-After
// and one revoked key, a few thousand requests from many goroutines through
// the pool, every attempt recorded by recorder/clickhouse (and, beside it,
// by the in-memory store, to compare), then the store's stats and some of
// the package README's ready SQL queries, run through clickhouse-go.
//
//	go run ./examples/clickhouse -addr 127.0.0.1:9000
//
// The address comes from -addr, else $CLICKHOUSE_ADDR, else
// 127.0.0.1:9000 (the native protocol port); the user from -user or
// $CLICKHOUSE_USER, the password from $CLICKHOUSE_PASSWORD (not a flag, so
// that it stays out of the process list). The events go to the table
// apipool_events of the database -database (apipool_example by default),
// created if missing. The store's stats read this run's events; the SQL
// queries, as the README has them, the table's last hour, day or week.
// With no server reachable, it says how to start one and exits with
// status 2.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"reflect"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	chgo "github.com/ClickHouse/clickhouse-go/v2"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/internal/demoapi"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/recorder/clickhouse"
	"github.com/apipool-ng/apipool/recorder/memory"
	"github.com/apipool-ng/apipool/status"
)

// config is what the flags set.
type config struct {
	// addr is one address, or several separated by commas (a cluster's
	// replicas).
	addr, database string
	// cluster, when set, is the cluster's name in the servers'
	// remote_servers: the store creates replicated tables behind
	// Distributed ones (see cluster/README.md).
	cluster            string
	username, password string
	requests, workers  int
}

func main() {
	var c config
	addr := os.Getenv("CLICKHOUSE_ADDR")
	if addr == "" {
		addr = clickhouse.DefaultAddr
	}
	flag.StringVar(&c.addr, "addr", addr, "ClickHouse native protocol address, or a cluster's replicas separated by commas (default: $CLICKHOUSE_ADDR, else "+clickhouse.DefaultAddr+")")
	flag.StringVar(&c.cluster, "cluster", "", "cluster name in the servers' remote_servers: replicated tables behind Distributed ones (see examples/clickhouse/cluster)")
	flag.StringVar(&c.database, "database", "apipool_example", "database for the event tables (created if missing)")
	flag.StringVar(&c.username, "user", os.Getenv("CLICKHOUSE_USER"), "user (default: $CLICKHOUSE_USER, else default)")
	flag.IntVar(&c.requests, "requests", 3000, "requests to send")
	flag.IntVar(&c.workers, "workers", 32, "goroutines sending them")
	flag.Parse()
	c.password = os.Getenv("CLICKHOUSE_PASSWORD")
	if err := run(os.Stdout, c); err != nil {
		fmt.Fprintln(os.Stderr, "clickhouse example:", err)
		if errors.Is(err, clickhouse.ErrUnavailable) {
			fmt.Fprint(os.Stderr, startHint(c.addr))
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// startHint tells how to get a server to run the example against.
func startHint(addr string) string {
	return fmt.Sprintf(`
No ClickHouse server answered at %s. Start one, then run this again:
  - Debian or Ubuntu, as root:
      apt-get update && apt-get install -y clickhouse-server
      service clickhouse-server start      # or: clickhouse-server --config-file=/etc/clickhouse-server/config.xml
  - Docker:
      docker run -d -p 9000:9000 --ulimit nofile=262144:262144 clickhouse/clickhouse-server
Then: go run ./examples/clickhouse -addr 127.0.0.1:9000 (or set CLICKHOUSE_ADDR).
`, addr)
}

func run(out io.Writer, c config) error {
	ctx := context.Background()
	// The store first: without a server there is nothing to show.
	nctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	store, err := clickhouse.New(nctx, clickhouse.Config{
		Addrs:         strings.Split(c.addr, ","),
		Cluster:       c.cluster,
		Database:      c.database,
		Username:      c.username,
		Password:      c.password,
		DialTimeout:   2 * time.Second,
		FlushInterval: 200 * time.Millisecond,
	})
	if err != nil {
		return err
	}
	mem, err := memory.New()
	if err != nil {
		return err
	}

	api := demoapi.New()
	srv := httptest.NewServer(api)
	defer srv.Close()
	keys := demoapi.Keys()
	// Every attempt goes to both stores; the pool's stats (and
	// RecentAttemptsByKey) come from the first that answers queries: ClickHouse.
	pool, err := apipool.New(keys,
		apipool.WithRecorder(recorder.Fanout(store, mem)),
		apipool.WithMaxWait(10*time.Second),
		apipool.WithProbe(apipool.ProbeRequest(http.MethodGet, srv.URL+demoapi.Path), 0))
	if err != nil {
		store.Close(ctx)
		return err
	}
	closed := false
	defer func() {
		if !closed {
			pool.Close(ctx)
		}
	}()
	client := &http.Client{Transport: pool, Timeout: 30 * time.Second}
	// The in-memory store counts exactly for windows of whole seconds.
	start := time.Now().Truncate(time.Second)

	report, err := pool.CheckUsable(ctx)
	if err != nil {
		return err
	}
	demoapi.PrintReport(out, report)

	sendStart := time.Now()
	ok, failed := demoapi.Send(client, srv.URL+demoapi.Path, c.requests, c.workers)
	fmt.Fprintf(out, "sent %d requests through %d keys from %d goroutines in %.1fs: %d answered 200, %d failed\n",
		c.requests, len(keys), c.workers, time.Since(sendStart).Seconds(), ok, failed)

	// Flush makes every event recorded so far visible to queries.
	fctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	if err := store.Flush(fctx); err != nil {
		return err
	}
	until := time.Now().Truncate(time.Second).Add(time.Second)
	all := recorder.Query{Since: start, Until: until}
	inCH, err := store.UsageCount(ctx, all)
	if err != nil {
		return err
	}
	inMem, err := mem.UsageCount(ctx, all)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "attempts: the API saw %d; ClickHouse holds %d events, the in-memory store %d; dropped %d\n\n",
		api.Hits(), inCH, inMem, store.Dropped())

	// The store's stats, as recorder.Stats answers them in SQL.
	fmt.Fprintln(out, "recorder.Stats from ClickHouse (UsageByKey, UsageCount, LatencyByKey):")
	byKey, err := store.UsageByKey(ctx, all)
	if err != nil {
		return err
	}
	lat, err := store.LatencyByKey(ctx, recorder.Query{Since: start, Until: until, Status: status.Success})
	if err != nil {
		return err
	}
	var countErr error
	count := func(id string, s status.Status) int64 {
		n, err := store.UsageCount(ctx, recorder.Query{Since: start, Until: until, KeyID: id, Status: s})
		if err != nil {
			countErr = err
		}
		return n
	}
	demoapi.PrintTable(out, pool.Snapshot(), byKey, lat, count)
	if countErr != nil {
		return countErr
	}
	series, err := store.Series(ctx, all, time.Second)
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "\nSeries, attempts per second:\n")
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	for _, s := range pool.Snapshot() {
		var b strings.Builder
		for i, bk := range series[s.KeyID] {
			if i > 0 {
				b.WriteByte(' ')
			}
			b.WriteString(strconv.FormatInt(bk.Count, 10))
		}
		fmt.Fprintf(tw, "%s\t%s\t\n", s.KeyID, b.String())
	}
	tw.Flush()

	// Some of the README's ready queries, through clickhouse-go. They read
	// the default table names in the connection's database.
	conn, err := chgo.Open(&chgo.Options{
		Protocol:    chgo.Native,
		Addr:        strings.Split(c.addr, ","),
		Auth:        chgo.Auth{Database: c.database, Username: c.username, Password: c.password},
		DialTimeout: 2 * time.Second,
	})
	if err != nil {
		return err
	}
	defer conn.Close()
	for _, q := range readmeQueries {
		fmt.Fprintf(out, "\nSQL (README: %s):\n", q.name)
		if err := printQuery(ctx, out, conn, q.sql); err != nil {
			return fmt.Errorf("%s: %w", q.name, err)
		}
	}

	closed = true
	cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := pool.Close(cctx); err != nil {
		return err
	}
	if failed > 0 {
		return fmt.Errorf("%d requests failed", failed)
	}
	return nil
}

// readmeQueries are queries from recorder/clickhouse/README.md, as they
// are there (a test checks it).
var readmeQueries = []struct{ name, sql string }{
	{"usage per key per hour", `SELECT
    toStartOfHour(event_time) AS hour,
    key_id,
    count() AS requests,
    countIf(status_id = 1) AS succeeded,
    countIf(status_id = 9) AS rate_limited,
    countIf(status_id NOT IN (1, 9)) AS failed
FROM apipool_events
WHERE event_time >= now() - INTERVAL 1 DAY
GROUP BY hour, key_id
ORDER BY hour, key_id`},
	{"rate-limit share per key", `SELECT
    key_id,
    count() AS requests,
    countIf(status_id = 9) AS rate_limited,
    round(rate_limited / requests, 4) AS share
FROM apipool_events
WHERE event_time >= now() - INTERVAL 7 DAY AND key_id != ''
GROUP BY key_id
ORDER BY share DESC`},
	{"p99 latency per key", `SELECT
    key_id,
    count() AS requests,
    round(quantile(0.5)(latency_us) / 1000, 1) AS p50_ms,
    round(quantile(0.9)(latency_us) / 1000, 1) AS p90_ms,
    round(quantile(0.99)(latency_us) / 1000, 1) AS p99_ms
FROM apipool_events
WHERE event_time >= now() - INTERVAL 1 HOUR AND status_id = 1
GROUP BY key_id
ORDER BY p99_ms DESC`},
	{"p99 latency per key from the rollup", `SELECT
    key_id,
    countMerge(events) AS requests,
    quantilesMerge(0.5, 0.9, 0.99)(latency) AS q,
    round(q[1] / 1000, 1) AS p50_ms,
    round(q[3] / 1000, 1) AS p99_ms
FROM apipool_events_1m
WHERE minute >= now() - INTERVAL 30 DAY AND status_id = 1
GROUP BY key_id
ORDER BY p99_ms DESC`},
}

// printQuery runs sql and prints its result as a table: a header of
// column names, then a line per row.
func printQuery(ctx context.Context, out io.Writer, conn chgo.Conn, sql string) error {
	rows, err := conn.Query(ctx, sql)
	if err != nil {
		return err
	}
	defer rows.Close()
	types := rows.ColumnTypes()
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	for _, name := range rows.Columns() {
		fmt.Fprintf(tw, "%s\t", strings.ToUpper(name))
	}
	fmt.Fprintln(tw)
	dest := make([]any, len(types))
	for rows.Next() {
		for i, ct := range types {
			dest[i] = reflect.New(ct.ScanType()).Interface()
		}
		if err := rows.Scan(dest...); err != nil {
			return err
		}
		for _, d := range dest {
			fmt.Fprintf(tw, "%s\t", format(reflect.ValueOf(d).Elem().Interface()))
		}
		fmt.Fprintln(tw)
	}
	if err := rows.Err(); err != nil {
		return err
	}
	return tw.Flush()
}

func format(v any) string {
	switch x := v.(type) {
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04")
	case []float64:
		parts := make([]string, len(x))
		for i, f := range x {
			parts[i] = strconv.FormatFloat(f, 'f', -1, 64)
		}
		return "[" + strings.Join(parts, " ") + "]"
	case string:
		if x == "" {
			return `""`
		}
	}
	return fmt.Sprint(v)
}
