//go:build tools

// Package tools pins what build.sh builds from this module: promtool (for `promtool test
// rules`) and the prometheus-operator API package the PrometheusRule CRD is generated from.
package tools

import (
	_ "github.com/prometheus/prometheus/cmd/promtool"

	_ "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
)
