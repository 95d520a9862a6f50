//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package clickhouse

import "os"

// lockFile does nothing where flock is missing: two stores must not share
// a spill file there.
func lockFile(f *os.File) error { return nil }

func unlockFile(f *os.File) {}
