// fluxbuild: the objects Flux's own build library (github.com/fluxcd/pkg/kustomize, what
// kustomize-controller and `flux build kustomization` use) renders for one Flux Kustomization.
// Test-only: the differential test compares them with fluxwarden's renderer.
//
//	fluxbuild ROOT DIR KUSTOMIZATION.yaml
//
// ROOT: a scratch copy of the repo (its kustomization.yaml files may be rewritten), DIR: the
// Kustomization's spec.path in it.
package main

import (
	"fmt"
	"os"

	"github.com/fluxcd/pkg/kustomize"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"
)

func main() {
	if len(os.Args) != 4 {
		fmt.Fprintln(os.Stderr, "usage: fluxbuild ROOT DIR KUSTOMIZATION.yaml")
		os.Exit(2)
	}
	root, dir, file := os.Args[1], os.Args[2], os.Args[3]
	data, err := os.ReadFile(file)
	if err != nil {
		fail(err)
	}
	var obj map[string]interface{}
	if err := yaml.Unmarshal(data, &obj); err != nil {
		fail(err)
	}
	ks := unstructured.Unstructured{Object: obj}
	if _, err := kustomize.NewGenerator(root, ks).WriteFile(dir); err != nil {
		fail(err)
	}
	resources, err := kustomize.SecureBuild(root, dir, false)
	if err != nil {
		fail(err)
	}
	out, err := resources.AsYaml()
	if err != nil {
		fail(err)
	}
	os.Stdout.Write(out)
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "fluxbuild:", err)
	os.Exit(1)
}
