// Command vulcan runs a node of the vulcan proxy cluster (`vulcan agent`)
// and administers a running cluster through any node's admin API.
package main

import (
	"fmt"
	"io"
	"os"
)

const usage = `Usage: vulcan <command> [arguments]

Commands:
  agent                              run a node (vulcan agent -h for flags)
  status                             the node's name, cluster size and store
  members                            the cluster's members
  service put NAME [flags]           create or replace a service
  service rm NAME                    remove a service and its upstreams
  service ls                         services with their upstreams
  upstream put SERVICE ID ADDR [-weight N]
  upstream rm SERVICE ID
  upstream drain SERVICE ID [-wait DURATION]
  upstream enable SERVICE ID
  limit add [-token RE] [-protocol RE] [-method RE] [-path RE] [-data-size N] -period SECONDS -threshold N
  limit ls
  limit rm ID

Admin commands talk to $VULCAN_ADDR (default http://127.0.0.1:9090, or -addr)
with the token in $VULCAN_TOKEN (or -admin-token).
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

// run dispatches a command line and returns the exit status.
func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 1
	}
	var err error
	switch args[0] {
	case "agent":
		err = runAgent(args[1:], stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	case "version", "-version", "--version":
		fmt.Fprintln(stdout, "vulcan", version)
		return 0
	default:
		err = runClient(args, stdout, stderr)
	}
	if err != nil {
		fmt.Fprintln(stderr, "vulcan:", err)
		return 1
	}
	return 0
}
