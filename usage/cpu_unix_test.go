//go:build unix

package usage

import "syscall"

// cpuNanos returns the CPU time the process has used so far, user and
// system, in nanoseconds.
func cpuNanos() int64 {
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) != nil {
		return -1
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}
