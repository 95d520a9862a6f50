package proxy

import (
	"net/http"
	"sync"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// attrCache holds an upstream's request-duration attribute sets, built
// once per method and status code, so that recording a request costs no
// allocation.
type attrCache struct {
	mu   sync.RWMutex
	sets map[attrKey]metric.RecordOption
}

type attrKey struct {
	method string // methodAttr's
	code   int
}

// maxAttrSets bounds the cache: past it (odd status codes), sets are
// built per request.
const maxAttrSets = 512

// requestAttrs returns the attributes of a request to upstream name.
func (c *attrCache) requestAttrs(name, method string, code int) metric.RecordOption {
	k := attrKey{methodAttr(method), code}
	c.mu.RLock()
	o, ok := c.sets[k]
	c.mu.RUnlock()
	if ok {
		return o
	}
	o = metric.WithAttributeSet(attribute.NewSet(
		attribute.String("apipool.upstream", name),
		attribute.String("http.request.method", k.method),
		attribute.Int("http.response.status_code", code)))
	c.mu.Lock()
	if c.sets == nil {
		c.sets = map[attrKey]metric.RecordOption{}
	}
	if len(c.sets) < maxAttrSets {
		c.sets[k] = o
	}
	c.mu.Unlock()
	return o
}

func methodAttr(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete, http.MethodHead, http.MethodOptions:
		return m
	}
	return "_OTHER"
}
