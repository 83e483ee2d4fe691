//go:build tools

// Package tools pins the binary build.sh builds from this module.
package tools

import _ "github.com/fluxcd/kustomize-controller"
