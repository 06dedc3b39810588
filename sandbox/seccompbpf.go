//go:build cgo && seccomp

package sandbox

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/opencontainers/runc/libcontainer/configs"
	libseccomp "github.com/seccomp/libseccomp-golang"
	"golang.org/x/sys/unix"
)

// compileSeccomp turns the seccomp profile into the raw BPF program the
// native launcher's init loads, with the same libseccomp calls in the same
// order as libcontainer's InitSeccomp. libcontainer also prepends a stub
// that answers ENOSYS to calls newer than the profile; with ENOSYS as the
// default action it changes no answer, so it is left out.
func compileSeccomp(config *configs.Seccomp) ([]byte, error) {
	if config.DefaultErrnoRet == nil || *config.DefaultErrnoRet != uint(unix.ENOSYS) ||
		len(config.Architectures) > 0 || len(config.Flags) > 0 {
		return nil, errors.New("seccomp: the native launcher compiles ENOSYS-default, native-architecture profiles only")
	}
	defAct, err := getAction(config.DefaultAction, config.DefaultErrnoRet)
	if err != nil {
		return nil, err
	}
	filter, err := libseccomp.NewFilter(defAct)
	if err != nil {
		return nil, err
	}
	defer filter.Release()
	if len(config.Syscalls) > 32 {
		_ = filter.SetOptimize(2)
	}
	if err := filter.SetNoNewPrivsBit(false); err != nil {
		return nil, err
	}
	for _, call := range config.Syscalls {
		if err := matchCall(filter, call, defAct); err != nil {
			return nil, fmt.Errorf("seccomp rule %s: %w", call.Name, err)
		}
	}
	fd, err := unix.MemfdCreate("scoped-seccomp", unix.MFD_CLOEXEC)
	if err != nil {
		return nil, err
	}
	f := os.NewFile(uintptr(fd), "scoped-seccomp")
	defer f.Close()
	if err := filter.ExportBPF(f); err != nil {
		return nil, err
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		return nil, err
	}
	if len(b) == 0 || len(b)%8 != 0 || len(b)/8 > unix.BPF_MAXINSNS {
		return nil, fmt.Errorf("seccomp: a BPF program of %d bytes", len(b))
	}
	return b, nil
}

// Below: libcontainer/seccomp's unexported helpers (runc v1.5.2,
// libcontainer/seccomp/seccomp_linux.go, Apache-2.0), copied.

func getAction(act configs.Action, errnoRet *uint) (libseccomp.ScmpAction, error) {
	switch act {
	case configs.Kill, configs.KillThread:
		return libseccomp.ActKillThread, nil
	case configs.Errno:
		if errnoRet != nil {
			return libseccomp.ActErrno.SetReturnCode(int16(*errnoRet)), nil
		}
		return libseccomp.ActErrno.SetReturnCode(int16(unix.EPERM)), nil
	case configs.Allow:
		return libseccomp.ActAllow, nil
	case configs.KillProcess:
		return libseccomp.ActKillProcess, nil
	}
	return libseccomp.ActInvalid, fmt.Errorf("unsupported action %v", act)
}

func getOperator(op configs.Operator) (libseccomp.ScmpCompareOp, error) {
	switch op {
	case configs.EqualTo:
		return libseccomp.CompareEqual, nil
	case configs.NotEqualTo:
		return libseccomp.CompareNotEqual, nil
	case configs.GreaterThan:
		return libseccomp.CompareGreater, nil
	case configs.GreaterThanOrEqualTo:
		return libseccomp.CompareGreaterEqual, nil
	case configs.LessThan:
		return libseccomp.CompareLess, nil
	case configs.LessThanOrEqualTo:
		return libseccomp.CompareLessOrEqual, nil
	case configs.MaskEqualTo:
		return libseccomp.CompareMaskedEqual, nil
	}
	return libseccomp.CompareInvalid, errors.New("invalid operator")
}

func matchCall(filter *libseccomp.ScmpFilter, call *configs.Syscall, defAct libseccomp.ScmpAction) error {
	callAct, err := getAction(call.Action, call.ErrnoRet)
	if err != nil {
		return err
	}
	if callAct == defAct {
		return nil
	}
	callNum, err := libseccomp.GetSyscallFromName(call.Name)
	if err != nil {
		return nil // unknown here: skipped, as libcontainer does
	}
	if len(call.Args) == 0 {
		return filter.AddRule(callNum, callAct)
	}
	argCounts := make([]uint, 6)
	var conds []libseccomp.ScmpCondition
	for _, a := range call.Args {
		op, err := getOperator(a.Op)
		if err != nil {
			return err
		}
		c, err := libseccomp.MakeCondition(a.Index, op, a.Value, a.ValueTwo)
		if err != nil {
			return err
		}
		argCounts[a.Index]++
		conds = append(conds, c)
	}
	multi := false
	for _, n := range argCounts {
		if n > 1 {
			multi = true
		}
	}
	if multi {
		for _, c := range conds {
			if err := filter.AddRuleConditional(callNum, callAct, []libseccomp.ScmpCondition{c}); err != nil {
				return err
			}
		}
		return nil
	}
	return filter.AddRuleConditional(callNum, callAct, conds)
}
