package vm

import (
	"bufio"
	"fmt"
	"io"
	"path"
	"strings"
)

// ModuleDeps is a kernel's modules.dep: each module file (relative to
// /lib/modules/VERSION) with the module files it needs loaded first.
type ModuleDeps struct {
	deps   map[string][]string
	byName map[string]string
}

// ParseModulesDep reads modules.dep ("kernel/a.ko: kernel/b.ko kernel/c.ko").
func ParseModulesDep(r io.Reader) (*ModuleDeps, error) {
	d := &ModuleDeps{deps: map[string][]string{}, byName: map[string]string{}}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		file, deps, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("modules.dep line %d: no colon: %q", n, line)
		}
		d.deps[file] = strings.Fields(deps)
		d.byName[ModuleName(file)] = file
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.dep: %w", err)
	}
	return d, nil
}

// ModuleName is the name insmod/modprobe know a module file by: the base
// name without .ko (and compression suffix), with '-' read as '_'.
func ModuleName(file string) string {
	base := path.Base(file)
	if i := strings.Index(base, ".ko"); i >= 0 {
		base = base[:i]
	}
	return strings.ReplaceAll(base, "-", "_")
}

// LoadOrder returns the files of the named modules and of everything they
// depend on, each file once and after all of its dependencies, so loading
// them with insmod in this order succeeds. Names in builtin (modules built
// into the kernel) need no file and are left out.
func (d *ModuleDeps) LoadOrder(names []string, builtin map[string]bool) ([]string, error) {
	var order []string
	state := map[string]int{} // 1: being visited, 2: done
	var visit func(file string, chain []string) error
	visit = func(file string, chain []string) error {
		switch state[file] {
		case 1:
			return fmt.Errorf("module dependency cycle: %s", strings.Join(append(chain, file), " -> "))
		case 2:
			return nil
		}
		deps, ok := d.deps[file]
		if !ok {
			return fmt.Errorf("module file %s (needed by %s) is not in modules.dep", file, strings.Join(chain, " -> "))
		}
		state[file] = 1
		for _, dep := range deps {
			if err := visit(dep, append(chain, file)); err != nil {
				return err
			}
		}
		state[file] = 2
		order = append(order, file)
		return nil
	}
	for _, name := range names {
		name = ModuleName(name)
		file, ok := d.byName[name]
		if !ok {
			if builtin[name] {
				continue
			}
			return nil, fmt.Errorf("kernel module %q is neither in modules.dep nor built in", name)
		}
		if err := visit(file, nil); err != nil {
			return nil, err
		}
	}
	return order, nil
}

// ParseModulesBuiltin reads modules.builtin (one module file per line) into
// the set of built-in module names.
func ParseModulesBuiltin(r io.Reader) (map[string]bool, error) {
	set := map[string]bool{}
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		if line := strings.TrimSpace(sc.Text()); line != "" {
			set[ModuleName(line)] = true
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading modules.builtin: %w", err)
	}
	return set, nil
}
