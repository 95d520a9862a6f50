package proxy

import (
	"maps"
	"net/http"
	"sync"
	"sync/atomic"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// attrCache holds an upstream's request-duration attribute sets, built
// once per method and status code, so that recording a request costs no
// allocation: each is held as the option slice Record is passed (a slice
// built per call would escape to the heap through the interface). Reads
// take no lock: a new set copies the map.
type attrCache struct {
	mu   sync.Mutex // serialises additions
	sets atomic.Pointer[map[attrKey][]metric.RecordOption]
}

type attrKey struct {
	method string // methodAttr's
	code   int
}

// maxAttrSets bounds the cache: past it (odd status codes), sets are
// built per request.
const maxAttrSets = 512

// requestAttrs returns the attributes of a request to upstream name, as
// Record's options.
func (c *attrCache) requestAttrs(name, method string, code int) []metric.RecordOption {
	k := attrKey{methodAttr(method), code}
	if m := c.sets.Load(); m != nil {
		if o, ok := (*m)[k]; ok {
			return o
		}
	}
	o := []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(
		attribute.String("apipool.upstream", name),
		attribute.String("http.request.method", k.method),
		attribute.Int("http.response.status_code", code)))}
	c.mu.Lock()
	defer c.mu.Unlock()
	old := c.sets.Load()
	if old == nil {
		old = &map[attrKey][]metric.RecordOption{}
	}
	if len(*old) < maxAttrSets {
		m := make(map[attrKey][]metric.RecordOption, len(*old)+1)
		maps.Copy(m, *old)
		m[k] = o
		c.sets.Store(&m)
	}
	return o
}

func methodAttr(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
		return m
	}
	return "_OTHER"
}
