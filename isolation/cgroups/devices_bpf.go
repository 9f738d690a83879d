package cgroups

import (
	"errors"
	"fmt"
	"os"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/asm"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// cgroup v2 has no devices files: the kernel asks the BPF_CGROUP_DEVICE
// programs attached to the cgroup and its ancestors, and a request passes
// only when every one of them returns 1.

// devProgName names the programs this package attaches, so replacing an
// allow-list detaches ours only and leaves the ones the container (or a
// nested runtime) attached itself.
const devProgName = "nsnet_dev"

// Fields of struct bpf_cgroup_dev_ctx and their values (linux/bpf.h).
const (
	ctxAccessType = 0 // device type in the low 16 bits, access in the high 16
	ctxMajor      = 4
	ctxMinor      = 8

	devcgBlock = 1
	devcgChar  = 2

	devcgMknod = 1
	devcgRead  = 2
	devcgWrite = 4
)

func accessBits(a string) int32 {
	var b int32
	for _, c := range a {
		switch c {
		case 'm':
			b |= devcgMknod
		case 'r':
			b |= devcgRead
		case 'w':
			b |= devcgWrite
		}
	}
	return b
}

// deviceProgram compiles a validated allow-list into a filter: one block per
// effective rule, each jumping to the next on the first field that does not
// match and returning 1 when all do; after the last block, 0.
func deviceProgram(rules []DeviceRule) asm.Instructions {
	const (
		typ    = asm.R3
		access = asm.R2
		major  = asm.R4
		minor  = asm.R5
	)
	insns := asm.Instructions{
		asm.LoadMem(access, asm.R1, ctxAccessType, asm.Word),
		asm.Mov.Reg32(typ, access),
		asm.And.Imm32(typ, 0xffff),
		asm.RSh.Imm32(access, 16),
		asm.LoadMem(major, asm.R1, ctxMajor, asm.Word),
		asm.LoadMem(minor, asm.R1, ctxMinor, asm.Word),
	}
	label := func(i int) string { return fmt.Sprintf("rule%d", i) }
	eff := effectiveDevices(rules)
	for i, d := range eff {
		next := label(i + 1)
		var block asm.Instructions
		if d.Type != DeviceAll {
			t := int32(devcgChar)
			if d.Type == DeviceBlock {
				t = devcgBlock
			}
			// Every bit outside the rule's access, unknown future ones
			// too, sends the request on: the rule must cover all of it.
			block = append(block,
				asm.JNE.Imm(typ, t, next),
				asm.JSet.Imm(access, ^accessBits(d.Access), next))
			if d.Major != Wildcard {
				block = append(block, asm.JNE.Imm(major, int32(d.Major), next))
			}
			if d.Minor != Wildcard {
				block = append(block, asm.JNE.Imm(minor, int32(d.Minor), next))
			}
		}
		block = append(block, asm.Mov.Imm32(asm.R0, 1), asm.Return())
		block[0] = block[0].WithSymbol(label(i))
		insns = append(insns, block...)
		if d.Type == DeviceAll {
			// The verifier rejects unreachable instructions, and
			// effectiveDevices leaves allow-all alone anyway.
			return insns
		}
	}
	return append(insns, asm.Mov.Imm32(asm.R0, 0).WithSymbol(label(len(eff))), asm.Return())
}

// attachDevices loads the filter for rules and attaches it to the cgroup
// directory dir. BPF_PROG_ATTACH rather than a bpf link: the cgroup holds
// the program until it is removed, while a link would be detached when
// nsnet exits. BPF_F_ALLOW_MULTI keeps programs that others attach to the
// cgroup or below it working next to ours. Programs of ours attached before
// are detached after the new one is in place, so the container never runs
// with less than one of our filters; two concurrent updates leave both new
// filters attached, which only ever denies more.
func attachDevices(dir string, rules []DeviceRule) error {
	prog, err := ebpf.NewProgram(&ebpf.ProgramSpec{
		Name:         devProgName,
		Type:         ebpf.CGroupDevice,
		Instructions: deviceProgram(rules),
	})
	if err != nil {
		return fmt.Errorf("loading the device filter for %s: %w", dir, err)
	}
	defer prog.Close()
	cg, err := os.OpenFile(dir, os.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("opening cgroup %s: %w", dir, err)
	}
	defer cg.Close()
	old, err := ourDevicePrograms(int(cg.Fd()))
	if err != nil {
		return fmt.Errorf("listing the device filters of %s: %w", dir, err)
	}
	defer closeAll(old)
	err = link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  int(cg.Fd()),
		Program: prog,
		Attach:  ebpf.AttachCGroupDevice,
		Flags:   unix.BPF_F_ALLOW_MULTI,
	})
	if err != nil {
		return fmt.Errorf("attaching the device filter to %s: %w", dir, err)
	}
	for _, p := range old {
		err := link.RawDetachProgram(link.RawDetachProgramOptions{Target: int(cg.Fd()), Program: p, Attach: ebpf.AttachCGroupDevice})
		// A concurrent update may have detached it already.
		if err != nil && !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("detaching the previous device filter from %s: %w", dir, err)
		}
	}
	return nil
}

// ourDevicePrograms opens the device programs attached to the cgroup that
// carry devProgName.
func ourDevicePrograms(cgroupFD int) ([]*ebpf.Program, error) {
	res, err := link.QueryPrograms(link.QueryOptions{Target: cgroupFD, Attach: ebpf.AttachCGroupDevice})
	if err != nil {
		return nil, err
	}
	var out []*ebpf.Program
	for _, ap := range res.Programs {
		p, err := ebpf.NewProgramFromID(ap.ID)
		if errors.Is(err, os.ErrNotExist) {
			continue // detached and freed since the query
		}
		if err != nil {
			closeAll(out)
			return nil, fmt.Errorf("opening program %d: %w", ap.ID, err)
		}
		info, err := p.Info()
		if err != nil {
			p.Close()
			closeAll(out)
			return nil, fmt.Errorf("reading program %d: %w", ap.ID, err)
		}
		if info.Name != devProgName {
			p.Close()
			continue
		}
		out = append(out, p)
	}
	return out, nil
}

func closeAll(ps []*ebpf.Program) {
	for _, p := range ps {
		p.Close()
	}
}
