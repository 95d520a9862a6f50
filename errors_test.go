package apipool_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/apipool-ng/apipool"
	"github.com/apipool-ng/apipool/errdefs"
	"github.com/apipool-ng/apipool/recorder"
	"github.com/apipool-ng/apipool/status"
)

// WithClassifier's error holds the status package's as its cause: both
// match ErrInvalidConfig, and errors.As finds each.
func TestClassifierErrorKeepsItsCause(t *testing.T) {
	_, err := apipool.New(keys(1), apipool.WithClassifier(status.Config{InvalidKeyCodes: []int{401, 999}}))
	var ce *apipool.ConfigError
	var se *status.ConfigError
	if !errors.As(err, &ce) || !errors.As(err, &se) || !errors.Is(err, apipool.ErrInvalidConfig) {
		t.Fatalf("err %T %v, want an *apipool.ConfigError holding a *status.ConfigError", err, err)
	}
	if ce.Field != "WithClassifier" || se.Field != "InvalidKeyCodes[1]" || ce.Err != error(se) {
		t.Errorf("fields %q and %q, cause %v", ce.Field, se.Field, ce.Err)
	}
	if want := "apipool: invalid configuration: WithClassifier: InvalidKeyCodes[1]: " + se.Reason; err.Error() != want {
		t.Errorf("Error() = %q, want %q", err.Error(), want)
	}
}

// The root's errors shared with the other packages are errdefs's.
func TestSharedErrors(t *testing.T) {
	if apipool.ErrClosed != errdefs.ErrClosed || recorder.ErrClosed != errdefs.ErrClosed {
		t.Error("apipool.ErrClosed, recorder.ErrClosed and errdefs.ErrClosed differ")
	}
	if apipool.ErrInvalidConfig != errdefs.ErrInvalidConfig {
		t.Error("apipool.ErrInvalidConfig and errdefs.ErrInvalidConfig differ")
	}
}

// A NoKeyError reads as a sentence: "1 key", "2 keys".
func TestNoKeyErrorCountsKeys(t *testing.T) {
	for _, c := range []struct {
		keys int
		want string
	}{{1, "(1 key, 1 disabled)"}, {2, "(2 keys, 1 disabled)"}} {
		err := &apipool.NoKeyError{Keys: c.keys, Disabled: 1}
		if got := err.Error(); !strings.Contains(got, c.want) {
			t.Errorf("Error() = %q, want it to contain %q", got, c.want)
		}
	}
}
