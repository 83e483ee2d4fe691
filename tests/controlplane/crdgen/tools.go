//go:build tools

// Package tools pins controller-gen and the API packages build.sh generates CRDs from.
package tools

import (
	_ "sigs.k8s.io/controller-tools/cmd/controller-gen"

	_ "github.com/fluxcd/helm-controller/api/v2"
	_ "github.com/fluxcd/image-reflector-controller/api/v1"
	_ "github.com/fluxcd/kustomize-controller/api/v1"
	_ "github.com/fluxcd/source-controller/api/v1"

	_ "github.com/cert-manager/cert-manager/pkg/apis/certmanager/v1"
	_ "github.com/openreports/reports-api/apis/openreports.io/v1alpha1"
)
