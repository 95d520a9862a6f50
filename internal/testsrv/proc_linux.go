package testsrv

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill the server when the test process
// dies, so a crashed or interrupted test leaves no server behind. It keeps
// what the harness set in cmd.SysProcAttr (credentials, say).
func setProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
}
