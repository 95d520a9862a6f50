package chtest

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill the server when the test process
// dies, so a crashed or interrupted test leaves no server behind.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

// ownerGone reports whether the process pid has exited: then the server
// it ran is gone too (see setProcAttr), and its directory may go.
func ownerGone(pid int) bool {
	return syscall.Kill(pid, 0) == syscall.ESRCH
}
