// Command compose-check loads a compose file the way `docker compose config` does, with the
// library Docker Compose itself uses (github.com/compose-spec/compose-go): interpolation from an
// env file, the Compose Specification's JSON schema, merge keys and anchors, and the model's own
// checks (unknown services in depends_on, volumes and networks that are not declared). It prints
// the resolved project as JSON and exits 1 on any error. Used where the docker CLI has no compose
// plugin.
//
//	compose-check -f docker-compose.yml --env-file .env.example
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/compose-spec/compose-go/v2/cli"
)

func main() {
	file := flag.String("f", "docker-compose.yml", "compose file")
	envFile := flag.String("env-file", "", "env file for interpolation (default: .env beside the compose file, if any)")
	flag.Parse()
	dir := filepath.Dir(*file)
	options := []cli.ProjectOptionsFn{cli.WithWorkingDirectory(dir), cli.WithName("nexusflow")}
	if *envFile != "" {
		options = append(options, cli.WithEnvFiles(*envFile))
	} else {
		options = append(options, cli.WithEnvFiles())
	}
	options = append(options, cli.WithDotEnv)
	opts, err := cli.NewProjectOptions([]string{*file}, options...)
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
		os.Exit(1)
	}
	project, err := opts.LoadProject(context.Background())
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
		os.Exit(1)
	}
	out, err := project.MarshalJSON()
	if err != nil {
		fmt.Fprintf(os.Stderr, "compose-check: %v\n", err)
		os.Exit(1)
	}
	fmt.Println(string(out))
}
