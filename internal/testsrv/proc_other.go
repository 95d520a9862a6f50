//go:build !linux

package testsrv

import "os/exec"

func setProcAttr(cmd *exec.Cmd) {}

func killGroup(pid int) {}
