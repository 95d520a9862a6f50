package testsrv

import (
	"os/exec"
	"syscall"
)

// setProcAttr asks the kernel to kill the server when the test process
// dies, so a crashed or interrupted test leaves no server behind, and puts
// the server in a process group of its own, so that a kill reaches the
// processes it forked too (PostgreSQL's backends). It keeps what the
// harness set in cmd.SysProcAttr (credentials, say).
func setProcAttr(cmd *exec.Cmd) {
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGKILL
	cmd.SysProcAttr.Setpgid = true
}

// killGroup sends SIGKILL to the process group that pid leads.
func killGroup(pid int) {
	syscall.Kill(-pid, syscall.SIGKILL)
}
