// Command dockerfile-check parses a Dockerfile with BuildKit's own parser and instruction
// reader (the code `docker build` runs) and prints it as JSON: its stages, each with its base
// image, name and instructions (keyword, arguments, flags), and the parser's warnings. A syntax
// error, an unknown instruction or a bad flag exits 1 with the parser's message. The tests judge
// the JSON (COPY sources, the runtime stage's user, the entrypoint).
//
//	dockerfile-check Dockerfile
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
)

type instruction struct {
	Line    int      `json:"line"`
	Keyword string   `json:"keyword"`
	Args    []string `json:"args"`
	Flags   []string `json:"flags"`
	JSON    bool     `json:"json"`
}

type stage struct {
	Name         string        `json:"name"`
	Base         string        `json:"base"`
	Instructions []instruction `json:"instructions"`
}

type output struct {
	// MetaArgs are the ARGs before the first FROM, with their defaults.
	MetaArgs map[string]string `json:"metaArgs"`
	Stages   []stage           `json:"stages"`
	Warnings []string          `json:"warnings"`
}

func fail(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "dockerfile-check: "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	if len(os.Args) != 2 {
		fail("usage: dockerfile-check Dockerfile")
	}
	file, err := os.Open(os.Args[1])
	if err != nil {
		fail("%v", err)
	}
	defer file.Close()
	result, err := parser.Parse(file)
	if err != nil {
		fail("%v", err)
	}
	out := output{MetaArgs: map[string]string{}, Stages: []stage{}, Warnings: []string{}}
	for _, w := range result.Warnings {
		out.Warnings = append(out.Warnings, fmt.Sprintf("line %d: %s", w.Location.Start.Line, w.Short))
	}
	lint := linter.New(&linter.Config{Warn: func(rule, description, url, message string, location []parser.Range) {
		line := 0
		if len(location) > 0 {
			line = location[0].Start.Line
		}
		out.Warnings = append(out.Warnings, fmt.Sprintf("line %d: %s: %s", line, rule, message))
	}})
	// Parse checks every instruction (keywords, flags, argument counts) as the frontend does.
	stages, metaArgs, err := instructions.Parse(result.AST, lint)
	if err != nil {
		fail("%v", err)
	}
	for _, arg := range metaArgs {
		for _, kv := range arg.Args {
			value := ""
			if kv.Value != nil {
				value = *kv.Value
			}
			out.MetaArgs[kv.Key] = value
		}
	}
	if len(stages) == 0 {
		fail("no FROM")
	}
	byLine := map[int]*parser.Node{}
	for _, node := range result.AST.Children {
		byLine[node.StartLine] = node
	}
	for _, s := range stages {
		st := stage{Name: s.Name, Base: s.BaseName, Instructions: []instruction{}}
		for _, cmd := range s.Commands {
			loc := cmd.Location()
			if len(loc) == 0 {
				continue
			}
			node := byLine[loc[0].Start.Line]
			if node == nil {
				fail("no syntax node at line %d", loc[0].Start.Line)
			}
			ins := instruction{Line: node.StartLine, Keyword: strings.ToUpper(node.Value), Args: []string{}, Flags: node.Flags}
			if node.Flags == nil {
				ins.Flags = []string{}
			}
			ins.JSON = node.Attributes["json"]
			for n := node.Next; n != nil; n = n.Next {
				ins.Args = append(ins.Args, n.Value)
			}
			st.Instructions = append(st.Instructions, ins)
		}
		out.Stages = append(out.Stages, st)
	}
	encoder := json.NewEncoder(os.Stdout)
	encoder.SetIndent("", "  ")
	if err := encoder.Encode(out); err != nil {
		fail("%v", err)
	}
}
