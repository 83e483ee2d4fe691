//go:build tools

// Package tools pins what build.sh builds from this module: Kyverno's admission controller
// (cmd/kyverno) and its CLI (cmd/cli/kubectl-kyverno), both v1.19.1.
package tools

import (
	_ "github.com/kyverno/kyverno/cmd/cli/kubectl-kyverno"
	_ "github.com/kyverno/kyverno/cmd/kyverno"
)
