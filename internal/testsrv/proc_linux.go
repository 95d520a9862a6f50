package testsrv

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill the server when the test process
// dies, so a crashed or interrupted test leaves no server behind.
func setProcAttr(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
