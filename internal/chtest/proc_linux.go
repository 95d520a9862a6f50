package chtest

import (
	"os"
	"syscall"
)

// ownerGone reports whether the process pid has exited: then the server
// it ran is gone too (the kernel kills it with its test process: see
// internal/testsrv), and its directory may go.
func ownerGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}

var sigStop, sigCont os.Signal = syscall.SIGSTOP, syscall.SIGCONT
