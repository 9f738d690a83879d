// Package test holds nsnet's black-box tests: the built plugin binaries driven like a container
// runtime would, inside sandbox host namespaces made by package harness.
package test

import (
	"os"
	"testing"

	"github.com/nsnet/nsnet/test/harness"
)

func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
