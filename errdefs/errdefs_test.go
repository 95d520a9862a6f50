package errdefs_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/apipool-ng/apipool/errdefs"
)

// A ConfigError matches ErrInvalidConfig, also wrapped, reads as the
// configuration error it is, and hands on its cause.
func TestConfigError(t *testing.T) {
	cause := errors.New("the cause")
	var err error = &errdefs.ConfigError{Field: "memory.WithRetention", Reason: "too short", Err: cause}
	if !errors.Is(err, errdefs.ErrInvalidConfig) || !errors.Is(fmt.Errorf("wrapped: %w", err), errdefs.ErrInvalidConfig) {
		t.Errorf("%v does not match ErrInvalidConfig", err)
	}
	if !errors.Is(err, cause) {
		t.Errorf("%v does not wrap its cause", err)
	}
	if got, want := err.Error(), "apipool: invalid configuration: memory.WithRetention: too short"; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
	if errors.Is(err, errdefs.ErrClosed) {
		t.Errorf("%v matches ErrClosed", err)
	}
}
