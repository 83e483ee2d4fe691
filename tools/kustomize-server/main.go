// kustomize-server: `kubectl kustomize --load-restrictor LoadRestrictionsNone DIR`, many times
// in one process. A kustomize process spends more CPU starting and parsing its OpenAPI schema
// (at the first strategic-merge patch) than on most builds; kustomize-controller avoids that by
// running krusty as a library, and so does this. fluxwarden keeps a few of these for one run.
//
// Protocol (stdin, stdout; one request at a time): a request is one line, the directory as a
// JSON string. The answer is a header line, "ok N" or "error N", and N bytes: the YAML kubectl
// writes to stdout, or the message kubectl writes to stderr. EOF on stdin ends the process.
// A build that exhausts memory or panics kills the process, as it kills kubectl.
package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"os"
	"strings"

	"sigs.k8s.io/kustomize/api/krusty"
	"sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/kustomize/kyaml/openapi"
)

// options are kubectl kustomize's (kustomize/v5 commands/build HonorKustomizeFlags) with
// only --load-restrictor LoadRestrictionsNone given, as fluxwarden runs it.
func options() *krusty.Options {
	opts := krusty.MakeDefaultOptions()
	opts.Reorder = krusty.ReorderOptionUnspecified
	opts.LoadRestrictions = types.LoadRestrictionsNone
	opts.PluginConfig.HelmConfig.Enabled = false
	opts.PluginConfig.HelmConfig.Command = "helm"
	opts.AddManagedbyLabel = false
	return opts
}

// defaultSchema names the schema a new process uses (kustomize's built-in default).
var defaultSchema = openapi.GetSchemaVersion()

// build is one `kubectl kustomize DIR`: its stdout, or the error it fails with.
func build(directory string) ([]byte, error) {
	resources, err := krusty.MakeKustomizer(options()).Run(filesys.MakeFsOnDisk(), directory)
	if openapi.GetSchemaVersion() != defaultSchema {
		// the kustomization chose its own schema (`openapi:`): kustomize keeps a custom one in
		// a global the next build would inherit; a new process would start from the default
		openapi.ResetOpenAPI()
	}
	if err != nil {
		return nil, err
	}
	return resources.AsYaml()
}

// warnings runs `during` with what kustomize writes to os.Stderr and the log package (its
// deprecation warnings) collected, to be answered in order before a build's error, as kubectl's
// stderr holds them. Go's own fatal errors still go to the real stderr (fd 2).
func warnings(scratch *os.File, during func() error) (string, error) {
	if err := scratch.Truncate(0); err != nil {
		return "", err
	}
	if _, err := scratch.Seek(0, io.SeekStart); err != nil {
		return "", err
	}
	real := os.Stderr
	os.Stderr = scratch
	log.SetOutput(scratch)
	err := during()
	os.Stderr = real
	log.SetOutput(real)
	written, readErr := os.ReadFile(scratch.Name())
	if readErr != nil {
		return "", readErr
	}
	return string(written), err
}

// kubectlMessage is kubectl's cmdutil.CheckErr for an error of kustomize: "error: " once.
func kubectlMessage(err error) string {
	message := err.Error()
	if !strings.HasPrefix(message, "error: ") {
		message = "error: " + message
	}
	return message + "\n"
}

func answer(out *bufio.Writer, status string, payload []byte) error {
	if _, err := fmt.Fprintf(out, "%s %d\n", status, len(payload)); err != nil {
		return err
	}
	if _, err := out.Write(payload); err != nil {
		return err
	}
	return out.Flush()
}

func serve(in io.Reader, out io.Writer) error {
	scratch, err := os.CreateTemp("", "kustomize-server-stderr-")
	if err != nil {
		return err
	}
	defer os.Remove(scratch.Name())
	defer scratch.Close()
	log.SetFlags(0) // as kubectl sets it
	requests := bufio.NewReader(in)
	answers := bufio.NewWriterSize(out, 1<<20)
	for {
		line, err := requests.ReadBytes('\n')
		if err == io.EOF && len(line) == 0 {
			return nil
		}
		if err != nil && err != io.EOF {
			return err
		}
		var directory string
		if err := json.Unmarshal(line, &directory); err != nil {
			return fmt.Errorf("bad request %q: %w", line, err)
		}
		var yml []byte
		said, err := warnings(scratch, func() (buildErr error) {
			yml, buildErr = build(directory)
			return buildErr
		})
		if err != nil {
			err = answer(answers, "error", []byte(said+kubectlMessage(err)))
		} else {
			err = answer(answers, "ok", yml)
		}
		if err != nil {
			return err
		}
	}
}

func main() {
	if len(os.Args) != 2 || os.Args[1] != "serve" {
		fmt.Fprintln(os.Stderr, "usage: kustomize-server serve  (requests on stdin, see main.go)")
		os.Exit(2)
	}
	if err := serve(os.Stdin, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "kustomize-server:", err)
		os.Exit(1)
	}
}
