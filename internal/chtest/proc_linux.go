package chtest

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// ownerGone reports whether the process pid has exited: then the server
// it ran is gone too (the kernel kills it with its test process: see
// internal/testsrv), and its directory may go.
func ownerGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

var sigStop, sigCont os.Signal = syscall.SIGSTOP, syscall.SIGCONT

// findPID returns the process whose command line has arg.
func findPID(arg string) (int, error) {
	entries, err := os.ReadDir("/proc")
	if err != nil {
		return 0, fmt.Errorf("chtest: %w", err)
	}
	for _, e := range entries {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(b), "\x00") {
			if a == arg {
				return pid, nil
			}
		}
	}
	return 0, fmt.Errorf("chtest: no process with %s", arg)
}
