// Package undo records the inverse of each step of a multi-step operation so
// that a failure part-way through can be rolled back with one mechanism
// instead of a cleanup branch per error path.
package undo

import "errors"

// Stack holds undo functions; the zero value is ready to use.
type Stack struct {
	fns []func() error
}

// Push registers fn to run if the operation is rolled back. Functions run in
// reverse order of registration.
func (s *Stack) Push(fn func() error) {
	s.fns = append(s.fns, fn)
}

// Rollback runs every registered function, newest first, and returns all
// their errors joined. It keeps going past failures: a half-undone operation
// is worse than a noisy one.
func (s *Stack) Rollback() error {
	var errs []error
	for i := len(s.fns) - 1; i >= 0; i-- {
		if err := s.fns[i](); err != nil {
			errs = append(errs, err)
		}
	}
	s.fns = nil
	return errors.Join(errs...)
}

// Release forgets the registered functions once the operation has succeeded.
func (s *Stack) Release() {
	s.fns = nil
}
