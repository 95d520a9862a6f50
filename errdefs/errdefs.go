// Package errdefs holds the errors that every apipool package shares, so
// that one sentinel means one thing across the module:
//
//   - [ErrInvalidConfig], matched by every configuration error: a
//     [ConfigError] from a constructor or an option of any package, and
//     the status package's *status.ConfigError;
//   - [ErrClosed], returned by a call made after Close, by the transport
//     and by every usage store alike.
//
// Most code should use their other names: the root package's
// apipool.ErrInvalidConfig, apipool.ConfigError and apipool.ErrClosed, and
// package recorder's recorder.ErrClosed, are these same values and type.
// This package exists because those packages import one another (the root
// imports recorder/memory and status, so they cannot import the root); it
// imports nothing of apipool's, so every package of the module can import
// it.
package errdefs

import "errors"

// ErrInvalidConfig is matched (errors.Is) by every configuration error of
// every apipool package.
var ErrInvalidConfig = errors.New("apipool: invalid configuration")

// ConfigError reports bad configuration: Field names what is wrong, Reason
// says why. It matches ErrInvalidConfig.
type ConfigError struct {
	// Field names the option, argument or Config field at fault. In the
	// root package it is unqualified ("WithMaxAttempts", "keys[2].Secret");
	// in the others it starts with the package's name
	// ("memory.WithRetention", "sql.Config.TablePrefix").
	Field  string
	Reason string
	// Err, when not nil, is the error with which another package refused
	// the value: apipool.WithClassifier's error holds the
	// *status.ConfigError, which errors.As finds.
	Err error
}

func (e *ConfigError) Error() string {
	return "apipool: invalid configuration: " + e.Field + ": " + e.Reason
}

// Is makes errors.Is(err, ErrInvalidConfig) true.
func (e *ConfigError) Is(target error) bool { return target == ErrInvalidConfig }

// Unwrap returns Err.
func (e *ConfigError) Unwrap() error { return e.Err }

// ErrClosed is returned by a method called after Close, when the method
// cannot do its work then: RoundTrip of a closed transport, a query or a
// Flush of a closed usage store. Errors that wrap it add what was closed.
var ErrClosed = errors.New("apipool: closed")
